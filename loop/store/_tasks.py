"""People in the loop: handing out tasks, taking answers, disputes, SLAs, previews.

Handing out (:func:`claim_next`)
    An annotator asks for work; they get their own unfinished task first (oldest assigned
    first), else an open task is claimed for them. Candidates are the open tasks of streams
    they are on, of a tier at most theirs (``expert`` and ``adjudication`` tasks only to the
    expert tier, 3, and up), on items they have not labelled and hold no task for, (adjudication) not about a
    dispute they raised, and not pushed to Label Studio and still open there (a row of
    ``external_tasks`` without ``closed_at``), so that no task is worked in both tools. Of the :data:`CANDIDATES` most urgent (due first, then
    oldest), the one whose likely class pair (the top two classes of the item's latest
    prediction) the annotator is best at wins: their agreement with resolved labels on items
    resolved as one of the pair, shrunk towards their overall accuracy (Beta(1, 1) prior),
    rounded to :data:`SKILL_STEP` so that near-equal skills fall through to urgency.

    Workload: an annotator holds their unfinished tasks first, so nobody takes new work
    while holding some, and work spreads over whoever asks.

    Race-free claims: on PostgreSQL the annotator's row is locked first (one claim per person
    at a time) and candidates are locked ``FOR UPDATE SKIP LOCKED`` in rank order, so two
    callers never wait on nor take the same task; on SQLite the claim runs inside the
    database's write lock (``BEGIN IMMEDIATE``).

Guideline sections (:func:`guideline_section`)
    A guideline is markdown. A heading that names both classes of a pair (``## neg vs pos``,
    ``### pos / neg``: the class names as words of the heading, any order, any case) starts
    the section for that pair, which runs to the next heading of the same or a higher level.
    Without one, the sections of headings naming each class alone (``## neg``, ``## pos``)
    are joined; without those, the whole text is the section.
"""

from __future__ import annotations

import functools
import math
import re
from datetime import datetime, timedelta
from typing import Any, Final

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection

from .._validation import _describe, _text_problem, check_text, fail
from ..columns import ITEM, LABEL, SECONDS
from ..exceptions import ConflictError, ForbiddenError, NotFoundError
from . import _annotations, _resolutions
from . import _schema as S
from ._columns import (EVIDENCE, FLAGS, GUIDELINE_VERSION, IDEMPOTENCY_KEY, SOURCE, SUGGESTION,
                       SUGGESTION_CONFIDENCE, TASK_ID)
from ._convert import content_hash_row, int_rows, json_text, stamp_params
from ._records import Dispute, Escalation, QueueMetrics, Stream, Suggestion
from ._writes import record_events

CANDIDATES: Final = 200
SKILL_STEP: Final = 0.05
PAIR_PRIOR_WEIGHT: Final = 2.0
# Tier codes, as the program writes them: 1 novice, 2 experienced, 3 expert.
EXPERT_TIER: Final = 3
EXPERT_KINDS: Final = ("expert", "adjudication")
BLIND_KINDS: Final = ("double_blind", "audit", "adjudication")
UNFINISHED: Final = ("open", "assigned")
N_EXAMPLES: Final = 3
EXAMPLE_POOL: Final = 2000
DISPLAY_KEYS: Final = ("display", "text", "title")
SLA_ACTOR: Final = "sla"


# ----------------------------------------------------------------------------- claiming

def own_unfinished(conn: Connection, annotator_id: int, stream_ids: list[int]) -> int | None:
    return conn.execute(_own_unfinished_select(), {"annotator_id": annotator_id,
                                                   "stream_ids": list(stream_ids)}).scalar()


@functools.cache
def _own_unfinished_select() -> sa.Select:
    t = S.tasks
    return (sa.select(t.c.id).where(t.c.annotator_id == sa.bindparam("annotator_id"), t.c.status == "assigned",
                                    t.c.stream_id.in_(sa.bindparam("stream_ids", expanding=True)))
            .order_by(t.c.assigned_at, t.c.id).limit(1))


def candidates(conn: Connection, annotator_id: int, tier: int, stream_ids: list[int]) -> pd.DataFrame:
    """The most urgent open tasks the annotator may take: task_id, stream_id, item_id."""
    rows = conn.execute(_candidates_select(tier >= EXPERT_TIER),
                        {"annotator_id": annotator_id, "tier": tier, "stream_ids": list(stream_ids)}).all()
    # Three integer columns: through one array (a frame from 200 Row objects costs more).
    return pd.DataFrame(int_rows(rows, 3), columns=["task_id", "stream_id", "item_id"])


@functools.cache
def _candidates_select(expert: bool) -> sa.Select:
    # Built once with bound parameters: building the statement cost more CPU than running it.
    t, a, d = S.tasks, S.annotations, S.disputes
    mine = S.tasks.alias("mine")
    annotator_id = sa.bindparam("annotator_id")
    # stream_id too, so that the lookup uses the (stream_id, item_id) index of annotations.
    labelled = sa.exists().where(a.c.stream_id == t.c.stream_id, a.c.item_id == t.c.item_id,
                                 a.c.annotator_id == annotator_id)
    holds = sa.exists().where(mine.c.item_id == t.c.item_id, mine.c.annotator_id == annotator_id,
                              mine.c.status.in_(("assigned", "done")))
    raised = sa.exists().where(d.c.adjudication_task_id == t.c.id, d.c.annotator_id == annotator_id)
    # 'open' as a literal, not a parameter: the planner must see it to use the partial index
    # even in a generic plan (psycopg prepares statements it runs often).
    where = [t.c.status == sa.literal_column("'open'"),
             # An expanding list, not an array: with "= ANY(array)" the planner no longer walks
             # the partial index in order (a sort of every open task instead: 0.5 -> 500 ms).
             t.c.stream_id.in_(sa.bindparam("stream_ids", expanding=True)),
             t.c.tier <= sa.bindparam("tier"), ~labelled, ~holds, ~raised,
             t.c.id.not_in(in_other_tool())]
    if not expert:
        where.append(t.c.kind.not_in(EXPERT_KINDS))
    # Due first (NULLs last), then oldest: the order of the ix_tasks_open_urgency index, so
    # that the database walks it and stops after CANDIDATES rows rather than sorting them all.
    return (sa.select(t.c.id, t.c.stream_id, t.c.item_id).where(*where)
            .order_by(t.c.due_at.asc().nulls_last(), t.c.created_at, t.c.id).limit(CANDIDATES))


def in_other_tool() -> sa.Select:
    """The ids of tasks pushed to another tool (Label Studio) and still open there: they are
    worked there, never handed out here too. Uncorrelated, so the database reads the open links
    once per claim (``external_tasks`` has no index on ``task_id`` alone)."""
    e = S.external_tasks
    return sa.select(e.c.task_id).where(e.c.closed_at.is_(None))


def latest_predictions(conn: Connection, item_ids: list[int]) -> dict[int, tuple[list[float], Any, Any, Any, str]]:
    """The newest prediction of each item: item id -> (probs, signals, route, reason, model version name)."""
    if not item_ids:
        return {}
    rows = conn.execute(_latest_predictions_select(conn.dialect.name == "postgresql"),
                        {"item_ids": list(item_ids)}).all()
    return {r[0]: (list(r[1]), r[2], r[3], r[4], r[5]) for r in rows}


def _in_ids(column: sa.Column, name: str, postgres: bool) -> sa.ColumnElement:
    """``column IN (ids)`` with the ids bound at run time: one array parameter on PostgreSQL
    (``= ANY``; a statement of one shape, whatever the count), an expanding list on SQLite."""
    if postgres:
        return column == sa.any_(sa.bindparam(name, type_=ARRAY(sa.BigInteger)))
    return column.in_(sa.bindparam(name, expanding=True))


@functools.cache
def _latest_predictions_select(postgres: bool) -> sa.Select:
    p, m = S.predictions, S.model_versions
    newest = (sa.select(p.c.item_id, sa.func.max(p.c.id).label("id"))
              .where(_in_ids(p.c.item_id, "item_ids", postgres))
              .group_by(p.c.item_id).subquery())
    return (sa.select(p.c.item_id, p.c.probs, p.c.signals, p.c.route, p.c.reason, m.c.name)
            .join(newest, newest.c.id == p.c.id).join(m, m.c.id == p.c.model_version_id))


def likely_pair(probs: list[float]) -> tuple[int, int]:
    """The two most probable class codes, most probable first (ties: the lower code first)."""
    order = np.argsort(-np.asarray(probs, dtype=float), kind="stable")
    return int(order[0]), int(order[1])


def skill_history(conn: Connection, annotator_id: int, stream_ids: list[int]) -> pd.DataFrame:
    """The annotator's labels on resolved items: stream_id, label, resolved (current label)."""
    rows = conn.execute(_skill_history_select(), {"annotator_id": annotator_id, "stream_ids": list(stream_ids)}).all()
    return pd.DataFrame(int_rows(rows, 3), columns=["stream_id", "label", "resolved"])


@functools.cache
def _skill_history_select() -> sa.Select:
    # Built once with bound parameters, as _candidates_select: it runs on every claim.
    a, r = S.annotations, S.resolutions
    later = S.resolutions.alias("later")
    current = ~sa.exists().where(later.c.supersedes_id == r.c.id)
    return (sa.select(a.c.stream_id, a.c.label, r.c.label).select_from(a)
            .join(r, (r.c.item_id == a.c.item_id) & current)
            .where(a.c.annotator_id == sa.bindparam("annotator_id"),
                   a.c.stream_id.in_(sa.bindparam("stream_ids", expanding=True))))


def pair_skill(history: pd.DataFrame, stream_id: int, pair: tuple[int, int] | None) -> float:
    """Agreement with resolved labels on items resolved as either class of ``pair``, shrunk
    towards the overall agreement in the stream (itself shrunk towards 1/2)."""
    own = history[history["stream_id"] == stream_id]
    right = own["label"] == own["resolved"]
    overall = (right.sum() + 1.0) / (len(own) + 2.0)
    if pair is None:
        return float(overall)
    on = own["resolved"].isin(pair)
    return float((right[on].sum() + PAIR_PRIOR_WEIGHT * overall) / (on.sum() + PAIR_PRIOR_WEIGHT))


def candidate_skills(history: pd.DataFrame, stream_ids: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """:func:`pair_skill` of many candidates at once, from counts tallied once per call.

    Parameters
    ----------
    history : DataFrame
        :func:`skill_history`: stream_id, label, resolved.
    stream_ids : (n,) int array
    pairs : (n, 2) int array
        Each candidate's likely pair (two distinct class codes), or ``-1`` twice for none.

    Returns
    -------
    (n,) float array, equal to ``pair_skill`` row by row (the same integer counts and float
    operations, in the same order).
    """
    n = len(stream_ids)
    out = np.empty(n, dtype=float)
    streams = history["stream_id"].to_numpy(dtype=np.int64)
    labels = history["label"].to_numpy(dtype=np.int64)
    resolved = history["resolved"].to_numpy(dtype=np.int64)
    width = int(max(resolved.max(initial=0), pairs.max(initial=0))) + 1
    for stream_id in np.unique(stream_ids):
        rows = stream_ids == stream_id
        own = streams == stream_id
        right = labels[own] == resolved[own]
        overall = (int(right.sum()) + 1.0) / (int(own.sum()) + 2.0)
        # Per resolved class: how many of the annotator's labels, how many of them right.
        on_class = np.bincount(resolved[own], minlength=width)
        right_class = np.bincount(resolved[own][right], minlength=width)
        has = pairs[rows, 0] >= 0
        first, second = np.maximum(pairs[rows, 0], 0), np.maximum(pairs[rows, 1], 0)  # (masked by ``has``)
        on = np.where(has, on_class[first] + on_class[second], 0)
        hits = np.where(has, right_class[first] + right_class[second], 0)
        skill = (hits + PAIR_PRIOR_WEIGHT * overall) / (on + PAIR_PRIOR_WEIGHT)
        out[rows] = np.where(has, skill, overall)
    return out


def rank(conn: Connection, annotator_id: int, found: pd.DataFrame) -> list[int]:
    """Candidate task ids, best first: pair skill (in steps of SKILL_STEP), then urgency."""
    return rank_with_predictions(conn, annotator_id, found)[0]


def rank_with_predictions(conn: Connection, annotator_id: int,
                          found: pd.DataFrame) -> tuple[list[int], dict[int, tuple]]:
    """:func:`rank`, and the candidates' latest predictions it read (item id -> prediction),
    so that the claimed task's preview need not read its own again."""
    if found.empty:
        return [], {}
    item_ids = found["item_id"].to_numpy(dtype=np.int64)
    stream_ids = found["stream_id"].to_numpy(dtype=np.int64)
    preds = latest_predictions(conn, item_ids.tolist())
    history = skill_history(conn, annotator_id, sorted(set(stream_ids.tolist())))
    pairs = np.full((len(found), 2), -1, dtype=np.int64)
    for row, item_id in enumerate(item_ids.tolist()):
        pred = preds.get(item_id)
        if pred is not None:
            pairs[row] = likely_pair(pred[0])
    key = -np.round(candidate_skills(history, stream_ids, pairs) / SKILL_STEP)
    order = np.lexsort((np.arange(len(found)), key))  # stable: urgency order within a skill step
    # Items without a prediction are known to have none: the preview must not look again.
    return found["task_id"].to_numpy(dtype=np.int64)[order].tolist(), {i: preds.get(i) for i in item_ids.tolist()}


def claim(conn: Connection, ranked: list[int], annotator_id: int, *, now: datetime, actor: str | None) -> int | None:
    """Claim the first task of ``ranked`` still open (skipping ones another caller holds)."""
    t = S.tasks
    if not ranked:
        return None
    if conn.dialect.name == "postgresql":
        # One statement for the whole ranking: the first task in rank order that is open, not
        # in the other tool and not locked by another caller is locked and assigned.
        done = conn.execute(_claim_update(), {"ranked": ranked, "annotator_id": annotator_id, "now": now}).first()
        if done is None:
            return None
        task_id = done.id
    else:
        for task_id in ranked:
            done = conn.execute(t.update().where(t.c.id == task_id, t.c.status == "open",
                                                 t.c.id.not_in(in_other_tool()))
                                .values(status="assigned", annotator_id=annotator_id, assigned_at=now)
                                .returning(t.c.id, t.c.stream_id, t.c.item_id)).first()
            if done is not None:
                break
        else:
            return None
    record_events(conn, [{"action": "task.assigned", "entity": "task", "entity_id": task_id,
                          "stream_id": done.stream_id, "item_id": done.item_id,
                          "before": {"status": "open"},
                          "after": {"status": "assigned", "annotator_id": annotator_id}}],
                  actor=actor, reason="next task")
    return task_id


@functools.cache
def _claim_update() -> sa.Update:
    t = S.tasks
    ranked = sa.bindparam("ranked", type_=ARRAY(sa.BigInteger))
    # In rank order (the position in the array); SKIP LOCKED: never wait on nor take a task
    # another caller is claiming. A task changed meanwhile is re-checked against the WHERE.
    first = (sa.select(t.c.id).where(t.c.id == sa.func.any(ranked), t.c.status == "open",
                                     t.c.id.not_in(in_other_tool()))
             .order_by(sa.func.array_position(ranked, t.c.id)).limit(1)
             .with_for_update(skip_locked=True).scalar_subquery())
    return (t.update().where(t.c.id == first, t.c.status == "open")
            .values(status="assigned", annotator_id=sa.bindparam("annotator_id"), assigned_at=sa.bindparam("now"))
            .returning(t.c.id, t.c.stream_id, t.c.item_id))


# ----------------------------------------------------------------------------- answering

def task_row(conn: Connection, task_id: Any, *, lock: bool = False):
    if isinstance(task_id, bool) or not isinstance(task_id, (int, np.integer)):
        raise fail(TASK_ID, "an integer task id", _describe(task_id))
    row = conn.execute(_task_select(lock and conn.dialect.name == "postgresql"), {"id": int(task_id)}).first()
    if row is None:
        raise NotFoundError(f"The 'task_id' argument must be the id of a stored task. Got {task_id!r} instead.")
    return row


@functools.cache
def _task_select(lock: bool) -> sa.Select:
    t = S.tasks
    query = sa.select(t).where(t.c.id == sa.bindparam("id"))
    return query.with_for_update() if lock else query


def answer_key(task_id: int, key: str | None) -> str:
    """The stored idempotency key of an answer: scoped to the task (only its assignee answers
    it), so two people's keys never collide; without a key, one answer per task."""
    if key is not None and (not isinstance(key, str) or not key or len(key) > S.MAX_KEY_CHARS - 24):
        raise fail(IDEMPOTENCY_KEY, f"a non-empty string of at most {S.MAX_KEY_CHARS - 24} characters", _describe(key))
    return f"task:{task_id}" + ("" if key is None else f":{key}")


def answer_content(stream: Stream, label: Any, *, rationale: Any, evidence: Any, seconds: Any,
                   flags: Any) -> dict[str, Any]:
    """The caller's content in stored form, validated (a retry must send the same).

    What an API answer sends (a class name or code, text or nothing, a number or nothing, a
    list of flags) is checked as scalars; anything else goes through the batch checks of
    :func:`_answer_content_frame`, which this equals value for value and error for error
    (a property test)."""
    code = _label_code(stream, label)
    rat = _plain_rationale(rationale)
    sec = seconds if seconds is None or _plain_seconds(seconds) else _MISSING
    if code is _MISSING or rat is _MISSING or sec is _MISSING:
        return _answer_content_frame(stream, label, rationale=rationale, evidence=evidence, seconds=seconds,
                                     flags=flags)
    flag = None if flags is None or (isinstance(flags, float) and flags != flags) else \
        _annotations._flag_list(flags, 0)
    return {"label": code, "rationale": rat, "evidence": json_text(evidence, EVIDENCE),
            "seconds": None if sec is None else float(sec), "flags": flag}


_MISSING: Final = object()  # "not a plain value: let the batch checks judge it"


def _label_code(stream: Stream, label: Any) -> Any:
    if type(label) is str:
        return stream.classes.index(label) if label in stream.classes else _MISSING
    if type(label) is int and 0 <= label < len(stream.classes):
        return label
    return _MISSING


def _plain_rationale(rationale: Any) -> Any:
    if rationale is None:
        return None
    if type(rationale) is not str or _text_problem(rationale, max_chars=S.MAX_RATIONALE_CHARS, empty=True):
        return _MISSING
    return rationale or None  # an empty rationale is no rationale (_annotations._rationales)


def _plain_seconds(seconds: Any) -> bool:
    # Ints only up to 2**53, where float() is exact (as pandas' conversion of the column).
    return (type(seconds) is float and math.isfinite(seconds) and seconds >= 0) or \
        (type(seconds) is int and 0 <= seconds <= 2 ** 53)


def _answer_content_frame(stream: Stream, label: Any, *, rationale: Any, evidence: Any, seconds: Any,
                          flags: Any) -> dict[str, Any]:
    """:func:`answer_content` through the batch checks of :func:`_annotations.prepare` on one row."""
    probe = pd.DataFrame({LABEL: [label]})
    code = int(_annotations.label_codes(probe[LABEL], stream, LABEL).iloc[0])
    rat = _annotations._rationales(pd.Series([rationale], dtype=object), 1).iloc[0]
    sec = _annotations._reals(pd.Series([seconds], dtype=object) if seconds is not None else None, 1, SECONDS,
                              low=0.0).iloc[0]
    flag = _annotations._flags(pd.Series([flags], dtype=object), 1).iloc[0]
    return {"label": code, "rationale": rat, "evidence": json_text(evidence, EVIDENCE),
            "seconds": None if pd.isna(sec) else float(sec), "flags": flag}


def stored_content(row) -> dict[str, Any]:
    return {"label": int(row.label), "rationale": row.rationale, "evidence": json_text(row.evidence, EVIDENCE),
            "seconds": None if row.seconds is None else float(row.seconds),
            "flags": json_text(row.flags, FLAGS) if isinstance(row.flags, list) else row.flags}


def existing_answer(conn: Connection, key: str):
    return conn.execute(_existing_answer_select(), {"key": key}).first()


@functools.cache
def _existing_answer_select() -> sa.Select:
    return sa.select(S.annotations).where(S.annotations.c.idempotency_key == sa.bindparam("key"))


def shown_suggestion(conn: Connection, task, stream: Stream) -> tuple[int | None, float | None]:
    """What the annotator was shown: the latest prediction's label and confidence (nothing on
    a blind task)."""
    if task.blind:
        return None, None
    pred = latest_predictions(conn, [task.item_id]).get(task.item_id)
    if pred is None:
        return None, None
    probs = np.asarray(pred[0], dtype=float)
    return int(np.argmax(probs)), float(np.max(probs))


def shown_guideline_text(conn: Connection, task):
    """The version and text of the guideline a task shows (:func:`shown_guideline`), or None."""
    if task.guideline_version_id is not None:
        return conn.execute(_guideline_select(own=True, text=True), {"id": task.guideline_version_id}).one()
    return conn.execute(_guideline_select(own=False, text=True), {"stream_id": task.stream_id}).first()


def shown_guideline(conn: Connection, task) -> int | None:
    """The guideline version id a task shows: its own, else the newest published one."""
    if task.guideline_version_id is not None:
        return task.guideline_version_id
    return conn.execute(_guideline_select(own=False, text=False), {"stream_id": task.stream_id}).scalar()


@functools.cache
def _guideline_select(*, own: bool, text: bool) -> sa.Select:
    """The task's own version (``own``: by id) or its stream's newest published one, as
    (version, text) or (``text`` False) its id. Built once: every next and answer runs one."""
    g = S.guideline_versions
    query = sa.select(g.c.version, g.c.text) if text else sa.select(g.c.id)
    if own:
        return query.where(g.c.id == sa.bindparam("id"))
    return (query.where(g.c.stream_id == sa.bindparam("stream_id"), g.c.published_at.is_not(None))
            .order_by(g.c.version.desc()).limit(1))


def answer_row(conn: Connection, stream: Stream, task, annotator: str, content: dict[str, Any], *, key: str,
               source: str, now: datetime) -> tuple:
    """One answer as the driver stores it: the row of :func:`_annotations.row_tuples` of what
    :func:`_annotations.prepare` makes of it (same cells, checks and content hash), built from
    scalars without a frame: the content is already checked
    (:func:`answer_content`), the item and task are the task's own, so only the annotator,
    what was shown and the source are left to check, without a batch's frame machinery."""
    annotator_id = _annotations.annotator_ids(conn, stream, [annotator])[annotator]
    suggestion, confidence = shown_suggestion(conn, task, stream)
    if suggestion is not None and not (0 <= suggestion < len(stream.classes)):
        raise fail(SUGGESTION, f"class codes 0..{len(stream.classes) - 1} or names in {list(stream.classes)} "
                   f"(stream {stream.name!r})", f"{suggestion!r} on 1 rows")
    if confidence is not None and not (np.isfinite(confidence) and 0.0 <= confidence <= 1.0):
        raise fail(SUGGESTION_CONFIDENCE, "finite numbers in [0.0, 1.0)", f"values from {confidence} to {confidence}")
    gv = shown_guideline(conn, task)
    if gv is not None:
        g = S.guideline_versions
        version, published = conn.execute(sa.select(g.c.version, g.c.published_at).where(g.c.id == gv)).one()
        if published is None:
            raise fail(GUIDELINE_VERSION, "published guideline versions", f"unpublished (draft) versions {[version]}")
    source = check_text(source, SOURCE, max_chars=_annotations.MAX_SOURCE_CHARS)
    key = check_text(key, IDEMPOTENCY_KEY, max_chars=S.MAX_KEY_CHARS)

    # The cells of _annotations.prepare's frame, as row_tuples hands them to the driver.
    cells = {"stream_id": int(stream.id), "task_id": int(task.id), "item_id": int(task.item_id),
             "annotator_id": annotator_id, "label": int(content["label"]), "rationale": _cell(content["rationale"]),
             "evidence": _cell(content["evidence"]), "seconds": _cell(content["seconds"]), "suggestion": suggestion,
             "suggestion_confidence": _cell(confidence), "guideline_version_id": None if gv is None else int(gv),
             "created_at": stamp_params(pd.Series(pd.DatetimeIndex([now])), conn.dialect.name)[0],
             "idempotency_key": key, "flags": _cell(content["flags"]), "source": source}
    cells["content_hash"] = content_hash_row([(_HASH_KINDS[c], cells[c]) for c in _annotations._HASHED])
    return tuple(cells[c] for c in _annotations.STORED)


# How content_hash sees each hashed column of an answer (its dtype in _annotations.prepare).
_HASH_KINDS: Final = {"item_id": "int", "annotator_id": "int", "label": "int", "rationale": "text",
                      "evidence": "text", "seconds": "float", "suggestion": "int", "suggestion_confidence": "float",
                      "guideline_version_id": "int", "task_id": "int", "flags": "text"}


def _cell(value: Any) -> Any:
    """A cell as the driver gets it: missing (None, NaN, NA) as None, numpy scalars as Python's."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def write_answer(conn: Connection, stream: Stream, task, annotator: str, content: dict[str, Any], *,
                 key: str, source: str, now: datetime, actor: str | None) -> None:
    row = answer_row(conn, stream, task, annotator, content, key=key, source=source, now=now)
    _annotations.insert_rows(conn, [row], actor=actor, reason=None)
    t = S.tasks
    conn.execute(t.update().where(t.c.id == task.id).values(status="done", completed_at=now))
    record_events(conn, [{"action": "task.completed", "entity": "task", "entity_id": int(task.id),
                          "stream_id": task.stream_id, "item_id": task.item_id, "before": {"status": task.status},
                          "after": {"status": "done", "label": content["label"]}}], actor=actor, reason=None)


def check_answerable(task, annotator_id: int) -> None:
    if task.annotator_id != annotator_id:
        raise ForbiddenError(f"Task {task.id} is not assigned to this annotator; only its assignee may answer it.")
    if task.status != "assigned":
        raise ConflictError(f"Task {task.id} is {task.status}, not assigned: it takes no (further) answer.")


# ----------------------------------------------------------------------------- disputes

def dispute_row(conn: Connection, dispute_id: int):
    return conn.execute(sa.select(S.disputes).where(S.disputes.c.id == dispute_id)).one()


def to_dispute(row, stream: Stream, item_ext: str, annotator: str | None) -> Dispute:
    return Dispute(id=row.id, stream=stream.name, item_id=item_ext, annotator=annotator, target=row.target,
                   label=row.label, reason=row.reason, status=row.status,
                   adjudication_task_id=row.adjudication_task_id, created_at=row.created_at, due_at=row.due_at,
                   escalated_at=row.escalated_at, closed_at=row.closed_at, idempotency_key=row.idempotency_key)


def open_adjudication(conn: Connection, item_id: int) -> int | None:
    t = S.tasks
    return conn.execute(sa.select(t.c.id).where(t.c.item_id == item_id, t.c.kind == "adjudication",
                                                t.c.status.in_(UNFINISHED)).order_by(t.c.id).limit(1)).scalar()


def close_disputes(conn: Connection, stream: Stream, task, label: int, *, now: datetime, actor: str | None) -> None:
    """An adjudication task was answered: its disputes close; when the adjudicated label
    differs from the item's current resolution it supersedes it (method ``adjudicated``), and
    an unresolved item gets it as its first resolution."""
    d = S.disputes
    open_ = conn.execute(sa.select(d.c.id).where(d.c.adjudication_task_id == task.id, d.c.status == "open")).all()
    if not open_:
        return
    current = _resolutions._current(conn, stream, [task.item_id]).get(task.item_id)
    changed = current is None or current[1] != label
    if changed:
        item_ext = conn.execute(sa.select(S.items.c.external_id).where(S.items.c.id == task.item_id)).scalar_one()
        prepared = _resolutions.prepare(conn, stream, [{
            ITEM: item_ext, LABEL: label, "method": "adjudicated", "supersedes": None if current is None else current[0],
            IDEMPOTENCY_KEY: f"adjudication:{task.id}", "reason": f"adjudication task {task.id}"}], method=None)
        _resolutions.insert(conn, stream, prepared, actor=actor, reason=f"adjudication task {task.id}")
    status = "resolved" if changed else "rejected"
    ids = [r.id for r in open_]
    conn.execute(d.update().where(d.c.id.in_(ids)).values(status=status, closed_at=now))
    record_events(conn, [{"action": f"dispute.{status}", "entity": "dispute", "entity_id": i, "stream_id": stream.id,
                          "item_id": task.item_id, "before": {"status": "open"},
                          "after": {"status": status, "label": label, "adjudication_task_id": int(task.id)}}
                         for i in ids], actor=actor, reason=None)


# ----------------------------------------------------------------------------- SLAs, queues

def escalate(conn: Connection, now: datetime) -> Escalation:
    t, d = S.tasks, S.disputes
    tasks = conn.execute(sa.update(t).where(t.c.status.in_(UNFINISHED), t.c.due_at < now, t.c.escalated_at.is_(None))
                         .values(escalated_at=now).returning(t.c.id, t.c.stream_id, t.c.item_id, t.c.due_at)).all()
    disputes = conn.execute(sa.update(d).where(d.c.status == "open", d.c.due_at < now, d.c.escalated_at.is_(None))
                            .values(escalated_at=now).returning(d.c.id, d.c.stream_id, d.c.item_id, d.c.due_at)).all()
    record_events(conn, [{"action": f"{entity}.escalated", "entity": entity, "entity_id": r.id,
                          "stream_id": r.stream_id, "item_id": r.item_id,
                          "after": {"due_at": r.due_at.isoformat(), "escalated_at": now.isoformat()}}
                         for entity, rows in (("task", tasks), ("dispute", disputes)) for r in rows],
                  actor=SLA_ACTOR, reason="past its SLA")
    return Escalation(tasks=tuple(sorted(r.id for r in tasks)), disputes=tuple(sorted(r.id for r in disputes)))


OWNER_QUEUE_COLUMNS: Final = ("entity", "id", "item_id", "kind", "status", "annotator_id", "due_at", "escalated_at")


def owner_queue(conn: Connection, stream: Stream) -> pd.DataFrame:
    """Escalated work still unfinished: tasks (open, assigned) and open disputes, oldest due first."""
    t, d, i, a = S.tasks, S.disputes, S.items, S.annotators
    tasks = conn.execute(sa.select(sa.literal("task"), t.c.id, i.c.external_id, t.c.kind, t.c.status, a.c.name,
                                   t.c.due_at, t.c.escalated_at)
                         .join(i, i.c.id == t.c.item_id).outerjoin(a, a.c.id == t.c.annotator_id)
                         .where(t.c.stream_id == stream.id, t.c.escalated_at.is_not(None),
                                t.c.status.in_(UNFINISHED))).all()
    disputes = conn.execute(sa.select(sa.literal("dispute"), d.c.id, i.c.external_id, d.c.target, d.c.status,
                                      a.c.name, d.c.due_at, d.c.escalated_at)
                            .join(i, i.c.id == d.c.item_id).outerjoin(a, a.c.id == d.c.annotator_id)
                            .where(d.c.stream_id == stream.id, d.c.escalated_at.is_not(None),
                                   d.c.status == "open")).all()
    frame = pd.DataFrame([tuple(r) for r in tasks + disputes], columns=list(OWNER_QUEUE_COLUMNS))
    return frame.sort_values(["due_at", "entity", "id"], kind="stable").reset_index(drop=True)


def queue_metrics(conn: Connection, now: datetime) -> QueueMetrics:
    t, d, a, st = S.tasks, S.disputes, S.annotations, S.streams
    rows = conn.execute(sa.select(st.c.name, t.c.tier, t.c.status, sa.func.count(), sa.func.min(t.c.created_at),
                                  sa.func.sum(sa.case((t.c.due_at < now, 1), else_=0)))
                        .join(st, st.c.id == t.c.stream_id).where(t.c.status.in_(UNFINISHED))
                        .group_by(st.c.name, t.c.tier, t.c.status)).all()
    queues = pd.DataFrame([(s, int(tier), status, int(n), (now - oldest).total_seconds(), int(late or 0))
                           for s, tier, status, n, oldest, late in rows],
                          columns=["stream", "tier", "status", "depth", "oldest_seconds", "overdue"])
    names = dict(conn.execute(sa.select(st.c.id, st.c.name)).all())
    answers = dict(conn.execute(sa.select(a.c.stream_id, sa.func.count()).where(a.c.created_at >= now - timedelta(minutes=1))
                                .group_by(a.c.stream_id)).all())
    escalated = dict(conn.execute(sa.select(t.c.stream_id, sa.func.count()).where(t.c.escalated_at.is_not(None))
                                  .group_by(t.c.stream_id)).all())
    d_escalated = dict(conn.execute(sa.select(d.c.stream_id, sa.func.count()).where(d.c.escalated_at.is_not(None))
                                    .group_by(d.c.stream_id)).all())
    d_open = dict(conn.execute(sa.select(d.c.stream_id, sa.func.count()).where(d.c.status == "open")
                               .group_by(d.c.stream_id)).all())
    streams = pd.DataFrame([(name, int(answers.get(id_, 0)), int(escalated.get(id_, 0)), int(d_escalated.get(id_, 0)),
                             int(d_open.get(id_, 0))) for id_, name in sorted(names.items(), key=lambda kv: kv[1])],
                           columns=["stream", "answers_last_minute", "tasks_escalated", "disputes_escalated",
                                    "disputes_open"])
    return QueueMetrics(queues=queues.sort_values(["stream", "tier", "status"]).reset_index(drop=True), streams=streams)


# ----------------------------------------------------------------------------- previews

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _sections(text: str) -> list[tuple[int, set[str], int, int]]:
    """(level, lower-case words of the heading, first line, end line) of each heading."""
    lines = text.splitlines()
    heads = [(i, len(m.group(1)), set(re.findall(r"[\w-]+", m.group(2).lower())))
             for i, line in enumerate(lines) if (m := _HEADING.match(line))]
    out = []
    for n, (start, level, words) in enumerate(heads):
        end = next((s for s, lv, _ in heads[n + 1:] if lv <= level), len(lines))
        out.append((level, words, start, end))
    return out


def guideline_section(text: str, pair: tuple[str, str] | None) -> str:
    """The part of a markdown guideline about a class pair (see the module's docstring).

    Examples
    --------
    >>> text = "# Sentiment\\nBe kind.\\n## neg vs pos\\nSarcasm is neg.\\n## neu\\nNo opinion."
    >>> guideline_section(text, ("pos", "neg"))
    '## neg vs pos\\nSarcasm is neg.'
    >>> guideline_section(text, ("neu", "pos")) == text
    False
    >>> guideline_section(text, None) == text
    True
    """
    if pair is None:
        return text
    lines = text.splitlines()
    a, b = (str(c).lower() for c in pair)
    sections = _sections(text)
    for _, words, start, end in sections:
        if a in words and b in words:
            return "\n".join(lines[start:end]).strip()
    single = []
    for cls in (a, b):
        found = next(((s, e) for _, words, s, e in sections if words == {cls}), None)
        if found is not None:
            single.append("\n".join(lines[found[0]:found[1]]).strip())
    return "\n\n".join(single) if single else text


def display_of(payload: Any, ref: str | None) -> str | None:
    if isinstance(payload, dict):
        for key in DISPLAY_KEYS:
            if isinstance(payload.get(key), str):
                return payload[key]
    if isinstance(payload, str):
        return payload
    return ref


def _features(payload: Any) -> np.ndarray | None:
    values = payload.get("features") if isinstance(payload, dict) else None
    if not isinstance(values, list) or not values:
        return None
    try:
        out = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return None
    return out if out.ndim == 1 and np.isfinite(out).all() else None


def nearest_examples(conn: Connection, stream: Stream, item_id: int, payload: Any, codes: tuple[int, int],
                     k: int = N_EXAMPLES) -> dict[str, list[dict[str, Any]]]:
    """Up to ``k`` resolved items of each class of the pair, nearest first by Euclidean
    distance between the payloads' ``features`` (when both have them), else newest first."""
    r, i = S.resolutions, S.items
    later = S.resolutions.alias("later")
    current = ~sa.exists().where(later.c.supersedes_id == r.c.id)
    target = _features(payload)
    out: dict[str, list[dict[str, Any]]] = {}
    for code in codes:
        rows = conn.execute(sa.select(i.c.external_id, i.c.payload, i.c.payload_ref).select_from(r)
                            .join(i, i.c.id == r.c.item_id)
                            .where(r.c.stream_id == stream.id, r.c.label == code, current, r.c.item_id != item_id)
                            .order_by(r.c.id.desc()).limit(EXAMPLE_POOL)).all()
        if target is not None:
            def distance(row):
                f = _features(row.payload)
                return np.inf if f is None or f.shape != target.shape else float(np.linalg.norm(f - target))
            rows = sorted(rows, key=distance)  # stable: newest first among equals
        out[stream.classes[code]] = [{ITEM: row.external_id, "display": display_of(row.payload, row.payload_ref)}
                                     for row in rows[:k]]
    return out


def suggestion_of(stream: Stream, pred: tuple | None) -> Suggestion | None:
    if pred is None:
        return None
    probs, _, route, reason, model = pred
    first, second = likely_pair(probs)
    return Suggestion(label=stream.classes[first], confidence=float(probs[first]), route=route, reason=reason,
                      confused_pair=(stream.classes[first], stream.classes[second]), model_version=model)
