"""The ML backend protocol over HTTP, on Label Studio's own payloads (``payloads/``), with
the store's tokens: bearer on the webhook, bearer or HTTP Basic (the token as the password) on
``/setup`` and ``/predict``."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import requests

from loop.columns import ANNOTATOR, ITEM, LABEL
from loop.labelstudio import DELETED_ACTION

from .conftest import CLASSES, CLIENT, STREAM, Http, backend_for, basic, bearer, payload

ML_ROUTES = ("/labelstudio/setup", "/labelstudio/predict")
ROUTES = (*ML_ROUTES, "/labelstudio/webhook")


def _tasks(store, n: int = 2) -> list[int]:
    return list(store.add_tasks(STREAM, [{ITEM: f"i{k}"} for k in range(n)]).ids)


def _hook(name: str, task_ids: list[int]) -> dict:
    """A captured webhook body with its task pointing at this store's labelloop tasks."""
    body = copy.deepcopy(payload(name))
    tasks = body.get("task")
    for task in tasks if isinstance(tasks, list) else [tasks] if tasks else []:
        task["data"]["labelloop_task_ids"] = [task_ids[int(task["data"]["item_id"][1:])]]
    return body


def test_health_and_setup(backend_http):
    url, token = backend_http.url, backend_http.token
    assert requests.get(f"{url}/labelstudio/health").json() == {"status": "UP", "model_class": "labelloop"}
    answer = requests.post(f"{url}/labelstudio/setup", json=payload("ml_setup"), headers=basic("label-studio", token))
    assert answer.status_code == 200 and answer.json() == {"model_version": "sentiment@4"}


def test_predict_answers_each_task_in_label_studio_format(backend_http):
    url = backend_http.url
    body = payload("ml_predict")
    answer = requests.post(f"{url}/labelstudio/predict", json=body, headers=basic("", backend_http.token))
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == len(body["tasks"])
    for task, result in zip(body["tasks"], results):
        k = int(task["data"]["item_id"][1:])
        probs = np.array([1.0 + k, 2.0, 3.0]) / (6.0 + k)
        assert result["model_version"] == "sentiment@4"
        assert result["score"] == pytest.approx(probs.max())
        choice, reason = result["result"]
        assert choice == {"from_name": "label", "to_name": "text", "type": "choices",
                          "value": {"choices": [CLASSES[int(np.argmax(probs))]]}}
        assert reason["type"] == "textarea" and reason["from_name"] == "reason" and reason["value"]["text"][0]


def test_predict_uses_the_stored_prediction_of_an_item_without_features(backend_http, store):
    url, auth = backend_http.url, bearer(backend_http.token)
    store.add_items(STREAM, [{ITEM: "plain", "payload": {"text": "no features"}}])
    store.add_model_version("champion-3")
    store.add_predictions(STREAM, "champion-3", [{ITEM: "plain", "probs": [0.1, 0.7, 0.2], "route": "review",
                                                  "reason": "margin 0.5 under 0.6: review"}])
    task = {"id": 40, "data": {"text": "no features", "item_id": "plain"}}
    result = requests.post(f"{url}/labelstudio/predict", json={"tasks": [task]}, headers=auth).json()["results"][0]
    assert result["model_version"] == "champion-3" and result["score"] == pytest.approx(0.7)
    assert result["result"][1]["value"] == {"text": ["margin 0.5 under 0.6: review"]}


def test_predict_refuses_a_task_it_cannot_score_naming_it(backend_http):
    url, auth = backend_http.url, bearer(backend_http.token)
    answer = requests.post(f"{url}/labelstudio/predict", json={"tasks": [{"id": 5, "data": {"text": "x"}}]},
                           headers=auth)
    assert answer.status_code == 422 and "Task 5" in answer.json()["error"]["message"]


def test_created_webhook_stores_the_answer_once_and_closes_the_task(backend_http, store):
    url, auth = backend_http.url, bearer(backend_http.token)
    ids = _tasks(store)
    body = _hook("annotation_created", ids)
    first = requests.post(f"{url}/labelstudio/webhook", json=body, headers=auth)
    assert first.status_code == 201, first.text
    assert first.json()["inserted"] == 1
    again = requests.post(f"{url}/labelstudio/webhook", json=body, headers=auth)
    assert again.json()["inserted"] == 0 and again.json()["existing"] == 1
    frame = store.annotations_frame(STREAM, extras=("source",))
    assert frame[[ITEM, ANNOTATOR, LABEL, "source"]].values.tolist() == [["i0", "ann-1", 2, "label_studio"]]
    assert frame["task_id"].tolist() == [ids[0]]
    assert store.task(ids[0]).status.value == "done" and store.task(ids[1]).status.value == "open"
    events = store.events_frame(stream=STREAM)
    assert set(events.loc[events["action"] == "task.status", "actor"]) == {CLIENT}  # the token's name


def test_an_update_is_a_new_annotation_and_a_delete_an_event(backend_http, store):
    url, auth = backend_http.url, bearer(backend_http.token)
    ids = _tasks(store)
    requests.post(f"{url}/labelstudio/webhook", json=_hook("annotation_created", ids), headers=auth)
    updated = requests.post(f"{url}/labelstudio/webhook", json=_hook("annotation_updated", ids), headers=auth)
    assert updated.status_code == 201 and updated.json()["inserted"] == 1
    frame = store.annotations_frame(STREAM)
    assert frame[LABEL].tolist() == [2, 1]  # pos, then the edit to neu: both kept
    assert frame["task_id"].tolist() == [ids[0], ids[0]]
    for _ in range(2):  # a re-sent delete records nothing twice
        deleted = requests.post(f"{url}/labelstudio/webhook", json=payload("annotations_deleted"), headers=auth)
        assert deleted.status_code == 201
    events = store.events_frame(stream=STREAM)
    gone = events[events["action"] == DELETED_ACTION]
    assert sorted(gone["entity_id"]) == sorted(frame["annotation_id"])
    assert len(store.annotations_frame(STREAM)) == 2


def test_an_unknown_user_is_refused_naming_the_email(backend_http, store):
    url, auth = backend_http.url, bearer(backend_http.token)
    body = _hook("annotation_created", _tasks(store))
    body["annotation"]["completed_by"] = 9
    answer = requests.post(f"{url}/labelstudio/webhook", json=body, headers=auth)
    assert answer.status_code == 422
    assert "stranger@x.test" in answer.json()["error"]["message"]
    assert store.annotations_frame(STREAM).empty


# ----------------------------------------------------------------------------- auth

@pytest.mark.parametrize("path", ROUTES)
def test_every_label_studio_route_but_health_needs_a_valid_token(backend_http, store, path):
    url = backend_http.url
    revoked = store.issue_token("gone", "admin")
    store.revoke_token(revoked)
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": backend_http.token},
                    bearer("ll_" + "x" * 43), basic("ls", "ll_" + "x" * 43), bearer(revoked), basic("ls", revoked)):
        answer = requests.post(f"{url}{path}", json=payload("ml_setup"), headers=headers)
        assert answer.status_code == 401, (headers, answer.text)
        assert answer.json()["error"]["field"] == "Authorization"
        assert answer.headers["www-authenticate"].startswith("Bearer")
    assert store.annotations_frame(STREAM).empty
    assert requests.get(f"{url}/labelstudio/health").status_code == 200  # Label Studio validates the URL with it


@pytest.mark.parametrize("path", ROUTES)
def test_label_studio_routes_refuse_an_annotator_token_with_403(backend_http, store, path):
    token = store.issue_token("ann-1", "annotator")
    answer = requests.post(f"{backend_http.url}{path}", json=payload("ml_setup"), headers=bearer(token))
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]["field"] == "Authorization"
    if path != "/labelstudio/webhook":
        assert requests.post(f"{backend_http.url}{path}", json=payload("ml_setup"),
                             headers=basic("ann-1", token)).status_code == 403


def test_the_webhook_takes_a_bearer_token_only(backend_http, store):
    # HTTP Basic is for Label Studio's ML backend connection, which can send nothing else.
    answer = requests.post(f"{backend_http.url}/labelstudio/webhook", json=_hook("annotation_created", _tasks(store)),
                           headers=basic("ls", backend_http.token))
    assert answer.status_code == 401 and "Bearer" in answer.json()["error"]["message"]
    assert store.annotations_frame(STREAM).empty


@pytest.mark.parametrize("path", ML_ROUTES)
def test_the_ml_backend_takes_client_and_admin_tokens_as_bearer_or_basic(backend_http, store, path):
    admin = store.issue_token("ops", "admin")
    for headers in (bearer(backend_http.token), basic("", backend_http.token), basic("anyone", admin), bearer(admin)):
        answer = requests.post(f"{backend_http.url}{path}", json=payload("ml_predict"), headers=headers)
        assert answer.status_code == 200, (headers, answer.text)


def test_with_auth_none_the_ml_backend_is_open_and_the_webhook_is_not(backend_http, store):
    url = backend_http.url
    backend_http.services.auth = "none"
    for path in ML_ROUTES:
        assert requests.post(f"{url}{path}", json=payload("ml_predict")).status_code == 200
    answer = requests.post(f"{url}/labelstudio/webhook", json=_hook("annotation_created", _tasks(store)))
    assert answer.status_code == 401 and answer.json()["error"]["field"] == "Authorization"
    assert store.annotations_frame(STREAM).empty


@pytest.mark.parametrize("auth", ["token", "none"])
def test_without_a_store_the_label_studio_routes_answer_503_naming_store_url(auth):
    pytest.importorskip("ray")
    from serve.app import api
    from serve.auth import Services, get_services
    from serve.labelstudio import backend

    api.dependency_overrides[get_services] = lambda: Services(None, auth=auth)
    api.dependency_overrides[backend] = lambda: backend_for(None)
    http = Http(api)
    try:
        for path in ROUTES:
            answer = requests.post(f"{http.url}{path}", json=payload("ml_setup"), headers=bearer("ll_x"))
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["field"] == "store_url" and "store_url" in answer.json()["error"]["message"]
        assert requests.get(f"{http.url}/labelstudio/health").status_code == 200
    finally:
        http.stop()
        api.dependency_overrides.pop(get_services, None)
        api.dependency_overrides.pop(backend, None)


def test_other_actions_are_acknowledged_and_ignored(backend_http):
    url, auth = backend_http.url, bearer(backend_http.token)
    answer = requests.post(f"{url}/labelstudio/webhook", json={"action": "PROJECT_UPDATED", "project": {}},
                           headers=auth)
    assert answer.status_code == 200 and answer.json()["status"] == "ignored"


def test_a_bulk_created_webhook_stores_each_answer(backend_http, store):
    # ANNOTATIONS_CREATED (an import with annotations): 'annotation' and 'task' are lists
    # (label_studio/webhooks/models.py: many=True, nested task many=True).
    url, auth = backend_http.url, bearer(backend_http.token)
    ids = _tasks(store)
    one = payload("annotation_created")
    first, second = copy.deepcopy(one["annotation"]), copy.deepcopy(one["annotation"])
    second.update(id=2, task=2, completed_by=3, result=[{**first["result"][0], "value": {"choices": ["neg"]}}])
    tasks = [copy.deepcopy(one["task"]), copy.deepcopy(one["task"])]
    tasks[1].update(id=2, data={**tasks[1]["data"], "item_id": "i1"})
    for task, task_id in zip(tasks, ids):
        task["data"]["labelloop_task_ids"] = [task_id]
    body = {**one, "action": "ANNOTATIONS_CREATED", "annotation": [first, second], "task": tasks}
    answer = requests.post(f"{url}/labelstudio/webhook", json=body, headers=auth)
    assert answer.status_code == 201 and answer.json()["inserted"] == 2
    frame = store.annotations_frame(STREAM)
    assert frame[[ITEM, ANNOTATOR, LABEL]].values.tolist() == [["i0", "ann-1", 2], ["i1", "ann-2", 0]]
    assert frame["task_id"].tolist() == ids


# Found by the OpenAPI fuzz (tests/serve/test_openapi_fuzz.py): each was a 500 (or, for NaN, a
# model asked to score it).
@pytest.mark.parametrize("body,field", [
    ({"tasks": [1]}, "tasks.0"),
    ({"tasks": [{"id": 1, "data": "text"}]}, "tasks.0.data"),
    ({"tasks": [{"id": 1, "data": {"item_id": "i0", "features": ["1", 2.0]}}]}, "features"),
    ({"tasks": [{"id": 1, "data": {"item_id": "i0", "features": [[1.0], [2.0]]}}]}, "features"),
    ({"tasks": [{"id": 1, "data": {"item_id": "i0", "features": [True, 2.0]}}]}, "features"),
], ids=["task-not-object", "data-not-object", "features-strings", "features-nested", "features-booleans"])
def test_predict_refuses_malformed_tasks_naming_the_field(backend_http, body, field):
    url = backend_http.url
    answer = requests.post(f"{url}/labelstudio/predict", json=body, headers=bearer(backend_http.token))
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field


def test_predict_refuses_features_that_are_not_finite(backend_http):
    url = backend_http.url
    body = '{"tasks": [{"id": 1, "data": {"item_id": "i0", "features": [NaN, 1.0, 2.0]}}]}'
    answer = requests.post(f"{url}/labelstudio/predict", data=body,
                           headers={"Content-Type": "application/json", **bearer(backend_http.token)})
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "features", answer.text


@pytest.mark.parametrize("body,field", [
    ({"action": "ANNOTATION_CREATED", "annotation": [1], "task": [{"id": 1, "data": {"item_id": "i0"}}]},
     "annotation.0"),
    ({"action": "ANNOTATIONS_CREATED", "annotation": [{"id": 1, "task": [1]}, {"id": 2, "task": 2}],
      "task": [{"id": 1, "data": {"item_id": "i0"}}, {"id": 2, "data": {"item_id": "i1"}}]}, "task"),
    ({"action": "ANNOTATIONS_DELETED", "annotations": 5}, "annotations"),
], ids=["annotation-not-object", "task-id-a-list", "deleted-not-a-list"])
def test_the_webhook_refuses_malformed_payloads_naming_the_field(backend_http, body, field):
    url = backend_http.url
    answer = requests.post(f"{url}/labelstudio/webhook", json=body, headers=bearer(backend_http.token))
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field
