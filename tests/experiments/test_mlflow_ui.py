"""The MLflow UI as the managers' dashboard, checked in a real headless Chromium.

A small comparison runs through ``labelloop compare`` into a SQLite MLflow store; ``mlflow
server`` serves it; Chromium opens the link the command printed and must show the classic runs
table (not the GenAI view) with the strategy runs as rows and their cost per error removed, then
the comparison's ``report.html`` rendered in the parent run's artifacts. Screenshots of both
pages go to ``$LABELLOOP_CI_ARTIFACTS`` (``.ci/run`` sets it) or the test's tmp_path.

The MLflow UI is a large React app: on a loaded 2-core machine it can take a minute to render,
so every wait is an explicit WebDriverWait of up to 90 s.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from experiments import tracking as T
from experiments.cli import main as cli_main
from tests.browser import chromium, require_chromium

pytestmark = pytest.mark.slow

STRATEGIES = ["random", "least_confidence", "tiered"]
CONFIG = {
    "program": {"name": "ui", "dataset": "digits", "rounds": 1, "items_per_round": 60, "budget_per_round": 4.0,
                "calibration_items": 50, "holdout_items": 100, "audit_rate": 0.3},
    "compare": {"strategies": STRATEGIES},
    "serve": {"url": "in_process"},
}
WAIT_S = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shots_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("LABELLOOP_CI_ARTIFACTS") or tmp_path) / "mlflow-ui"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    """The comparison's store and the lines ``labelloop compare`` printed."""
    require_chromium()
    root = tmp_path_factory.mktemp("mlflow-ui")
    config = root / "compare.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "tracking": {"uri": f"sqlite:///{root}/mlflow.db",
                                                             "experiment": "ui-check",
                                                             "registered_model": "ui-check"},
                                      "store": {"url": f"sqlite:///{root}/labels.db"}}))
    here = os.getcwd()
    os.chdir(root)  # MLflow puts a SQLite store's artifacts under ./mlruns
    try:
        with pytest.MonkeyPatch.context() as env:
            for name in ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
                env.delenv(name, raising=False)  # another test's run context is not this command's
            from io import StringIO
            from unittest import mock

            printed = StringIO()
            with mock.patch("sys.stdout", printed):
                code = cli_main(["compare", "--config", str(config)])
    finally:
        os.chdir(here)
    assert code == 0, printed.getvalue()
    return {"root": root, "uri": f"sqlite:///{root}/mlflow.db", "out": printed.getvalue()}


@pytest.fixture(scope="module")
def server(comparison):
    """``mlflow server`` on the comparison's store, as the README starts it (one worker, no jobs)."""
    port = _free_port()
    root = comparison["root"]
    log = open(root / "mlflow-server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", comparison["uri"],
         "--default-artifact-root", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url = f"http://127.0.0.1:{port}"
    try:
        import requests

        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(url + "/health", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (root / "mlflow-server.log").read_text()[-3000:]
                raise AssertionError(f"mlflow server did not start:\n{tail}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its worker: the group this test started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _printed_links(out: str) -> tuple[str, str]:
    """The runs view and the report link ``labelloop compare`` printed, on the local UI's address."""
    runs = re.search(r"http://127\.0\.0\.1:5000/#/experiments/\S+viewStateShareKey=\S+", out)
    report = re.search(r"http://127\.0\.0\.1:5000/#/experiments/\S+/artifacts/report\.html\S*", out)
    assert runs and report, out
    return runs.group(0), report.group(0)


def _on(server: str, link: str) -> str:
    return link.replace("http://127.0.0.1:5000", server)


def _body(driver) -> str:
    return driver.find_element("tag name", "body").text


def _cell(value: float) -> str:
    """A metric as the UI prints it (JavaScript's shortest round-trip form, as Python's repr)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def test_the_printed_command_and_link(comparison):
    out = comparison["out"]
    assert f"mlflow ui --backend-store-uri {comparison['uri']} --port 5000" in out
    runs, _ = _printed_links(out)
    assert "workflowType=machine_learning" in runs and "compareRunsMode=TABLE" in runs


def test_the_link_opens_the_strategy_runs_with_cost_per_error_removed(comparison, server, tmp_path):
    from mlflow import MlflowClient
    from selenium.webdriver.support.ui import WebDriverWait

    client = MlflowClient(tracking_uri=comparison["uri"])
    experiment = client.get_experiment_by_name("ui-check")
    children = {r.data.tags[T.TAG_STRATEGY]: r for r in client.search_runs(
        [experiment.experiment_id], f"tags.`{T.TAG_ROLE}` = '{T.ROLE_PROGRAM}'")}
    assert sorted(children) == sorted(STRATEGIES)
    runs_link, _ = _printed_links(comparison["out"])
    shots = _shots_dir(tmp_path)
    with chromium(1600, 1000) as driver:
        driver.get(_on(server, runs_link))
        try:
            WebDriverWait(driver, WAIT_S).until(
                lambda d: all(s in _body(d) for s in STRATEGIES) and T.COST_PER_ERROR_REMOVED in _headers(d),
                message="the strategy runs and a cost_per_error_removed column")
        finally:
            driver.save_screenshot(str(shots / "mlflow_runs_view.png"))
        text = _body(driver)
        # the classic runs table, not the GenAI overview (traces, latency and token panels)
        assert "Run Name" in text and "matching runs" in text
        assert "Latency" not in text and "Token" not in text
        headers = _headers(driver)
        for column in (T.COST_PER_ERROR_REMOVED, T.COST_PER_ERROR_REMOVED_ESTIMATE, T.FINAL_ERROR_RATE,
                       T.FINAL_ERROR_RATE_ESTIMATE):
            assert column in headers, headers
        # the strategies are rows of their own (not collapsed under the parent), with their values
        rows = _row_texts(driver)
        for strategy, run in children.items():
            row = next((r for r in rows if strategy in r.split()), None)
            assert row is not None, (strategy, rows)
            if T.COST_PER_ERROR_REMOVED in run.data.metrics:
                assert _cell(run.data.metrics[T.COST_PER_ERROR_REMOVED]) in row.split(), (strategy, row)
        assert not any(r.split()[:1] == [f"compare-{CONFIG['program']['dataset']}"] for r in rows)
        # the chart view opens on the manager's figures, not a parallel-coordinates plot of `items`
        driver.get(_on(server, runs_link).replace("compareRunsMode=TABLE", "compareRunsMode=CHART"))
        try:
            WebDriverWait(driver, WAIT_S).until(lambda d: "labelloop: the manager's figures" in _body(d),
                                                message="the chart view's labelloop section")
        finally:
            driver.save_screenshot(str(shots / "mlflow_charts_view.png"))
        assert "Parallel Coordinates" not in _body(driver)


def _headers(driver) -> list[str]:
    """The column headers' names (MLflow draws its own header cells inside ag-grid's)."""
    return driver.execute_script(
        "return [...document.querySelectorAll('.ag-header-cell')].map(e => e.innerText.trim());")


def _row_texts(driver) -> list[str]:
    """Each table row's text, its pinned and scrolling parts joined (ag-grid splits a row in two)."""
    return driver.execute_script("""
        const rows = {};
        document.querySelectorAll('.ag-row[row-index]').forEach(el => {
            const i = el.getAttribute('row-index');
            rows[i] = (rows[i] || '') + ' ' + el.innerText.replace(/\\s+/g, ' ');
        });
        return Object.values(rows);""")


def test_the_report_artifact_renders(comparison, server, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    _, report_link = _printed_links(comparison["out"])
    shots = _shots_dir(tmp_path)
    with chromium(1600, 1000) as driver:
        driver.get(_on(server, report_link))
        try:
            frame = WebDriverWait(driver, WAIT_S).until(lambda d: d.find_elements("css selector", "iframe"))[0]
            driver.switch_to.frame(frame)
            WebDriverWait(driver, WAIT_S).until(
                lambda d: d.find_elements("css selector", "h1, h2") and d.find_elements("tag name", "table"))
            heading = driver.find_elements("css selector", "h1, h2")[0].text
            table = driver.find_elements("tag name", "table")[0].text
        finally:
            driver.switch_to.default_content()
            driver.save_screenshot(str(shots / "mlflow_report.png"))
    assert heading.strip()
    assert all(s in table for s in STRATEGIES), table
