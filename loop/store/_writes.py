"""Idempotent inserts of small entities and the events that record them.

Every write names a key that a retry repeats (an idempotency key, or a natural key such as
``(stream, external id)``). A retry with the same content returns what is stored; the same
key with other content raises :class:`~loop.exceptions.ConflictError`. Events go in the same
transaction as the rows they record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .._validation import check_text
from ..exceptions import ConflictError
from . import _schema as S
from ._convert import json_text, lookup, now_utc
from ._records import BatchResult


def check_event_fields(actor: Any, reason: Any) -> None:
    """Refuse an ``actor`` or ``reason`` the events table cannot hold (not text, an actor over
    200 characters, NUL characters, lone surrogates); None is fine."""
    if actor is not None:
        check_text(actor, "actor", max_chars=S.MAX_NAME_CHARS)
    if reason is not None:
        check_text(reason, "reason", empty=True)


def record_events(conn: Connection, rows: Sequence[Mapping[str, Any]], *, actor: str | None,
                  reason: str | None) -> None:
    """Append events: each row gives action, entity, entity_id and optionally stream_id,
    item_id, before, after, reason. Every writer passes its ``actor`` and ``reason`` through
    here, so they are checked here (inside the writer's transaction: a refusal stores nothing)."""
    check_event_fields(actor, reason)
    for row in rows:
        check_event_fields(None, row.get("reason"))
    if not rows:
        return
    at = now_utc()
    conn.execute(S.events.insert(), [
        {"at": at, "actor": actor, "reason": row.get("reason", reason), "stream_id": row.get("stream_id"),
         "item_id": row.get("item_id"), "before": row.get("before"), "after": row.get("after"),
         "action": row["action"], "entity": row["entity"], "entity_id": row["entity_id"]}
        for row in rows])


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return json_text(a, "value") == json_text(b, "value")
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return float(a) == float(b)
    return a == b


def insert_idempotent(conn: Connection, table: sa.Table, rows: list[dict], *, key: str, compare: Sequence[str],
                      where: Any = None, action: str, entity: str, actor: str | None, reason: str | None,
                      after: Sequence[str] = (), stream_id: int | None = None) -> tuple[BatchResult, dict[Any, int]]:
    """Insert the rows whose ``key`` (unique within ``where``) is not stored yet, with one
    event each. Returns the counts and the id of every row by key."""
    stored = {r[0]: r[1:] for r in lookup(conn, table.c[key], [r[key] for r in rows], table.c[key], table.c.id,
                                          *(table.c[c] for c in compare), where=where)}
    new, ids = [], {}
    for row in rows:
        if row[key] in stored:
            old = stored[row[key]]
            diff = [c for c, v in zip(compare, old[1:]) if not _same(row[c], v)]
            if diff:
                raise ConflictError(f"The {key!r} {row[key]!r} is already stored with other values of {diff}; "
                                    "a retry must send the same content.")
            ids[row[key]] = old[0]
        elif row[key] not in ids:
            new.append(row)
            ids[row[key]] = None
    if new:
        try:
            # A plain executemany, then the ids by key: an INSERT ... RETURNING whose ids must come
            # back in the rows' order ran one statement per row on SQLite (4,000-6,000 rows/s).
            conn.execute(table.insert(), new)
        except sa.exc.IntegrityError:
            # Another writer stored one of these keys between the lookup and the insert.
            raise ConflictError(f"Another writer stored one of these {key!r} values at the same time; retry "
                                "(a retry returns what is stored).") from None
        for k, id_ in lookup(conn, table.c[key], [row[key] for row in new], table.c[key], table.c.id, where=where):
            ids[k] = id_
        record_events(conn, [{"action": action, "entity": entity, "entity_id": ids[row[key]],
                              "stream_id": ids[row[key]] if entity == "stream" else row.get("stream_id", stream_id),
                              "item_id": ids[row[key]] if entity == "item" else row.get("item_id"),
                              "after": {c: _jsonable(row[c]) for c in after}} for row in new],
                      actor=actor, reason=reason)
    return BatchResult(inserted=len(new), existing=len(rows) - len(new)), ids


def _jsonable(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value
