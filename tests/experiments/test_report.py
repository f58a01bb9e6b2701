"""``labelloop report``: the trend over an experiment's programs, from runs with known figures."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments import report as R
from experiments import tracking as T
from experiments.cli import main as cli_main

DAY = dt.timedelta(days=1)
START = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)


def _ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def _program(client, experiment_id: str, when: dt.datetime, *, rate: float, strategy: str = "tiered",
             guidelines: str = "[]", cost_per_error: float = 5.0, parent: str | None = None,
             role: str = T.ROLE_PROGRAM, metrics: dict | None = None, versions: str = "") -> str:
    tags = {T.TAG_ROLE: role, T.TAG_STRATEGY: strategy}
    if parent:
        tags["mlflow.parentRunId"] = parent
    run = client.create_run(experiment_id, start_time=_ms(when), tags=tags, run_name=strategy)
    rid = run.info.run_id
    if role == T.ROLE_PROGRAM:
        client.log_param(rid, R.GUIDELINE_PARAM, guidelines)
        if versions:
            client.set_tag(rid, T.TAG_GUIDELINE_VERSION, versions)
        figures = {T.FINAL_ERROR_RATE_ESTIMATE: rate, T.FINAL_ERROR_RATE_ESTIMATE_CI_LOW: rate * 0.8,
                   T.FINAL_ERROR_RATE_ESTIMATE_CI_HIGH: rate * 1.2, T.COST_PER_ERROR_REMOVED_ESTIMATE: cost_per_error,
                   T.FINAL_ERROR_RATE: rate * 0.9}
    else:
        figures = {T.AUDIT_ERROR_RATE: rate, T.AUDIT_CI_LOW: rate * 0.8, T.AUDIT_CI_HIGH: rate * 1.2,
                   T.PROGRAM_COST: 40.0, T.ERRORS_REMOVED_ESTIMATE: 8.0}
    for key, value in {**figures, **(metrics or {})}.items():
        client.log_metric(rid, key, value)
    client.set_terminated(rid, end_time=_ms(when) + 60_000)
    return rid


@pytest.fixture
def store(mlflow_uri, request):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    name = f"report-{request.node.name}"[:200]
    return mlflow_uri, client, client.create_experiment(name), name


# --- the fit ---------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(reduction=st.floats(-1.0, 0.95), start=st.floats(0.01, 0.5), gaps=st.lists(st.floats(2.0, 200.0),
                                                                                  min_size=2, max_size=8))
def test_an_exact_exponential_decline_gives_its_reduction(reduction, start, gaps):
    days = np.cumsum([0.0, *gaps])
    times = [START + dt.timedelta(days=float(d)) for d in days]
    rates = start * (1 - reduction) ** (days / R.DAYS_PER_YEAR)
    fit = R.annualized_reduction(times, rates)
    assert fit.value == pytest.approx(reduction, abs=1e-6)
    assert fit.ci_low == pytest.approx(reduction, abs=1e-6) and fit.ci_high == pytest.approx(reduction, abs=1e-6)


def test_the_interval_is_the_slopes_t_interval():
    rng = np.random.default_rng(7)
    days = np.array([0, 30, 61, 90, 120, 151, 181, 212, 243, 273, 304, 334], dtype=float)
    rates = 0.2 * 0.6 ** (days / R.DAYS_PER_YEAR) * np.exp(rng.normal(0, 0.1, len(days)))
    fit = R.annualized_reduction([START + dt.timedelta(days=d) for d in days], rates)
    # independently: numpy's least squares and the textbook standard error of the slope
    years = days / R.DAYS_PER_YEAR
    slope, intercept = np.polyfit(years, np.log(rates), 1)
    residuals = np.log(rates) - (intercept + slope * years)
    se = math.sqrt(residuals @ residuals / (len(days) - 2) / ((years - years.mean()) ** 2).sum())
    from scipy.stats import t

    half = t.ppf(0.975, len(days) - 2) * se
    assert fit.value == pytest.approx(1 - math.exp(slope))
    assert (fit.ci_low, fit.ci_high) == pytest.approx((1 - math.exp(slope + half), 1 - math.exp(slope - half)))
    assert fit.ci_low < fit.value < fit.ci_high
    assert 0.2 < fit.value < 0.6 or fit.ci_low < 0.4 < fit.ci_high  # near the 40% drawn


def test_zero_rates_are_left_out_and_too_short_a_span_gives_no_rate():
    times = [START, START + 100 * DAY, START + 200 * DAY, START + 300 * DAY]
    with_zero = R.annualized_reduction(times, [0.2, 0.0, 0.1, float("nan")])
    assert with_zero.points == 2 and with_zero.value == pytest.approx(1 - 0.5 ** (R.DAYS_PER_YEAR / 200))
    assert math.isnan(with_zero.ci_low)  # two points: no interval
    short = R.annualized_reduction([START, START + dt.timedelta(hours=2)], [0.2, 0.1])
    assert math.isnan(short.value) and "span" in short.why_not
    one = R.annualized_reduction([START], [0.2])
    assert math.isnan(one.value) and "has 1" in one.why_not


# --- the report run ----------------------------------------------------------------------------


def test_the_report_run_holds_the_fit_the_trend_and_the_guideline_changes(store, tmp_path):
    uri, client, experiment_id, name = store
    # a year of monthly programs whose estimated error rate halves every year; guidelines change once
    months = [START + dt.timedelta(days=30.4375 * m) for m in range(12)]
    rates = [0.2 * 0.5 ** ((m - START).days / R.DAYS_PER_YEAR) for m in months]
    for i, (when, rate) in enumerate(zip(months, rates)):
        _program(client, experiment_id, when, rate=rate, cost_per_error=10.0 - i * 0.5,
                 guidelines="v1" if i < 6 else "v2")
    _program(client, experiment_id, START - 40 * DAY, rate=0.9)  # before --since: not read
    result = R.main(R.ReportConfig(experiment=name, since="2025-01-01", tracking_uri=uri), output=tmp_path / "out")

    assert result.reduction.value == pytest.approx(0.5, abs=1e-3)
    assert len(result.points) == 12 and result.points["used_in_fit"].all()
    assert result.guideline_changes[["before", "after"]].values.tolist() == [["v1", "v2"]]
    run = client.get_run(result.run_id)
    assert run.data.tags[T.TAG_ROLE] == R.ROLE_REPORT
    assert run.data.metrics[R.ANNUALIZED_REDUCTION] == pytest.approx(0.5, abs=1e-3)
    assert run.data.metrics[R.GUIDELINE_CHANGES] == 1 and run.data.metrics[R.REPORT_POINTS] == 12
    assert "50% a year" in run.data.tags["mlflow.note.content"]
    history = client.get_metric_history(result.run_id, R.TREND_COST_PER_ERROR)
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == [10.0 - i * 0.5 for i in range(12)]
    paths = {a.path for a in client.list_artifacts(result.run_id, "report")}
    assert {R.TREND_PNG, R.RUNS_CSV, R.GUIDELINES_CSV} <= paths
    csv = pd.read_csv(client.download_artifacts(result.run_id, R.RUNS_CSV, str(tmp_path)))
    assert csv["error_rate_estimate"].tolist() == pytest.approx(rates)
    assert (tmp_path / "out" / "report_runs.csv").is_file()


def test_a_published_guideline_version_is_a_change(store):
    uri, client, experiment_id, name = store
    # the same router references throughout; the programs' published versions move 1 -> 1,2
    for i, versions in enumerate(["1", "1", "1,2", "1,2"]):
        _program(client, experiment_id, START + i * 30 * DAY, rate=0.2 - 0.02 * i, guidelines="[]", versions=versions)
    result = R.main(R.ReportConfig(experiment=name, since="2025-01-01", tracking_uri=uri))
    assert result.guideline_changes[["before", "after"]].values.tolist() == [["versions 1; []", "versions 1,2; []"]]


def test_a_live_program_counts_by_its_rounds_and_strategy_filters(store):
    uri, client, experiment_id, name = store
    live = _program(client, experiment_id, START, rate=0.05, strategy="tiered")
    for day, rate in ((1, 0.2), (50, 0.15), (100, 0.1)):
        _program(client, experiment_id, START + day * DAY, rate=rate, parent=live, role=T.ROLE_ROUND)
    _program(client, experiment_id, START + 10 * DAY, rate=0.3, strategy="random")
    result = R.main(R.ReportConfig(experiment=name, since=START.date(), tracking_uri=uri, strategy="tiered"))
    assert result.points["role"].tolist() == [T.ROLE_ROUND] * 3  # the live run's own point is its rounds'
    assert result.points["error_rate_estimate"].tolist() == [0.2, 0.15, 0.1]
    assert result.points["cost_per_error_removed_estimate"].tolist() == [5.0] * 3  # 40 / 8 confirmed
    every = R.main(R.ReportConfig(experiment=name, since=START.date(), tracking_uri=uri))
    assert sorted(every.points["strategy"]) == ["random", "tiered", "tiered", "tiered"]


# --- the command -------------------------------------------------------------------------------


def test_the_command_prints_the_reduction_and_the_run(store, capsys):
    uri, client, experiment_id, name = store
    for day, rate in ((0, 0.2), (365, 0.1), (730, 0.05)):
        _program(client, experiment_id, START + day * DAY, rate=rate)
    code = cli_main(["report", "--experiment", name, "--since", "2024-12-31", "--tracking-uri", uri])
    out = capsys.readouterr().out
    assert code == 0
    assert "50.0%" in out and "20.00% -> 5.00%" in out
    assert f"#/experiments/{experiment_id}/runs/" in out and "workflowType=machine_learning" in out


@pytest.mark.parametrize("args, message", [
    (["--experiment", "no-such-experiment", "--since", "2025-01-01"], "--experiment: no experiment named"),
    (["--since", "31/01/2025"], "--since: expected a date"),
    (["--since", "2099-01-01"], "--since: no program runs"),
    (["--since", "2025-01-01", "--strategy", "cleanlab"], "of strategy 'cleanlab'"),
])
def test_bad_input_is_one_line_and_exit_2(store, capsys, args, message):
    uri, client, experiment_id, name = store
    _program(client, experiment_id, START + DAY, rate=0.1)
    before = len(client.search_runs([experiment_id]))
    code = cli_main(["report", "--experiment", name, *args, "--tracking-uri", uri])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert len(client.search_runs([experiment_id])) == before  # no report run half-written


def test_a_missing_sqlite_store_is_not_created(tmp_path, capsys):
    path = tmp_path / "nothing.db"
    code = cli_main(["report", "--experiment", "x", "--since", "2025-01-01", "--tracking-uri", f"sqlite:///{path}"])
    assert code == 2 and "--tracking-uri: no MLflow store" in capsys.readouterr().err
    assert not path.exists()


def test_under_mlflow_run_the_project_run_is_the_report_run(store, monkeypatch, capsys):
    uri, client, experiment_id, name = store
    for day, rate in ((0, 0.2), (365, 0.1)):
        _program(client, experiment_id, START + day * DAY, rate=rate)
    project_run = client.create_run(experiment_id, run_name="mlflow run").info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", project_run)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert cli_main(["report", "--experiment", name, "--since", "2024-12-31"]) == 0
    run = client.get_run(project_run)
    assert run.data.tags[T.TAG_ROLE] == R.ROLE_REPORT
    assert run.data.metrics[R.ANNUALIZED_REDUCTION] == pytest.approx(0.5, abs=1e-3)
    assert run.info.status == "RUNNING"  # MLflow ends its own run
    assert len(client.search_runs([experiment_id], f"tags.`{T.TAG_ROLE}` = '{R.ROLE_REPORT}'")) == 1
