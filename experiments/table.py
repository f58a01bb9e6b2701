"""A team's own items: read a table (CSV or Parquet) and its annotations, and check them.

``load_table(table, annotations=None) -> Table`` reads the file a ``program.dataset`` mapping
names (:class:`experiments.config.TableDataset`) and, optionally, the team's answers
(``program.annotations``: a long frame ``item_id, annotator_id, label[, seconds]``). Every
check runs before any work; the first failure stops with a :class:`TableError`, one line
naming the file, the column and the first bad row, e.g.::

    items.csv: column 'label', row 7 (item_id 'a-0007'): expected one of the classes ['cat', 'dog'], got 'fox'

Rows count from 1, the first row after the header (a spreadsheet's row 2).

What is checked:

- the file exists and reads as CSV or Parquet;
- the id, label, gold and feature columns exist;
- ids are present and unique;
- labels and gold are among ``classes`` (default: the sorted labels and gold seen, numerically
  sorted when they are all numbers); an empty label means *not labelled yet*, an empty gold
  *not known*;
- features are numbers, none missing or infinite (default: every other numeric column);
- annotations have the three columns, name only items of the table, answer with the classes,
  and their ``seconds``, when given, are numbers >= 0.

Class names are the file's text; everything downstream uses class codes, ``classes[code]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from loop.columns import ANNOTATOR, ITEM, LABEL, SECONDS
from loop.exceptions import SchemaError

from .config import ConfigError, ProgramConfig, TableDataset

__all__ = ["Table", "TableError", "load_table", "simulation_table"]

_MISSING = -1  # the class code of "not labelled yet" / "gold not known"


class TableError(SchemaError):
    """A team's table or annotations file is wrong; the message names the file, column and first bad row."""


@dataclass(frozen=True, eq=False)
class Table:
    """A team's items, checked.

    Attributes
    ----------
    name : str
        The file's stem (``TableDataset.value``).
    classes : tuple of str
        Class names; codes index them.
    features : DataFrame of shape (n, d)
        float64, indexed by item id (str), in the file's order.
    labels : Series of shape (n,)
        The current label's class code by item id; -1 where not labelled yet.
    gold : Series of shape (n,)
        The gold class code by item id; -1 where unknown (all -1 without a gold column).
    annotations : DataFrame or None
        ``item_id, annotator_id, label`` (codes), plus ``seconds`` when the file has them.
    """

    name: str
    classes: tuple[str, ...]
    features: pd.DataFrame
    labels: pd.Series
    gold: pd.Series
    annotations: pd.DataFrame | None = None

    @property
    def labelled(self) -> pd.Series:
        """Current labels of the labelled items."""
        return self.labels[self.labels >= 0]

    @property
    def known_gold(self) -> pd.Series:
        """Gold labels of the items whose gold is known."""
        return self.gold[self.gold >= 0]


def load_table(table: TableDataset, *, annotations: str | None = None) -> Table:
    """Read and check a team's table and, optionally, its annotations.

    Parameters
    ----------
    table : TableDataset
        The ``program.dataset`` mapping.
    annotations : str, optional
        Path of the long answers frame (CSV or Parquet): ``item_id, annotator_id, label`` and
        optionally ``seconds``.

    Returns
    -------
    Table

    Raises
    ------
    TableError
        At the first bad file, column or row (one line naming them).

    Examples
    --------
    >>> from experiments.config import TableDataset
    >>> t = load_table(TableDataset(path="items.csv", gold="gold"))  # doctest: +SKIP
    >>> t.classes, t.features.shape  # doctest: +SKIP
    (('benign', 'malignant'), (569, 30))
    """
    path = table.path
    name = Path(path).name
    header = _read(path, header_only=True)
    named = [table.id, table.label] + ([table.gold] if table.gold else [])
    for column in named + list(table.features or ()):
        if column not in header.columns:
            raise TableError(f"{name}: column {column!r} is missing (the file has {_shown(header.columns)})")
    frame = _read(path, text_columns=named)
    ids = _ids(frame[table.id], name, table.id)
    label_text = _text(frame[table.label])
    gold_text = _text(frame[table.gold]) if table.gold else pd.Series([None] * len(frame), dtype=object)
    classes = table.classes if table.classes is not None else _classes_seen(label_text, gold_text, name, table)
    labels = _codes(label_text, classes, name, table.label, ids)
    gold = _codes(gold_text, classes, name, table.gold, ids) if table.gold else np.full(len(frame), _MISSING)
    features = _features(frame, table, name, ids)
    answers = None if annotations is None else _annotations(annotations, classes, pd.Index(ids))
    index = pd.Index(ids, name=ITEM)
    return Table(name=table.value, classes=tuple(classes), features=features.set_axis(index),
                 labels=pd.Series(labels, index=index, name=LABEL),
                 gold=pd.Series(gold, index=index, name=LABEL), annotations=answers)


def simulation_table(cfg: ProgramConfig) -> Table:
    """The table of ``cfg``, checked for what a simulation needs: items with gold.

    A simulation (``run``, ``compare``, ``tune``) plays its rounds on the items whose gold is
    known: gold is the truth it counts errors against.

    Raises
    ------
    TableError
        A bad file (see :func:`load_table`).
    ConfigError
        The table has no gold column, no item with gold, or too few of them for the program's
        holdout, calibration slice and stream.
    """
    spec = cfg.table
    if spec is None:
        raise ConfigError(f"program.dataset: expected a table, got {cfg.dataset.value!r}")
    name = Path(spec.path).name
    if spec.gold is None:
        raise ConfigError(f"program.dataset.gold: a simulation needs gold (the known-true label of some items "
                          f"of {name}, its truth to count errors against); name the gold column")
    table = load_table(spec, annotations=cfg.annotations)
    if table.known_gold.empty:
        raise ConfigError(f"program.dataset.gold: a simulation needs gold (the known-true label of some items, "
                          f"its truth to count errors against); column {spec.gold!r} of {name} is empty")
    _check_size(cfg, name, table.known_gold.size)
    return table


def _check_size(cfg: ProgramConfig, name: str, available: int) -> None:
    """Too few gold items for the holdout, calibration and stream stop with a line saying what would fit."""
    stream = (cfg.rounds + 1) * cfg.items_per_round
    need = cfg.holdout_items + cfg.calibration_items + stream
    if need <= available:
        return
    fits = (available - cfg.holdout_items - cfg.calibration_items) // (cfg.rounds + 1)
    if fits >= 10:
        hint = f"items_per_round: {fits} would fit"
    elif (available - 40) // 2 >= 10:
        hint = (f"holdout_items: 20, calibration_items: 20, rounds: 1, items_per_round: {(available - 40) // 2} "
                "would fit")
    else:
        hint = "the smallest program needs 80 (20 holdout, 20 calibration, 2 rounds of 10)"
    raise ConfigError(f"program.items_per_round: {name} has {available} items with gold; holdout_items + "
                      f"calibration_items + (rounds + 1) * items_per_round = {cfg.holdout_items} + "
                      f"{cfg.calibration_items} + ({cfg.rounds} + 1) * {cfg.items_per_round} = {need} do not fit; "
                      f"{hint}")


# --- reading ------------------------------------------------------------------------------------


def _read(path: str, *, header_only: bool = False, text_columns: list[str] = ()) -> pd.DataFrame:
    """The file as a frame; ``text_columns`` keep their text (ids like ``007`` stay ``007``)."""
    name = Path(path).name
    if not Path(path).is_file():
        raise TableError(f"{name}: no such file ({path})")
    parquet = str(path).lower().endswith((".parquet", ".pq"))
    try:
        if parquet:
            if header_only:
                import pyarrow.parquet as pq

                return pd.DataFrame(columns=pq.read_schema(path).names)
            return pd.read_parquet(path)
        if header_only:
            return pd.read_csv(path, nrows=0)
        return pd.read_csv(path, dtype={c: str for c in text_columns})
    except Exception as exc:  # noqa: BLE001 - any reader failure is the file's fault, said in one line
        kind = "Parquet" if parquet else "CSV"
        raise TableError(f"{name}: cannot be read as {kind} ({' '.join(str(exc).split())[:200]})") from None


def _shown(columns: Any) -> str:
    names = [str(c) for c in columns]
    return str(names) if len(names) <= 12 else str(names[:12])[:-1] + ", ...]"


def _text(values: pd.Series) -> pd.Series:
    """Cell text, None where empty; whole floats (a Parquet int column with gaps) without ``.0``."""
    def one(v: Any) -> str | None:
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            return None
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return str(int(v))
        text = str(v).strip()
        return text or None

    return pd.Series([one(v) for v in values], index=values.index, dtype=object)


def _where(row: int, ids: Any = None) -> str:
    """``row 7 (item_id 'a-7')``: 1-based, the first row after the header."""
    if ids is None:
        return f"row {row + 1}"
    return f"row {row + 1} ({ITEM} {str(ids[row])!r})"


def _ids(values: pd.Series, name: str, column: str) -> np.ndarray:
    text = _text(values)
    empty = np.flatnonzero(text.isna().to_numpy())
    if empty.size:
        raise TableError(f"{name}: column {column!r}, {_where(int(empty[0]))}: expected an id, got an empty cell")
    ids = text.to_numpy(dtype=object)
    duplicated = np.flatnonzero(pd.Series(ids).duplicated().to_numpy())
    if duplicated.size:
        row = int(duplicated[0])
        first = int(np.flatnonzero(ids == ids[row])[0])
        raise TableError(f"{name}: column {column!r}, {_where(row)}: duplicate id {ids[row]!r} "
                         f"(first at row {first + 1}); ids must be unique")
    return ids


def _classes_seen(labels: pd.Series, gold: pd.Series, name: str, table: TableDataset) -> tuple[str, ...]:
    seen = sorted(set(labels.dropna()) | set(gold.dropna()))
    try:
        seen = sorted(seen, key=float)  # 2 before 10 when the classes are numbers
    except ValueError:
        pass
    if len(seen) < 2:
        raise TableError(f"{name}: column {table.label!r}: expected at least 2 classes among the labels"
                         f"{' and gold' if table.gold else ''}, got {seen}")
    return tuple(seen)


def _codes(text: pd.Series, classes: tuple[str, ...], name: str, column: str, ids: np.ndarray) -> np.ndarray:
    code = {c: i for i, c in enumerate(classes)}
    values = text.to_numpy(dtype=object)
    out = np.full(len(values), _MISSING, dtype=np.int64)
    for row, value in enumerate(values):
        if value is None:
            continue
        if value not in code:
            raise TableError(f"{name}: column {column!r}, {_where(row, ids)}: expected one of the classes "
                             f"{list(classes)}, got {value!r}")
        out[row] = code[value]
    return out


def _features(frame: pd.DataFrame, table: TableDataset, name: str, ids: np.ndarray) -> pd.DataFrame:
    named = {table.id, table.label, table.gold}
    if table.features is not None:
        columns = list(table.features)
    else:
        columns = [c for c in frame.columns if c not in named and _numeric(frame[c])]
        if not columns:
            raise TableError(f"{name}: no numeric feature columns besides {table.id!r}, {table.label!r}"
                             f"{', ' + repr(table.gold) if table.gold else ''} (the file has {_shown(frame.columns)}); "
                             "name them in program.dataset.features")
    out = {}
    for column in columns:
        raw = frame[column]
        numbers = pd.to_numeric(raw, errors="coerce").astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(numbers.to_numpy()))
        if bad.size:
            row = int(bad[0])
            got = raw.iloc[row]
            what = "an empty cell" if got is None or (isinstance(got, float) and np.isnan(got)) else repr(got)
            raise TableError(f"{name}: column {column!r}, {_where(row, ids)}: expected a finite number, got {what}")
        out[column] = numbers.to_numpy()
    return pd.DataFrame(out)


def _numeric(values: pd.Series) -> bool:
    """A feature column by default: numbers, or mostly numbers (so that a stray text cell in a
    numeric column is reported rather than the column silently dropped)."""
    if pd.api.types.is_bool_dtype(values):
        return False
    if pd.api.types.is_numeric_dtype(values):
        return True
    parsed = np.isfinite(pd.to_numeric(values, errors="coerce").astype(np.float64).to_numpy())
    return bool(parsed.any() and parsed.mean() >= 0.5)


def _annotations(path: str, classes: tuple[str, ...], items: pd.Index) -> pd.DataFrame:
    name = Path(path).name
    header = _read(path, header_only=True)
    for column in (ITEM, ANNOTATOR, LABEL):
        if column not in header.columns:
            raise TableError(f"{name}: column {column!r} is missing (the file has {_shown(header.columns)}; "
                             f"annotations are a long frame {ITEM}, {ANNOTATOR}, {LABEL}[, {SECONDS}])")
    frame = _read(path, text_columns=[ITEM, ANNOTATOR, LABEL])
    item = _text(frame[ITEM])
    rows = item.to_numpy(dtype=object)
    for column, values in ((ITEM, item), (ANNOTATOR, _text(frame[ANNOTATOR])), (LABEL, _text(frame[LABEL]))):
        empty = np.flatnonzero(values.isna().to_numpy())
        if empty.size:
            raise TableError(f"{name}: column {column!r}, {_where(int(empty[0]))}: expected a value, got an empty cell")
    unknown = np.flatnonzero(~item.isin(items).to_numpy())
    if unknown.size:
        row = int(unknown[0])
        raise TableError(f"{name}: column {ITEM!r}, {_where(row)}: item {rows[row]!r} is not in the table")
    out = pd.DataFrame({ITEM: rows, ANNOTATOR: _text(frame[ANNOTATOR]).to_numpy(dtype=object),
                        LABEL: _codes(_text(frame[LABEL]), classes, name, LABEL, rows)})
    if SECONDS in frame.columns:
        seconds = pd.to_numeric(frame[SECONDS], errors="coerce").astype(np.float64).to_numpy()
        bad = np.flatnonzero(~(np.isfinite(seconds) & (seconds >= 0)))
        if bad.size:
            row = int(bad[0])
            raise TableError(f"{name}: column {SECONDS!r}, {_where(row, rows)}: expected a number >= 0, "
                             f"got {frame[SECONDS].iloc[row]!r}")
        out[SECONDS] = seconds
    twice = np.flatnonzero(out.duplicated([ITEM, ANNOTATOR]).to_numpy())
    if twice.size:
        row = int(twice[0])
        raise TableError(f"{name}: column {ANNOTATOR!r}, {_where(row, rows)}: annotator "
                         f"{out[ANNOTATOR].iloc[row]!r} answers this item twice")
    return out
