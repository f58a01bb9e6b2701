"""The store's side of annotator impact: rounds as events, and the frames :mod:`loop.impact` counts.

A program round is not a column of annotations, resolutions, disputes or predictions: a
``round.closed`` event (entity ``round``, entity id the round) marks where each round ends, as
the newest annotation, resolution, dispute and prediction id stored when it closed (of any
stream: ids grow across streams, and the largest one is the cheapest to read), and holds the
resolver's skill estimates of that moment. A row belongs to the first round whose mark is at or
above its id; rows after the last mark belong to the round in progress (pending). A stream no
program ever closed a round of is one round, ``0``, judged as it stands. Ids, not clocks: a
simulation stamps annotations with simulated time, and ids grow in insertion order.

Reading one round costs what the round holds, not the stream's history: its rows by id range,
then every annotation and resolution of the items they name (what judging them needs), so a
long program's rounds stay flat.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any, Final

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..columns import ANNOTATOR, ITEM, LABEL
from ..impact import PREDICTED, RESOLUTION_ID, ROUND, SKILL, STATUS, SUPERSEDES, ImpactInputs
from . import _schema as S
from ._convert import in_stream_by_id, lookup_fast
from ._records import Stream
from ._writes import record_events

ROUND_CLOSED: Final = "round.closed"
_TABLES: Final = {"annotation": S.annotations, "resolution": S.resolutions, "dispute": S.disputes,
                  "prediction": S.predictions}


def close_round(conn: Connection, stream: Stream, round_: int, skills: Mapping[str, float], *,
                actor: str | None) -> dict[str, Any]:
    """Append the ``round.closed`` event of ``round_``; returns the mark it records."""
    mark: dict[str, Any] = {"round": round_}
    for name, table in _TABLES.items():
        mark[f"{name}_version"] = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(table.c.id), 0))).scalar())
    mark["skills"] = {k: float(v) for k, v in skills.items()}
    record_events(conn, [{"action": ROUND_CLOSED, "entity": "round", "entity_id": round_, "stream_id": stream.id,
                          "after": mark}], actor=actor, reason=None)
    return mark


def round_marks(conn: Connection, stream: Stream) -> list[dict[str, Any]]:
    """Every ``round.closed`` mark of the stream, oldest first."""
    e = S.events
    # A round's event names no item (close_round): "item_id IS NULL" lets the database find
    # the few item-less events through ix_events_item instead of reading every event (one per
    # answer, task step and resolution).
    rows = conn.execute(sa.select(e.c.entity_id, e.c.after).where(e.c.item_id.is_(None), e.c.stream_id == stream.id,
                                                                  e.c.action == ROUND_CLOSED).order_by(e.c.id)).all()
    return [{**after, "round": int(round_)} for round_, after in rows]


def _bounds(marks: list[dict], name: str) -> np.ndarray:
    # A later mark never lies below an earlier one (ids grow); be safe with a stale event anyway.
    return np.maximum.accumulate(np.array([m[f"{name}_version"] for m in marks], dtype=np.int64))


def _rounds(ids: pd.Series, marks: list[dict], name: str) -> np.ndarray:
    """The round of each id: the first mark at or above it, else the round in progress."""
    if not marks:
        return np.zeros(len(ids), dtype=np.int64)
    labels = np.array([m["round"] for m in marks] + [marks[-1]["round"] + 1], dtype=np.int64)
    return labels[np.searchsorted(_bounds(marks, name), ids.to_numpy(dtype=np.int64), side="left")]


def _ranges(marks: list[dict], name: str, rounds: Collection[int]) -> list[tuple[int, int | None]]:
    """The id ranges ``(after, up_to]`` of ``rounds`` (``up_to`` None: the round in progress)."""
    if not marks:
        return [(0, None)]
    bounds, labels = _bounds(marks, name), [m["round"] for m in marks]
    out = []
    for k, label in enumerate(labels):
        if label in rounds:
            out.append((int(bounds[k - 1]) if k else 0, int(bounds[k])))
    if marks[-1]["round"] + 1 in rounds:
        out.append((int(bounds[-1]), None))
    return out


def _in_ranges(column: sa.Column, ranges: list[tuple[int, int | None]]):
    parts = [(column > lo) if hi is None else ((column > lo) & (column <= hi)) for lo, hi in ranges]
    return sa.or_(*parts) if parts else sa.false()


def impact_inputs(conn: Connection, stream: Stream, marks: list[dict] | None = None,
                  rounds: Collection[int] | None = None) -> ImpactInputs:
    """The frames of the whole history, or (``rounds``) of those rounds' rows and the items
    they name: the rows of ``rounds`` in :func:`loop.impact.annotator_impact`'s table are then
    the same as from the whole history."""
    marks = round_marks(conn, stream) if marks is None else marks
    a, r, d = S.annotations, S.resolutions, S.disputes
    where_d = d.c.stream_id == stream.id
    items: list[int] | None = None
    if rounds is not None:
        # The rounds' rows by id range, not by walking the stream's index (in_stream_by_id).
        rounds = set(rounds)
        spans = {name: _ranges(marks, name, rounds) for name in ("dispute", "annotation", "resolution")}
        lowest = {name: min((lo for lo, _ in ranges), default=0) for name, ranges in spans.items()}
        where_d = in_stream_by_id(conn, d.c.stream_id, stream.id, lowest["dispute"]) & \
            _in_ranges(d.c.id, spans["dispute"])
        new_a = conn.execute(sa.select(a.c.item_id).where(
            in_stream_by_id(conn, a.c.stream_id, stream.id, lowest["annotation"]),
            _in_ranges(a.c.id, spans["annotation"]))).scalars().all()
        new_r = conn.execute(sa.select(r.c.item_id).where(
            in_stream_by_id(conn, r.c.stream_id, stream.id, lowest["resolution"]),
            _in_ranges(r.c.id, spans["resolution"]))).scalars().all()
        new_d = conn.execute(sa.select(d.c.item_id).where(where_d)).scalars().all()
        items = sorted(set(new_a) | set(new_r) | set(new_d))
    return _inputs(conn, stream, marks, rounds, answer_items=items, history_items=items, where_d=where_d)


def annotator_inputs(conn: Connection, stream: Stream, annotator_id: int,
                     marks: list[dict] | None = None) -> ImpactInputs:
    """The frames whose table has the same rows for ``annotator_id`` as the whole history's,
    at the cost of what that annotator touched, not of the stream's history.

    Their rows need: every answer on the items they answered or disputed (who else gave the
    same label), the resolution chains of those items (the current label; the changes they
    backed), their own disputes, and each of their rounds' denominator, the round's label
    changes the retrained model agrees with: the chains of the items changed in their rounds
    (without those items' answers: the annotator gave none) and those items' next predictions.
    Other annotators' rows of this table are incomplete.
    """
    marks = round_marks(conn, stream) if marks is None else marks
    a, r, d = S.annotations, S.resolutions, S.disputes
    answered = conn.execute(sa.select(a.c.id, a.c.item_id).where(a.c.stream_id == stream.id,
                                                                  a.c.annotator_id == annotator_id)).all()
    where_d = (d.c.stream_id == stream.id) & (d.c.annotator_id == annotator_id)
    disputed = conn.execute(sa.select(d.c.id, d.c.item_id).where(where_d)).all()
    rounds = set(_rounds(pd.Series([row[0] for row in answered], dtype=np.int64), marks, "annotation").tolist()) | \
        set(_rounds(pd.Series([row[0] for row in disputed], dtype=np.int64), marks, "dispute").tolist())
    changed = conn.execute(sa.select(r.c.item_id).where(
        r.c.stream_id == stream.id, r.c.supersedes_id.isnot(None),
        _in_ranges(r.c.id, _ranges(marks, "resolution", rounds)))).scalars().all() if rounds else []
    mine = {row[1] for row in answered} | {row[1] for row in disputed}
    return _inputs(conn, stream, marks, rounds, answer_items=sorted(mine), history_items=sorted(mine | set(changed)),
                   where_d=where_d)


def _inputs(conn: Connection, stream: Stream, marks: list[dict], rounds: Collection[int] | None, *,
            answer_items: list[int] | None, history_items: list[int] | None, where_d) -> ImpactInputs:
    """The frames of the answers on ``answer_items``, the resolutions of ``history_items`` (None:
    every item of the stream), the disputes of ``where_d``, and the skills of ``rounds``."""
    a, r, d = S.annotations, S.resolutions, S.disputes
    items = history_items
    ann = _select(conn, a, [a.c.id, a.c.item_id, a.c.annotator_id, a.c.label], stream, answer_items,
                  ["id", "item_key", "who", LABEL])
    res = _select(conn, r, [r.c.id, r.c.item_id, r.c.label, r.c.supersedes_id], stream, history_items,
                  [RESOLUTION_ID, "item_key", LABEL, SUPERSEDES])
    dis = _rows_frame(conn.execute(sa.select(d.c.id, d.c.item_id, d.c.annotator_id, d.c.label, d.c.status)
                                   .where(where_d, d.c.annotator_id.isnot(None)).order_by(d.c.id)).all(),
                      ["id", "item_key", "who", LABEL, STATUS])
    names = dict(conn.execute(sa.select(S.annotators.c.id, S.annotators.c.name)).all())
    if items is None:  # every item of the stream: one query, not a lookup in chunks
        external = dict(conn.execute(sa.select(S.items.c.id, S.items.c.external_id)
                                     .where(S.items.c.stream_id == stream.id)).all())
    else:
        keys = pd.concat([ann["item_key"], res["item_key"], dis["item_key"]]).unique().tolist()
        external = dict(lookup_fast(conn, "items", "id", keys, ("id", "external_id")))
    answers = pd.DataFrame({ITEM: ann["item_key"].map(external).astype(object),
                            ANNOTATOR: ann["who"].map(names).astype(object),
                            LABEL: ann[LABEL].astype(np.int64), ROUND: _rounds(ann["id"], marks, "annotation")})
    history = pd.DataFrame({RESOLUTION_ID: res[RESOLUTION_ID].astype(np.int64),
                            ITEM: res["item_key"].map(external).astype(object), LABEL: res[LABEL].astype(np.int64),
                            SUPERSEDES: res[SUPERSEDES].astype("Int64"),
                            ROUND: _rounds(res[RESOLUTION_ID], marks, "resolution"), "item_key": res["item_key"]})
    disputes = pd.DataFrame({ITEM: dis["item_key"].map(external).astype(object),
                             ANNOTATOR: dis["who"].map(names).astype(object), LABEL: dis[LABEL].astype("Int64"),
                             STATUS: dis[STATUS].astype(object), ROUND: _rounds(dis["id"], marks, "dispute")})
    skills = pd.DataFrame([(m["round"], name, value) for m in marks for name, value in m.get("skills", {}).items()
                           if rounds is None or m["round"] in rounds], columns=[ROUND, ANNOTATOR, SKILL])
    return ImpactInputs(answers=answers, history=history.drop(columns="item_key"), disputes=disputes,
                        next_predictions=_next_predictions(conn, history, marks), skills=skills,
                        closed_round=marks[-1]["round"] if marks else None)


def _rows_frame(rows: list, names: list[str]) -> pd.DataFrame:
    """Rows as a frame, column by column (pandas probes a SQLAlchemy Row for namedtuple fields,
    one failing key lookup a row: ~70 us each)."""
    columns = list(zip(*rows)) if rows else [()] * len(names)
    return pd.DataFrame({name: pd.Series(list(values), dtype=object) for name, values in zip(names, columns)})


def _select(conn: Connection, table: sa.Table, columns: list[sa.Column], stream: Stream, items: list[int] | None,
            names: list[str]) -> pd.DataFrame:
    """The stream's rows (``items`` None) or those of ``items`` (in chunks: SQLite bounds the
    parameters of a query), ordered by id."""
    if items is None:
        rows = conn.execute(sa.select(*columns).where(table.c.stream_id == stream.id).order_by(columns[0])).all()
    else:
        # The ids as one parameter (lookup_fast): an IN list of thousands cost more to build
        # than to run.
        mark = "?" if conn.dialect.name == "sqlite" else "%s"
        rows = lookup_fast(conn, table.name, "item_id", items, [c.name for c in columns],
                           where=f"{table.name}.stream_id = {mark}", params=(stream.id,))
    frame = _rows_frame(rows, names)
    return frame.sort_values(names[0], kind="stable").reset_index(drop=True)


def _next_predictions(conn: Connection, history: pd.DataFrame, marks: list[dict]) -> pd.DataFrame:
    """For each label change of a closed round, the class the item's first prediction stored
    after that round predicts (the model retrained after the round, or the champion that kept
    serving): ``item_id, round, predicted``."""
    empty = pd.DataFrame({ITEM: pd.Series(dtype=object), ROUND: pd.Series(dtype=np.int64),
                          PREDICTED: pd.Series(dtype=np.int64)})
    if not marks:
        return empty
    closed = {m["round"]: m["prediction_version"] for m in marks}
    changes = history[history[SUPERSEDES].notna() & history[ROUND].isin(list(closed))]
    if changes.empty:
        return empty
    p = S.predictions
    rows = lookup_fast(conn, "predictions", "item_id", changes["item_key"].astype(int).tolist(),
                       ("id", "item_id", "probs"))
    if not rows:
        return empty
    stored = _rows_frame(rows, ["id", "item_key", "probs"]).sort_values("id")
    # A stream's probabilities all have its class count: one array, one argmax. (The driver's
    # own cursor: SQLite hands the JSON over as text.)
    probs = [json.loads(v) if isinstance(v, str) else v for v in stored["probs"].tolist()]
    stored[PREDICTED] = np.asarray(probs, dtype=float).argmax(axis=1)
    wanted = changes[["item_key", ITEM, ROUND]].astype({"item_key": np.int64}).drop_duplicates()
    wanted["after"] = wanted[ROUND].map(closed).astype(np.int64) + 1
    found = pd.merge_asof(wanted.sort_values("after"),
                          stored[["id", "item_key", PREDICTED]].astype({"id": np.int64, "item_key": np.int64}),
                          left_on="after", right_on="id", by="item_key", direction="forward")
    found = found.dropna(subset=[PREDICTED])
    return found[[ITEM, ROUND, PREDICTED]].astype({PREDICTED: np.int64}).reset_index(drop=True)
