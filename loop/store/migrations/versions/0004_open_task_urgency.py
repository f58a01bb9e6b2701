"""Open tasks in urgency order: a partial index on (stream_id, due_at, created_at, id) of the
open tasks, so that handing out the next task reads the most urgent candidates off the index
and stops, instead of sorting every open task of the stream (:func:`loop.store._tasks.candidates`).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

OPEN = sa.text("status = 'open'")


def upgrade() -> None:
    op.create_index("ix_tasks_open_urgency", "tasks", ["stream_id", "due_at", "created_at", "id"],
                    postgresql_where=OPEN, sqlite_where=OPEN)


def downgrade() -> None:
    op.drop_index("ix_tasks_open_urgency", table_name="tasks")
