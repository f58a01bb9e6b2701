"""The tables at the newest schema revision (SQLAlchemy Core).

The migration scripts in ``migrations/versions`` create these tables; a test checks that a
database migrated to head matches this metadata.

Labels are stored as integer class codes: a work stream holds its ordered class names, and
code ``c`` means ``classes[c]``. Frames carry codes (what the core library computes on);
imports and exports to tools that show names (Label Studio) translate at the edge.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

__all__ = ["MAX_NAME_CHARS", "MAX_RATIONALE_CHARS", "metadata"]

MAX_RATIONALE_CHARS: Final = 10_000
MAX_NAME_CHARS: Final = 200
MAX_KEY_CHARS: Final = 200
RESOLUTION_METHODS: Final = ("auto", "consensus", "adjudicated", "expert")
TASK_STATUSES: Final = ("open", "assigned", "done", "cancelled")
TASK_KINDS: Final = ("label", "expert", "double_blind", "audit", "adjudication")
TOKEN_ROLES: Final = ("admin", "annotator", "client")
DISPUTE_TARGETS: Final = ("resolution", "suggestion")
DISPUTE_STATUSES: Final = ("open", "resolved", "rejected")
MAX_EMAIL_CHARS: Final = 320

# Autoincrementing 64-bit keys (SQLite only autoincrements an INTEGER PRIMARY KEY).
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


class UTCDateTime(sa.TypeDecorator):
    """A timestamp stored in UTC and read back timezone-aware (SQLite keeps no offset)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


metadata = sa.MetaData()

streams = sa.Table(
    "streams", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(MAX_NAME_CHARS), nullable=False, unique=True),
    sa.Column("owner", sa.String(MAX_NAME_CHARS)),
    sa.Column("escalation_contact", sa.String(MAX_NAME_CHARS)),
    sa.Column("classes", Json, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

annotators = sa.Table(
    "annotators", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(MAX_NAME_CHARS), nullable=False, unique=True),
    sa.Column("tier", sa.Integer, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # Revision 0002.
    sa.Column("hourly_rate", sa.Float, nullable=False, server_default=sa.text("0")),
    # Revision 0003: how a Label Studio user is matched to an annotator.
    sa.Column("email", sa.String(MAX_EMAIL_CHARS)),
    sa.Index("uq_annotators_email", "email", unique=True),
)

stream_annotators = sa.Table(
    "stream_annotators", metadata,
    sa.Column("stream_id", sa.Integer, sa.ForeignKey("streams.id"), primary_key=True),
    sa.Column("annotator_id", sa.Integer, sa.ForeignKey("annotators.id"), primary_key=True),
)

guideline_versions = sa.Table(
    "guideline_versions", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("stream_id", sa.Integer, sa.ForeignKey("streams.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("examples", Json),
    sa.Column("parent_id", sa.Integer, sa.ForeignKey("guideline_versions.id")),
    sa.Column("author", sa.String(MAX_NAME_CHARS), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("published_at", UTCDateTime),
    sa.Column("idempotency_key", sa.String(MAX_KEY_CHARS), nullable=False, unique=True),
    sa.UniqueConstraint("stream_id", "version", name="uq_guideline_versions_stream_version"),
)

items = sa.Table(
    "items", metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("stream_id", sa.Integer, sa.ForeignKey("streams.id"), nullable=False),
    sa.Column("external_id", sa.String(MAX_NAME_CHARS), nullable=False),
    sa.Column("payload", Json),
    sa.Column("payload_ref", sa.Text),
    sa.Column("source", sa.String(MAX_NAME_CHARS)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("stream_id", "external_id", name="uq_items_stream_external_id"),
)

model_versions = sa.Table(
    "model_versions", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(MAX_NAME_CHARS), nullable=False, unique=True),
    sa.Column("uri", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

predictions = sa.Table(
    "predictions", metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("item_id", sa.BigInteger, sa.ForeignKey("items.id"), nullable=False),
    sa.Column("model_version_id", sa.Integer, sa.ForeignKey("model_versions.id"), nullable=False),
    sa.Column("probs", Json, nullable=False),
    sa.Column("signals", Json),
    sa.Column("route", sa.String(50)),
    sa.Column("reason", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # One prediction per item and model version: the natural idempotency key.
    sa.UniqueConstraint("item_id", "model_version_id", name="uq_predictions_item_model"),
)

tasks = sa.Table(
    "tasks", metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("stream_id", sa.Integer, sa.ForeignKey("streams.id"), nullable=False),
    sa.Column("item_id", sa.BigInteger, sa.ForeignKey("items.id"), nullable=False),
    sa.Column("tier", sa.Integer, nullable=False),
    sa.Column("annotator_id", sa.Integer, sa.ForeignKey("annotators.id")),
    sa.Column("guideline_version_id", sa.Integer, sa.ForeignKey("guideline_versions.id")),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("due_at", UTCDateTime),
    sa.Column("idempotency_key", sa.String(MAX_KEY_CHARS), nullable=False, unique=True),
    sa.CheckConstraint("status IN ('open', 'assigned', 'done', 'cancelled')", name="ck_tasks_status"),
    # Revision 0003: what the task is (TASK_KINDS), whether it is blind (no suggestion and no
    # other answer shown), the program round that made it, and its timeline.
    sa.Column("kind", sa.String(20), nullable=False, server_default="label"),
    sa.Column("blind", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("round", sa.Integer),
    sa.Column("assigned_at", UTCDateTime),
    sa.Column("completed_at", UTCDateTime),
    sa.Column("escalated_at", UTCDateTime),
    sa.Index("ix_tasks_stream_status_tier", "stream_id", "status", "tier"),
    sa.Index("ix_tasks_annotator_status", "annotator_id", "status"),
    # Revision 0004: the open tasks in urgency order (due first, NULLs last, then oldest).
    sa.Index("ix_tasks_open_urgency", "stream_id", "due_at", "created_at", "id",
             postgresql_where=sa.text("status = 'open'"), sqlite_where=sa.text("status = 'open'")),
)

annotations = sa.Table(
    "annotations", metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("stream_id", sa.Integer, sa.ForeignKey("streams.id"), nullable=False),
    sa.Column("task_id", sa.BigInteger, sa.ForeignKey("tasks.id")),
    sa.Column("item_id", sa.BigInteger, sa.ForeignKey("items.id"), nullable=False),
    sa.Column("annotator_id", sa.Integer, sa.ForeignKey("annotators.id"), nullable=False),
    sa.Column("label", sa.Integer, nullable=False),
    sa.Column("rationale", sa.Text),
    sa.Column("evidence", Json),
    sa.Column("seconds", sa.Float),
    sa.Column("suggestion", sa.Integer),
    sa.Column("suggestion_confidence", sa.Float),
    sa.Column("guideline_version_id", sa.Integer, sa.ForeignKey("guideline_versions.id")),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("idempotency_key", sa.String(MAX_KEY_CHARS), nullable=False, unique=True),
    # Hash of the content, so a retry under the same key can be told from a reuse of the key.
    sa.Column("content_hash", sa.BigInteger, nullable=False),
    sa.Index("ix_annotations_stream_item", "stream_id", "item_id"),
    # Revision 0003: the annotator's flags (model_wrong, guideline_unclear) and where the
    # answer came from (api, label_studio, import...).
    sa.Column("flags", Json),
    sa.Column("source", sa.String(50)),
    sa.Index("ix_annotations_task", "task_id"),
)

resolutions = sa.Table(
    "resolutions", metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("stream_id", sa.Integer, sa.ForeignKey("streams.id"), nullable=False),
    sa.Column("item_id", sa.BigInteger, sa.ForeignKey("items.id"), nullable=False),
    sa.Column("label", sa.Integer, nullable=False),
    sa.Column("method", sa.String(20), nullable=False),
    sa.Column("confidence", sa.Float),
    sa.Column("resolved_at", UTCDateTime, nullable=False),
    # Unique: a resolution is superseded at most once, so of two racing corrections one fails.
    sa.Column("supersedes_id", sa.BigInteger, sa.ForeignKey("resolutions.id"), unique=True),
    sa.Column("actor", sa.String(MAX_NAME_CHARS)),
    sa.Column("reason", sa.Text),
    sa.Column("idempotency_key", sa.String(MAX_KEY_CHARS), nullable=False, unique=True),
    sa.Column("content_hash", sa.BigInteger, nullable=False),
    sa.CheckConstraint("method IN ('auto', 'consensus', 'adjudicated', 'expert')", name="ck_resolutions_method"),
    sa.Index("ix_resolutions_stream_item", "stream_id", "item_id"),
    # At most one first resolution per item; later ones must name what they supersede.
    sa.Index("uq_resolutions_first_per_item", "item_id", unique=True,
             sqlite_where=sa.text("supersedes_id IS NULL"), postgresql_where=sa.text("supersedes_id IS NULL")),
)

events = sa.Table(
    "events", metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(MAX_NAME_CHARS)),
    sa.Column("action", sa.String(50), nullable=False),
    sa.Column("entity", sa.String(50), nullable=False),
    sa.Column("entity_id", sa.BigInteger),
    sa.Column("stream_id", sa.Integer),
    sa.Column("item_id", sa.BigInteger),
    sa.Column("before", Json),
    sa.Column("after", Json),
    sa.Column("reason", sa.Text),
    sa.Index("ix_events_item", "item_id"),
)

# Revision 0002.
sa.Index("ix_annotations_stream_created", annotations.c.stream_id, annotations.c.created_at)


# Revision 0003.
tokens = sa.Table(
    "tokens", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    # SHA-256 of the token: a token is 32 random bytes, so a fast hash is enough (nothing to
    # brute-force), and the plain token is shown once, when issued, and never stored.
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),  # to tell tokens apart in listings
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("name", sa.String(MAX_NAME_CHARS), nullable=False),
    sa.Column("annotator_id", sa.Integer, sa.ForeignKey("annotators.id")),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime),
    sa.Column("revoked_at", UTCDateTime),
    sa.CheckConstraint("role IN ('admin', 'annotator', 'client')", name="ck_tokens_role"),
)

disputes = sa.Table(
    "disputes", metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("stream_id", sa.Integer, sa.ForeignKey("streams.id"), nullable=False),
    sa.Column("item_id", sa.BigInteger, sa.ForeignKey("items.id"), nullable=False),
    sa.Column("annotator_id", sa.Integer, sa.ForeignKey("annotators.id")),
    sa.Column("task_id", sa.BigInteger, sa.ForeignKey("tasks.id")),
    sa.Column("target", sa.String(20), nullable=False),  # DISPUTE_TARGETS
    sa.Column("label", sa.Integer),  # the class the disputer proposes, if any
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # DISPUTE_STATUSES
    sa.Column("adjudication_task_id", sa.BigInteger, sa.ForeignKey("tasks.id")),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("due_at", UTCDateTime),
    sa.Column("escalated_at", UTCDateTime),
    sa.Column("closed_at", UTCDateTime),
    sa.Column("idempotency_key", sa.String(MAX_KEY_CHARS), nullable=False, unique=True),
    sa.CheckConstraint("target IN ('resolution', 'suggestion')", name="ck_disputes_target"),
    sa.CheckConstraint("status IN ('open', 'resolved', 'rejected')", name="ck_disputes_status"),
    sa.Index("ix_disputes_stream_status", "stream_id", "status"),
)

external_tasks = sa.Table(
    "external_tasks", metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("system", sa.String(50), nullable=False),  # "label_studio"
    sa.Column("project", sa.String(MAX_NAME_CHARS), nullable=False),
    sa.Column("external_id", sa.String(MAX_NAME_CHARS), nullable=False),
    sa.Column("task_id", sa.BigInteger, sa.ForeignKey("tasks.id"), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("closed_at", UTCDateTime),
    sa.UniqueConstraint("system", "project", "external_id", name="uq_external_tasks_external"),
    sa.UniqueConstraint("system", "project", "task_id", name="uq_external_tasks_task"),
)
