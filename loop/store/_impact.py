"""The store's side of annotator impact: rounds as events, and the frames :mod:`loop.impact` counts.

A program round is not a column of annotations, resolutions, disputes or predictions: a
``round.closed`` event (entity ``round``, entity id the round) marks where each round ends, as
the newest annotation, resolution, dispute and prediction id when it closed, and holds the
resolver's skill estimates of that moment. A row belongs to the first round whose mark is at or
above its id; rows after the last mark belong to the round in progress (pending). A stream no
program ever closed a round of is one round, ``0``, judged as it stands. Ids, not clocks: a
simulation stamps annotations with simulated time, and ids grow in insertion order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..columns import ANNOTATOR, ITEM, LABEL
from ..impact import PREDICTED, RESOLUTION_ID, ROUND, SKILL, STATUS, SUPERSEDES, ImpactInputs
from . import _schema as S
from ._convert import lookup
from ._records import Stream
from ._writes import record_events

ROUND_CLOSED: Final = "round.closed"
_MARKS: Final = ("annotation", "resolution", "dispute", "prediction")
_TABLES: Final = {"annotation": S.annotations, "resolution": S.resolutions, "dispute": S.disputes}


def close_round(conn: Connection, stream: Stream, round_: int, skills: Mapping[str, float], *,
                actor: str | None) -> dict[str, int]:
    """Append the ``round.closed`` event of ``round_``; returns its marks."""
    marks = {f"{name}_version": int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(table.c.id), 0))
                                                 .where(table.c.stream_id == stream.id)).scalar())
             for name, table in _TABLES.items()}
    p, i = S.predictions, S.items
    marks["prediction_version"] = int(conn.execute(
        sa.select(sa.func.coalesce(sa.func.max(p.c.id), 0)).join(i, i.c.id == p.c.item_id)
        .where(i.c.stream_id == stream.id)).scalar())
    record_events(conn, [{"action": ROUND_CLOSED, "entity": "round", "entity_id": round_, "stream_id": stream.id,
                          "after": {"round": round_, **marks, "skills": {k: float(v) for k, v in skills.items()}}}],
                  actor=actor, reason=None)
    return marks


def _marks(conn: Connection, stream: Stream) -> list[dict]:
    e = S.events
    rows = conn.execute(sa.select(e.c.entity_id, e.c.after).where(e.c.stream_id == stream.id,
                                                                  e.c.action == ROUND_CLOSED).order_by(e.c.id)).all()
    return [{**after, "round": int(round_)} for round_, after in rows]


def _rounds(ids: pd.Series, marks: list[dict], name: str) -> np.ndarray:
    """The round of each id: the first mark at or above it, else the round in progress."""
    if not marks:
        return np.zeros(len(ids), dtype=np.int64)
    bounds = np.array([m[f"{name}_version"] for m in marks], dtype=np.int64)
    # A later mark never lies below an earlier one (ids grow), but be safe with a stale event.
    bounds = np.maximum.accumulate(bounds)
    labels = np.array([m["round"] for m in marks] + [marks[-1]["round"] + 1], dtype=np.int64)
    return labels[np.searchsorted(bounds, ids.to_numpy(dtype=np.int64), side="left")]


def impact_inputs(conn: Connection, stream: Stream) -> ImpactInputs:
    marks = _marks(conn, stream)
    a, i, who, d = S.annotations, S.items, S.annotators, S.disputes
    rows = conn.execute(sa.select(a.c.id, i.c.external_id, who.c.name, a.c.label)
                        .join(i, i.c.id == a.c.item_id).join(who, who.c.id == a.c.annotator_id)
                        .where(a.c.stream_id == stream.id).order_by(a.c.id)).all()
    answers = pd.DataFrame(rows, columns=["id", ITEM, ANNOTATOR, LABEL])
    answers[ROUND] = _rounds(answers["id"], marks, "annotation")
    r = S.resolutions
    rows = conn.execute(sa.select(r.c.id, i.c.external_id, r.c.label, r.c.supersedes_id, r.c.item_id)
                        .join(i, i.c.id == r.c.item_id).where(r.c.stream_id == stream.id).order_by(r.c.id)).all()
    history = pd.DataFrame(rows, columns=[RESOLUTION_ID, ITEM, LABEL, SUPERSEDES, "item_key"])
    history[SUPERSEDES] = history[SUPERSEDES].astype("Int64")
    history[ROUND] = _rounds(history[RESOLUTION_ID], marks, "resolution")
    rows = conn.execute(sa.select(d.c.id, i.c.external_id, who.c.name, d.c.label, d.c.status)
                        .join(i, i.c.id == d.c.item_id).join(who, who.c.id == d.c.annotator_id)
                        .where(d.c.stream_id == stream.id).order_by(d.c.id)).all()
    disputes = pd.DataFrame(rows, columns=["id", ITEM, ANNOTATOR, LABEL, STATUS])
    disputes[LABEL] = disputes[LABEL].astype("Int64")
    disputes[ROUND] = _rounds(disputes["id"], marks, "dispute")
    skills = pd.DataFrame([(m["round"], name, value) for m in marks for name, value in m.get("skills", {}).items()],
                          columns=[ROUND, ANNOTATOR, SKILL])
    return ImpactInputs(answers=answers.drop(columns="id"), history=history.drop(columns="item_key"),
                        disputes=disputes.drop(columns="id"),
                        next_predictions=_next_predictions(conn, history, marks), skills=skills,
                        closed_round=marks[-1]["round"] if marks else None)


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
    rows = lookup(conn, p.c.item_id, changes["item_key"].astype(int).tolist(), p.c.id, p.c.item_id, p.c.probs)
    if not rows:
        return empty
    stored = pd.DataFrame(rows, columns=["id", "item_key", "probs"]).sort_values("id")
    stored[PREDICTED] = [int(np.argmax(np.asarray(v, dtype=float))) for v in stored["probs"]]
    wanted = changes[["item_key", ITEM, ROUND]].drop_duplicates().copy()
    wanted["after"] = wanted[ROUND].map(closed).astype(np.int64) + 1
    found = pd.merge_asof(wanted.sort_values("after"), stored[["id", "item_key", PREDICTED]].astype({"id": np.int64}),
                          left_on="after", right_on="id", by="item_key", direction="forward")
    found = found.dropna(subset=[PREDICTED])
    return found[[ITEM, ROUND, PREDICTED]].astype({PREDICTED: np.int64}).reset_index(drop=True)
