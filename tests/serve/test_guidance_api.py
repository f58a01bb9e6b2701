"""An admin drafts a guideline from the confused pairs over HTTP, reviews it and publishes it (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("ray")

from tests.serve.test_tasks import _auth, http, store  # noqa: E402,F401 - fixtures
from tests.store.conftest import pg_server, pg_url, store_url  # noqa: E402,F401 - fixtures
from tests.store.test_guidance import PARENT, STREAM, _confused_stream  # noqa: E402

ROUTE = f"/v1/streams/{STREAM}/guidelines/drafts/from-confusions"


def test_draft_review_publish_over_http(http, store):
    _confused_stream(store)
    store.publish_guideline(STREAM, store.add_guideline(STREAM, PARENT, author="lead").version)
    admin = _auth(store.issue_token("ops", "admin"))
    answer = http.post(ROUTE, headers=admin, json={"pairs": 1, "per_class": 2})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    g = body["guideline"]
    assert g["published_at"] is None and g["parent_version"] == 1 and g["author"] == "ops"
    assert "## neg vs pos" in g["text"] and g["examples"]["pairs"] == [["neg", "pos"]]
    assert body["pairs"][0]["guideline_unclear"] == 2 and body["pairs"][0]["class_a"] == "neg"
    # Review, then publish through the existing route.
    assert http.get(f"/v1/streams/{STREAM}/guidelines/{g['version']}", headers=admin).json()["guideline"]["text"] \
        == g["text"]
    published = http.post(f"/v1/streams/{STREAM}/guidelines/{g['version']}/publish", headers=admin)
    assert published.status_code == 200 and published.json()["guideline"]["published_at"] is not None
    assert http.post(ROUTE, headers=admin).status_code == 201  # no body: the defaults


@pytest.mark.parametrize("body, field", [({"pairs": 0}, "pairs"), ({"pairs": "3"}, "pairs"),
                                         ({"per_class": 99}, "per_class"), ({"colour": 1}, "colour")])
def test_bad_bodies_are_422_naming_the_field(http, store, body, field):
    _confused_stream(store)
    answer = http.post(ROUTE, headers=_auth(store.issue_token("ops", "admin")), json=body)
    assert answer.status_code == 422 and field in answer.json()["error"]["field"]


def test_unknown_stream_is_404_and_a_stream_without_predictions_422(http, store):
    admin = _auth(store.issue_token("ops", "admin"))
    answer = http.post("/v1/streams/nope/guidelines/drafts/from-confusions", headers=admin)
    assert answer.status_code == 404 and "error" in answer.json()
    store.create_stream("empty", ["a", "b"])
    answer = http.post("/v1/streams/empty/guidelines/drafts/from-confusions", headers=admin)
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "stream"


def test_annotators_cannot_draft(http, store):
    _confused_stream(store)
    answer = http.post(ROUTE, headers=_auth(store.issue_token("ann", "annotator", annotator="ann")))
    assert answer.status_code == 403


def test_a_draft_is_revised_over_http_and_a_published_version_is_not(http, store):
    store.create_stream(STREAM, ["neg", "neu", "pos"])
    version = store.add_guideline(STREAM, PARENT, author="lead").version
    admin = _auth(store.issue_token("ops", "admin"))
    route = f"/v1/streams/{STREAM}/guidelines/{version}"
    answer = http.patch(route, headers=admin, json={"text": PARENT + "\n## neg vs pos\nSarcasm is neg.\n",
                                                     "reason": "the pair's rule"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["guideline"]["text"].endswith("Sarcasm is neg.\n")
    assert store.guideline(STREAM, version).text.endswith("Sarcasm is neg.\n")
    events = store.events_frame(stream=STREAM)
    assert events[events["action"] == "guideline.revised"]["reason"].tolist() == ["the pair's rule"]
    # A body that changes nothing, or a field that is not one, is 422 naming it; nothing changes.
    for body, field in (({}, "text"), ({"text": ""}, "text"), ({"colour": "red"}, "colour")):
        bad = http.patch(route, headers=admin, json=body)
        assert bad.status_code == 422 and field in bad.json()["error"]["field"], (body, bad.text)
    store.add_annotator("ann", tier=1)
    annotator = _auth(store.issue_token("ann", "annotator", annotator="ann"))
    assert http.patch(route, headers=annotator, json={"text": "x"}).status_code == 403
    assert http.patch(f"/v1/streams/{STREAM}/guidelines/99", headers=admin, json={"text": "x"}).status_code == 404
    store.publish_guideline(STREAM, version)
    refused = http.patch(route, headers=admin, json={"text": "rewrite history"})
    assert refused.status_code == 409 and "immutable" in refused.json()["error"]["message"]
    assert store.guideline(STREAM, version).text.endswith("Sarcasm is neg.\n")
