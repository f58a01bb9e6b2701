"""Fixtures for the Label Studio tests.

``payloads/`` holds bodies Label Studio 1.23.2 itself sent and served (captured from a real
server by the integration test's helpers: webhooks for a created, updated and deleted
annotation, a ``/predict`` request, a JSON export), so the contract tests read what Label
Studio writes, not what we think it writes.
"""

from __future__ import annotations

import base64
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loop.columns import ITEM
from loop.store import LabelStore

from ..store.conftest import pg_server, pg_url, store_url  # noqa: F401 - SQLite and PostgreSQL, as the store's tests

PAYLOADS = Path(__file__).parent / "payloads"
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
STREAM = "sentiment"
CLASSES = ("neg", "neu", "pos")
CLIENT = "label-studio"  # the name of the client token Label Studio uses


def payload(name: str) -> dict | list:
    return json.loads((PAYLOADS / f"{name}.json").read_text())


@pytest.fixture
def store(store_url) -> Iterator[LabelStore]:
    """A stream with two annotators known by email and three items with features, on SQLite
    and on PostgreSQL."""
    s = LabelStore(store_url)
    s.create_stream(STREAM, CLASSES)
    s.add_annotator("ann-1", email="ann1@x.test", streams=[STREAM])
    s.add_annotator("ann-2", email="ann2@x.test", streams=[STREAM])
    s.add_items(STREAM, [{ITEM: f"i{k}", "payload": {"text": f"review {k}", "features": [1.0 + k, 2.0, 3.0]}}
                         for k in range(3)])
    yield s
    s.close()


def fake_score(features: np.ndarray):
    """A stand-in Scorer: probabilities are the first three features, normalised."""
    from loop.routing import score_items

    probs = np.abs(features[:, :3]) / np.abs(features[:, :3]).sum(axis=1, keepdims=True)
    return probs, list(CLASSES), {"name": "sentiment", "version": "4"}, score_items(probs, classes=list(CLASSES))


def fake_route(scores: pd.DataFrame) -> pd.DataFrame:
    from loop.routing import RoutingThresholds, route

    return route(scores, RoutingThresholds()).drop(columns=[ITEM])


class Http:
    """A FastAPI app on uvicorn in a thread, on a free port (the suite has no httpx)."""

    def __init__(self, app) -> None:
        import uvicorn

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict[str, str]:
    """What Label Studio's ML backend connection sends (requests' HTTPBasicAuth)."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@dataclass
class BackendHttp:
    url: str
    backend: object  # serve.labelstudio.LabelStudioBackend
    services: object  # serve.auth.Services, over the same store
    token: str  # a client token issued by the store, as Label Studio sends it


def backend_for(store: LabelStore | None):
    """A LabelStudioBackend over ``store`` wired to fakes (Scorer, routing, Label Studio's users)."""
    from serve.args import LabelStudioArgs
    from serve.labelstudio import LabelStudioBackend

    async def score(features):
        return fake_score(features)

    async def route(scores):
        return fake_route(scores)

    async def model():
        return {"name": "sentiment", "version": "4"}

    users = {1: "admin@labelloop.test", 2: "ann1@x.test", 3: "ann2@x.test", 9: "stranger@x.test"}
    return LabelStudioBackend(LabelStudioArgs(stream=STREAM), store=store, score=score, route=route, model=model,
                              users=lambda: users)


@pytest.fixture
def backend_http(store) -> Iterator[BackendHttp]:
    """The app's own FastAPI object (``serve.app.api``: its auth and error handlers) on uvicorn,
    without Serve: the two seams are FastAPI dependency overrides, the Router's
    :class:`serve.auth.Services` over the store (``auth: token``) and its Label Studio backend
    over the same store, wired to fakes."""
    pytest.importorskip("ray")
    from serve.app import api
    from serve.auth import Services, get_services
    from serve.labelstudio import backend

    ls = backend_for(store)
    services = Services(store, auth="token")
    api.dependency_overrides[get_services] = lambda: services
    api.dependency_overrides[backend] = lambda: ls
    http = Http(api)
    try:
        yield BackendHttp(http.url, ls, services, store.issue_token(CLIENT, "client"))
    finally:
        http.stop()
        api.dependency_overrides.pop(get_services, None)
        api.dependency_overrides.pop(backend, None)


@pytest.fixture
def label_studio_helpers(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import _label_studio

    yield _label_studio
    sys.modules.pop("_label_studio", None)
