"""Fixtures of the experiment tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store.conftest import schema_options


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """One SQLite tracking store for the session (creating its tables takes seconds).

    Tests share it: give each test its own experiment and registered model names.
    """
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    # MLflow caches one store per URI, with its default artifact root (./mlruns) made absolute
    # from the working directory when the store is first built: build it from tmp, so the
    # artifacts of experiments the tests create land there and not in the checkout.
    cwd = os.getcwd()
    os.chdir(root)
    try:
        MlflowClient(tracking_uri=uri).search_experiments()
    finally:
        os.chdir(cwd)
    return uri


@pytest.fixture
def unwritable_dir(tmp_path) -> Path:
    """A directory that cannot be created: under a read-only directory (root ignores permission
    bits, so for root under a read-only file system)."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        return locked / "out"
    for root in ("/sys", "/proc"):
        if Path(root).is_dir():
            return Path(root) / "labelloop-results"
    pytest.skip("no read-only directory to write into")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> Iterator[str]:
    """A file SQLite store, or a fresh schema on the PostgreSQL server the store tests use
    (``LABELLOOP_TEST_PG_URL``, else 127.0.0.1:5432/test; skipped when unreachable, except in CI)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'labels.db'}"
        return
    import psycopg

    base = os.environ.get("LABELLOOP_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
    dsn = base.replace("postgresql+psycopg://", "postgresql://")
    schema = f"live_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.Error as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL is unreachable at {base} ({exc}); CI=true, so the PostgreSQL case must run")
        pytest.skip(f"PostgreSQL is unreachable at {base}")
    try:
        yield f"{base}{'&' if '?' in base else '?'}{schema_options(schema)}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
