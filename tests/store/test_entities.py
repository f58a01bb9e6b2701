"""Streams, annotators, guidelines, items, models, predictions, tasks: idempotent writes,
immutability, and one audit event per change."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

from loop.exceptions import ConflictError, SchemaError
from loop.store import LabelStore, TaskStatus, normalize_url

from .conftest import CLASSES, STREAM


def _count(store: LabelStore, table: str) -> int:
    with store._engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()


@pytest.mark.parametrize("url, driver", [
    ("postgresql://u@h:5432/db", "postgresql+psycopg"),
    ("postgres://u@h/db", "postgresql+psycopg"),
    ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
    ("sqlite:///x.db", "sqlite"),
])
def test_normalize_url_picks_psycopg3(url, driver):
    assert normalize_url(url).drivername == driver


@pytest.mark.parametrize("url", ["mysql://u@h/db", "postgresql+psycopg2://u@h/db", "not a url", 42])
def test_normalize_url_refuses_other_databases(url):
    with pytest.raises(SchemaError, match="'url'"):
        normalize_url(url)


def test_sqlite_connections_use_wal_and_foreign_keys(tmp_path):
    with LabelStore(f"sqlite:///{tmp_path / 'x.db'}") as store, store._engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000


def test_stream_is_idempotent_and_conflicts_on_other_classes(store):
    first = store.create_stream(STREAM, CLASSES, owner="ml")
    assert store.create_stream(STREAM, CLASSES, owner="ml") == first
    assert first.classes == CLASSES
    with pytest.raises(ConflictError, match="classes"):
        store.create_stream(STREAM, ("neg", "pos"), owner="ml")
    assert _count(store, "streams") == 1
    assert (store.events_frame()["action"] == "stream.created").sum() == 1


@pytest.mark.parametrize("classes", [["only"], ["a", "a"], "ab"])
def test_stream_needs_two_distinct_classes(store, classes):
    with pytest.raises(SchemaError, match="'classes'"):
        store.create_stream("s", classes)


def test_unknown_stream_is_named(store):
    with pytest.raises(SchemaError, match="'stream'"):
        store.stream("nope")


def test_annotator_membership_and_activity(seeded):
    a = seeded.annotator("a")
    assert a.streams == (STREAM,) and a.active and a.hourly_rate == 36.0
    assert seeded.add_annotator("a", streams=[STREAM], hourly_rate=36.0) == a  # a retry
    with pytest.raises(ConflictError):
        seeded.add_annotator("a", tier=3, hourly_rate=36.0)
    assert seeded.assign_annotator("a", "other").streams == ("other", STREAM)
    assert not seeded.set_annotator_active("a", False, reason="left").active
    events = seeded.events_frame()
    assert (events["action"] == "annotator.deactivated").sum() == 1
    assert (events["action"] == "annotator.joined").sum() == 5  # a, b, c, d, then a on 'other'


def test_guideline_versions_are_immutable_once_published(seeded):
    v1, v2 = seeded.guideline(STREAM, 1), seeded.guideline(STREAM, 2)
    assert v1.published_at is not None and v2.published_at is None and v2.parent_version == 1
    assert seeded.guideline(STREAM).version == 1  # newest published
    revised = seeded.revise_guideline(STREAM, 2, text="Sarcasm is negative; irony too.")
    assert revised.text.startswith("Sarcasm is negative;")
    events = len(seeded.events_frame(stream=STREAM))
    with pytest.raises(SchemaError, match="'text'"):  # a revision that changes nothing is refused
        seeded.revise_guideline(STREAM, 2)
    assert len(seeded.events_frame(stream=STREAM)) == events
    with pytest.raises(ConflictError, match="immutable"):
        seeded.revise_guideline(STREAM, 1, text="rewrite history")
    assert seeded.publish_guideline(STREAM, 2).published_at is not None
    assert seeded.publish_guideline(STREAM, 2) == seeded.guideline(STREAM, 2)  # idempotent
    # The database refuses too, whatever the client.
    with pytest.raises(sa.exc.DatabaseError, match="immutable"), seeded._engine.begin() as conn:
        conn.execute(sa.text("UPDATE guideline_versions SET text = 'x' WHERE version = 1"))
    assert seeded.guideline(STREAM, 1).text == v1.text


def test_guideline_retry_returns_the_same_draft(seeded):
    again = seeded.add_guideline(STREAM, "Sarcasm counts as negative.", author="lead", parent_version=1)
    assert again.version == 2
    with pytest.raises(SchemaError, match="'parent_version'"):
        seeded.add_guideline(STREAM, "x", author="lead", parent_version=9)


def test_items_are_idempotent_by_external_id(seeded):
    before = _count(seeded, "items")
    result = seeded.add_items(STREAM, pd.DataFrame({"item_id": ["i0", "i1", "new"],
                                                    "payload": [{"text": "review 0"}, {"text": "review 1"}, None]}))
    assert (result.inserted, result.existing) == (1, 2)
    assert _count(seeded, "items") == before + 1
    with pytest.raises(ConflictError, match="payload"):
        seeded.add_items(STREAM, [{"item_id": "i0", "payload": {"text": "edited"}}])


def test_predictions_and_tasks(seeded):
    seeded.add_model_version("m1", uri="runs:/abc/model")
    preds = pd.DataFrame({"item_id": ["i0", "i1"], "probs": [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]],
                          "route": ["auto", "review"], "signals": [{"margin": 0.5}, {"margin": 0.7}]})
    assert seeded.add_predictions(STREAM, "m1", preds).inserted == 2
    assert seeded.add_predictions(STREAM, "m1", preds).existing == 2
    with pytest.raises(SchemaError, match="'probs'"):
        seeded.add_predictions(STREAM, "m1", pd.DataFrame({"item_id": ["i2"], "probs": [[0.5, 0.5]]}))
    tasks = pd.DataFrame({"item_id": ["i0", "i1"], "annotator_id": ["a", None], "guideline_version": [1, 1]})
    assert seeded.add_tasks(STREAM, tasks).inserted == 2
    assert seeded.add_tasks(STREAM, tasks).existing == 2
    frame = seeded.tasks_frame(STREAM)
    assert frame["status"].tolist() == ["assigned", "open"]
    task = seeded.set_task_status(int(frame["task_id"].iloc[1]), "assigned", annotator="b")
    assert task.status is TaskStatus.ASSIGNED and task.annotator == "b"
    with pytest.raises(SchemaError, match="'guideline_version'"):
        seeded.add_tasks(STREAM, pd.DataFrame({"item_id": ["i2"], "guideline_version": [2]}))  # a draft


def test_many_tasks_move_at_once_with_one_event_each(seeded):
    tasks = pd.DataFrame({"item_id": ["i0", "i1", "i2"], "annotator_id": ["a", "b", "c"]})
    seeded.add_tasks(STREAM, tasks)
    ids = seeded.tasks_frame(STREAM)["task_id"].astype(int).tolist()
    events_before = len(seeded.events_frame(stream=STREAM))
    assert seeded.set_task_statuses(ids[:2], "done", reason="answered") == 2
    assert seeded.tasks_frame(STREAM)["status"].tolist() == ["done", "done", "assigned"]
    assert seeded.set_task_statuses(ids, TaskStatus.DONE) == 1  # the retry changes only the third
    events = seeded.events_frame(stream=STREAM)
    assert len(events) == events_before + 3
    with pytest.raises(SchemaError, match="'task_ids'.*unknown ids \\[999999\\]"):
        seeded.set_task_statuses([ids[0], 999999], "cancelled")
    assert seeded.tasks_frame(STREAM)["status"].tolist() == ["done", "done", "done"]  # nothing written
    with pytest.raises(SchemaError, match="'status'"):
        seeded.set_task_statuses(ids, "finished")
    assert seeded.set_task_statuses([], "done") == 0


def test_a_batch_of_items_and_predictions_is_a_few_statements_with_the_same_rows(store):
    # An INSERT ... RETURNING in the rows' order ran one statement per row on SQLite; a plain
    # executemany and one lookup of the ids keep a batch to a handful of statements.
    store.create_stream("bulk", ["a", "b"])
    store.add_model_version("m1", uri="runs:/abc/model")
    n = 600
    ids = [f"it-{k}" for k in range(n)]
    statements = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    sa.event.listen(store._engine, "before_cursor_execute", count)
    try:
        store.add_items("bulk", pd.DataFrame({"item_id": ids}))
        result = store.add_predictions("bulk", "m1", pd.DataFrame({
            "item_id": ids, "probs": [[k / n, 1 - k / n] for k in range(n)], "route": "review",
            "reason": [f"why {k}" for k in range(n)]}))
    finally:
        sa.event.remove(store._engine, "before_cursor_execute", count)
    assert result.inserted == n and len(statements) < 40
    stored = store.latest_predictions("bulk", ids)
    assert sorted(stored["item_id"]) == sorted(ids)
    by_item = stored.set_index("item_id")
    assert by_item.loc["it-7", "reason"] == "why 7" and by_item.loc["it-7", "probs"] == [7 / n, 1 - 7 / n]
    events = store.events_frame(stream="bulk").query("action == 'prediction.created'")
    assert len(events) == n
