"""``GET /v1/me/impact`` over HTTP on SQLite and PostgreSQL (the app's FastAPI object in
process, as tests/serve/test_tasks.py): an annotator sees only their own figures, an admin
everyone's, bad input is a 4xx naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("ray")

from loop.store import LabelStore  # noqa: E402
from serve.app import api  # noqa: E402
from serve.auth import Services, get_services  # noqa: E402
from tests.store.conftest import pg_server, pg_url, store_url  # noqa: E402,F401 - fixtures
from tests.store.impact_history import EXPECTED, STREAM, build_history  # noqa: E402

from .asgi_client import AsgiClient  # noqa: E402


@pytest.fixture
def store(store_url) -> Iterator[LabelStore]:  # noqa: F811
    with LabelStore(store_url) as s:
        build_history(s)
        yield s


@pytest.fixture
def http(store) -> Iterator[AsgiClient]:
    services = Services(store, auth="token")
    api.dependency_overrides[get_services] = lambda: services
    try:
        yield AsgiClient(api)
    finally:
        api.dependency_overrides.pop(get_services, None)


def _get(http, token, **params):
    query = ("?" + urlencode(params)) if params else ""
    return http.get("/v1/me/impact" + query, headers={"Authorization": f"Bearer {token}"})


def test_an_annotator_sees_only_their_own_figures(http, store):
    answer = _get(http, store.issue_token("eve", "annotator"), stream=STREAM)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["annotator"] == "eve"
    assert {(r["round"], r["annotator"]) for r in body["rounds"]} == {(1, "eve")}
    row = body["rounds"][0]
    for name, value in EXPECTED[(1, "eve")].items():
        assert row[name] == pytest.approx(value), name
    assert [t["annotator"] for t in body["totals"]] == ["eve"] and body["totals"][0]["errors_fixed"] == 3
    # Without a stream: the streams they are on (the same one here).
    assert _get(http, store.issue_token("eve", "annotator")).json()["rounds"] == body["rounds"]


def test_an_annotator_asking_for_someone_else_gets_403(http, store):
    answer = _get(http, store.issue_token("bob", "annotator"), stream=STREAM, annotator="eve")
    assert answer.status_code == 403 and "own impact" in answer.json()["error"]["message"]
    assert "rounds" not in answer.text


def test_the_admin_is_the_manager_and_sees_everyone(http, store):
    admin = store.issue_token("lead", "admin")
    body = _get(http, admin, stream=STREAM).json()
    assert {(r["round"], r["annotator"]) for r in body["rounds"]} == set(EXPECTED)
    assert {t["annotator"] for t in body["totals"]} == {"ann", "bob", "eve"}
    ann = next(t for t in body["totals"] if t["annotator"] == "ann")
    assert (ann["answers"], ann["disputes_won"], ann["pending"]) == (4, 1, 1)
    one = _get(http, admin, stream=STREAM, annotator="bob").json()
    assert {r["annotator"] for r in one["rounds"]} == {"bob"}
    assert _get(http, admin).json()["rounds"] == body["rounds"]  # every stream: this one


def test_round_two_is_open_so_its_skill_is_null(http, store):
    body = _get(http, store.issue_token("ann", "annotator"), stream=STREAM).json()
    open_round = next(r for r in body["rounds"] if r["round"] == 2)
    assert open_round["skill"] is None and open_round["pending"] == 1


@pytest.mark.parametrize("params,status,field", [
    ({"stream": "nope"}, 404, "stream"),
    ({"stream": ""}, 422, "query.stream"),
    ({"stream": "x" * 201}, 422, "query.stream"),
    ({"stream": STREAM, "annotator": "nobody"}, 404, "annotator"),
    ({"stream": STREAM, "annotator": "a\x00b"}, 422, "annotator"),
    ({"stream": "a\x00b"}, 422, "stream"),
])
def test_bad_input_is_a_4xx_naming_the_field(http, store, params, status, field):
    answer = _get(http, store.issue_token("lead", "admin"), **params)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["field"] == field


def test_tokens_are_required_and_a_client_is_refused(http, store):
    assert http.get(f"/v1/me/impact?stream={STREAM}").status_code == 401
    assert _get(http, "ll_" + "x" * 43, stream=STREAM).status_code == 401
    assert _get(http, store.issue_token("svc", "client"), stream=STREAM).status_code == 403


def test_the_endpoint_documents_its_4xx_in_openapi(http):
    spec = http.get("/openapi.json").json()
    responses = spec["paths"]["/v1/me/impact"]["get"]["responses"]
    assert {"401", "403", "404", "422"} <= set(responses)
