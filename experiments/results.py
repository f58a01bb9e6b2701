"""Machine-readable results: ``--output DIR`` writes ``summary.csv`` and ``rounds.csv``.

Every command that runs programs (``run``, ``compare``, ``tune``; ``retrain`` and ``score``
the same way) writes through :func:`write_results`, so scripts and CI read one format instead
of scraping the terminal:

``summary.csv``
    One row per program, columns :data:`SUMMARY_COLUMNS` (after any key columns the command
    adds, e.g. ``trial`` and ``world_seed`` for ``tune``). The one cost figure is
    ``program_cost``: what the program spent beyond the initial labels (strategy work and
    audits), in ``currency`` (``program.currency``); both ``cost_per_error_removed`` columns
    divide it (empty when no error was removed). ``initial_labels_cost`` is what the initial
    labels cost, the same for every strategy of a world, for the record. ``roi`` and
    ``roi_estimate`` (``value_per_error_removed * errors_removed / program_cost``, the estimate
    with ``errors_removed_estimate``) are empty unless ``program.value_per_error_removed`` is set.
    Each truth-needing figure has an estimated companion read off the audits:
    ``final_error_rate_estimate`` (with its 95% interval) is the last round's
    ``audit_error_rate``, ``errors_removed_estimate`` the corrections adjudication confirmed.
``rounds.csv``
    One row per program and round (0 = the seed round): ``strategy``, the key columns,
    ``round`` and every per-round metric under its MLflow key (``true_error_rate``,
    ``audit_error_rate``, ``audit_error_rate_ci_low``, ...).

A figure a program does not have (no audit in its last round, no truth on a team's own table)
is an empty cell, never a guess; nothing here requires the truth-needing columns.

Examples
--------
A command checks the directory before any work, so a bad path stops at once, and writes at
the end::

    directory = check_output_dir(args.output)
    result = program.main(cfg)
    write_results(directory, [result])     # [.../summary.csv, .../rounds.csv]
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from experiments import tracking as T
from loop.exceptions import SchemaError

__all__ = ["OutputError", "ROUNDS_CSV", "SUMMARY_COLUMNS", "SUMMARY_CSV", "check_output_dir", "cost_per_error",
           "estimated_figures", "roi", "rounds_table", "summary_table", "write_results", "write_tables"]

SUMMARY_CSV = "summary.csv"
ROUNDS_CSV = "rounds.csv"
STRATEGY = "strategy"
ROUND = "round"
PROMOTIONS = "promotions"
CURRENCY = "currency"

# Each truth-needing figure is followed by its estimated companion(s).
SUMMARY_COLUMNS = (
    STRATEGY, T.N_ITEMS, T.INITIAL_ERROR_RATE,
    T.FINAL_ERROR_RATE, T.FINAL_ERROR_RATE_ESTIMATE, T.FINAL_ERROR_RATE_ESTIMATE_CI_LOW,
    T.FINAL_ERROR_RATE_ESTIMATE_CI_HIGH,
    T.PROGRAM_COST, CURRENCY,
    T.ERRORS_REMOVED, T.ERRORS_REMOVED_ESTIMATE,
    T.COST_PER_ERROR_REMOVED, T.COST_PER_ERROR_REMOVED_ESTIMATE,
    T.ROI, T.ROI_ESTIMATE, T.INITIAL_LABELS_COST,
    T.ERRORS_REMOVED_PER_100, T.MODEL_ACCURACY, PROMOTIONS,
)

# The estimated finals a program's rounds carry (the program logs them per round).
_FROM_LAST_ROUND = {T.FINAL_ERROR_RATE_ESTIMATE: T.AUDIT_ERROR_RATE,
                    T.FINAL_ERROR_RATE_ESTIMATE_CI_LOW: T.AUDIT_CI_LOW,
                    T.FINAL_ERROR_RATE_ESTIMATE_CI_HIGH: T.AUDIT_CI_HIGH,
                    T.ERRORS_REMOVED_ESTIMATE: T.ERRORS_REMOVED_ESTIMATE}


class OutputError(SchemaError):
    """``--output`` names no directory labelloop can write to (the message names it and why)."""


def _number(value: Any) -> float:
    """A figure as a float; a missing one (None, or not a number) is NaN."""
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def cost_per_error(cost: float, removed: float) -> float:
    """Cost per error removed, ``cost / removed``; NaN when no error was removed (a ratio to 0,
    or to a net loss of correct labels, means nothing).

    >>> cost_per_error(30.0, 12), math.isnan(cost_per_error(30.0, 0))
    (2.5, True)
    """
    return float(cost) / removed if removed > 0 else math.nan


def roi(value_per_error: float | None, removed: float, cost: float) -> float:
    """Return on the program's cost, ``value_per_error * removed / cost``: the value of the errors
    removed per unit spent (1 breaks even). NaN without a value per error, or a cost of 0.

    >>> roi(5.0, 12, 30.0), math.isnan(roi(None, 12, 30.0))
    (2.0, True)
    """
    if value_per_error is None or not cost > 0 or math.isnan(removed):
        return math.nan
    return value_per_error * removed / cost


def estimated_figures(result: Any) -> dict[str, float]:
    """The summary's estimated columns of one program, never reading the truth.

    A figure the program reports itself (an attribute of the result under the metric's name)
    is taken as it is; otherwise it is read off the program's rounds: the last round's audit
    estimate and interval, the last cumulative count of confirmed corrections. Missing ones are
    NaN (no audit in the last round, a program that logs no confirmed corrections).

    Parameters
    ----------
    result : experiments.program.ProgramResult or alike
        Needs ``rounds`` (a DataFrame indexed by round, one column per metric) and ``program_cost``.

    Returns
    -------
    dict of metric name -> float
        ``final_error_rate_estimate`` (+ ``_ci_low``, ``_ci_high``), ``errors_removed_estimate``,
        ``cost_per_error_removed_estimate`` and ``roi_estimate`` (NaN unless the result has a
        ``value_per_error_removed``).
    """
    rounds: pd.DataFrame = result.rounds
    last = rounds.sort_index().iloc[-1] if len(rounds) else pd.Series(dtype=float)
    figures = {}
    for name, column in _FROM_LAST_ROUND.items():
        own = getattr(result, name, None)
        figures[name] = _number(own) if own is not None else _number(last.get(column))
    own = getattr(result, T.COST_PER_ERROR_REMOVED_ESTIMATE, None)
    figures[T.COST_PER_ERROR_REMOVED_ESTIMATE] = _number(own) if own is not None else \
        cost_per_error(_number(result.program_cost), figures[T.ERRORS_REMOVED_ESTIMATE])
    own = getattr(result, T.ROI_ESTIMATE, None)
    figures[T.ROI_ESTIMATE] = _number(own) if own is not None else \
        roi(getattr(result, "value_per_error_removed", None), figures[T.ERRORS_REMOVED_ESTIMATE],
            _number(result.program_cost))
    return figures


def _summary_row(result: Any) -> dict[str, float | str]:
    # getattr with a default: a program on a team's own table has no truth-needing figures.
    row: dict[str, float | str] = {name: _number(getattr(result, name, None)) for name in SUMMARY_COLUMNS[1:]}
    row[STRATEGY] = str(result.strategy)
    row[T.N_ITEMS] = _number(getattr(result, "n_items", None))
    own = getattr(result, T.COST_PER_ERROR_REMOVED, None)
    row[T.COST_PER_ERROR_REMOVED] = _number(own) if own is not None else \
        cost_per_error(_number(result.program_cost), row[T.ERRORS_REMOVED])
    own = getattr(result, T.ROI, None)
    row[T.ROI] = _number(own) if own is not None else \
        roi(getattr(result, "value_per_error_removed", None), row[T.ERRORS_REMOVED], _number(result.program_cost))
    row[CURRENCY] = str(getattr(result, CURRENCY, "cost units"))
    row.update(estimated_figures(result))
    return row


# Counts, written as integers (an empty cell when missing), not as 18.0.
_COUNTS = (T.N_ITEMS, T.ERRORS_REMOVED, T.ERRORS_REMOVED_ESTIMATE, PROMOTIONS)


def _as_counts(table: pd.DataFrame) -> pd.DataFrame:
    for name in _COUNTS:
        values = table[name]
        if values.dropna().mod(1).eq(0).all():
            table[name] = values.astype("Int64")
    return table


def _keys(keys: Mapping[str, Sequence[Any]] | None, n: int) -> dict[str, Sequence[Any]]:
    keys = dict(keys or {})
    for name, values in keys.items():
        if len(values) != n:
            raise ValueError(f"keys[{name!r}]: expected one value per program ({n}), got {len(values)}")
    return keys


def summary_table(results: Sequence[Any], *, keys: Mapping[str, Sequence[Any]] | None = None) -> pd.DataFrame:
    """One row per program: ``strategy``, the key columns, then :data:`SUMMARY_COLUMNS`.

    Parameters
    ----------
    results : sequence of experiments.program.ProgramResult (n programs)
    keys : mapping of column -> n values, optional
        Columns that tell the programs apart beyond their strategy (``tune``: ``trial``,
        ``world_seed``), placed after ``strategy``.

    Returns
    -------
    DataFrame, shape (n, 1 + len(keys) + len(SUMMARY_COLUMNS) - 1)
    """
    keys = _keys(keys, len(results))
    columns = [STRATEGY, *keys, *SUMMARY_COLUMNS[1:]]
    rows = [{**{k: v[i] for k, v in keys.items()}, **_summary_row(r)} for i, r in enumerate(results)]
    return _as_counts(pd.DataFrame(rows, columns=columns))


def rounds_table(results: Sequence[Any], *, keys: Mapping[str, Sequence[Any]] | None = None) -> pd.DataFrame:
    """One row per program and round: ``strategy``, the key columns, ``round``, every metric of the rounds.

    The metric columns are the union over the programs, in the order they first appear; a
    metric one program did not log is empty in its rows.

    Parameters
    ----------
    results : sequence of experiments.program.ProgramResult (n programs)
    keys : mapping of column -> n values, optional
        As in :func:`summary_table`.
    """
    keys = _keys(keys, len(results))
    frames = []
    for i, result in enumerate(results):
        frame = result.rounds.sort_index().rename_axis(ROUND).reset_index()
        ids = {STRATEGY: str(result.strategy), **{k: v[i] for k, v in keys.items()}}
        frames.append(pd.concat([pd.DataFrame(ids, index=frame.index), frame], axis=1))
    if not frames:
        return pd.DataFrame(columns=[STRATEGY, *keys, ROUND])
    return pd.concat(frames, ignore_index=True)


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` as the directory results go to, checked before any work (nothing is created yet).

    It must be a directory labelloop can write to, or not exist yet under a directory it can
    write to (:func:`write_tables` creates it).

    Raises
    ------
    OutputError
        Naming ``--output``, the path and why not (a file, not writable).
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise _unusable(path, "a file, not a directory")
        _probe(path, path, "not writable")
        return path
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise _unusable(path, f"{str(parent)!r} is a file")
    _probe(path, parent, f"cannot create it in {str(parent)!r}")
    return path


def _probe(path: Path, directory: Path, why: str) -> None:
    """Create and remove a file in ``directory``: permission bits alone do not tell (root ignores
    them; a read-only mount or /proc refuses root too)."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise _unusable(path, f"{why}: {exc.strerror or exc}") from None


def _unusable(path: Path, why: str) -> OutputError:
    return OutputError(f"--output: expected a directory labelloop can write to, got {str(path)!r} ({why})")


def write_tables(directory: str | os.PathLike[str], tables: Mapping[str, pd.DataFrame]) -> list[Path]:
    """Write each frame as ``directory/<name>`` (CSV, no index, missing values as empty cells).

    Returns
    -------
    list of Path
        The files written, in the order of ``tables``.

    Raises
    ------
    OutputError
        The directory cannot be created or a file cannot be written.
    """
    directory = check_output_dir(directory)
    written = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, frame in tables.items():
            path = directory / name
            frame.to_csv(path, index=False)
            written.append(path)
    except OSError as exc:
        raise _unusable(directory, exc.strerror or str(exc)) from None
    return written


def write_results(directory: str | os.PathLike[str], results: Sequence[Any], *,
                  keys: Mapping[str, Sequence[Any]] | None = None,
                  extra: Mapping[str, pd.DataFrame] | None = None) -> list[Path]:
    """Write ``summary.csv`` and ``rounds.csv`` of ``results`` (and any ``extra`` tables) to ``directory``.

    Parameters
    ----------
    directory : path
        Created if missing (see :func:`check_output_dir`).
    results : sequence of experiments.program.ProgramResult
    keys : mapping of column -> one value per program, optional
        See :func:`summary_table`.
    extra : mapping of file name -> DataFrame, optional
        More tables of the command (``tune``: ``trials.csv``).

    Returns
    -------
    list of Path
    """
    tables = {SUMMARY_CSV: summary_table(results, keys=keys), ROUNDS_CSV: rounds_table(results, keys=keys),
              **(extra or {})}
    return write_tables(directory, tables)
