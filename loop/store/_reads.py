"""Vectorised reads: the long annotations frame, straight from the driver into columns."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from types import MappingProxyType
from typing import Final

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .._validation import fail
from ..columns import ANNOTATOR, COST, ITEM, LABEL, SECONDS
from . import _schema as S
from ._columns import (ANNOTATION_ID, CREATED_AT, EVIDENCE, FLAGS, GUIDELINE_VERSION, IDEMPOTENCY_KEY, RATIONALE,
                       SOURCE, SUGGESTION, SUGGESTION_CONFIDENCE, TASK_ID)
from ._convert import lookup_fast, past_the_stream_index
from ._records import Stream

BASE_COLUMNS: Final = (ITEM, ANNOTATOR, LABEL, SECONDS, COST, CREATED_AT, GUIDELINE_VERSION, TASK_ID, ANNOTATION_ID)
EXTRA_COLUMNS: Final = (RATIONALE, EVIDENCE, SUGGESTION, SUGGESTION_CONFIDENCE, IDEMPOTENCY_KEY, FLAGS, SOURCE)
_SQL_OF: Final = MappingProxyType({RATIONALE: "rationale", EVIDENCE: "evidence", SUGGESTION: "suggestion",
                                   SUGGESTION_CONFIDENCE: "suggestion_confidence",
                                   IDEMPOTENCY_KEY: "idempotency_key", FLAGS: "flags", SOURCE: "source"})


def _raw_rows(conn: Connection, sql: str, params: tuple) -> list[tuple]:
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute(sql, params)
        return cursor.fetchall()
    finally:
        cursor.close()


def _take(ids: np.ndarray, keys: list, values: list, *, missing=None) -> np.ndarray:
    """``values[keys.index(id)]`` for every id, vectorised."""
    lookup = np.asarray(list(values) + [missing], dtype=object)
    pos = pd.Index(keys).get_indexer(ids)
    pos[pos < 0] = len(values)
    return lookup[pos]


def annotations_frame(conn: Connection, stream: Stream, *, extras: tuple[str, ...] = (),
                      since: datetime | None = None, until: datetime | None = None,
                      after: int | None = None) -> pd.DataFrame:
    unknown = [e for e in extras if e not in EXTRA_COLUMNS]
    if unknown:
        raise fail("extras", f"a subset of {list(EXTRA_COLUMNS)}", f"{unknown}")
    sqlite = conn.dialect.name == "sqlite"
    mark = "?" if sqlite else "%s"
    stamp = "created_at" if sqlite else "extract(epoch from created_at)::float8"
    cols = ["id", "item_id", "annotator_id", "label", "seconds", stamp, "guideline_version_id", "task_id",
            *(_SQL_OF[e] + ("::text" if e in (EVIDENCE, FLAGS) and not sqlite else "") for e in extras)]
    # The rows after a mark by the primary key's range, not by walking the stream's index
    # (in_stream_by_id says why).
    by_id = "+" if past_the_stream_index(conn, after) else ""
    sql = f"SELECT {', '.join(cols)} FROM annotations WHERE {by_id}stream_id = {mark}"
    params: list = [stream.id]
    for bound, op in ((since, ">="), (until, "<")):
        if bound is not None:
            sql += f" AND created_at {op} {mark}"
            params.append(bound.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else bound)
    if after is not None:
        sql += f" AND id > {mark}"
        params.append(after)
    names = ["id", "item", "annotator", "label", "seconds", "stamp", "gv", "task", *extras]
    if sqlite:
        rows = _raw_rows(conn, sql + " ORDER BY id", tuple(params))
        raw = pd.DataFrame.from_records(rows, columns=names, nrows=len(rows))
    else:
        raw = _copy_out(conn, sql + " ORDER BY id", tuple(params), names)
    return _shape(conn, stream, raw, extras, sqlite, whole=since is None and until is None and after is None)


@contextmanager
def one_snapshot(conn: Connection) -> Iterator[tuple[int, int]]:
    """Run the reads of the block on one snapshot and yield its ``(oldest, next)``
    transaction ids: every transaction below ``oldest`` had ended (its rows are visible),
    every one from ``next`` on started later. On PostgreSQL a read-only REPEATABLE READ
    transaction and ``pg_snapshot_xmin``/``pg_snapshot_xmax`` (64-bit ids: comparisons never
    wrap around). SQLite has one writer at a time whose ids commit in order, so nothing is ever
    in flight for a reader: ``(0, 0)``."""
    if conn.dialect.name != "postgresql":
        yield 0, 0
        return
    conn = conn.execution_options(isolation_level="REPEATABLE READ")
    with conn.begin():
        oldest, next_ = conn.exec_driver_sql(
            "SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint "
            "FROM pg_current_snapshot() AS s").one()
        yield int(oldest), int(next_)


def _copy_out(conn: Connection, sql: str, params: tuple, names: list[str]) -> pd.DataFrame:
    """A PostgreSQL query's rows through ``COPY .. TO STDOUT`` (CSV), parsed by pandas in C:
    several times faster than building a Python tuple per row."""
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        with cursor.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", params) as copy:
            data = b"".join(bytes(block) for block in copy)
    finally:
        cursor.close()
    text_cols = {n: object for n in names if n in _SQL_OF}
    numeric = {"id": np.int64, "item": np.int64, "annotator": np.int64, "label": np.int64, "seconds": np.float64,
               "stamp": np.float64, "gv": np.float64, "task": np.float64}
    return pd.read_csv(io.BytesIO(data), header=None, names=names, dtype={**numeric, **text_cols},
                       keep_default_na=False, na_values={n: [""] for n in names})


def _shape(conn: Connection, stream: Stream, raw: pd.DataFrame, extras: tuple[str, ...], sqlite: bool, *,
           whole: bool = True) -> pd.DataFrame:
    if whole:
        items = _raw_rows(conn, "SELECT id, external_id FROM items WHERE stream_id = " + ("?" if sqlite else "%s"),
                          (stream.id,))
    else:
        # A slice of the history names few of the stream's items: look up only those, so that
        # reading what is new costs what is new, not the size of the stream.
        items = lookup_fast(conn, "items", "id", raw["item"].unique().tolist(), ("id", "external_id"))
    people = conn.execute(sa.select(S.annotators.c.id, S.annotators.c.name, S.annotators.c.hourly_rate)).all()
    versions = conn.execute(sa.select(S.guideline_versions.c.id, S.guideline_versions.c.version)
                            .where(S.guideline_versions.c.stream_id == stream.id)).all()
    item_keys, item_ext = (list(x) for x in zip(*items)) if items else ([], [])
    annotator_ids = raw["annotator"].to_numpy(dtype=np.int64)
    seconds = raw["seconds"].to_numpy(dtype=float)
    rate = _take(annotator_ids, [p[0] for p in people], [p[2] for p in people], missing=np.nan).astype(float)
    frame = pd.DataFrame({
        ITEM: pd.Series(_take(raw["item"].to_numpy(dtype=np.int64), item_keys, item_ext), dtype=str),
        ANNOTATOR: pd.Series(_take(annotator_ids, [p[0] for p in people], [p[1] for p in people]), dtype=str),
        LABEL: raw["label"].to_numpy(dtype=np.int64),
        SECONDS: seconds,
        COST: seconds * rate / 3600.0,
        CREATED_AT: _stamps(raw["stamp"], sqlite),
        GUIDELINE_VERSION: pd.array(_take(raw["gv"].to_numpy(dtype=float), [v[0] for v in versions],
                                          [v[1] for v in versions]), dtype="Int64"),
        TASK_ID: pd.array(raw["task"].to_numpy(dtype=object), dtype="Int64") if raw["task"].dtype == object
        else pd.array(raw["task"].to_numpy(), dtype="Int64"),
        ANNOTATION_ID: raw["id"].to_numpy(dtype=np.int64),
    })
    for extra in extras:
        frame[extra] = _extra(raw[extra], extra)
    return frame


def _stamps(values: pd.Series, sqlite: bool) -> pd.Series:
    if sqlite:
        return pd.to_datetime(values, format="ISO8601", utc=True) if len(values) else \
            pd.Series(pd.DatetimeIndex([], tz="UTC"))
    micros = np.round(values.to_numpy(dtype=float) * 1e6).astype(np.int64)
    return pd.Series(pd.to_datetime(micros, unit="us", utc=True))


def _extra(values: pd.Series, name: str) -> pd.Series:
    if name == FLAGS:
        return pd.Series([json.loads(v) if isinstance(v, str) else [] for v in values], dtype=object)
    if name == EVIDENCE:
        return pd.Series([json.loads(v) if isinstance(v, str) else None for v in values], dtype=object)
    if name == SUGGESTION:
        return pd.Series(pd.array(values.to_numpy(dtype=object), dtype="Int64"))
    if name == SUGGESTION_CONFIDENCE:
        return values.astype(float)
    return pd.Series([v if isinstance(v, str) else None for v in values], dtype=object)
