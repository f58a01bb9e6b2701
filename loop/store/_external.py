"""Tasks pushed to another tool (Label Studio) and the answers that come back.

``external_tasks`` links a labelloop task to its copy in a tool's project; answering closes
both (the link's ``closed_at``, the task's status ``done``), so neither is pushed again. An
annotator is matched by email (``annotators.email``; an annotator whose name is the email
matches too, as imports before revision 0003 named them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .._validation import fail
from ..labelstudio import DELETED_ACTION
from . import _schema as S
from ._columns import IDEMPOTENCY_KEY, TASK_ID
from ._convert import in_stream_by_key, lookup, now_utc
from ._records import Stream
from ._writes import record_events


def annotator_names(conn: Connection, emails: Iterable[str], *, system: str) -> dict[str, str]:
    """Annotator name by email; an unknown email refuses the call, naming every one."""
    emails = list(dict.fromkeys(str(e) for e in emails))
    a = S.annotators
    found = {e: n for e, n in lookup(conn, a.c.email, emails, a.c.email, a.c.name)}
    rest = [e for e in emails if e not in found]
    found |= {n: n for (n,) in lookup(conn, a.c.name, rest, a.c.name)}
    unknown = [e for e in emails if e not in found]
    if unknown:
        raise fail("email", f"the email of a labelloop annotator (add_annotator(name, email=...)) for each "
                   f"{system} user", f"unknown {unknown[:5]}")
    return found


def bind_tasks(conn: Connection, stream: Stream, rows: pd.DataFrame, candidates: str) -> pd.Series:
    """The labelloop task each new answer closes: for a Label Studio task standing for several
    labelloop tasks (a double-blind pair), answers take the open ones in turn; an edit keeps
    the task of the version it replaces. Rows already stored keep their stored task."""
    keys = rows[IDEMPOTENCY_KEY].tolist()
    an, t = S.annotations, S.tasks
    stored = dict(lookup(conn, an.c.idempotency_key, keys, an.c.idempotency_key, an.c.task_id))
    wanted = sorted({int(i) for ids in rows[candidates] for i in ids})
    status = {i: s for i, s in lookup(conn, t.c.id, wanted, t.c.id, t.c.status,
                                      where=in_stream_by_key(conn, t.c.stream_id, stream.id))}
    unknown = sorted(set(wanted) - set(status))
    if unknown:
        raise fail(TASK_ID, f"ids of tasks of stream {stream.name!r}", f"unknown ids {unknown[:5]}")
    taken = {v for v in stored.values() if v is not None}
    # The task of an earlier version of the same annotation (same tool annotation id): looked
    # up for new keys only, so a sync that pulls what it stored before asks nothing more.
    prefixes = {k.split("@", 1)[0] for k in keys if k not in stored}
    earlier: dict[str, int] = {}
    for prefix in prefixes:
        row = conn.execute(sa.select(an.c.task_id).where(an.c.idempotency_key.like(prefix + "@%"),
                                                         an.c.task_id.is_not(None)).limit(1)).first()
        if row is not None:
            earlier[prefix] = row[0]
    out = []
    for key, ids in zip(keys, rows[candidates]):
        if key in stored:
            out.append(stored[key])
            continue
        prefix = key.split("@", 1)[0]
        if prefix in earlier:
            out.append(earlier[prefix])
            continue
        free = [int(i) for i in ids if status[int(i)] in ("open", "assigned") and int(i) not in taken]
        choice = free[0] if free else None
        if choice is not None:
            taken.add(choice)
            earlier[prefix] = choice
        out.append(choice)
    return pd.Series(out, index=rows.index, dtype=object)


def link(conn: Connection, system: str, project: str, links: Mapping[str, int]) -> int:
    """Record that ``links`` (external id -> labelloop task id) were pushed; idempotent."""
    e = S.external_tasks
    have = {x for (x,) in lookup(conn, e.c.external_id, list(links), e.c.external_id,
                                 where=(e.c.system == system) & (e.c.project == project))}
    at = now_utc()
    new = [{"system": system, "project": project, "external_id": x, "task_id": int(t), "created_at": at}
           for x, t in links.items() if x not in have]
    if new:
        conn.execute(e.insert(), new)
    return len(new)


def close(conn: Connection, task_ids: Sequence[int], *, system: str, actor: str | None) -> int:
    """Mark answered tasks done (with ``completed_at``) and their links closed; returns how
    many tasks changed (a retry changes none)."""
    ids = sorted({int(i) for i in task_ids})
    if not ids:
        return 0
    t, e = S.tasks, S.external_tasks
    at = now_utc()
    conn.execute(e.update().where(e.c.system == system, e.c.task_id.in_(ids), e.c.closed_at.is_(None))
                 .values(closed_at=at))
    moving = conn.execute(sa.select(t.c.id, t.c.status, t.c.stream_id, t.c.item_id)
                          .where(t.c.id.in_(ids), t.c.status.in_(("open", "assigned")))).all()
    if moving:
        conn.execute(t.update().where(t.c.id.in_([r.id for r in moving])).values(status="done", completed_at=at))
        record_events(conn, [{"action": "task.status", "entity": "task", "entity_id": r.id, "stream_id": r.stream_id,
                              "item_id": r.item_id, "before": {"status": r.status}, "after": {"status": "done"}}
                             for r in moving], actor=actor, reason=f"answered in {system}")
    return len(moving)


def linked(conn: Connection, system: str, project: str | None) -> pd.DataFrame:
    e = S.external_tasks
    query = sa.select(e.c.project, e.c.external_id, e.c.task_id, e.c.created_at, e.c.closed_at).where(e.c.system == system)
    if project is not None:
        query = query.where(e.c.project == project)
    rows = conn.execute(query.order_by(e.c.id)).all()
    return pd.DataFrame(rows, columns=["project", "external_id", TASK_ID, "created_at", "closed_at"])


def record_deletions(conn: Connection, stream: Stream, annotation_ids: Iterable[int], *, actor: str | None
                     ) -> tuple[int, list[int]]:
    """One ``annotation.deleted_in_label_studio`` event per stored version of each deleted
    Label Studio annotation (none twice); the rows stay. Returns the events written and the
    ids labelloop never stored."""
    an, ev = S.annotations, S.events
    written, unknown = 0, []
    for ls_id in dict.fromkeys(int(i) for i in annotation_ids):
        key = f"labelstudio:{ls_id}"
        rows = conn.execute(sa.select(an.c.id, an.c.item_id).where(
            an.c.stream_id == stream.id, (an.c.idempotency_key == key) | an.c.idempotency_key.like(key + "@%"))).all()
        if not rows:
            unknown.append(ls_id)
            continue
        done = {x for (x,) in conn.execute(sa.select(ev.c.entity_id).where(
            ev.c.action == DELETED_ACTION, ev.c.entity == "annotation", ev.c.entity_id.in_([r.id for r in rows])))}
        new = [r for r in rows if r.id not in done]
        record_events(conn, [{"action": DELETED_ACTION, "entity": "annotation", "entity_id": r.id,
                              "stream_id": stream.id, "item_id": r.item_id,
                              "after": {"label_studio_annotation_id": ls_id}} for r in new],
                      actor=actor, reason="deleted in Label Studio; the row is kept")
        written += len(new)
    return written, unknown
