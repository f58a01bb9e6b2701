"""The tuner: constrained search, resuming from its storage, nested MLflow runs.

The program is replaced by a small function of the thresholds with a known optimum, so the
search itself is under test (the program-bound tuner is tested in test_tune_program.py).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from experiments.tune import (
    ParamRange,
    SearchSpace,
    TrialOutcome,
    TrialParams,
    TuneSettings,
    run_study,
)
from experiments import tracking as T
from experiments.config import ConfigError
from loop.routing import RoutingThresholds
from tests.store.conftest import schema_options

TARGET = 0.02


def toy_program(p: TrialParams) -> TrialOutcome:
    """Auto-accepting more is cheaper and lets more errors through; a higher audit rate costs
    and catches errors. The cheapest feasible point has auto_accept_confidence near 0.95."""
    a = p.thresholds.auto_accept_confidence
    error = 0.4 * (1 - a) * (1 - 2 * p.audit_rate) + 0.1 * p.thresholds.expert_margin ** 2
    cost = 100 * a + 500 * p.audit_rate + 20 * p.thresholds.expert_margin
    return TrialOutcome(cost=cost, error_rate=error, metrics={"auto_accept_rate": 1 - a})


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """One MLflow tracking store for the module (its migrations take seconds), cwd in tmp so
    that artifacts land there too."""
    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield f"sqlite:///{root}/mlflow.db"


def _settings(tmp_path: Path, name: str, **kw) -> TuneSettings:
    return TuneSettings(storage=f"sqlite:///{tmp_path}/optuna.db", study_name=name,
                        seed=3, **kw)


def _children(tracking_uri: str, parent_run_id: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    return parent, client.search_runs([parent.info.experiment_id],
                                      filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")


def test_best_trial_is_the_cheapest_that_meets_the_target(tmp_path, tracking) -> None:
    written = []

    def write(best: TrialParams) -> Path:
        written.append(best)
        return tmp_path / "serve_config.yaml"

    (tmp_path / "serve_config.yaml").write_text("x: 1\n")
    res = run_study(toy_program, _settings(tmp_path, "best", trials=12), tracking_uri=tracking,
                    write_best=write)
    trials = res.trials
    assert res.n_complete == 12 and res.n_new == 12
    feasible = trials[trials["error_rate"] <= TARGET]
    assert len(feasible) >= 1 and res.n_feasible == len(feasible)
    # A cheaper trial that misses the target exists (the constraint is doing work) ...
    assert (trials[T.PROGRAM_COST] < feasible[T.PROGRAM_COST].min()).any()
    # ... and the best is the cheapest feasible one, not the cheapest one.
    assert res.best_cost == pytest.approx(feasible[T.PROGRAM_COST].min())
    assert res.best_error_rate <= TARGET
    assert written == [res.best] and res.serve_config == tmp_path / "serve_config.yaml"
    row = trials.set_index("number").loc[res.best_number]
    assert res.best.thresholds.auto_accept_confidence == pytest.approx(row["auto_accept_confidence"])
    assert res.best.audit_rate == pytest.approx(row["audit_rate"])


def test_every_trial_is_a_nested_run_with_its_values_and_figures(tmp_path, tracking) -> None:
    res = run_study(toy_program, _settings(tmp_path, "nested", trials=4), tracking_uri=tracking,
                    params={"program.dataset": "digits", **{f"program.extra_{i}": i for i in range(120)}})
    parent, children = _children(tracking, res.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["tune.target_error_rate"] == str(TARGET)
    assert parent.data.params["program.dataset"] == "digits"
    assert parent.data.params["program.extra_119"] == "119"  # more than one batch of params
    assert parent.data.metrics["trials_complete"] == 4
    assert parent.data.metrics["best_cost"] == pytest.approx(res.best_cost)
    assert len(children) == 4
    by_run = res.trials.set_index("mlflow_run_id")
    for child in children:
        row = by_run.loc[child.info.run_id]
        assert child.info.status == "FINISHED"
        assert float(child.data.params["auto_accept_confidence"]) == pytest.approx(row["auto_accept_confidence"])
        assert float(child.data.params["audit_rate"]) == pytest.approx(row["audit_rate"])
        assert child.data.metrics["objective_cost"] == pytest.approx(row[T.PROGRAM_COST])
        assert child.data.metrics["final_error_rate"] == pytest.approx(row["error_rate"])
        assert child.data.metrics["error_rate_excess"] == pytest.approx(row["error_rate"] - TARGET)
        assert "auto_accept_rate" in child.data.metrics
    from mlflow.tracking import MlflowClient

    artifacts = {a.path for a in MlflowClient(tracking).list_artifacts(res.parent_run_id)}
    assert "trials.csv" in artifacts


def test_the_first_trial_is_the_configured_baseline(tmp_path) -> None:
    base = RoutingThresholds(auto_accept_confidence=0.9, expert_margin=0.05, double_blind_issue_score=0.7,
                             class_risk_weights={"3": 2.0})
    seen = []

    def evaluate(p: TrialParams) -> TrialOutcome:
        seen.append(p)
        return toy_program(p)

    run_study(evaluate, _settings(tmp_path, "baseline", trials=2), base_thresholds=base, base_audit_rate=0.05)
    assert seen[0].thresholds == base and seen[0].audit_rate == pytest.approx(0.05)
    # Tuned values replace only the three cut-offs; the rest of the policy is kept.
    assert dict(seen[1].thresholds.class_risk_weights) == {"3": 2.0}


def test_a_study_resumes_from_its_storage_under_the_same_parent_run(tmp_path, tracking) -> None:
    first = run_study(toy_program, _settings(tmp_path, "resume", trials=3), tracking_uri=tracking)
    calls = []

    def evaluate(p: TrialParams) -> TrialOutcome:
        calls.append(p)
        return toy_program(p)

    second = run_study(evaluate, _settings(tmp_path, "resume", trials=5), tracking_uri=tracking)
    assert len(calls) == 2 and second.n_new == 2 and second.n_complete == 5
    assert second.trials["number"].tolist() == [0, 1, 2, 3, 4]
    # The resumed session did not replay the first session's random trials.
    firsts = {round(v, 12) for v in first.trials["auto_accept_confidence"]}
    assert not {round(p.thresholds.auto_accept_confidence, 12) for p in calls} & firsts
    assert second.parent_run_id == first.parent_run_id
    _, children = _children(tracking, second.parent_run_id)
    assert len(children) == 5
    # Asking again for what the study already has runs nothing.
    third = run_study(evaluate, _settings(tmp_path, "resume", trials=5), tracking_uri=tracking)
    assert len(calls) == 2 and third.n_new == 0 and third.best_number == second.best_number


def test_a_crash_fails_the_trial_and_the_rerun_completes_the_study(tmp_path, tracking) -> None:
    calls = []

    def crashing(p: TrialParams) -> TrialOutcome:
        calls.append(p)
        if len(calls) == 3:
            raise RuntimeError("simulator died")
        return toy_program(p)

    settings = _settings(tmp_path, "crash", trials=4)
    with pytest.raises(RuntimeError, match="simulator died"):
        run_study(crashing, settings, tracking_uri=tracking)
    res = run_study(toy_program, settings, tracking_uri=tracking)
    assert res.n_complete == 4 and res.n_new == 2
    assert res.trials["state"].tolist().count("FAIL") == 1
    parent, children = _children(tracking, res.parent_run_id)
    assert sorted(c.info.status for c in children) == ["FAILED"] + ["FINISHED"] * 4
    assert parent.info.status == "FINISHED"


def test_a_failed_baseline_is_run_again_by_the_next_session(tmp_path) -> None:
    base = RoutingThresholds(auto_accept_confidence=0.9)

    def broken(p: TrialParams) -> TrialOutcome:
        raise RuntimeError("simulator died")

    settings = _settings(tmp_path, "baseline-crash", trials=3)
    with pytest.raises(RuntimeError):
        run_study(broken, settings, base_thresholds=base)
    seen = []

    def evaluate(p: TrialParams) -> TrialOutcome:
        seen.append(p)
        return toy_program(p)

    res = run_study(evaluate, settings, base_thresholds=base)
    assert seen[0].thresholds == base and res.n_complete == 3


def test_when_no_trial_meets_the_target_nothing_is_written(tmp_path) -> None:
    def write(best: TrialParams) -> Path:  # pragma: no cover - must not run
        raise AssertionError("wrote a config for an infeasible study")

    res = run_study(toy_program, _settings(tmp_path, "infeasible", trials=3, target_error_rate=0.0001,
                                           search_space={"auto_accept_confidence": [0.5, 0.6]}),
                    write_best=write)
    assert res.best is None and res.best_number is None and math.isnan(res.best_cost)
    assert res.n_feasible == 0 and res.closest_excess > 0
    assert res.serve_config is None


def test_a_fixed_range_is_not_searched(tmp_path) -> None:
    seen = []

    def evaluate(p: TrialParams) -> TrialOutcome:
        seen.append(p)
        return toy_program(p)

    res = run_study(evaluate, _settings(tmp_path, "fixed", trials=4, search_space={"audit_rate": 0.03}))
    assert {p.audit_rate for p in seen} == {0.03}
    assert set(res.trials["audit_rate"]) == {0.03}
    assert len({p.thresholds.expert_margin for p in seen}) == 4


@pytest.mark.parametrize(("config", "field"), [
    ({"trials": 0}, "tune.trials"),
    ({"trials": "many"}, "tune.trials"),
    ({"worlds": 0}, "tune.worlds"),
    ({"worlds": 2.5}, "tune.worlds"),
    ({"worlds": True}, "tune.worlds"),
    ({"target_error_rate": 1.5}, "tune.target_error_rate"),
    ({"trails": 3}, "tune.trails"),
    ({"search_space": {"auto_accept": [0.5, 0.9]}}, "tune.search_space.auto_accept"),
    ({"search_space": {"expert_margin": [0.4, 0.1]}}, "tune.search_space.expert_margin"),
    ({"search_space": {"audit_rate": "low"}}, "tune.search_space.audit_rate"),
    ({"search_space": {"auto_accept_confidence": [0, 0.9]}}, "tune.search_space.auto_accept_confidence"),
    ({"storage": ""}, "tune.storage"),
    ({"storage": "optuna.db"}, "tune.storage"),
    ({"objective": "truth"}, "tune.objective"),
    ({"objective": ["estimated"]}, "tune.objective"),
])
def test_bad_settings_name_the_field(config, field) -> None:
    with pytest.raises(ConfigError) as exc:
        TuneSettings.from_dict(config)
    message = str(exc.value)
    assert message.startswith(field + ":") and "\n" not in message


def test_sessions_sharing_a_study_stop_at_its_trials(tmp_path) -> None:
    """Parallel `labelloop tune` processes on one storage: another session's running trials
    count as taken, whether they started before this session or during it."""
    from experiments.tune import open_study

    settings = _settings(tmp_path, "shared", trials=5)
    other = open_study(settings, heartbeat=False)  # the other process
    before = other.ask()
    during = []

    def evaluate(p: TrialParams) -> TrialOutcome:
        if not during:
            during.append(other.ask())
        return toy_program(p)

    res = run_study(evaluate, settings)
    # 4 left when it started; it stopped after 3, when 3 complete + 2 running made 5.
    assert res.n_new == 3 and res.n_complete == 3
    # A session started while the other's two still run has nothing left to run.
    assert run_study(toy_program, settings).n_new == 0
    for trial in (before, *during):  # the other process finishes its two
        cost = 500.0  # dearer than any toy trial: the best stays one of this session's
        trial.set_user_attr("cost", cost)
        trial.set_user_attr("error_rate", TARGET)
        trial.set_constraint("error_rate_excess", 0.0)
        other.tell(trial, cost)
    again = run_study(toy_program, settings)
    assert again.n_new == 0 and again.n_complete == 5 and len(again.trials) == 5


def test_of_two_sessions_racing_for_the_last_trial_the_later_one_stands_down(tmp_path, monkeypatch) -> None:
    """The other process asks for a trial between this session's after-trial check and its next
    trial (the instant MaxTrialsCallback cannot see): the later-numbered trial is pruned before it
    runs a program, and the study ends with exactly its trials."""
    import optuna

    from experiments.tune import open_study

    settings = _settings(tmp_path, "race", trials=2)
    other = open_study(settings, heartbeat=False)
    raced = []
    check = optuna.study.MaxTrialsCallback

    class RacedCheck(check):
        def __call__(self, study, trial):
            super().__call__(study, trial)  # 1 complete, none running: 1 < 2, go on
            if not raced:
                raced.append(other.ask())  # ... and the other process takes trial 1 now

    monkeypatch.setattr(optuna.study, "MaxTrialsCallback", RacedCheck)
    evaluated = []

    def evaluate(p: TrialParams) -> TrialOutcome:
        evaluated.append(p)
        return toy_program(p)

    res = run_study(evaluate, settings)
    assert len(evaluated) == 1 and res.n_new == 1 and res.n_complete == 1
    states = {t.number: t.state.name for t in other.get_trials(deepcopy=False)}
    assert states == {0: "COMPLETE", 1: "RUNNING", 2: "PRUNED"}
    assert other.trials[2].user_attrs.get("surplus") is True
    trial = raced[0]
    trial.set_user_attr("cost", 500.0)
    trial.set_user_attr("error_rate", TARGET)
    trial.set_constraint("error_rate_excess", 0.0)
    other.tell(trial, 500.0)
    again = run_study(toy_program, settings)
    assert again.n_new == 0 and again.n_complete == 2


def test_a_study_keeps_its_number_of_worlds(tmp_path) -> None:
    run_study(toy_program, _settings(tmp_path, "worlds", trials=1, worlds=2))
    with pytest.raises(ConfigError) as exc:
        run_study(toy_program, _settings(tmp_path, "worlds", trials=2, worlds=3))
    assert str(exc.value).startswith("tune.worlds: expected 2, the worlds of study 'worlds'")
    assert run_study(toy_program, _settings(tmp_path, "worlds", trials=2, worlds=2)).n_complete == 2


def test_a_study_keeps_its_objective(tmp_path) -> None:
    run_study(toy_program, _settings(tmp_path, "objective", trials=1, objective="estimated"))
    with pytest.raises(ConfigError) as exc:
        run_study(toy_program, _settings(tmp_path, "objective", trials=2))
    assert str(exc.value).startswith("tune.objective: expected estimated, the objective of study 'objective'")
    assert run_study(toy_program, _settings(tmp_path, "objective", trials=2, objective="estimated")).n_complete == 2


def test_a_study_from_before_the_objective_was_tuned_on_the_simulator(tmp_path) -> None:
    from experiments.tune import open_study

    settings = _settings(tmp_path, "older", trials=1)
    open_study(settings, heartbeat=False).optimize(lambda trial: 1.0, n_trials=1)  # no objective recorded
    with pytest.raises(ConfigError, match="tune.objective: expected simulator"):
        run_study(toy_program, _settings(tmp_path, "older", trials=2, objective="estimated"))


def test_an_estimated_study_records_its_objective_and_names_its_bound(tmp_path, tracking) -> None:
    from experiments import tracking as T

    settings = _settings(tmp_path, "estimated", trials=3, objective="estimated")
    result = run_study(toy_program, settings, tracking_uri=tracking)
    parent, children = _children(tracking, result.parent_run_id)
    assert parent.data.params["tune.objective"] == "estimated"
    assert parent.data.tags[T.TAG_TUNE_OBJECTIVE] == "estimated"
    assert parent.data.metrics[T.TUNE_BEST_ERROR_RATE_BOUND] == pytest.approx(result.best_error_rate)
    assert T.TUNE_BEST_ERROR_RATE not in parent.data.metrics
    for child in children:
        assert child.data.tags[T.TAG_TUNE_OBJECTIVE] == "estimated"
        # The constrained value is the audits' bound, not a true final error rate.
        assert T.TUNE_ERROR_RATE_BOUND in child.data.metrics and T.FINAL_ERROR_RATE not in child.data.metrics
    simulator = run_study(toy_program, _settings(tmp_path, "simulator", trials=1), tracking_uri=tracking)
    parent, (child,) = _children(tracking, simulator.parent_run_id)
    assert parent.data.params["tune.objective"] == "simulator" == child.data.tags[T.TAG_TUNE_OBJECTIVE]
    assert T.FINAL_ERROR_RATE in child.data.metrics


def test_a_trial_on_several_worlds_is_their_mean_and_spread() -> None:
    from experiments import tracking as T

    worlds = [TrialOutcome(cost=10.0, error_rate=0.01, metrics={"model_accuracy": 0.9, "only_here": 1.0}),
              TrialOutcome(cost=20.0, error_rate=0.03, metrics={"model_accuracy": 0.8}),
              TrialOutcome(cost=60.0, error_rate=0.02, metrics={"model_accuracy": 0.7})]
    m = TrialOutcome.mean(worlds)
    assert m.cost == pytest.approx(30.0) and m.error_rate == pytest.approx(0.02)
    assert m.metrics["model_accuracy"] == pytest.approx(0.8) and "only_here" not in m.metrics
    assert (m.metrics[T.TUNE_COST_MIN], m.metrics[T.TUNE_COST_MAX]) == (10.0, 60.0)
    assert m.metrics[T.TUNE_COST_STD] == pytest.approx(math.sqrt((400 + 100 + 900) / 3))
    assert (m.metrics[T.TUNE_ERROR_RATE_MIN], m.metrics[T.TUNE_ERROR_RATE_MAX]) == (0.01, 0.03)
    bound = TrialOutcome.mean(worlds, objective="estimated")
    assert bound.metrics[T.TUNE_ERROR_RATE_BOUND_MAX] == 0.03 and T.TUNE_ERROR_RATE_MAX not in bound.metrics
    one = TrialOutcome.mean(worlds[:1])
    assert one.cost == 10.0 and one.metrics[T.TUNE_COST_STD] == 0.0
    with pytest.raises(ValueError, match="outcomes"):
        TrialOutcome.mean([])


def test_tuned_names_are_the_config_fields_they_set() -> None:
    import dataclasses

    from experiments import tracking as T
    from experiments.config import ProgramConfig

    assert set(T.TUNED_THRESHOLDS) <= {f.name for f in dataclasses.fields(RoutingThresholds)}
    assert T.TUNED_AUDIT_RATE in {f.name for f in dataclasses.fields(ProgramConfig)}


def test_settings_round_trip_their_search_space() -> None:
    s = TuneSettings.from_dict({"trials": 7, "search_space": {"expert_margin": [0.0, 0.2], "audit_rate": 0.01}})
    assert s.trials == 7 and s.search_space.expert_margin == ParamRange(0.0, 0.2, "search_space.expert_margin")
    assert SearchSpace.from_dict(s.search_space.to_dict()) == s.search_space


def test_a_study_on_postgresql_resumes(tmp_path) -> None:
    """The team setup keeps studies on PostgreSQL (``postgresql://`` means psycopg 3, as for the store).

    Uses the server the store tests use (127.0.0.1:5432, database ``test``, or
    ``LABELLOOP_TEST_PG_URL``), in a schema of its own; skips when there is none.
    """
    import os
    import uuid

    psycopg = pytest.importorskip("psycopg")
    candidates = ([os.environ["LABELLOOP_TEST_PG_URL"]] if os.environ.get("LABELLOOP_TEST_PG_URL") else
                  ["postgresql://postgres@127.0.0.1:5432/test", "postgresql://root@127.0.0.1:5432/test"])
    base = None
    for url in candidates:
        try:
            psycopg.connect(url.replace("+psycopg", ""), connect_timeout=3).close()
            base = url
            break
        except psycopg.Error:
            continue
    if base is None:
        pytest.skip("no PostgreSQL server reachable")
    schema = f"tune_test_{uuid.uuid4().hex[:10]}"
    dsn = base.replace("+psycopg", "")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        storage = f"{base}{'&' if '?' in base else '?'}{schema_options(schema)}"
        settings = TuneSettings(storage=storage, study_name="pg", seed=3, trials=2)
        first = run_study(toy_program, settings)
        second = run_study(toy_program, TuneSettings(storage=storage, study_name="pg", seed=3, trials=4))
        assert (first.n_complete, second.n_complete, second.n_new) == (2, 4, 2)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_the_run_of_a_trial_whose_process_died_is_closed(tmp_path, tracking) -> None:
    import optuna
    from mlflow.tracking import MlflowClient

    from experiments.tune import open_study

    settings = _settings(tmp_path, "orphan", trials=1)
    first = run_study(toy_program, settings, tracking_uri=tracking)
    client = MlflowClient(tracking)
    # What a killed process leaves once the heartbeat has failed its trial: a RUNNING MLflow run.
    orphan = client.create_run(client.get_run(first.parent_run_id).info.experiment_id)
    study = open_study(settings, heartbeat=False)
    trial = study.ask()
    trial.set_user_attr("mlflow_run_id", orphan.info.run_id)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    run_study(toy_program, _settings(tmp_path, "orphan", trials=2), tracking_uri=tracking)
    assert client.get_run(orphan.info.run_id).info.status == "KILLED"


def test_the_public_api_is_what_all_says() -> None:
    import experiments.tune as tune

    assert sorted(tune.__all__) == sorted(set(tune.__all__))
    assert all(hasattr(tune, name) for name in tune.__all__)


def test_trials_nest_under_the_parent_which_shows_no_password(tmp_path, tracking) -> None:
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from experiments import tracking as T

    url = "postgresql+psycopg://labelloop:s3cret@db:5432/labels"
    res = run_study(toy_program, _settings(tmp_path, "secret", trials=2), tracking_uri=tracking,
                    params={"store.url": url})
    parent, children = _children(tracking, res.parent_run_id)
    assert parent.data.params["store.url"] == "postgresql+psycopg://labelloop:***@db:5432/labels"
    assert {c.info.run_id for c in children} == set(res.trials["mlflow_run_id"])
    assert all(c.data.tags[MLFLOW_PARENT_RUN_ID] == res.parent_run_id and
               c.data.tags[T.TAG_ROLE] == T.ROLE_TUNE_TRIAL for c in children)
    assert not any("s3cret" in v for run in (parent, *children)
                   for v in [*run.data.params.values(), *run.data.tags.values()])


def test_the_serve_config_carries_the_model_configs_trust(tmp_path):
    from experiments.config import ModelConfig
    from experiments.tune import TuneConfig, parse_tune_config, write_best_serve_config
    from serve.config import load_serve_config

    cfg = parse_tune_config({"tune": {"serve_config": str(tmp_path / "serve.yaml")},
                             "tracking": {"uri": "none"}})
    best = TrialParams(thresholds=cfg.program.thresholds, audit_rate=0.03)
    plain = load_serve_config(write_best_serve_config(cfg, best))
    assert plain.app_args.trusted_modules == [] and plain.app_args.allow_pickle is False
    model = ModelConfig("sklearn.ensemble.HistGradientBoostingClassifier", allow_pickle=True)
    cfg = TuneConfig(program=cfg.program.replace(model=model), tune=cfg.tune)
    served = load_serve_config(write_best_serve_config(cfg, best))
    assert served.app_args.trusted_modules == ["sklearn.ensemble._hist_gradient_boosting"]
    assert served.app_args.allow_pickle is True
