"""Fixtures for the Label Studio tests.

``payloads/`` holds bodies Label Studio 1.23.2 itself sent and served (captured from a real
server by the integration test's helpers: webhooks for a created, updated and deleted
annotation, a ``/predict`` request, a JSON export), so the contract tests read what Label
Studio writes, not what we think it writes.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
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
WEBHOOK_TOKEN = "webhook-secret-for-tests"


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


@pytest.fixture
def backend_http(store, monkeypatch) -> Iterator[tuple[str, object]]:
    """serve.labelstudio's router on a plain FastAPI app, its backend wired to fakes."""
    from fastapi import FastAPI

    from serve.args import LabelStudioArgs
    from serve.labelstudio import LabelStudioBackend, backend, router
    from serve.payload import BadRequest

    monkeypatch.setenv("LABELLOOP_WEBHOOK_TOKEN", WEBHOOK_TOKEN)

    async def score(features):
        return fake_score(features)

    async def route(scores):
        return fake_route(scores)

    async def model():
        return {"name": "sentiment", "version": "4"}

    users = {1: "admin@labelloop.test", 2: "ann1@x.test", 3: "ann2@x.test", 9: "stranger@x.test"}
    ls = LabelStudioBackend(LabelStudioArgs(stream=STREAM), store_url=store.url.render_as_string(hide_password=False),
                            score=score, route=route, model=model, users=lambda: users)
    app = FastAPI()
    app.include_router(router)
    app.dependency_overrides[backend] = lambda: ls

    @app.exception_handler(BadRequest)
    async def _bad(request, exc):
        from fastapi.responses import JSONResponse

        return JSONResponse(exc.body(), status_code=exc.status)

    http = Http(app)
    yield http.url, ls
    http.stop()


@pytest.fixture
def label_studio_helpers(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import _label_studio

    yield _label_studio
    sys.modules.pop("_label_studio", None)
