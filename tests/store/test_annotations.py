"""Batched annotation writes: idempotent, validated as a whole, one event each; the long
frame read back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from loop.columns import ANNOTATOR, COST, ITEM, LABEL, SECONDS
from loop.exceptions import ConflictError, SchemaError
from loop.store import (EVIDENCE, GUIDELINE_VERSION, IDEMPOTENCY_KEY, MAX_RATIONALE_CHARS, RATIONALE, SUGGESTION,
                        SUGGESTION_CONFIDENCE, LabelStore)

from .conftest import STREAM, counting_steps


def _batch(n_items: int = 10, annotators=("a", "b", "c"), seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [{ITEM: f"i{i}", ANNOTATOR: a, LABEL: int(rng.integers(0, 3)), SECONDS: float(rng.integers(5, 60)),
             GUIDELINE_VERSION: 1} for i in range(n_items) for a in annotators]
    return pd.DataFrame(rows)


def _counts(store) -> tuple[int, int]:
    with store._engine.connect() as conn:
        return (conn.execute(sa.text("SELECT count(*) FROM annotations")).scalar(),
                conn.execute(sa.text("SELECT count(*) FROM events WHERE action = 'annotation.created'")).scalar())


def test_batch_round_trips_through_the_long_frame(seeded):
    batch = _batch()
    batch[RATIONALE] = ["because"] * len(batch)
    batch[EVIDENCE] = [{"span": [0, k]} for k in range(len(batch))]
    batch[SUGGESTION] = "pos"
    batch[SUGGESTION_CONFIDENCE] = 0.9
    assert seeded.add_annotations(STREAM, batch, actor="ingest").inserted == 30
    frame = seeded.annotations_frame(STREAM, extras=(RATIONALE, EVIDENCE, SUGGESTION, SUGGESTION_CONFIDENCE))
    got = frame.sort_values([ITEM, ANNOTATOR]).reset_index(drop=True)
    want = batch.sort_values([ITEM, ANNOTATOR]).reset_index(drop=True)
    assert got[ITEM].tolist() == want[ITEM].tolist()
    assert got[LABEL].tolist() == want[LABEL].tolist()
    np.testing.assert_allclose(got[SECONDS], want[SECONDS])
    rates = got[ANNOTATOR].map({"a": 36.0, "b": 18.0, "c": 0.0})
    np.testing.assert_allclose(got[COST], got[SECONDS] * rates / 3600)
    assert (got[GUIDELINE_VERSION] == 1).all() and (got[SUGGESTION] == 2).all()
    assert got[EVIDENCE].tolist() == want[EVIDENCE].tolist()
    assert str(frame["created_at"].dt.tz) == "UTC"
    assert _counts(seeded) == (30, 30)


def test_labels_may_be_codes_or_names(seeded):
    seeded.add_annotations(STREAM, [{ITEM: "i0", ANNOTATOR: "a", LABEL: "neu"}, {ITEM: "i0", ANNOTATOR: "b", LABEL: 2}])
    assert seeded.annotations_frame(STREAM)[LABEL].tolist() == [1, 2]


def test_a_retry_stores_nothing_twice(seeded):
    batch = _batch()
    first = seeded.add_annotations(STREAM, batch)
    half = seeded.add_annotations(STREAM, pd.concat([batch.iloc[:15], _batch(annotators=("a",)).assign(
        **{GUIDELINE_VERSION: None})]))
    assert (first.inserted, first.existing) == (30, 0)
    assert (half.inserted, half.existing) == (10, 15)  # guideline-less labels are other judgements
    assert _counts(seeded) == (40, 40)


def test_a_key_reused_with_other_content_is_a_conflict(seeded):
    seeded.add_annotations(STREAM, [{ITEM: "i0", ANNOTATOR: "a", LABEL: 0, IDEMPOTENCY_KEY: "k1"}])
    with pytest.raises(ConflictError, match="k1"):
        seeded.add_annotations(STREAM, [{ITEM: "i1", ANNOTATOR: "a", LABEL: 0, IDEMPOTENCY_KEY: "new"},
                                        {ITEM: "i0", ANNOTATOR: "a", LABEL: 2, IDEMPOTENCY_KEY: "k1"}])
    with pytest.raises(ConflictError, match="k2"):
        seeded.add_annotations(STREAM, [{ITEM: "i1", ANNOTATOR: "a", LABEL: 0, IDEMPOTENCY_KEY: "k2"},
                                        {ITEM: "i1", ANNOTATOR: "a", LABEL: 1, IDEMPOTENCY_KEY: "k2"}])
    assert _counts(seeded) == (1, 1)  # the whole batch was refused, 'new' included


def test_relabelling_the_same_judgement_is_a_conflict_not_an_overwrite(seeded):
    seeded.add_annotations(STREAM, [{ITEM: "i0", ANNOTATOR: "a", LABEL: 0}])
    with pytest.raises(ConflictError):
        seeded.add_annotations(STREAM, [{ITEM: "i0", ANNOTATOR: "a", LABEL: 1}])
    assert seeded.annotations_frame(STREAM)[LABEL].tolist() == [0]


BAD = [
    ({ITEM: "nope"}, "'item_id'"),
    ({ANNOTATOR: "d"}, "'annotator_id'.*not on it"),          # d is on another stream
    ({ANNOTATOR: "zed"}, "'annotator_id'.*unknown"),
    ({LABEL: "great"}, "'label'"),
    ({LABEL: 3}, "'label'"),
    ({GUIDELINE_VERSION: 2}, "'guideline_version'.*unpublished"),
    ({GUIDELINE_VERSION: 7}, "'guideline_version'"),
    ({RATIONALE: "x" * (MAX_RATIONALE_CHARS + 1)}, "'rationale'"),
    ({SECONDS: -1.0}, "'seconds'"),
    ({SUGGESTION_CONFIDENCE: 1.5}, "'suggestion_confidence'"),
    ({EVIDENCE: {1, 2}}, "'evidence'"),
    ({"colour": "red"}, "unknown"),
    ({"task_id": 12345}, "'task_id'"),
]


@pytest.mark.parametrize("change, message", BAD, ids=[m for _, m in BAD])
def test_bad_input_names_the_field_and_stores_nothing(seeded, change, message):
    good = {ITEM: "i1", ANNOTATOR: "b", LABEL: 1, SECONDS: 3.0}
    with pytest.raises(SchemaError, match=message):
        seeded.add_annotations(STREAM, [good, {**good, ANNOTATOR: "a", **change}])
    assert _counts(seeded) == (0, 0)


def test_missing_required_values_are_refused(seeded):
    with pytest.raises(SchemaError, match="'label'"):
        seeded.add_annotations(STREAM, pd.DataFrame({ITEM: ["i0"], ANNOTATOR: ["a"], LABEL: [None]}))
    with pytest.raises(SchemaError, match="at least one row"):
        seeded.add_annotations(STREAM, pd.DataFrame(columns=[ITEM, ANNOTATOR, LABEL]))


def test_inactive_annotators_cannot_annotate(seeded):
    seeded.set_annotator_active("c", False)
    with pytest.raises(SchemaError, match="inactive"):
        seeded.add_annotations(STREAM, [{ITEM: "i0", ANNOTATOR: "c", LABEL: 0}])


def test_annotations_and_events_are_append_only(seeded):
    seeded.add_annotations(STREAM, [{ITEM: "i0", ANNOTATOR: "a", LABEL: 0}])
    for sql in ("UPDATE annotations SET label = 2", "DELETE FROM annotations", "UPDATE events SET actor = 'x'",
                "DELETE FROM events"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), seeded._engine.begin() as conn:
            conn.execute(sa.text(sql))
    assert _counts(seeded) == (1, 1)
    assert not any(hasattr(seeded, name) for name in ("update_annotation", "delete_annotation", "delete_event"))


def test_time_window_reads(seeded):
    seeded.add_annotations(STREAM, [{ITEM: "i0", ANNOTATOR: "a", LABEL: 0, "created_at": "2024-01-01T10:00:00Z"},
                                    {ITEM: "i0", ANNOTATOR: "b", LABEL: 0, "created_at": "2024-02-01T10:00:00+02:00"}])
    frame = seeded.annotations_frame(STREAM, since="2024-01-15")
    assert frame[ANNOTATOR].tolist() == ["b"]
    assert frame["created_at"].iloc[0] == pd.Timestamp("2024-02-01T08:00:00Z")
    assert seeded.annotations_frame(STREAM, until="2024-01-15")[ANNOTATOR].tolist() == ["a"]


def test_a_stamp_finer_than_a_microsecond_is_cut_to_one_quietly_on_both_stores(seeded):
    # The store keeps microseconds: SQLite's text and PostgreSQL's timestamptz alike. The
    # simulated clock's stamps (seconds as floats) carry nanoseconds, and the driver's conversion
    # warned once a batch on PostgreSQL while SQLite cut them silently.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seeded.add_annotations(STREAM, [{ITEM: "i0", ANNOTATOR: "a", LABEL: 0,
                                         "created_at": pd.Timestamp("2024-01-01T10:00:00.123456789Z")}])
    stored = seeded.annotations_frame(STREAM)["created_at"].iloc[0]
    assert stored == pd.Timestamp("2024-01-01T10:00:00.123456Z")


def test_reading_after_an_annotation_id_returns_only_what_came_since(seeded):
    seeded.add_annotations(STREAM, _batch(n_items=3))
    first = seeded.annotations_frame(STREAM)
    seeded.add_annotations(STREAM, _batch(n_items=5, annotators=("a",), seed=1).iloc[3:])
    since = seeded.annotations_frame(STREAM, after=int(first["annotation_id"].max()))
    assert since[ITEM].tolist() == ["i3", "i4"] and since[ANNOTATOR].tolist() == ["a", "a"]
    # Appending what came since gives the frame a whole read gives.
    pd.testing.assert_frame_equal(pd.concat([first, since], ignore_index=True), seeded.annotations_frame(STREAM))
    assert seeded.annotations_frame(STREAM, after=int(since["annotation_id"].max())).empty
    with pytest.raises(SchemaError, match="'after'"):
        seeded.annotations_frame(STREAM, after=-1)


def test_annotations_link_to_the_tasks_they_answer(seeded):
    tasks = pd.DataFrame({ITEM: ["i0", "i1"], ANNOTATOR: ["a", "b"], "tier": [2, 3]})
    created = seeded.add_tasks(STREAM, tasks)
    assert len(created.ids) == 2 and seeded.add_tasks(STREAM, tasks).ids == created.ids  # a retry: the same ids
    stored = seeded.tasks_frame(STREAM)
    assert stored["task_id"].tolist() == list(created.ids) and stored["tier"].tolist() == [2, 3]
    seeded.add_annotations(STREAM, tasks.drop(columns="tier").assign(**{LABEL: [0, 1], "task_id": list(created.ids)}))
    assert seeded.annotations_frame(STREAM)["task_id"].tolist() == list(created.ids)
    assert seeded.set_task_statuses(list(created.ids), "done") == 2
    assert seeded.tasks_frame(STREAM, statuses=["assigned"]).empty
    with pytest.raises(SchemaError, match="'task_id'.*other items"):
        seeded.add_annotations(STREAM, [{ITEM: "i2", ANNOTATOR: "c", LABEL: 0, "task_id": created.ids[0]}])


def _steps_of_answering_a_batch(path, n_earlier: int) -> int:
    """SQLite's steps (in hundreds) of storing the answers to 30 tasks, after ``n_earlier``
    tasks of the same stream."""
    with LabelStore(f"sqlite:///{path}") as store:
        store.create_stream(STREAM, ("neg", "neu", "pos"))
        store.add_annotator("a", streams=[STREAM])
        items = [f"i{k}" for k in range(n_earlier + 30)]
        store.add_items(STREAM, [{ITEM: i} for i in items])
        store.add_tasks(STREAM, pd.DataFrame({ITEM: items[:n_earlier], ANNOTATOR: "a", "tier": 2}))
        batch = pd.DataFrame({ITEM: items[n_earlier:], ANNOTATOR: "a", "tier": 2})
        ids = store.add_tasks(STREAM, batch).ids
        with counting_steps(store) as steps:
            store.add_annotations(STREAM, batch.drop(columns="tier").assign(**{LABEL: 0, "task_id": list(ids)}))
    return steps[0]


def test_answering_tasks_costs_the_batch_not_the_streams_tasks(tmp_path):
    # Without statistics SQLite checked 20 task ids or more through the stream's index on
    # tasks: every batch of answers walked every task of the stream's history.
    small = _steps_of_answering_a_batch(tmp_path / "small.db", 100)
    large = _steps_of_answering_a_batch(tmp_path / "large.db", 20_000)
    assert large < 2 * small + 20, (small, large)


def test_a_retry_may_spell_labels_as_names_or_codes(seeded):
    seeded.add_annotations(STREAM, [{ITEM: "i0", ANNOTATOR: "a", LABEL: 2, SECONDS: 5}])
    again = seeded.add_annotations(STREAM, [{ITEM: "i0", ANNOTATOR: "a", LABEL: "pos", SECONDS: 5.0}])
    assert (again.inserted, again.existing) == (0, 1)


def test_a_failed_first_batch_leaves_the_connection_usable(seeded, store_url):
    from loop.store import LabelStore

    seeded.add_annotations(STREAM, [{ITEM: "i0", ANNOTATOR: "a", LABEL: 0, IDEMPOTENCY_KEY: "taken"}])
    with LabelStore(store_url) as other:  # its first write conflicts after the rows went in
        with pytest.raises(ConflictError):
            other.add_annotations(STREAM, [{ITEM: "i1", ANNOTATOR: "a", LABEL: 0},
                                           {ITEM: "i0", ANNOTATOR: "a", LABEL: 1, IDEMPOTENCY_KEY: "taken"}])
        assert other.add_annotations(STREAM, [{ITEM: "i1", ANNOTATOR: "a", LABEL: 0}]).inserted == 1
    assert _counts(seeded) == (2, 2)


def test_remembered_items_do_not_hide_unknown_ones(seeded):
    seeded.add_annotations(STREAM, [{ITEM: "i0", ANNOTATOR: "a", LABEL: 0}])  # the store now knows i0's id
    with pytest.raises(SchemaError, match="'item_id'.*ghost"):
        seeded.add_annotations(STREAM, [{ITEM: "i0", ANNOTATOR: "b", LABEL: 0}, {ITEM: "ghost", ANNOTATOR: "b", LABEL: 0}])
    assert seeded.add_annotations(STREAM, [{ITEM: "i0", ANNOTATOR: "b", LABEL: 0}]).inserted == 1
    assert seeded.annotations_frame(STREAM)[ITEM].tolist() == ["i0", "i0"]


def _rows_read(node: dict, relation: str) -> float:
    """The rows a PostgreSQL plan's (EXPLAIN ANALYZE, JSON) scans of ``relation`` read, kept or filtered."""
    own = 0.0
    if node.get("Relation Name") == relation:
        own = (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"]
    return own + sum(_rows_read(child, relation) for child in node.get("Plans", []))


def test_a_lookup_of_a_few_items_reads_their_rows_not_the_streams(seeded, store_url):
    # lookup_fast walks its values and probes the index for each, whatever statistics the
    # planner has. On PostgreSQL without them (autovacuum off here; a table grown since its
    # last ANALYZE elsewhere) "item_id = ANY(...) AND stream_id = ..." scanned the stream's every
    # row: a long program's impact reads grew 0.4 -> 2.8 s a round. (SQLite: pinned already.)
    if not store_url.startswith("postgresql"):
        pytest.skip("the plan of PostgreSQL without statistics")
    import json

    from loop.store._convert import lookup_sql

    seeded.add_items(STREAM, [{"item_id": f"j{k}"} for k in range(3000)])
    seeded.add_annotations(STREAM, pd.DataFrame({ITEM: [f"j{k}" for k in range(3000)], ANNOTATOR: "a", LABEL: 0}))
    with seeded._engine.connect() as conn:
        keys = [k for (k,) in conn.execute(sa.text("SELECT item_id FROM annotations ORDER BY id LIMIT 10"))]
        stream = conn.execute(sa.text("SELECT stream_id FROM annotations LIMIT 1")).scalar()
        sql = lookup_sql(conn, "annotations", "item_id", ["id", "label"], where="annotations.stream_id = %s")
        cursor = conn.connection.dbapi_connection.cursor()
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, (keys, stream))
        plan = cursor.fetchone()[0]
        plan = json.loads(plan) if isinstance(plan, str) else plan

    assert _rows_read(plan[0]["Plan"], "annotations") <= 20  # the 10 items' rows, not the 3,000 of the stream


def test_a_lookup_by_key_reads_the_keys_rows_not_the_tables(seeded, store_url):
    # The keyed lookups of every write (idempotency keys, item ids, task ids) on PostgreSQL:
    # without statistics an IN list of a few hundred keys is estimated to match every row and
    # planned as a scan of the table; a probe of the index per key reads only their rows.
    if not store_url.startswith("postgresql"):
        pytest.skip("the plan of PostgreSQL without statistics")
    import json

    from loop.store import _schema as S
    from loop.store._convert import lookup

    seeded.add_items(STREAM, [{"item_id": f"j{k}"} for k in range(5000)])
    seen: list = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement, parameters))

    with seeded._engine.connect() as conn:
        stream = conn.execute(sa.text("SELECT stream_id FROM items WHERE external_id = 'j0'")).scalar()
        sa.event.listen(conn, "before_cursor_execute", capture)
        wanted = [f"j{k}" for k in range(0, 5000, 25)]
        found = lookup(conn, S.items.c.external_id, wanted, S.items.c.external_id, S.items.c.id,
                       where=S.items.c.stream_id == stream)
        sa.event.remove(conn, "before_cursor_execute", capture)
        assert sorted(e for e, _ in found) == sorted(wanted)
        statement, parameters = seen[-1]
        plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters).scalar()
        plan = json.loads(plan) if isinstance(plan, str) else plan

    assert _rows_read(plan[0]["Plan"], "items") <= 2 * len(wanted)  # the 200 keys' rows, not the 5,010 items
