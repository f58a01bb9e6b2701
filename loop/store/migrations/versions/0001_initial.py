"""Initial schema: streams, annotators, guidelines, items, models, predictions, tasks,
annotations, resolutions and the append-only event log.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the types at this revision: a migration never imports the live schema.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Stamp = sa.DateTime(timezone=True)
APPEND_ONLY = ("events", "annotations", "resolutions")


def upgrade() -> None:
    op.create_table(
        "streams",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("owner", sa.String(200)),
        sa.Column("escalation_contact", sa.String(200)),
        sa.Column("classes", Json, nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
    )
    op.create_table(
        "annotators",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("tier", sa.Integer, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
    )
    op.create_table(
        "stream_annotators",
        sa.Column("stream_id", sa.Integer, sa.ForeignKey("streams.id"), primary_key=True),
        sa.Column("annotator_id", sa.Integer, sa.ForeignKey("annotators.id"), primary_key=True),
    )
    op.create_table(
        "guideline_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("stream_id", sa.Integer, sa.ForeignKey("streams.id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("examples", Json),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("guideline_versions.id")),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("published_at", Stamp),
        sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
        sa.UniqueConstraint("stream_id", "version", name="uq_guideline_versions_stream_version"),
    )
    op.create_table(
        "items",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("stream_id", sa.Integer, sa.ForeignKey("streams.id"), nullable=False),
        sa.Column("external_id", sa.String(200), nullable=False),
        sa.Column("payload", Json),
        sa.Column("payload_ref", sa.Text),
        sa.Column("source", sa.String(200)),
        sa.Column("created_at", Stamp, nullable=False),
        sa.UniqueConstraint("stream_id", "external_id", name="uq_items_stream_external_id"),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("uri", sa.Text),
        sa.Column("created_at", Stamp, nullable=False),
    )
    op.create_table(
        "predictions",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("item_id", sa.BigInteger, sa.ForeignKey("items.id"), nullable=False),
        sa.Column("model_version_id", sa.Integer, sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("probs", Json, nullable=False),
        sa.Column("signals", Json),
        sa.Column("route", sa.String(50)),
        sa.Column("reason", sa.Text),
        sa.Column("created_at", Stamp, nullable=False),
        sa.UniqueConstraint("item_id", "model_version_id", name="uq_predictions_item_model"),
    )
    op.create_table(
        "tasks",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("stream_id", sa.Integer, sa.ForeignKey("streams.id"), nullable=False),
        sa.Column("item_id", sa.BigInteger, sa.ForeignKey("items.id"), nullable=False),
        sa.Column("tier", sa.Integer, nullable=False),
        sa.Column("annotator_id", sa.Integer, sa.ForeignKey("annotators.id")),
        sa.Column("guideline_version_id", sa.Integer, sa.ForeignKey("guideline_versions.id")),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("due_at", Stamp),
        sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
        sa.CheckConstraint("status IN ('open', 'assigned', 'done', 'cancelled')", name="ck_tasks_status"),
    )
    op.create_table(
        "annotations",
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
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
        sa.Column("content_hash", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_annotations_stream_item", "annotations", ["stream_id", "item_id"])
    op.create_table(
        "resolutions",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("stream_id", sa.Integer, sa.ForeignKey("streams.id"), nullable=False),
        sa.Column("item_id", sa.BigInteger, sa.ForeignKey("items.id"), nullable=False),
        sa.Column("label", sa.Integer, nullable=False),
        sa.Column("method", sa.String(20), nullable=False),
        sa.Column("confidence", sa.Float),
        sa.Column("resolved_at", Stamp, nullable=False),
        sa.Column("supersedes_id", sa.BigInteger, sa.ForeignKey("resolutions.id"), unique=True),
        sa.Column("actor", sa.String(200)),
        sa.Column("reason", sa.Text),
        sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
        sa.Column("content_hash", sa.BigInteger, nullable=False),
        sa.CheckConstraint("method IN ('auto', 'consensus', 'adjudicated', 'expert')", name="ck_resolutions_method"),
    )
    op.create_index("ix_resolutions_stream_item", "resolutions", ["stream_id", "item_id"])
    op.create_index("uq_resolutions_first_per_item", "resolutions", ["item_id"], unique=True,
                    sqlite_where=sa.text("supersedes_id IS NULL"),
                    postgresql_where=sa.text("supersedes_id IS NULL"))
    op.create_table(
        "events",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("at", Stamp, nullable=False),
        sa.Column("actor", sa.String(200)),
        sa.Column("action", sa.String(50), nullable=False),
        sa.Column("entity", sa.String(50), nullable=False),
        sa.Column("entity_id", sa.BigInteger),
        sa.Column("stream_id", sa.Integer),
        sa.Column("item_id", sa.BigInteger),
        sa.Column("before", Json),
        sa.Column("after", Json),
        sa.Column("reason", sa.Text),
    )
    op.create_index("ix_events_item", "events", ["item_id"])
    _create_guards()


def downgrade() -> None:
    _drop_guards()
    for table in ("events", "resolutions", "annotations", "tasks", "predictions", "model_versions",
                  "items", "guideline_versions", "stream_annotators", "annotators", "streams"):
        op.drop_table(table)


def _create_guards() -> None:
    """Triggers that refuse to change history: no UPDATE or DELETE on the append-only tables,
    none on a published guideline version."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("""
            CREATE FUNCTION labelloop_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'labelloop: % is append-only; % refused', TG_TABLE_NAME, TG_OP
                    USING ERRCODE = 'integrity_constraint_violation';
            END $$""")
        op.execute("""
            CREATE FUNCTION labelloop_refuse_published_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF OLD.published_at IS NOT NULL THEN
                    RAISE EXCEPTION 'labelloop: guideline version % is published and immutable; % refused',
                        OLD.id, TG_OP USING ERRCODE = 'integrity_constraint_violation';
                END IF;
                IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
                RETURN NEW;
            END $$""")
        for table in APPEND_ONLY:
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       "FOR EACH ROW EXECUTE FUNCTION labelloop_refuse_change()")
            op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                       "FOR EACH STATEMENT EXECUTE FUNCTION labelloop_refuse_change()")
        op.execute("CREATE TRIGGER guideline_versions_published BEFORE UPDATE OR DELETE ON guideline_versions "
                   "FOR EACH ROW EXECUTE FUNCTION labelloop_refuse_published_change()")
        return
    for table in APPEND_ONLY:
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} BEGIN "
                       f"SELECT RAISE(ABORT, 'labelloop: {table} is append-only; {verb} refused'); END")
    for verb in ("UPDATE", "DELETE"):
        op.execute(f"CREATE TRIGGER guideline_versions_published_no_{verb.lower()} BEFORE {verb} "
                   "ON guideline_versions WHEN OLD.published_at IS NOT NULL BEGIN "
                   f"SELECT RAISE(ABORT, 'labelloop: a published guideline version is immutable; "
                   f"{verb} refused'); END")


def _drop_guards() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in APPEND_ONLY:
            op.execute(f"DROP TRIGGER {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER {table}_no_truncate ON {table}")
        op.execute("DROP TRIGGER guideline_versions_published ON guideline_versions")
        op.execute("DROP FUNCTION labelloop_refuse_change()")
        op.execute("DROP FUNCTION labelloop_refuse_published_change()")
        return
    for table in APPEND_ONLY:
        for verb in ("update", "delete"):
            op.execute(f"DROP TRIGGER {table}_no_{verb}")
    for verb in ("update", "delete"):
        op.execute(f"DROP TRIGGER guideline_versions_published_no_{verb}")
