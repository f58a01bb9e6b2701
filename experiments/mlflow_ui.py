"""The MLflow UI as the managers' dashboard: a link that opens the runs the way a manager reads them.

How MLflow 3.17's UI decides what an experiment page shows (read from its source,
``mlflow/server/js/src/experiment-tracking``, and the bundle it ships):

- **GenAI or classic.** The sidebar's workflow switch (``genai`` or ``machine_learning``)
  decides; the URL parameter ``workflowType=machine_learning`` sets it for the page, otherwise
  the browser's local storage does, and a fresh browser starts at ``genai`` (traces, latency and
  token panels). With the switch present the experiment's ``mlflow.experimentKind`` tag is not
  read, which is why setting that tag did not help.
- **Table or charts.** The URL parameter ``compareRunsMode`` (``TABLE``, ``CHART``,
  ``ARTIFACT``); without it 3.x may open the charts. The charts are the view state's
  ``compareRunCharts`` (and their ``compareRunSections``); when it has none the UI charts every
  metric alphabetically (``items`` first), or draws an empty parallel-coordinates plot.
- **Columns, filter and sort.** A *shared view state*: the experiment tag
  ``mlflow.sharedViewState.<key>`` holds ``{"name", "createdAt", "updatedAt", "state"}`` with
  ``state`` the JSON of the search facets (``searchFilter``, ``orderByKey``, ``orderByAsc``, ...)
  and the UI state (``selectedColumns`` as ``metrics.`name```, ``runListHidden``, ...), and
  ``viewStateShareKey=<key>`` in the URL applies it (3.17 also lists it among the saved views).
  Which runs are expanded is not part of a shared view (the UI drops ``runsExpanded``).
- **Nesting.** The table nests child runs under their (collapsed) parent only when the runs are
  neither filtered nor sorted by anything but start time. The views written here filter on the
  comparison's parent run and sort by cost per error removed, so the strategies are the table's
  rows, cheapest per error removed first.

So labelloop writes one shared view per comparison (and per program run), keyed by that run's
id, and prints a link with ``workflowType=machine_learning&compareRunsMode=TABLE&viewStateShareKey=<run id>``.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loop._redact import redact

from . import tracking as T

__all__ = ["COMPARISON_COLUMNS", "UiLink", "base_url", "run_link", "share_run_view", "share_view", "ui_link",
           "view_state"]

# The manager's question: which strategy removes the most errors per unit of cost. The true
# figures exist only in simulation; a live program's runs leave those cells empty.
COMPARISON_COLUMNS = (T.COST_PER_ERROR_REMOVED_ESTIMATE, T.COST_PER_ERROR_REMOVED, T.FINAL_ERROR_RATE_ESTIMATE,
                      T.FINAL_ERROR_RATE, T.PROGRAM_COST, T.ERRORS_REMOVED, T.MODEL_ACCURACY)
SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
LOCAL_UI_PORT = 5000
REPORT_HTML = T.REPORT_HTML


def metric_column(name: str) -> str:
    """A metric as the runs table names its column (``metrics.`final_error_rate```)."""
    return f"metrics.`{name}`"


def _width(column: str) -> int:
    """Pixels that show a column's whole name and the sort arrow (MLflow's default width cuts
    names longer than about 20 characters)."""
    return max(100, int(6.5 * len(column.split("`")[1])) + 28)


def tag_column(name: str) -> str:
    return f"tags.`{name}`"


def view_state(*, search_filter: str, order_by_metric: str, ascending: bool = True,
               metrics: Sequence[str] = COMPARISON_COLUMNS, tags: Sequence[str] = ()) -> dict[str, Any]:
    """The runs table's state as MLflow 3.17 reads a shared view: filter, sort, visible columns.

    Examples
    --------
    >>> state = view_state(search_filter="tags.`labelloop.role` = 'program'", order_by_metric="program_cost")
    >>> state["orderByKey"], state["selectedColumns"][0]
    ('metrics.`program_cost`', 'metrics.`cost_per_error_removed_estimate`')
    """
    if not search_filter.strip():
        raise ValueError("search_filter: expected an MLflow search expression, got an empty string")
    columns = [tag_column(t) for t in tags] + [metric_column(m) for m in metrics]
    return {
        # search facets
        "searchFilter": search_filter, "orderByKey": metric_column(order_by_metric), "orderByAsc": bool(ascending),
        # UI state (the UI fills in its defaults for the rest): these columns in this order, wide
        # enough for their names, the run list shown, no grouping
        "selectedColumns": columns, "columnOrder": columns, "columnWidths": {c: _width(c) for c in columns},
        "runListHidden": False, "groupBy": None,
        # the chart view (its default would chart every metric, or a parallel-coordinates plot)
        **_charts(metrics),
    }


CHART_SECTION = "labelloop"


def _charts(metrics: Sequence[str]) -> dict[str, Any]:
    """The chart view: cost against errors removed, then one bar chart per column, in one section
    first (metrics the runs have beyond these still get the UI's own charts, in later sections)."""
    section = f"{CHART_SECTION}-section"
    common = {"runsCountToCompare": 20, "metricSectionId": section, "deleted": False, "isGenerated": False}
    scatter = {**common, "uuid": f"{CHART_SECTION}-cost-vs-errors", "type": "SCATTER",
               "xaxis": {"key": T.PROGRAM_COST, "type": "METRIC"},
               "yaxis": {"key": T.ERRORS_REMOVED, "type": "METRIC"}}
    bars = [{**common, "uuid": f"{CHART_SECTION}-{m}", "type": "BAR", "metricKey": m} for m in metrics]
    return {"compareRunCharts": [scatter, *bars], "isAccordionReordered": True,
            "compareRunSections": [{"uuid": section, "name": "labelloop: the manager's figures", "display": True,
                                    "isReordered": True, "deleted": False, "isGenerated": False}]}


def share_view(client: Any, experiment_id: str, key: str, *, name: str, state: dict[str, Any]) -> None:
    """Write ``state`` as the experiment's shared view ``key`` (what ``viewStateShareKey=key`` opens).

    The tag holds the envelope 3.17 lists among its saved views (``state`` is the view state as
    JSON text). A UI that reads the tag as the state itself finds none of its keys in the
    envelope and would open its default view (not tried on versions before 3.17).
    """
    now = int(time.time() * 1000)
    envelope = {"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps(state, separators=(",", ":"))}
    client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG_PREFIX + key, json.dumps(envelope, separators=(",", ":")))


def share_run_view(tracking_uri: str, run_id: str, *, server: str | None = None) -> UiLink:
    """Write the shared view of one labelloop run and return the links that open it.

    A comparison (role ``comparison``) shows its strategy runs; any other run shows itself. Both
    sorted by estimated cost per error removed (the figure a live team has too), cheapest first.

    Parameters
    ----------
    tracking_uri : str
    run_id : str
        The run; its id is also the view's key.
    server : str, optional
        The UI's base URL when it is not the one :func:`base_url` derives.
    """
    from mlflow import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(run_id)
    comparison = run.data.tags.get(T.TAG_ROLE) == T.ROLE_COMPARISON
    if comparison:
        search = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{run_id}'"
        name = f"labelloop: strategies of {run.info.run_name}"
    else:
        search = f"attributes.run_id = '{run_id}'"
        name = f"labelloop: {run.info.run_name}"
    share_view(client, run.info.experiment_id, run_id, name=name,
               state=view_state(search_filter=search, order_by_metric=T.COST_PER_ERROR_REMOVED_ESTIMATE))
    return ui_link(tracking_uri, run.info.experiment_id, run_id, server=server, report=comparison)


@dataclass(frozen=True)
class UiLink:
    """Where to see a run in the MLflow UI.

    Attributes
    ----------
    command : str or None
        The command that starts the UI on a local store (None when the tracking URI is a server).
    runs_url : str
        The experiment's runs table in the classic view, with the run's shared view.
    report_url : str or None
        The run's ``report.html`` artifact (a comparison's), None for a run without one.
    """

    command: str | None
    runs_url: str
    report_url: str | None


def base_url(tracking_uri: str) -> tuple[str | None, str]:
    """The command that starts a UI for ``tracking_uri`` (None for a server) and the UI's base URL.

    Examples
    --------
    >>> base_url("sqlite:///mlflow.db")
    ('mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000', 'http://127.0.0.1:5000')
    >>> base_url("https://mlflow.example.org/")
    (None, 'https://mlflow.example.org')
    """
    shown = redact(tracking_uri)
    if tracking_uri.startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(shown)
        # A browser does not take user:password@ in a link; the UI asks for them itself.
        bare = parts._replace(netloc=parts.netloc.rpartition("@")[2])
        return None, urllib.parse.urlunsplit(bare).rstrip("/")
    return (f"mlflow ui --backend-store-uri {shown} --port {LOCAL_UI_PORT}", f"http://127.0.0.1:{LOCAL_UI_PORT}")


def ui_link(tracking_uri: str, experiment_id: str, run_id: str, *, server: str | None = None,
            report: bool = True) -> UiLink:
    """The links that open ``run_id``'s shared view (see :func:`share_run_view`) and its report.

    Parameters
    ----------
    tracking_uri : str
    experiment_id, run_id : str
    server : str, optional
        The UI's base URL when it is not the one :func:`base_url` derives (a test's port).
    report : bool, default=True
        Whether the run has a ``report.html`` to link to.

    Examples
    --------
    >>> link = ui_link("sqlite:///mlflow.db", "3", "abc")
    >>> link.runs_url
    'http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning&compareRunsMode=TABLE&viewStateShareKey=abc'
    """
    command, base = base_url(tracking_uri)
    base = (server or base).rstrip("/")
    query = urllib.parse.urlencode({"workflowType": "machine_learning", "compareRunsMode": "TABLE",
                                    "viewStateShareKey": run_id})
    return UiLink(command=command if server is None else None,
                  runs_url=f"{base}/#/experiments/{experiment_id}/runs?{query}",
                  report_url=(f"{base}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/{REPORT_HTML}"
                              "?workflowType=machine_learning") if report else None)


def run_link(tracking_uri: str, experiment_id: str, run_id: str, *, server: str | None = None) -> str:
    """The run's own page (its figures, description and artifacts) in the classic view.

    Examples
    --------
    >>> run_link("http://mlflow:5000", "2", "abc")
    'http://mlflow:5000/#/experiments/2/runs/abc?workflowType=machine_learning'
    """
    _, base = base_url(tracking_uri)
    return f"{(server or base).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
