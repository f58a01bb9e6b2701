"""The benchmarks' own instruments still fit the code they measure (benchmarks are not run here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from loop.columns import ITEM

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _bench(monkeypatch, name: str):
    """``benchmarks/<name>.py``, imported with benchmarks/program.py as ``program`` (not another)."""
    import importlib

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.delitem(sys.modules, "program", raising=False)
    return importlib.import_module(name)


@pytest.fixture
def ceiling(monkeypatch):
    yield _bench(monkeypatch, "program_ceiling")
    sys.modules.pop("program_ceiling", None)
    sys.modules.pop("program", None)


def test_the_oracle_routes_wrong_labels_first(ceiling, monkeypatch):
    import experiments.program as program_module
    from experiments.config import parse_config
    from experiments.program import run_program
    from experiments.world import build_world
    from loop.strategies import ACTION, Action, Strategy

    cfg = parse_config({"program": {"rounds": 2, "items_per_round": 80, "budget_per_round": 5.0,
                                    "calibration_items": 60, "holdout_items": 150, "audit_rate": 0.05},
                        "tracking": {"uri": "none"}, "store": {"url": "sqlite://"}})
    world = build_world(cfg)
    oracle_review = cfg.replace(strategy=Strategy.TIERED, thresholds=ceiling.ORACLES["oracle review"])

    def wrong_labels_reviewed() -> list[tuple[int, int]]:
        """Per round: (wrong labels among the candidates, how many of them the plan reviews)."""
        rounds, plan_round = [], program_module.plan_round

        def spy(candidates, *args, **kwargs):
            plan = plan_round(candidates, *args, **kwargs)
            wrong = candidates["label"].to_numpy() != world.truth.reindex(candidates[ITEM].astype(str)).to_numpy()
            reviewed = candidates[ITEM].isin(plan.loc[plan[ACTION] == Action.REVIEW, ITEM]).to_numpy()
            assert reviewed.sum() > wrong.sum()  # the budget covers every wrong label: an oracle finds them all
            rounds.append((int(wrong.sum()), int((wrong & reviewed).sum())))
            return plan

        monkeypatch.setattr(program_module, "plan_round", spy)
        run_program(oracle_review, world=world)
        monkeypatch.setattr(program_module, "plan_round", plan_round)
        return rounds

    with ceiling.oracle_issue_scores():
        oracle = wrong_labels_reviewed()
    assert len(oracle) == 2 and all(found == wrong > 0 for wrong, found in oracle)
    # The same routing on the model's own scores misses some: the check above can tell them apart.
    assert any(found < wrong for wrong, found in wrong_labels_reviewed())


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


@pytest.fixture
def program_bench(monkeypatch):
    yield _bench(monkeypatch, "program")
    sys.modules.pop("program", None)


def test_deferred_accept_is_chosen_on_the_calibration_worlds_only(program_bench, monkeypatch, capsys):
    from types import SimpleNamespace

    # A stand-in for the programs whose best deferred-accept value differs by world: 0.8 on the
    # calibration seeds, 0.6 on the evaluation seeds; off is the worst everywhere.
    best = {100: 0.8, 101: 0.8, 0: 0.6, 1: 0.6}
    calls = []

    def run_program(cfg, world):
        calls.append((cfg.seed, cfg.strategy.value, cfg.deferred_accept_confidence))
        value = cfg.deferred_accept_confidence
        removed = 0 if value is None else 100 - round(100 * abs(value - best[cfg.seed]))
        return SimpleNamespace(errors_removed=removed, final_error_rate=0.1, total_cost=10.0, program_cost=5.0,
                               initial_error_rate=0.2, errors_fixed=removed, errors_introduced=0,
                               errors_removed_per_100_annotations=1.0, model_accuracy=0.9)

    monkeypatch.setattr(program_bench, "run_program", run_program)
    program_bench.run("digits", seeds=[0, 1], calibration_seeds=[100, 101])
    evaluation = [i for i, (seed, _, _) in enumerate(calls) if seed in (0, 1)]
    calibration = calls[:evaluation[0]]
    # Only the calibration worlds took part in the choice, every deferred-accept value was tried,
    assert {seed for seed, _, _ in calibration} == {100, 101}
    assert {value for _, _, value in calibration} == set(program_bench.DEFERRED_GRID["deferred_accept_confidence"])
    # and the evaluation's tiered programs run at the calibration worlds' best (0.6 is theirs).
    assert {value for seed, strategy, value in calls[evaluation[0]:] if strategy == "tiered"} == {0.8}
    out = capsys.readouterr().out
    assert "deferred_accept_confidence" in out.split("chosen:")[0]  # in the calibration table
    assert "'deferred_accept_confidence': 0.8" in out


def test_the_calibration_measures_deferred_accept_on_real_programs(program_bench):
    from experiments.config import parse_config
    from experiments.world import build_world

    cfg = parse_config({"program": {"rounds": 2, "items_per_round": 80, "budget_per_round": 1.0,
                                    "calibration_items": 60, "holdout_items": 150, "audit_rate": 0.05},
                        "tracking": {"uri": "none"}, "store": {"url": "sqlite://"}})
    grid = {"double_blind_issue_score": (1.0,), "expert_margin": (0.0,), "auto_accept_confidence": (0.9,),
            "deferred_accept_confidence": (None, 0.5)}
    setting, table = program_bench.calibrate(cfg, [(100, build_world(cfg.replace(seed=100)))], grid)
    removed = table.set_index(table["deferred_accept_confidence"].fillna(0))["errors_removed"]
    # The key reaches the programs (a tiny budget leaves items deferred, and relabelling them
    # changes what is removed), and the choice is the setting that removed the most.
    assert removed.nunique() == 2
    assert setting.deferred_accept_confidence == (0.5 if removed[0.5] > removed[0] else None)
    assert table.iloc[0]["errors_removed"] == removed.max()
    with pytest.raises(ValueError, match="grid"):
        program_bench.calibrate(cfg, [], {"auto_accept_confidence": (0.9,)})


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


def test_the_long_program_judges_its_target_on_five_rounds_each_side(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import long_program

    rounds = 20
    cpu = pd.Series(2.0, index=range(rounds + 1))
    cpu[16:] = 2.9  # the last five rounds: 1.45x
    cpu[5] = 1.0  # one fast round 5 moves the three-round medians' ratio, not the windows'
    cpu[4] = 1.1
    frame = pd.DataFrame({"seconds": cpu, "cpu": cpu, "audit": 0.0, "peak_mb": 1.0})
    assert long_program.window_ratio(frame, rounds) == pytest.approx(1.45)
    line = long_program.summary("sqlite", frame, rounds)
    assert "rounds 16-20 / rounds 3-7 (medians) = 1.45 cpu" in line and ": met" in line
    assert "round 20 / round 5 = 2.64" in line  # the single rounds' ratio, printed, not judged
    frame.loc[18:, "cpu"] = 3.2
    assert ": not met" in long_program.summary("sqlite", frame, rounds)
    # Too short for two windows: no robust ratio, the single rounds judge.
    assert long_program.window_ratio(frame.loc[:6], 6) is None
    assert "medians" not in long_program.summary("sqlite", frame.loc[:6], 6)
    # Repeats: each round's median, and the peak's maximum.
    runs = [frame.assign(cpu=frame["cpu"] + d, peak_mb=10.0 + d) for d in (0.0, 1.0, 5.0)]
    both = long_program.median_of(runs)
    assert (both["cpu"] == frame["cpu"] + 1.0).all() and (both["peak_mb"] == 15.0).all()
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
    fresh_job = audit_coverage.Job("digits", 0, None, audit_scope="fresh", audit_rate=0.08)
    for job in (audit_coverage.Job("digits", 0, None), fresh_job):
        with pytest.raises(Ran):
            audit_coverage.run_one(job)
    default, fresh = seen
    assert (default.audit_scope.value, default.audit_rate) == ("all", 0.03)
    assert (fresh.audit_scope.value, fresh.audit_rate) == ("fresh", 0.08)
    # The budget is the default audit's: a higher rate must not take money from the crowd's work.
    assert fresh.budget_per_round == default.budget_per_round > 0
    sys.modules.pop("audit_coverage", None)


def test_audit_coverage_keeps_its_own_config_when_the_program_benchmarks_changes(monkeypatch):
    # The program benchmark once set deferred_accept_confidence and silently moved the audit figures.
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import audit_coverage
    import benchmarks.program as program_bench

    before = {d: audit_coverage.config(d, 3) for d in audit_coverage.BASE}
    for dataset, raw in program_bench.BASE.items():
        monkeypatch.setitem(program_bench.BASE, dataset, {
            **raw, "program": {**raw["program"], "deferred_accept_confidence": 0.7, "audit_rate": 0.1},
            "thresholds": {"auto_accept_confidence": 0.97}})
    assert {d: audit_coverage.config(d, 3) for d in audit_coverage.BASE} == before
    digits = before["digits"]
    assert (digits.deferred_accept_confidence, digits.audit_rate, digits.thresholds.auto_accept_confidence,
            digits.items_per_round, digits.strategy.value) == (None, 0.03, 0.9, 250, "tiered")
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


def test_music_genre_is_calibrated_on_nine_worlds_by_default(program_bench, monkeypatch):
    seen = []
    monkeypatch.setattr(program_bench, "run", lambda dataset, seeds, calibration, share: seen.append((dataset, calibration)))
    monkeypatch.setattr(program_bench, "shared_data_dir", lambda: Path("/data"))
    program_bench.main([])
    program_bench.main(["--dataset", "music_genre", "--calibration-seeds", "200", "201"])
    # Three music worlds could not rank settings that differ by less than the worlds do.
    assert seen == [("digits", [100, 101, 102]), ("music_genre", list(range(100, 109))), ("music_genre", [200, 201])]
    with pytest.raises(SystemExit):
        program_bench.main(["--dataset", "music_genre", "--seeds", "104"])  # a calibration world
