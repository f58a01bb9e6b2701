"""Against a real Label Studio 1.23 (its own venv, cached by ``scripts/install_label_studio.sh``).

Skipped when the venv is absent, except in CI (``CI=true``), where the fixture builds it (the
Makefile's ``label-studio`` target does the same ahead of the tests, so the install time shows
on its own line). The server runs on 127.0.0.1 on a free port with a data directory under the
test's tmp path; it takes about 80 s to migrate its database and start on the shared 2 cores.
"""

from __future__ import annotations

import os
import time

import pytest

from loop.columns import ANNOTATOR, ITEM
from loop.labelstudio import SYSTEM
from loop.store import LabelStore
from serve.labelstudio_api import LabelStudioError

from .conftest import CLIENT, STREAM

pytestmark = [pytest.mark.label_studio, pytest.mark.slow]

IN_CI = os.environ.get("CI", "").lower() == "true"
ANN1, ANN2 = "ann1@x.test", "ann2@x.test"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import sys

    from .conftest import BENCHMARKS

    sys.path.insert(0, str(BENCHMARKS))
    try:
        import _label_studio as helpers
    finally:
        sys.path.remove(str(BENCHMARKS))
    python = helpers.label_studio_python(install=IN_CI)
    if python is None:
        pytest.skip("Label Studio is not installed (run `make label-studio`, or set CI=true to install it here)")
    with helpers.LabelStudioServer.start(python, data_dir=tmp_path_factory.mktemp("labelstudio")) as running:
        running.add_users([ANN1, ANN2])
        running.helpers = helpers
        yield running


def _choice(name: str) -> list[dict]:
    return [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [name]}}]


def _answer_next(server, email: str, project: int, label: str) -> int | None:
    task = server.client(email).next_task(project)
    if task is None:
        return None
    server.client(email).annotate(int(task["id"]), _choice(label), lead_time=2.0)
    return int(task["id"])


@pytest.fixture
def team_store(tmp_path) -> LabelStore:
    s = LabelStore(f"sqlite:///{tmp_path / 'team.db'}")
    s.create_stream(STREAM, ("neg", "neu", "pos"))
    s.add_annotator("ann-1", email=ANN1, streams=[STREAM])
    s.add_annotator("ann-2", email=ANN2, streams=[STREAM])
    s.add_items(STREAM, [{ITEM: f"i{k}", "payload": {"text": f"review {k}", "features": [1.0 + k, 2.0, 3.0]}}
                         for k in range(6)])
    s.add_model_version("sentiment@4")
    s.add_predictions(STREAM, "sentiment@4", [{ITEM: f"i{k}", "probs": [0.2, 0.3, 0.5], "route": "review",
                                               "reason": f"reason {k}"} for k in range(6)])
    s.add_tasks(STREAM, [{ITEM: "i0"}, {ITEM: "i1"}, {ITEM: "i2"},
                         {ITEM: "i3", "kind": "double_blind", "idempotency_key": "db-i3-a"},
                         {ITEM: "i3", "kind": "double_blind", "idempotency_key": "db-i3-b"},
                         {ITEM: "i4", "kind": "expert", "tier": 3},
                         # Already someone's in labelloop's own queue: never pushed to Label Studio too.
                         {ITEM: "i5", ANNOTATOR: "ann-2"}])
    return s


def test_sync_pushes_routed_tasks_and_pulls_answers_back(server, team_store, monkeypatch):
    from experiments.labelstudio import SyncConfig, sync

    admin = server.client()
    open_project = admin.create_project("labelloop open", server.helpers.LABEL_CONFIG)
    blind_project = admin.create_project("labelloop blind", server.helpers.LABEL_CONFIG)
    monkeypatch.setenv("LS_TEST_TOKEN", server.tokens[server.helpers.ADMIN])
    cfg = SyncConfig(url=server.url, token_env="LS_TEST_TOKEN", stream=STREAM,
                     projects={"label": open_project, "double_blind": blind_project})

    first = sync(cfg, store=team_store)
    assert (first.pushed, first.pulled, first.not_pushed) == (5, 0, {"expert": 1})
    assert sync(cfg, store=team_store).pushed == 0  # idempotent
    shown = admin.export(open_project)
    assert sorted(t["data"]["item_id"] for t in shown) == ["i0", "i1", "i2"]
    blind = admin.export(blind_project)
    assert len(blind) == 1 and len(blind[0]["data"]["labelloop_task_ids"]) == 2
    project = admin.transport.request("GET", f"/api/projects/{blind_project}/")
    assert project["maximum_annotations"] == 2 and project["show_collab_predictions"] is False
    tasks = admin.transport.request("GET", "/api/tasks/", params={"project": open_project, "fields": "all"})
    tasks = tasks["tasks"] if isinstance(tasks, dict) else tasks
    assert all(t["total_predictions"] == 1 for t in tasks)
    blind_tasks = admin.transport.request("GET", "/api/tasks/", params={"project": blind_project, "fields": "all"})
    blind_tasks = blind_tasks["tasks"] if isinstance(blind_tasks, dict) else blind_tasks
    assert all(t["total_predictions"] == 0 for t in blind_tasks)  # no pre-annotation on blind tasks

    assert _answer_next(server, ANN1, open_project, "pos") is not None
    assert _answer_next(server, ANN1, open_project, "neg") is not None
    assert _answer_next(server, ANN2, open_project, "neu") is not None
    # The double-blind pair: Label Studio gives the one task to two different people.
    assert _answer_next(server, ANN1, blind_project, "pos") is not None
    assert _answer_next(server, ANN2, blind_project, "neg") is not None
    assert _answer_next(server, ANN1, blind_project, "pos") is None

    pulled = sync(cfg, store=team_store)
    assert (pulled.pulled, pulled.pushed) == (5, 0)
    frame = team_store.annotations_frame(STREAM, extras=("source",))
    assert sorted(frame[ANNOTATOR]) == ["ann-1", "ann-1", "ann-1", "ann-2", "ann-2"]
    assert set(frame["source"]) == {"label_studio"}
    assert frame["task_id"].notna().all() and frame["task_id"].is_unique
    statuses = team_store.tasks_frame(STREAM).set_index(ITEM)["status"]
    assert (statuses.drop(["i4", "i5"]) == "done").all() and statuses["i4"] == "open"
    assert statuses["i5"] == "assigned"
    assert team_store.external_tasks_frame(SYSTEM)["closed_at"].notna().all()
    again = sync(cfg, store=team_store)
    assert (again.pulled, again.already, again.pushed) == (0, 5, 0)
    assert [t["data"]["item_id"] for t in team_store.export_label_studio(STREAM)] == ["i4", "i5"]


def test_label_studio_calls_the_ml_backend_and_its_webhook(server, backend_http, store):
    # One client token of the store, as a team would set it up: the ML backend connection's
    # basic-auth password and the webhook's bearer header.
    url, backend, token = backend_http.url, backend_http.backend, backend_http.token
    admin = server.client()
    project = admin.create_project("labelloop backend", server.helpers.LABEL_CONFIG)
    task_ids = list(store.add_tasks(STREAM, [{ITEM: "i0"}, {ITEM: "i1"}]).ids)
    ls_ids = admin.import_tasks(project, [{"data": {"text": f"review {k}", "item_id": f"i{k}",
                                                    "labelloop_task_ids": [task_ids[k]]}} for k in range(2)])
    backend._users = {}
    backend._fetch_users = admin.users  # the backend looks emails up in this Label Studio
    with pytest.raises(LabelStudioError, match="HTTP 400"):  # /setup refuses it without the token
        admin.add_ml_backend(project, f"{url}/labelstudio")
    # Label Studio calls /health and /setup here, with the token as the basic-auth password
    admin.add_ml_backend(project, f"{url}/labelstudio", basic_auth=(CLIENT, token))
    admin.transport.request("POST", "/api/dm/actions", params={"id": "retrieve_tasks_predictions",
                                                               "project": project},
                            json={"selectedItems": {"all": True, "excluded": []}})
    predictions = admin.transport.request("GET", "/api/predictions/", params={"project": project})
    assert sorted(p["task"] for p in predictions) == sorted(ls_ids)
    assert {p["model_version"] for p in predictions} == {"sentiment@4"}
    assert all(p["result"][1]["type"] == "textarea" for p in predictions)

    admin.add_webhook(project, f"{url}/labelstudio/webhook", headers={"Authorization": f"Bearer {token}"},
                      actions=["ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED"])
    assert _answer_next(server, ANN1, project, "neg") is not None
    deadline = time.monotonic() + 20
    while store.annotations_frame(STREAM).empty and time.monotonic() < deadline:
        time.sleep(0.2)
    frame = store.annotations_frame(STREAM)
    assert frame[ANNOTATOR].tolist() == ["ann-1"] and frame["label"].tolist() == [0]
    events = store.events_frame(stream=STREAM)
    assert set(events.loc[events["action"] == "task.status", "actor"]) == {CLIENT}  # the token's name


def test_a_personal_access_token_is_traded_for_access_tokens(server):
    from serve.labelstudio_api import HttpTransport, LabelStudioClient

    created = server.client(ANN2).transport.request("POST", "/api/token/")
    pat = created.get("token") or created.get("refresh")
    client = LabelStudioClient(HttpTransport(server.url, pat))
    assert ANN2 in client.users().values()
    assert pat not in repr(client.transport)


def test_the_throughput_helper_measures_label_studios_own_loop(server):
    run = server.helpers.label_studio_throughput(server, clients=2, seconds=3.0, tasks=50)
    # The helper's own accounting: every acknowledged answer is found in the export, once a user.
    assert run.answers > 0 and run.lost == 0 and run.duplicated == 0, run
    # Label Studio's own behaviour under two writers on its SQLite, which the helper measures and
    # reports: CI runs saw one refused request in 15 cycles, and once next/ gave one task to both
    # users (over_answered 1 of 16). A few are Label Studio's; an exception of the helper's own
    # (a KeyError on an answer, say) is a bug and fails here.
    assert run.errors == sum(n for _, n in run.error_kinds) <= max(1, run.answers // 5), run
    assert run.over_answered <= max(1, run.answers // 5), run
    assert all(kind.startswith("LabelStudioError: ") for kind, _ in run.error_kinds), run.error_kinds
    assert run.p50_ms <= run.p99_ms and run.database == "sqlite"
