"""The printed MLflow link and the shared view it opens (no browser: tests/experiments/test_mlflow_ui.py)."""

from __future__ import annotations

import json
import urllib.parse

import pytest
from rich.console import Console

from experiments import mlflow_ui as U
from experiments import tracking as T
from experiments.cli import _print_ui_hint


def _query(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(url.split("?", 1)[1]))


def test_a_local_store_prints_the_command_and_the_link_on_port_5000():
    link = U.ui_link("sqlite:////srv/mlflow.db", "7", "abc123")
    assert link.command == "mlflow ui --backend-store-uri sqlite:////srv/mlflow.db --port 5000"
    assert link.runs_url.startswith("http://127.0.0.1:5000/#/experiments/7/runs?")
    assert _query(link.runs_url) == {"workflowType": "machine_learning", "compareRunsMode": "TABLE",
                                     "viewStateShareKey": "abc123"}
    assert link.report_url == ("http://127.0.0.1:5000/#/experiments/7/runs/abc123/artifacts/report.html"
                               "?workflowType=machine_learning")
    assert U.ui_link("sqlite:///m.db", "7", "abc", report=False).report_url is None


def test_a_server_is_its_own_base_without_credentials():
    command, base = U.base_url("https://ops:s3cret@mlflow.example.org:8443/")
    assert command is None and base == "https://mlflow.example.org:8443"
    link = U.ui_link("https://ops:s3cret@mlflow.example.org:8443", "1", "r")
    assert "s3cret" not in link.runs_url and link.runs_url.startswith("https://mlflow.example.org:8443/#/")
    # a database URI's password never reaches the printed command
    command, _ = U.base_url("postgresql+psycopg://mlflow:pw@db:5432/mlflow")
    assert "pw@" not in command and "***" in command


def test_the_view_state_names_columns_sort_and_filter_as_mlflow_reads_them():
    state = U.view_state(search_filter="tags.`mlflow.parentRunId` = 'p'", order_by_metric=T.COST_PER_ERROR_REMOVED)
    assert state["orderByKey"] == "metrics.`cost_per_error_removed`" and state["orderByAsc"] is True
    assert state["selectedColumns"] == [f"metrics.`{m}`" for m in U.COMPARISON_COLUMNS]
    assert state["columnOrder"] == state["selectedColumns"]
    # every column is wide enough for its name (MLflow's default cuts names at about 20 characters)
    assert all(w >= 6.5 * len(c.split("`")[1]) for c, w in state["columnWidths"].items())
    # the manager's columns: final error rate true and estimated, cost, cost per error removed,
    # errors removed, model accuracy
    assert {T.FINAL_ERROR_RATE, T.FINAL_ERROR_RATE_ESTIMATE, T.PROGRAM_COST, T.COST_PER_ERROR_REMOVED,
            T.ERRORS_REMOVED, T.MODEL_ACCURACY} <= set(U.COMPARISON_COLUMNS)
    charts = state["compareRunCharts"]
    assert charts[0]["type"] == "SCATTER" and [c["metricKey"] for c in charts[1:]] == list(U.COMPARISON_COLUMNS)
    assert {c["metricSectionId"] for c in charts} == {s["uuid"] for s in state["compareRunSections"]}
    with pytest.raises(ValueError, match="search_filter"):
        U.view_state(search_filter=" ", order_by_metric=T.PROGRAM_COST)


def _runs(client, experiment_id):
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    parent = client.create_run(experiment_id, run_name="compare-digits",
                               tags={T.TAG_ROLE: T.ROLE_COMPARISON}).info.run_id
    children = [client.create_run(experiment_id, run_name=s, tags={
        T.TAG_ROLE: T.ROLE_PROGRAM, T.TAG_STRATEGY: s, MLFLOW_PARENT_RUN_ID: parent}).info.run_id
        for s in ("random", "tiered")]
    return parent, children


def test_a_comparisons_view_filters_on_its_strategy_runs(mlflow_uri):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    experiment_id = client.create_experiment("links-comparison")
    parent, children = _runs(client, experiment_id)
    link = U.share_run_view(mlflow_uri, parent)
    assert _query(link.runs_url)["viewStateShareKey"] == parent and link.report_url
    tag = client.get_experiment(experiment_id).tags[U.SHARED_VIEW_TAG_PREFIX + parent]
    envelope = json.loads(tag)
    assert envelope["name"] == "labelloop: strategies of compare-digits"
    assert isinstance(envelope["createdAt"], int)
    state = json.loads(envelope["state"])
    # the filter the UI will send finds exactly the strategy runs (flat rows: a filtered table does not nest)
    found = client.search_runs([experiment_id], state["searchFilter"])
    assert sorted(r.info.run_id for r in found) == sorted(children)
    assert state["orderByKey"] == f"metrics.`{T.COST_PER_ERROR_REMOVED_ESTIMATE}`"


def test_a_program_runs_view_is_that_run(mlflow_uri):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    experiment_id = client.create_experiment("links-program")
    _, children = _runs(client, experiment_id)
    link = U.share_run_view(mlflow_uri, children[0])
    assert link.report_url is None
    state = json.loads(json.loads(client.get_experiment(experiment_id).tags[
        U.SHARED_VIEW_TAG_PREFIX + children[0]])["state"])
    assert [r.info.run_id for r in client.search_runs([experiment_id], state["searchFilter"])] == [children[0]]


def test_the_hint_prints_whole_links(mlflow_uri):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    experiment_id = client.create_experiment("links-hint")
    parent, _ = _runs(client, experiment_id)
    console = Console(width=60, record=True)  # narrower than the link: it must not wrap
    _print_ui_hint(console, mlflow_uri, parent)
    lines = console.export_text().splitlines()
    command = f"mlflow ui --backend-store-uri {mlflow_uri} --port 5000"
    assert lines[0].startswith(f"Open the runs in the MLflow UI: {command}")
    assert lines[1].strip() == U.ui_link(mlflow_uri, experiment_id, parent).runs_url
    assert lines[2] == f"The comparison's report: {U.ui_link(mlflow_uri, experiment_id, parent).report_url}"


def test_without_a_run_the_hint_is_the_command(capsys):
    console = Console(width=200, record=True)
    _print_ui_hint(console, "sqlite:///mlflow.db")
    plain = "Open the runs in the MLflow UI: mlflow ui --backend-store-uri sqlite:///mlflow.db"
    assert console.export_text().strip() == plain
    silent = Console(width=200, record=True)
    _print_ui_hint(silent, "none")
    assert silent.export_text() == ""


def test_a_refused_view_leaves_the_plain_command(monkeypatch):
    from mlflow.exceptions import MlflowException

    def refuse(uri, run_id):
        raise MlflowException("PERMISSION_DENIED: cannot set tags on experiment 3 for https://u:pw@host")

    monkeypatch.setattr(U, "share_run_view", refuse)
    console = Console(width=200, record=True)
    _print_ui_hint(console, "sqlite:///mlflow.db", "abc")
    text = console.export_text()
    assert "no shared MLflow view: PERMISSION_DENIED" in text and "pw@" not in text
    assert text.strip().endswith("Open the runs in the MLflow UI: mlflow ui --backend-store-uri sqlite:///mlflow.db")
