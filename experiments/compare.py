"""Compare annotation strategies on one simulated world: one parent MLflow run, one child per strategy.

``main(cfg) -> ComparisonResult`` runs :func:`experiments.program.run_program` once per
strategy of ``cfg.strategies`` (``compare.strategies`` in YAML), each with the whole config
(its own strategy) as the child run's params, on the same world (items, truth, initial
labels, crowd) and the same budget.

What MLflow shows (the names the ``labelloop report`` view relies on):

- *Each strategy's child run* (tag ``labelloop.strategy``): per-round metrics, and the final
  ``final_error_rate``, ``final_error_rate_estimate``, ``program_cost``,
  ``cost_per_error_removed``, ``cost_per_error_removed_estimate``, ``errors_removed``,
  ``model_accuracy`` (and ``roi``, ``roi_estimate`` with ``program.value_per_error_removed``).
  A cost per error removed is not logged when no error was removed. The names stay flat:
  MLflow 3.17's chart view makes each ``prefix/`` a section, shows those sections first
  (alphabetically) and the unprefixed metrics last, under "Model metrics", charts sorted by
  name; putting the headline figures first would mean renaming or duplicating the names above.
- *The parent run* (tag ``labelloop.role = comparison``): its description
  (``mlflow.note.content``) is a markdown table of the comparison with the winner and its
  saving against each other strategy (:mod:`experiments.comparison_report` defines both);
  ``report.html`` (one self-contained page: error rate against program cost, the estimated
  error rate per round with its 95% interval, cost per error removed, annotator hours, the gate
  decisions) and ``report.png`` (the same figures) at the artifact root; ``comparison.csv``; and
  each strategy's final figures as ``<strategy>/<metric>``, to 4 significant figures (MLflow's
  chart view makes one section per strategy); tags ``labelloop.winner``, ``labelloop.currency``.
- *The model registry*: every version a program publishes is tagged ``strategy``, ``run_id``,
  ``round``, ``gate_verdict`` (promoted | refused) and ``dataset``. The strategies share one
  registered model (``cfg.simulation_model``); when the comparison ends, ``champion`` is the
  winner's champion, and that version is tagged ``comparison_winner = true`` (without a
  winner, ``champion`` stays the last strategy's). ``challenger`` stays the last version published.

With ``serve.url: local`` one Serve app is started for the whole comparison; the strategies
run one after the other, each promoting its own seed model as the champion first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from loop.store import LabelStore

from . import comparison_report as R
from . import tracking as T
from .config import ProgramConfig, flatten
from .program import ProgramResult, Scorer, make_tracker, open_setup, run_program
from .world import World

__all__ = ["ComparisonResult", "PARENT_METRICS", "TABLE_COLUMNS", "comparison_table", "crown_winner", "main"]

TABLE_COLUMNS = ("strategy", T.FINAL_ERROR_RATE, T.FINAL_ERROR_RATE_ESTIMATE, T.FINAL_ERROR_RATE_ESTIMATE_CI_LOW,
                 T.FINAL_ERROR_RATE_ESTIMATE_CI_HIGH, T.PROGRAM_COST, T.ERRORS_REMOVED,
                 T.ERRORS_REMOVED_ESTIMATE, T.COST_PER_ERROR_REMOVED, T.COST_PER_ERROR_REMOVED_ESTIMATE, T.ROI,
                 T.ROI_ESTIMATE, T.ERRORS_REMOVED_PER_100, T.ANNOTATOR_HOURS, T.MODEL_ACCURACY)
# Each strategy's figures on the parent run (as <strategy>/<metric>): the table's key columns.
PARENT_METRICS = (T.FINAL_ERROR_RATE, T.FINAL_ERROR_RATE_ESTIMATE, T.PROGRAM_COST, T.ERRORS_REMOVED,
                  T.COST_PER_ERROR_REMOVED, T.COST_PER_ERROR_REMOVED_ESTIMATE, T.ROI, T.ROI_ESTIMATE,
                  T.MODEL_ACCURACY)


@dataclass(frozen=True)
class ComparisonResult:
    """The programs of a comparison and their table.

    Attributes
    ----------
    parent_run_id : str or None
        The parent MLflow run (None without tracking).
    results : dict of strategy -> ProgramResult
    table : DataFrame
        One row per strategy, columns :data:`TABLE_COLUMNS`, in the order run.
    winner : str or None
        :func:`experiments.comparison_report.winner` of the table (None: no strategy removed an error).
    """

    parent_run_id: str | None
    results: dict[str, ProgramResult]
    table: pd.DataFrame
    winner: str | None = None


def comparison_table(results: dict[str, ProgramResult]) -> pd.DataFrame:
    """One row per strategy: the columns of :data:`TABLE_COLUMNS`, read off each result.

    ``program_cost`` is the one cost (beyond the initial labels); a cost per error removed is
    NaN when no error was removed, ROI NaN without ``program.value_per_error_removed``.
    """
    return pd.DataFrame([{"strategy": name, **{c: float(getattr(r, c)) for c in TABLE_COLUMNS[1:]}}
                         for name, r in results.items()], columns=list(TABLE_COLUMNS))


def crown_winner(tracker: T.Tracker, results: dict[str, ProgramResult], best: str | None) -> None:
    """Point ``champion`` at the winner's champion version and tag it ``comparison_winner=true``.

    The strategies register into one model, so the alias would otherwise be whatever the last
    strategy promoted. Without a winner nothing changes.
    """
    if best is None:
        return
    version = results[best].champion_version
    tracker.set_alias(T.ALIAS_CHAMPION, version)
    tracker.tag_version(version, {T.VERSION_WINNER: "true"})


def _log_parent(parent: T.Tracker, cfg: ProgramConfig, dataset: str, results: dict[str, ProgramResult],
                table: pd.DataFrame, best: str | None) -> None:
    """The parent run: the table, the description, the report (HTML and PNG), the per-strategy figures."""
    rounds = f"{cfg.rounds} round{'s' if cfg.rounds != 1 else ''}"
    title = f"{dataset}: {rounds} of {cfg.items_per_round} items, budget {cfg.budget_per_round:g} {cfg.currency} per round"
    report = {"currency": cfg.currency, "value_per_error_removed": cfg.value_per_error_removed, "title": title}
    parent.log_table(table, T.COMPARISON_CSV)
    parent.set_tags({T.TAG_DESCRIPTION: R.description(table, **report), T.TAG_CURRENCY: cfg.currency,
                     T.TAG_WINNER: best or "none"})
    parent.log_text(R.report_html(table, results, **report), T.REPORT_HTML)
    parent.log_figure(R.report_figure(table, results, **report), T.REPORT_PNG)
    parent.log_figure(T.plot_error_vs_cost({name: r.rounds for name, r in results.items()},
                                           title=f"{dataset}: label error rate against program cost",
                                           currency=cfg.currency), T.ERROR_VS_COST_PNG)
    parent.log_metrics({T.strategy_metric(row["strategy"], column): R.round_figure(row[column])
                        for row in table.to_dict("records") for column in PARENT_METRICS
                        if np.isfinite(row[column])})


def main(cfg: ProgramConfig, *, scorer: Scorer | None = None, store: LabelStore | None = None,
         world: World | None = None,
         progress: Callable[[str, int, int], None] | None = None) -> ComparisonResult:
    """Run every strategy of ``cfg.strategies`` and log the comparison.

    Parameters
    ----------
    cfg : ProgramConfig
    scorer : Scorer, optional
        Shared by all strategies; default from ``cfg.serve`` (:func:`~experiments.program.open_setup`:
        one Serve app for all, started here with ``local`` and stopped at the end; in process,
        one per strategy).
    store : LabelStore, optional
        Default ``LabelStore(cfg.store_url)``; each strategy writes its own stream.
    world : World, optional
        Default ``build_world(cfg)``.
    progress : callable (strategy, round, rounds) -> None, optional

    Returns
    -------
    ComparisonResult
    """
    parent = make_tracker(cfg)
    params = {k: v for k, v in flatten(cfg).items() if k != "program.strategy"}
    # One world, store and scorer for every strategy (with serve.url local, one Serve app).
    with open_setup(cfg, world=world, store=store, scorer=scorer) as setup:
        parent_id = parent.start(f"compare-{setup.world.dataset}", params=params, tags={
            T.TAG_ROLE: T.ROLE_COMPARISON, T.TAG_DATASET: setup.world.dataset, T.TAG_CURRENCY: cfg.currency})
        try:
            results: dict[str, ProgramResult] = {}
            for strategy in cfg.strategies:
                step = (lambda r, n, s=strategy.value: progress(s, r, n)) if progress else None
                results[strategy.value] = run_program(cfg.replace(strategy=strategy), scorer=setup.scorer,
                                                      store=setup.store, world=setup.world, progress=step)
            table = comparison_table(results)
            best = R.winner(table)
            _log_parent(parent, cfg, setup.world.dataset, results, table, best)
            crown_winner(parent, results, best)
        except BaseException:
            parent.finish(failed=True)
            raise
        parent.finish()
    return ComparisonResult(parent_run_id=parent_id, results=results, table=table, winner=best)
