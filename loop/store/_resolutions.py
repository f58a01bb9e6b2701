"""Final labels: resolutions that are never overwritten, only superseded.

Each item's resolutions form a chain: the first names no predecessor, each correction names
the one it supersedes. Two constraints make a lost update impossible: ``supersedes_id`` is
unique (a resolution is superseded once), and an item has at most one first resolution. A
writer that names a resolution someone else has already superseded gets a ConflictError
(optimistic concurrency), never a silent overwrite.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .._validation import _describe, check_int_column, check_text_column, fail
from ..columns import ITEM, LABEL, REASON
from ..exceptions import ConflictError
from . import _schema as S
from ._annotations import _reals, label_codes
from ._columns import (ACTOR, CONFIDENCE, IDEMPOTENCY_KEY, METHOD, RESOLUTION_ID, RESOLVED_AT, SUPERSEDES,
                       SUPERSEDES_KEY)
from ._convert import (MAX_BIGINT, as_frame, check_columns, content_hash, external_ids, in_stream_by_id, lookup,
                       now_utc, text)
from ._records import BatchResult, ResolutionMethod, Stream
from ._writes import check_event_fields, record_events

REQUIRED: Final = (ITEM, LABEL)
OPTIONAL: Final = (METHOD, CONFIDENCE, SUPERSEDES, IDEMPOTENCY_KEY, REASON)
METHODS: Final = tuple(m.value for m in ResolutionMethod)


def _methods(values: pd.Series | None, default: ResolutionMethod | str | None, n: int) -> pd.Series:
    if values is None:
        if default is None:
            raise fail(METHOD, f"one of {list(METHODS)} (a 'method' column or argument)", "neither")
        values = pd.Series([default] * n)
    methods = values.map(lambda m: m.value if isinstance(m, ResolutionMethod) else m)
    bad = ~methods.map(lambda m: isinstance(m, str) and m in METHODS).astype(bool)
    if bad.any():
        raise fail(METHOD, f"one of {list(METHODS)}", _describe(methods[bad].iloc[0]))
    return methods.astype(object)


def prepare(conn: Connection, stream: Stream, records, *, method) -> pd.DataFrame:
    frame = check_columns(as_frame(records, "resolutions"), "resolutions", required=REQUIRED, optional=OPTIONAL)
    n = len(frame)
    ext = external_ids(frame[ITEM], ITEM)
    found = dict(lookup(conn, S.items.c.external_id, ext.unique(), S.items.c.external_id, S.items.c.id,
                        where=S.items.c.stream_id == stream.id))
    unknown = [e for e in ext.unique() if e not in found]
    if unknown:
        raise fail(ITEM, f"items registered in stream {stream.name!r}", f"unknown items {unknown[:5]}")
    out = pd.DataFrame({"item_ext": ext, "item_id": ext.map(found).astype(np.int64)})
    out["label"] = label_codes(frame[LABEL], stream, LABEL).to_numpy()
    out["method"] = _methods(frame.get(METHOD), method, n).to_numpy()
    # Text and NaN no longer pass as "no confidence"; a missing value still does.
    out["confidence"] = _reals(frame.get(CONFIDENCE), n, CONFIDENCE, low=0.0, high=1.0).to_numpy(dtype=float)
    sup = frame[SUPERSEDES] if SUPERSEDES in frame else pd.Series([None] * n)
    out["supersedes_id"] = check_int_column(sup, SUPERSEDES, low=1, high=MAX_BIGINT).array
    if REASON in frame:
        reasons = check_text_column(frame[REASON], REASON, empty=True)
        out["reason"] = reasons.where(reasons.notna(), None).to_numpy()
    else:
        out["reason"] = None
    default = "r:" + text(out["item_id"]) + ":" + text(out["supersedes_id"])
    given_keys = check_text_column(frame[IDEMPOTENCY_KEY], IDEMPOTENCY_KEY, max_chars=S.MAX_KEY_CHARS, ints=True) \
        if IDEMPOTENCY_KEY in frame else None
    given = given_keys.notna() if given_keys is not None else pd.Series(False, index=frame.index)
    keys = given_keys.where(given, default) if given_keys is not None else default
    out["idempotency_key"] = keys.astype(str)
    # A default key is the natural key (item, superseded resolution): reusing it with another
    # label is a lost race, reported as such below rather than as a key reuse.
    out["natural_key"] = ~given.to_numpy()
    out["content_hash"] = content_hash(out[["item_id", "label", "method", "confidence", "supersedes_id"]])
    clash = out.groupby("idempotency_key")["content_hash"].nunique()
    if (clash > 1).any():
        raise ConflictError(f"The 'idempotency_key' {clash.index[clash > 1][0]!r} names two different resolutions "
                            "in one batch.")
    out = out.drop_duplicates("idempotency_key").reset_index(drop=True)
    twice = out.duplicated(["item_id", "supersedes_id"], keep=False)
    if twice.any():
        raise ConflictError(f"Item {out.loc[twice, 'item_ext'].iloc[0]!r} gets two resolutions superseding the same "
                            "one in one batch; chain them in separate calls.")
    return out


def insert(conn: Connection, stream: Stream, prepared: pd.DataFrame, *, actor: str | None,
           reason: str | None) -> tuple[BatchResult, list[int]]:
    """Store the new resolutions of a prepared batch; return the counts and the id of each
    row (stored now or by an earlier call with the same key)."""
    check_event_fields(actor, reason)  # the actor is also a column of the resolution
    r = S.resolutions
    if conn.dialect.name == "postgresql":
        # Resolution ids then follow commit order, so "as of resolution version v" is stable.
        conn.execute(sa.text("LOCK TABLE resolutions IN SHARE ROW EXCLUSIVE MODE"))
    stored = {k: (h, i) for k, h, i in lookup(conn, r.c.idempotency_key, prepared["idempotency_key"],
                                              r.c.idempotency_key, r.c.content_hash, r.c.id)}
    ids: dict[str, int] = {}
    for key, hsh, natural in zip(prepared["idempotency_key"], prepared["content_hash"], prepared["natural_key"]):
        if key in stored:
            if stored[key][0] != hsh and natural:
                continue  # _check_chain explains: already resolved, or already superseded
            if stored[key][0] != hsh:
                raise ConflictError(f"The 'idempotency_key' {key!r} already names a stored resolution with "
                                    "different content; a retry must send the same resolution.")
            ids[key] = stored[key][1]
    new = prepared[~prepared["idempotency_key"].isin(list(ids))].reset_index(drop=True)
    if len(new):
        current = _current(conn, stream, new["item_id"].tolist())
        _check_chain(conn, stream, new, current)
        at = now_utc()
        rows = [{"stream_id": stream.id, "item_id": int(row.item_id), "label": int(row.label), "method": row.method,
                 "confidence": None if np.isnan(row.confidence) else float(row.confidence), "resolved_at": at,
                 "supersedes_id": None if pd.isna(row.supersedes_id) else int(row.supersedes_id),
                 "actor": actor, "reason": row.reason if isinstance(row.reason, str) else reason,
                 "idempotency_key": row.idempotency_key, "content_hash": int(row.content_hash)}
                for row in new.itertuples(index=False)]
        try:
            result = conn.execute(r.insert().returning(r.c.id, r.c.idempotency_key, sort_by_parameter_order=True), rows)
        except sa.exc.IntegrityError:
            # (The database's message would show SQL and internal ids: the caller needs neither.)
            raise ConflictError("Another writer resolved or corrected one of these items first; read the current "
                                "resolution and supersede it.") from None
        for id_, key in result:
            ids[key] = id_
        record_events(conn, [
            {"action": "resolution.created" if row["supersedes_id"] is None else "resolution.superseded",
             "entity": "resolution", "entity_id": ids[row["idempotency_key"]], "stream_id": stream.id,
             "item_id": row["item_id"], "reason": row["reason"],
             "before": None if row["supersedes_id"] is None else
             {"resolution_id": row["supersedes_id"], "label": current[row["item_id"]][1]},
             "after": {"resolution_id": ids[row["idempotency_key"]], "label": row["label"], "method": row["method"]}}
            for row in rows], actor=actor, reason=reason)
    return BatchResult(inserted=len(new), existing=len(prepared) - len(new)), \
        [ids[k] for k in prepared["idempotency_key"]]


def _current(conn: Connection, stream: Stream, item_ids: list[int]) -> dict[int, tuple[int, int]]:
    """The current (not superseded) resolution of each of the stream's items: item id ->
    (resolution id, label)."""
    r, s = S.resolutions, S.resolutions.alias("s")
    not_superseded = ~sa.exists().where(s.c.supersedes_id == r.c.id)
    # The stream lets the database find the items through (stream_id, item_id): item_id alone has
    # no index it can use, and each lookup scanned every resolution of every stream.
    return {item: (id_, label) for item, id_, label in
            lookup(conn, r.c.item_id, item_ids, r.c.item_id, r.c.id, r.c.label,
                   where=not_superseded & (r.c.stream_id == stream.id))}


def _check_chain(conn: Connection, stream: Stream, new: pd.DataFrame, current: dict[int, tuple[int, int]]) -> None:
    named = [int(v) for v in new["supersedes_id"].dropna()]
    owners = dict(lookup(conn, S.resolutions.c.id, named, S.resolutions.c.id, S.resolutions.c.item_id))
    for row in new.itertuples(index=False):
        head = current.get(row.item_id)
        if pd.isna(row.supersedes_id):
            if head is not None:
                raise ConflictError(f"Item {row.item_ext!r} is already resolved (resolution {head[0]}, label "
                                    f"{head[1]}); pass supersedes={head[0]} to correct it.")
            continue
        sup = int(row.supersedes_id)
        if owners.get(sup) != row.item_id:
            raise fail(SUPERSEDES, f"a resolution of item {row.item_ext!r}", f"resolution {sup}, which is "
                       + ("unknown" if sup not in owners else "of another item"))
        if head is None or head[0] != sup:
            raise ConflictError(f"Resolution {sup} of item {row.item_ext!r} was already superseded by another "
                                f"writer (the current one is {head[0] if head else None}); read it and decide again.")


def resolutions_frame(conn: Connection, stream: Stream, *, as_of: int | datetime | None = None,
                      after: int | None = None) -> pd.DataFrame:
    """Every resolution of the stream (the full history), optionally only those up to ``as_of``
    and after the id ``after``."""
    r, i, s = S.resolutions, S.items, S.resolutions.alias("s")
    query = (sa.select(r.c.id, i.c.external_id, r.c.label, r.c.method, r.c.confidence, r.c.resolved_at,
                       r.c.supersedes_id, s.c.idempotency_key, r.c.actor, r.c.reason, r.c.idempotency_key)
             .join(i, i.c.id == r.c.item_id).outerjoin(s, s.c.id == r.c.supersedes_id)
             .where(in_stream_by_id(conn, r.c.stream_id, stream.id, after))
             .order_by(r.c.id))
    if isinstance(as_of, datetime):
        query = query.where(r.c.resolved_at <= as_of)
    elif as_of is not None:
        query = query.where(r.c.id <= as_of)
    if after is not None:
        query = query.where(r.c.id > after)
    rows = conn.execute(query).all()
    frame = pd.DataFrame(rows, columns=[RESOLUTION_ID, ITEM, LABEL, METHOD, CONFIDENCE, RESOLVED_AT, SUPERSEDES,
                                        SUPERSEDES_KEY, ACTOR, REASON, IDEMPOTENCY_KEY])
    frame[RESOLUTION_ID] = frame[RESOLUTION_ID].astype(np.int64)
    frame[LABEL] = frame[LABEL].astype(np.int64)
    frame[CONFIDENCE] = frame[CONFIDENCE].astype(float)
    frame[SUPERSEDES] = frame[SUPERSEDES].astype("Int64")
    frame[RESOLVED_AT] = pd.to_datetime(frame[RESOLVED_AT], utc=True)
    return frame


def current_only(history: pd.DataFrame) -> pd.DataFrame:
    """The head of each item's chain: resolutions no other row of ``history`` supersedes."""
    superseded = set(history[SUPERSEDES].dropna().astype(np.int64).tolist())
    heads = history[~history[RESOLUTION_ID].isin(superseded)]
    return heads.sort_values(ITEM, kind="stable").reset_index(drop=True)

