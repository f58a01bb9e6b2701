"""The label store: one facade over the system of record.

Writers validate a whole call first (a clear error naming the field, nothing stored), then
write rows and their audit events in one transaction. Every write a client may retry is
idempotent: a retry returns what the first call stored, the same key with other content
raises :class:`~loop.exceptions.ConflictError`. Nothing is overwritten: annotations, events
and resolutions are append-only (database triggers refuse UPDATE and DELETE), a correction
is a new resolution that supersedes the old one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection

from .._validation import _describe, check_int, check_pred_probs, check_real, fail
from ..columns import ANNOTATOR, ITEM, REASON, ROUTE
from ..exceptions import ConflictError, StoreError
from ..labelstudio import SOURCE as LABEL_STUDIO_SOURCE
from ..labelstudio import SYSTEM as LABEL_STUDIO
from ..labelstudio import ControlNames
from . import _annotations, _exchange, _external, _metrics, _reads, _resolutions
from . import _schema as S
from ._columns import (CREATED_AT, EVIDENCE, GUIDELINE_VERSION, IDEMPOTENCY_KEY, PAYLOAD, PAYLOAD_REF, PROBS,
                       SIGNALS, SOURCE, SUPERSEDES_KEY, TASK_ID)
from ._convert import as_frame, check_columns, external_ids, json_text, lookup, now_utc, to_utc, utc_stamps
from ._engine import default_url, make_engine, normalize_url, write_transaction
from ._records import (Annotator, BatchResult, GuidelineVersion, ModelVersion, Resolution, ResolutionMethod,
                       Stream, StreamMetrics, Task, TaskStatus)
from ._writes import insert_idempotent, record_events
from .migrate import current_revision, head_revision, upgrade

__all__ = ["LabelStore"]

TIER: Final = "tier"
KIND: Final = "kind"
BLIND: Final = "blind"
ROUND: Final = "round"
DUE_AT: Final = "due_at"
STATUS: Final = "status"


def _name(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > S.MAX_NAME_CHARS:
        raise fail(name, f"a non-empty string of at most {S.MAX_NAME_CHARS} characters", _describe(value))
    return value


def _optional_name(value: Any, name: str) -> str | None:
    return None if value is None else _name(value, name)


class LabelStore:
    """The system of record for labels, on SQLite (one person) or PostgreSQL (a team).

    Parameters
    ----------
    url : str or URL, optional
        ``sqlite:///path/to/labels.db``, ``sqlite://`` (in memory) or
        ``postgresql://user[:password]@host[:port]/database`` (driven by psycopg 3; add
        ``?options=-csearch_path%3Dmyschema`` to use a schema). Default:
        ``$LABELLOOP_STORE_URL``, else ``sqlite:///labelloop.db``.
    migrate : bool, default True
        Bring the schema to the newest revision on first use. With False, a database that is
        behind raises StoreError (run ``labelloop db upgrade``).

    Examples
    --------
    >>> store = LabelStore("sqlite://")
    >>> store.create_stream("sentiment", ["neg", "pos"]).classes
    ('neg', 'pos')
    >>> _ = store.add_annotator("ann-1", streams=["sentiment"])
    >>> _ = store.add_items("sentiment", [{"item_id": "r1"}, {"item_id": "r2"}])
    >>> store.add_annotations("sentiment", [{"item_id": "r1", "annotator_id": "ann-1", "label": "pos"}])
    BatchResult(inserted=1, existing=0)
    >>> store.annotations_frame("sentiment")[["item_id", "annotator_id", "label"]]
      item_id annotator_id  label
    0      r1        ann-1      1
    """

    def __init__(self, url: str | URL | None = None, *, migrate: bool = True) -> None:
        self.url = normalize_url(url if url is not None else default_url())
        self._engine = make_engine(self.url)
        self._streams: dict[str, Stream] = {}
        # Item ids by stream and external id: items never change, so ids can be remembered.
        self._item_ids: dict[int, dict[str, int]] = {}
        revision = current_revision(self._engine)
        if revision != head_revision():
            if not migrate:
                raise StoreError(f"The store at {self.url.render_as_string(hide_password=True)} is at schema "
                                 f"revision {revision}, not {head_revision()}; run `labelloop db upgrade`.")
            upgrade(self._engine)

    def __repr__(self) -> str:
        return f"LabelStore({self.url.render_as_string(hide_password=True)!r})"

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the connections."""
        self._engine.dispose()

    @property
    def dialect(self) -> str:
        """``'sqlite'`` or ``'postgresql'``."""
        return self._engine.dialect.name

    def _read(self) -> Connection:
        return self._engine.connect()

    # ----------------------------------------------------------------- streams, people
    def create_stream(self, name: str, classes: Sequence[str], *, owner: str | None = None,
                      escalation_contact: str | None = None, actor: str | None = None) -> Stream:
        """Register a work stream with its ordered class names (idempotent by name)."""
        _name(name, "name")
        if isinstance(classes, str) or not isinstance(classes, Iterable):
            raise fail("classes", "a sequence of at least 2 distinct class names", _describe(classes))
        classes = [str(c) for c in classes]
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise fail("classes", "a sequence of at least 2 distinct class names", _describe(classes))
        row = {"name": name, "classes": classes, "owner": _optional_name(owner, "owner"),
               "escalation_contact": _optional_name(escalation_contact, "escalation_contact"),
               "created_at": now_utc()}
        with write_transaction(self._engine) as conn:
            insert_idempotent(conn, S.streams, [row], key="name", compare=("classes", "owner", "escalation_contact"),
                              action="stream.created", entity="stream", actor=actor, reason=None,
                              after=("name", "classes"))
        return self.stream(name)

    def stream(self, name: str) -> Stream:
        """The work stream called ``name``."""
        if name not in self._streams:
            with self._read() as conn:
                row = conn.execute(sa.select(S.streams).where(S.streams.c.name == name)).first()
            if row is None:
                raise fail("stream", "the name of a registered stream (create_stream)", _describe(name))
            # Streams are immutable once created, so caching them is safe.
            self._streams[name] = Stream(id=row.id, name=row.name, classes=tuple(row.classes), owner=row.owner,
                                         escalation_contact=row.escalation_contact, created_at=row.created_at)
        return self._streams[name]

    def add_annotator(self, name: str, *, tier: int = 1, streams: Sequence[str] = (), active: bool = True,
                      hourly_rate: float = 0.0, email: str | None = None, actor: str | None = None) -> Annotator:
        """Register an annotator (idempotent by name) and put them on ``streams``. ``email``
        matches them to their Label Studio user (unique across annotators)."""
        row = {"name": _name(name, "name"), "tier": check_int(tier, "tier", low=0), "active": bool(active),
               "hourly_rate": check_real(hourly_rate, "hourly_rate", low=0.0), "created_at": now_utc(),
               "email": _email(email)}
        targets = [self.stream(s) for s in streams]
        with write_transaction(self._engine) as conn:
            if email is not None:
                other = conn.execute(sa.select(S.annotators.c.name).where(S.annotators.c.email == email,
                                                                          S.annotators.c.name != name)).scalar()
                if other is not None:
                    raise ConflictError(f"The 'email' {email!r} already belongs to annotator {other!r}.")
            _, ids = insert_idempotent(conn, S.annotators, [row], key="name",
                                       compare=("tier", "active", "hourly_rate", "email"),
                                       action="annotator.created", entity="annotator", actor=actor, reason=None,
                                       after=("name", "tier", "hourly_rate", "email"))
            self._join(conn, ids[name], targets, actor=actor)
        return self.annotator(name)

    def assign_annotator(self, name: str, stream: str, *, actor: str | None = None) -> Annotator:
        """Put an annotator on a stream (a no-op when already there)."""
        target = self.stream(stream)
        with write_transaction(self._engine) as conn:
            self._join(conn, self._annotator_id(conn, name), [target], actor=actor)
        return self.annotator(name)

    def _join(self, conn: Connection, annotator_id: int, streams: list[Stream], *, actor: str | None) -> None:
        sa_ = S.stream_annotators
        have = {r[0] for r in conn.execute(sa.select(sa_.c.stream_id).where(sa_.c.annotator_id == annotator_id))}
        new = [s for s in dict.fromkeys(streams, None) if s.id not in have]
        if new:
            conn.execute(sa_.insert(), [{"stream_id": s.id, "annotator_id": annotator_id} for s in new])
            record_events(conn, [{"action": "annotator.joined", "entity": "annotator", "entity_id": annotator_id,
                                  "stream_id": s.id} for s in new], actor=actor, reason=None)

    def set_annotator_active(self, name: str, active: bool, *, actor: str | None = None,
                             reason: str | None = None) -> Annotator:
        """Activate or deactivate an annotator (inactive ones cannot add annotations)."""
        with write_transaction(self._engine) as conn:
            id_ = self._annotator_id(conn, name)
            before = conn.execute(sa.select(S.annotators.c.active).where(S.annotators.c.id == id_)).scalar_one()
            if before != bool(active):
                conn.execute(S.annotators.update().where(S.annotators.c.id == id_).values(active=bool(active)))
                record_events(conn, [{"action": "annotator.activated" if active else "annotator.deactivated",
                                      "entity": "annotator", "entity_id": id_, "before": {"active": before},
                                      "after": {"active": bool(active)}}], actor=actor, reason=reason)
        return self.annotator(name)

    def _annotator_id(self, conn: Connection, name: str) -> int:
        id_ = conn.execute(sa.select(S.annotators.c.id).where(S.annotators.c.name == str(name))).scalar()
        if id_ is None:
            raise fail(ANNOTATOR, "a registered annotator (add_annotator)", _describe(name))
        return id_

    def annotator(self, name: str) -> Annotator:
        """The annotator called ``name`` with the streams they are on."""
        a, sa_, st = S.annotators, S.stream_annotators, S.streams
        with self._read() as conn:
            row = conn.execute(sa.select(a).where(a.c.name == str(name))).first()
            if row is None:
                raise fail(ANNOTATOR, "a registered annotator (add_annotator)", _describe(name))
            streams = conn.execute(sa.select(st.c.name).join(sa_, sa_.c.stream_id == st.c.id)
                                   .where(sa_.c.annotator_id == row.id).order_by(st.c.name)).scalars().all()
        return Annotator(id=row.id, name=row.name, tier=row.tier, active=row.active, hourly_rate=row.hourly_rate,
                         streams=tuple(streams), email=row.email)

    # ----------------------------------------------------------------- guidelines
    def add_guideline(self, stream: str, text: str, *, author: str, examples: Any = None,
                      parent_version: int | None = None, idempotency_key: str | None = None,
                      actor: str | None = None) -> GuidelineVersion:
        """Draft the next version of a stream's guideline. Drafts may be revised
        (:meth:`revise_guideline`) until :meth:`publish_guideline`; published ones never change."""
        s = self.stream(stream)
        if not isinstance(text, str) or not text.strip():
            raise fail("text", "non-empty guideline text", _describe(text))
        _name(author, "author")
        examples_text = json_text(examples, "examples")
        g = S.guideline_versions
        key = idempotency_key or "g:%d:%s:%s" % (s.id, parent_version, hashlib.sha256(
            f"{text}\x00{examples_text}\x00{author}".encode()).hexdigest()[:24])
        with write_transaction(self._engine) as conn:
            existing = conn.execute(sa.select(g).where(g.c.idempotency_key == key)).first()
            if existing is not None:
                if (existing.text, json_text(existing.examples, "examples"), existing.author) != \
                        (text, examples_text, author) or existing.stream_id != s.id:
                    raise ConflictError(f"The 'idempotency_key' {key!r} already names another guideline version.")
                return self._guideline(conn, s, existing.version)
            parent_id = None
            if parent_version is not None:
                parent_id = conn.execute(sa.select(g.c.id).where(g.c.stream_id == s.id,
                                                                 g.c.version == parent_version)).scalar()
                if parent_id is None:
                    raise fail("parent_version", f"a version of stream {stream!r}'s guideline", _describe(parent_version))
            version = (conn.execute(sa.select(sa.func.max(g.c.version)).where(g.c.stream_id == s.id)).scalar() or 0) + 1
            try:
                id_ = conn.execute(g.insert().returning(g.c.id), {
                    "stream_id": s.id, "version": version, "text": text, "examples": examples, "parent_id": parent_id,
                    "author": author, "created_at": now_utc(), "published_at": None, "idempotency_key": key}).scalar()
            except sa.exc.IntegrityError:
                raise ConflictError(f"Another writer drafted version {version} of stream {stream!r}'s guideline at "
                                    "the same time; retry.") from None
            record_events(conn, [{"action": "guideline.drafted", "entity": "guideline_version", "entity_id": id_,
                                  "stream_id": s.id, "after": {"version": version, "parent_version": parent_version}}],
                          actor=actor or author, reason=None)
            return self._guideline(conn, s, version)

    def revise_guideline(self, stream: str, version: int, *, text: str | None = None, examples: Any = None,
                         actor: str | None = None, reason: str | None = None) -> GuidelineVersion:
        """Change a draft's text or examples; a published version raises ConflictError."""
        s = self.stream(stream)
        g = S.guideline_versions
        with write_transaction(self._engine) as conn:
            before = self._guideline(conn, s, version)
            if before.published_at is not None:
                raise ConflictError(f"Version {version} of stream {stream!r}'s guideline is published and immutable; "
                                    "draft a new version with parent_version={version}.")
            values = {k: v for k, v in (("text", text), ("examples", examples)) if v is not None}
            conn.execute(g.update().where(g.c.id == before.id).values(**values))
            record_events(conn, [{"action": "guideline.revised", "entity": "guideline_version", "entity_id": before.id,
                                  "stream_id": s.id, "before": {"text": before.text, "examples": before.examples},
                                  "after": {"text": text or before.text, "examples": examples or before.examples}}],
                          actor=actor, reason=reason)
            return self._guideline(conn, s, version)

    def publish_guideline(self, stream: str, version: int, *, actor: str | None = None) -> GuidelineVersion:
        """Publish a draft (idempotent); from then on it is immutable and annotations may cite it."""
        s = self.stream(stream)
        g = S.guideline_versions
        with write_transaction(self._engine) as conn:
            current = self._guideline(conn, s, version)
            if current.published_at is None:
                conn.execute(g.update().where(g.c.id == current.id, g.c.published_at.is_(None))
                             .values(published_at=now_utc()))
                record_events(conn, [{"action": "guideline.published", "entity": "guideline_version",
                                      "entity_id": current.id, "stream_id": s.id, "after": {"version": version}}],
                              actor=actor, reason=None)
            return self._guideline(conn, s, version)

    def guideline(self, stream: str, version: int | None = None) -> GuidelineVersion:
        """A version of the stream's guideline; by default the newest published one."""
        s = self.stream(stream)
        g = S.guideline_versions
        with self._read() as conn:
            if version is None:
                version = conn.execute(sa.select(sa.func.max(g.c.version)).where(
                    g.c.stream_id == s.id, g.c.published_at.is_not(None))).scalar()
                if version is None:
                    raise fail("version", f"a published version of stream {stream!r}'s guideline", "none published")
            return self._guideline(conn, s, version)

    def _guideline(self, conn: Connection, s: Stream, version: int) -> GuidelineVersion:
        g, p = S.guideline_versions, S.guideline_versions.alias("p")
        row = conn.execute(sa.select(g, p.c.version.label("parent_version")).outerjoin(p, p.c.id == g.c.parent_id)
                           .where(g.c.stream_id == s.id, g.c.version == version)).first()
        if row is None:
            raise fail(GUIDELINE_VERSION, f"a version of stream {s.name!r}'s guideline", _describe(version))
        return GuidelineVersion(id=row.id, stream=s.name, version=row.version, text=row.text, examples=row.examples,
                                parent_version=row.parent_version, author=row.author, created_at=row.created_at,
                                published_at=row.published_at)

    # ----------------------------------------------------------------- items, models, tasks
    def add_items(self, stream: str, items: Any, *, actor: str | None = None) -> BatchResult:
        """Register items (idempotent by external id). Columns: ``item_id``; optional
        ``payload`` (JSON: features or the content), ``payload_ref`` (a URI), ``source``."""
        s = self.stream(stream)
        frame = check_columns(as_frame(items, "items"), "items", required=(ITEM,), optional=(PAYLOAD, PAYLOAD_REF, SOURCE))
        payloads = [_json_or_none(p) for p in frame[PAYLOAD]] if PAYLOAD in frame else [None] * len(frame)
        for p in payloads:
            json_text(p, PAYLOAD)
        at = now_utc()
        rows = [{"stream_id": s.id, "external_id": e, "payload": p, "payload_ref": r, "source": src, "created_at": at}
                for e, p, r, src in zip(external_ids(frame[ITEM]), payloads, _texts(frame, PAYLOAD_REF),
                                        _texts(frame, SOURCE))]
        with write_transaction(self._engine) as conn:
            result, _ = insert_idempotent(conn, S.items, rows, key="external_id", compare=("payload", "payload_ref", "source"),
                                          where=S.items.c.stream_id == s.id, action="item.created", entity="item",
                                          actor=actor, reason=None, after=("external_id",))
        return result

    def add_model_version(self, name: str, *, uri: str | None = None, actor: str | None = None) -> ModelVersion:
        """Register a model version (idempotent by name); ``uri`` is an MLflow model URI or run id."""
        row = {"name": _name(name, "name"), "uri": uri, "created_at": now_utc()}
        m = S.model_versions
        with write_transaction(self._engine) as conn:
            insert_idempotent(conn, m, [row], key="name", compare=("uri",), action="model_version.created",
                              entity="model_version", actor=actor, reason=None, after=("name", "uri"))
            got = conn.execute(sa.select(m).where(m.c.name == name)).one()
        return ModelVersion(id=got.id, name=got.name, uri=got.uri, created_at=got.created_at)

    def add_predictions(self, stream: str, model_version: str, predictions: Any, *,
                        actor: str | None = None) -> BatchResult:
        """Store a model version's predictions (one per item; idempotent by item and model).
        Columns: ``item_id``, ``probs`` (calibrated class probabilities, one sequence of
        length n_classes per row); optional ``signals`` (a JSON object of scores), ``route``,
        ``reason``."""
        s = self.stream(stream)
        frame = check_columns(as_frame(predictions, "predictions"), "predictions", required=(ITEM, PROBS),
                              optional=(SIGNALS, ROUTE, REASON))
        try:
            probs = np.array([np.asarray(p, dtype=float) for p in frame[PROBS]])
        except (TypeError, ValueError):
            raise fail(PROBS, "one sequence of class probabilities per row", "ragged or non-numeric rows") from None
        probs = check_pred_probs(probs, PROBS)
        if probs.shape[1] != len(s.classes):
            raise fail(PROBS, f"{len(s.classes)} probabilities per row (classes {list(s.classes)})",
                       f"{probs.shape[1]} per row")
        with write_transaction(self._engine) as conn:
            mv = conn.execute(sa.select(S.model_versions.c.id).where(S.model_versions.c.name == model_version)).scalar()
            if mv is None:
                raise fail("model_version", "a registered model version (add_model_version)", _describe(model_version))
            item_ids = _item_ids_of(conn, s, frame[ITEM])
            at = now_utc()
            signals = [_json_or_none(v) for v in frame[SIGNALS]] if SIGNALS in frame else [None] * len(frame)
            rows = [{"item_id": int(i), "model_version_id": mv, "probs": p.tolist(), "signals": sig, "route": r,
                     "reason": why, "created_at": at}
                    for i, p, sig, r, why in zip(item_ids, probs, signals, _texts(frame, ROUTE), _texts(frame, REASON))]
            for row in rows:
                json_text(row["signals"], SIGNALS)
            result, _ = insert_idempotent(conn, S.predictions, rows, key="item_id",
                                          compare=("probs", "signals", "route", "reason"),
                                          where=S.predictions.c.model_version_id == mv, action="prediction.created",
                                          entity="prediction", actor=actor, reason=None, after=("route",),
                                          stream_id=s.id)
        return result

    def add_tasks(self, stream: str, tasks: Any, *, actor: str | None = None) -> BatchResult:
        """Create labelling tasks (idempotent). Columns: ``item_id``; optional ``tier``
        (default 1), ``annotator_id`` (assigns it), ``guideline_version`` (published),
        ``due_at``, ``kind`` (one of ``label, expert, double_blind, audit, adjudication``;
        default ``label``), ``blind`` (show no suggestion and no other answer; default: true
        for double_blind and audit tasks), ``round``, ``idempotency_key`` (default: one task per
        item, tier and guideline).
        The result's ``ids`` are the task ids of the rows, in order (a retry's too): write
        them as the annotations' ``task_id`` and close the tasks by them."""
        s = self.stream(stream)
        frame = check_columns(as_frame(tasks, "tasks"), "tasks", required=(ITEM,),
                              optional=(TIER, ANNOTATOR, GUIDELINE_VERSION, DUE_AT, IDEMPOTENCY_KEY, KIND, BLIND,
                                        ROUND))
        n = len(frame)
        with write_transaction(self._engine) as conn:
            item_ids = _item_ids_of(conn, s, frame[ITEM])
            # A row without a tier (NaN where other rows of the batch name one) gets the default.
            tiers = [1 if isinstance(t, (float, np.floating)) and t != t else
                     check_int(int(t) if isinstance(t, (float, np.floating)) and float(t).is_integer() else t, TIER,
                               low=0) for t in frame.get(TIER, pd.Series([1] * n))]
            people = [None] * n
            if ANNOTATOR in frame:
                names = frame[ANNOTATOR]
                present = names.notna()
                if present.any():
                    people_ids = _annotations._annotator_ids(conn, s, names[present])
                    people = pd.Series([None] * n, dtype=object)
                    people[present.to_numpy()] = people_ids.tolist()
                    people = people.tolist()
            gvs = _annotations.guideline_ids(conn, s, frame.get(GUIDELINE_VERSION), n)
            due = utc_stamps(frame[DUE_AT], DUE_AT) if DUE_AT in frame else pd.Series([pd.NaT] * n)
            keys = frame.get(IDEMPOTENCY_KEY, pd.Series([None] * n))
            kinds = [_task_kind(k) for k in frame.get(KIND, pd.Series(["label"] * n))]
            blinds = [_task_blind(b, k) for b, k in zip(frame.get(BLIND, pd.Series([None] * n)), kinds)]
            rounds = [None if r is None or (isinstance(r, float) and r != r) else
                      check_int(int(r) if isinstance(r, (float, np.floating)) and float(r).is_integer() else r,
                                ROUND, low=0) for r in frame.get(ROUND, pd.Series([None] * n))]
            at = now_utc()
            rows = []
            for i in range(n):
                gv = None if pd.isna(gvs.iloc[i]) else int(gvs.iloc[i])
                key = keys.iloc[i] if pd.notna(keys.iloc[i]) else f"t:{item_ids[i]}:{tiers[i]}:{gv}"
                rows.append({"stream_id": s.id, "item_id": int(item_ids[i]), "tier": tiers[i], "annotator_id": people[i],
                             "guideline_version_id": gv, "status": "assigned" if people[i] is not None else "open",
                             "kind": kinds[i], "blind": blinds[i], "round": rounds[i],
                             "assigned_at": at if people[i] is not None else None, "created_at": at, "due_at": None if pd.isna(due.iloc[i]) else due.iloc[i].to_pydatetime(),
                             "idempotency_key": str(key)})
            result, ids = insert_idempotent(conn, S.tasks, rows, key="idempotency_key",
                                            compare=("item_id", "tier", "annotator_id", "guideline_version_id",
                                                     "kind", "blind"),
                                            action="task.created", entity="task", actor=actor, reason=None,
                                            after=("tier", "status"))
        return BatchResult(inserted=result.inserted, existing=result.existing,
                           ids=tuple(int(ids[row["idempotency_key"]]) for row in rows))

    def set_task_status(self, task_id: int, status: TaskStatus | str, *, annotator: str | None = None,
                        actor: str | None = None, reason: str | None = None) -> Task:
        """Move a task along (open, assigned, done, cancelled), optionally (re)assigning it."""
        status = TaskStatus(status) if status in {t.value for t in TaskStatus} or isinstance(status, TaskStatus) \
            else None
        if status is None:
            raise fail(STATUS, f"one of {[t.value for t in TaskStatus]}", "another value")
        t = S.tasks
        with write_transaction(self._engine) as conn:
            row = conn.execute(sa.select(t).where(t.c.id == task_id)).first()
            if row is None:
                raise fail("task_id", "the id of a stored task", _describe(task_id))
            values = {"status": status.value}
            if annotator is not None:
                s = self._stream_by_id(conn, row.stream_id)
                values["annotator_id"] = int(_annotations._annotator_ids(conn, s, pd.Series([annotator]))[0])
            conn.execute(t.update().where(t.c.id == task_id).values(**values))
            record_events(conn, [{"action": "task.status", "entity": "task", "entity_id": task_id,
                                  "stream_id": row.stream_id, "item_id": row.item_id,
                                  "before": {"status": row.status, "annotator_id": row.annotator_id},
                                  "after": values}], actor=actor, reason=reason)
        return self.task(task_id)

    def set_task_statuses(self, task_ids: Sequence[int], status: TaskStatus | str, *, actor: str | None = None,
                          reason: str | None = None) -> int:
        """Move many tasks to ``status`` in one transaction, one audit event per task that changes.

        Tasks already at ``status`` are left alone (a retry changes nothing). An unknown id
        refuses the whole call, and nothing is written.

        Returns
        -------
        int
            How many tasks changed.
        """
        if status not in {t.value for t in TaskStatus} and not isinstance(status, TaskStatus):
            raise fail(STATUS, f"one of {[t.value for t in TaskStatus]}", _describe(status))
        status = TaskStatus(status)
        ids = sorted({check_int(i, "task_ids", low=1) for i in task_ids})
        if not ids:
            return 0
        t = S.tasks
        with write_transaction(self._engine) as conn:
            rows = conn.execute(sa.select(t.c.id, t.c.status, t.c.stream_id, t.c.item_id, t.c.annotator_id)
                                .where(t.c.id.in_(ids))).all()
            missing = sorted(set(ids) - {r.id for r in rows})
            if missing:
                raise fail("task_ids", "ids of stored tasks", f"unknown ids {missing[:5]}")
            moving = [r for r in rows if r.status != status.value]
            if not moving:
                return 0
            conn.execute(t.update().where(t.c.id.in_([r.id for r in moving])).values(status=status.value))
            record_events(conn, [{"action": "task.status", "entity": "task", "entity_id": r.id,
                                  "stream_id": r.stream_id, "item_id": r.item_id,
                                  "before": {"status": r.status, "annotator_id": r.annotator_id},
                                  "after": {"status": status.value}} for r in moving], actor=actor, reason=reason)
        return len(moving)

    def _stream_by_id(self, conn: Connection, stream_id: int) -> Stream:
        return self.stream(conn.execute(sa.select(S.streams.c.name).where(S.streams.c.id == stream_id)).scalar_one())

    def task(self, task_id: int) -> Task:
        frame = self._tasks_query(sa.select().where(S.tasks.c.id == task_id))
        if frame.empty:
            raise fail("task_id", "the id of a stored task", _describe(task_id))
        row = frame.iloc[0]
        return Task(id=int(row["task_id"]), stream=row["stream"], item_id=row[ITEM], tier=int(row[TIER]),
                    annotator=row[ANNOTATOR], guideline_version=None if pd.isna(row[GUIDELINE_VERSION]) else
                    int(row[GUIDELINE_VERSION]), status=TaskStatus(row[STATUS]), created_at=row[CREATED_AT],
                    due_at=None if pd.isna(row[DUE_AT]) else row[DUE_AT], idempotency_key=row[IDEMPOTENCY_KEY],
                    kind=row[KIND], blind=bool(row[BLIND]), round=None if pd.isna(row[ROUND]) else int(row[ROUND]),
                    assigned_at=_stamp_or_none(row["assigned_at"]), completed_at=_stamp_or_none(row["completed_at"]),
                    escalated_at=_stamp_or_none(row["escalated_at"]))

    def tasks_frame(self, stream: str, *, statuses: Sequence[TaskStatus | str] | None = None) -> pd.DataFrame:
        """The stream's tasks, one row each: task_id, item_id, tier, annotator_id,
        guideline_version, status, created_at, due_at, idempotency_key, kind, blind, round,
        assigned_at, completed_at, escalated_at."""
        s = self.stream(stream)
        where = S.tasks.c.stream_id == s.id
        if statuses is not None:
            where = where & S.tasks.c.status.in_([TaskStatus(v).value for v in statuses])
        return self._tasks_query(sa.select().where(where)).drop(columns="stream")

    def _tasks_query(self, base: sa.Select) -> pd.DataFrame:
        t, i, a, g, st = S.tasks, S.items, S.annotators, S.guideline_versions, S.streams
        query = (base.add_columns(t.c.id.label("task_id"), st.c.name.label("stream"), i.c.external_id.label(ITEM),
                                  t.c.tier, a.c.name.label(ANNOTATOR), g.c.version.label(GUIDELINE_VERSION), t.c.status,
                                  t.c.created_at, t.c.due_at, t.c.idempotency_key, t.c.kind, t.c.blind, t.c.round,
                                  t.c.assigned_at, t.c.completed_at, t.c.escalated_at)
                 .select_from(t).join(i, i.c.id == t.c.item_id).join(st, st.c.id == t.c.stream_id)
                 .outerjoin(a, a.c.id == t.c.annotator_id).outerjoin(g, g.c.id == t.c.guideline_version_id)
                 .order_by(t.c.id))
        with self._read() as conn:
            rows = conn.execute(query).all()
        frame = pd.DataFrame(rows, columns=["task_id", "stream", ITEM, TIER, ANNOTATOR, GUIDELINE_VERSION, STATUS,
                                            CREATED_AT, DUE_AT, IDEMPOTENCY_KEY, KIND, BLIND, ROUND, "assigned_at",
                                            "completed_at", "escalated_at"])
        frame[GUIDELINE_VERSION] = frame[GUIDELINE_VERSION].astype("Int64")
        frame[ROUND] = frame[ROUND].astype("Int64")
        frame[BLIND] = frame[BLIND].astype(bool)
        return frame

    # ----------------------------------------------------------------- annotations
    def add_annotations(self, stream: str, annotations: Any, *, actor: str | None = None,
                        reason: str | None = None) -> BatchResult:
        """Store a batch of annotations with one ``annotation.created`` event each, in one
        transaction; all or nothing.

        Parameters
        ----------
        stream : str
        annotations : DataFrame or iterable of mappings
            Columns ``item_id``, ``annotator_id``, ``label`` (a class code or class name);
            optional ``seconds``, ``rationale`` (at most 10,000 characters), ``evidence``
            (any JSON value), ``suggestion`` (the label shown to the annotator, code or
            name), ``suggestion_confidence`` (in [0, 1]), ``guideline_version`` (a published
            version number), ``task_id``, ``created_at`` (default: now) and
            ``idempotency_key`` (default: one annotation per item, annotator, task and
            guideline version).

        Returns
        -------
        BatchResult
            ``inserted`` new annotations and ``existing`` ones a previous call stored under
            the same keys (a retry stores nothing twice).

        Raises
        ------
        SchemaError
            Naming the bad field: unknown item, annotator unknown, inactive or not on the
            stream, label outside the class set, unpublished guideline version, oversized
            rationale. Nothing is stored.
        ConflictError
            A key already names an annotation with other content.
        """
        s = self.stream(stream)
        with write_transaction(self._engine) as conn:
            prepared = _annotations.prepare(conn, s, annotations, item_cache=self._item_ids.setdefault(s.id, {}))
            inserted = _annotations.insert(conn, prepared, actor=actor, reason=reason)
        return BatchResult(inserted=inserted, existing=len(prepared) - inserted)

    def annotations_frame(self, stream: str, *, extras: Sequence[str] = (), since: datetime | str | None = None,
                          until: datetime | str | None = None, after: int | None = None) -> pd.DataFrame:
        """The long annotations frame of a stream, in insertion order.

        Columns ``item_id``, ``annotator_id`` (text), ``label`` (class code), ``seconds``,
        ``cost`` (seconds times the annotator's hourly rate), ``created_at`` (UTC),
        ``guideline_version``, ``task_id``, ``annotation_id``, plus any of ``extras``:
        ``rationale``, ``evidence``, ``suggestion``, ``suggestion_confidence``,
        ``idempotency_key``. ``since``/``until`` bound ``created_at`` (``[since, until)``).
        ``after`` (an ``annotation_id``) keeps the annotations stored after it: a reader that
        keeps the frame appends what arrived since its last read (its largest
        ``annotation_id``) instead of reading the whole history again. Ids grow in insertion
        order; on PostgreSQL two writers committing at once may commit out of that order, so a
        reader racing other writers reads again from an older id.
        """
        s = self.stream(stream)
        if after is not None:
            after = check_int(after, "after", low=0)
        with self._read() as conn:
            return _reads.annotations_frame(conn, s, extras=tuple(extras),
                                            since=None if since is None else to_utc(since, "since"),
                                            until=None if until is None else to_utc(until, "until"), after=after)

    # ----------------------------------------------------------------- resolutions
    def resolve(self, stream: str, item_id: Any, label: Any, *, method: ResolutionMethod | str,
                confidence: float | None = None, supersedes: int | None = None, actor: str | None = None,
                reason: str | None = None, idempotency_key: str | None = None) -> Resolution:
        """Record an item's final label. The first resolution of an item names no
        ``supersedes``; a correction names the id of the current one. If another writer
        superseded it first, ConflictError: read the new current one and decide again."""
        row = {ITEM: item_id, "label": label, "method": method, "confidence": confidence, "supersedes": supersedes}
        if idempotency_key is not None:
            row[IDEMPOTENCY_KEY] = idempotency_key
        _, ids = self._write_resolutions(stream, [row], method=None, actor=actor, reason=reason)
        return self._resolution(ids[0])

    def add_resolutions(self, stream: str, resolutions: Any, *, method: ResolutionMethod | str | None = None,
                        actor: str | None = None, reason: str | None = None) -> BatchResult:
        """Record many final labels in one transaction (e.g. an aggregation run). Columns
        ``item_id``, ``label``; optional ``method`` (else the argument), ``confidence``,
        ``supersedes``, ``idempotency_key``, ``reason``."""
        result, _ = self._write_resolutions(stream, resolutions, method=method, actor=actor, reason=reason)
        return result

    def _write_resolutions(self, stream, records, *, method, actor, reason) -> tuple[BatchResult, list[int]]:
        s = self.stream(stream)
        with write_transaction(self._engine) as conn:
            prepared = _resolutions.prepare(conn, s, records, method=method)
            return _resolutions.insert(conn, s, prepared, actor=actor, reason=reason)

    def _resolution(self, resolution_id: int) -> Resolution:
        r, i, st = S.resolutions, S.items, S.streams
        with self._read() as conn:
            row = conn.execute(sa.select(r, i.c.external_id, st.c.name.label("stream_name"))
                               .join(i, i.c.id == r.c.item_id).join(st, st.c.id == r.c.stream_id)
                               .where(r.c.id == resolution_id)).one()
        return Resolution(id=row.id, stream=row.stream_name, item_id=row.external_id, label=row.label,
                          method=ResolutionMethod(row.method), confidence=row.confidence, resolved_at=row.resolved_at,
                          supersedes=row.supersedes_id, actor=row.actor, reason=row.reason,
                          idempotency_key=row.idempotency_key)

    def resolution_version(self) -> int:
        """The newest resolution id (0 when none): pass it as ``as_of`` to reproduce today's
        resolved labels later."""
        with self._read() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(S.resolutions.c.id), 0))).scalar())

    def resolutions_frame(self, stream: str, *, as_of: int | datetime | str | None = None,
                          after: int | None = None) -> pd.DataFrame:
        """Every resolution of the stream, superseded ones included: resolution_id, item_id,
        label, method, confidence, resolved_at, supersedes, supersedes_key, actor, reason,
        idempotency_key. ``after`` (a resolution version, :meth:`resolution_version`) keeps
        those stored after it: a reader that keeps the current labels applies what changed
        since its last read."""
        s = self.stream(stream)
        if after is not None:
            after = check_int(after, "after", low=0)
        with self._read() as conn:
            return _resolutions.resolutions_frame(conn, s, as_of=self._as_of(as_of), after=after)

    def resolved_labels(self, stream: str, *, as_of: int | datetime | str | None = None) -> pd.DataFrame:
        """The final label of every resolved item, one row per item sorted by item_id.

        ``as_of`` is a resolution version (:meth:`resolution_version`) or a timestamp; the
        answer then ignores everything resolved later, so a retraining run is reproducible.
        """
        return _resolutions.current_only(self.resolutions_frame(stream, as_of=as_of))

    @staticmethod
    def _as_of(as_of: Any) -> int | datetime | None:
        if as_of is None:
            return None
        if isinstance(as_of, (int, np.integer)) and not isinstance(as_of, bool):
            return int(as_of)
        return to_utc(as_of, "as_of")

    # ----------------------------------------------------------------- audit, metrics
    def events_frame(self, *, stream: str | None = None, item_id: Any = None) -> pd.DataFrame:
        """The audit trail (oldest first): event_id, at, actor, action, entity, entity_id,
        stream_id, item_id (internal id), before, after, reason. Filter by stream, and by an
        item's external id (which needs the stream)."""
        e = S.events
        query = sa.select(e).order_by(e.c.id)
        with self._read() as conn:
            if stream is not None:
                s = self.stream(stream)
                query = query.where(e.c.stream_id == s.id)
                if item_id is not None:
                    query = query.where(e.c.item_id == int(_item_ids_of(conn, s, pd.Series([item_id]))[0]))
            elif item_id is not None:
                raise fail("stream", "a stream name when item_id is given", "None")
            rows = conn.execute(query).all()
        frame = pd.DataFrame(rows, columns=[c.name for c in e.columns]).rename(columns={"id": "event_id"})
        frame["at"] = pd.to_datetime(frame["at"], utc=True)
        return frame

    def annotator_metrics(self, stream: str) -> pd.DataFrame:
        """Per-annotator figures; see :func:`loop.store._metrics.annotator_metrics`."""
        return _metrics.annotator_metrics(self.annotations_frame(stream), self.resolutions_frame(stream))

    def stream_metrics(self, stream: str) -> StreamMetrics:
        """Agreement, correction frequency, disagreement resolution time, time and cost per item."""
        s = self.stream(stream)
        with self._read() as conn:
            n_items = conn.execute(sa.select(sa.func.count()).select_from(S.items)
                                   .where(S.items.c.stream_id == s.id)).scalar()
        return _metrics.stream_metrics(stream, self.annotations_frame(stream), self.resolutions_frame(stream), n_items)

    # ----------------------------------------------------------------- exchange
    def export_annotations(self, stream: str, path: str | Path) -> Path:
        """Write the annotations frame (all columns) to ``.parquet`` or ``.csv``."""
        return _exchange.write_frame(self.annotations_frame(stream, extras=_reads.EXTRA_COLUMNS), path)

    def export_resolutions(self, stream: str, path: str | Path) -> Path:
        """Write the full resolution history to ``.parquet`` or ``.csv``."""
        return _exchange.write_frame(self.resolutions_frame(stream), path)

    def import_annotations(self, stream: str, path: str | Path, *, actor: str | None = None) -> BatchResult:
        """Add the annotations of an :meth:`export_annotations` file (idempotent: keys travel
        with the rows)."""
        return self.add_annotations(stream, _exchange.annotations_for_import(_exchange.read_frame(path)), actor=actor)

    def import_resolutions(self, stream: str, path: str | Path, *, actor: str | None = None) -> BatchResult:
        """Replay an :meth:`export_resolutions` file, chains included (idempotent)."""
        history = _exchange.read_frame(path)
        inserted = existing = 0
        for batch in _exchange.resolution_batches(history):
            mapped = _exchange.map_supersedes(batch, self._resolution_ids_by_key(batch))
            result = self.add_resolutions(stream, mapped, actor=actor)
            inserted, existing = inserted + result.inserted, existing + result.existing
        return BatchResult(inserted=inserted, existing=existing)

    def _resolution_ids_by_key(self, batch: pd.DataFrame) -> dict[str, int]:
        keys = batch[SUPERSEDES_KEY].dropna().tolist()
        with self._read() as conn:
            return dict(lookup(conn, S.resolutions.c.idempotency_key, keys, S.resolutions.c.idempotency_key,
                               S.resolutions.c.id))

    def export_label_studio(self, stream: str, path: str | Path | None = None, *, model_version: str | None = None,
                            statuses: Sequence[TaskStatus | str] = (TaskStatus.OPEN, TaskStatus.ASSIGNED),
                            from_name: str = "label", to_name: str = "text", reason_name: str = "reason") -> list[dict]:
        """Tasks as Label Studio task JSON, with the model's predictions as pre-annotations
        (``predictions: [{model_version, score, result: [{from_name, to_name, type:
        "choices", value: {choices: [class name]}}, {reason_name ... type: "textarea", value:
        {text: [the route's reason]}}]}]``; blind tasks get none); written to ``path`` when
        given. Answered (done) tasks are not exported again."""
        s = self.stream(stream)
        tasks = self.tasks_frame(stream, statuses=statuses)
        with self._read() as conn:
            items = _exchange.item_payloads(conn, s, tasks[ITEM].tolist())
            preds = _exchange.latest_predictions(conn, s, tasks[ITEM].tolist(), model_version)
        return _exchange.label_studio_tasks(s, tasks, items, preds, path,
                                            names=ControlNames(from_name, to_name, reason_name))

    def item_data(self, stream: str, item_ids: Sequence[str], *, to_name: str = "text") -> dict[str, dict]:
        """Label Studio task data of items (their payload's fields plus ``item_id``), and the
        newest prediction of each: ``{item_id: {"data": {...}, "prediction": (model, probs,
        reason) or None}}``. Unknown items are left out."""
        s = self.stream(stream)
        ids = [str(i) for i in item_ids]
        with self._read() as conn:
            items = _exchange.item_payloads(conn, s, ids)
            preds = _exchange.latest_predictions(conn, s, ids, None)
        return {e: {"data": _exchange.task_data(e, p, r, to_name), "prediction": preds.get(e)}
                for e, (p, r) in items.items()}

    def import_label_studio(self, stream: str, source: str | Path | list, *, users: Mapping[int, str] | None = None,
                            from_name: str | None = None, actor: str | None = None) -> BatchResult:
        """Add the annotations of a Label Studio JSON export (a path or the parsed list) and
        close the tasks they answer.

        Parameters
        ----------
        stream : str
        source : path or list
            The export: tasks whose data holds ``item_id`` (as labelloop pushed them) and
            whose ``annotations`` hold ``id``, ``completed_by``, ``result``, ``lead_time``,
            ``created_at``, ``updated_at``, ``was_cancelled``.
        users : mapping of int to str, optional
            Label Studio user id -> email (``GET /api/users/``): exports name the annotator by
            id (``completed_by: 1``). An annotator is the one registered with that email.
        from_name : str, optional
            The ``Choices`` tag to read (default: the first choices result).

        Returns
        -------
        BatchResult
            Idempotent: the key is the annotation id and its ``updated_at``, so an edit in
            Label Studio adds a new annotation and never overwrites the old one.

        Raises
        ------
        SchemaError
            A user id missing from ``users``, an email no annotator has, a class outside the
            stream's, a task without ``item_id``. Nothing is stored.
        """
        s = self.stream(stream)
        rows = _exchange.annotations_from_label_studio(s, source, from_name=from_name, users=users)
        with self._read() as conn:
            names = _external.annotator_names(conn, rows[_exchange.LS_USER], system=LABEL_STUDIO)
            rows[TASK_ID] = _external.bind_tasks(conn, s, rows, _exchange.LS_TASKS)
        rows[ANNOTATOR] = rows[_exchange.LS_USER].map(names)
        rows[SOURCE] = LABEL_STUDIO_SOURCE
        rows[EVIDENCE] = [{"label_studio_annotation_id": int(i)} for i in rows[_exchange.LS_ANNOTATION]]
        if rows[TASK_ID].isna().all():
            rows = rows.drop(columns=TASK_ID)
        result = self.add_annotations(stream, rows.drop(columns=[_exchange.LS_USER, _exchange.LS_ANNOTATION,
                                                                 _exchange.LS_TASKS]), actor=actor)
        if TASK_ID in rows:
            with write_transaction(self._engine) as conn:
                _external.close(conn, rows[TASK_ID].dropna().astype(int).tolist(), system=LABEL_STUDIO, actor=actor)
        return result

    def link_external_tasks(self, system: str, project: str, links: Mapping[str, int]) -> int:
        """Record tasks pushed to another tool: ``links`` maps the tool's task id (text) to the
        labelloop task id. Idempotent; returns how many links are new."""
        with write_transaction(self._engine) as conn:
            return _external.link(conn, _name(system, "system"), _name(str(project), "project"),
                                  {str(k): check_int(v, "task_id", low=1) for k, v in links.items()})

    def external_tasks_frame(self, system: str, project: str | None = None) -> pd.DataFrame:
        """The tasks pushed to ``system`` (in ``project``): project, external_id, task_id,
        created_at, closed_at (None while unanswered)."""
        with self._read() as conn:
            return _external.linked(conn, system, None if project is None else str(project))

    def record_label_studio_deletions(self, stream: str, annotation_ids: Sequence[int], *,
                                      actor: str | None = None) -> tuple[int, list[int]]:
        """Record annotations deleted in Label Studio as ``annotation.deleted_in_label_studio``
        events (idempotent); no row is removed. Returns the events written and the Label
        Studio ids labelloop never stored."""
        s = self.stream(stream)
        with write_transaction(self._engine) as conn:
            return _external.record_deletions(conn, s, [check_int(i, "annotation_ids", low=0) for i in annotation_ids],
                                              actor=actor)


def _item_ids_of(conn: Connection, s: Stream, values: pd.Series) -> np.ndarray:
    return _annotations._item_ids(conn, s, pd.Series(values).reset_index(drop=True))


def _texts(frame: pd.DataFrame, column: str) -> list[str | None]:
    """An optional text column as a list (None where absent or missing)."""
    if column not in frame:
        return [None] * len(frame)
    return [None if pd.isna(v) else str(v) for v in frame[column]]


def _task_kind(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "label"
    if not isinstance(value, str) or value not in S.TASK_KINDS:
        raise fail(KIND, f"one of {list(S.TASK_KINDS)}", _describe(value))
    return value


def _task_blind(value: Any, kind: str) -> bool:
    # Double-blind and audit answers must be independent of the model and of each other.
    if value is None or (isinstance(value, float) and value != value):
        return kind in ("double_blind", "audit")
    if not isinstance(value, (bool, np.bool_)):
        raise fail(BLIND, "true or false", _describe(value))
    if kind in ("double_blind", "audit") and not value:
        raise fail(BLIND, f"true for {kind} tasks (their answers must be independent)", "false")
    return bool(value)


def _email(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or "@" not in value or len(value) > S.MAX_EMAIL_CHARS or value != value.strip():
        raise fail("email", f"an email address of at most {S.MAX_EMAIL_CHARS} characters", _describe(value))
    return value


def _stamp_or_none(value: Any) -> Any:
    return None if value is None or pd.isna(value) else value


def _json_or_none(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value

