"""Headless Chromium for browser tests: Debian's ``chromium`` and ``chromium-driver``.

Without them the tests skip with the reason; with ``CI=true`` they fail (``.ci/run`` installs
them with apt-get). Chromium starts with the flags this machine's closed network needs (no
background networking, sync or component updates) and an empty profile of its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM = os.environ.get("LABELLOOP_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("LABELLOOP_CHROMEDRIVER", "/usr/bin/chromedriver")


def require_chromium() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        reason = f"browser tests need {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if IN_CI:
            pytest.fail(reason + "; CI=true, so they must run")
        pytest.skip(reason)


@contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator["object"]:
    """A headless Chromium WebDriver with an empty profile, quit afterwards."""
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="labelloop-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
