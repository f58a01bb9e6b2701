"""The label store: one facade over the system of record.

Writers validate a whole call first (a clear error naming the field, nothing stored), then
write rows and their audit events in one transaction. Every write a client may retry is
idempotent: a retry returns what the first call stored, the same key with other content
raises :class:`~loop.exceptions.ConflictError`. Nothing is overwritten: annotations, events
and resolutions are append-only (database triggers refuse UPDATE and DELETE), a correction
is a new resolution that supersedes the old one.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection

from .._validation import (_describe, check_int, check_pred_probs, check_real, check_text,
                           check_text_column, fail)
from ..columns import ANNOTATOR, ITEM, LABEL, REASON, ROUTE
from ..exceptions import ConflictError, ForbiddenError, NotFoundError, SchemaError, StoreError
from ..impact import ImpactInputs
from ..labelstudio import SOURCE as LABEL_STUDIO_SOURCE
from ..labelstudio import SYSTEM as LABEL_STUDIO
from ..labelstudio import ControlNames
from . import _annotations, _exchange, _external, _impact, _live, _metrics, _reads, _resolutions, _tasks, _tokens
from . import _schema as S
from ._columns import (CREATED_AT, EVIDENCE, GUIDELINE_VERSION, IDEMPOTENCY_KEY, PAYLOAD, PAYLOAD_REF, PROBS,
                       SIGNALS, SOURCE, SUPERSEDES_KEY, TASK_ID)
from ._convert import (MAX_BIGINT, MAX_INTEGER, as_frame, check_columns, external_ids, json_text, lookup, now_utc,
                       to_utc, utc_stamps)
from ._engine import default_url, make_engine, normalize_url, write_transaction
from ._records import (Annotation, Annotator, BatchResult, Dispute, Escalation, GuidelineVersion, ModelVersion,
                       Principal, QueueMetrics, Resolution, ResolutionMethod, Role, Stream, StreamMetrics, Task,
                       TaskPreview, TaskStatus)
from ._writes import check_event_fields, insert_idempotent, record_events
from .migrate import current_revision, head_revision, upgrade

__all__ = ["MAX_SLA", "LabelStore"]

TIER: Final = "tier"
KIND: Final = "kind"
BLIND: Final = "blind"
ROUND: Final = "round"
DUE_AT: Final = "due_at"
STATUS: Final = "status"
DEFAULT_DISPUTE_SLA: Final = timedelta(hours=24)
# The longest task SLA: ten years (a due time must stay a datetime; a longer wait is a mistake).
MAX_SLA: Final = timedelta(days=3660)


ROUTE_CHARS: Final = 50  # predictions.route


def _name(value: Any, name: str) -> str:
    check_text(value, name, max_chars=S.MAX_NAME_CHARS)
    if not value.strip():
        raise fail(name, f"a non-empty string of at most {S.MAX_NAME_CHARS} characters", _describe(value))
    return value


def _version(value: Any, name: str = "version") -> int:
    """A guideline version number (an INTEGER column)."""
    return check_int(value, name, low=1, high=MAX_INTEGER)


def _task_id(value: Any, name: str = "task_id") -> int:
    return check_int(value, name, low=1, high=MAX_BIGINT)


def _flag(value: Any, name: str) -> bool:
    """True or False, not a value that merely converts to one (``"no"`` is truthy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise fail(name, "True or False", _describe(value))
    return bool(value)


def _status(value: Any) -> TaskStatus:
    """A task status from a TaskStatus or its value; anything else (dicts included) refused."""
    if isinstance(value, TaskStatus):
        return value
    if not isinstance(value, str) or value not in {t.value for t in TaskStatus}:
        raise fail(STATUS, f"one of {[t.value for t in TaskStatus]}", _describe(value))
    return TaskStatus(value)


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
        self._stream_names: dict[int, str] = {}  # by id (streams are never renamed nor deleted)
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
        # Class names travel as JSON (PostgreSQL's JSONB holds no NUL): checked as text; ints
        # become their decimal strings, as they always did.
        classes = check_text_column(pd.Series(list(classes), dtype=object), "classes", max_chars=S.MAX_NAME_CHARS,
                                    ints=True).tolist()
        if any(c is None for c in classes) or len(classes) < 2 or len(set(classes)) != len(classes):
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
        if not isinstance(name, str) or name not in self._streams:
            check_text(name, "stream", max_chars=S.MAX_NAME_CHARS)
            with self._read() as conn:
                row = conn.execute(sa.select(S.streams).where(S.streams.c.name == name)).first()
            if row is None:
                raise _not_found("stream", "the name of a registered stream (create_stream)", _describe(name))
            # Streams are immutable once created, so caching them is safe.
            self._streams[name] = Stream(id=row.id, name=row.name, classes=tuple(row.classes), owner=row.owner,
                                         escalation_contact=row.escalation_contact, created_at=row.created_at)
        return self._streams[name]

    def streams(self) -> list[Stream]:
        """Every work stream, by name."""
        with self._read() as conn:
            names = conn.execute(sa.select(S.streams.c.name).order_by(S.streams.c.name)).scalars().all()
        return [self.stream(n) for n in names]

    def annotators(self) -> list[Annotator]:
        """Every annotator, by name."""
        with self._read() as conn:
            names = conn.execute(sa.select(S.annotators.c.name).order_by(S.annotators.c.name)).scalars().all()
        return [self.annotator(n) for n in names]

    def add_annotator(self, name: str, *, tier: int = 1, streams: Sequence[str] = (), active: bool = True,
                      hourly_rate: float = 0.0, email: str | None = None, actor: str | None = None) -> Annotator:
        """Register an annotator (idempotent by name) and put them on ``streams``. ``email``
        (unique) is how a Label Studio user is matched to them."""
        row = {"name": _name(name, "name"), "tier": check_int(tier, "tier", low=0, high=MAX_INTEGER),
               "active": _flag(active, "active"),
               "hourly_rate": check_real(hourly_rate, "hourly_rate", low=0.0), "created_at": now_utc(),
               "email": _email(email)}
        targets = [self.stream(s) for s in streams]
        with write_transaction(self._engine) as conn:
            _check_email_free(conn, row["email"], name)
            # The email is not part of the idempotent comparison: a later call without it (the
            # program re-registering its annotators) must not conflict with one set since.
            _, ids = insert_idempotent(conn, S.annotators, [row], key="name", compare=("tier", "active", "hourly_rate"),
                                       action="annotator.created", entity="annotator", actor=actor, reason=None,
                                       after=("name", "tier", "hourly_rate"))
            if row["email"] is not None:
                self._set_email(conn, ids[name], row["email"], actor=actor)
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
        active = _flag(active, "active")
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
        name = external_ids(pd.Series([name], dtype=object), ANNOTATOR).iloc[0]
        id_ = conn.execute(sa.select(S.annotators.c.id).where(S.annotators.c.name == name)).scalar()
        if id_ is None:
            raise _not_found(ANNOTATOR, "a registered annotator (add_annotator)", _describe(name))
        return id_

    def annotator(self, name: str) -> Annotator:
        """The annotator called ``name`` with the streams they are on."""
        a, sa_, st = S.annotators, S.stream_annotators, S.streams
        name = external_ids(pd.Series([name], dtype=object), ANNOTATOR).iloc[0]
        with self._read() as conn:
            row = conn.execute(sa.select(a).where(a.c.name == name)).first()
            if row is None:
                raise _not_found(ANNOTATOR, "a registered annotator (add_annotator)", _describe(name))
            streams = conn.execute(sa.select(st.c.name).join(sa_, sa_.c.stream_id == st.c.id)
                                   .where(sa_.c.annotator_id == row.id).order_by(st.c.name)).scalars().all()
        return Annotator(id=row.id, name=row.name, tier=row.tier, active=row.active, hourly_rate=row.hourly_rate,
                         streams=tuple(streams), email=row.email)

    def update_annotator(self, name: str, *, tier: int | None = None, active: bool | None = None,
                         email: str | None = None, streams: Sequence[str] = (), actor: str | None = None,
                         reason: str | None = None) -> Annotator:
        """Change an annotator's tier, active flag or email, and put them on more ``streams``;
        one event per change. None leaves a field as it is."""
        targets = [self.stream(s) for s in streams]
        tier = None if tier is None else check_int(tier, "tier", low=0, high=MAX_INTEGER)
        email = _email(email)
        if active is not None:
            self.set_annotator_active(name, active, actor=actor, reason=reason)
        a = S.annotators
        with write_transaction(self._engine) as conn:
            id_ = self._annotator_id(conn, name)
            if tier is not None:
                before = conn.execute(sa.select(a.c.tier).where(a.c.id == id_)).scalar_one()
                if before != tier:
                    conn.execute(a.update().where(a.c.id == id_).values(tier=tier))
                    record_events(conn, [{"action": "annotator.tier", "entity": "annotator", "entity_id": id_,
                                          "before": {"tier": before}, "after": {"tier": tier}}], actor=actor,
                                  reason=reason)
            if email is not None:
                _check_email_free(conn, email, name)
                self._set_email(conn, id_, email, actor=actor)
            self._join(conn, id_, targets, actor=actor)
        return self.annotator(name)

    def set_annotator_email(self, name: str, email: str, *, actor: str | None = None) -> Annotator:
        """Set the email a Label Studio user is matched by (unique among annotators)."""
        return self.update_annotator(name, email=email, actor=actor)

    def annotator_by_email(self, email: str) -> Annotator:
        """The annotator with this email (case-insensitive)."""
        email = _email(email)
        with self._read() as conn:
            name = conn.execute(sa.select(S.annotators.c.name).where(S.annotators.c.email == email)).scalar()
        if name is None:
            raise NotFoundError(f"The 'email' argument must be an annotator's email. Got {email!r} instead.")
        return self.annotator(name)

    def _set_email(self, conn: Connection, annotator_id: int, email: str, *, actor: str | None) -> None:
        a = S.annotators
        before = conn.execute(sa.select(a.c.email).where(a.c.id == annotator_id)).scalar_one()
        if before != email:
            conn.execute(a.update().where(a.c.id == annotator_id).values(email=email))
            record_events(conn, [{"action": "annotator.email", "entity": "annotator", "entity_id": annotator_id,
                                  "before": {"email": before}, "after": {"email": email}}], actor=actor, reason=None)

    # ----------------------------------------------------------------- guidelines
    def add_guideline(self, stream: str, text: str, *, author: str, examples: Any = None,
                      parent_version: int | None = None, idempotency_key: str | None = None,
                      actor: str | None = None, reason: str | None = None) -> GuidelineVersion:
        """Draft the next version of a stream's guideline. Drafts may be revised
        (:meth:`revise_guideline`) until :meth:`publish_guideline`; published ones never change.
        ``reason`` is recorded on the ``guideline.drafted`` event (e.g. the pairs it addresses)."""
        s = self.stream(stream)
        _guideline_text(text)
        _name(author, "author")
        examples_text = json_text(examples, "examples")
        if idempotency_key is not None:
            check_text(idempotency_key, IDEMPOTENCY_KEY, max_chars=S.MAX_KEY_CHARS)
        if parent_version is not None:
            _version(parent_version, "parent_version")
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
                          actor=actor or author, reason=reason)
            return self._guideline(conn, s, version)

    def revise_guideline(self, stream: str, version: int, *, text: str | None = None, examples: Any = None,
                         actor: str | None = None, reason: str | None = None) -> GuidelineVersion:
        """Change a draft's text or examples; a published version raises ConflictError."""
        s = self.stream(stream)
        version = _version(version)
        if text is None and examples is None:
            # A revision that changes nothing would still write an event claiming a change.
            raise fail("text", "a new text or new examples", "neither")
        if text is not None:
            _guideline_text(text)
        json_text(examples, "examples")
        g = S.guideline_versions
        with write_transaction(self._engine) as conn:
            before = self._guideline(conn, s, version)
            if before.published_at is not None:
                raise ConflictError(f"Version {version} of stream {stream!r}'s guideline is published and immutable; "
                                    f"draft a new version with parent_version={version}.")
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
        version = _version(version)
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
        if version is not None:
            version = _version(version)
        g = S.guideline_versions
        with self._read() as conn:
            if version is None:
                version = conn.execute(sa.select(sa.func.max(g.c.version)).where(
                    g.c.stream_id == s.id, g.c.published_at.is_not(None))).scalar()
                if version is None:
                    raise fail("version", f"a published version of stream {stream!r}'s guideline", "none published")
            return self._guideline(conn, s, version)

    def draft_guideline_from_pairs(self, stream: str, *, author: str, pairs: int = 3, per_class: int = 3,
                                   actor: str | None = None) -> tuple[GuidelineVersion, Any]:
        """Draft the next guideline version from the stream's most confused class pairs: a
        section per pair with the boundary examples nearest the model's decision edge and what
        annotators said (``guideline_unclear`` flags, rationales), added to the newest published
        version's text (its parent). Returns the stored draft and the
        :class:`loop.guidance.GuidanceDraft` it was made of; an admin publishes it
        (:meth:`publish_guideline`). See :mod:`loop.store._guidance`."""
        from ._guidance import draft_from_confusions

        return draft_from_confusions(self, stream, author=author, pairs=pairs, per_class=per_class, actor=actor)

    def _guideline(self, conn: Connection, s: Stream, version: int) -> GuidelineVersion:
        g, p = S.guideline_versions, S.guideline_versions.alias("p")
        row = conn.execute(sa.select(g, p.c.version.label("parent_version")).outerjoin(p, p.c.id == g.c.parent_id)
                           .where(g.c.stream_id == s.id, g.c.version == version)).first()
        if row is None:
            raise _not_found(GUIDELINE_VERSION, f"a version of stream {s.name!r}'s guideline", _describe(version))
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
                for e, p, r, src in zip(external_ids(frame[ITEM], ITEM), payloads, _texts(frame, PAYLOAD_REF),
                                        _texts(frame, SOURCE, max_chars=S.MAX_NAME_CHARS))]
        with write_transaction(self._engine) as conn:
            result, _ = insert_idempotent(conn, S.items, rows, key="external_id", compare=("payload", "payload_ref", "source"),
                                          where=S.items.c.stream_id == s.id, action="item.created", entity="item",
                                          actor=actor, reason=None, after=("external_id",))
        return result

    def add_model_version(self, name: str, *, uri: str | None = None, actor: str | None = None) -> ModelVersion:
        """Register a model version (idempotent by name); ``uri`` is an MLflow model URI or run id."""
        row = {"name": _name(name, "name"), "uri": None if uri is None else check_text(uri, "uri"),
               "created_at": now_utc()}
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
        check_text(model_version, "model_version", max_chars=S.MAX_NAME_CHARS)
        routes, reasons = _texts(frame, ROUTE, max_chars=ROUTE_CHARS), _texts(frame, REASON)
        with write_transaction(self._engine) as conn:
            mv = conn.execute(sa.select(S.model_versions.c.id).where(S.model_versions.c.name == model_version)).scalar()
            if mv is None:
                raise fail("model_version", "a registered model version (add_model_version)", _describe(model_version))
            item_ids = _item_ids_of(conn, s, frame[ITEM])
            at = now_utc()
            signals = [_json_or_none(v) for v in frame[SIGNALS]] if SIGNALS in frame else [None] * len(frame)
            rows = [{"item_id": int(i), "model_version_id": mv, "probs": p.tolist(), "signals": sig, "route": r,
                     "reason": why, "created_at": at}
                    for i, p, sig, r, why in zip(item_ids, probs, signals, routes, reasons)]
            for row in rows:
                json_text(row["signals"], SIGNALS)
            result, _ = insert_idempotent(conn, S.predictions, rows, key="item_id",
                                          compare=("probs", "signals", "route", "reason"),
                                          where=S.predictions.c.model_version_id == mv, action="prediction.created",
                                          entity="prediction", actor=actor, reason=None, after=("route",),
                                          stream_id=s.id)
        return result

    def known_items(self, stream: str, item_ids: Sequence[Any]) -> set[str]:
        """Which of ``item_ids`` (external ids) the stream holds already."""
        s = self.stream(stream)
        i = S.items
        with self._read() as conn:
            return {r[0] for r in lookup(conn, i.c.external_id, [str(x) for x in item_ids], i.c.external_id,
                                         where=i.c.stream_id == s.id)}

    def latest_predictions(self, stream: str, item_ids: Sequence[Any]) -> pd.DataFrame:
        """The newest stored prediction of each of ``item_ids`` that has one: item_id,
        model_version, probs, signals, route, reason."""
        s = self.stream(stream)
        i = S.items
        with self._read() as conn:
            ids = dict(lookup(conn, i.c.external_id, [str(x) for x in item_ids], i.c.id, i.c.external_id,
                              where=i.c.stream_id == s.id))
            found = _tasks.latest_predictions(conn, list(ids))
        return pd.DataFrame([(ids[k], v[4], v[0], v[1], v[2], v[3]) for k, v in found.items()],
                            columns=[ITEM, "model_version", PROBS, SIGNALS, ROUTE, REASON])

    def add_tasks(self, stream: str, tasks: Any, *, sla: timedelta | None = None,
                  actor: str | None = None) -> BatchResult:
        """Create labelling tasks (idempotent). Columns: ``item_id``; optional ``tier``
        (default 1), ``annotator_id`` (assigns it), ``guideline_version`` (published),
        ``due_at``, ``kind`` (one of ``label, expert, double_blind, audit, adjudication``;
        default ``label``), ``blind`` (show no suggestion and no other answer; default: true
        for double_blind and audit tasks), ``round``, ``idempotency_key`` (default: one task per
        item, tier and guideline). ``sla``: rows without a ``due_at`` are due this long after
        now (past it, :meth:`escalate_overdue` escalates them to the stream owner).
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
                               low=0, high=MAX_INTEGER) for t in frame.get(TIER, pd.Series([1] * n))]
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
            keys = check_text_column(frame[IDEMPOTENCY_KEY], IDEMPOTENCY_KEY, max_chars=S.MAX_KEY_CHARS, ints=True) \
                if IDEMPOTENCY_KEY in frame else pd.Series([None] * n)
            kinds = [_task_kind(k) for k in frame.get(KIND, pd.Series(["label"] * n))]
            blinds = [_task_blind(b, k) for b, k in zip(frame.get(BLIND, pd.Series([None] * n)), kinds)]
            rounds = [None if r is None or (isinstance(r, float) and r != r) else
                      check_int(int(r) if isinstance(r, (float, np.floating)) and float(r).is_integer() else r,
                                ROUND, low=0, high=MAX_INTEGER) for r in frame.get(ROUND, pd.Series([None] * n))]
            at = now_utc()
            if sla is not None:
                if not isinstance(sla, timedelta) or sla <= timedelta(0) or sla > MAX_SLA:
                    raise fail("sla", f"a positive timedelta of at most {MAX_SLA.days} days", _describe(sla))
            rows = []
            for i in range(n):
                gv = None if pd.isna(gvs.iloc[i]) else int(gvs.iloc[i])
                key = keys.iloc[i] if pd.notna(keys.iloc[i]) else f"t:{item_ids[i]}:{tiers[i]}:{gv}"
                rows.append({"stream_id": s.id, "item_id": int(item_ids[i]), "tier": tiers[i], "annotator_id": people[i],
                             "guideline_version_id": gv, "status": "assigned" if people[i] is not None else "open",
                             "kind": kinds[i], "blind": blinds[i], "round": rounds[i],
                             "assigned_at": at if people[i] is not None else None, "created_at": at, "due_at": (None if sla is None else at + sla) if pd.isna(due.iloc[i]) else due.iloc[i].to_pydatetime(),
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
        status = _status(status)
        task_id = _task_id(task_id)
        check_event_fields(actor, reason)
        t = S.tasks
        with write_transaction(self._engine) as conn:
            row = conn.execute(sa.select(t).where(t.c.id == task_id)).first()
            if row is None:
                raise fail("task_id", "the id of a stored task", _describe(task_id))
            values = {"status": status.value}
            if annotator is not None:
                s = self._stream_by_id(conn, row.stream_id)
                values["annotator_id"] = int(_annotations._annotator_ids(conn, s, pd.Series([annotator], dtype=object))[0])
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
        status = _status(status)
        ids = sorted({_task_id(i, "task_ids") for i in task_ids})
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
        name = self._stream_names.get(stream_id)
        if name is None:
            name = conn.execute(sa.select(S.streams.c.name).where(S.streams.c.id == stream_id)).scalar_one()
            self._stream_names[stream_id] = name
        return self.stream(name)

    def task(self, task_id: int) -> Task:
        """The task with id ``task_id``."""
        task_id = _task_id(task_id)
        with self._read() as conn:
            return _task_of(self._task_item_row(conn, task_id))

    def _task_item_row(self, conn: Connection, task_id: int):
        """One task as a row (the frame of _tasks_query costs more than the query), with what its
        preview needs: stream_id, item_pk, guideline_version_id, payload, payload_ref."""
        row = conn.execute(_task_item_select(), {"task_id": task_id}).first()
        if row is None:
            raise _not_found("task_id", "the id of a stored task", _describe(task_id))
        return row

    def tasks_frame(self, stream: str, *, statuses: Sequence[TaskStatus | str] | None = None) -> pd.DataFrame:
        """The stream's tasks, one row each: task_id, item_id, tier, annotator_id,
        guideline_version, status, created_at, due_at, idempotency_key, kind, blind, round,
        assigned_at, completed_at, escalated_at."""
        s = self.stream(stream)
        where = S.tasks.c.stream_id == s.id
        if statuses is not None:
            where = where & S.tasks.c.status.in_([_status(v).value for v in statuses])
        return self._tasks_query(sa.select().where(where)).drop(columns="stream")

    @staticmethod
    def _tasks_select(base: sa.Select) -> sa.Select:
        t, i, a, g, st = S.tasks, S.items, S.annotators, S.guideline_versions, S.streams
        return (base.add_columns(t.c.id.label("task_id"), st.c.name.label("stream"), i.c.external_id.label(ITEM),
                                 t.c.tier, a.c.name.label(ANNOTATOR), g.c.version.label(GUIDELINE_VERSION), t.c.status,
                                 t.c.created_at, t.c.due_at, t.c.idempotency_key, t.c.kind, t.c.blind, t.c.round,
                                 t.c.assigned_at, t.c.completed_at, t.c.escalated_at)
                .select_from(t).join(i, i.c.id == t.c.item_id).join(st, st.c.id == t.c.stream_id)
                .outerjoin(a, a.c.id == t.c.annotator_id).outerjoin(g, g.c.id == t.c.guideline_version_id)
                .order_by(t.c.id))

    def _tasks_query(self, base: sa.Select) -> pd.DataFrame:
        with self._read() as conn:
            rows = conn.execute(self._tasks_select(base)).all()
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
            optional ``seconds``, ``rationale`` (text of at most 10,000 characters; an empty
            one is no rationale and reads back as None, on SQLite as on PostgreSQL), ``evidence``
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
            stream, label outside the class set (or not a label: a dict, a list), unpublished
            or malformed guideline version or task id, oversized rationale or key, text with a
            NUL character or a lone surrogate (neither engine stores both). Nothing is stored.
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
        reader racing other writers reads again from an older id (:class:`StreamHistory` does,
        from the largest id below which nothing can still arrive, and drops what it has).
        """
        s = self.stream(stream)
        if after is not None:
            after = check_int(after, "after", low=0, high=MAX_BIGINT)
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
            after = check_int(after, "after", low=0, high=MAX_BIGINT)
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
            return check_int(as_of, "as_of", low=0, high=MAX_BIGINT)
        return to_utc(as_of, "as_of")

    # ----------------------------------------------------------------- live programs
    def items_frame(self, stream: str, *, after: int | None = None) -> pd.DataFrame:
        """The stream's items in insertion order: ``item_id, payload, payload_ref, source,
        created_at, item_row`` (``item_row``: the store's id, growing in insertion order; ``after``
        keeps the items stored after that row, so a reader appends what is new)."""
        s = self.stream(stream)
        if after is not None:
            after = check_int(after, "after", low=0)
        with self._read() as conn:
            return _live.items_frame(conn, s, after=after)

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
                    internal = _item_ids_of(conn, s, pd.Series([item_id], dtype=object))[0]
                    query = query.where(e.c.item_id == int(internal))
            elif item_id is not None:
                raise fail("stream", "a stream name when item_id is given", "None")
            rows = conn.execute(query).all()
        frame = pd.DataFrame(rows, columns=[c.name for c in e.columns]).rename(columns={"id": "event_id"})
        frame["at"] = pd.to_datetime(frame["at"], utc=True)
        return frame

    def record_alert(self, stream: str, action: str, after: Mapping[str, Any], *, reason: str,
                     actor: str | None = None) -> None:
        """Append one event about a whole stream to the audit trail (e.g. ``drift.alert``, with
        the drift report as ``after``): entity ``stream``, the stream's id, ``reason`` one line.

        Raises
        ------
        SchemaError
            An unknown stream, an action that is not ``word.word`` text of at most 50
            characters, an ``after`` that is not a JSON-ready mapping, a reason that is not text.
        """
        s = self.stream(stream)
        check_text(action, "action", max_chars=50)
        if action.count(".") != 1 or not all(part.replace("_", "").isalnum() for part in action.split(".")):
            raise fail("action", "a name like 'drift.alert'", _describe(action))
        if not isinstance(after, Mapping):
            raise fail("after", "a mapping (the event's content)", _describe(after))
        check_text(reason, "reason")
        payload = json.loads(json_text(dict(after), "after"))
        with write_transaction(self._engine) as conn:
            record_events(conn, [{"action": action, "entity": "stream", "entity_id": s.id, "stream_id": s.id,
                                  "after": payload, "reason": reason}], actor=actor, reason=reason)

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

    # ----------------------------------------------------------------- annotator impact
    def close_round(self, stream: str, round_: int, *, skills: Mapping[str, float] | None = None,
                    actor: str | None = None) -> dict[str, Any]:
        """Record that a program round closed: a ``round.closed`` event with the newest
        annotation, resolution, dispute and prediction ids (where the round ends) and the
        resolver's skill estimate of each annotator (``skills``: name -> probability their label
        is right). :meth:`impact_inputs` assigns rows to rounds by these marks. Returns the mark
        (``round``, ``annotation_version``, ..., ``skills``), as :meth:`round_marks` reads it."""
        s = self.stream(stream)
        round_ = check_int(round_, "round", low=0, high=MAX_INTEGER)
        skills = {} if skills is None else skills
        if not isinstance(skills, Mapping):
            raise fail("skills", "a mapping of annotator name to a skill in [0, 1]", _describe(skills))
        for name, value in skills.items():
            _name(name, "skills")
            check_real(value, f"skills[{name!r}]", low=0.0, high=1.0)
        with write_transaction(self._engine) as conn:
            return _impact.close_round(conn, s, round_, skills, actor=actor)

    def round_marks(self, stream: str) -> list[dict[str, Any]]:
        """The stream's ``round.closed`` marks, oldest first (:meth:`close_round`). Reading them
        scans the audit trail: a program reads them once and keeps what it closes."""
        s = self.stream(stream)
        with self._read() as conn:
            return _impact.round_marks(conn, s)

    def impact_inputs(self, stream: str, *, rounds: Sequence[int] | None = None,
                      marks: Sequence[Mapping[str, Any]] | None = None) -> ImpactInputs:
        """The frames :func:`loop.impact.annotator_impact` counts, each row with its round
        (:mod:`loop.store._impact`). ``rounds``: only what those rounds' rows need (their rows of
        the impact table are the same as the whole history's), at the cost of those rounds, not
        of the history. ``marks``: the stream's :meth:`round_marks`, when the caller keeps them."""
        s = self.stream(stream)
        if rounds is not None:
            if isinstance(rounds, (str, bytes)) or not isinstance(rounds, Iterable):
                raise fail("rounds", "a sequence of round numbers (integers >= 0)", _describe(rounds))
            rounds = [check_int(r, "rounds", low=0, high=MAX_INTEGER) for r in rounds]
        if marks is not None and (not isinstance(marks, Sequence)
                                  or not all(isinstance(m, Mapping) and "round" in m for m in marks)):
            raise fail("marks", "the stream's round marks (round_marks, close_round)", _describe(marks))
        with self._read() as conn:
            return _impact.impact_inputs(conn, s, None if marks is None else [dict(m) for m in marks], rounds)

    def annotator_impact(self, stream: str, *, annotator: str | None = None) -> pd.DataFrame:
        """Per annotator and round, what their answers did to the stream's labels
        (:func:`loop.impact.annotator_impact`: skill, answers, confirmed, overturned, pending,
        disputes won, errors fixed, those the retrained model agrees with, share of the
        round's error reduction); ``annotator`` keeps one person's rows, read at the cost of what
        they touched (:func:`loop.store._impact.annotator_inputs`), not of the whole history."""
        if annotator is None:
            return self.impact_inputs(stream).table()
        _name(annotator, "annotator")
        s = self.stream(stream)
        with self._read() as conn:
            # An unknown name has no rows: id -1 matches none (as filtering the whole table did).
            who = conn.execute(sa.select(S.annotators.c.id).where(S.annotators.c.name == annotator)).scalar()
            inputs = _impact.annotator_inputs(conn, s, -1 if who is None else int(who))
        table = inputs.table()
        table = table[table[ANNOTATOR] == annotator].reset_index(drop=True)
        # Typed as the whole history's rows are (counting no row leaves the round an object column).
        return table.astype({ROUND: np.int64}) if table.empty else table

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
        if model_version is not None:
            check_text(model_version, "model_version", max_chars=S.MAX_NAME_CHARS)
        tasks = self.tasks_frame(stream, statuses=statuses)
        with self._read() as conn:
            items = _exchange.item_payloads(conn, s, tasks[ITEM].tolist())
            preds = _exchange.latest_predictions(conn, s, tasks[ITEM].tolist(), model_version)
        return _exchange.label_studio_tasks(s, tasks, items, preds, path,
                                            names=ControlNames(from_name, to_name, reason_name))

    def item_data(self, stream: str, item_ids: Sequence[str], *, to_name: str = "text") -> dict[str, dict]:
        """Label Studio task data of items (their payload's fields plus ``item_id``), and the
        newest prediction of each: ``{item_id: {"data": {...}, "prediction": (model, probs,
        reason) or None}}``. Unknown items are left out, ids no item can have (NUL characters,
        lone surrogates, over 200 characters) among them: the database would refuse them."""
        s = self.stream(stream)
        ids = [i for i in map(str, item_ids) if _storable_id(i)]
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

    # ----------------------------------------------------------------- tokens
    def issue_token(self, name: str, role: Role | str, *, annotator: str | None = None,
                    expires_at: datetime | str | None = None, actor: str | None = None) -> str:
        """Issue a bearer token and return it: the only time it is ever shown.

        The store keeps its SHA-256 hash (:mod:`loop.store._tokens`). ``role``: ``admin``,
        ``annotator`` (speaks for ``annotator``, default the annotator called ``name``) or
        ``client``.

        Examples
        --------
        >>> store = LabelStore("sqlite://")
        >>> token = store.issue_token("ops", "admin")
        >>> token.startswith("ll_"), store.authenticate(token).role.value
        (True, 'admin')
        """
        _name(name, "name")
        role = _tokens.check_role(role)
        if role is Role.ANNOTATOR and annotator is None:
            annotator = name
        expires = None if expires_at is None else to_utc(expires_at, "expires_at")
        with write_transaction(self._engine) as conn:
            annotator_id = None if annotator is None else self._annotator_id(conn, annotator)
            return _tokens.issue(conn, name=name, role=role, annotator_id=annotator_id, expires_at=expires,
                                 actor=actor)

    def revoke_token(self, token: int | str, *, actor: str | None = None, reason: str | None = None) -> int:
        """Revoke a token by id, by prefix (``ll_`` and 7 characters, as listed) or by the token
        itself; returns its id. Revoking twice is a no-op."""
        with write_transaction(self._engine) as conn:
            return _tokens.revoke(conn, token, actor=actor, reason=reason)

    def tokens_frame(self) -> pd.DataFrame:
        """Every token (never its hash): token_id, prefix, role, name, annotator_id,
        created_at, expires_at, revoked_at, active."""
        with self._read() as conn:
            return _tokens.frame(conn, now=now_utc())

    def authenticate(self, token: str) -> Principal | None:
        """Who ``token`` speaks for; None when it is unknown, revoked, expired, or its
        annotator is inactive."""
        with self._read() as conn:
            return _tokens.authenticate(conn, token, now=now_utc())

    # ----------------------------------------------------------------- people in the loop
    def next_task(self, annotator: str, *, stream: str | None = None, actor: str | None = None) -> Task | None:
        """The caller's next task: their own unfinished one first, else an open task claimed
        for them now (race-free); None when there is none. How the task is chosen (streams,
        tier, items already labelled, skill on the likely class pair, urgency):
        :mod:`loop.store._tasks`."""
        with write_transaction(self._engine) as conn:
            claimed = self._claim_next(conn, annotator, stream, actor)
            return None if claimed is None else _task_of(self._task_item_row(conn, claimed[0]))

    def next_task_preview(self, annotator: str, *, stream: str | None = None,
                          actor: str | None = None) -> TaskPreview | None:
        """:meth:`next_task` and its :meth:`task_preview` in one transaction (what the task API's
        ``next`` answers): the same task and the same preview, with the item's latest
        prediction read once (the ranking's) and no row read twice."""
        with write_transaction(self._engine) as conn:
            claimed = self._claim_next(conn, annotator, stream, actor)
            if claimed is None:
                return None
            task_id, preds = claimed
            return self._preview(conn, self._task_item_row(conn, task_id), preds)

    def _claim_next(self, conn: Connection, annotator: str, stream: str | None,
                    actor: str | None) -> tuple[int, dict[int, tuple]] | None:
        """The id of the caller's next task (claimed now if need be) and the latest predictions
        read on the way (item id -> prediction; the claimed task's item is in it when the
        ranking read it)."""
        # Read and locked in one statement on PostgreSQL: one claim per person at a time.
        who = self._annotator_row(conn, annotator, lock=True)
        if not who.active:
            raise ForbiddenError(f"Annotator {annotator!r} is inactive and takes no tasks.")
        stream_ids = self._annotator_stream_ids(conn, who.id)
        if stream is not None:
            s = self.stream(stream)
            if s.id not in stream_ids:
                raise ForbiddenError(f"Annotator {annotator!r} is not on stream {stream!r}.")
            stream_ids = [s.id]
        if not stream_ids:
            return None
        task_id = _tasks.own_unfinished(conn, who.id, stream_ids)
        if task_id is not None:
            return task_id, {}
        ranked, preds = _tasks.rank_with_predictions(conn, who.id, _tasks.candidates(conn, who.id, who.tier,
                                                                                       stream_ids))
        task_id = _tasks.claim(conn, ranked, who.id, now=now_utc(), actor=actor or annotator)
        return None if task_id is None else (task_id, preds)

    def answer_task(self, task_id: int, annotator: str, label: Any, *, rationale: str | None = None,
                    evidence: Any = None, seconds: float | None = None, flags: Sequence[str] | None = None,
                    idempotency_key: str | None = None, source: str = "api",
                    actor: str | None = None) -> tuple[Annotation, bool]:
        """Answer a task assigned to ``annotator``; returns the stored annotation and whether
        it was created now.

        In one transaction: the annotation (with the task id, ``source``, the suggestion and
        its confidence as shown — none on a blind task — and the guideline version shown), the
        task marked done, their events; an adjudication task also closes its disputes
        (:meth:`dispute`). A retry under the same ``idempotency_key`` (default: one answer per
        task) with the same content returns the stored answer.

        Raises
        ------
        NotFoundError
            No such task.
        ForbiddenError
            The task is not assigned to ``annotator``.
        ConflictError
            The key names an answer with other content, or the task is not open for answers.
        SchemaError
            A bad label, flag, rationale or seconds (naming the field).
        """
        task_id = _task_id(task_id)  # a SchemaError on both engines, not SQLite's OverflowError
        if idempotency_key is not None:  # NUL: PostgreSQL refuses it, SQLite would store it
            check_text(idempotency_key, IDEMPOTENCY_KEY, max_chars=S.MAX_KEY_CHARS)
        now = now_utc()
        with write_transaction(self._engine) as conn:
            task = _tasks.task_row(conn, task_id, lock=True)
            who = self._annotator_row(conn, annotator)
            if task.annotator_id != who.id:  # before anything about the content: nothing leaks
                raise ForbiddenError(f"Task {task.id} is not assigned to this annotator; only its assignee "
                                     "may answer it.")
            s = self._stream_by_id(conn, task.stream_id)
            key = _tasks.answer_key(int(task.id), idempotency_key)
            content = _tasks.answer_content(s, label, rationale=rationale, evidence=evidence, seconds=seconds,
                                            flags=flags)
            stored = _tasks.existing_answer(conn, key)
            if stored is not None:
                if _tasks.stored_content(stored) != content:
                    raise ConflictError(f"The 'idempotency_key' {idempotency_key!r} already names an answer to task "
                                        f"{task.id} with other content; an answer is never overwritten.")
                return self._annotation(conn, stored.id), False
            _tasks.check_answerable(task, who.id)
            _tasks.write_answer(conn, s, task, annotator, content, key=key, source=source, now=now,
                                actor=actor or annotator)
            if task.kind == "adjudication":
                _tasks.close_disputes(conn, s, task, content["label"], now=now, actor=actor or annotator)
            return self._annotation(conn, key=key), True

    def task_preview(self, task_id: int) -> TaskPreview:
        """What an annotator sees with a task: the item, the guideline section for the item's
        likely class pair, the suggestion and the nearest resolved examples of each class of
        the pair. A blind task shows no suggestion and no examples, and the whole guideline;
        no preview shows another annotator's answer."""
        task_id = _task_id(task_id)
        with self._read() as conn:
            return self._preview(conn, self._task_item_row(conn, task_id), {})

    def _preview(self, conn: Connection, row, preds: dict[int, tuple]) -> TaskPreview:
        """The preview of a :meth:`_task_item_row`; ``preds``: latest predictions already read
        in this transaction (item id -> prediction), read here when the item's is not in it."""
        task = _task_of(row)
        s = self.stream(task.stream)
        gv = _tasks.shown_guideline_text(conn, row)
        pred = None
        if not task.blind:
            pred = preds[row.item_pk] if row.item_pk in preds else \
                _tasks.latest_predictions(conn, [row.item_pk]).get(row.item_pk)
        suggestion = _tasks.suggestion_of(s, pred)
        examples = None
        if suggestion is not None:
            codes = tuple(s.classes.index(c) for c in suggestion.confused_pair)
            examples = _tasks.nearest_examples(conn, s, row.item_pk, row.payload, codes)
        section = None if gv is None else _tasks.guideline_section(
            gv.text, None if suggestion is None else suggestion.confused_pair)
        return TaskPreview(task=task, classes=s.classes, display=_tasks.display_of(row.payload, row.payload_ref),
                           payload=row.payload, guideline_version=None if gv is None else gv.version,
                           guideline_section=section, suggestion=suggestion, examples=examples)

    def annotator_tasks(self, annotator: str | None = None, *, stream: str | None = None,
                        statuses: Sequence[TaskStatus | str] | None = None) -> pd.DataFrame:
        """Tasks across streams (with a ``stream`` column), those assigned to ``annotator``
        when given, else everyone's."""
        t = S.tasks
        where = sa.true()
        if annotator is not None:
            with self._read() as conn:
                where = where & (t.c.annotator_id == self._annotator_id(conn, annotator))
        if stream is not None:
            where = where & (t.c.stream_id == self.stream(stream).id)
        if statuses is not None:
            where = where & t.c.status.in_([_task_status(v).value for v in statuses])
        return self._tasks_query(sa.select().where(where))

    def dispute(self, stream: str, item_id: Any, annotator: str, *, target: str, reason: str, label: Any = None,
                idempotency_key: str | None = None, sla: timedelta | None = DEFAULT_DISPUTE_SLA,
                actor: str | None = None) -> Dispute:
        """Dispute an item's resolved label (``target="resolution"``) or the model's suggestion
        (``"suggestion"``); the item goes to adjudication.

        Creates the dispute and, unless the item has an unfinished adjudication task already
        (the dispute then joins it), an ``adjudication`` task (expert tier, blind, due after
        ``sla``). Answering that task closes the dispute: ``resolved`` with the adjudicated
        label superseding the current resolution when it differs (or as the first resolution),
        ``rejected`` when the adjudicator keeps the current label. Idempotent by
        ``idempotency_key`` (default: one dispute per item, annotator and target).

        Raises
        ------
        NotFoundError
            No such item (or stream, or annotator).
        ForbiddenError
            The annotator is inactive or not on the stream.
        SchemaError
            A bad target, reason or label; a resolution disputed on an unresolved item, a
            suggestion on an item without a prediction.
        ConflictError
            The key names another dispute.
        """
        s = self.stream(stream)
        if target not in S.DISPUTE_TARGETS:
            raise fail("target", f"one of {list(S.DISPUTE_TARGETS)}", _describe(target))
        if not isinstance(reason, str) or not reason.strip() or len(reason) > S.MAX_RATIONALE_CHARS:
            raise fail("reason", f"a non-empty text of at most {S.MAX_RATIONALE_CHARS} characters", _describe(reason))
        if idempotency_key is not None:
            check_text(idempotency_key, IDEMPOTENCY_KEY, max_chars=S.MAX_KEY_CHARS)
        code = None if label is None else int(_annotations.label_codes(pd.Series([label]), s, LABEL).iloc[0])
        now = now_utc()
        d, t = S.disputes, S.tasks
        with write_transaction(self._engine) as conn:
            item = self._item_row(conn, s, item_id)
            who = self._annotator_row(conn, annotator)
            if not who.active or s.id not in self._annotator_stream_ids(conn, who.id):
                raise ForbiddenError(f"Annotator {annotator!r} is not an active member of stream {stream!r}.")
            key = idempotency_key or f"dispute:{s.id}:{item.id}:{who.id}:{target}"
            if len(key) > S.MAX_KEY_CHARS:
                raise fail(IDEMPOTENCY_KEY, f"at most {S.MAX_KEY_CHARS} characters", f"{len(key)} characters")
            stored = conn.execute(sa.select(d).where(d.c.idempotency_key == key)).first()
            if stored is not None:
                if (stored.stream_id, stored.item_id, stored.annotator_id, stored.target, stored.label,
                        stored.reason) != (s.id, item.id, who.id, target, code, reason):
                    raise ConflictError(f"The 'idempotency_key' {key!r} already names another dispute.")
                return _tasks.to_dispute(stored, s, item.external_id, annotator)
            current = _resolutions._current(conn, s, [item.id]).get(item.id)
            if target == "resolution" and current is None:
                raise fail("target", "'suggestion' for an item not resolved yet (a resolution to dispute)",
                           "'resolution'")
            if target == "suggestion" and not _tasks.latest_predictions(conn, [item.id]):
                raise fail("target", "'resolution' for an item without a prediction (a suggestion to dispute)",
                           "'suggestion'")
            due = None if sla is None else now + sla
            task_id = _tasks.open_adjudication(conn, item.id)
            if task_id is None:
                task_id = conn.execute(t.insert().returning(t.c.id), {
                    "stream_id": s.id, "item_id": item.id, "tier": _tasks.EXPERT_TIER, "annotator_id": None,
                    "guideline_version_id": None, "status": "open", "created_at": now, "due_at": due,
                    "idempotency_key": f"adjudication:{key}", "kind": "adjudication", "blind": True,
                    "round": None}).scalar_one()
                record_events(conn, [{"action": "task.created", "entity": "task", "entity_id": task_id,
                                      "stream_id": s.id, "item_id": item.id,
                                      "after": {"kind": "adjudication", "tier": _tasks.EXPERT_TIER,
                                                "status": "open"}}], actor=actor or annotator, reason="dispute")
            dispute_id = conn.execute(d.insert().returning(d.c.id), {
                "stream_id": s.id, "item_id": item.id, "annotator_id": who.id, "task_id": None, "target": target,
                "label": code, "reason": reason, "status": "open", "adjudication_task_id": task_id,
                "created_at": now, "due_at": due, "escalated_at": None, "closed_at": None,
                "idempotency_key": key}).scalar_one()
            record_events(conn, [{"action": "dispute.created", "entity": "dispute", "entity_id": dispute_id,
                                  "stream_id": s.id, "item_id": item.id,
                                  "before": None if current is None else {"resolution_id": current[0],
                                                                          "label": current[1]},
                                  "after": {"target": target, "label": code, "adjudication_task_id": task_id}}],
                          actor=actor or annotator, reason=reason)
            return _tasks.to_dispute(_tasks.dispute_row(conn, dispute_id), s, item.external_id, annotator)

    def disputes_frame(self, stream: str) -> pd.DataFrame:
        """The stream's disputes: dispute_id, item_id, annotator_id, target, label, reason,
        status, adjudication_task_id, created_at, due_at, escalated_at, closed_at."""
        s = self.stream(stream)
        d, i, a = S.disputes, S.items, S.annotators
        with self._read() as conn:
            rows = conn.execute(sa.select(d.c.id, i.c.external_id, a.c.name, d.c.target, d.c.label, d.c.reason,
                                          d.c.status, d.c.adjudication_task_id, d.c.created_at, d.c.due_at,
                                          d.c.escalated_at, d.c.closed_at)
                                .join(i, i.c.id == d.c.item_id).outerjoin(a, a.c.id == d.c.annotator_id)
                                .where(d.c.stream_id == s.id).order_by(d.c.id)).all()
        return pd.DataFrame(rows, columns=["dispute_id", ITEM, ANNOTATOR, "target", "label", "reason", STATUS,
                                           "adjudication_task_id", CREATED_AT, DUE_AT, "escalated_at", "closed_at"])

    def escalate_overdue(self, now: datetime | str | None = None) -> Escalation:
        """Escalate unfinished tasks and open disputes past their ``due_at``: set
        ``escalated_at`` (once) and record an event; they then show in :meth:`owner_queue`."""
        at = now_utc() if now is None else to_utc(now, "now")
        with write_transaction(self._engine) as conn:
            return _tasks.escalate(conn, at)

    def owner_queue(self, stream: str) -> pd.DataFrame:
        """The stream owner's queue: escalated, unfinished tasks and open disputes (columns
        entity, id, item_id, kind, status, annotator_id, due_at, escalated_at)."""
        s = self.stream(stream)
        with self._read() as conn:
            return _tasks.owner_queue(conn, s)

    def queue_metrics(self, now: datetime | str | None = None) -> QueueMetrics:
        """Queue depth per stream, tier and status, task age, answers per minute and SLA
        breaches (:class:`~loop.store.QueueMetrics`)."""
        at = now_utc() if now is None else to_utc(now, "now")
        with self._read() as conn:
            return _tasks.queue_metrics(conn, at)

    def _annotator_row(self, conn: Connection, name: str, *, lock: bool = False):
        # SQLite's write lock already is one.
        row = conn.execute(_annotator_select(lock and conn.dialect.name == "postgresql"), {"name": str(name)}).first()
        if row is None:
            raise NotFoundError(f"The {ANNOTATOR!r} argument must be a registered annotator (add_annotator). "
                                f"Got {name!r} instead.")
        return row

    def _annotator_stream_ids(self, conn: Connection, annotator_id: int) -> list[int]:
        return sorted(conn.execute(_annotator_streams_select(), {"annotator_id": annotator_id}).scalars())

    def _item_row(self, conn: Connection, s: Stream, item_id: Any):
        i = S.items
        # Checked as stored ids are: a NUL character is a SchemaError on both engines (PostgreSQL
        # refuses it in a query; SQLite would only find nothing).
        external = external_ids(pd.Series([item_id], dtype=object), ITEM).iloc[0]
        row = conn.execute(sa.select(i.c.id, i.c.external_id).where(i.c.stream_id == s.id,
                                                                    i.c.external_id == external)).first()
        if row is None:
            raise NotFoundError(f"The {ITEM!r} argument must be an item of stream {s.name!r}. Got {item_id!r} instead.")
        return row

    def _annotation(self, conn: Connection, annotation_id: int | None = None, *, key: str | None = None) -> Annotation:
        """The stored annotation with id ``annotation_id``, or (one query fewer for a writer that
        knows only its key) with idempotency key ``key``."""
        row = conn.execute(_annotation_select(by_key=key is not None),
                           {"value": annotation_id if key is None else key}).one()
        s = self._stream_by_id(conn, row.stream_id)
        flags = row.flags if isinstance(row.flags, list) or row.flags is None else json.loads(row.flags)
        return Annotation(id=row.id, stream=s.name, task_id=row.task_id, item_id=row.external_id,
                          annotator=row.annotator, label=row.label, rationale=row.rationale, evidence=row.evidence,
                          seconds=row.seconds, flags=tuple(flags or ()), suggestion=row.suggestion,
                          suggestion_confidence=row.suggestion_confidence, guideline_version=row.gv,
                          source=row.source, created_at=row.created_at, idempotency_key=row.idempotency_key)


@functools.cache
def _annotator_select(lock: bool) -> sa.Select:
    # The statements below run on every task API request: built once, with bound values.
    query = sa.select(S.annotators).where(S.annotators.c.name == sa.bindparam("name"))
    return query.with_for_update() if lock else query


@functools.cache
def _annotator_streams_select() -> sa.Select:
    sa_ = S.stream_annotators
    return sa.select(sa_.c.stream_id).where(sa_.c.annotator_id == sa.bindparam("annotator_id"))


@functools.cache
def _annotation_select(*, by_key: bool) -> sa.Select:
    a, i, p, g = S.annotations, S.items, S.annotators, S.guideline_versions
    where = a.c.idempotency_key == sa.bindparam("value") if by_key else a.c.id == sa.bindparam("value")
    return (sa.select(a, i.c.external_id, p.c.name.label("annotator"), g.c.version.label("gv"))
            .join(i, i.c.id == a.c.item_id).join(p, p.c.id == a.c.annotator_id)
            .outerjoin(g, g.c.id == a.c.guideline_version_id).where(where))


@functools.cache
def _task_item_select() -> sa.Select:
    # Built once with a bound task id: building it cost more CPU than running it, twice a cycle.
    t, i = S.tasks, S.items
    return LabelStore._tasks_select(sa.select().where(t.c.id == sa.bindparam("task_id"))).add_columns(
        t.c.stream_id, t.c.item_id.label("item_pk"), t.c.guideline_version_id, i.c.payload, i.c.payload_ref)


def _task_of(row) -> Task:
    """A :class:`Task` from a row of ``LabelStore._tasks_select``."""

    def stamp(value: Any) -> Any:  # as a frame's cell: a pandas Timestamp
        return None if value is None else pd.Timestamp(value)

    return Task(id=int(row.task_id), stream=row.stream, item_id=row[2], tier=int(row.tier),
                annotator=row[4], guideline_version=None if row[5] is None else int(row[5]),
                status=TaskStatus(row.status), created_at=stamp(row.created_at), due_at=stamp(row.due_at),
                idempotency_key=row.idempotency_key, kind=row.kind, blind=bool(row.blind),
                round=None if row.round is None else int(row.round), assigned_at=stamp(row.assigned_at),
                completed_at=stamp(row.completed_at), escalated_at=stamp(row.escalated_at))


def _item_ids_of(conn: Connection, s: Stream, values: pd.Series) -> np.ndarray:
    return _annotations._item_ids(conn, s, pd.Series(values).reset_index(drop=True))


def _texts(frame: pd.DataFrame, column: str, *, max_chars: int | None = None) -> list[str | None]:
    """An optional text column as a list (None where absent or missing), checked as text."""
    if column not in frame:
        return [None] * len(frame)
    checked = check_text_column(frame[column], column, max_chars=max_chars, empty=True)
    return checked.where(checked.notna(), None).tolist()


def _storable_id(text: str) -> bool:
    try:
        check_text(text, ITEM, max_chars=S.MAX_NAME_CHARS)  # what external_ids checks, one id at a time
    except SchemaError:
        return False
    return True


def _guideline_text(text: Any) -> str:
    check_text(text, "text")
    if not text.strip():
        raise fail("text", "non-empty guideline text", _describe(text))
    return text


def _task_status(value: Any) -> TaskStatus:
    try:
        return TaskStatus(value)
    except ValueError:
        raise fail(STATUS, f"one of {[t.value for t in TaskStatus]}", _describe(value)) from None


def _task_kind(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "label"
    if not isinstance(value, str) or value not in S.TASK_KINDS:
        raise fail(KIND, f"one of {list(S.TASK_KINDS)}", _describe(value))
    return value


def _task_blind(value: Any, kind: str) -> bool:
    # Double-blind and audit answers must be independent of the model and of each other.
    if value is None or (isinstance(value, float) and value != value):
        return kind in _tasks.BLIND_KINDS  # an adjudicator, too, decides without the others' answers
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


def _json_or_none(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value



def _not_found(name: str, expected: str, got: str) -> NotFoundError:
    """:func:`fail`'s message, as a NotFoundError (still a SchemaError): the HTTP edge says 404."""
    return NotFoundError(str(fail(name, expected, got)))


def _email(value: Any) -> str | None:
    if value is None:
        return None
    check_text(value, "email", max_chars=S.MAX_EMAIL_CHARS)  # NUL, lone surrogates, length
    if not isinstance(value, str) or "@" not in value.strip("@") or len(value) > S.MAX_EMAIL_CHARS or \
            any(c.isspace() for c in value):
        raise fail("email", f"an email address of at most {S.MAX_EMAIL_CHARS} characters", _describe(value))
    return value.lower()


def _check_email_free(conn: Connection, email: str | None, name: str) -> None:
    if email is None:
        return
    holder = conn.execute(sa.select(S.annotators.c.name).where(S.annotators.c.email == email)).scalar()
    if holder is not None and holder != name:
        raise ConflictError(f"The 'email' {email!r} already belongs to annotator {holder!r}.")
