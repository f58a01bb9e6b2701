"""What the Serve app says when it cannot serve: no password in a 503 body or a log line.

No Ray is started: the Scorer's methods run on an object made without its constructor.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle

import pytest

pytest.importorskip("ray")

from serve.app import NoModel, Scorer, _no_model  # noqa: E402
from serve.args import AppArgs  # noqa: E402

URI = "http://user:s3cret@mlflow.internal:5000"


class _Unreachable:
    def get_model_version_by_alias(self, name, alias):
        raise ConnectionError(f"API request to {URI}/api/2.0/mlflow/registered-models/alias failed: refused")


def _scorer() -> object:
    scorer = Scorer.func_or_class.__new__(Scorer.func_or_class)
    scorer._args = AppArgs(model_name="digits", tracking_uri=URI)
    scorer._client = _Unreachable()
    scorer._current = None
    scorer._reload_lock = asyncio.Lock()
    return scorer


def test_the_no_model_answer_hides_the_tracking_uris_password():
    scorer = _scorer()
    with pytest.raises(NoModel) as caught:
        asyncio.run(scorer.reload())
    assert "s3cret" not in str(caught.value) and "user:***@mlflow.internal" in str(caught.value)
    assert "s3cret" not in str(pickle.loads(pickle.dumps(caught.value)))  # as it crosses replicas
    answer = asyncio.run(_no_model(None, caught.value))
    assert answer.status_code == 503
    body = json.loads(answer.body)
    assert body["error"]["field"] == "model" and "s3cret" not in answer.body.decode()


def test_the_pollers_log_line_hides_it_too(caplog):
    scorer = _scorer()

    async def one_poll() -> None:
        task = asyncio.get_running_loop().create_task(scorer._poll(0.01))
        await asyncio.sleep(0.1)
        task.cancel()

    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        asyncio.run(one_poll())
    assert "Scorer refresh failed" in caplog.text and "s3cret" not in caplog.text
