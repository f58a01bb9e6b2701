"""Annotation teams: people work in the loop through the task API and Label Studio.

- ``annotators.email``: how a Label Studio user is matched to an annotator.
- ``tokens``: bearer tokens, stored only as their SHA-256 hash, with a role.
- ``tasks``: what kind of task it is (``label``, ``expert``, ``double_blind``, ``audit``,
  ``adjudication``), whether it is blind (no suggestion, no other answer shown), its round, and
  when it was assigned, completed and escalated past its SLA.
- ``annotations``: the annotator's flags (``model_wrong``, ``guideline_unclear``) and where
  the answer came from (``api``, ``label_studio``, ``import``...).
- ``disputes``: an annotator disputes a resolved label or a suggestion; the item goes to
  adjudication, and a dispute past its SLA escalates to the stream owner.
- ``external_tasks``: a labelloop task pushed to another tool (a Label Studio task), so that it
  is pushed once and closed when answered.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Frozen copies of the types at this revision: a migration never imports the live schema.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Plain ADD COLUMNs (no table rebuild on SQLite: rows that reference these tables stay put,
    # and the append-only triggers on annotations are untouched).
    op.add_column("annotators", sa.Column("email", sa.String(320)))
    op.create_index("uq_annotators_email", "annotators", ["email"], unique=True)

    op.add_column("tasks", sa.Column("kind", sa.String(20), nullable=False, server_default="label"))
    op.add_column("tasks", sa.Column("blind", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("tasks", sa.Column("round", sa.Integer))
    op.add_column("tasks", sa.Column("assigned_at", Stamp))
    op.add_column("tasks", sa.Column("completed_at", Stamp))
    op.add_column("tasks", sa.Column("escalated_at", Stamp))
    op.create_index("ix_tasks_stream_status_tier", "tasks", ["stream_id", "status", "tier"])
    op.create_index("ix_tasks_annotator_status", "tasks", ["annotator_id", "status"])

    op.add_column("annotations", sa.Column("flags", Json))
    op.add_column("annotations", sa.Column("source", sa.String(50)))
    op.create_index("ix_annotations_task", "annotations", ["task_id"])

    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("annotator_id", sa.Integer, sa.ForeignKey("annotators.id")),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("expires_at", Stamp),
        sa.Column("revoked_at", Stamp),
        sa.CheckConstraint("role IN ('admin', 'annotator', 'client')", name="ck_tokens_role"),
    )

    op.create_table(
        "disputes",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("stream_id", sa.Integer, sa.ForeignKey("streams.id"), nullable=False),
        sa.Column("item_id", sa.BigInteger, sa.ForeignKey("items.id"), nullable=False),
        sa.Column("annotator_id", sa.Integer, sa.ForeignKey("annotators.id")),
        sa.Column("task_id", sa.BigInteger, sa.ForeignKey("tasks.id")),
        sa.Column("target", sa.String(20), nullable=False),
        sa.Column("label", sa.Integer),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("adjudication_task_id", sa.BigInteger, sa.ForeignKey("tasks.id")),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("due_at", Stamp),
        sa.Column("escalated_at", Stamp),
        sa.Column("closed_at", Stamp),
        sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
        sa.CheckConstraint("target IN ('resolution', 'suggestion')", name="ck_disputes_target"),
        sa.CheckConstraint("status IN ('open', 'resolved', 'rejected')", name="ck_disputes_status"),
        sa.Index("ix_disputes_stream_status", "stream_id", "status"),
    )

    op.create_table(
        "external_tasks",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("system", sa.String(50), nullable=False),
        sa.Column("project", sa.String(200), nullable=False),
        sa.Column("external_id", sa.String(200), nullable=False),
        sa.Column("task_id", sa.BigInteger, sa.ForeignKey("tasks.id"), nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("closed_at", Stamp),
        sa.UniqueConstraint("system", "project", "external_id", name="uq_external_tasks_external"),
        sa.UniqueConstraint("system", "project", "task_id", name="uq_external_tasks_task"),
    )


def downgrade() -> None:
    op.drop_table("external_tasks")
    op.drop_table("disputes")
    op.drop_table("tokens")
    op.drop_index("ix_annotations_task", table_name="annotations")
    op.drop_index("ix_tasks_annotator_status", table_name="tasks")
    op.drop_index("ix_tasks_stream_status_tier", table_name="tasks")
    op.drop_index("uq_annotators_email", table_name="annotators")
    # Dropping columns rebuilds the table on SQLite; annotations' append-only triggers refuse
    # nothing here (a rebuild is a CREATE, INSERT ... SELECT, DROP of the old table).
    with op.batch_alter_table("annotations") as batch:
        batch.drop_column("source")
        batch.drop_column("flags")
    with op.batch_alter_table("tasks") as batch:
        for column in ("escalated_at", "completed_at", "assigned_at", "round", "blind", "kind"):
            batch.drop_column(column)
    with op.batch_alter_table("annotators") as batch:
        batch.drop_column("email")
