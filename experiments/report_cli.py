"""``labelloop report``: the trend across an experiment's programs, logged as one MLflow run.

::

    labelloop report --experiment labelloop-demo --since 2026-01-01 [--tracking-uri URI] [--strategy S]
                     [--output DIR]

A wrong argument (an experiment the store does not have, a date that is not one, no program
run since it) stops with one line naming it and exit code 2 (:mod:`experiments.report`).
"""

from __future__ import annotations

import argparse


def add_report_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``report``."""
    from experiments.cli import DEFAULT_TRACKING_URI, add_output_argument

    report = sub.add_parser("report", help="log one MLflow run with the trend of the estimated error rate, cost per "
                                           "error removed and guideline changes, and the annualized error reduction")
    report.add_argument("--experiment", required=True, help="the MLflow experiment whose program runs are reported")
    report.add_argument("--since", required=True, metavar="DATE",
                        help="runs that started on or after DATE (ISO 8601, e.g. 2026-01-31; UTC unless it says)")
    report.add_argument("--tracking-uri", default=None, dest="tracking_uri",
                        help=f"the MLflow tracking store (default: $MLFLOW_TRACKING_URI, else {DEFAULT_TRACKING_URI})")
    report.add_argument("--strategy", default=None, help="only the programs of this strategy (default: all)")
    add_output_argument(report, "report_runs.csv and guideline_changes.csv")
    report.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    import os

    from experiments.cli import DEFAULT_TRACKING_URI
    from rich.console import Console
    from rich.table import Table

    from experiments import report
    from experiments.mlflow_ui import run_link
    from experiments.tracking import check_reachable

    # Under `mlflow run` the entry point's run, in MLflow's store, becomes the report run.
    run_id = os.environ.get("MLFLOW_RUN_ID") if args.tracking_uri is None else None
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    cfg = report.ReportConfig(experiment=args.experiment, since=args.since, tracking_uri=uri, strategy=args.strategy)
    report.check_store(cfg.tracking_uri)
    check_reachable(cfg.tracking_uri)
    result = report.main(cfg, output=args.output, run_id=run_id)
    fit = result.reduction
    console = Console()
    table = Table(title=f"{cfg.experiment} since {cfg.since.date()}: {len(result.points)} measurements, "
                        f"{len(result.guideline_changes)} guideline change(s)")
    for column in ("first", "last", "estimated error rate", "annualized error reduction", "95% interval"):
        table.add_column(column, justify="right")
    first, last = result.points.iloc[0], result.points.iloc[-1]
    finite = fit.value == fit.value
    table.add_row(f"{first.time:%Y-%m-%d}", f"{last.time:%Y-%m-%d}",
                  f"{first.error_rate_estimate:.2%} -> {last.error_rate_estimate:.2%}",
                  f"{fit.value:.1%}" if finite else "-",
                  f"{fit.ci_low:.1%} to {fit.ci_high:.1%}" if fit.ci_low == fit.ci_low else "-")
    console.print(table)
    if not finite:
        console.print(f"No annualized reduction: {fit.why_not}.")
    for path in result.written:
        console.print(f"Wrote {path}")
    console.print(f"The report run: {run_link(cfg.tracking_uri, result.experiment_id, result.run_id)}",
                  soft_wrap=True, highlight=False)
    return 0
