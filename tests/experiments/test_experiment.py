"""labelloop experiment: its config, a seeded run in memory and in MLflow, the command."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from experiments import experiment as E
from experiments.cli import main as cli
from experiments.config import ConfigError
from experiments.tracking import MemoryTracker

ROOT = Path(__file__).resolve().parents[2]
# Small and quick: a world of 40 stream items, a look every 40 tasks.
PROGRAM = {"program": {"rounds": 1, "items_per_round": 40, "calibration_items": 60, "holdout_items": 100, "seed": 0},
           "crowd": {"tiers": {"novice": 4, "experienced": 8, "expert": 2}}, "tracking": {"uri": "none"},
           "store": {"url": "sqlite://"}}
GUIDELINE = {"version": "v2", "text": "A 3 is open on the left.", "examples": {"3": ["digit-0003"]},
             # Every pair, all its confusion: a large effect, found in a few looks.
             "pairs": [[str(a), str(b)] for a in range(10) for b in range(a + 1, 10)], "effect": 1.0}


def _raw(**experiment):
    settings = {"max_annotations": 800, "look_every": 40, "seed": 0, "audit_rate": 0.2,
                "variants": [{"name": "today"}, {"name": "v2", "guideline": GUIDELINE}]}
    return {**PROGRAM, "experiment": {**settings, **experiment}}


@pytest.fixture(scope="module")
def world():
    from experiments.world import build_world

    return build_world(E.parse_experiment_config(_raw()).program)


def test_the_example_config_loads():
    cfg = E.load_experiment_config(ROOT / "configs/experiment.yaml")
    assert [v.name for v in cfg.experiment.variants] == ["current", "v2", "suggested", "examples"]
    assert cfg.experiment.variants[1].guideline.pairs[0] == ("1", "8")
    assert cfg.experiment.variants[2].suggestion and cfg.experiment.variants[3].examples == 3
    assert cfg.experiment.unit is E.Unit.TASK and cfg.experiment.alpha == 0.05


@pytest.mark.parametrize(("change", "named"), [
    ({"alpha": 0}, "experiment.alpha"), ({"alpha": "x"}, "experiment.alpha"), ({"unit": "item"}, "experiment.unit"),
    ({"measure": "truth"}, "experiment.measure"), ({"max_annotations": 10}, "experiment.max_annotations"),
    ({"look_every": 1}, "experiment.look_every"), ({"min_effect": -0.1}, "experiment.min_effect"),
    ({"tau": 0}, "experiment.tau"), ({"colour": 1}, "experiment.colour"),
    ({"variants": [{"name": "only"}]}, "experiment.variants"),
    ({"variants": [{"name": "a"}, {"name": "a"}]}, "experiment.variants"),
    ({"variants": [{"name": "a"}, {"name": "control"}]}, "experiment.variants[1].name"),
    ({"variants": [{"name": "a"}, {"name": "b", "suggestion": "maybe"}]}, "experiment.variants[1].suggestion"),
    ({"variants": [{"name": "a"}, {"name": "b", "examples": -2}]}, "experiment.variants[1].examples"),
    ({"variants": [{"name": "a"}, {"name": "b", "rule": {"triple": 1}}]}, "experiment.variants[1].rule"),
    ({"variants": [{"name": "a"}, {"name": "b", "rule": {"double_blind": [["3", "3"]]}}]},
     "experiment.variants[1].rule.double_blind[0]"),
    ({"variants": [{"name": "a"}, {"name": "b", "guideline": {"version": "v2", "pairs": "3-5"}}]},
     "experiment.variants[1].guideline.pairs"),
    ({"variants": [{"name": "a"}, {"name": "b", "guideline": {"version": "v2", "pairs": [["3", "5"]], "effect": 2}}]},
     "experiment.variants[1].guideline.effect"),
    ({"variants": [{"name": "a"}, {"name": "b", "colour": 1}]}, "experiment.variants[1].colour"),
])
def test_a_bad_experiment_config_names_the_field(change, named):
    with pytest.raises(ConfigError, match="^" + re.escape(named) + ":"):
        E.parse_experiment_config(_raw(**change))


def test_a_missing_section_and_an_unknown_class_are_config_errors(world):
    with pytest.raises(ConfigError, match="^experiment:"):
        E.parse_experiment_config(PROGRAM)
    bad = E.parse_experiment_config(_raw(variants=[{"name": "a"}, {"name": "b", "rule": {"double_blind": [["3", "x"]]}}]))
    with pytest.raises(ConfigError, match=r"^experiment.variants\[1\].rule.double_blind\[0\]: expected class names"):
        E.main(bad, world=world, tracker_factory=MemoryTracker)


def test_a_planted_guideline_wins_and_everything_is_logged(world):
    cfg = E.parse_experiment_config(_raw())
    result = E.main(cfg, world=world, tracker_factory=MemoryTracker)
    # The guideline removes all the confusion: found well before the budget.
    assert result.decision == "winner: v2" and result.stopped_early
    assert result.annotations < 800
    v2 = result.variants.set_index(E.VARIANT).loc["v2"]
    assert v2["winner"] == "v2" and v2[E.DIFFERENCE_CS_LOW] > 0
    # Randomisation recorded: every task, its variant, item and annotator; balanced per look.
    tasks = result.assignments
    assert len(tasks) == result.annotations and set(tasks[E.VARIANT]) == {"today", "v2"}
    assert (tasks.groupby(E.LOOK)[E.VARIANT].value_counts().unstack().nunique(axis=1) == 1).all()
    assert not tasks.duplicated([E.LOOK, "item_id"]).any()
    parent = result.trackers["parent"]
    assert parent.tags[E.T.TAG_ROLE] == E.ROLE_EXPERIMENT and parent.tags[E.TAG_DECISION] == "winner: v2"
    assert "winner: v2" in parent.tags[E.DESCRIPTION] and parent.status == "finished"
    assert parent.tables[E.ASSIGNMENTS_CSV].equals(tasks)
    assert parent.figures == [E.DIFFERENCES_PNG]
    children = {name: result.trackers[name] for name in ("today", "v2")}
    assert all(c.tags[E.T.TAG_ROLE] == E.ROLE_VARIANT for c in children.values())
    history = children["v2"].history()
    assert list(history.index) == sorted(tasks[E.LOOK].unique())
    assert (history[E.ACCURACY_CS_LOW] <= history[E.ACCURACY]).all()
    assert (history[E.ACCURACY] <= history[E.ACCURACY_CS_HIGH]).all()
    assert {E.SECONDS_PER_ITEM, E.COST_METRIC, E.P_VALUE, E.AUDIT_ACCURACY} <= set(history.columns)
    assert E.DIFFERENCE not in children["today"].history().columns
    # The guideline version the variant uses, as JSON and Markdown, in that variant's run only.
    assert set(children["v2"].tables) == {"guideline/v2.json", "guideline/v2.md"}
    assert "A 3 is open on the left." in children["v2"].tables["guideline/v2.md"]["text"].iloc[0]
    assert not children["today"].tables


def test_the_guideline_version_is_published_in_the_store_once(world, tmp_path):
    import json

    from loop.store import LabelStore

    raw = _raw(max_annotations=200)
    raw["store"] = {"url": f"sqlite:///{tmp_path}/labels.db"}
    cfg = E.parse_experiment_config(raw)
    for _ in range(2):  # a rerun finds the version it published
        result = E.main(cfg, world=world, tracker_factory=MemoryTracker)
    with LabelStore(raw["store"]["url"]) as store:
        published = store.guideline(cfg.program.name)
        assert published.version == 1 and published.text == GUIDELINE["text"]
        assert published.examples["pairs"][0] == ["0", "1"] and published.published_at is not None
    child = result.trackers["v2"]
    assert child.params["guideline.store_version"] == f"{cfg.program.name} v1"
    logged = json.loads(child.tables["guideline/v2.json"]["text"].iloc[0])
    assert logged["store"]["version"] == 1 and logged["text"] == GUIDELINE["text"]


def test_no_effect_runs_to_the_budget_without_a_winner(world):
    cfg = E.parse_experiment_config(_raw(variants=[{"name": "a"}, {"name": "b"}], max_annotations=400))
    result = E.main(cfg, world=world, tracker_factory=MemoryTracker)
    assert result.decision == "inconclusive" and not result.stopped_early
    assert 400 <= result.annotations < 440


def test_annotator_randomisation_gives_each_person_one_variant(world):
    cfg = E.parse_experiment_config(_raw(unit="annotator", max_annotations=400))
    result = E.main(cfg, world=world, tracker_factory=MemoryTracker)
    split = result.trackers["parent"].tables[E.ANNOTATOR_VARIANTS_CSV]
    assert sorted(split["annotator_id"]) == sorted(world.workforce.crowd.ids)
    assert split[E.VARIANT].value_counts().tolist() == [6, 6]
    given = dict(zip(split["annotator_id"], split[E.VARIANT], strict=True))
    tasks = result.assignments
    assert (tasks["annotator_id"].map(given) == tasks[E.VARIANT]).all()
    # Six people an arm: their answers are clustered; an arm whose people differ counts for less
    # than its answers (the effect is floored at 1 where they happen to agree).
    effects = result.variants[E.DESIGN_EFFECT]
    assert (effects >= 1).all() and effects.max() > 1.5
    assert any(E.DESIGN_EFFECT in m for m in result.trackers[result.variants[E.VARIANT].iloc[1]].metrics)


def test_every_kind_of_variant_runs_and_double_blind_costs_more_answers(world):
    cfg = E.parse_experiment_config(_raw(max_annotations=600, variants=[
        {"name": "today"}, {"name": "shown", "suggestion": "shown"}, {"name": "examples", "examples": 5},
        {"name": "blind", "rule": {"double_blind": [["1", "8"], ["3", "5"]]}}]))
    result = E.main(cfg, world=world, tracker_factory=MemoryTracker)
    rows = result.variants.set_index(E.VARIANT)
    assert rows.loc["blind", E.ANNOTATIONS] > rows.loc["blind", E.TASKS]
    assert (rows.drop(index="blind")[E.ANNOTATIONS] == rows.drop(index="blind")[E.TASKS]).all()
    # Accepting a suggestion is quicker; examples take reading time.
    assert rows.loc["shown", E.SECONDS_PER_ITEM] < rows.loc["today", E.SECONDS_PER_ITEM]
    assert np.isfinite(rows[E.AGREEMENT]).all()


def test_the_audit_measure_needs_no_gold(world):
    cfg = E.parse_experiment_config(_raw(measure="audit", audit_rate=1.0))
    result = E.main(cfg, world=world, tracker_factory=MemoryTracker)
    last = result.looks[result.looks[E.LOOK] == result.looks[E.LOOK].max()].set_index(E.VARIANT)
    assert (last[E.AUDITED] == last[E.TASKS]).all()
    assert result.decision in ("winner: v2", "inconclusive")


def test_the_command_logs_a_parent_and_a_child_per_variant_to_mlflow(capsys, tmp_path, mlflow_uri):
    from mlflow import MlflowClient

    raw = _raw(max_annotations=400)
    raw["tracking"] = {"uri": mlflow_uri, "experiment": "test-experiment-command"}
    config = tmp_path / "experiment.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert cli(["experiment", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "Decision: winner: v2" in out and "v2: guideline v2" in out and "better" in out
    client = MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("test-experiment-command")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get(E.T.TAG_ROLE) == E.ROLE_EXPERIMENT)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == ["today", "v2"]
    assert parent.data.tags[E.TAG_DECISION] == "winner: v2"
    assert parent.data.params["experiment.alpha"] == "0.05"
    v2 = next(r for r in children if r.info.run_name == "v2")
    assert {a.path for a in client.list_artifacts(v2.info.run_id, "guideline")} == {"guideline/v2.json",
                                                                                     "guideline/v2.md"}
    assert len(client.get_metric_history(v2.info.run_id, E.ACCURACY)) >= 2
    assert "tables/assignments.csv" in {a.path for a in client.list_artifacts(parent.info.run_id, "tables")}
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "plots")] == [E.DIFFERENCES_PNG]


def test_a_bad_config_is_one_line_and_exit_2(capsys, tmp_path):
    config = tmp_path / "experiment.yaml"
    config.write_text(yaml.safe_dump(_raw(alpha=2)))
    assert cli(["experiment", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("labelloop experiment: error: experiment.alpha: expected") and err.count("\n") == 1


@pytest.fixture
def live_store(store_url):
    """A stream whose answers cite guideline v1 or v2 (v2's answers are right more often), and
    an expert's resolution of every item; on SQLite and on PostgreSQL."""
    import pandas as pd

    from loop.store import LabelStore

    url = store_url
    rng = np.random.default_rng(0)
    with LabelStore(url) as store:
        store.create_stream("team", ["a", "b", "c"])
        for i in range(10):
            store.add_annotator(f"p{i}", streams=["team"])
        items = [f"i{i}" for i in range(400)]
        store.add_items("team", pd.DataFrame({"item_id": items}))
        for text in ("Old rules.", "New rules: b has a tail."):
            store.publish_guideline("team", store.add_guideline("team", text, author="owner").version)
        truth = rng.integers(0, 3, len(items))
        version = np.arange(len(items)) % 2 + 1
        right = rng.random(len(items)) < np.where(version == 2, 0.92, 0.72)
        label = np.where(right, truth, (truth + 1) % 3)
        store.add_annotations("team", pd.DataFrame({"item_id": items, "annotator_id": [f"p{i % 10}" for i in range(400)],
                                                    "label": label, "seconds": 10.0, "guideline_version": version}))
        store.add_resolutions("team", pd.DataFrame({"item_id": items, "label": truth}), method="expert")
    return url


def _live(url, **experiment):
    settings = {"stream": "team", "measure": "audit", "look_every": 50,
                "variants": [{"name": "old", "guideline": {"version": 1}}, {"name": "new", "guideline": {"version": 2}}]}
    return E.parse_experiment_config({"tracking": {"uri": "none"}, "store": {"url": url},
                                      "experiment": {**settings, **experiment}})


def test_a_live_stream_is_measured_from_the_store(live_store):
    result = E.main(_live(live_store), tracker_factory=MemoryTracker)
    assert result.decision == "winner: new" and result.stopped_early
    rows = result.variants.set_index(E.VARIANT)
    assert rows.loc["new", E.AUDIT_ACCURACY] > rows.loc["old", E.AUDIT_ACCURACY] + 0.1
    assert rows.loc["new", E.SECONDS_PER_ITEM] == pytest.approx(10.0)
    # The answers replayed in the order they came, up to the look that decided.
    tasks = result.assignments
    assert result.annotations == len(tasks) < 400 and len(tasks) % 50 == 0
    from loop.store import LabelStore

    with LabelStore(live_store) as store:
        stored = store.annotations_frame("team").sort_values("annotation_id")
    assert tasks["item_id"].tolist() == stored["item_id"].tolist()[:len(tasks)]
    version = stored["guideline_version"].to_numpy()[:len(tasks)]
    assert (tasks[E.VARIANT].to_numpy() == np.where(version == 2, "new", "old")).all()
    logged = result.trackers["new"].tables["guideline/v2.md"]["text"].iloc[0]
    assert "New rules: b has a tail." in logged


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # the checks read no more than the first test
@pytest.mark.parametrize(("change", "named"), [
    ({"measure": "gold"}, "experiment.measure"),
    ({"variants": [{"name": "old", "guideline": {"version": 1}}, {"name": "new", "guideline": {"version": 7}}]},
     "experiment.variants[1].guideline.version"),
    ({"variants": [{"name": "old"}, {"name": "more", "examples": 3}]}, "experiment.variants[1].examples"),
    ({"variants": [{"name": "old"}, {"name": "same"}]}, "experiment.variants[1].name"),
])
def test_a_live_stream_refuses_what_the_store_cannot_tell(live_store, change, named):
    with pytest.raises(ConfigError, match="^" + re.escape(named) + ":"):
        E.main(_live(live_store, **change), tracker_factory=MemoryTracker)


def test_the_public_face_is_what_all_lists():
    assert sorted(E.__all__) == sorted(set(E.__all__))
    assert all(hasattr(E, name) for name in E.__all__)


def _arms_config(url, **change):
    variants = [{"name": "old", "guideline": {"version": 1}, "suggestion": "shown"},
                {"name": "new", "guideline": {"version": 2}, "suggestion": "shown"},
                {"name": "bare", "guideline": {"version": 1}}]
    settings = {"stream": "team", "measure": "audit", "look_every": 60, "seed": 3, "variants": variants, **change}
    return E.parse_experiment_config({"tracking": {"uri": "none"}, "store": {"url": url}, "experiment": settings})


def test_serve_randomises_tasks_to_the_variants_and_experiment_measures_them(store_url, monkeypatch):
    """``labelloop serve`` with an experiment section: the crowd's label tasks are spread over
    the arms as they are created, each showing its guideline version and the suggestion or not;
    what people answer is then told apart by ``labelloop experiment`` on the same config."""
    import uuid

    import pandas as pd

    import experiments.live
    from experiments.live import HumanWorkforce
    from experiments.ports import Request
    from loop.store import TASK_ID, LabelStore

    # The arms hang on the task keys, which carry the run's random session key: fixed here, so
    # that every run of this test draws the same arms (one draw in CI once came out inconclusive).
    monkeypatch.setattr(experiments.live.uuid, "uuid4", lambda: uuid.UUID(int=7))
    rng = np.random.default_rng(0)
    cfg = _arms_config(store_url)
    items = [f"i{i}" for i in range(300)]
    truth = pd.Series(rng.integers(0, 3, len(items)), index=items)
    with LabelStore(store_url) as store:
        store.create_stream("team", ["a", "b", "c"])
        people = [f"p{i}" for i in range(10)]
        for name in people:
            store.add_annotator(name, streams=["team"])
        store.add_annotator("x", tier=3, streams=["team"])
        store.add_items("team", pd.DataFrame({"item_id": items}))
        store.add_model_version("1")
        store.add_predictions("team", "1", pd.DataFrame({"item_id": items, "probs": [[0.5, 0.3, 0.2]] * len(items)}))
        for text in ("Old rules.", "New rules: b has a tail."):
            store.publish_guideline("team", store.add_guideline("team", text, author="owner").version)
        store.add_resolutions("team", pd.DataFrame({"item_id": items, "label": truth.to_numpy()}), method="expert")
        arms = E.live_arms(cfg.experiment, store, "team")
        workforce = HumanWorkforce(store, "team", sla_seconds=3600, poll_seconds=1, arms=arms, seed=3)
        workforce.submit(Request(items, kind="label", round=1), rng=rng)
        workforce.submit(Request(items[:20], expert=True, round=1), rng=rng)  # expert work is not randomised
        tasks = store.tasks_frame("team")
        crowd = tasks[tasks["kind"] == "label"].set_index("task_id")
        arm_of = {(a.guideline_version, not a.suggestion): a.name for a in arms}
        assigned = pd.Series([arm_of[(int(v), bool(b))] for v, b in zip(crowd["guideline_version"], crowd["blind"])],
                             index=crowd.index)
        assert assigned.value_counts().to_dict() == workforce.assigned
        assert min(workforce.assigned.values()) >= 70  # uniform: 100 each expected of 300
        expert = tasks[tasks["kind"] == "expert"]
        assert expert["guideline_version"].isna().all() and not expert["blind"].any()
        # People answer their tasks; with guideline v2 they are right more often.
        while (task := store.next_task(people[int(rng.integers(len(people)))], stream="team")) is not None:
            assert task.kind == "label"  # expert tasks go to experts only
            right = rng.random() < (0.97 if assigned[task.id] == "new" else 0.6)
            label = int(truth[task.item_id]) if right else (int(truth[task.item_id]) + 1) % 3
            store.answer_task(task.id, task.annotator, label, seconds=5.0)
        answers = store.annotations_frame("team", extras=("suggestion",)).sort_values("annotation_id")
    seen = E.answer_variants(answers, cfg.experiment.variants, {a.name: a.guideline_version for a in arms})
    assert len(answers) == len(crowd) and (seen == assigned.reindex(answers[TASK_ID]).to_numpy()).all()
    assert answers.loc[seen == "bare", "suggestion"].isna().all()  # blind: no suggestion shown
    result = E.main(cfg, tracker_factory=MemoryTracker)
    rows = result.variants.set_index(E.VARIANT)
    assert result.decision == "winner: new" and rows.loc["new", E.AUDIT_ACCURACY] > rows.loc["old", E.AUDIT_ACCURACY]
    assert rows[E.ACCURACY].isna().all()  # no gold on this stream: accuracy unknown, not zero


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("change", "named"), [
    ({"unit": "annotator"}, "experiment.unit"),
    ({"variants": [{"name": "old", "suggestion": "shown"}, {"name": "new", "guideline": {"version": 2}}]},
     "experiment.variants[0].guideline.version"),
    ({"variants": [{"name": "old", "guideline": {"version": 1}}, {"name": "more", "examples": 3}]},
     "experiment.variants[1].examples"),
])
def test_live_arms_refuse_what_answers_could_not_tell_apart(store_url, change, named):
    import pandas as pd

    from loop.store import LabelStore

    with LabelStore(store_url) as store:
        store.create_stream("team", ["a", "b", "c"])
        store.add_items("team", pd.DataFrame({"item_id": ["i0"]}))
        for text in ("Old rules.", "New rules."):
            store.publish_guideline("team", store.add_guideline("team", text, author="owner").version)
        with pytest.raises(ConfigError, match="^" + re.escape(named) + ":"):
            E.live_arms(_arms_config(store_url, **change).experiment, store, "team")


def test_assign_arms_is_uniform_and_stable():
    keys = [f"team:s:{i}:item{i}:0" for i in range(3000)]
    arms = E.assign_arms(keys, 3, seed=7)
    counts = np.bincount(arms, minlength=3)
    assert counts.min() > 900  # 1000 each expected; 900 is 3.7 s.d. away
    assert (E.assign_arms(keys, 3, seed=7) == arms).all()
    assert (E.assign_arms(keys, 3, seed=8) != arms).mean() > 0.5  # another seed, another draw
    with pytest.raises(ValueError, match="n_arms"):
        E.assign_arms(keys, 0, seed=0)


def test_a_guideline_version_may_serve_several_variants_but_is_one_text():
    same = {"version": "v2", "text": "b has a tail", "effect": 0.5}
    cfg = E.parse_experiment_config({"experiment": {"variants": [
        {"name": "a"}, {"name": "v2-shown", "guideline": same, "suggestion": "shown"},
        {"name": "v2-hidden", "guideline": same}]}})
    assert [v.guideline.version for v in cfg.experiment.variants[1:]] == ["v2", "v2"]
    with pytest.raises(ConfigError, match=r"^experiment\.variants: expected one text.*'v2'"):
        E.parse_experiment_config({"experiment": {"variants": [
            {"name": "a"}, {"name": "b", "guideline": same}, {"name": "c", "guideline": {**same, "text": "other"}}]}})
