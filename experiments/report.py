"""``labelloop report``: the trend across every program of an experiment, as one MLflow run.

``main(cfg) -> ReportResult`` reads the experiment's labelloop runs that started on or after
``cfg.since`` and logs one new run (role ``report``) holding:

- the trend of the estimated error rate (with its 95% interval) and of the estimated cost per
  error removed, one point per measurement: a live program's rounds (runs of role
  ``program_round``: that round's ``audit_error_rate``), and every other program run (role
  ``program``, e.g. a comparison's strategies: its ``final_error_rate_estimate`` and
  ``cost_per_error_removed_estimate``); a live program's own run is left out, its rounds
  already count. ``report/trend.png`` draws both against time, with the fit;
- the guideline changes: each program run's published guideline versions (its
  ``guideline_version`` tag, :func:`experiments.guidance.log_guideline_version`) and its
  ``thresholds.guideline_refs`` param (the guideline references the router quotes), compared
  with the run before it, in time order (``report/guideline_changes.csv``, dashed lines on the
  plot);
- ``annualized_error_reduction``: the least-squares slope ``b`` of log(estimated error rate)
  against time in years (:func:`scipy.stats.linregress`), reported as the relative reduction
  per year ``1 - exp(b)``, with a 95% interval from the slope's t interval
  (``_ci_low``/``_ci_high``; needs 3 points). A point whose estimate is 0 or missing is not
  fitted (log 0 is undefined; ``used_in_fit`` in ``report/runs.csv`` says which were). The fit
  needs two points at least a day apart: over seconds, a yearly rate is an extrapolation of noise.

The truth-needing ``final_error_rate`` of simulated runs is copied into ``report/runs.csv``
when a run has it; it is never fitted.

Examples
--------
>>> cfg = ReportConfig(experiment="labelloop-demo", since="2026-01-01")
>>> result = main(cfg)  # doctest: +SKIP
>>> result.annualized_error_reduction  # doctest: +SKIP
0.42
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from loop.exceptions import SchemaError

from . import tracking as T
from .config import TrackingConfig

__all__ = ["ReportConfig", "ReportResult", "annualized_reduction", "main"]

ROLE_REPORT = "report"
GUIDELINE_PARAM = "thresholds.guideline_refs"
# The report run's figures.
ANNUALIZED_REDUCTION = "annualized_error_reduction"
ANNUALIZED_REDUCTION_CI_LOW = "annualized_error_reduction_ci_low"
ANNUALIZED_REDUCTION_CI_HIGH = "annualized_error_reduction_ci_high"
REPORT_POINTS = "report_points"            # measurements in the trend
REPORT_POINTS_FITTED = "report_points_fitted"
REPORT_SPAN_DAYS = "report_span_days"      # first to last fitted measurement
GUIDELINE_CHANGES = "guideline_changes"
TREND_ERROR_RATE = "trend_error_rate_estimate"  # per point, step = its order in time
TREND_COST_PER_ERROR = "trend_cost_per_error_removed_estimate"
TREND_PNG = "report/trend.png"
RUNS_CSV = "report/runs.csv"
GUIDELINES_CSV = "report/guideline_changes.csv"
MIN_SPAN_DAYS = 1.0
DAYS_PER_YEAR = 365.25

RUN_COLUMNS = ("time", "run_id", "run_name", "role", "strategy", "stream", "program_run_id", "round",
               "error_rate_estimate", "error_rate_estimate_ci_low", "error_rate_estimate_ci_high",
               "cost_per_error_removed_estimate", "program_cost", "final_error_rate", "guidelines", "used_in_fit")


class ReportError(SchemaError):
    """The report's input names no experiment, no date or no runs to report on."""


def _since(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day)
    else:
        try:
            moment = dt.datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise ReportError(f"--since: expected a date such as 2026-01-31 (ISO 8601, optionally with a time), "
                              f"got {value!r}") from None
    # A date without a zone is UTC, as MLflow's run times are.
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class ReportConfig:
    """What ``labelloop report`` reads and where it logs.

    Parameters
    ----------
    experiment : str
        The MLflow experiment whose runs are reported (the report run is logged there too).
    since : str, date or datetime
        Runs that started on or after this moment (ISO 8601 text; without a zone, UTC).
    tracking_uri : str, default="sqlite:///mlflow.db"
    strategy : str or None, default=None
        Only the programs of this strategy (a comparison runs several side by side).
    """

    experiment: str
    since: Any
    tracking_uri: str = TrackingConfig.uri
    strategy: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.experiment, str) or not self.experiment.strip():
            raise ReportError(f"--experiment: expected an experiment name, got {self.experiment!r}")
        if not isinstance(self.tracking_uri, str) or not self.tracking_uri.strip():
            raise ReportError(f"--tracking-uri: expected a tracking URI, got {self.tracking_uri!r}")
        if self.strategy is not None and not str(self.strategy).strip():
            raise ReportError("--strategy: expected a strategy name, got an empty string")
        object.__setattr__(self, "since", _since(self.since))


@dataclass(frozen=True)
class Reduction:
    """The fitted annual relative reduction of the error rate (NaN when it cannot be fitted)."""

    value: float
    ci_low: float
    ci_high: float
    points: int
    span_days: float
    why_not: str = ""


@dataclass(frozen=True)
class ReportResult:
    """What ``labelloop report`` logged.

    Attributes
    ----------
    run_id : str
        The report run.
    points : DataFrame
        One row per measurement, columns :data:`RUN_COLUMNS`, in time order.
    guideline_changes : DataFrame
        ``time``, ``run_id``, ``before``, ``after``.
    reduction : Reduction
    """

    run_id: str
    experiment_id: str
    points: pd.DataFrame
    guideline_changes: pd.DataFrame
    reduction: Reduction
    written: list[Path] = field(default_factory=list)

    @property
    def annualized_error_reduction(self) -> float:
        return self.reduction.value


def annualized_reduction(times: Sequence[dt.datetime] | pd.Series, error_rates: Sequence[float] | np.ndarray,
                         *, min_span_days: float = MIN_SPAN_DAYS) -> Reduction:
    """The relative reduction per year of an error rate measured at ``times``.

    Fits ``log(error_rate) = a + b * years`` by least squares (:func:`scipy.stats.linregress`);
    the reduction is ``1 - exp(b)`` (0.5: the rate halves every year; negative: it grows), its
    95% interval ``1 - exp(b -+ t * se(b))`` with ``t`` the 97.5% quantile of Student's t on
    ``n - 2`` degrees of freedom. Rates that are 0 or not finite are left out.

    Parameters
    ----------
    times : sequence of datetime, length n
    error_rates : array of shape (n,)
    min_span_days : float, default=1
        The fitted points must span at least this long; otherwise the result is NaN with the reason.

    Examples
    --------
    >>> t0 = dt.datetime(2025, 1, 1)
    >>> r = annualized_reduction([t0, t0 + dt.timedelta(days=365.25)], [0.2, 0.1])
    >>> round(r.value, 6)
    0.5
    """
    from scipy import stats

    stamps = pd.to_datetime(pd.Series(list(times)), utc=True)
    rates = np.asarray(error_rates, dtype=np.float64)
    if len(stamps) != len(rates):
        raise ReportError(f"error_rates: expected {len(stamps)} values, one per time, got {len(rates)}")
    keep = np.isfinite(rates) & (rates > 0)
    years = ((stamps - stamps.min()).dt.total_seconds() / (DAYS_PER_YEAR * 86400)).to_numpy()[keep]
    logs = np.log(rates[keep])
    n = int(keep.sum())
    span = float((years.max() - years.min()) * DAYS_PER_YEAR) if n else 0.0
    nan = float("nan")
    if n < 2 or len(np.unique(years)) < 2:
        return Reduction(nan, nan, nan, n, span, f"needs 2 measurements with an error rate above 0 at different "
                                                  f"times, has {n}")
    if span < min_span_days:
        return Reduction(nan, nan, nan, n, span, f"the measurements span {span:.2f} days; a yearly rate needs "
                                                  f"at least {min_span_days:g}")
    fit = stats.linregress(years, logs)
    if n < 3:
        return Reduction(1 - math.exp(fit.slope), nan, nan, n, span)
    # A constant rate fits exactly; linregress leaves its standard error undefined then.
    stderr = 0.0 if np.ptp(logs) == 0 else fit.stderr
    half = stats.t.ppf(0.975, n - 2) * stderr
    return Reduction(1 - math.exp(fit.slope), 1 - math.exp(fit.slope + half), 1 - math.exp(fit.slope - half), n, span)


def check_store(tracking_uri: str) -> None:
    """A SQLite tracking store must exist: MLflow would create an empty one and report nothing in it.

    Raises
    ------
    ReportError
        ``sqlite:///path`` where no file is.
    """
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///").split("?")[0])
        if str(path) not in ("", ":memory:") and not path.is_file():
            raise ReportError(f"--tracking-uri: no MLflow store at {path} (a sqlite:/// URI names an existing file)")


def _experiment(client: Any, name: str) -> Any:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        known = sorted(e.name for e in client.search_experiments())
        shown = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
        raise ReportError(f"--experiment: no experiment named {name!r} in this tracking store "
                          f"(it has: {shown or 'none'})")
    return experiment


def _metric(run: Any, *names: str) -> float:
    for name in names:
        if name in run.data.metrics:
            return float(run.data.metrics[name])
    return float("nan")


def _runs_since(client: Any, experiment_id: str, since_ms: int) -> list[Any]:
    """Every run of the experiment that started at or after ``since_ms``, page by page."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=f"attributes.start_time >= {since_ms}",
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def collect_points(runs: Sequence[Any], *, strategy: str | None = None) -> pd.DataFrame:
    """One row per measurement (see the module docstring), columns :data:`RUN_COLUMNS`, in time order."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    by_id = {r.info.run_id: r for r in runs}
    with_rounds = {r.data.tags.get(MLFLOW_PARENT_RUN_ID) for r in runs if r.data.tags.get(T.TAG_ROLE) == T.ROLE_ROUND}
    rows = []
    for run in runs:
        tags, role = run.data.tags, run.data.tags.get(T.TAG_ROLE)
        if role == T.ROLE_PROGRAM and run.info.run_id not in with_rounds:
            program, round_ = run, None
            rate = _metric(run, T.FINAL_ERROR_RATE_ESTIMATE)
            low = _metric(run, T.FINAL_ERROR_RATE_ESTIMATE_CI_LOW)
            high = _metric(run, T.FINAL_ERROR_RATE_ESTIMATE_CI_HIGH)
        elif role == T.ROLE_ROUND:
            program, round_ = by_id.get(tags.get(MLFLOW_PARENT_RUN_ID)), tags.get(T.TAG_ROUND)
            rate, low, high = (_metric(run, T.AUDIT_ERROR_RATE), _metric(run, T.AUDIT_CI_LOW),
                               _metric(run, T.AUDIT_CI_HIGH))
        else:
            continue
        source = program if program is not None else run
        name = source.data.tags.get(T.TAG_STRATEGY, "")
        if strategy is not None and name != strategy:
            continue
        program_cost = _metric(run, T.PROGRAM_COST)
        confirmed = _metric(run, T.ERRORS_REMOVED_ESTIMATE)
        cost_per_error = _metric(run, T.COST_PER_ERROR_REMOVED_ESTIMATE)
        if not np.isfinite(cost_per_error) and np.isfinite(program_cost) and confirmed > 0:
            cost_per_error = program_cost / confirmed  # a round run logs the parts, not the ratio
        rows.append({
            "time": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC"), "run_id": run.info.run_id,
            "run_name": run.info.run_name, "role": role, "strategy": name,
            "stream": source.data.tags.get(T.TAG_STREAM, ""),
            "program_run_id": source.info.run_id, "round": round_,
            "error_rate_estimate": rate, "error_rate_estimate_ci_low": low, "error_rate_estimate_ci_high": high,
            "cost_per_error_removed_estimate": cost_per_error, "program_cost": program_cost,
            "final_error_rate": _metric(run, T.FINAL_ERROR_RATE),
            "guidelines": _guidelines(source), "used_in_fit": False})
    frame = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    return frame.sort_values("time", kind="stable").reset_index(drop=True)


def _guidelines(run: Any) -> str:
    """What guidance a program ran under: its published versions (``versions 1,2``), and the
    references its router quoted, when either was logged."""
    versions = run.data.tags.get(T.TAG_GUIDELINE_VERSION, "")
    refs = run.data.params.get(GUIDELINE_PARAM, "")
    return "; ".join(part for part in (f"versions {versions}" if versions else "", refs) if part)


def guideline_changes(points: pd.DataFrame) -> pd.DataFrame:
    """Each program whose guideline references differ from the program before it, in time order."""
    programs = points.drop_duplicates("program_run_id")
    rows, before = [], None
    for row in programs.itertuples(index=False):
        if before is not None and row.guidelines != before:
            rows.append({"time": row.time, "run_id": row.program_run_id, "before": before, "after": row.guidelines})
        before = row.guidelines
    return pd.DataFrame(rows, columns=["time", "run_id", "before", "after"])


def plot_trend(points: pd.DataFrame, changes: pd.DataFrame, reduction: Reduction, *, title: str):
    """Estimated error rate (with its interval, and the fit) and cost per error removed over time."""
    fig = T._figure(7.5, 6.0)
    top, bottom = fig.subplots(2, 1, sharex=True)
    times = points["time"].dt.tz_localize(None)
    rate = points["error_rate_estimate"]
    errors = np.vstack([(rate - points["error_rate_estimate_ci_low"]).clip(lower=0),
                        (points["error_rate_estimate_ci_high"] - rate).clip(lower=0)]).astype(float)
    top.errorbar(times, rate, yerr=np.nan_to_num(errors), fmt="o", capsize=3, label="estimated error rate (95%)")
    fitted = points[points["used_in_fit"]]
    if np.isfinite(reduction.value) and len(fitted) >= 2:
        first = fitted["time"].min()
        years = (fitted["time"] - first).dt.total_seconds() / (DAYS_PER_YEAR * 86400)
        slope = math.log(1 - reduction.value)
        intercept = float(np.mean(np.log(fitted["error_rate_estimate"]) - slope * years))
        span = np.linspace(0, float(years.max()), 50)
        top.plot(first.tz_localize(None) + pd.to_timedelta(span * DAYS_PER_YEAR, unit="D"),
                 np.exp(intercept + slope * span), color="C3",
                 label=f"fit: {reduction.value:.0%} fewer errors a year")
    top.set_ylabel("estimated label error rate")
    top.set_title(title)
    bottom.plot(times, points["cost_per_error_removed_estimate"], marker="o", linestyle="-", color="C2")
    bottom.set_ylabel("estimated cost per error removed")
    for axis in (top, bottom):
        for moment in changes["time"]:
            axis.axvline(moment.tz_localize(None), color="grey", linestyle="--", alpha=0.7)
        axis.grid(alpha=0.3)
    if len(changes):
        top.plot([], [], color="grey", linestyle="--", label="guideline change")
    top.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def main(cfg: ReportConfig, *, output: Path | None = None, run_id: str | None = None) -> ReportResult:
    """Read the runs since ``cfg.since``, fit the trend, log the report run.

    Parameters
    ----------
    cfg : ReportConfig
    output : Path, optional
        Also write ``report_runs.csv`` and ``guideline_changes.csv`` there.
    run_id : str, optional
        Log into this run (an MLflow project's run, which MLflow ends) instead of a new one.

    Raises
    ------
    ReportError
        No such experiment, or no program run in it since ``cfg.since``.
    """
    from experiments.results import write_tables

    check_store(cfg.tracking_uri)
    writer = T.RunWriter(cfg.tracking_uri)
    experiment = _experiment(writer.client, cfg.experiment)
    since_ms = int(cfg.since.timestamp() * 1000)
    runs = _runs_since(writer.client, experiment.experiment_id, since_ms)
    points = collect_points(runs, strategy=cfg.strategy)
    since_text = cfg.since.isoformat()
    if points.empty:
        which = f" of strategy {cfg.strategy!r}" if cfg.strategy else ""
        raise ReportError(f"--since: no program runs{which} in experiment {cfg.experiment!r} since {since_text}")
    fit = annualized_reduction(points["time"], points["error_rate_estimate"].to_numpy())
    rate = points["error_rate_estimate"].to_numpy(dtype=float)
    points["used_in_fit"] = np.isfinite(fit.value) & np.isfinite(rate) & (rate > 0)
    changes = guideline_changes(points)

    params = {"report.since": since_text, "report.strategy": cfg.strategy or "all",
              "report.method": "linregress log(rate)"}
    tags = {T.TAG_ROLE: ROLE_REPORT, T.TAG_DESCRIPTION: _note(cfg, points, changes, fit)}
    adopted = run_id is not None
    if adopted:
        writer.log(run_id, params=params, tags=tags)
    else:
        run_id = writer.start_run(experiment.experiment_id, f"report since {cfg.since.date()}", params=params,
                                  tags=tags)
    try:
        metrics = {REPORT_POINTS: len(points), REPORT_POINTS_FITTED: fit.points, REPORT_SPAN_DAYS: fit.span_days,
                   GUIDELINE_CHANGES: len(changes)}
        metrics.update({k: v for k, v in ((ANNUALIZED_REDUCTION, fit.value), (ANNUALIZED_REDUCTION_CI_LOW, fit.ci_low),
                                          (ANNUALIZED_REDUCTION_CI_HIGH, fit.ci_high)) if np.isfinite(v)})
        writer.log(run_id, metrics=metrics)
        for step, row in enumerate(points.itertuples(index=False)):
            writer.log(run_id, step=step, metrics={k: v for k, v in (
                (TREND_ERROR_RATE, row.error_rate_estimate),
                (TREND_COST_PER_ERROR, row.cost_per_error_removed_estimate)) if np.isfinite(v)})
        table = points.assign(time=points["time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        writer.log_table(run_id, table, RUNS_CSV)
        writer.log_table(run_id, changes.assign(time=changes["time"].astype(str)), GUIDELINES_CSV)
        writer.log_figure(run_id, plot_trend(points, changes, fit, title=f"{cfg.experiment} since {cfg.since.date()}"),
                          TREND_PNG)
    except BaseException:
        if not adopted:
            writer.finish(run_id, failed=True)
        raise
    if not adopted:
        writer.finish(run_id)
    written = write_tables(output, {"report_runs.csv": table, "guideline_changes.csv": changes}) if output else []
    return ReportResult(run_id=run_id, experiment_id=experiment.experiment_id, points=points,
                        guideline_changes=changes, reduction=fit, written=written)


def _note(cfg: ReportConfig, points: pd.DataFrame, changes: pd.DataFrame, fit: Reduction) -> str:
    """The report run's description (MLflow shows it above the run's figures)."""
    if np.isfinite(fit.value):
        interval = (f" (95% interval {fit.ci_low:.0%} to {fit.ci_high:.0%})" if np.isfinite(fit.ci_low) else
                    " (no interval: 2 points)")
        headline = f"Estimated label error rate falls by **{fit.value:.0%} a year**{interval}"
    else:
        headline = f"No annualized reduction: {fit.why_not}"
    return (f"{headline}, fitted on {fit.points} measurements over {fit.span_days:.0f} days of experiment "
            f"`{cfg.experiment}` since {cfg.since.date()}; {len(changes)} guideline change(s). "
            "Estimates come from expert audits, not truth; see report/runs.csv.")
