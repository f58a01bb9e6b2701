"""labelloop tune on the real program: trials on simulated worlds, nested runs with the program's
figures, the best thresholds written as a Serve config the Router loads, and resuming."""

from __future__ import annotations

import pytest
import yaml

from experiments import tracking as T
from experiments.tune import (TrialParams, main, parse_tune_config, program_objective, trial_program,
                              world_seeds)
from loop.routing import RoutingThresholds

PROGRAM = {"rounds": 1, "items_per_round": 100, "budget_per_round": 1000.0, "calibration_items": 50,
           "holdout_items": 100, "seed": 0}


WORLDS = 2


@pytest.fixture(scope="module")
def worlds():
    """The trials' worlds, built once for every trial of every test."""
    from experiments.world import build_world

    program = parse_tune_config({"program": PROGRAM}).program
    return [build_world(trial_program(program).replace(seed=s)) for s in world_seeds(program, WORLDS)]


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow artifacts land in tmp too
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return parse_tune_config({
        "program": PROGRAM,
        "thresholds": {"auto_accept_confidence": 0.95, "guideline_refs": [{"classes": ["1", "7"], "ref": "g §4"}]},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "tune-test",
                     "registered_model": "digits-test"},
        "tune": {"trials": 3, "worlds": WORLDS, "target_error_rate": 0.25, "storage": f"sqlite:///{tmp_path}/optuna.db",
                 "study_name": "digits", "serve_config": str(tmp_path / "serve_config.yaml")},
    })


def test_tune_writes_a_serve_config_the_router_loads_and_resumes(cfg, worlds, tmp_path) -> None:
    from mlflow.tracking import MlflowClient
    from ray.serve.schema import ServeDeploySchema

    from serve.config import load_serve_config

    result = main(cfg, worlds=worlds)
    assert result.n_complete == 3 and result.best is not None and result.best_error_rate <= 0.25

    # A Serve config `serve deploy` accepts, serving the program's model with the tuned thresholds.
    assert result.serve_config == tmp_path / "serve_config.yaml"
    raw = yaml.safe_load(result.serve_config.read_text())
    ServeDeploySchema.model_validate(raw)
    (app,) = raw["applications"]
    assert app["import_path"] == "serve.app:build_app"
    router = {d["name"]: d for d in app["deployments"]}["Router"]
    loaded = RoutingThresholds.from_dict(router["user_config"])
    assert loaded == result.best.thresholds
    served = load_serve_config(result.serve_config)
    assert served.thresholds == loaded and served.app_args.model_name == "digits-test"
    assert served.app_args.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert dict(loaded.guideline_refs) == dict(cfg.program.thresholds.guideline_refs)  # kept, not tuned

    # Each trial is a nested run carrying the program's own figures (means over the worlds)
    # and the spread of its cost and error rate over the worlds.
    client = MlflowClient(cfg.program.tracking.uri)
    parent = client.get_run(result.parent_run_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert len(children) == 3
    for child in children:
        m = child.data.metrics
        assert {T.FINAL_ERROR_RATE, T.PROGRAM_COST, T.MODEL_ACCURACY} <= set(m)
        assert m[T.TUNE_COST] == pytest.approx(m[T.PROGRAM_COST])
        assert m[T.TUNE_COST_MIN] <= m[T.TUNE_COST] <= m[T.TUNE_COST_MAX]
        assert m[T.TUNE_ERROR_RATE_MIN] <= m[T.TUNE_ERROR_RATE] <= m[T.TUNE_ERROR_RATE_MAX]
        assert {T.TUNE_COST_STD, T.TUNE_ERROR_RATE_STD} <= set(m)
    assert parent.data.params["tune.worlds"] == str(WORLDS)
    assert parent.data.params["program.rounds"] == "1"
    assert {a.path for a in client.list_artifacts(result.parent_run_id)} >= {"trials.csv", "serve_config.yaml"}

    # The study resumes: one more trial, same parent run.
    again = main(cfg.with_trials(4), worlds=worlds)
    assert again.n_new == 1 and again.n_complete == 4 and again.parent_run_id == result.parent_run_id


def test_a_trial_is_the_mean_over_worlds_seeded_from_the_program(worlds) -> None:
    """World i runs with seed program.seed + i: the two-world objective is the mean of the
    one-world objectives of seeds 0 and 1, and the worlds really differ."""
    program = parse_tune_config({"program": PROGRAM}).program
    params = TrialParams(thresholds=RoutingThresholds(auto_accept_confidence=0.95), audit_rate=0.05)
    both = program_objective(program, worlds=2, built=worlds)(params)
    each = [program_objective(program.replace(seed=s), built=[w])(params) for s, w in zip((0, 1), worlds)]
    assert both.cost == pytest.approx((each[0].cost + each[1].cost) / 2)
    assert both.error_rate == pytest.approx((each[0].error_rate + each[1].error_rate) / 2)
    assert both.metrics[T.TUNE_COST_MIN] == pytest.approx(min(e.cost for e in each))
    assert each[0].cost != each[1].cost
    with pytest.raises(ValueError, match="built"):
        program_objective(program, worlds=3, built=worlds)


class NoTruth:
    """A program's result whose truth-needing figures cannot be read: what a team without truth has."""

    TRUTH = {"final_error_rate", "initial_error_rate", "errors_removed", "errors_fixed", "errors_introduced",
             "errors_removed_per_100_annotations", "metrics", "model_accuracy", "model_ece", "cost_per_error_removed",
             "roi"}
    SEEN = (T.PROGRAM_COST, T.AUDIT_ERROR_RATE, T.AUDIT_CI_LOW, T.AUDIT_CI_HIGH, T.AUDIT_N,
            T.ERRORS_REMOVED_ESTIMATE, T.ERRORS_FIXED_CONFIRMED)

    def __init__(self, result) -> None:
        self._result = result
        self.rounds = result.rounds[[c for c in self.SEEN if c in result.rounds.columns]]

    def __getattr__(self, name: str):
        if name in self.TRUTH:
            raise AssertionError(f"the estimated objective read {name}")
        return getattr(self._result, name)


def test_the_estimated_objective_never_reads_the_truth(worlds) -> None:
    import math

    from experiments.tune import Objective, measure

    program = parse_tune_config({"program": PROGRAM}).program
    kept = []
    params = TrialParams(thresholds=RoutingThresholds(auto_accept_confidence=0.95), audit_rate=0.08)
    outcome = program_objective(program, worlds=2, built=worlds, objective="estimated",
                                keep=lambda p, results: kept.extend(results))(params)
    blind = [measure(NoTruth(r), Objective.ESTIMATED) for r in kept]
    assert [b.error_rate for b in blind] == [measure(r, "estimated").error_rate for r in kept]
    # The constrained value is the mean of the last rounds' audit upper bounds, not the truth.
    bounds = [r.rounds[T.AUDIT_CI_HIGH].iloc[-1] for r in kept]
    assert not any(math.isnan(b) for b in bounds)
    assert outcome.error_rate == pytest.approx(sum(bounds) / 2)
    assert outcome.error_rate != pytest.approx(sum(r.final_error_rate for r in kept) / 2)
    assert outcome.cost == pytest.approx(sum(r.program_cost for r in kept) / 2)
    assert T.FINAL_ERROR_RATE not in outcome.metrics and T.TUNE_ERROR_RATE_BOUND_MAX in outcome.metrics
    # Without an audit nothing bounds the error rate: the trial cannot meet a target below 1.
    unaudited = program_objective(program, built=worlds[:1], objective="estimated")(
        TrialParams(thresholds=params.thresholds, audit_rate=0.0))
    assert unaudited.error_rate == 1.0


def test_tune_writes_the_best_trials_programs_and_every_trial(cfg, worlds, tmp_path) -> None:
    import dataclasses

    import pandas as pd

    cfg = dataclasses.replace(cfg, tune=dataclasses.replace(
        cfg.tune, objective="estimated", target_error_rate=0.5, study_name="digits-estimated",
        search_space={"audit_rate": [0.05, 0.10]}))
    result = main(cfg, worlds=worlds, output=tmp_path / "out")
    assert result.best is not None
    summary = pd.read_csv(tmp_path / "out/summary.csv")
    rounds = pd.read_csv(tmp_path / "out/rounds.csv")
    trials = pd.read_csv(tmp_path / "out/trials.csv")

    # summary.csv: the best trial's programs, one per world.
    assert summary["trial"].tolist() == [result.best_number] * WORLDS
    assert summary["world_seed"].tolist() == list(world_seeds(cfg.program, WORLDS))
    assert summary["strategy"].tolist() == ["tiered"] * WORLDS
    assert summary["program_cost"].mean() == pytest.approx(result.best_cost)
    # The study's constraint was the mean of those programs' audit bounds.
    assert summary["final_error_rate_estimate_ci_high"].mean() == pytest.approx(result.best_error_rate)
    assert len(rounds) == WORLDS * (PROGRAM["rounds"] + 1)
    assert list(rounds.columns[:4]) == ["strategy", "trial", "world_seed", "round"]
    assert len(trials) == 3 and trials.loc[trials["number"] == result.best_number, "error_rate"].item() \
        == pytest.approx(result.best_error_rate)

    # A later session with nothing left to run runs the best trial's programs again: the same ones.
    again = main(cfg, worlds=worlds, output=tmp_path / "again")
    assert again.n_new == 0 and again.best_number == result.best_number
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "again/summary.csv"), summary)
