"""The task API end to end, through the real Serve app (Router and Scorer on the session's Ray).

Tokens guard scoring; ``POST /v1/items`` scores with the champion, routes and stores the
predictions; an annotator gets a task with the model's suggestion and answers it; an admin
changes the thresholds on the running Router; the OpenAPI document lists every 4xx.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import requests

pytest.importorskip("ray")
pytest.importorskip("mlflow")


from loop.routing import Route, RoutingThresholds, route, score_items  # noqa: E402
from loop.store import LabelStore  # noqa: E402
from serve.client import ServeClient  # noqa: E402
from serve.exceptions import RequestError  # noqa: E402
from tests.registry import digits_champion  # noqa: E402

pytestmark = pytest.mark.slow

MODEL = "digits-tasks"
STREAM = "digits"
CLASSES = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def app(ray_serve, tmp_path_factory):
    """A champion in a temp registry, a label store with a stream and tokens, the app on both."""
    from serve.local import start_local

    root = tmp_path_factory.mktemp("tasks-serve")
    uri, x, model, version = digits_champion(root, MODEL)
    store_url = f"sqlite:///{root}/labels.db"
    with LabelStore(store_url) as store:
        store.create_stream(STREAM, CLASSES, owner="lead")
        store.add_annotator("ann", streams=[STREAM])
        tokens = {"admin": store.issue_token("ops", "admin"), "client": store.issue_token("scorer", "client"),
                  "ann": store.issue_token("ann", "annotator")}
    url = start_local({"model_name": MODEL, "tracking_uri": uri, "store_url": store_url, "auth": "token",
                       "class_names": CLASSES}, port=ray_serve.port)
    return {"url": url, "store_url": store_url, "tokens": tokens, "x": x, "model": model, "version": version}


def _h(app, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {app['tokens'][who]}"}


def test_scoring_needs_a_client_or_admin_token(app):
    url, x = app["url"], app["x"][:3]
    body = {"item_ids": [1, 2, 3], "features": x.tolist()}
    missing = requests.post(url + "/v1/route", json=body, timeout=30)
    assert missing.status_code == 401 and missing.json()["error"]["field"] == "Authorization"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert requests.post(url + "/v1/route", json=body, headers=_h(app, "ann"), timeout=30).status_code == 403
    assert requests.post(url + "/v1/route", json=body, headers=_h(app, "client"), timeout=30).status_code == 200
    assert requests.get(url + "/v1/health", timeout=30).status_code == 200  # probes need no token
    assert requests.get(url + "/v1/model", timeout=30).status_code == 401
    routed = ServeClient(url, token=app["tokens"]["client"]).route([1, 2, 3], x)
    assert len(routed) == 3
    with pytest.raises(RequestError) as refused:
        ServeClient(url, token=app["tokens"]["client"]).reload()
    assert refused.value.status == 403
    assert ServeClient(url, token=app["tokens"]["admin"]).reload()["changed"] is False


def test_ingest_scores_routes_and_stores_idempotently(app):
    url, x = app["url"], app["x"][1300:1306]
    items = [{"item_id": f"d{k}", "features": row.tolist(), "payload": {"text": f"digit {k}"}}
             for k, row in enumerate(x)]
    items.append({"item_id": "p0", "probabilities": [0.5, 0.5] + [0.0] * 8})
    first = requests.post(url + "/v1/items", json={"stream": STREAM, "items": items}, headers=_h(app, "client"),
                          timeout=60)
    assert first.status_code == 200, first.text
    answers = first.json()["items"]
    assert [a["new"] for a in answers] == [True] * 7
    expected = route(score_items(app["model"].predict_proba(x), classes=CLASSES), RoutingThresholds())
    assert [a["route"] for a in answers[:6]] == expected["route"].tolist()
    assert {a["model_version"] for a in answers[:6]} == {f"{MODEL}/{app['version']}"}
    assert answers[6]["model_version"] == "caller" and answers[6]["route"] in {r.value for r in Route}
    again = requests.post(url + "/v1/items", json={"stream": STREAM, "items": items}, headers=_h(app, "client"),
                          timeout=60)
    assert [a["new"] for a in again.json()["items"]] == [False] * 7
    assert [a["route"] for a in again.json()["items"]] == [a["route"] for a in answers]
    with LabelStore(app["store_url"]) as store:
        stored = store.latest_predictions(STREAM, [f"d{k}" for k in range(6)]).set_index("item_id")
        assert len(store.known_items(STREAM, [a["item_id"] for a in answers])) == 7
    np.testing.assert_allclose(np.vstack(stored.loc[[f"d{k}" for k in range(6)], "probs"]),
                               app["model"].predict_proba(x), atol=1e-9)
    assert stored.loc["d0", "signals"]["predicted"] in CLASSES
    bad = requests.post(url + "/v1/items", json={"stream": STREAM, "items": [{"item_id": "z", "features": [1.0]}]},
                        headers=_h(app, "client"), timeout=30)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "features"
    unknown = requests.post(url + "/v1/items", json={"stream": "nope", "items": items[:1]},
                            headers=_h(app, "client"), timeout=30)
    assert unknown.status_code == 404
    assert requests.post(url + "/v1/items", json={"stream": STREAM, "items": items[:1]}, headers=_h(app, "ann"),
                         timeout=30).status_code == 403


def test_an_annotator_answers_a_task_with_the_models_suggestion(app):
    url = app["url"]
    x = app["x"][1400:1401]
    requests.post(url + "/v1/items", json={"stream": STREAM, "items": [{"item_id": "t0", "features": x[0].tolist()}]},
                  headers=_h(app, "client"), timeout=60).raise_for_status()
    made = requests.post(url + f"/v1/streams/{STREAM}/tasks", json={"tasks": [{"item_id": "t0"}]},
                         headers=_h(app, "admin"), timeout=30)
    assert made.status_code == 201, made.text
    task = requests.get(url + "/v1/tasks/next", headers=_h(app, "ann"), timeout=30).json()["task"]
    probs = app["model"].predict_proba(x)[0]
    assert task["item_id"] == "t0" and task["suggestion"]["label"] == CLASSES[int(np.argmax(probs))]
    assert task["suggestion"]["confidence"] == pytest.approx(float(probs.max()))
    answer = requests.post(url + f"/v1/tasks/{task['task_id']}/annotations", json={"label": task["suggestion"]["label"]},
                           headers={**_h(app, "ann"), "Idempotency-Key": "once"}, timeout=30)
    assert answer.status_code == 201
    retry = requests.post(url + f"/v1/tasks/{task['task_id']}/annotations", json={"label": task["suggestion"]["label"]},
                          headers={**_h(app, "ann"), "Idempotency-Key": "once"}, timeout=30)
    assert retry.status_code == 200
    assert requests.get(url + "/v1/tasks/next", headers=_h(app, "ann"), timeout=30).status_code == 204
    metrics = requests.get(url + "/metrics", headers=_h(app, "client"), timeout=30)
    assert 'labelloop_answers_per_minute{stream="digits"} 1.0' in metrics.text


def test_admin_changes_thresholds_on_the_running_router(app):
    url = app["url"]
    strict = RoutingThresholds(auto_accept_confidence=0.999, expert_margin=0.05).to_dict()
    assert requests.put(url + "/v1/thresholds", json=strict, headers=_h(app, "client"), timeout=30).status_code == 403
    bad = requests.put(url + "/v1/thresholds", json={"auto_accept_confidence": 7}, headers=_h(app, "admin"), timeout=30)
    assert bad.status_code == 422
    before = requests.get(url + "/v1/thresholds", headers=_h(app, "admin"), timeout=30).json()
    changed = requests.put(url + "/v1/thresholds", json=strict, headers=_h(app, "admin"), timeout=30)
    assert changed.status_code == 202, changed.text
    deadline = time.monotonic() + 60
    state = before
    while time.monotonic() < deadline:
        state = requests.get(url + "/v1/thresholds", headers=_h(app, "admin"), timeout=30).json()
        if state["thresholds"] == strict:
            break
        time.sleep(0.25)
    assert state["thresholds"] == strict
    assert state["replica"] == before["replica"]  # reconfigured in place, not restarted


def test_openapi_documents_auth_on_the_running_app(app):
    spec = requests.get(app["url"] + "/openapi.json", timeout=30).json()
    for path in ("/v1/tasks/next", "/v1/tasks/{task_id}/annotations", "/v1/streams", "/v1/items", "/v1/reload"):
        for operation in spec["paths"][path].values():
            assert {"401", "403"} <= set(operation["responses"])
