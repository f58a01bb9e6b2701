"""Fixtures of the experiment tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


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
