"""Cost tracking: an hourly rate per annotator, and an index for time-window reads of
annotations (metrics over a period, exports since a date).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing annotators get rate 0 (cost unknown) rather than a guessed figure.
    # A plain ADD COLUMN (no table rebuild on SQLite, so rows that reference annotators stay put).
    op.add_column("annotators", sa.Column("hourly_rate", sa.Float, nullable=False, server_default=sa.text("0")))
    op.create_index("ix_annotations_stream_created", "annotations", ["stream_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_annotations_stream_created", table_name="annotations")
    with op.batch_alter_table("annotators") as batch:
        batch.drop_column("hourly_rate")
