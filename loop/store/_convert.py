"""Small conversions shared by the store's writers and readers: input frames, timestamps,
JSON, content hashes, lookups of many ids in one query."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Final

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from .._validation import _describe, _text_problem, check_text_column, fail
from . import _schema as S

LOOKUP_CHUNK: Final = 5_000
SQLITE_STAMP: Final = "%Y-%m-%d %H:%M:%S.%f"
# The largest values PostgreSQL's INTEGER and BIGINT columns hold (SQLite's INTEGER holds the
# second): larger ones would fail in the driver or the database, differently on each.
MAX_INTEGER: Final = 2**31 - 1
MAX_BIGINT: Final = 2**63 - 1
MAX_YEAR: Final = 9999  # datetime's last year


def as_frame(records: Any, name: str) -> pd.DataFrame:
    """A DataFrame from a frame or an iterable of mappings (one per row)."""
    if isinstance(records, pd.DataFrame):
        return records.reset_index(drop=True)
    if isinstance(records, Mapping) or isinstance(records, (str, bytes)) or not isinstance(records, Iterable):
        raise fail(name, "a DataFrame or an iterable of row mappings", f"a {type(records).__name__}")
    rows = list(records)
    if not all(isinstance(r, Mapping) for r in rows):
        raise fail(name, "a DataFrame or an iterable of row mappings", "an iterable holding non-mappings")
    try:
        return pd.DataFrame.from_records(rows)
    except UnicodeEncodeError:
        # pandas' string dtype cannot hold a lone surrogate: keep the values as objects, so
        # the field's own check names it.
        return pd.DataFrame(rows, dtype=object)


def check_columns(frame: pd.DataFrame, name: str, *, required: Sequence[str],
                  optional: Sequence[str]) -> pd.DataFrame:
    """Refuse missing required columns, unknown columns, missing values in required ones and
    an empty frame."""
    missing = [c for c in required if c not in frame.columns]
    unknown = [c for c in frame.columns if c not in required and c not in optional]
    if missing or unknown:
        got = f"columns {list(frame.columns)}" + (f" (missing {missing})" if missing else "") + \
              (f" (unknown {unknown})" if unknown else "")
        raise fail(name, f"a frame with columns {list(required)} and optionally {list(optional)}", got)
    if frame.empty:
        raise fail(name, "at least one row", "an empty frame")
    for col in required:
        nulls = frame[col].isna()
        if nulls.any():
            raise fail(col, "a value on every row", f"{int(nulls.sum())} missing values (first at row {int(np.argmax(nulls.to_numpy()))})")
    return frame


def external_ids(values: pd.Series, name: str) -> pd.Series:
    """Item and annotator ids as stored: text of at most 200 characters (ints become their
    decimal strings); anything else (dicts, floats, booleans, NUL characters...) raises
    SchemaError naming ``name``."""
    return check_text_column(values, name, max_chars=S.MAX_NAME_CHARS, ints=True)


def utc_stamps(values: Any, name: str) -> pd.Series:
    """Timestamps as a tz-aware UTC series; naive values are taken as UTC."""
    try:
        stamps = pd.to_datetime(pd.Series(values), utc=True, format="ISO8601") \
            if not pd.api.types.is_datetime64_any_dtype(values) else pd.Series(values)
    except (TypeError, ValueError) as exc:
        raise fail(name, "timestamps", f"{_describe(values)} ({exc})") from None
    if stamps.dt.tz is None:
        stamps = stamps.dt.tz_localize("UTC")
    stamps = stamps.dt.tz_convert("UTC")
    late = stamps.dt.year > MAX_YEAR  # "9999-12-31T23:59-14:00" is in year 10000 in UTC: no datetime holds it
    if late.any():
        raise fail(name, f"timestamps up to the end of year {MAX_YEAR} in UTC",
                   f"{stamps[late].iloc[0]} (row {int(np.argmax(late.to_numpy()))})")
    return stamps


def to_utc(value: datetime | str | pd.Timestamp, name: str) -> datetime:
    """One timestamp as a tz-aware UTC datetime."""
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise fail(name, "a timestamp", _describe(value)) from None
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    if stamp is pd.NaT or stamp.year > MAX_YEAR:
        raise fail(name, f"a timestamp up to the end of year {MAX_YEAR} in UTC", _describe(value))
    return stamp.to_pydatetime()


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def stamp_params(stamps: pd.Series, dialect: str) -> list:
    """Timestamps as the raw driver wants them: naive UTC text on SQLite (SQLAlchemy's
    format), aware datetimes on PostgreSQL."""
    codes, uniques = pd.factorize(stamps)  # a batch usually shares one timestamp: format each once
    if dialect == "sqlite":
        formatted = np.asarray(uniques.tz_convert("UTC").strftime(SQLITE_STAMP), dtype=object)
    else:
        # The store keeps microseconds (SQLite's format above cuts the rest too): cut here, as
        # to_pydatetime would, without its warning for every batch of the simulated clock's stamps.
        formatted = np.asarray([t.to_pydatetime() for t in uniques.floor("us")], dtype=object)
    return formatted[codes].tolist()


def json_text(value: Any, name: str) -> str | None:
    """Canonical JSON text (sorted keys) for a JSON-able value; None stays None."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    try:
        dumped = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_numpy_json)
    except (TypeError, ValueError) as exc:
        raise fail(name, "JSON-serialisable values (dicts, lists, strings, numbers)", f"{_describe(value)} ({exc})") from None
    # ASCII text in which a NUL or a surrogate can only appear escaped: look closer only then
    # (PostgreSQL's JSONB refuses \u0000 and lone surrogates, SQLite would store them).
    if "\\u0000" in dumped or "\\ud" in dumped:
        problem = _json_text_problem(value)
        if problem is not None:
            raise fail(name, "JSON values whose strings hold no NUL character or lone surrogate", problem)
    return dumped


def _json_text_problem(value: Any) -> str | None:
    """The first unstorable string (key or value) inside a JSON-able value, described."""
    if isinstance(value, str):
        problem = _text_problem(value, max_chars=None, empty=True)
        return None if problem is None else f"{_describe(value)} ({problem})"
    if isinstance(value, Mapping):
        return next((p for k, v in value.items() for p in (_json_text_problem(k), _json_text_problem(v))
                     if p is not None), None)
    if isinstance(value, (list, tuple, np.ndarray)):
        return next((p for v in value if (p := _json_text_problem(v)) is not None), None)
    return None


def _numpy_json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def text(values: pd.Series) -> pd.Series:
    """Values as text, missing ones as ``"-"`` (so keys and hashes never hold NaN)."""
    return values.astype(str).fillna("-")


def missing_ints(n: int) -> pd.Series:
    """``n`` missing values of the nullable Int64 dtype."""
    return pd.Series(pd.arrays.IntegerArray(np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool)))


_NULL_TEXT: Final = np.array(["\x00"], dtype=object)


def _column_hash(values: pd.Series) -> np.ndarray:
    # One representation per value whatever the input dtype, so a retry hashes the same:
    # integers (nullable or not) as int64 with a sentinel, floats as float64, the rest as text.
    kind = values.dtype.kind
    if kind in "iub" or str(values.dtype) in ("Int64", "Int32", "boolean"):
        return pd.util.hash_array(values.astype("Int64").fillna(-(2 ** 62)).to_numpy(dtype=np.int64))
    if kind == "f":
        return pd.util.hash_array(values.to_numpy(dtype=np.float64, na_value=-np.inf))
    missing = values.isna().to_numpy()
    if missing.all():
        return np.repeat(pd.util.hash_array(_NULL_TEXT), len(values))
    return pd.util.hash_array(np.where(missing, _NULL_TEXT[0], values.astype(str).to_numpy(dtype=object)))


def content_hash(frame: pd.DataFrame) -> np.ndarray:
    """A 64-bit hash per row of ``frame`` (stable across processes, runs and batch
    compositions), as int64."""
    combined = np.full(len(frame), 0x345678, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for col in frame.columns:
            combined = (combined ^ _column_hash(frame[col])) * np.uint64(1_000_003)
    return combined.view(np.int64)


def content_hash_row(values: Sequence[tuple[str, Any]]) -> int:
    """:func:`content_hash` of a one-row frame, from its cells without the frame: each cell as
    ``(kind, value)`` in column order, ``kind`` the column's: ``"int"`` (None missing),
    ``"float"`` (None or NaN missing) or ``"text"`` (None missing; anything else as ``str``).
    The same representation as :func:`_column_hash`, so the same hash to the bit.

    Examples
    --------
    >>> frame = pd.DataFrame({"a": [3], "b": [None], "c": [0.5]}).astype({"b": object})
    >>> content_hash_row([("int", 3), ("text", None), ("float", 0.5)]) == int(content_hash(frame)[0])
    True
    """
    values = list(values)
    ints: list[int] = []
    floats: list[float] = []
    texts: list[Any] = []
    for kind, value in values:
        if kind == "int":
            ints.append(-(2 ** 62) if value is None else value)
        elif kind == "float":
            floats.append(-np.inf if value is None or np.isnan(value) else value)
        elif kind == "text":
            texts.append(_NULL_TEXT[0] if value is None else str(value))
        else:
            raise ValueError(f"The 'kind' of a cell must be one of ['float', 'int', 'text']. Got {kind!r} instead.")
    # hash_array hashes each element on its own: one call per kind (not per cell), then the
    # cells' hashes combined in column order as content_hash does.
    hashed = {"int": iter(pd.util.hash_array(np.array(ints, dtype=np.int64))),
              "float": iter(pd.util.hash_array(np.array(floats, dtype=np.float64))),
              "text": iter(pd.util.hash_array(np.array(texts, dtype=object)))}
    combined = np.full(1, 0x345678, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for kind, _ in values:
            combined = (combined ^ next(hashed[kind])) * np.uint64(1_000_003)
    return int(combined.view(np.int64)[0])


def in_stream_by_id(conn: Connection, column: sa.Column, stream_id: int, after: int | None) -> Any:
    """``column == stream_id`` for a query whose rows are also bounded to ids above ``after``
    (the rows stored after a mark): on SQLite, when there is such a mark, as an expression the
    stream's index cannot serve.

    SQLite has no statistics unless ANALYZE ran, so its planner prefers an index on the equality
    over the primary key's range: it then walks every row of the stream (its whole history) to
    keep the few new ones. ``+0`` leaves the rowid range as the only way in. Without a mark
    (``after`` None or 0) the range is every stream's rows and the index is the better way.
    PostgreSQL keeps the plain comparison: it plans from statistics where autovacuum runs (on a
    server without them, these reads still walk the stream's index; the keyed lookups do not,
    :func:`lookup_sql`)."""
    if past_the_stream_index(conn, after):
        return (column + 0) == stream_id
    return column == stream_id


def past_the_stream_index(conn: Connection, after: int | None) -> bool:
    """Whether a query of the rows after ``after`` must keep its stream's equality away from the
    stream's index (:func:`in_stream_by_id` says why); raw SQL writes it ``+stream_id``."""
    return conn.dialect.name == "sqlite" and bool(after)


def in_stream_by_key(conn: Connection, column: sa.Column, stream_id: int) -> Any:
    """``column == stream_id`` beside a lookup by primary key (``id IN (...)``): on SQLite, as
    an expression the stream's index cannot serve.

    Without statistics SQLite's planner takes an index led by the stream over a list of 20 ids
    or more (it guesses an equality keeps ~10 rows), then walks every row of the stream: each
    batch of annotations read every task of the stream's history to check its task ids."""
    return in_stream_by_id(conn, column, stream_id, after=1)


def lookup_fast(conn: Connection, table: str, key: str, values: Sequence[Any], columns: Sequence[str],
                where: str = "", params: Sequence[Any] = (), select_params: Sequence[Any] = ()) -> list[tuple]:
    """Like :func:`lookup` for many values at once: the values travel as one parameter (a
    JSON array on SQLite, an array on PostgreSQL) instead of one placeholder each.
    ``where`` is extra SQL using the driver's placeholders (``?``/``%s``) with ``params``;
    ``select_params`` fill placeholders in ``columns``."""
    values = list(dict.fromkeys(values))
    if not values:
        return []
    sqlite = conn.dialect.name == "sqlite"
    sql = lookup_sql(conn, table, key, columns, where)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute(sql, (*select_params, json.dumps(values) if sqlite else values, *params))
        return [tuple(r) for r in cursor.fetchall()]
    finally:
        cursor.close()


def lookup_sql(conn: Connection, table: str, key: str, columns: Sequence[str], where: str = "") -> str:
    """The query of :func:`lookup_fast`: its values, one parameter, are walked and the table's
    index is probed for each, on both databases, whatever statistics the planner has."""
    selected = ", ".join(f"{table}.{c}" if c.isidentifier() else c for c in columns)
    extra = f" AND {where}" if where else ""
    if conn.dialect.name == "sqlite":
        # CROSS JOIN pins the join order: walk the values, probe the table's index for each.
        return f"SELECT {selected} FROM json_each(?) AS j CROSS JOIN {table} WHERE {table}.{key} = j.value{extra}"
    # The same on PostgreSQL: a LATERAL probe per value (OFFSET 0 keeps the planner from
    # flattening it into a join). Without statistics (autovacuum off, or a table that grew
    # since its last ANALYZE) "key = ANY(...) AND stream_id = ..." was planned as a scan of
    # the stream's every row, filtered: a long program's impact reads grew 0.4 -> 2.8 s a round.
    element = S.metadata.tables[table].c[key].type.compile(dialect=conn.dialect)  # unnest needs the type
    return (f"SELECT {selected} FROM unnest(%s::{element}[]) AS j(value) CROSS JOIN LATERAL "
            f"(SELECT * FROM {table} WHERE {table}.{key} = j.value{extra} OFFSET 0) AS {table}")


def int_rows(rows: Sequence[Sequence[Any]], width: int) -> np.ndarray:
    """Rows of ``width`` integers (no NULLs) as an ``(n, width)`` int64 array.

    Through one flat iterator: ``np.array`` of SQLAlchemy Rows probes each Row for the array
    protocols, a failing key lookup apiece (~20 ms for 200 rows of 3 columns).

    Examples
    --------
    >>> int_rows([(1, 2), (3, 4)], 2).tolist()
    [[1, 2], [3, 4]]
    >>> int_rows([], 3).shape
    (0, 3)
    """
    flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=len(rows) * width)
    return flat.reshape(-1, width)


def nullable(values: pd.Series) -> list:
    """Values for a driver: NaN/NA become None, numpy scalars become Python ones."""
    missing = values.isna()
    if not missing.any():
        return values.tolist()
    if missing.all():
        return [None] * len(values)
    return values.astype(object).where(~missing, None).tolist()


def lookup(conn: Connection, column: sa.Column, values: Iterable[Any], *columns: sa.Column,
           where: Any = None) -> list[tuple]:
    """Rows of ``columns`` (of ``column``'s table) whose ``column`` is in ``values``: on SQLite
    in chunks, on PostgreSQL one probe of the index per value (:func:`lookup_sql` says why)."""
    values = list(dict.fromkeys(values))
    if conn.dialect.name == "postgresql":
        if not values:
            return []
        keys = sa.func.unnest(sa.bindparam("lookup_values", values, type_=postgresql.ARRAY(column.type)))
        keys = keys.table_valued("value").render_derived(name="j")
        probe = sa.select(*columns).where(column == keys.c.value)
        probe = (probe if where is None else probe.where(where)).offset(0).lateral("probe")  # OFFSET: not flattened
        return [tuple(r) for r in conn.execute(sa.select(*probe.c).select_from(keys).join(probe, sa.true()))]
    rows: list[tuple] = []
    for start in range(0, len(values), LOOKUP_CHUNK):
        query = sa.select(*columns).where(column.in_(values[start:start + LOOKUP_CHUNK]))
        if where is not None:
            query = query.where(where)
        rows.extend(tuple(r) for r in conn.execute(query))
    return rows
