"""The ML backend inside the deployed Serve app: the Router answers /labelstudio/* with the champion."""

from __future__ import annotations

import numpy as np
import pytest
import requests

pytest.importorskip("ray")
pytest.importorskip("mlflow")

from loop.columns import ITEM  # noqa: E402

from .conftest import CLIENT, STREAM, basic, bearer  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(ray_serve, tmp_path_factory):
    import mlflow
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from serve.local import start_local
    from serve.registry import publish_model

    root = tmp_path_factory.mktemp("ls-serve")
    uri = f"sqlite:///{root}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("ls-serve", artifact_location=str(root / "artifacts"))
    mlflow.set_experiment("ls-serve")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 3))
    y = np.repeat([0, 1, 2], 30)
    x[np.arange(90), y] += 3.0
    with threadpool_limits(1):
        model = LogisticRegression(max_iter=500).fit(x, y)
    version = publish_model(model, model_name="ls-sentiment", tracking_uri=uri)
    store_url = f"sqlite:///{root}/labels.db"
    from loop.store import LabelStore

    store = LabelStore(store_url)
    store.create_stream(STREAM, ("neg", "neu", "pos"))
    store.add_items(STREAM, [{ITEM: "i0", "payload": {"text": "great", "features": [0.0, 0.0, 4.0]}}])
    token = store.issue_token(CLIENT, "client")
    store.add_annotator("ann", streams=[STREAM])
    annotator = store.issue_token("ann", "annotator")
    url = start_local({"model_name": "ls-sentiment", "tracking_uri": uri, "class_names": ["neg", "neu", "pos"],
                       "store_url": store_url, "label_studio": {"stream": STREAM}}, port=ray_serve.port)
    yield {"url": url, "version": version, "token": token, "annotator": annotator}
    store.close()


def test_the_router_serves_the_ml_backend(app):
    base = f"{app['url']}/labelstudio"
    auth = basic(CLIENT, app["token"])  # as Label Studio's ML backend connection sends it
    assert requests.get(f"{base}/health").json()["status"] == "UP"
    assert requests.post(f"{base}/setup", json={"project": "1.1"}, headers=auth).json() == {
        "model_version": f"ls-sentiment@{app['version']}"}
    tasks = [{"id": 1, "data": {"item_id": "i0", "text": "great"}},
             {"id": 2, "data": {"text": "inline", "features": [4.0, 0.0, 0.0]}}]
    results = requests.post(f"{base}/predict", json={"tasks": tasks}, headers=auth).json()["results"]
    assert [r["result"][0]["value"]["choices"] for r in results] == [["pos"], ["neg"]]
    assert all(r["model_version"] == f"ls-sentiment@{app['version']}" and 0 < r["score"] <= 1 for r in results)
    assert all(r["result"][1]["value"]["text"][0] for r in results)  # the route's reason


def test_the_routers_label_studio_routes_check_tokens_in_its_store(app):
    # The Router's own store (store_url) checks them: no second store, no environment token.
    base = f"{app['url']}/labelstudio"
    for path in ("setup", "predict", "webhook"):
        answer = requests.post(f"{base}/{path}", json={"tasks": []})
        assert answer.status_code == 401 and answer.json()["error"]["field"] == "Authorization"
        assert requests.post(f"{base}/{path}", json={"tasks": []}, headers=bearer(app["annotator"])).status_code == 403
    ignored = requests.post(f"{base}/webhook", json={"action": "PROJECT_UPDATED"}, headers=bearer(app["token"]))
    assert ignored.status_code == 200 and ignored.json()["status"] == "ignored"
