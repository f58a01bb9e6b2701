"""Batched, idempotent annotation writes.

A batch is validated as a whole (one query per kind of reference), then written in one
transaction with one event per new annotation: on SQLite an ``executemany`` of
``INSERT .. ON CONFLICT DO NOTHING`` followed by one ``INSERT .. SELECT`` of the events; on
PostgreSQL one statement that unnests column arrays, inserts, and inserts the events from
``RETURNING``. Rows are written in idempotency-key order so concurrent writers of
overlapping batches lock keys in the same order and cannot deadlock.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd
from sqlalchemy.engine import Connection

from .._validation import _describe, check_int_column, check_text, check_text_column, fail
from ..columns import ANNOTATOR, ITEM, LABEL, SECONDS
from ..exceptions import ConflictError
from . import _schema as S
from ._columns import (CREATED_AT, EVIDENCE, FLAGS, GUIDELINE_VERSION, IDEMPOTENCY_KEY, RATIONALE, SOURCE,
                       SUGGESTION, SUGGESTION_CONFIDENCE, TASK_ID)
from ._convert import (MAX_BIGINT, MAX_INTEGER, as_frame, check_columns, content_hash, external_ids, in_stream_by_key,
                       json_text, lookup, lookup_fast, missing_ints, now_utc, nullable, stamp_params, text, utc_stamps)
from ._records import Stream
from ._writes import check_event_fields

REQUIRED: Final = (ITEM, ANNOTATOR, LABEL)
OPTIONAL: Final = (SECONDS, RATIONALE, EVIDENCE, SUGGESTION, SUGGESTION_CONFIDENCE, GUIDELINE_VERSION,
                   TASK_ID, CREATED_AT, IDEMPOTENCY_KEY, FLAGS, SOURCE)
# Flags an annotator may raise on an answer (stored as a JSON list).
ANNOTATION_FLAGS: Final = ("model_wrong", "guideline_unclear")
MAX_SOURCE_CHARS: Final = 50
# Stored columns, in the order of the row tuples.
STORED: Final = ("stream_id", "task_id", "item_id", "annotator_id", "label", "rationale", "evidence", "seconds",
                 "suggestion", "suggestion_confidence", "guideline_version_id", "created_at", "idempotency_key",
                 "content_hash", "flags", "source")
_HASHED: Final = ("item_id", "annotator_id", "label", "rationale", "evidence", "seconds", "suggestion",
                  "suggestion_confidence", "guideline_version_id", "task_id", "flags")
WRITE_CHUNK: Final = 10_000
# Item ids a store remembers per stream (external id -> id), about 100 bytes each.
ITEM_CACHE_LIMIT: Final = 1_000_000
EVENT_ACTION: Final = "annotation.created"


def prepare(conn: Connection, stream: Stream, records, name: str = "annotations", *,
            item_cache: dict[str, int] | None = None) -> pd.DataFrame:
    """Validate a batch and return it in stored form: one row per distinct idempotency key,
    internal ids, label codes, sorted by key. Raises SchemaError naming the bad field, or
    ConflictError when one key carries two different contents inside the batch."""
    frame = check_columns(as_frame(records, name), name, required=REQUIRED, optional=OPTIONAL)
    n = len(frame)
    out = pd.DataFrame(index=frame.index)
    out["stream_id"] = np.full(n, stream.id, dtype=np.int64)
    out["item_id"] = _item_ids(conn, stream, frame[ITEM], item_cache)
    out["annotator_id"] = _annotator_ids(conn, stream, frame[ANNOTATOR])
    out["label"] = label_codes(frame[LABEL], stream, LABEL)
    out["rationale"] = _rationales(frame.get(RATIONALE), n)
    out["evidence"] = pd.Series([json_text(v, EVIDENCE) for v in frame[EVIDENCE]], dtype=object) \
        if EVIDENCE in frame else pd.Series([None] * n, dtype=object)
    out["seconds"] = _reals(frame.get(SECONDS), n, SECONDS, low=0.0)
    out["suggestion"] = label_codes(frame[SUGGESTION], stream, SUGGESTION, nullable=True) \
        if SUGGESTION in frame else missing_ints(n)
    out["suggestion_confidence"] = _reals(frame.get(SUGGESTION_CONFIDENCE), n, SUGGESTION_CONFIDENCE,
                                          low=0.0, high=1.0)
    out["guideline_version_id"] = guideline_ids(conn, stream, frame.get(GUIDELINE_VERSION), n)
    out["flags"] = _flags(frame.get(FLAGS), n)
    out["source"] = _sources(frame.get(SOURCE), n)
    out["task_id"] = _task_ids(conn, stream, frame.get(TASK_ID), out["item_id"], n)
    out["created_at"] = utc_stamps(frame[CREATED_AT], CREATED_AT) if CREATED_AT in frame \
        else pd.Series(pd.DatetimeIndex([now_utc()]).repeat(n))
    out["idempotency_key"] = _keys(frame.get(IDEMPOTENCY_KEY), out)
    out["content_hash"] = content_hash(out[list(_HASHED)])
    return _dedupe(out)


def label_codes(values: pd.Series, stream: Stream, name: str, *, nullable: bool = False) -> pd.Series:
    """Class codes from codes or class names; refuses anything outside the stream's classes."""
    k = len(stream.classes)
    index = {c: i for i, c in enumerate(stream.classes)}
    missing = values.isna()
    if missing.any() and not nullable:
        raise fail(name, "a label on every row", f"{int(missing.sum())} missing labels")

    def code(v):
        if isinstance(v, (bool, np.bool_)):
            return -1
        if isinstance(v, (int, np.integer)) or (isinstance(v, (float, np.floating)) and float(v).is_integer()):
            return int(v) if 0 <= v < k else -1
        return index.get(v, -1)

    present = values[~missing]
    if present.dtype.kind in "iu":
        raw = present.to_numpy(dtype=np.int64)
        codes = np.where((raw >= 0) & (raw < k), raw, -1)
    elif present.dtype.kind == "f" and np.all(np.mod(present.to_numpy(), 1) == 0):
        raw = present.to_numpy(dtype=np.float64)
        codes = np.where((raw >= 0) & (raw < k), raw, -1).astype(np.int64)
    else:
        # Names (or a mix of names and codes): a hash lookup per distinct value.
        objects = present.to_numpy(dtype=object)
        try:
            distinct = pd.unique(objects)
        except TypeError:  # a dict, list or other unhashable value is no label
            row, odd = next((r, v) for r, v in zip(present.index, objects) if _unhashable(v))
            raise fail(name, f"class codes 0..{k - 1} or names in {list(stream.classes)} (stream {stream.name!r})",
                       f"{_describe(odd)} (a {type(odd).__name__}) on row {row}") from None
        mapping = {v: code(v) for v in distinct}
        codes = np.fromiter((mapping[v] for v in present.to_numpy(dtype=object)), dtype=np.int64, count=len(present))
    bad = codes < 0
    if bad.any():
        shown = list(dict.fromkeys(map(repr, present[bad].tolist())))[:5]
        raise fail(name, f"class codes 0..{k - 1} or names in {list(stream.classes)} (stream {stream.name!r})",
                   f"{', '.join(shown)} on {int(bad.sum())} rows")
    if not missing.any():
        return pd.Series(codes, index=values.index).astype("Int64" if nullable else np.int64)
    result = missing_ints(len(values))
    result.index = values.index
    result[~missing] = codes
    return result


def _unhashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return True
    return False


def _item_ids(conn: Connection, stream: Stream, values: pd.Series, cache: dict[str, int] | None = None) -> np.ndarray:
    """Internal ids of the stream's items named by external id. ``cache`` (external id ->
    id) is read first and filled with what the database returns: items are never changed or
    deleted, so a cached id stays right."""
    ext = external_ids(values, ITEM).tolist()
    known = cache if cache is not None else {}
    misses = [e for e in dict.fromkeys(ext) if e not in known]
    found: dict[str, int] = {}
    if misses:
        mark = "?" if conn.dialect.name == "sqlite" else "%s"
        found = dict(lookup_fast(conn, "items", "external_id", misses, ("external_id", "id"),
                                 f"items.stream_id = {mark}", (stream.id,)))
        unknown = [e for e in misses if e not in found]
        if unknown:
            raise fail(ITEM, f"items registered in stream {stream.name!r} (add them with add_items)",
                       f"{len(unknown)} unknown items, e.g. {unknown[:5]}")
    if cache is not None and len(cache) < ITEM_CACHE_LIMIT:
        cache.update(found)
    # A dict lookup per row (Series.map would first copy a large cache into a Series).
    return np.fromiter((known[e] if e in known else found[e] for e in ext), dtype=np.int64, count=len(ext))


def _annotator_ids(conn: Connection, stream: Stream, values: pd.Series) -> np.ndarray:
    names = external_ids(values, ANNOTATOR)
    ids = annotator_ids(conn, stream, names.unique().tolist())
    return names.map(ids).to_numpy(dtype=np.int64)


def annotator_ids(conn: Connection, stream: Stream, names: list[str]) -> dict[str, int]:
    """Ids of annotators by (checked) name; refuses unknown, inactive and off-stream ones."""
    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    on_stream = (f"EXISTS (SELECT 1 FROM stream_annotators s WHERE s.annotator_id = annotators.id "
                 f"AND s.stream_id = {mark})")
    rows = lookup_fast(conn, "annotators", "name", names, ("name", "id", "active", on_stream),
                       select_params=(stream.id,))
    info = {name: (id_, active, on) for name, id_, active, on in rows}
    unknown = [n for n in names if n not in info]
    if unknown:
        raise fail(ANNOTATOR, "registered annotators (add them with add_annotator)",
                   f"{len(unknown)} unknown annotators, e.g. {unknown[:5]}")
    off = [n for n in names if not info[n][2]]
    if off:
        raise fail(ANNOTATOR, f"annotators on stream {stream.name!r}", f"annotators not on it: {off[:5]}")
    inactive = [n for n in names if not info[n][1]]
    if inactive:
        raise fail(ANNOTATOR, "active annotators", f"inactive annotators {inactive[:5]}")
    return {n: int(v[0]) for n, v in info.items()}


def guideline_ids(conn: Connection, stream: Stream, values: pd.Series | None, n: int) -> pd.Series:
    """Ids of published guideline versions of the stream, from version numbers (NA allowed)."""
    result = missing_ints(n)
    if values is None or values.isna().all():
        return result
    present = check_int_column(values, GUIDELINE_VERSION, low=1, high=MAX_INTEGER).dropna()
    g = S.guideline_versions
    rows = lookup(conn, g.c.version, [int(v) for v in present.unique()], g.c.version, g.c.id, g.c.published_at,
                  where=g.c.stream_id == stream.id)
    info = {v: (id_, pub) for v, id_, pub in rows}
    unknown = sorted({int(v) for v in present if int(v) not in info})
    if unknown:
        raise fail(GUIDELINE_VERSION, f"versions of stream {stream.name!r}'s guideline", f"unknown versions {unknown[:5]}")
    drafts = sorted({int(v) for v in present if info[int(v)][1] is None})
    if drafts:
        raise fail(GUIDELINE_VERSION, "published guideline versions", f"unpublished (draft) versions {drafts[:5]}")
    result[present.index] = [info[int(v)][0] for v in present]
    return result


def _task_ids(conn: Connection, stream: Stream, values: pd.Series | None, item_ids: pd.Series, n: int) -> pd.Series:
    result = missing_ints(n)
    if values is None or values.isna().all():
        return result
    present = check_int_column(values, TASK_ID, low=1, high=MAX_BIGINT).dropna().astype(np.int64)
    t = S.tasks
    owner = dict((tid, iid) for tid, iid in lookup(conn, t.c.id, present.unique().tolist(), t.c.id, t.c.item_id,
                                                     where=in_stream_by_key(conn, t.c.stream_id, stream.id)))
    unknown = sorted(set(present.unique().tolist()) - set(owner))
    if unknown:
        raise fail(TASK_ID, f"tasks of stream {stream.name!r}", f"unknown tasks {unknown[:5]}")
    wrong = present[present.map(owner).to_numpy() != item_ids[present.index].to_numpy()]
    if len(wrong):
        raise fail(TASK_ID, "the task of the annotated item", f"tasks for other items, e.g. task {int(wrong.iloc[0])}")
    result[present.index] = present.to_numpy()
    return result


def _per_row(values: pd.Series | None, n: int, check) -> pd.Series:
    """``check(value, row)`` of each present value (None where missing), as an object column."""
    if values is None:
        return pd.Series([None] * n, dtype=object)
    return pd.Series([None if v is None or (isinstance(v, float) and v != v) else check(v, row)
                      for row, v in enumerate(values)], dtype=object)


def _flag_list(value, row: int) -> str | None:
    """Flags as a sorted JSON list of names from :data:`ANNOTATION_FLAGS` (None: no flags)."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple, np.ndarray)) or \
            not all(isinstance(f, str) and f in ANNOTATION_FLAGS for f in names):
        raise fail(FLAGS, f"a list of flags from {list(ANNOTATION_FLAGS)}", f"{value!r} on row {row}")
    return json_text(sorted(set(names)), FLAGS) if len(names) else None


def _flags(values: pd.Series | None, n: int) -> pd.Series:
    return _per_row(values, n, _flag_list)


def _sources(values: pd.Series | None, n: int) -> pd.Series:
    return _per_row(values, n, lambda v, row: check_text(v, SOURCE, max_chars=MAX_SOURCE_CHARS))


def _rationales(values: pd.Series | None, n: int) -> pd.Series:
    """Rationales as text or None. An empty rationale is no rationale: stored as None on both
    engines (PostgreSQL's bulk read could not tell the two apart)."""
    if values is None:
        return pd.Series([None] * n, dtype=object)
    checked = check_text_column(values.reset_index(drop=True), RATIONALE, max_chars=S.MAX_RATIONALE_CHARS, empty=True)
    return checked.where(checked.notna() & (checked != ""), None)


def _reals(values: pd.Series | None, n: int, name: str, *, low: float | None = None,
           high: float | None = None) -> pd.Series:
    if values is None:
        return pd.Series(np.full(n, np.nan))
    if values.dtype.kind == "b" or (values.dtype == object and any(isinstance(v, (bool, np.bool_)) for v in values)):
        raise fail(name, "numbers (not booleans)", f"booleans, e.g. {values.iloc[0]!r}")
    try:
        numbers = pd.to_numeric(values, errors="raise").astype(np.float64)
    except (TypeError, ValueError, OverflowError):
        raise fail(name, "numbers", f"non-numeric values, e.g. {values.iloc[0]!r}") from None
    finite = numbers.dropna()
    if not np.isfinite(finite).all() or (low is not None and (finite < low).any()) or \
            (high is not None and (finite > high).any()):
        raise fail(name, f"finite numbers in [{low}, {high if high is not None else 'inf'})",
                   f"values from {finite.min()} to {finite.max()}")
    return numbers.reset_index(drop=True)


def _keys(values: pd.Series | None, out: pd.DataFrame) -> pd.Series:
    # Default: one judgement per (item, annotator, task, guideline version); a retry of it is
    # the same row, a different label for it is a conflict (never a silent overwrite).
    if values is not None:
        values = check_text_column(values.reset_index(drop=True), IDEMPOTENCY_KEY, max_chars=S.MAX_KEY_CHARS,
                                   ints=True)
    if values is not None and values.notna().all():
        keys = values.astype(str)
    else:
        default = pd.Series([f"a:{s}:{i}:{a}:{t}:{g}" for s, i, a, t, g in zip(
            out["stream_id"].tolist(), out["item_id"].tolist(), out["annotator_id"].tolist(),
            text(out["task_id"]).tolist(), text(out["guideline_version_id"]).tolist())], dtype=object)
        keys = default if values is None else values.astype(object).where(values.notna(), default).astype(str)
    long = keys.str.len() > S.MAX_KEY_CHARS
    if long.any():
        raise fail(IDEMPOTENCY_KEY, f"keys of at most {S.MAX_KEY_CHARS} characters",
                   f"{int(long.sum())} longer keys")
    return keys


def _dedupe(out: pd.DataFrame) -> pd.DataFrame:
    if not out["idempotency_key"].duplicated().any():
        return out.sort_values("idempotency_key", kind="stable").reset_index(drop=True)
    clash = out.groupby("idempotency_key", sort=False)["content_hash"].nunique()
    if (clash > 1).any():
        raise ConflictError(f"The 'idempotency_key' {clash.index[clash > 1][0]!r} is used by rows with different "
                            "content in one batch; each key names one annotation.")
    return out.drop_duplicates("idempotency_key").sort_values("idempotency_key", kind="stable").reset_index(drop=True)


def row_tuples(prepared: pd.DataFrame, dialect: str) -> list[tuple]:
    """The prepared batch as driver parameter tuples in :data:`STORED` order."""
    columns = [prepared["stream_id"].tolist(), nullable(prepared["task_id"]), prepared["item_id"].tolist(),
               prepared["annotator_id"].tolist(), prepared["label"].tolist(), nullable(prepared["rationale"]),
               nullable(prepared["evidence"]), nullable(prepared["seconds"]), nullable(prepared["suggestion"]),
               nullable(prepared["suggestion_confidence"]), nullable(prepared["guideline_version_id"]),
               stamp_params(prepared["created_at"], dialect), prepared["idempotency_key"].tolist(),
               prepared["content_hash"].tolist(), nullable(prepared["flags"]), nullable(prepared["source"])]
    return list(zip(*columns))


def insert(conn: Connection, prepared: pd.DataFrame, *, actor: str | None, reason: str | None) -> int:
    """Write a prepared batch and its events in the caller's transaction; return how many
    annotations were new. Raises ConflictError when a key is already stored with other content."""
    return insert_rows(conn, row_tuples(prepared, conn.dialect.name), actor=actor, reason=reason)


def insert_rows(conn: Connection, rows: list[tuple], *, actor: str | None, reason: str | None) -> int:
    """:func:`insert` of rows already in driver form (:func:`row_tuples`)."""
    check_event_fields(actor, reason)
    dialect = conn.dialect.name
    if dialect == "sqlite":
        write = _insert_sqlite
    else:
        write = _insert_postgresql_one if len(rows) == 1 else _insert_postgresql
    inserted = sum(write(conn, rows[i:i + WRITE_CHUNK], actor, reason) for i in range(0, len(rows), WRITE_CHUNK))
    if inserted < len(rows):
        _check_existing(conn, [r[_KEY] for r in rows], [r[_HASH] for r in rows])
    return inserted


_KEY: Final = STORED.index("idempotency_key")
_HASH: Final = STORED.index("content_hash")


_SQLITE_INSERT: Final = (f"INSERT INTO annotations ({', '.join(STORED)}) VALUES ({', '.join('?' * len(STORED))}) "
                         "ON CONFLICT (idempotency_key) DO NOTHING")
_SQLITE_EVENTS: Final = (
    "INSERT INTO events (at, actor, action, entity, entity_id, stream_id, item_id, after, reason) "
    f"SELECT ?, ?, '{EVENT_ACTION}', 'annotation', id, stream_id, item_id, "
    "json_object('label', label, 'annotator_id', annotator_id), ? FROM annotations WHERE id > ?")


def _insert_sqlite(conn: Connection, rows: list[tuple], actor, reason) -> int:
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        # Inside the write lock (BEGIN IMMEDIATE), so new rows are exactly those above max(id).
        last = cursor.execute("SELECT coalesce(max(id), 0) FROM annotations").fetchone()[0]
        cursor.executemany(_SQLITE_INSERT, rows)
        inserted = cursor.rowcount
        if inserted:
            at = now_utc().replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
            cursor.execute(_SQLITE_EVENTS, (at, actor, reason, last))
        return inserted
    finally:
        cursor.close()


_PG_TYPES: Final = ("int4", "int8", "int8", "int4", "int4", "text", "text", "float8", "int4", "float8", "int4",
                    "timestamptz", "text", "int8", "text", "text")
_PG_STAGE: Final = "labelloop_annotations_in3"  # revision 0003's columns
_PG_CREATE_STAGE: Final = (f"CREATE TEMP TABLE IF NOT EXISTS {_PG_STAGE} "
                           f"({', '.join(f'{c} {t}' for c, t in zip(STORED, _PG_TYPES))}) ON COMMIT DELETE ROWS")
_PG_INSERT: Final = (
    f"WITH ins AS (INSERT INTO annotations ({', '.join(STORED)}) "
    f"SELECT {', '.join(c + '::jsonb' if c in ('evidence', 'flags') else c for c in STORED)} FROM {_PG_STAGE} "
    "ORDER BY idempotency_key ON CONFLICT (idempotency_key) DO NOTHING "
    "RETURNING id, stream_id, item_id, annotator_id, label), "
    "ev AS (INSERT INTO events (at, actor, action, entity, entity_id, stream_id, item_id, after, reason) "
    f"SELECT now(), %s, '{EVENT_ACTION}', 'annotation', id, stream_id, item_id, "
    "jsonb_build_object('label', label, 'annotator_id', annotator_id), %s FROM ins RETURNING 1) "
    "SELECT count(*) FROM ev")


def _insert_postgresql(conn: Connection, rows: list[tuple], actor, reason) -> int:
    # COPY into a session-local staging table, then one INSERT .. SELECT that skips stored
    # keys and writes the events of the new rows from RETURNING.
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        # The transaction takes its id before it draws annotation ids: StreamHistory relies on
        # it (a writer still in flight is then visible in every snapshot taken after its ids
        # were drawn).
        cursor.execute("SELECT pg_current_xact_id()")
        # Every time: a rolled-back first batch takes the staging table's creation with it.
        cursor.execute(_PG_CREATE_STAGE)
        with cursor.copy(f"COPY {_PG_STAGE} ({', '.join(STORED)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(_PG_INSERT, (actor, reason))
        inserted = int(cursor.fetchone()[0])
        cursor.execute(f"DELETE FROM {_PG_STAGE}")
        return inserted
    finally:
        cursor.close()


_PG_INSERT_ONE: Final = (
    f"WITH ins AS (INSERT INTO annotations ({', '.join(STORED)}) "
    f"VALUES ({', '.join(f'%s::{t}' + ('::jsonb' if c in ('evidence', 'flags') else '') for c, t in zip(STORED, _PG_TYPES))}) "
    "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, stream_id, item_id, annotator_id, label), "
    + _PG_INSERT[_PG_INSERT.index("ev AS ("):])


def _insert_postgresql_one(conn: Connection, rows: list[tuple], actor, reason) -> int:
    # One row (an answer through the task API): one INSERT with its event, no staging table.
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute("SELECT pg_current_xact_id()")  # as _insert_postgresql: the id before the ids
        cursor.execute(_PG_INSERT_ONE, (*rows[0], actor, reason))
        return int(cursor.fetchone()[0])
    finally:
        cursor.close()


def _check_existing(conn: Connection, keys: list[str], hashes: list[int]) -> None:
    stored = dict(lookup_fast(conn, "annotations", "idempotency_key", keys, ("idempotency_key", "content_hash")))
    clash = [k for k, h in zip(keys, hashes) if k in stored and int(stored[k]) != int(h)]
    if clash:
        raise ConflictError(f"The 'idempotency_key' {clash[0]!r} already names a stored annotation with different content "
                            f"({len(clash)} such keys in the batch); a label is never overwritten: "
                            "send a new annotation under a new key or correct the resolution.")
