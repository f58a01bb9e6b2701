"""Alembic environment for labelloop's store, driven from :func:`loop.store.upgrade`.

No alembic.ini: :mod:`loop.store.migrate` builds the config and passes an open connection
inside a transaction it owns (``config.attributes["connection"]``), so every revision of one
upgrade commits or rolls back together.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=None,
    transactional_ddl=True,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
