"""``labelloop experiment --config F``: compare annotation variants with a sequential test."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_experiment_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``experiment`` on the top-level subparsers."""
    experiment = sub.add_parser("experiment", help="randomise tasks or annotators to variants (guideline versions, "
                                                   "suggestion shown or hidden, examples, double-blind) and compare "
                                                   "them with an always-valid sequential test (simulation)")
    experiment.add_argument("--config", required=True, help="config YAML with an experiment: section "
                                                           "(see configs/experiment.yaml)")
    experiment.set_defaults(func=_experiment)


def _experiment(args: argparse.Namespace) -> int:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from experiments import experiment
    from experiments.cli import _check_table, _print_ui_hint, _project_run

    cfg = experiment.load_experiment_config(args.config)
    _check_table(cfg.program)
    cfg = experiment.ExperimentConfig(program=_project_run(cfg.program), experiment=cfg.experiment)
    # Piped output (scripts, CI logs) gets the whole table; a terminal wraps at its own width.
    console = Console(width=None if sys.stdout.isatty() else 120)
    result = experiment.main(cfg)
    settings = cfg.experiment
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=f"{result.looks[experiment.LOOK].max()} looks of {settings.look_every} tasks, unit "
                        f"{settings.unit.value}, accuracy against {settings.measure.value}")
    for column in ("variant", "answers", "accuracy", "vs control [CS]", "p", "s/item", "alpha", "cost", "verdict"):
        table.add_column(column, justify="left" if column in ("variant", "decision") else "right", no_wrap=True)
    for i, row in enumerate(result.variants.itertuples(index=False)):
        diff = "" if i == 0 else f"{row.difference:+.3f} [{row.difference_cs_low:+.3f},{row.difference_cs_high:+.3f}]"
        table.add_row(row.variant, str(row.annotations), f"{row.accuracy:.3f}", diff,
                      "" if i == 0 else f"{row.p_value:.3f}", f"{row.seconds_per_item:.1f}",
                      "" if row.agreement != row.agreement else f"{row.agreement:.2f}", f"{row.cost:.0f}",
                      _verdict(row))
    for row in result.variants.itertuples(index=False):
        console.print(f"{row.variant}: {row.what}")
    console.print(table)
    how = "stopped early" if result.stopped_early else f"budget of {settings.max_annotations} reached"
    comparisons = len(settings.variants) - 1
    split = f" split over {comparisons} comparisons" if comparisons > 1 else ""
    console.print(f"Decision: {result.decision}, after {result.annotations} annotations ({how}; alpha "
                  f"{settings.alpha:g}{split}).")
    _print_ui_hint(console, cfg.program.tracking.uri)
    return 0


def _verdict(row: Any) -> str:
    """A variant's decision in a word: better or worse than the control, same, or undecided."""
    if row.decision == "control":
        return "control"
    if row.decision == "winner":
        return "better" if row.winner == row.variant else "worse"
    return {"no_difference": "same"}.get(row.decision, "undecided")
