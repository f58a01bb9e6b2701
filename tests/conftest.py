"""Fixtures shared by the whole suite: small frames, fixed seeds, the real crowds."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from loop.columns import ANNOTATOR, ITEM, LABEL
from loop.datasets import load_crowd, shared_data_dir

IN_CI = os.environ.get("CI", "").lower() == "true"

# The session's one Ray + Serve (fixture ray_serve), for the tests that deploy the Serve app.
pytest_plugins = ["tests.ray_fixtures"]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def small_annotations() -> pd.DataFrame:
    """Four items, three annotators; item 3 has a single label; annotator c disagrees once."""
    rows = [
        (0, "a", 0), (0, "b", 0), (0, "c", 0),
        (1, "a", 1), (1, "b", 1), (1, "c", 2),
        (2, "a", 2), (2, "b", 2), (2, "c", 2),
        (3, "a", 1),
    ]
    return pd.DataFrame(rows, columns=[ITEM, ANNOTATOR, LABEL])


def _crowd(name: str):
    if shared_data_dir() is None:
        if IN_CI:
            pytest.fail("CI must have ../shared/data beside the checkout")
        pytest.skip("the real crowds in ../shared/data are not on this machine")
    return load_crowd(name)


@pytest.fixture(scope="session")
def music_genre():
    return _crowd("music_genre")


@pytest.fixture(scope="session")
def rte():
    return _crowd("rte")


@pytest.fixture(scope="session")
def weather():
    return _crowd("weather")


@pytest.fixture(scope="session")
def crowd_loader():
    """Load any crowd by name, skipping when the shared data is absent."""
    return _crowd
