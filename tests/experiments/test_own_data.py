"""A team's own items: the table is checked before any work, simulated on its gold, retrained from the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from experiments.cli import main
from experiments.config import parse_config
from loop.columns import ANNOTATOR, ITEM, LABEL

CLASSES = ("benign", "malignant")


def _items(seed: int = 0, *, gold_share: float = 0.7, flip: float = 0.18) -> pd.DataFrame:
    """scikit-learn's breast cancer set as a team's table: labels flipped at ``flip``, gold on a share."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    rng = np.random.default_rng(seed)
    truth = np.array(CLASSES)[1 - data.target]  # target 0 is malignant
    flipped = rng.random(truth.size) < flip
    label = np.where(flipped, np.where(truth == "benign", "malignant", "benign"), truth)
    frame = pd.DataFrame(data.data[:, :8], columns=[f"f{i}" for i in range(8)])
    frame.insert(0, "item_id", [f"case-{i:03d}" for i in range(truth.size)])
    frame.insert(1, "label", label)
    frame.insert(2, "gold", np.where(rng.random(truth.size) < gold_share, truth, None))
    return frame


def _answers(items: pd.DataFrame, seed: int = 1) -> pd.DataFrame:
    """Three answers an item from six annotators who are right 80% of the time."""
    rng = np.random.default_rng(seed)
    truth = items["gold"].fillna(items["label"]).to_numpy()
    rows = []
    for item, true in zip(items["item_id"], truth):
        for person in rng.choice(6, size=3, replace=False):
            other = "malignant" if true == "benign" else "benign"
            rows.append({ITEM: item, ANNOTATOR: f"ann-{person}", LABEL: true if rng.random() < 0.8 else other,
                         "seconds": float(rng.integers(5, 60))})
    return pd.DataFrame(rows)


def _config(tmp_path: Path, items: pd.DataFrame | None = None, *, dataset: dict | None = None,
            annotations: pd.DataFrame | None = None, **sections) -> Path:
    items = _items() if items is None else items
    items.to_csv(tmp_path / "items.csv", index=False)
    program = {"name": "team", "dataset": {"path": str(tmp_path / "items.csv"), "gold": "gold",
                                           **(dataset or {})},
               "rounds": 1, "items_per_round": 40, "calibration_items": 30, "holdout_items": 40,
               "budget_per_round": 2.0, "seed": 0}
    if annotations is not None:
        annotations.to_csv(tmp_path / "answers.csv", index=False)
        program["annotations"] = str(tmp_path / "answers.csv")
    raw = {"program": program, "tracking": {"uri": "none"}, "store": {"url": f"sqlite:///{tmp_path}/labels.db"},
           "serve": {"url": "in_process"}, "compare": {"strategies": ["random", "tiered"]}, **sections}
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _one_line(capsys, argv: list[str], code: int = 2) -> str:
    assert main(argv) == code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


# --- bad input: one line naming the file, the column and the first bad row, exit 2 ---------------


def _bad_label(t):
    t.loc[7, "label"] = "fox"
    return t


def _duplicate(t):
    t.loc[9, "item_id"] = t.loc[3, "item_id"]
    return t


def _nan_feature(t):
    t.loc[5, "f2"] = np.nan
    return t


def _text_feature(t):
    t["f3"] = t["f3"].astype(object)
    t.loc[11, "f3"] = "n/a?"
    return t


@pytest.mark.parametrize(("change", "dataset", "named"), [
    (_bad_label, {"classes": list(CLASSES)},
     "items.csv: column 'label', row 8 (item_id 'case-007'): expected one of the classes ['benign', 'malignant'], got 'fox'"),
    (_duplicate, {}, "items.csv: column 'item_id', row 10: duplicate id 'case-003' (first at row 4)"),
    (_nan_feature, {}, "items.csv: column 'f2', row 6 (item_id 'case-005'): expected a finite number, got an empty cell"),
    (_text_feature, {"features": ["f0", "f3"]},
     "items.csv: column 'f3', row 12 (item_id 'case-011'): expected a finite number, got 'n/a?'"),
    (lambda t: t, {"label": "answer"}, "items.csv: column 'answer' is missing"),
    (lambda t: t, {"features": ["f0", "f99"]}, "items.csv: column 'f99' is missing"),
])
@pytest.mark.parametrize("command", ["run", "compare", "tune", "retrain"])
def test_a_bad_table_stops_before_any_work_in_one_line(capsys, tmp_path, change, dataset, named, command) -> None:
    path = _config(tmp_path, change(_items()), dataset=dataset)
    line = _one_line(capsys, [command, "--config", str(path)])
    assert line.startswith(f"labelloop {command}: error: {named}")
    assert not (tmp_path / "labels.db").exists()


def test_a_missing_table_file_is_one_line(capsys, tmp_path) -> None:
    path = _config(tmp_path)
    (tmp_path / "items.csv").unlink()
    line = _one_line(capsys, ["run", "--config", str(path)])
    assert line.startswith("labelloop run: error: items.csv: no such file")


def test_a_label_outside_the_default_classes_is_caught_in_the_gold_too(capsys, tmp_path) -> None:
    items = _items()
    items.loc[2, "gold"] = "Benign"  # a third spelling: the default classes would be three
    path = _config(tmp_path, items, dataset={"classes": list(CLASSES)})
    line = _one_line(capsys, ["run", "--config", str(path)])
    assert "column 'gold', row 3 (item_id 'case-002')" in line and "got 'Benign'" in line


def test_annotations_naming_unknown_items_stop_before_any_work(capsys, tmp_path) -> None:
    items = _items()
    answers = _answers(items)
    answers.loc[4, ITEM] = "case-999"
    path = _config(tmp_path, items, annotations=answers)
    line = _one_line(capsys, ["run", "--config", str(path)])
    assert line == "labelloop run: error: answers.csv: column 'item_id', row 5: item 'case-999' is not in the table"
    assert not (tmp_path / "labels.db").exists()


def test_annotations_with_a_label_outside_the_classes_are_one_line(capsys, tmp_path) -> None:
    items = _items()
    answers = _answers(items)
    answers.loc[2, LABEL] = "cyst"
    path = _config(tmp_path, items, annotations=answers)
    line = _one_line(capsys, ["compare", "--config", str(path)])
    assert "answers.csv: column 'label', row 3" in line and "got 'cyst'" in line


@pytest.mark.parametrize("command", ["run", "compare"])
def test_a_simulation_without_gold_says_why_in_one_line(capsys, tmp_path, command) -> None:
    items = _items().drop(columns="gold")
    path = _config(tmp_path, items, dataset={"gold": None})
    line = _one_line(capsys, [command, "--config", str(path)])
    assert line.startswith(f"labelloop {command}: error: program.dataset.gold: a simulation needs gold")
    assert "truth to count errors against" in line


def test_a_table_with_too_few_gold_items_says_what_fits(capsys, tmp_path) -> None:
    path = _config(tmp_path, _items(gold_share=0.2))
    line = _one_line(capsys, ["run", "--config", str(path)])
    n_gold = int(_items(gold_share=0.2)["gold"].notna().sum())
    assert f"program.items_per_round: items.csv has {n_gold} items with gold" in line
    assert f"items_per_round: {(n_gold - 70) // 2} would fit" in line
    assert not (tmp_path / "labels.db").exists()  # stopped before any work


# --- the simulation on a table --------------------------------------------------------------------


def test_a_table_world_is_its_gold_items_with_the_teams_labels(tmp_path) -> None:
    from experiments.config import load_config
    from experiments.world import build_world

    items = _items()
    items.loc[items.index[:50], "label"] = None  # not labelled yet: the crowd gives the first label
    cfg = load_config(_config(tmp_path, items))
    world = build_world(cfg)
    table = items.set_index("item_id")
    gold = table["gold"].dropna()
    assert world.classes == CLASSES and world.dataset == "items"
    assert set(world.stream) | set(world.holdout.index) | set(world.calibration.index) <= set(gold.index)
    assert not set(world.stream) & set(world.holdout.index)
    assert (np.array(CLASSES)[world.truth.to_numpy()] == gold.reindex(world.truth.index).to_numpy()).all()
    initial = world.initial.set_index(ITEM)
    labelled = table["label"].reindex(world.stream).notna().to_numpy()
    assert labelled.sum() > 0 and (~labelled).sum() > 0
    teams = initial[labelled]
    assert (teams[ANNOTATOR] == "current-label").all()
    assert (np.array(CLASSES)[teams[LABEL].to_numpy()] == table["label"].reindex(teams.index).to_numpy()).all()
    assert (initial.loc[~labelled, ANNOTATOR] != "current-label").all()


def test_a_short_program_on_a_table_removes_errors(tmp_path) -> None:
    from experiments.config import load_config
    from experiments.program import run_program

    cfg = load_config(_config(tmp_path), ignore=("compare",)).replace(store_url="sqlite://")
    result = run_program(cfg)
    assert result.dataset == "items" and result.stream == "team-items-tiered-seed0"
    assert result.initial_error_rate > 0.05  # the table's flipped labels
    assert result.errors_removed > 0 and result.final_error_rate < result.initial_error_rate


def test_with_annotations_the_crowd_replays_the_teams_answers(tmp_path) -> None:
    from experiments.config import load_config
    from experiments.program import run_program
    from loop.store import LabelStore

    items = _items()
    answers = _answers(items)
    cfg = load_config(_config(tmp_path, items, annotations=answers), ignore=("compare",))
    with LabelStore("sqlite://") as store:
        result = run_program(cfg, store=store)
        stored = store.annotations_frame(result.stream)
    stored[LABEL] = np.array(CLASSES)[stored[LABEL].to_numpy(dtype=np.int64)]
    crowd = stored[stored[ANNOTATOR].str.startswith("ann-")]
    assert len(crowd) > 0
    real = set(zip(answers[ITEM], answers[ANNOTATOR], answers[LABEL]))
    # Each item's first crowd answers in the program are the team's own, as long as it has any left.
    per_item = answers.groupby(ITEM).size()
    first = crowd[crowd.groupby(ITEM).cumcount() < per_item.reindex(crowd[ITEM]).to_numpy()]
    assert set(zip(first[ITEM], first[ANNOTATOR], first[LABEL])) <= real
    # Their seconds are the team's too.
    timed = answers.set_index([ITEM, ANNOTATOR])["seconds"]
    assert np.allclose(first["seconds"].to_numpy(), timed.reindex(pd.MultiIndex.from_frame(first[[ITEM, ANNOTATOR]])))


def test_replay_without_annotations_is_refused(capsys, tmp_path) -> None:
    path = _config(tmp_path, crowd={"tiers": "replay", "experts": 3})
    line = _one_line(capsys, ["run", "--config", str(path)])
    assert "crowd.tiers: expected tier counts for a table without program.annotations" in line


# --- labelloop retrain ---------------------------------------------------------------------------


def _retrain_config(tmp_path: Path, mlflow_uri: str, name: str, **gate) -> Path:
    return _config(tmp_path, tracking={"uri": mlflow_uri, "experiment": name, "registered_model": name},
                   **({"gate": gate} if gate else {}))


def test_retrain_promotes_then_a_gate_it_cannot_pass_refuses_with_exit_3(capsys, tmp_path, mlflow_uri) -> None:
    from mlflow import MlflowClient

    from experiments import tracking as T
    from loop.store import LabelStore

    path = _retrain_config(tmp_path, mlflow_uri, "own-retrain")
    assert main(["retrain", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "promoted: every check passed (no champion yet)" in out
    client = MlflowClient(mlflow_uri)
    assert str(client.get_model_version_by_alias("own-retrain", "champion").version) == "1"
    # The team's stream was created from the table: every labelled item, its label the table's.
    with LabelStore(f"sqlite:///{tmp_path}/labels.db") as store:
        resolved = store.resolved_labels("team-items")
    assert len(resolved) == len(_items())

    strict = _retrain_config(tmp_path, mlflow_uri, "own-retrain", min_accuracy_gain=0.5)
    assert main(["retrain", "--config", str(strict), "--output", str(tmp_path / "out")]) == 3
    assert "refused: accuracy gain +0.000 < +0.500" in capsys.readouterr().out
    # --output: the verdict for scripts, one row, both models on the same items.
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert len(summary) == 1 and not bool(summary.loc[0, "promoted"]) and summary.loc[0, "version"] == 2
    assert summary.loc[0, "gate_reason"].startswith("refused: accuracy gain")
    assert summary.loc[0, "champion_accuracy"] == summary.loc[0, "challenger_accuracy"]
    assert str(client.get_model_version_by_alias("own-retrain", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("own-retrain", "challenger").version) == "2"
    runs = client.search_runs([client.get_experiment_by_name("own-retrain").experiment_id],
                              order_by=["attributes.start_time ASC"])
    assert [r.data.tags[T.TAG_GATE_VERDICT] for r in runs] == ["promoted", "refused"]
    assert [r.data.metrics[T.PROMOTED] for r in runs] == [1.0, 0.0]
    assert all(r.data.tags[T.TAG_ROLE] == T.ROLE_RETRAIN and r.data.params[T.RETRAIN_STREAM] == "team-items"
               for r in runs)
    assert runs[1].data.metrics[T.CHAMPION_ACCURACY] == runs[1].data.metrics[T.CHALLENGER_ACCURACY]
    # Each version names the run that made it and the gate's verdict.
    versions = [client.get_model_version("own-retrain", v).tags for v in ("1", "2")]
    assert [v[T.VERSION_GATE_VERDICT] for v in versions] == ["promoted", "refused"]
    assert [v[T.VERSION_RUN_ID] for v in versions] == [r.info.run_id for r in runs]


def test_retrain_trains_on_the_store_and_never_on_the_items_it_evaluates_on(tmp_path) -> None:
    from experiments import retrain
    from experiments.config import load_config
    from experiments.tracking import MemoryTracker
    from loop.store import LabelStore

    items = _items()
    cfg = load_config(_config(tmp_path, items), ignore=("compare",))
    with LabelStore("sqlite://") as store:
        first = retrain.main(cfg, store=store, tracker=MemoryTracker())
        # An expert confirms ten items without gold: they move from training to evaluation.
        no_gold = items.loc[items["gold"].isna(), "item_id"].to_numpy()[:10]
        heads = store.resolved_labels("team-items").set_index(ITEM)["resolution_id"]
        store.add_resolutions("team-items", pd.DataFrame({
            ITEM: no_gold, LABEL: "benign", "method": "expert", "supersedes": heads.reindex(no_gold).to_numpy()}))
        second = retrain.main(cfg, store=store, tracker=MemoryTracker())
        # As of the first run's version, the labels (and so the split) are the first run's.
        again = retrain.main(cfg, store=store, tracker=MemoryTracker(), as_of=first.as_of)
    n_gold = int(items["gold"].notna().sum())
    assert first.training_items == len(items) - n_gold
    assert first.evaluation_items + first.calibration_items == n_gold
    assert second.training_items == first.training_items - 10
    assert second.evaluation_items + second.calibration_items == n_gold + 10
    assert again.training_items == first.training_items
    assert again.challenger.accuracy == first.challenger.accuracy and again.challenger.ece == first.challenger.ece


@pytest.mark.parametrize(("argv", "named"), [
    (["--stream", "nobody-wrote-this"], "'stream'"),
    (["--as-of", "last tuesday"], "'as_of'"),
])
def test_retrain_on_bad_input_is_one_line_and_exit_2(capsys, tmp_path, argv, named) -> None:
    path = _config(tmp_path)
    line = _one_line(capsys, ["retrain", "--config", str(path), *argv])
    assert line.startswith("labelloop retrain: error: ") and named in line


def test_retrain_needs_a_table(capsys, tmp_path) -> None:
    path = tmp_path / "digits.yaml"
    path.write_text("tracking: {uri: none}\nstore: {url: 'sqlite://'}\n")
    line = _one_line(capsys, ["retrain", "--config", str(path)])
    assert line == ("labelloop retrain: error: program.dataset: expected a table (retrain reads the items' "
                    "features from it), got 'digits'")


def test_the_example_config_is_a_table() -> None:
    root = Path(__file__).resolve().parents[2]
    cfg = parse_config(yaml.safe_load((root / "configs/own.yaml").read_text()), ignore=("tune",))
    assert cfg.table is not None and cfg.table.gold == "gold" and cfg.simulation_model == "labelloop-own-simulation"


def test_a_first_model_the_gate_refuses_never_becomes_champion(capsys, tmp_path, mlflow_uri) -> None:
    from mlflow import MlflowClient

    impossible = _retrain_config(tmp_path, mlflow_uri, "own-refused-first", max_ece=0.0)
    assert main(["retrain", "--config", str(impossible)]) == 3
    assert "refused: calibration error" in capsys.readouterr().out
    client = MlflowClient(mlflow_uri)
    assert "champion" not in client.get_registered_model("own-refused-first").aliases
    # The registered model exists, its champion alias does not: still "no champion yet".
    path = _retrain_config(tmp_path, mlflow_uri, "own-refused-first")
    assert main(["retrain", "--config", str(path)]) == 0
    assert "promoted: every check passed (no champion yet)" in capsys.readouterr().out
    assert str(client.get_model_version_by_alias("own-refused-first", "champion").version) == "2"


def test_retrain_on_a_stream_with_items_the_table_lacks_is_exit_2(capsys, tmp_path) -> None:
    from loop.store import LabelStore

    path = _config(tmp_path)
    with LabelStore(f"sqlite:///{tmp_path}/labels.db") as store:
        store.create_stream("elsewhere", list(CLASSES))
        store.add_items("elsewhere", pd.DataFrame({ITEM: ["case-001", "stranger"]}))
        store.add_resolutions("elsewhere", pd.DataFrame({ITEM: ["case-001", "stranger"], LABEL: ["benign", "benign"],
                                                         "method": "consensus"}))
    line = _one_line(capsys, ["retrain", "--config", str(path), "--stream", "elsewhere"])
    assert "column 'item_id': stream 'elsewhere' has item 'stranger', which the table does not" in line


def test_retrain_adds_the_tables_new_rows_and_keeps_the_stores_corrections(tmp_path) -> None:
    from experiments import retrain
    from experiments.config import load_config
    from experiments.tracking import MemoryTracker
    from loop.store import LabelStore

    items = _items()
    path = _config(tmp_path, items.iloc[:-20])
    cfg = load_config(path, ignore=("compare",))
    with LabelStore("sqlite://") as store:
        before = retrain.main(cfg, store=store, tracker=MemoryTracker())
        corrected = items.loc[items["gold"].isna(), "item_id"].iloc[0]
        head = store.resolved_labels("team-items").set_index(ITEM).loc[corrected, "resolution_id"]
        store.add_resolutions("team-items", pd.DataFrame({ITEM: [corrected], LABEL: ["malignant"],
                                                          "method": "consensus", "supersedes": [int(head)]}))
        items.loc[items["item_id"] == corrected, "label"] = "benign"  # the table is not where labels change
        items.to_csv(tmp_path / "items.csv", index=False)
        after = retrain.main(cfg, store=store, tracker=MemoryTracker())
        labels = store.resolved_labels("team-items").set_index(ITEM)[LABEL]
    new_without_gold = int(items.iloc[-20:]["gold"].isna().sum())
    assert new_without_gold > 0
    assert after.training_items == before.training_items + new_without_gold
    assert len(labels) == len(items) and labels[corrected] == CLASSES.index("malignant")


def test_a_parquet_table_reads_like_its_csv(tmp_path) -> None:
    from experiments.config import TableDataset
    from experiments.table import load_table

    items = _items().assign(note="free text")  # a text column is not a feature
    items.to_csv(tmp_path / "items.csv", index=False)
    items.to_parquet(tmp_path / "items.parquet")
    csv = load_table(TableDataset(path=str(tmp_path / "items.csv"), gold="gold"))
    parquet = load_table(TableDataset(path=str(tmp_path / "items.parquet"), gold="gold"))
    assert csv.classes == parquet.classes == CLASSES
    assert list(csv.features.columns) == [f"f{i}" for i in range(8)]
    pd.testing.assert_frame_equal(csv.features, parquet.features)
    pd.testing.assert_series_equal(csv.labels, parquet.labels)
    pd.testing.assert_series_equal(csv.gold, parquet.gold)
    assert (csv.gold == -1).sum() == items["gold"].isna().sum()


def test_a_stray_text_cell_in_a_numeric_column_is_reported_not_dropped(tmp_path) -> None:
    from experiments.config import TableDataset
    from experiments.table import TableError, load_table

    items = _items()
    items["f4"] = items["f4"].astype(object)
    items.loc[20, "f4"] = "?"
    items.to_csv(tmp_path / "items.csv", index=False)
    with pytest.raises(TableError, match=r"column 'f4', row 21 \(item_id 'case-020'\): expected a finite number, got '\?'"):
        load_table(TableDataset(path=str(tmp_path / "items.csv"), gold="gold"))


def test_retrain_fits_the_configured_model_and_registers_it_with_its_trust(tmp_path) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    from experiments import retrain
    from experiments.config import load_config
    from experiments.tracking import MemoryTracker
    from loop.store import LabelStore

    model = {"estimator": "sklearn.ensemble.HistGradientBoostingClassifier", "params": {"max_iter": 20}}
    cfg = load_config(_config(tmp_path, model=model), ignore=("compare",))
    tracker = MemoryTracker()
    with LabelStore("sqlite://") as store:
        retrain.main(cfg, store=store, tracker=tracker)
    assert isinstance(tracker.load_model("challenger").estimator, HistGradientBoostingClassifier)
    # With MLflow, the team's model name and the configured estimator's trusted modules.
    mlflow = retrain._tracker(cfg.replace(tracking=cfg.tracking.__class__(uri=f"sqlite:///{tmp_path}/m.db")))
    assert mlflow.model_name == cfg.tracking.registered_model
    assert mlflow.trusted_modules == ("sklearn.ensemble._hist_gradient_boosting",)


def test_a_replayed_crowd_serves_the_preferred_annotators_first(tmp_path) -> None:
    from experiments.config import load_config
    from experiments.ports import Request, SimulatedWorkforce
    from experiments.world import build_world

    items = _items()
    answers = _answers(items)
    world = build_world(load_config(_config(tmp_path, items, annotations=answers), ignore=("compare",)))
    asked = world.stream[:60]
    real = answers[answers[ITEM].isin(asked)]
    skills = pd.Series({f"ann-{i}": 0.5 + 0.05 * i for i in range(6)})  # ann-5 the most skilled
    workforce = SimulatedWorkforce(world)

    def served(prefer: pd.Series | None) -> pd.Series:
        ticket = workforce.submit(Request(asked, prefer=prefer), rng=np.random.default_rng(0))
        return workforce.collect(ticket).set_index(ITEM)[ANNOTATOR]

    best = real.assign(skill=skills.reindex(real[ANNOTATOR]).to_numpy()).sort_values("skill").groupby(ITEM).last()
    assert (served(skills).reindex(best.index) == best[ANNOTATOR]).all()
    # Without a preference each item's answerer is drawn at random among those who answered it.
    assert (served(None).reindex(best.index) != best[ANNOTATOR]).any()
