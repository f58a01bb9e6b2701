"""The Serve app over real HTTP, against a real MLflow registry in a temp dir.

One app deployment for the module on the session's Ray (fixture ``ray_serve``): scoring and
routing agree with ``loop`` in process, in both payload forms, from features or from the
caller's probabilities; bad requests get 4xx JSON;
thresholds change by reconfigure without a redeploy; a new champion is picked up by
``POST /v1/reload`` with no failed request in between; an app without a champion answers 503
until the alias exists and its poller loads it.
"""

from __future__ import annotations

import base64
import json
import threading
import time

import numpy as np
import pandas as pd
import pytest
import requests

pytest.importorskip("ray")
pytest.importorskip("mlflow")

from sklearn.datasets import load_digits  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from loop.calibration import CalibratedClassifier, TemperatureScaling  # noqa: E402
from loop.columns import ITEM, LABEL_ISSUE_SCORE, PRIORITY, REASON, ROUTE  # noqa: E402
from loop.routing import RoutingThresholds, route, score_items  # noqa: E402
from serve.client import ROUTE_COLUMNS, SCORE_COLUMNS, ServeClient  # noqa: E402
from serve.exceptions import RequestError, ServiceUnavailable  # noqa: E402

pytestmark = pytest.mark.slow

MODEL = "digits-test"


def _model(x: np.ndarray, y: np.ndarray, *, c: float) -> CalibratedClassifier:
    with threadpool_limits(1):  # BLAS threads on a busy 2-core machine: 0.1 s becomes 30 s
        clf = LogisticRegression(C=c, max_iter=2000).fit(x[:900], y[:900])
    scaler = TemperatureScaling().fit(clf.predict_proba(x[900:1300]), y[900:1300])
    return CalibratedClassifier(clf, scaler, n_classes=10)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return x, y


@pytest.fixture(scope="module")
def world(ray_serve, tmp_path_factory, digits):
    """A registry with version 1 as champion and the app serving it: scoring without tokens
    (``auth: none``), reloading with the admin token every ServeClient here sends
    (``$LABELLOOP_TOKEN``)."""
    import os

    from loop.store import LabelStore
    from serve.client import TOKEN_ENV_VAR
    from serve.local import start_local
    from serve.registry import publish_model

    tokens_url = f"sqlite:///{tmp_path_factory.mktemp('tokens')}/tokens.db"
    with LabelStore(tokens_url) as tokens:
        admin = tokens.issue_token("serve-tests", "admin")
    app = {"auth": "none", "store_url": tokens_url}
    before = os.environ.get(TOKEN_ENV_VAR)
    os.environ[TOKEN_ENV_VAR] = admin
    try:
        yield _world(ray_serve, tmp_path_factory, digits, app, start_local, publish_model)
    finally:
        if before is None:
            os.environ.pop(TOKEN_ENV_VAR, None)
        else:
            os.environ[TOKEN_ENV_VAR] = before


def _world(ray_serve, tmp_path_factory, digits, app, start_local, publish_model):

    x, y = digits
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    import mlflow

    mlflow.set_tracking_uri(uri)
    # Artifacts under tmp: a new experiment's default location is ./mlruns in the checkout.
    mlflow.create_experiment("serve-tests", artifact_location=str(root / "artifacts"))
    mlflow.set_experiment("serve-tests")
    v1 = _model(x, y, c=0.01)
    v2 = _model(x, y, c=1.0)
    version = publish_model(v1, model_name=MODEL, tracking_uri=uri)
    url = start_local({"model_name": MODEL, "tracking_uri": uri, **app}, port=ray_serve.port)
    assert url == ray_serve.base_url
    return {"url": url, "uri": uri, "models": {version: v1}, "next": v2, "x": x, "y": y, "app": app}


def _expected(model: CalibratedClassifier, x: np.ndarray, labels: np.ndarray | None = None,
              thresholds: RoutingThresholds | None = None) -> pd.DataFrame:
    probs = model.predict_proba(x)
    issues = None
    if labels is not None:
        issues = np.where(labels >= 0, 1.0 - probs[np.arange(len(x)), np.clip(labels, 0, None)], np.nan)
    scores = score_items(probs, label_issue_scores=issues)
    # The Router names each item's current label in its reasons.
    to_route = scores if labels is None else scores.assign(label=np.where(labels >= 0, labels, np.nan))
    return pd.concat([scores, route(to_route, thresholds or RoutingThresholds()).drop(columns=[ITEM])], axis=1)


def _champion(world) -> CalibratedClassifier:
    return world["models"][max(world["models"], key=int)]


@pytest.mark.parametrize("compact", [True, False], ids=["compact", "json"])
def test_route_matches_loop_in_process(world, compact):
    x = world["x"][1300:1500]
    labels = world["y"][1300:1500].copy()
    labels[::3] = (labels[::3] + 1) % 10  # a third of the current labels are wrong
    labels[1::7] = -1  # some items have no label yet
    ids = [f"item-{i}" for i in range(len(x))]
    got = ServeClient(world["url"], compact=compact).route(
        ids, x, labels=[None if v < 0 else int(v) for v in labels])
    want = _expected(_champion(world), x, labels)
    assert list(got.columns) == list(ROUTE_COLUMNS)
    assert got[ITEM].tolist() == ids
    assert got[ROUTE].tolist() == want[ROUTE].tolist()
    assert got[REASON].tolist() == want[REASON].tolist()
    np.testing.assert_allclose(got[PRIORITY], want[PRIORITY], atol=1e-12)
    np.testing.assert_allclose(got[LABEL_ISSUE_SCORE], want[LABEL_ISSUE_SCORE], atol=1e-12)
    assert got[LABEL_ISSUE_SCORE].isna().tolist() == (labels < 0).tolist()
    assert (got.loc[labels >= 0, ROUTE].isin(["double_blind"]).sum()
            >= 0.5 * (labels[::3] >= 0).sum())  # wrong current labels are sent to be relabelled


@pytest.mark.parametrize("compact", [True, False], ids=["compact", "json"])
def test_the_router_routes_on_the_callers_label_issue_scores(world, compact):
    x = world["x"][1300:1400]
    labels = world["y"][1300:1400]
    issues = np.random.default_rng(3).random(len(x))  # the caller's own evidence, not the model's
    ids = [f"item-{i}" for i in range(len(x))]
    got = ServeClient(world["url"], compact=compact, chunk_size=40).route(ids, x, labels=labels.tolist(),
                                                                          label_issue_scores=issues)
    probs = _champion(world).predict_proba(x)
    scores = score_items(probs, item_ids=ids, label_issue_scores=issues).assign(label=labels)
    want = route(scores, RoutingThresholds())
    assert got[ITEM].tolist() == ids
    np.testing.assert_allclose(got[LABEL_ISSUE_SCORE], issues, atol=0 if compact else 1e-15)
    assert got[ROUTE].tolist() == want[ROUTE].tolist()
    assert got[REASON].tolist() == want[REASON].tolist()
    np.testing.assert_allclose(got[PRIORITY], want[PRIORITY], atol=1e-12)
    # The model's own label-issue scores would route differently.
    own = ServeClient(world["url"], compact=compact).route(ids, x, labels=labels.tolist())
    assert own[ROUTE].tolist() != got[ROUTE].tolist()


@pytest.mark.parametrize("compact", [True, False], ids=["compact", "json"])
def test_routing_from_probabilities_matches_loop_in_process(world, compact):
    rng = np.random.default_rng(11)
    probs = rng.dirichlet(np.full(10, 0.3), size=120)  # anyone's probabilities, not the model's
    labels = rng.integers(0, 10, size=120)
    labels[::5] = -1
    issues = rng.random(120)
    ids = [f"p-{i}" for i in range(120)]
    client = ServeClient(world["url"], compact=compact, chunk_size=50)
    got = client.route(ids, probabilities=probs, labels=[None if v < 0 else int(v) for v in labels])
    own = np.where(labels >= 0, 1.0 - probs[np.arange(120), np.clip(labels, 0, None)], np.nan)
    want = route(score_items(probs, item_ids=ids, label_issue_scores=own).assign(
        label=np.where(labels >= 0, labels, np.nan)), RoutingThresholds())
    assert list(got.columns) == list(ROUTE_COLUMNS) and got[ITEM].tolist() == ids
    assert got[ROUTE].tolist() == want[ROUTE].tolist()
    assert got[REASON].tolist() == want[REASON].tolist()
    np.testing.assert_allclose(got[PRIORITY], want[PRIORITY], atol=1e-12)
    np.testing.assert_allclose(got[LABEL_ISSUE_SCORE], own, atol=1e-12)
    # The caller's label-issue scores replace the self-confidence ones, as with features.
    given = client.route(ids, probabilities=probs, label_issue_scores=issues)
    want = route(score_items(probs, item_ids=ids, label_issue_scores=issues), RoutingThresholds())
    assert given[ROUTE].tolist() == want[ROUTE].tolist()
    np.testing.assert_allclose(given[LABEL_ISSUE_SCORE], issues, atol=0)


@pytest.mark.parametrize("compact", [True, False], ids=["compact", "json"])
def test_routing_the_models_probabilities_equals_routing_its_features(world, compact):
    x = world["x"][1300:1400]
    labels = world["y"][1300:1400].tolist()
    ids = list(range(100))
    client = ServeClient(world["url"], compact=compact)
    _, probs = client.score(ids, x)
    from_features = client.route(ids, x, labels=labels)
    from_probs = client.route(ids, labels=labels, probabilities=probs)
    for column in ROUTE_COLUMNS:
        if from_features[column].dtype.kind == "f":  # two predict_proba batches: BLAS may round apart
            np.testing.assert_allclose(from_probs[column], from_features[column], rtol=1e-9, atol=1e-12)
        else:
            assert from_probs[column].tolist() == from_features[column].tolist(), column


def test_an_answer_from_probabilities_names_no_model(world):
    probs = [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]  # the app has no class_names: any k >= 2 is read as 0 .. k - 1
    answer = requests.post(world["url"] + "/v1/route", timeout=30,
                           json={"item_ids": ["a", "b"], "probabilities": probs, "return_probabilities": True})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] is None and body["classes"] == [0, 1, 2]
    assert [item["predicted"] for item in body["items"]] == [0, 2]
    assert [item["probabilities"] for item in body["items"]] == probs
    compact = requests.post(world["url"] + "/v1/route", timeout=30, json={
        "item_ids": ["a", "b"], "probabilities_b64": _b64(probs, "<f8"), "shape": [2, 3],
        "return_probabilities": True}).json()
    assert compact["model"] is None and compact["columns"]["predicted"] == [0, 2]
    p = compact["arrays"]["probabilities"]
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(p["b64"]), "<f8").reshape(p["shape"]), probs)


@pytest.mark.parametrize(("body", "field"), [
    ({"item_ids": [1, 2], "features": [[0.0] * 64] * 2, "label_issue_scores": [0.5]},
     "label_issue_scores"),
    ({"item_ids": [1, 2], "features": [[0.0] * 64] * 2, "label_issue_scores": [0.5, 1.01]}, "label_issue_scores.1"),
    (b'{"item_ids": [1], "features": [[' + b", ".join([b"0.0"] * 64) + b']], "label_issue_scores": [NaN]}',
     "label_issue_scores.0"),
    ({"item_ids": [1, 2], "features_b64": base64.b64encode(np.zeros((2, 64), "<f4").tobytes()).decode(),
      "shape": [2, 64], "label_issue_scores_b64": base64.b64encode(np.array([np.nan, 0.1], "<f8").tobytes()).decode()},
     "label_issue_scores_b64.0"),
])
def test_bad_label_issue_scores_get_422_naming_the_field(world, body, field):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = requests.post(world["url"] + "/v1/route", data=data, timeout=30,
                           headers={"Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field


def test_score_refuses_label_issue_scores(world):
    answer = requests.post(world["url"] + "/v1/score", timeout=30,
                           json={"item_ids": [1], "features": [[0.0] * 64], "label_issue_scores": [0.5]})
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["field"] == "label_issue_scores" and "/v1/route" in error["message"]


def test_score_refuses_probabilities(world):
    for body in ({"item_ids": [1], "probabilities": [[0.5, 0.5]]},
                 {"item_ids": [1], "probabilities_b64": _b64([[0.5, 0.5]], "<f8"), "shape": [1, 2]}):
        answer = requests.post(world["url"] + "/v1/score", json=body, timeout=30)
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error["field"] == "probabilities" and "/v1/route" in error["message"]


def test_score_returns_the_champion_probabilities(world):
    x = world["x"][:64]
    scores, probs = ServeClient(world["url"]).score(np.arange(64), x)
    np.testing.assert_allclose(probs, _champion(world).predict_proba(x), atol=1e-12)
    assert list(scores.columns) == list(SCORE_COLUMNS)
    assert scores[ITEM].tolist() == list(range(64))
    assert scores[LABEL_ISSUE_SCORE].isna().all()
    json_scores, json_probs = ServeClient(world["url"], compact=False).score(np.arange(64), x)
    np.testing.assert_allclose(json_probs, probs, atol=1e-12)
    pd.testing.assert_frame_equal(json_scores, scores)
    chunked_scores, chunked_probs = ServeClient(world["url"], chunk_size=10).score(np.arange(64), x)
    # 7 requests, put back in order (batched with other chunks: BLAS may round differently)
    np.testing.assert_allclose(chunked_probs, probs, rtol=1e-12, atol=1e-15)
    pd.testing.assert_frame_equal(chunked_scores, scores)


def test_compact_float32_features_and_probabilities_on_route(world):
    x = world["x"][:10]  # digits are small integers: exact in float32
    body = {"item_ids": list(range(10)), "features_b64": base64.b64encode(x.astype("<f4").tobytes()).decode(),
            "shape": [10, 64], "dtype": "float32", "return_probabilities": True}
    answer = requests.post(world["url"] + "/v1/route", json=body, timeout=30).json()
    assert set(answer["columns"]) | set(answer["arrays"]) == {*ROUTE_COLUMNS, "probabilities"}
    p = answer["arrays"]["probabilities"]
    probs = np.frombuffer(base64.b64decode(p["b64"]), dtype="<f8").reshape(p["shape"])
    np.testing.assert_allclose(probs, _champion(world).predict_proba(x), atol=1e-12)
    readable = requests.post(world["url"] + "/v1/route", timeout=30,
                             json={"item_ids": [1, 2], "features": x[:2].tolist()}).json()
    assert set(readable["items"][0]) == set(ROUTE_COLUMNS)  # no probabilities unless asked
    assert readable["classes"] == list(range(10))
    assert readable["model"]["name"] == MODEL


def test_health_model_and_thresholds(world):
    client = ServeClient(world["url"])
    assert client.health()["status"] == "ok"
    info = client.model()
    champion = _champion(world)
    assert info["name"] == MODEL and info["alias"] == "champion"
    assert info["version"] == max(world["models"], key=int)
    assert info["temperature"] == pytest.approx(champion.temperature_)
    assert info["n_features"] == 64 and info["classes"] == list(range(10))
    assert client.thresholds()["thresholds"] == RoutingThresholds().to_dict()


def _b64(x: np.ndarray, dtype: str = "<f4") -> str:
    return base64.b64encode(np.asarray(x, dtype=dtype).tobytes()).decode()


ROW = [0.0] * 64
BAD_REQUESTS = {
    "not json": (b'{"item_ids": [1], "features": [[0', 400, "body"),
    "not an object": (b"[1, 2]", 422, "body"),
    "empty batch": ({"item_ids": [], "features": []}, 422, "item_ids"),
    "wrong feature count": ({"item_ids": [1], "features": [[1.0, 2.0]]}, 422, "features"),
    "NaN feature": (b'{"item_ids": [1], "features": [[NaN' + b", 0.0" * 63 + b"]]}", 422, "features.0.0"),
    "inf in compact": ({"item_ids": [1], "features_b64": _b64([np.inf] + ROW[1:]), "shape": [1, 64]},
                       422, "features_b64"),
    "text feature": ({"item_ids": [1], "features": [["a"] + ROW[1:]]}, 400, "features.0.0"),
    "ragged rows": ({"item_ids": [1, 2], "features": [ROW, ROW[:10]]}, 422, "features"),
    "rows and ids differ": ({"item_ids": [1, 2], "features": [ROW]}, 422, "features"),
    "unknown field": ({"item_ids": [1], "features": [ROW], "colour": "red"}, 422, "colour"),
    "bad base64": ({"item_ids": [1], "features_b64": "***", "shape": [1, 64]}, 400, "features_b64"),
    "bytes do not fit shape": ({"item_ids": [1], "features_b64": _b64(ROW), "shape": [1, 64],
                                "dtype": "float64"}, 422, "features_b64"),
    "shape missing": ({"item_ids": [1], "features_b64": _b64(ROW)}, 422, "shape"),
    "both forms": ({"item_ids": [1], "features": [ROW], "features_b64": _b64(ROW), "shape": [1, 64]},
                   422, "features"),
    "no features": ({"item_ids": [1]}, 422, "features"),
    "duplicate ids": ({"item_ids": [1, 1], "features": [ROW, ROW]}, 422, "item_ids"),
    "float id": ({"item_ids": [1.5], "features": [ROW]}, 422, "item_ids.0"),
    "label out of range": ({"item_ids": [1, 2], "features": [ROW, ROW], "labels": [0, 10]}, 422, "labels.1"),
    "negative label": ({"item_ids": [1], "features": [ROW], "labels": [-1]}, 422, "labels.0"),
    "unknown label name": ({"item_ids": [1], "features": [ROW], "labels": ["cat"]}, 422, "labels.0"),
    "labels and ids differ": ({"item_ids": [1, 2], "features": [ROW, ROW], "labels": [0]}, 422, "labels"),
    "bad dtype": ({"item_ids": [1], "features_b64": _b64(ROW), "shape": [1, 64], "dtype": "int8"},
                  422, "dtype"),
}


HALF = [0.5, 0.5]
BAD_PROBABILITIES = {
    "ragged rows": ({"item_ids": [1, 2], "probabilities": [HALF, [1.0]]}, 422, "probabilities"),
    "rows and ids differ": ({"item_ids": [1, 2], "probabilities": [HALF]}, 422, "probabilities"),
    "one class": ({"item_ids": [1], "probabilities": [[1.0]]}, 422, "probabilities"),
    "NaN": (b'{"item_ids": [1], "probabilities": [[0.5, NaN]]}', 422, "probabilities.0.1"),
    "NaN in compact": ({"item_ids": [1, 2], "probabilities_b64": _b64([HALF, [np.nan, 0.5]], "<f8"),
                        "shape": [2, 2]}, 422, "probabilities_b64.1.0"),
    "outside [0, 1]": ({"item_ids": [1], "probabilities": [[1.5, -0.5]]}, 422, "probabilities.0.0"),
    "row not summing to 1": ({"item_ids": [1, 2], "probabilities": [HALF, [0.3, 0.3]]}, 422, "probabilities.1"),
    "compact row not summing to 1": ({"item_ids": [1], "probabilities_b64": _b64([[0.5, 0.5 + 1e-3]], "<f8"),
                                      "shape": [1, 2]}, 422, "probabilities_b64.0"),
    "bytes do not fit shape": ({"item_ids": [1], "probabilities_b64": _b64(HALF, "<f8"), "shape": [1, 3]},
                               422, "probabilities_b64"),
    "shape missing": ({"item_ids": [1], "probabilities_b64": _b64(HALF, "<f8")}, 422, "shape"),
    "float32 dtype": ({"item_ids": [1], "probabilities_b64": _b64(HALF), "shape": [1, 2], "dtype": "float32"},
                      422, "dtype"),
    "label beyond k": ({"item_ids": [1], "probabilities": [HALF], "labels": [2]}, 422, "labels.0"),
    "features too": ({"item_ids": [1], "features": [ROW], "probabilities": [HALF]}, 422, "probabilities"),
    "compact features too": ({"item_ids": [1], "features_b64": _b64(ROW), "shape": [1, 64],
                              "probabilities": [HALF]}, 422, "probabilities"),
    "both forms": ({"item_ids": [1], "probabilities": [HALF], "probabilities_b64": _b64(HALF, "<f8"),
                    "shape": [1, 2]}, 422, "probabilities"),
}


@pytest.mark.parametrize("case", sorted(BAD_PROBABILITIES))
def test_bad_probabilities_get_4xx_json_naming_the_field(world, case):
    body, status, field = BAD_PROBABILITIES[case]
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = requests.post(world["url"] + "/v1/route", data=data, timeout=30,
                           headers={"Content-Type": "application/json"})
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["field"] == field
    assert isinstance(error["message"], str) and len(error["message"]) > 10


@pytest.mark.parametrize("path", ["/v1/score", "/v1/route"])
@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_get_4xx_json(world, path, case):
    body, status, field = BAD_REQUESTS[case]
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = requests.post(world["url"] + path, data=data, timeout=30,
                           headers={"Content-Type": "application/json"})
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["field"] == field
    assert isinstance(error["message"], str) and len(error["message"]) > 10


def test_openapi_documents_the_endpoints(world):
    spec = requests.get(world["url"] + "/openapi.json", timeout=30).json()
    assert {"/v1/score", "/v1/route", "/v1/health", "/v1/model", "/v1/thresholds", "/v1/reload"} <= set(spec["paths"])
    body = spec["paths"]["/v1/route"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"item_ids", "features", "features_b64", "probabilities", "probabilities_b64",
            "labels"} <= set(body["properties"])


def test_unknown_path_and_method_are_json(world):
    missing = requests.get(world["url"] + "/v1/nope", timeout=30)
    assert missing.status_code == 404 and "error" in missing.json()
    wrong = requests.get(world["url"] + "/v1/route", timeout=30)
    assert wrong.status_code == 405 and "error" in wrong.json()


def test_client_raises_the_server_error(world):
    client = ServeClient(world["url"])
    with pytest.raises(RequestError) as caught:
        client.route([1, 2], np.zeros((2, 5)))
    assert caught.value.status == 422 and caught.value.field == "features"
    assert "64 features" in caught.value.message
    with pytest.raises(ServiceUnavailable):
        ServeClient("http://127.0.0.1:9", timeout=2).health()


def test_reconfigure_changes_routes_without_redeploy(world, tmp_path):
    from serve.config import write_serve_config
    from serve.local import deploy_config, start_local

    client = ServeClient(world["url"])
    x = world["x"][1300:1400]
    before = client.route(np.arange(100), x)
    replicas = client.thresholds()["replica"], client.model()["loaded_at"]
    strict = RoutingThresholds(auto_accept_confidence=0.999999, expert_margin=0.0)
    path = write_serve_config(tmp_path / "serve.yaml", thresholds=strict,
                              app_args={"model_name": MODEL, "tracking_uri": world["uri"], **world["app"]})
    try:
        assert deploy_config(path) == world["url"]  # what `serve deploy serve.yaml` does
        after = client.route(np.arange(100), x)
        state = client.thresholds()
        assert state["thresholds"] == strict.to_dict()
        assert (state["replica"], client.model()["loaded_at"]) == replicas  # the same replicas
        assert (before[ROUTE] == "auto_accept").sum() > 10
        assert (after[ROUTE] == "auto_accept").sum() < (before[ROUTE] == "auto_accept").sum()
        assert after[ROUTE].tolist() == _expected(_champion(world), x, thresholds=strict)[ROUTE].tolist()
    finally:
        start_local({"model_name": MODEL, "tracking_uri": world["uri"], **world["app"]})
    assert client.thresholds()["thresholds"] == RoutingThresholds().to_dict()
    assert (client.thresholds()["replica"], client.model()["loaded_at"]) == replicas


def test_new_champion_after_reload_without_failed_requests(world):
    from serve.registry import publish_model

    url, x = world["url"], world["x"][:32]
    body = json.dumps({"item_ids": list(range(32)), "features": x.tolist()}).encode()
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def hammer() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                answer = session.post(url + "/v1/route", data=body, timeout=30, headers={"Content-Type": "application/json"})
                version = answer.json()["model"]["version"] if answer.ok else None
                seen.append((answer.status_code, version))

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        time.sleep(0.5)
        old = ServeClient(url).model()["version"]
        new = publish_model(world["next"], model_name=MODEL, tracking_uri=world["uri"])
        world["models"][new] = world["next"]
        reloaded = ServeClient(url).reload()
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join()
    assert reloaded["changed"] and reloaded["version"] == new and reloaded["previous_version"] == old
    assert len(seen) > 10
    assert all(status == 200 for status, _ in seen), [s for s in seen if s[0] != 200][:3]
    versions = [v for _, v in seen]
    switch = versions.index(new)
    assert set(versions[:switch]) == {old} and set(versions[switch:]) == {new}  # one switch, no flapping
    assert ServeClient(url).reload()["changed"] is False
    _, probs = ServeClient(url).score(np.arange(32), x)
    np.testing.assert_allclose(probs, world["next"].predict_proba(x), atol=1e-12)


def test_a_pickled_version_is_refused_and_the_served_one_stays(world):
    """The Scorer loads through serve.registry.load_model: a flavour that unpickles is refused
    unless the app's args allow it, and the version it serves keeps serving."""
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient

    client = ServeClient(world["url"])
    served = client.model()["version"]
    mlflow.set_tracking_uri(world["uri"])
    mlflow.set_registry_uri(world["uri"])
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(world["next"], name="model", serialization_format="cloudpickle",
                                        pyfunc_predict_fn="predict_proba", registered_model_name=MODEL)
    registry = MlflowClient(tracking_uri=world["uri"], registry_uri=world["uri"])
    registry.set_registered_model_alias(MODEL, "champion", str(info.registered_model_version))
    try:
        with pytest.raises(ServiceUnavailable, match=r"flavour sklearn \(cloudpickle\).*set allow_pickle: true"):
            client.reload()
        assert client.model()["version"] == served
    finally:
        registry.set_registered_model_alias(MODEL, "champion", served)


def test_app_without_champion_answers_503_until_the_alias_exists(world):
    """Runs last in this module: it redeploys the app on an alias that does not exist yet."""
    from mlflow import MlflowClient

    from serve.local import start_local

    url = start_local({"model_name": MODEL, "tracking_uri": world["uri"], "alias": "staging", **world["app"],
                       "refresh_seconds": 0.5})
    client = ServeClient(url)
    assert client.health()["status"] == "no_model"
    with pytest.raises(ServiceUnavailable) as caught:
        client.route([1], world["x"][:1])
    assert caught.value.status == 503 and caught.value.field == "model"
    MlflowClient(world["uri"]).set_registered_model_alias(MODEL, "staging", "1")
    deadline = time.monotonic() + 20
    while client.health()["status"] != "ok" and time.monotonic() < deadline:
        time.sleep(0.25)
    assert client.model()["version"] == "1" and client.model()["alias"] == "staging"
    assert len(client.route([1, 2], world["x"][:2])) == 2

