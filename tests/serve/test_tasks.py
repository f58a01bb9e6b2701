"""The task API over HTTP, on SQLite and PostgreSQL, without Serve: nothing here needs a Scorer.

The app's own FastAPI object (``serve.app.api``: its routes, auth dependencies and error
handlers) answers in process (``asgi_client``, an ASGI caller); the one seam is FastAPI's dependency
override of :func:`serve.auth.get_services` (in Serve, the Router replica's store), given a
real store here. Ingest and scoring, which need the Scorer, are tested through the real Serve
app in ``test_tasks_serve.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("ray")

from loop.store import LabelStore  # noqa: E402
from serve.app import api  # noqa: E402
from serve.auth import Services, TokenCache, get_services  # noqa: E402
from serve.tasks import router  # noqa: E402
from tests.store.conftest import pg_server, pg_url, store_url  # noqa: E402,F401 - fixtures

from .asgi_client import AsgiClient  # noqa: E402

STREAM = "sentiment"
GUIDELINE = "# Sentiment\nThe review's overall sentiment.\n\n## neg vs pos\nSarcasm is neg.\n\n## neu\nNo opinion.\n"


@pytest.fixture
def store(store_url) -> Iterator[LabelStore]:  # noqa: F811
    with LabelStore(store_url) as s:
        yield s


@pytest.fixture
def http(store) -> Iterator[AsgiClient]:
    services = Services(store, auth="token", task_sla_hours=2.0)
    api.dependency_overrides[get_services] = lambda: services
    try:
        yield AsgiClient(api)
    finally:
        api.dependency_overrides.pop(get_services, None)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def team(store, http) -> dict:
    """An admin sets up a stream, three annotators (an expert), tokens and a guideline over
    HTTP; items and a model's predictions are in the store."""
    admin = store.issue_token("ops", "admin")
    h = _auth(admin)
    assert http.post("/v1/streams", headers=h, json={"name": STREAM, "classes": ["neg", "neu", "pos"],
                                                      "owner": "lead"}).status_code == 201
    tokens = {}
    for name, tier in (("ann", 1), ("bob", 1), ("eve", 3)):
        answer = http.post("/v1/annotators", headers=h, json={"name": name, "tier": tier, "streams": [STREAM],
                                                                "email": f"{name}@example.com"})
        assert answer.status_code == 201, answer.text
        issued = http.post(f"/v1/annotators/{name}/tokens", headers=h)
        assert issued.status_code == 201 and issued.json()["token"].startswith("ll_")
        tokens[name] = issued.json()["token"]
    draft = http.post(f"/v1/streams/{STREAM}/guidelines", headers=h, json={"text": GUIDELINE})
    assert draft.status_code == 201 and draft.json()["guideline"]["published_at"] is None
    version = draft.json()["guideline"]["version"]
    assert http.post(f"/v1/streams/{STREAM}/guidelines/{version}/publish", headers=h).status_code == 200
    store.add_items(STREAM, [{"item_id": f"i{k}", "payload": {"text": f"review {k}", "features": [float(k)]}}
                             for k in range(8)])
    store.add_model_version("m1")
    store.add_predictions(STREAM, "m1", [{"item_id": f"i{k}", "probs": [0.35, 0.05, 0.6], "route": "review",
                                          "reason": "low margin"} for k in range(8)])
    lead = store.issue_token("lead", "client")
    client = store.issue_token("scorer", "client")
    return {"admin": admin, "lead": lead, "client": client, **tokens}


def _tasks(http, team, rows, **extra) -> list[int]:
    answer = http.post(f"/v1/streams/{STREAM}/tasks", headers=_auth(team["admin"]), json={"tasks": rows, **extra})
    assert answer.status_code == 201, answer.text
    return answer.json()["task_ids"]


# ----------------------------------------------------------------------------- auth on every route

def _routes() -> list[tuple[str, str]]:
    out = []
    for r in router.routes:
        for method in r.methods:
            out.append((method, re.sub(r"\{[^}]+\}", lambda m: "1" if "id" in m.group(0) or "version" in m.group(0)
                                       else "x", r.path)))
    return sorted(out)


ANNOTATOR_ROUTES = {"/v1/tasks/next", "/v1/tasks/1", "/v1/tasks", "/v1/tasks/1/annotations", "/v1/items/1/disputes",
                    "/v1/queue/escalated", "/metrics"}


@pytest.mark.parametrize("method,path", _routes())
def test_every_task_and_admin_route_needs_a_valid_token(http, store, method, path):
    for headers in ({}, {"Authorization": "Basic abc"}, _auth("ll_" + "x" * 43)):
        answer = http.request(method, path, headers=headers, json={})
        assert answer.status_code == 401, (headers, answer.text)
        assert answer.json()["error"]["field"] == "Authorization"
        assert answer.headers["www-authenticate"].startswith("Bearer")
    revoked = store.issue_token("gone", "admin")
    store.revoke_token(revoked)
    assert http.request(method, path, headers=_auth(revoked), json={}).status_code == 401


@pytest.mark.parametrize("method,path", [r for r in _routes() if r[1] not in ANNOTATOR_ROUTES])
def test_admin_routes_refuse_other_roles_with_403(http, store, method, path):
    store.create_stream("s", ["a", "b"])
    store.add_annotator("ann", streams=["s"])
    for token in (store.issue_token("ann", "annotator"), store.issue_token("svc", "client")):
        answer = http.request(method, path, headers=_auth(token), json={})
        assert answer.status_code == 403, answer.text
        assert "error" in answer.json()


def test_annotator_routes_refuse_a_client_token(http, team):
    for method, path in (("GET", "/v1/tasks/next"), ("GET", "/v1/tasks"), ("POST", "/v1/tasks/1/annotations")):
        assert http.request(method, path, headers=_auth(team["client"]), json={"label": "pos"}).status_code == 403


def test_openapi_documents_401_403_and_4xx_on_every_task_and_admin_route(http):
    spec = http.get("/openapi.json").json()
    for method, path in ((m, r.path) for r in router.routes for m in r.methods):
        documented = spec["paths"][path][method.lower()]["responses"]
        assert {"401", "403"} <= set(documented), (method, path)
        assert any(code.startswith("4") and code not in ("401", "403") for code in documented) or path == "/metrics"
    for path in ("/v1/score", "/v1/route", "/v1/reload", "/v1/items"):
        assert {"401", "403"} <= set(next(iter(spec["paths"][path].values()))["responses"])
    assert {"401", "403"} <= set(spec["paths"]["/v1/thresholds"]["put"]["responses"])


# ----------------------------------------------------------------------------- the flow

def test_next_answer_retry_and_the_task_json(http, team):
    [task_id] = _tasks(http, team, [{"item_id": "i0"}])
    got = http.get("/v1/tasks/next", headers=_auth(team["ann"]))
    assert got.status_code == 200
    task = got.json()["task"]
    assert set(task) == {"task_id", "stream", "item_id", "kind", "blind", "tier", "due_at", "classes", "item",
                         "guideline", "suggestion", "examples"}
    assert (task["task_id"], task["item_id"], task["kind"], task["blind"]) == (task_id, "i0", "label", False)
    assert task["classes"] == ["neg", "neu", "pos"] and task["due_at"] is not None
    assert task["item"] == {"display": "review 0", "payload": {"text": "review 0", "features": [0.0]}}
    assert task["guideline"]["version"] == 1 and task["guideline"]["section"].startswith("## neg vs pos")
    assert task["suggestion"] == {"label": "pos", "confidence": 0.6, "route": "review", "reason": "low margin",
                                  "confused_pair": ["pos", "neg"]}
    assert set(task["examples"]) == {"pos", "neg"}
    body = {"label": "neg", "rationale": "sarcasm", "seconds": 4.5, "flags": ["model_wrong"]}
    key = {"Idempotency-Key": "k-1", **_auth(team["ann"])}
    first = http.post(f"/v1/tasks/{task_id}/annotations", headers=key, json=body)
    assert first.status_code == 201 and first.json()["created"] is True
    assert first.json()["annotation"]["label"] == "neg" and first.json()["annotation"]["flags"] == ["model_wrong"]
    retry = http.post(f"/v1/tasks/{task_id}/annotations", headers=key, json=body)
    assert retry.status_code == 200 and retry.json()["annotation"] == first.json()["annotation"]
    other = http.post(f"/v1/tasks/{task_id}/annotations", headers=key, json={**body, "label": "pos"})
    assert other.status_code == 409 and other.json()["error"]["message"]
    assert http.get("/v1/tasks/next", headers=_auth(team["ann"])).status_code == 204
    mine = http.get("/v1/tasks?status=done", headers=_auth(team["ann"])).json()["tasks"]
    assert [t["task_id"] for t in mine] == [task_id]


def test_bad_answers_get_422_naming_the_field(http, team):
    [task_id] = _tasks(http, team, [{"item_id": "i0"}])
    http.get("/v1/tasks/next", headers=_auth(team["ann"]))
    for body, field in (({"label": "bogus"}, "label"), ({"label": "pos", "flags": ["bored"]}, "flags"),
                        ({"label": "pos", "seconds": -1}, "seconds"), ({}, "label")):
        answer = http.post(f"/v1/tasks/{task_id}/annotations", headers=_auth(team["ann"]), json=body)
        assert answer.status_code == 422, answer.text
        assert field in answer.json()["error"]["field"]


def test_an_annotator_cannot_see_or_answer_anothers_task(http, team):
    [task_id] = _tasks(http, team, [{"item_id": "i0"}])
    assert http.get("/v1/tasks/next", headers=_auth(team["ann"])).json()["task"]["task_id"] == task_id
    assert http.get(f"/v1/tasks/{task_id}", headers=_auth(team["bob"])).status_code == 403
    answer = http.post(f"/v1/tasks/{task_id}/annotations", headers=_auth(team["bob"]), json={"label": "pos"})
    assert answer.status_code == 403 and answer.json()["error"]["message"]
    assert http.get("/v1/tasks", headers=_auth(team["bob"])).json()["tasks"] == []
    assert http.get(f"/v1/tasks/{task_id}", headers=_auth(team["ann"])).status_code == 200
    assert len(http.get("/v1/tasks", headers=_auth(team["admin"])).json()["tasks"]) == 1
    assert http.get("/v1/tasks/999", headers=_auth(team["ann"])).status_code == 404


def test_expert_tasks_go_to_tier_2_only(http, team):
    _tasks(http, team, [{"item_id": "i1", "kind": "expert", "tier": 3}])
    assert http.get("/v1/tasks/next", headers=_auth(team["ann"])).status_code == 204
    assert http.get("/v1/tasks/next", headers=_auth(team["eve"])).json()["task"]["kind"] == "expert"


def test_never_an_item_the_caller_labelled(http, team, store):
    store.add_annotations(STREAM, [{"item_id": "i2", "annotator_id": "ann", "label": "pos"}])
    _tasks(http, team, [{"item_id": "i2"}])
    assert http.get("/v1/tasks/next", headers=_auth(team["ann"])).status_code == 204
    assert http.get("/v1/tasks/next", headers=_auth(team["bob"])).json()["task"]["item_id"] == "i2"


def test_a_blind_task_shows_nothing_that_depends_on_others_or_the_model(http, team, store):
    _tasks(http, team, [{"item_id": "i3", "kind": "double_blind"}, {"item_id": "i3", "kind": "double_blind",
                                                                    "idempotency_key": "second"}])
    first = http.get("/v1/tasks/next", headers=_auth(team["ann"])).json()["task"]
    assert first["blind"] and first["suggestion"] is None and first["examples"] is None
    assert first["guideline"]["section"] == GUIDELINE
    second = http.get("/v1/tasks/next", headers=_auth(team["bob"])).json()["task"]
    http.post(f"/v1/tasks/{second['task_id']}/annotations", headers=_auth(team["bob"]), json={"label": "neu"})
    store.add_model_version("m2")
    store.add_predictions(STREAM, "m2", [{"item_id": "i3", "probs": [0.9, 0.05, 0.05]}])
    store.resolve(STREAM, "i3", "neu", method="consensus")
    again = http.get(f"/v1/tasks/{first['task_id']}", headers=_auth(team["ann"])).json()["task"]
    assert again == first
    assert "neu" not in str(again["item"]) and "m2" not in str(again)


def test_a_dispute_goes_to_adjudication_and_supersedes(http, team, store):
    store.resolve(STREAM, "i4", "pos", method="consensus")
    filed = http.post(f"/v1/items/i4/disputes?stream={STREAM}", headers=_auth(team["ann"]),
                      json={"target": "resolution", "reason": "sarcasm", "label": "neg"})
    assert filed.status_code == 201, filed.text
    dispute = filed.json()["dispute"]
    assert dispute["status"] == "open" and dispute["label"] == "neg"
    assert http.get("/v1/tasks/next", headers=_auth(team["bob"])).status_code == 204  # tier 1
    task = http.get("/v1/tasks/next", headers=_auth(team["eve"])).json()["task"]
    assert task["task_id"] == dispute["adjudication_task_id"] and task["kind"] == "adjudication"
    assert task["suggestion"] is None and task["examples"] is None
    done = http.post(f"/v1/tasks/{task['task_id']}/annotations", headers=_auth(team["eve"]), json={"label": "neg"})
    assert done.status_code == 201
    current = store.resolved_labels(STREAM).set_index("item_id").loc["i4"]
    assert (current["label"], current["method"]) == (0, "adjudicated")
    assert store.disputes_frame(STREAM)["status"].tolist() == ["resolved"]
    missing = http.post(f"/v1/items/nope/disputes?stream={STREAM}", headers=_auth(team["ann"]),
                        json={"target": "suggestion", "reason": "x"})
    assert missing.status_code == 404
    bad = http.post(f"/v1/items/i5/disputes?stream={STREAM}", headers=_auth(team["ann"]),
                    json={"target": "resolution", "reason": "x"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "target"


def test_the_owner_reads_the_escalated_queue(http, team, store):
    _tasks(http, team, [{"item_id": "i5", "due_at": "2020-01-01T00:00:00Z"}])
    queue = http.get(f"/v1/queue/escalated?stream={STREAM}", headers=_auth(team["lead"]))
    assert queue.status_code == 200
    assert [(q["entity"], q["item_id"]) for q in queue.json()["queue"]] == [("task", "i5")]
    assert http.get(f"/v1/queue/escalated?stream={STREAM}", headers=_auth(team["ann"])).status_code == 403
    assert http.get(f"/v1/queue/escalated?stream={STREAM}", headers=_auth(team["admin"])).status_code == 200
    metrics = http.get("/metrics", headers=_auth(team["client"]))
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'labelloop_queue_depth{status="open",stream="sentiment",tier="1"} 1.0' in text
    assert 'labelloop_sla_breaches_total{entity="task",stream="sentiment"} 1.0' in text
    assert "labelloop_task_oldest_age_seconds" in text and "labelloop_answers_per_minute" in text


def test_admin_manages_annotators_and_tokens(http, team, store):
    h = _auth(team["admin"])
    patched = http.patch("/v1/annotators/bob", headers=h, json={"tier": 2, "email": "Bob@Example.org"})
    assert patched.status_code == 200 and patched.json()["annotator"]["tier"] == 2
    assert patched.json()["annotator"]["email"] == "bob@example.org"
    assert http.patch("/v1/annotators/nobody", headers=h, json={"tier": 2}).status_code == 404
    assert http.patch("/v1/annotators/ann", headers=h, json={"email": "bob@example.org"}).status_code == 409
    listed = http.get("/v1/tokens", headers=h).json()["tokens"]
    assert all("hash" not in k for t in listed for k in t) and all(t["prefix"].startswith("ll_") for t in listed)
    prefix = next(t["prefix"] for t in listed if t["annotator"] == "bob")
    assert http.delete(f"/v1/tokens/{prefix}", headers=h).status_code == 200
    assert http.get("/v1/tasks", headers=_auth(team["bob"])).status_code == 401
    issued = http.post("/v1/tokens", headers=h, json={"name": "ci", "role": "client"})
    assert issued.status_code == 201 and store.authenticate(issued.json()["token"]).role.value == "client"
    assert {a["name"] for a in http.get("/v1/annotators", headers=h).json()["annotators"]} == {"ann", "bob", "eve"}
    assert [s["name"] for s in http.get("/v1/streams", headers=h).json()["streams"]] == [STREAM]
    assert http.get(f"/v1/streams/{STREAM}/guidelines/1", headers=h).json()["guideline"]["text"] == GUIDELINE
    assert http.get(f"/v1/streams/{STREAM}/guidelines/9", headers=h).status_code == 404
    assert http.post("/v1/streams", headers=h, json={"name": "x", "classes": ["a"]}).status_code == 422


# ----------------------------------------------------------------------------- malformed requests
# Found by the OpenAPI fuzz (test_openapi_fuzz.py): each was a 500, an undocumented status or
# a different error on SQLite and PostgreSQL.

def test_openapi_documents_the_edges_415_and_400_on_every_body_operation(http):
    spec = http.get("/openapi.json").json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method in ("post", "put", "patch"):
                assert "415" in operation["responses"], (method, path)  # JsonApiGuard, before any route
                assert "requestBody" not in operation or "400" in operation["responses"], (method, path)
    for path in ("/labelstudio/setup", "/labelstudio/predict", "/labelstudio/webhook"):
        assert {"404", "415", "422"} <= set(spec["paths"][path]["post"]["responses"]), path
    assert {"401", "409"} <= set(spec["paths"]["/labelstudio/webhook"]["post"]["responses"])


def test_a_body_that_is_not_utf8_is_400_naming_the_body(http, team):
    answer = http.request("POST", "/v1/streams", headers=_auth(team["admin"]), content=b"{\"name\": \"\xff\"}")
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "body", answer.text


@pytest.mark.parametrize("who,method,path,body,status,field", [
    ("ann", "POST", f"/v1/tasks/{10**20}/annotations", {"label": "pos"}, 422, "task_id"),
    ("admin", "PATCH", "/v1/annotators/bob", {"tier": 2**40}, 422, "tier"),
    ("ann", "POST", f"/v1/items/i0%00/disputes?stream={STREAM}", {"target": "suggestion", "reason": "x"}, 422,
     "item_id"),
    ("admin", "DELETE", "/v1/tokens/99999999999999999999", None, 404, "token"),
    ("admin", "DELETE", "/v1/tokens/%C2%B2", None, 422, "token"),
    ("admin", "DELETE", "/v1/tokens/ll_%00%00%00%00%00%00%00", None, 422, "token"),
    ("ann", "POST", "/v1/tasks/1/annotations", {"label": "pos", "idempotency_key": "k\x00"}, 422, "idempotency_key"),
    ("ann", "POST", f"/v1/items/i0/disputes?stream={STREAM}",
     {"target": "suggestion", "reason": "x", "idempotency_key": "k\x00"}, 422, "idempotency_key"),
    ("admin", "POST", "/v1/annotators/ann/tokens", {"expires_at": "9999-12-31T23:59:59-14:00"}, 422, "expires_at"),
    ("admin", "POST", f"/v1/streams/{STREAM}/tasks", {"tasks": [{"item_id": "i0", "due_at": "9999-12-31T23:59:59-14:00"}]},
     422, "due_at"),
    ("admin", "POST", f"/v1/streams/{STREAM}/tasks", {"tasks": [{"item_id": "i0"}], "sla_hours": 1e308}, 422,
     "body.sla_hours"),
], ids=["huge-task-id", "huge-tier", "nul-item-id", "huge-token-id", "superscript-token-id", "nul-token-prefix",
        "nul-answer-key", "nul-dispute-key", "expiry-past-9999", "due-past-9999", "huge-sla"])
def test_out_of_range_and_nul_inputs_get_one_4xx_naming_the_field(http, team, who, method, path, body, status,
                                                                   field):
    answer = http.request(method, path, headers=_auth(team[who]), json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["field"] == field
    assert http.get("/v1/annotators", headers=_auth(team["admin"])).status_code == 200  # no token was revoked


def test_without_a_store_no_token_can_be_checked(http, team):
    services = Services(None, auth="none")
    api.dependency_overrides[get_services] = lambda: services
    answer = http.get("/v1/tasks/next", headers=_auth(team["ann"]))
    assert answer.status_code == 401  # no store: no token can be checked


def test_eight_annotators_asking_at_once_never_share_a_task(http, store):
    import threading

    store.create_stream("race", ["a", "b"])
    people = [f"p{k}" for k in range(8)]
    tokens = {}
    for name in people:
        store.add_annotator(name, streams=["race"])
        tokens[name] = store.issue_token(name, "annotator")
    store.add_items("race", [{"item_id": f"r{k}"} for k in range(6)])
    store.add_tasks("race", [{"item_id": f"r{k}"} for k in range(6)])
    got, barrier = {}, threading.Barrier(len(people))

    def ask(name: str) -> None:
        barrier.wait()
        answer = http.get("/v1/tasks/next", headers=_auth(tokens[name]))
        got[name] = answer.json()["task"]["task_id"] if answer.status_code == 200 else None

    threads = [threading.Thread(target=ask, args=(name,)) for name in people]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    claimed = [v for v in got.values() if v is not None]
    assert len(got) == 8 and len(claimed) == 6 and len(set(claimed)) == 6
    tasks = store.tasks_frame("race")
    assert tasks["annotator_id"].notna().all() and tasks["annotator_id"].is_unique


# ----------------------------------------------------------------------------- the token cache

class _Clock:
    """Monotonic seconds and wall time that move only when a test moves them."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.wall = datetime(2030, 1, 1, tzinfo=timezone.utc)

    def advance(self, seconds: float) -> None:
        self.seconds += seconds
        self.wall += timedelta(seconds=seconds)


@pytest.fixture
def clocked(store) -> Iterator[tuple[AsgiClient, _Clock, Services]]:
    clock = _Clock()
    services = Services(store, auth="token", tokens=TokenCache(5.0, clock=lambda: clock.seconds,
                                                               wall=lambda: clock.wall))
    api.dependency_overrides[get_services] = lambda: services
    try:
        yield AsgiClient(api), clock, services
    finally:
        api.dependency_overrides.pop(get_services, None)


def test_a_token_revoked_elsewhere_is_refused_after_at_most_the_ttl(clocked, store):
    http, clock, _ = clocked
    token = store.issue_token("ops", "admin")
    assert http.get("/v1/streams", headers=_auth(token)).status_code == 200
    store.revoke_token(token)  # another replica, or the CLI: this replica's cache does not know
    clock.advance(4.9)
    assert http.get("/v1/streams", headers=_auth(token)).status_code == 200  # the documented window
    clock.advance(0.1)
    assert http.get("/v1/streams", headers=_auth(token)).status_code == 401
    assert http.get("/v1/streams", headers=_auth(token)).status_code == 401  # and stays refused


def test_revoking_or_deactivating_through_the_replica_takes_effect_at_once(clocked, store):
    http, _, _ = clocked
    admin = store.issue_token("ops", "admin")
    store.create_stream(STREAM, ["neg", "pos"])
    store.add_annotator("ann", streams=[STREAM])
    store.add_annotator("bob", streams=[STREAM])
    ann, bob = store.issue_token("ann", "annotator"), store.issue_token("bob", "annotator")
    for token in (ann, bob):
        assert http.get("/v1/tasks", headers=_auth(token)).status_code == 200  # now remembered
    prefix = ann[:10]
    assert http.delete(f"/v1/tokens/{prefix}", headers=_auth(admin)).status_code == 200
    assert http.get("/v1/tasks", headers=_auth(ann)).status_code == 401
    assert http.patch("/v1/annotators/bob", headers=_auth(admin), json={"active": False}).status_code == 200
    assert http.get("/v1/tasks", headers=_auth(bob)).status_code == 401


def test_a_remembered_token_is_forgotten_at_its_expiry(store):
    # Within the TTL, but past the token's own expiry: the cache no longer vouches for it (the
    # request then goes to the store, which refuses an expired token).
    clock = _Clock()
    cache = TokenCache(5.0, clock=lambda: clock.seconds, wall=lambda: clock.wall)
    token = store.issue_token("ops", "admin", expires_at=datetime.now(timezone.utc) + timedelta(hours=1))
    principal = store.authenticate(token)
    assert principal.expires_at is not None
    clock.wall = principal.expires_at - timedelta(seconds=1)
    cache.put(token, principal)
    assert cache.get(token) == principal
    clock.wall = principal.expires_at
    assert cache.get(token) is None


def test_the_token_cache_keeps_only_valid_tokens_and_checks_its_arguments(store):
    clock = _Clock()
    cache = TokenCache(5.0, size=2, clock=lambda: clock.seconds, wall=lambda: clock.wall)
    tokens = [store.issue_token(f"t{k}", "admin") for k in range(3)]
    for token in tokens:
        cache.put(token, store.authenticate(token))
    assert cache.get(tokens[0]) is None and cache.get(tokens[2]).name == "t2"  # the oldest went first
    assert all(tokens[2] not in str(k) for k in cache._entries)  # kept by hash, never the token
    off = TokenCache(0.0)
    off.put(tokens[1], store.authenticate(tokens[1]))
    assert off.get(tokens[1]) is None
    for bad in (-1.0, float("inf"), True, "5"):
        with pytest.raises(ValueError, match="'ttl'"):
            TokenCache(bad)
    with pytest.raises(ValueError, match="'size'"):
        TokenCache(1.0, size=0)
