"""serve.client without a server: argument checks, error mapping, both answer forms."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import requests

from loop.columns import CONFIDENCE, ITEM, LABEL_ISSUE_SCORE, PREDICTED, ROUTE
from loop.exceptions import LoopError, SchemaError
from serve.client import ServeClient, _error, _plain_labels, _read_answer
from serve.exceptions import RequestError, ServeError, ServiceUnavailable
from serve.payload import encode_answer


def _response(status: int, body: bytes) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body
    return response


def test_arguments_are_checked_before_any_request():
    with pytest.raises(SchemaError, match="base_url"):
        ServeClient("localhost:8000")
    with pytest.raises(SchemaError, match="dtype"):
        ServeClient("http://x", dtype="float16")
    client = ServeClient("http://127.0.0.1:9")
    with pytest.raises(SchemaError, match="features"):
        client.route([1, 2, 3], np.zeros((2, 4)))
    with pytest.raises(SchemaError, match="labels"):
        client.route([1, 2], np.zeros((2, 4)), labels=[0])
    with pytest.raises(SchemaError, match="item_ids"):
        client.route([], np.zeros((0, 4)))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({}, "'features' argument must be given, or 'probabilities' instead.*Got neither"),
    ({"features": np.zeros((2, 4)), "probabilities": [[0.5, 0.5]] * 2}, "Got both"),
    ({"probabilities": [0.5, 0.5]}, "'probabilities' argument must be a 2-D array"),
    ({"probabilities": [[0.5, 0.5]]}, "one row per item id"),
    ({"probabilities": [[1.0], [1.0]]}, "k >= 2"),
    ({"probabilities": [[0.5, 0.5], [np.nan, 0.5]]}, r"finite numbers.*at \[1, 0\]"),
    ({"probabilities": [[0.5, 0.5], [0.5, 0.6]]}, r"rows summing to 1.*at \[1\]"),
])
def test_route_takes_features_or_checked_probabilities_before_any_request(kwargs, match):
    with pytest.raises(SchemaError, match=match):
        ServeClient("http://127.0.0.1:9").route([1, 2], **kwargs)


@pytest.mark.parametrize(("status", "kind"), [(400, RequestError), (422, RequestError), (413, RequestError),
                                              (503, ServiceUnavailable), (500, ServeError)])
def test_server_errors_become_loop_errors_with_the_servers_words(status, kind):
    body = json.dumps({"error": {"field": "labels.3", "message": "Label codes are 0 .. 9; got 12."}}).encode()
    error = _error(_response(status, body), "POST", "http://x/v1/route")
    assert type(error) is kind and isinstance(error, LoopError)
    assert (error.status, error.field, error.message) == (status, "labels.3", "Label codes are 0 .. 9; got 12.")
    assert "HTTP" in str(error) and "labels.3" in str(error)


def test_a_non_json_error_keeps_the_text():
    error = _error(_response(502, b"<html>bad gateway</html>"), "GET", "http://x/v1/health")
    assert isinstance(error, ServiceUnavailable) and "bad gateway" in error.message and error.field is None


def test_unreachable_server_is_service_unavailable():
    with pytest.raises(ServiceUnavailable, match="Cannot reach"):
        ServeClient("http://127.0.0.1:9", timeout=2).model()


@pytest.mark.parametrize("compact", [True, False])
def test_both_answer_forms_read_the_same(compact):
    frame = pd.DataFrame({ITEM: [7, 8], PREDICTED: ["a", "b"], CONFIDENCE: [0.9, 0.5],
                          LABEL_ISSUE_SCORE: [np.nan, 0.3], ROUTE: ["auto_accept", "expert"]})
    probs = np.array([[0.9, 0.1], [0.5, 0.5]])
    answer = json.loads(encode_answer(frame, probs, compact=compact, model={}, classes=["a", "b"]))
    got, got_probs = _read_answer(answer)
    pd.testing.assert_frame_equal(got[frame.columns].astype({LABEL_ISSUE_SCORE: float}), frame)
    np.testing.assert_array_equal(got_probs, probs)


def test_labels_become_json_values():
    assert _plain_labels(np.array([1.0, np.nan, 3.0]), 3) == [1, None, 3]
    assert _plain_labels(pd.Series(["cat", None], dtype=object), 2) == ["cat", None]
    assert _plain_labels(np.array([2, 0], dtype=np.int32), 2) == [2, 0]
