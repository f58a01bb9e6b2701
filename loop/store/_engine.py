"""Engines for the two supported databases: URL forms, connection settings, write transactions.

SQLite runs in WAL mode with foreign keys on and a busy timeout; a write transaction starts
with ``BEGIN IMMEDIATE`` so two writers queue on the lock instead of failing when one of them
upgrades a read lock. PostgreSQL goes through the psycopg 3 driver.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import StaticPool

from .._validation import fail
from ..exceptions import SchemaError

__all__ = ["DEFAULT_URL", "URL_ENV_VAR", "default_url", "make_engine", "normalize_url", "write_transaction"]

URL_ENV_VAR: Final = "LABELLOOP_STORE_URL"
DEFAULT_URL: Final = "sqlite:///labelloop.db"
SQLITE_BUSY_TIMEOUT_MS: Final = 60_000
# Negative: KiB. The default 2 MiB makes index upkeep read pages back once a stream grows.
SQLITE_CACHE_KIB: Final = -32_768
# Execution option that makes the next transaction on a SQLite connection BEGIN IMMEDIATE.
_IMMEDIATE: Final = "labelloop_immediate"


def default_url() -> str:
    """The store URL from ``$LABELLOOP_STORE_URL``, else ``sqlite:///labelloop.db``."""
    return os.environ.get(URL_ENV_VAR) or DEFAULT_URL


def normalize_url(url: str | URL) -> URL:
    """Parse a store URL and pick the driver labelloop ships with.

    ``postgresql://`` and ``postgres://`` become ``postgresql+psycopg://`` (psycopg 3);
    ``sqlite:///path`` and ``sqlite://`` (in memory) stay as they are.

    Examples
    --------
    >>> normalize_url("postgresql://postgres@127.0.0.1/test").drivername
    'postgresql+psycopg'
    """
    if isinstance(url, str) and url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, TypeError, ValueError):
        raise fail("url", "a database URL such as 'sqlite:///labelloop.db' or "
                   "'postgresql://user@host:5432/db'", repr(url)) from None
    backend, _, driver = parsed.drivername.partition("+")
    # The bulk paths use the drivers' own APIs (psycopg 3's COPY, sqlite3's executemany).
    if backend == "postgresql" and driver in ("", "psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return parsed
    raise fail("url", "a 'sqlite:///path' or 'postgresql://...' URL (drivers: sqlite3, psycopg 3)",
               repr(parsed.render_as_string(hide_password=True)))


def make_engine(url: str | URL) -> Engine:
    """Create an engine with labelloop's connection settings for ``url``."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    return sa.create_engine(parsed, pool_pre_ping=True)


def _sqlite_engine(url: URL) -> Engine:
    in_memory = url.database in (None, "", ":memory:")
    kwargs: dict = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}}
    if in_memory:
        # One shared connection, or every connection would see its own empty database.
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    engine = sa.create_engine(url, **kwargs)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Let SQLAlchemy's begin event emit BEGIN itself (the driver's implicit BEGIN is
        # deferred and cannot be made IMMEDIATE).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA cache_size={SQLITE_CACHE_KIB}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection inside one write transaction: committed on exit, rolled back on error.

    On SQLite the transaction takes the write lock at once (``BEGIN IMMEDIATE``). Writers check
    every value before writing; a value the database still refuses (a gap in those checks)
    comes out as a SchemaError without the SQL, and nothing is stored.
    """
    # The bulk writers use the driver's cursor, whose errors SQLAlchemy does not wrap.
    driver_errors = tuple(e for e in (getattr(engine.dialect.loaded_dbapi, "DataError", None),) if e is not None)
    with engine.connect() as conn:
        conn.execution_options(**{_IMMEDIATE: True})
        try:
            with conn.begin():
                yield conn
        except (sa.exc.DataError, *driver_errors) as exc:
            raise SchemaError(f"The label store cannot hold a value of this call ({_data_error(exc)}); nothing was "
                              "stored.") from None


def _data_error(exc: Exception) -> str:
    """The database's one-line reason for a data error, without the statement or parameters."""
    orig = getattr(exc, "orig", exc)
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    return primary or type(orig).__name__
