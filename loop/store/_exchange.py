"""Files in and out: Parquet and CSV frames, Label Studio task JSON (with pre-annotations)
and Label Studio JSON exports.

Label Studio's formats, as documented (labelstud.io/guide/predictions, /guide/task_format):
a task is ``{"data": {...}, "predictions": [{"model_version", "score", "result": [{"from_name",
"to_name", "type": "choices", "value": {"choices": [name]}}]}]}``; an export is a list of tasks
whose ``annotations`` hold ``completed_by``, ``result``, ``lead_time``, ``created_at`` and
``was_cancelled``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .._validation import fail
from ..labelstudio import TASK_ID as TASK_ID_KEY
from ..labelstudio import ControlNames, item_of, parse_answer, prediction, task_ids_of
from ..columns import ANNOTATOR, ITEM, LABEL, REASON, SECONDS
from . import _schema as S
from ._columns import (CONFIDENCE, CREATED_AT, EVIDENCE, GUIDELINE_VERSION, IDEMPOTENCY_KEY, METHOD, RATIONALE,
                       SUGGESTION, SUGGESTION_CONFIDENCE, SUPERSEDES, SUPERSEDES_KEY)
from ._convert import lookup
from ._records import Stream

FORMATS = (".parquet", ".csv")
# What an annotations file gives back to add_annotations. Task ids are local to one database,
# so they do not travel; the idempotency keys do.
_IMPORTED = (ITEM, ANNOTATOR, LABEL, SECONDS, RATIONALE, EVIDENCE, SUGGESTION, SUGGESTION_CONFIDENCE,
             GUIDELINE_VERSION, CREATED_AT, IDEMPOTENCY_KEY)
_TEXT_COLUMNS = {ITEM: str, ANNOTATOR: str, IDEMPOTENCY_KEY: str, SUPERSEDES_KEY: str, RATIONALE: str, REASON: str}


def _format(path: str | Path) -> tuple[Path, str]:
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise fail("path", f"a file name ending in one of {list(FORMATS)}", repr(str(path)))
    return path, path.suffix.lower()


def write_frame(frame: pd.DataFrame, path: str | Path) -> Path:
    path, kind = _format(path)
    out = frame.copy()
    if EVIDENCE in out:
        out[EVIDENCE] = [None if v is None else json.dumps(v, sort_keys=True) for v in out[EVIDENCE]]
    if kind == ".parquet":
        out.to_parquet(path, index=False)
    else:
        out.to_csv(path, index=False)
    return path


def read_frame(path: str | Path) -> pd.DataFrame:
    path, kind = _format(path)
    if not path.exists():
        raise fail("path", "an existing file", repr(str(path)))
    if kind == ".parquet":
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(path, dtype=_TEXT_COLUMNS, keep_default_na=True)
    if EVIDENCE in frame:
        frame[EVIDENCE] = [None if not isinstance(v, str) else json.loads(v) for v in frame[EVIDENCE]]
    for col in (RATIONALE, REASON, SUPERSEDES_KEY):
        if col in frame:
            frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    return frame


def annotations_for_import(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[[c for c in _IMPORTED if c in frame.columns]]


def resolution_batches(history: pd.DataFrame) -> list[pd.DataFrame]:
    """Split a resolution history into generations (first resolutions, their corrections,
    corrections of those, ...), so each batch only supersedes rows already stored."""
    need = {ITEM, LABEL, METHOD, IDEMPOTENCY_KEY, SUPERSEDES_KEY}
    if not need <= set(history.columns):
        raise fail("path", f"a resolutions export with columns {sorted(need)}", f"columns {list(history.columns)}")
    parent = dict(zip(history[IDEMPOTENCY_KEY], history[SUPERSEDES_KEY]))

    def depth(key: str) -> int:
        d = 0
        while isinstance(parent.get(key), str):
            key, d = parent[key], d + 1
        return d

    generation = history[IDEMPOTENCY_KEY].map(depth)
    return [history[generation == g] for g in sorted(generation.unique())]


def map_supersedes(batch: pd.DataFrame, ids_by_key: dict[str, int]) -> pd.DataFrame:
    """An exported batch as add_resolutions rows, with ``supersedes`` pointing at this
    database's ids (looked up by the superseded row's idempotency key)."""
    keys = batch[SUPERSEDES_KEY]
    missing = [k for k in keys.dropna() if k not in ids_by_key]
    if missing:
        raise fail(SUPERSEDES_KEY, "keys of resolutions stored earlier in the file or the store", f"{missing[:3]}")
    out = batch[[ITEM, LABEL, METHOD, IDEMPOTENCY_KEY]].copy()
    out[CONFIDENCE] = batch[CONFIDENCE] if CONFIDENCE in batch else np.nan
    out[SUPERSEDES] = [None if k is None else ids_by_key[k] for k in keys]
    if REASON in batch:
        out[REASON] = batch[REASON]
    return out


def item_payloads(conn: Connection, stream: Stream, external: list[str]) -> dict[str, tuple[Any, str | None]]:
    i = S.items
    return {e: (p, r) for e, p, r in lookup(conn, i.c.external_id, external, i.c.external_id, i.c.payload,
                                            i.c.payload_ref, where=i.c.stream_id == stream.id)}


def latest_predictions(conn: Connection, stream: Stream, external: list[str],
                       model_version: str | None) -> dict[str, tuple[str, list[float], str | None]]:
    """The newest prediction per item (of ``model_version`` when given): name, probs, reason."""
    p, i, m = S.predictions, S.items, S.model_versions
    where = i.c.stream_id == stream.id
    if model_version is not None:
        where = where & (m.c.name == model_version)
    query = (sa.select(i.c.external_id, m.c.name, p.c.probs, p.c.reason).join(i, i.c.id == p.c.item_id)
             .join(m, m.c.id == p.c.model_version_id).where(where, i.c.external_id.in_(external)).order_by(p.c.id))
    return {e: (name, probs, reason) for e, name, probs, reason in conn.execute(query)}


def task_data(ext: str, payload: Any, ref: str | None, to_name: str) -> dict[str, Any]:
    """An item's Label Studio task data: its payload's fields (or the payload under
    ``to_name``), the payload reference under ``to_name``, and its ``item_id``."""
    data = dict(payload) if isinstance(payload, dict) else ({to_name: payload} if payload is not None else {})
    if ref is not None:
        data.setdefault(to_name, ref)
    data[ITEM] = ext
    return data


def label_studio_tasks(stream: Stream, tasks: pd.DataFrame, items: dict, preds: dict, path: str | Path | None, *,
                       names: ControlNames) -> list[dict]:
    out = []
    for task in tasks.itertuples(index=False):
        ext = getattr(task, ITEM)
        payload, ref = items.get(ext, (None, None))
        data = task_data(ext, payload, ref, names.to_name)
        data[TASK_ID_KEY] = int(task.task_id)
        entry: dict[str, Any] = {"data": data}
        if ext in preds and not bool(getattr(task, "blind", False)):
            name, probs, reason = preds[ext]
            entry["predictions"] = [prediction(stream.classes, np.asarray(probs), model_version=name, reason=reason,
                                               names=names, result_id=f"labelloop-{int(task.task_id)}")]
        out.append(entry)
    if path is not None:
        Path(path).write_text(json.dumps(out, indent=1))
    return out


# The columns annotations_from_label_studio adds beyond add_annotations' own.
LS_USER: Final = "label_studio_user"
LS_ANNOTATION: Final = "label_studio_annotation_id"
LS_TASKS: Final = "labelloop_task_ids"


def annotations_from_label_studio(stream: Stream, source: str | Path | list, *, from_name: str | None,
                                  users: Mapping[int, str] | None = None) -> pd.DataFrame:
    """Rows for add_annotations from a Label Studio JSON export: one per (task, annotation)
    with a ``choices`` result; cancelled (skipped) annotations are left out.

    ``label_studio_user`` is the annotator's email: given by the export, or looked up in
    ``users`` (user id -> email, from ``GET /api/users/``) when the export names the user by
    id; ``labelloop_task_ids`` are the labelloop tasks the Label Studio task stands for."""
    tasks = json.loads(Path(source).read_text()) if isinstance(source, (str, Path)) else source
    if not isinstance(tasks, list):
        raise fail("source", "a Label Studio JSON export (a list of tasks)", f"a {type(tasks).__name__}")
    rows = []
    for n, task in enumerate(tasks):
        data = task.get("data", {}) if isinstance(task, dict) else {}
        item = item_of(data, f"task {n}")
        candidates = task_ids_of(data)
        for ann in task.get("annotations", []):
            answer = parse_answer(ann, from_name=from_name, where=f"task {n}")
            if answer is None:
                continue
            rows.append({ITEM: item, LS_USER: user_email(answer.user, users, f"task {n}"), LABEL: answer.label,
                         SECONDS: answer.seconds, RATIONALE: answer.rationale,
                         CREATED_AT: answer.created_at or pd.Timestamp.now(tz="UTC").isoformat(),
                         IDEMPOTENCY_KEY: answer.key, LS_ANNOTATION: answer.annotation_id, LS_TASKS: candidates})
    if not rows:
        raise fail("source", "at least one completed choices annotation", "none")
    return pd.DataFrame(rows)


def user_email(user: int | str, users: Mapping[int, str] | None, where: str) -> str:
    """The email of a Label Studio user named by id (looked up in ``users``) or by email."""
    if isinstance(user, str) and not user.isdigit():
        return user
    if users is None or int(user) not in users:
        raise fail("completed_by", "a Label Studio user whose email is known (pass users={id: email}, as "
                   "`labelloop labelstudio sync` does from GET /api/users/)", f"user id {user} in {where}")
    return users[int(user)]
