"""Schema migrations: :func:`upgrade` brings a database to the newest revision (the
``labelloop db upgrade`` command and :class:`~loop.store.LabelStore` on first use call it),
:func:`current_revision` says where a database stands.

The alembic scripts ship inside the package (``loop/store/migrations``); no alembic.ini is
needed. An upgrade runs in one transaction under a lock (``BEGIN IMMEDIATE`` on SQLite, an
advisory lock per schema on PostgreSQL), so processes that open a new database at the same
time migrate it once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Connection, Engine

from ..exceptions import StoreError
from ._engine import make_engine, write_transaction

__all__ = ["HEAD", "current_revision", "head_revision", "upgrade"]

MIGRATIONS: Final = Path(__file__).resolve().parent / "migrations"
HEAD: Final = "head"


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision the package ships, e.g. ``'0004'``."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _connect(engine: Engine) -> Connection:
    """A connection; the first one a store makes says where it looked when it fails."""
    try:
        return engine.connect()
    except sa.exc.OperationalError as exc:
        where = engine.url.render_as_string(hide_password=True)
        raise StoreError(f"Cannot connect to the label store at {where}: {exc.orig or exc}".strip()) from exc


def current_revision(url: str | URL | Engine) -> str | None:
    """The revision a database is at, or ``None`` for an empty database.

    Examples
    --------
    >>> current_revision("sqlite://") is None
    True
    """
    engine = url if isinstance(url, Engine) else make_engine(url)
    try:
        with _connect(engine) as conn:
            return _current(conn)
    finally:
        if engine is not url:
            engine.dispose()


def upgrade(url: str | URL | Engine, revision: str = HEAD) -> str:
    """Migrate the database at ``url`` to ``revision`` (default: the newest) and return the
    revision it is at afterwards. Every row is kept; an up-to-date database is left alone.

    Parameters
    ----------
    url : str, URL or Engine
        ``sqlite:///path`` or ``postgresql://user@host:port/db`` (see
        :func:`~loop.store.normalize_url`).
    revision : str, default "head"
        Target revision id (``"0001"``, ``"0004"``) or ``"head"``.

    Examples
    --------
    >>> upgrade("sqlite://")
    '0004'
    """
    engine = url if isinstance(url, Engine) else make_engine(url)
    try:
        _connect(engine).close()  # an unreachable store: one line naming it, not a driver traceback
        with write_transaction(engine) as conn:
            if conn.dialect.name == "postgresql":
                # Keyed by schema, so tests in their own schemas do not wait for each other.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(current_schema()))"))
            try:
                command.upgrade(_config(conn), revision)
            except Exception as exc:  # alembic raises CommandError, driver errors, ...
                raise StoreError(f"Migrating the store to revision {revision!r} failed: {exc}") from exc
            return _current(conn)
    finally:
        if engine is not url:
            engine.dispose()
