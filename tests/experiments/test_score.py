"""``labelloop score``: a pool scored and routed in bulk (Ray Data), the same decisions as in process."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest
import yaml

from experiments.cli import main as cli
from experiments.config import ProgramConfig, parse_config
from experiments.score import MODEL_VERSION, OUTPUT_COLUMNS, PROBABILITIES, BulkScorer, PoolColumns, pool_columns
from loop.exceptions import SchemaError
from loop.calibration import CalibratedClassifier, TemperatureScaling
from loop.columns import ITEM, LABEL_ISSUE_SCORE, NO_LABEL, REASON, ROUTE
from loop.routing import RoutingThresholds, route, score_items

MODEL = "score-test"
N, D, K = 600, 4, 3
THRESHOLDS = {"auto_accept_confidence": 0.9, "expert_margin": 0.1, "double_blind_issue_score": 0.8}


@pytest.fixture(scope="module")
def scored_world(mlflow_uri, tmp_path_factory):
    """A champion in the registry, a pool of N items (some without a label), and a config."""
    from sklearn.linear_model import LogisticRegression

    import mlflow

    from serve.registry import publish_model

    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_experiment("score-tests")  # this store's own: another module may have set another store's
    rng = np.random.default_rng(3)
    x = rng.normal(size=(N + 300, D))
    y = np.argmax(x[:, :K] + 0.5 * rng.normal(size=(N + 300, K)), axis=1)
    clf = LogisticRegression(max_iter=500).fit(x[:200], y[:200])
    model = CalibratedClassifier(clf, TemperatureScaling().fit(clf.predict_proba(x[200:300]), y[200:300]),
                                 n_classes=K)
    version = publish_model(model, model_name=MODEL, tracking_uri=mlflow_uri)
    root = tmp_path_factory.mktemp("score")
    labels = pd.array(y[300:], dtype="Int64")
    labels[::7] = pd.NA  # not labelled yet
    pool = pd.DataFrame({ITEM: [f"it-{i}" for i in range(N)], **{f"f{j}": x[300:, j] for j in range(D)},
                         "label": labels})
    pool.to_parquet(root / "pool.parquet")
    config = root / "score.yaml"
    config.write_text(yaml.safe_dump({"program": {"name": "bulk"}, "thresholds": THRESHOLDS,
                                      "tracking": {"uri": mlflow_uri, "registered_model": MODEL},
                                      "store": {"url": f"sqlite:///{root}/labels.db"}}))
    return {"model": model, "version": version, "pool": pool, "root": root, "config": config, "uri": mlflow_uri}


def _score(world, out: str, *extra: str, pool: str | None = None) -> int:
    return cli(["score", "--config", str(world["config"]), "--pool", pool or str(world["root"] / "pool.parquet"),
                "--out", str(world["root"] / out), *extra])


def test_score_writes_every_decision_with_its_model_version_and_stores_them(scored_world, ray_serve):
    world = scored_world
    assert _score(world, "scored.parquet", "--output", str(world["root"] / "results")) == 0
    scored = pd.read_parquet(world["root"] / "scored.parquet").set_index(ITEM).loc[world["pool"][ITEM]]
    assert list(scored.reset_index().columns) == list(OUTPUT_COLUMNS)
    assert (scored[MODEL_VERSION] == f"{MODEL}/{world['version']}").all()
    # The same probabilities as the model in process, and the same decisions as loop's route.
    pool = world["pool"]
    x = pool[[f"f{j}" for j in range(D)]].to_numpy()
    probs = world["model"].predict_proba(x)
    np.testing.assert_allclose(np.stack(scored[PROBABILITIES].to_numpy()), probs, atol=1e-12)
    codes = pool["label"].fillna(NO_LABEL).to_numpy(dtype=np.int64)
    expected = score_items(probs, item_ids=pool[ITEM].to_numpy(), labels=codes, classes=["0", "1", "2"])
    expected["label"] = np.where(codes == NO_LABEL, None, codes.astype(str))
    decisions = route(expected, RoutingThresholds.from_dict(THRESHOLDS))
    assert scored[ROUTE].tolist() == decisions[ROUTE].tolist()
    assert scored[REASON].tolist() == decisions[REASON].tolist()
    # Items without a label have no label-issue score.
    assert scored[LABEL_ISSUE_SCORE].isna().to_numpy().tolist() == (codes == NO_LABEL).tolist()
    with sqlite3.connect(world["root"] / "labels.db") as db:
        stored = db.execute("select count(*), sum(p.route = 'auto_accept') from predictions p join model_versions m "
                            "on p.model_version_id = m.id where m.name = ?", (f"{MODEL}/{world['version']}",)).fetchone()
    assert stored == (N, int((scored[ROUTE] == "auto_accept").sum()))
    # --output: one row for scripts, the items per route summing to the pool.
    summary = pd.read_csv(world["root"] / "results" / "summary.csv")
    assert len(summary) == 1 and summary.loc[0, "rows"] == N
    assert summary.loc[0, "model_version"] == f"{MODEL}/{world['version']}"
    assert summary.filter(like="route_").sum(axis=1).iloc[0] == N
    assert summary.loc[0, "route_auto_accept"] == int((scored[ROUTE] == "auto_accept").sum())


def test_nan_features_stop_the_score_naming_the_item(scored_world, ray_serve, capsys):
    world = scored_world
    bad = world["pool"].copy()
    bad.loc[5, "f2"] = np.nan
    bad.to_parquet(world["root"] / "nan.parquet")
    assert _score(world, "nan-out", pool=str(world["root"] / "nan.parquet")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--pool: expected finite features" in err and "'f2'" in err and "'it-5'" in err
    # Nothing half-written: the next run with the same --out starts clean.
    assert not (world["root"] / "nan-out").exists()


@pytest.mark.parametrize(("case", "field"), [
    ("missing pool", "--pool: expected a .parquet or .csv file"),
    ("missing feature", "--pool: expected the feature columns of program.dataset.features, missing ['f9']"),
    ("existing out", "--out: expected a path that does not exist yet"),
    ("pickled model", "model.uri: models:/score-pickled/1 has the flavour sklearn (cloudpickle)"),
])
def test_bad_input_exits_2_with_one_line_naming_the_field(scored_world, capsys, case, field):
    world = scored_world
    root = world["root"]
    config = yaml.safe_load(world["config"].read_text())
    pool, out = str(root / "pool.parquet"), f"out-{case.replace(' ', '-')}"
    if case == "missing pool":
        pool = str(root / "nowhere.parquet")
    elif case == "missing feature":
        config["program"]["dataset"] = {"path": pool, "features": ["f0", "f9"]}
    elif case == "existing out":
        (root / out).mkdir()
    else:
        import mlflow
        import mlflow.sklearn

        mlflow.set_tracking_uri(world["uri"])
        mlflow.set_registry_uri(world["uri"])
        with mlflow.start_run():
            mlflow.sklearn.log_model(world["model"], name="model", serialization_format="cloudpickle",
                                     registered_model_name="score-pickled")
        config["model"] = {"uri": "models:/score-pickled/1"}
    path = root / f"{out}.yaml"
    path.write_text(yaml.safe_dump(config))
    capsys.readouterr()  # what logging the model printed
    code = cli(["score", "--config", str(path), "--pool", pool, "--out", str(root / out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("labelloop score: error: ")
    assert field in err


def test_a_table_config_names_the_pool_columns():
    cfg = parse_config({"program": {"dataset": {"path": "t.csv", "id": "key", "label": "y", "gold": "truth"}}})
    columns = pool_columns(cfg, ["key", "a", "y", "truth", "b", "text"], ["a", "y", "truth", "b"])
    assert columns == PoolColumns(id="key", label="y", features=("a", "b"))
    with pytest.raises(SchemaError, match="--pool: expected an id column 'key'"):
        pool_columns(cfg, ["item_id", "a"], ["a"])
    assert pool_columns(ProgramConfig(), ["item_id", "a"], ["a"]).label is None


class _Fixed:
    """A model that gives every row the same probabilities."""

    def predict_proba(self, x):
        return np.tile([0.7, 0.2, 0.1], (len(x), 1))


def _fixed_scorer(classes: list[str]) -> BulkScorer:
    return BulkScorer(_Fixed(), PoolColumns("item_id", "label", ("a",)), classes,
                      RoutingThresholds.from_dict(THRESHOLDS), "m/1")


def test_the_batch_scorer_reads_labels_by_class_name_and_refuses_unknown_ones():
    scorer = _fixed_scorer(["cat", "dog", "eel"])
    batch = pd.DataFrame({"item_id": [1, 2, 3], "a": [0.0, 1.0, 2.0], "label": ["dog", None, " "]})
    out = scorer(batch).to_pandas()
    assert out[LABEL_ISSUE_SCORE].round(6).tolist()[0] == 0.8 and out[LABEL_ISSUE_SCORE].isna().tolist() == [
        False, True, True]
    assert "labelled dog" in out[REASON][0] and out[MODEL_VERSION].tolist() == ["m/1"] * 3
    with pytest.raises(SchemaError, match="--pool: expected labels among the classes .* got 'fox'"):
        scorer(batch.assign(label=["fox", "dog", "cat"]))


def test_a_tables_classes_are_the_names_retrain_trained_on(tmp_path):
    from experiments.score import _classes

    pd.DataFrame({"item_id": ["a", "b", "c"], "label": ["malignant", "benign", ""], "f0": [0.1, 0.2, 0.3]}) \
        .to_csv(tmp_path / "items.csv", index=False)
    table = parse_config({"program": {"dataset": {"path": str(tmp_path / "items.csv")}}})
    # No classes in the config: the sorted labels of the table's file, as load_table gives retrain.
    assert _classes(table, 2) == ["benign", "malignant"]
    named = parse_config({"program": {"dataset": {"path": str(tmp_path / "items.csv"),
                                                  "classes": ["malignant", "benign"]}}})
    assert _classes(named, 2) == ["malignant", "benign"]
    assert _classes(ProgramConfig(), 3) == ["0", "1", "2"]


def test_a_tables_predictions_join_the_items_retrain_registered(tmp_path):
    from experiments.score import _SIGNALS, _store
    from loop.store import LabelStore

    path = tmp_path / "items.csv"
    cfg = parse_config({"program": {"name": "own", "dataset": {"path": str(path)}},
                        "store": {"url": f"sqlite:///{tmp_path}/labels.db"}})
    with LabelStore(cfg.store_url) as store:  # as retrain leaves it: the table's items, its name as source
        store.create_stream("own-items", ["benign", "malignant"])
        store.add_items("own-items", pd.DataFrame({ITEM: ["a", "b"], "source": "items"}))
    out = tmp_path / "scored"
    out.mkdir()
    frame = pd.DataFrame({ITEM: ["a", "b", "c"], PROBABILITIES: [[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]],
                          **{s: [0.1, 0.2, float("nan")] for s in _SIGNALS}, ROUTE: "review", REASON: "why"})
    frame.to_parquet(out / "part-0.parquet")
    assert _store(cfg, out, "own-items", ["benign", "malignant"], "own/1", "models:/own@champion") == 3
    with LabelStore(cfg.store_url) as store:
        assert len(store.events_frame(stream="own-items").query("action == 'prediction.created'")) == 3


def test_the_batch_scorer_reads_integer_labels_with_gaps_as_class_codes():
    scorer = _fixed_scorer(["0", "1", "2"])
    # An integer column with a gap reads as floats: 1.0 is the class "1", and the reason says "1".
    batch = pd.DataFrame({"item_id": [1, 2, 3, 4], "a": 0.0, "label": [1.0, np.nan, 0.0, 1.0]})
    out = scorer(batch).to_pandas()
    assert out[LABEL_ISSUE_SCORE].round(6).tolist()[::2] == [0.8, 0.3] and np.isnan(out[LABEL_ISSUE_SCORE][1])
    assert "labelled 1" in out[REASON][3] and "1.0" not in out[REASON][3]
    # The first unknown label is named, wherever it is in the batch.
    with pytest.raises(SchemaError, match="got '7'"):
        scorer(batch.assign(label=[1, 2, 7, 9]))
