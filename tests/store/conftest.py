"""Store fixtures: every store test runs on SQLite and on PostgreSQL.

PostgreSQL is the server at 127.0.0.1:5432 (database ``test``, trust auth; override with
``LABELLOOP_TEST_PG_URL``). Each test gets its own schema, dropped afterwards, so runs never
collide. Without a reachable server the PostgreSQL cases skip, except in CI (``CI=true``),
where they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from loop.store import LabelStore

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_URLS = ([os.environ["LABELLOOP_TEST_PG_URL"]] if os.environ.get("LABELLOOP_TEST_PG_URL") else
           ["postgresql://postgres@127.0.0.1:5432/test", "postgresql://root@127.0.0.1:5432/test"])
CLASSES = ("neg", "neu", "pos")
STREAM = "sentiment"


def schema_options(schema: str) -> str:
    """The URL query that puts a test's connections in its own schema.

    Commits there do not wait for the WAL flush (``synchronous_commit=off``, for these sessions
    only): a test reads back the same rows, only a crash of the server itself could lose the last
    ones, and a commit takes about half the time (BENCHMARKS.md, "Test suite time").
    """
    return f"options=-csearch_path%3D{schema}%20-csynchronous_commit%3Doff"


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture(scope="session")
def pg_server() -> tuple[str | None, str]:
    """The first reachable PostgreSQL URL (or None) and, when none is, why."""
    errors = []
    for url in PG_URLS:
        try:
            with psycopg.connect(_dsn(url), connect_timeout=3):
                return url, ""
        except psycopg.Error as exc:
            errors.append(f"{url}: {str(exc).strip().splitlines()[0]}")
    return None, "; ".join(errors)


def _require_pg(server: tuple[str | None, str]) -> str:
    url, why = server
    if url is None:
        reason = f"PostgreSQL is unreachable ({why})"
        if IN_CI:
            pytest.fail(reason + "; CI=true, so the PostgreSQL cases must run")
        pytest.skip(reason)
    return url


@pytest.fixture
def pg_url(pg_server: tuple[str | None, str]) -> Iterator[str]:
    """A URL whose connections use a fresh schema of their own."""
    base = _require_pg(pg_server)
    schema = f"loop_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_dsn(base), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}{schema_options(schema)}"
    finally:
        with psycopg.connect(_dsn(base), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'labels.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store migrated to the newest revision once for the session (test_migrations
    migrates empty databases itself, from ``store_url``)."""
    path = tmp_path_factory.mktemp("store-template") / "labels.db"
    LabelStore(f"sqlite:///{path}").close()
    return path


@pytest.fixture
def store(store_url: str, request: pytest.FixtureRequest) -> Iterator[LabelStore]:
    if store_url.startswith("sqlite:///"):
        # A copy of the migrated template: the same schema, at a quarter of the CPU of migrating
        # a new file (BENCHMARKS.md, "Test suite time"); most store tests open one.
        shutil.copyfile(request.getfixturevalue("sqlite_template"), store_url.removeprefix("sqlite:///"))
    with LabelStore(store_url) as s:
        yield s


@pytest.fixture
def seeded(store: LabelStore) -> LabelStore:
    """Stream 'sentiment' (neg, neu, pos); annotators a, b, c on it and d off it; items
    i0..i9; guideline v1 published, v2 a draft."""
    store.create_stream(STREAM, CLASSES, owner="ml-team", escalation_contact="lead@example.com")
    store.create_stream("other", ("x", "y"))
    for name, rate in (("a", 36.0), ("b", 18.0), ("c", 0.0)):
        store.add_annotator(name, streams=[STREAM], hourly_rate=rate)
    store.add_annotator("d", streams=["other"])
    store.add_items(STREAM, [{"item_id": f"i{k}", "payload": {"text": f"review {k}"}} for k in range(10)])
    store.add_guideline(STREAM, "Label the overall sentiment.", author="lead")
    store.publish_guideline(STREAM, 1)
    store.add_guideline(STREAM, "Sarcasm counts as negative.", author="lead", parent_version=1)
    return store


@contextlib.contextmanager
def counting_steps(store: LabelStore) -> Iterator[list[int]]:
    """SQLite's virtual-machine steps (in hundreds) of what runs inside: what a query costs, not
    the clock (``store`` on a file: its connections are opened again, counting)."""
    import sqlalchemy as sa

    steps = [0]

    def count(conn, _record) -> None:
        conn.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1), 100)

    sa.event.listen(store._engine, "connect", count)
    store._engine.dispose()
    try:
        yield steps
    finally:
        sa.event.remove(store._engine, "connect", count)
        store._engine.dispose()
