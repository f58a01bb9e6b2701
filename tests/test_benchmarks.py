"""The benchmarks' own instruments still fit the code they measure (benchmarks are not run here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def ceiling(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.delitem(sys.modules, "program", raising=False)  # benchmarks/program.py, not another
    import program_ceiling

    yield program_ceiling
    sys.modules.pop("program_ceiling", None)
    sys.modules.pop("program", None)


def test_the_oracle_routes_wrong_labels_first(ceiling):
    from experiments.config import parse_config
    from experiments.program import run_program
    from experiments.world import build_world
    from loop.strategies import Strategy

    cfg = parse_config({"program": {"rounds": 2, "items_per_round": 80, "budget_per_round": 5.0,
                                    "calibration_items": 60, "holdout_items": 150, "audit_rate": 0.05},
                        "tracking": {"uri": "none"}, "store": {"url": "sqlite://"}})
    world = build_world(cfg)
    random = run_program(cfg.replace(strategy=Strategy.RANDOM), world=world)
    with ceiling.oracle_issue_scores():
        oracle = run_program(cfg.replace(strategy=Strategy.TIERED, thresholds=ceiling.ORACLES["oracle review"]),
                             world=world)
    # Every review aimed at a wrong label: far more removed than reviews drawn at random.
    assert oracle.errors_removed > 2 * max(random.errors_removed, 1)


@pytest.mark.shared_data
def test_the_consensus_table_measures_both_libraries_on_the_music_crowd(monkeypatch, music_genre):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import review_ranking

    table = review_ranking.consensus_table(draws=1).set_index("evidence")
    # cleanlab's CROWDLAB still answers with the installed cleanlab, where it has the data to.
    assert 0.5 < table.loc["all", "cleanlab crowdlab"] < 1.0
    assert table["cleanlab crowdlab"].isna().loc["one"]
    # The consensus beats the given label, and every crowd label beats one.
    for evidence in ("one", "all"):
        assert table.loc[evidence, "labelloop one_coin"] > table.loc[evidence, "given label"]
    assert table.loc["all", "labelloop one_coin"] > table.loc["one", "labelloop one_coin"]
    sys.modules.pop("review_ranking", None)


@pytest.mark.shared_data
def test_every_crowd_label_counts_what_the_whole_crowd_knows(ceiling, music_genre):
    from experiments.world import build_world

    cfg = ceiling.config("music_genre", 0)
    counts = ceiling.every_crowd_label(build_world(cfg))
    assert counts["labels_per_item"] > 3  # every real answer, not the one the program starts from
    # More answers beat one; the model and the answers beat the answers alone; a model learnt from
    # the truth beats one learnt from the crowd.
    assert counts["initial_wrong"] > counts["majority_vote"] > counts["posterior"] >= counts["posterior_gold_model"]
    with pytest.raises(ValueError, match="replayed crowd"):
        ceiling.every_crowd_label(build_world(ceiling.config("digits", 0)))


def test_music_genre_is_judged_against_what_the_whole_crowd_holds(ceiling):
    import pandas as pd

    program = sys.modules["program"]
    table = pd.DataFrame({"strategy": ["tiered", "random", "cleanlab", "triple_majority"],
                          "errors_removed": [90, 40, 70, 80], "final_error_rate": [0.1, 0.3, 0.2, 0.15],
                          "cost": [50.0, 50.0, 50.0, 120.0]})
    # Without a replayed crowd: 3x random (90 / 40 = 2.25x, missed).
    first, *_ = program.verdict(table)
    assert first[0].startswith("errors removed, tiered / random") and not first[2]
    # With it: the share of what every crowd answer's posterior removes (initial 200 - 95 = 105).
    crowd = pd.DataFrame({"seed": [0], "initial_wrong": [200], "posterior": [95]})
    first, second, *_ = program.verdict(table, crowd)
    assert "every crowd answer" in first[0] and first[2]  # 90 / 105 = 85.7%
    assert second[2]  # 90 / 70 = 1.29x cleanlab-ranked
    crowd["posterior"] = 90  # 90 / 110 = 81.8%
    assert not program.verdict(table, crowd)[0][2]


def test_the_long_program_times_every_step_of_every_round(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import long_program

    world = long_program.table_world(600, 2, holdout=100, calibration=60)
    frame = long_program.run("sqlite", world, 2, "tiered", long_program.PG, {})
    assert list(frame.index) == [0, 1, 2]
    steps = frame[list(long_program.STEPS)]
    # The steps the wrappers saw (a renamed method would leave its step at zero) add up to the round.
    assert (steps[["write", "posterior", "retrain"]].loc[1:] > 0).all().all()
    assert (steps.sum(axis=1) - frame["seconds"]).abs().max() < 1e-6
    assert (frame["cpu"] > 0).all() and (frame["peak_mb"] > 0).all()
    sys.modules.pop("long_program", None)


def test_audit_coverage_changes_the_audit_scope_and_rate_but_not_the_budget(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import audit_coverage
    import experiments.program

    seen = []

    class Ran(Exception):
        pass

    def run_program(cfg, **_):
        seen.append(cfg)
        raise Ran

    monkeypatch.setattr(experiments.program, "run_program", run_program)
    for job in (audit_coverage.Job("digits", 0, None), audit_coverage.Job("digits", 0, None, "fresh", 0.08)):
        with pytest.raises(Ran):
            audit_coverage.run_one(job)
    default, fresh = seen
    assert (default.audit_scope.value, default.audit_rate) == ("all", 0.03)
    assert (fresh.audit_scope.value, fresh.audit_rate) == ("fresh", 0.08)
    # The budget is the default audit's: a higher rate must not take money from the crowd's work.
    assert fresh.budget_per_round == default.budget_per_round > 0
    sys.modules.pop("audit_coverage", None)


@pytest.fixture
def drift_bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.delitem(sys.modules, "drift", raising=False)
    import drift

    yield drift
    sys.modules.pop("drift", None)


def test_the_drift_benchmark_configures_each_scenario_and_counts_false_alarms(drift_bench):
    for scenario in (*drift_bench.SCENARIOS, "none"):
        cfg = drift_bench.config(scenario, 1, "blanket", rounds=4, items=80, onset=3)
        assert cfg.drift.enabled and cfg.drift.queue == "blanket" and cfg.drift.reference_rounds == 3
        assert cfg.drift_scenario.value == scenario
    alarms, views = drift_bench.window_false_alarms(4, 100)
    assert 0 <= alarms <= 4 and sum(views.values()) >= alarms
    alarms, checks, views = drift_bench.sequence_false_alarms(1, 100)
    assert checks == 4 and 0 <= alarms <= 4 and sum(views.values()) >= alarms


@pytest.fixture
def experiment_bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import experiment as bench  # benchmarks/experiment.py

    yield bench
    sys.modules.pop("experiment", None)


def test_the_experiment_benchmark_plants_the_gain_the_simulator_gives(experiment_bench):
    import numpy as np

    from loop.columns import ITEM, LABEL
    from loop.simulate import Variant, annotate_variant

    world = experiment_bench.world()
    crowd, truth = world.workforce.crowd, world.truth
    prior = np.bincount(truth, minlength=world.n_classes) / truth.size
    variant, share = experiment_bench.planted_variant(crowd, prior, 0.05)
    assert 0 < share <= 1
    gain = experiment_bench.expected_accuracy(crowd, prior, variant) - \
        experiment_bench.expected_accuracy(crowd, prior, Variant("control"))
    assert gain == pytest.approx(0.05)
    # The arrays' law is annotate_variant's: 8 x 1,250 tasks per arm measure the same gain.
    rng = np.random.default_rng(0)
    right = {}
    for arm in (Variant("control"), variant):
        hits = []
        for _ in range(8):
            tasks, _ = annotate_variant(crowd, crowd.assign(truth.index, 1, rng=rng), truth, arm, rng=rng)
            hits.append(tasks[LABEL].to_numpy() == truth.reindex(tasks[ITEM]).to_numpy())
        right[arm.name] = np.concatenate(hits).mean()
    assert right["v2"] - right["control"] == pytest.approx(0.05, abs=0.02)


def test_the_experiment_benchmark_decides_like_the_sequential_comparison(experiment_bench):
    import numpy as np

    from loop.sequential import SequentialComparison

    rng = np.random.default_rng(1)
    reps, per_arm = 40, 600
    control = rng.random((reps, per_arm)) < 0.85
    variant = rng.random((reps, per_arm)) < np.where(np.arange(reps) % 2, 0.93, 0.85)[:, None]
    arrays = experiment_bench.decisions(control, variant)
    half = experiment_bench.LOOK // 2
    for r in range(reps):
        test = SequentialComparison(["v"], alpha=experiment_bench.ALPHA, min_effect=experiment_bench.MIN_EFFECT,
                                    tau=experiment_bench.TAU, min_samples=experiment_bench.MIN_SAMPLES)
        for n in range(half, per_arm + 1, half):
            test.update(control=(int(control[r, :n].sum()), n), variants={"v": (int(variant[r, :n].sum()), n)})
            if test.done:
                break
        look = test.decided_.get("v", test.looks_["v"])
        assert arrays.loc[r, "annotations"] == 2 * look.n_control
        assert arrays.loc[r, "winner"] == {None: "", "v": "variant", "control": "control"}[look.winner]
    assert (arrays["winner"] == "variant").sum() >= 10  # the planted half is found, mostly
