"""Compare annotation strategies on one simulated world: one parent MLflow run, one child per strategy.

``main(cfg) -> ComparisonResult`` runs :func:`experiments.program.run_program` once per
strategy of ``cfg.strategies`` (``compare.strategies`` in YAML), each with the whole config
(its own strategy) as the child run's params, on the same world (items, truth, initial
labels, crowd) and the same budget. The parent run holds the comparison table, an error
rate against cost plot of every strategy, and the final figures per strategy.

With ``serve.url: local`` one Serve app is started for the whole comparison; the strategies
run one after the other, each promoting its own seed model as the champion first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from loop.store import LabelStore

from . import tracking as T
from .config import ProgramConfig, flatten
from .program import ProgramResult, Scorer, make_tracker, open_setup, run_program
from .world import World

__all__ = ["ComparisonResult", "TABLE_COLUMNS", "comparison_table", "main"]

TABLE_COLUMNS = ("strategy", "final_error_rate", "cost", "program_cost", "errors_removed",
                 "errors_removed_per_100_annotations", "model_accuracy")


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
    """

    parent_run_id: str | None
    results: dict[str, ProgramResult]
    table: pd.DataFrame


def comparison_table(results: dict[str, ProgramResult]) -> pd.DataFrame:
    """Final error rate, cost, errors removed per 100 annotations and model accuracy per strategy."""
    return pd.DataFrame([{
        "strategy": name, "final_error_rate": r.final_error_rate, "cost": r.cost, "program_cost": r.program_cost,
        "errors_removed": r.errors_removed, "errors_removed_per_100_annotations": r.errors_removed_per_100_annotations,
        "model_accuracy": r.model_accuracy} for name, r in results.items()], columns=list(TABLE_COLUMNS))


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
            T.TAG_ROLE: T.ROLE_COMPARISON, T.TAG_DATASET: setup.world.dataset})
        try:
            results: dict[str, ProgramResult] = {}
            for strategy in cfg.strategies:
                step = (lambda r, n, s=strategy.value: progress(s, r, n)) if progress else None
                results[strategy.value] = run_program(cfg.replace(strategy=strategy), scorer=setup.scorer,
                                                      store=setup.store, world=setup.world, progress=step)
            table = comparison_table(results)
            parent.log_table(table, T.COMPARISON_CSV)
            parent.log_figure(T.plot_error_vs_cost({name: r.rounds for name, r in results.items()},
                                                   title=f"{setup.world.dataset}: label error rate against cost"),
                              T.ERROR_VS_COST_PNG)
            parent.log_metrics({T.strategy_metric(row.strategy, column): float(getattr(row, column))
                                for row in table.itertuples(index=False) for column in TABLE_COLUMNS[1:]})
        except BaseException:
            parent.finish(failed=True)
            raise
        parent.finish()
    return ComparisonResult(parent_run_id=parent_id, results=results, table=table)
