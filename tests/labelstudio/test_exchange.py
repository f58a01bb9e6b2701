"""Label Studio exports into the store: users by id or email, tasks closed, nothing twice."""

from __future__ import annotations

import copy

import pytest

from loop.columns import ANNOTATOR, ITEM, LABEL, SECONDS
from loop.exceptions import ConflictError, SchemaError
from loop.labelstudio import SYSTEM
from loop.store import RATIONALE

from .conftest import STREAM, payload

USERS = {1: "admin@labelloop.test", 2: "ann1@x.test", 3: "ann2@x.test"}


def _export(store) -> tuple[list[dict], list[int]]:
    """export_annotated.json with its tasks pointing at this store's tasks for i0 and i1."""
    ids = list(store.add_tasks(STREAM, [{ITEM: "i0"}, {ITEM: "i1"}, {ITEM: "i2"}]).ids)
    export = copy.deepcopy(payload("export_annotated"))
    for task in export:
        task["data"]["labelloop_task_ids"] = [ids[int(task["data"]["item_id"][1:])]]
    return export, ids


def test_numeric_users_are_mapped_by_email_and_answered_tasks_close(store):
    export, ids = _export(store)
    store.link_external_tasks(SYSTEM, "1", {"1": ids[0], "2": ids[1]})
    result = store.import_label_studio(STREAM, export, users=USERS)
    assert (result.inserted, result.existing) == (2, 0)  # the skipped annotation is left out
    frame = store.annotations_frame(STREAM, extras=(RATIONALE, "source"))
    assert frame[[ITEM, ANNOTATOR, LABEL]].values.tolist() == [["i0", "ann-1", 2], ["i1", "ann-2", 0]]
    assert frame[SECONDS].tolist() == [3.5, 9.0] and frame[RATIONALE].tolist() == [None, "sarcastic"]
    assert frame["task_id"].tolist() == ids[:2] and set(frame["source"]) == {"label_studio"}
    tasks = store.tasks_frame(STREAM).set_index("task_id")
    assert tasks.loc[ids, "status"].tolist() == ["done", "done", "open"]
    assert tasks.loc[ids[:2], "completed_at"].notna().all()
    assert store.external_tasks_frame(SYSTEM)["closed_at"].notna().all()
    # Done tasks are not exported (nor pushed) again; a second import stores nothing.
    assert [t["data"][ITEM] for t in store.export_label_studio(STREAM)] == ["i2"]
    assert store.import_label_studio(STREAM, export, users=USERS).existing == 2


def test_a_user_id_without_an_email_is_refused_naming_it(store):
    export, _ = _export(store)
    with pytest.raises(SchemaError, match="completed_by.*user id 3"):
        store.import_label_studio(STREAM, export, users={2: "ann1@x.test"})
    with pytest.raises(SchemaError, match="completed_by"):
        store.import_label_studio(STREAM, export)
    assert store.annotations_frame(STREAM).empty


def test_an_email_no_annotator_has_is_refused_naming_it(store):
    export, _ = _export(store)
    with pytest.raises(SchemaError, match="stranger@x.test"):
        store.import_label_studio(STREAM, export, users={**USERS, 3: "stranger@x.test"})
    assert store.annotations_frame(STREAM).empty


def test_an_edit_in_label_studio_is_a_new_annotation(store):
    export, ids = _export(store)
    store.import_label_studio(STREAM, export, users=USERS)
    edited = copy.deepcopy(export)
    ann = edited[0]["annotations"][0]
    ann["result"][0]["value"]["choices"] = ["neu"]
    ann["updated_at"] = "2030-01-01T00:00:00.000000Z"
    assert store.import_label_studio(STREAM, edited, users=USERS).inserted == 1
    frame = store.annotations_frame(STREAM)
    assert frame[frame[ITEM] == "i0"][LABEL].tolist() == [2, 1]
    assert frame[frame[ITEM] == "i0"]["task_id"].tolist() == [ids[0], ids[0]]  # the edit answers the same task


def test_annotator_email_is_unique_and_checked(store):
    assert store.annotator("ann-1").email == "ann1@x.test"
    with pytest.raises(ConflictError, match="ann1@x.test"):
        store.add_annotator("ann-3", email="ann1@x.test")
    with pytest.raises(SchemaError, match="email"):
        store.add_annotator("ann-4", email="not an email")


def test_a_double_blind_pair_is_answered_by_two_people(store):
    ids = list(store.add_tasks(STREAM, [{ITEM: "i0", "kind": "double_blind", "idempotency_key": f"db-{k}"}
                                        for k in range(2)]).ids)
    ann = payload("annotation_created")["annotation"]
    export = [{"id": 1, "data": {ITEM: "i0", "labelloop_task_ids": ids},
               "annotations": [dict(ann, id=10, completed_by=2), dict(ann, id=11, completed_by=3)]}]
    store.import_label_studio(STREAM, export, users=USERS)
    frame = store.annotations_frame(STREAM)
    assert frame["task_id"].tolist() == ids and frame[ANNOTATOR].tolist() == ["ann-1", "ann-2"]
    assert (store.tasks_frame(STREAM)["status"] == "done").all()


def test_deletions_are_events_and_rows_stay(store):
    export, _ = _export(store)
    store.import_label_studio(STREAM, export, users=USERS)
    assert store.record_label_studio_deletions(STREAM, [1, 404]) == (1, [404])
    assert store.record_label_studio_deletions(STREAM, [1]) == (0, [])
    assert len(store.annotations_frame(STREAM)) == 2


def test_next_task_skips_tasks_open_in_label_studio(store):
    # A task pushed to Label Studio is worked there: labelloop hands it to nobody while its
    # link is open, so no task is worked in both tools.
    export, ids = _export(store)
    store.link_external_tasks(SYSTEM, "1", {"1": ids[0], "9": ids[2]})
    assert store.next_task("ann-1").id == ids[1]
    assert store.next_task("ann-2") is None  # i1 is ann-1's; i0 and i2 are in Label Studio
    store.import_label_studio(STREAM, export[:1], users=USERS)  # i0 answered there: done, its link closed
    links = store.external_tasks_frame(SYSTEM).set_index("task_id")["closed_at"]
    assert links.isna().tolist() == [False, True]
    assert store.next_task("ann-2") is None
    assert store.task(ids[2]).status.value == "open"
