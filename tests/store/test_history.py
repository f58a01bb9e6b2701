"""A stream's history kept in memory: appending what is new gives what a whole read gives,
whoever wrote it."""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest

from loop.columns import ANNOTATOR, ITEM, LABEL, SECONDS
from loop.store import IDEMPOTENCY_KEY, RESOLUTION_ID, SUPERSEDES_KEY, LabelStore, StreamHistory, _reads

from .conftest import STREAM, counting_steps


def _labels(store: LabelStore) -> pd.Series:
    current = store.resolved_labels(STREAM)
    return pd.Series(current[LABEL].to_numpy(), index=current[ITEM].astype(str).to_numpy())


def test_the_history_follows_every_writer(seeded, store_url):
    history = StreamHistory(seeded, STREAM)
    assert history.annotations().empty and history.labels().empty
    seeded.add_annotations(STREAM, [{ITEM: "i3", ANNOTATOR: "a", LABEL: 0}, {ITEM: "i1", ANNOTATOR: "b", LABEL: 1}])
    seeded.add_resolutions(STREAM, pd.DataFrame({ITEM: ["i3", "i1"], LABEL: [0, 1]}), method="consensus")
    assert history.labels().index.tolist() == ["i1", "i3"]
    with LabelStore(store_url) as other:  # somebody else's answers and corrections
        other.add_annotations(STREAM, [{ITEM: "i3", ANNOTATOR: "c", LABEL: 2}, {ITEM: "i0", ANNOTATOR: "a", LABEL: 2},
                                       {ITEM: "i1", ANNOTATOR: "c", LABEL: 1, SECONDS: 30.0}])
    assert history.metrics().krippendorff_alpha == seeded.stream_metrics(STREAM).krippendorff_alpha
    with LabelStore(store_url) as other:
        # An annotator labels an item again: the later label counts (as the store's metrics count it).
        other.add_annotations(STREAM, [{ITEM: "i1", ANNOTATOR: "c", LABEL: 0, IDEMPOTENCY_KEY: "again"}])
        head = int(other.resolved_labels(STREAM).set_index(ITEM).loc["i3", RESOLUTION_ID])
        other.resolve(STREAM, "i3", 2, method="expert", supersedes=head)
        other.resolve(STREAM, "i0", 2, method="consensus")
    pd.testing.assert_frame_equal(history.annotations(), seeded.annotations_frame(STREAM))
    pd.testing.assert_series_equal(history.labels(), _labels(seeded), check_names=False, check_index_type=False)
    current = seeded.resolved_labels(STREAM)
    assert history.heads().tolist() == current[RESOLUTION_ID].tolist()
    got, want = history.resolutions(), seeded.resolutions_frame(STREAM)
    pd.testing.assert_frame_equal(got.drop(columns=SUPERSEDES_KEY), want.drop(columns=SUPERSEDES_KEY))
    # (A column of no values yet reads as objects, then as strings: the missing ones differ in kind only.)
    assert got[SUPERSEDES_KEY].fillna("").tolist() == want[SUPERSEDES_KEY].fillna("").tolist()
    kept, read = asdict(history.metrics()), asdict(seeded.stream_metrics(STREAM))
    assert kept.pop("stream") == read.pop("stream")
    assert kept == pytest.approx(read, nan_ok=True)  # running totals: equal up to rounding
    assert np.isfinite(kept["krippendorff_alpha"]) and np.isfinite(kept["median_resolution_hours"])
    assert np.isnan(history.metrics(resolution_hours=False).median_resolution_hours)


def _setup(store: LabelStore) -> None:
    store.create_stream(STREAM, ("neg", "neu", "pos"))
    for name in ("a", "b"):
        store.add_annotator(name, streams=[STREAM])
    store.add_items(STREAM, [{ITEM: f"i{k}"} for k in range(3)])


def test_a_row_committed_late_under_a_smaller_id_is_read_once(pg_url):
    # Writer 1 draws the smaller id and commits last; writer 2 commits the larger id, which
    # the history reads while writer 1 is still in flight.
    from loop.store import _annotations
    from loop.store._engine import write_transaction

    with LabelStore(pg_url) as store, LabelStore(pg_url) as writer:
        _setup(store)
        history = StreamHistory(store, STREAM)
        assert history.annotations().empty
        with write_transaction(writer._engine) as conn:
            prepared = _annotations.prepare(conn, writer.stream(STREAM), [{ITEM: "i0", ANNOTATOR: "a", LABEL: 0}])
            _annotations.insert(conn, prepared, actor=None, reason=None)
            store.add_annotations(STREAM, [{ITEM: "i0", ANNOTATOR: "b", LABEL: 2}])
            assert history.annotations()[ANNOTATOR].tolist() == ["b"]
        store.add_annotations(STREAM, [{ITEM: "i2", ANNOTATOR: "a", LABEL: 1}])
        got = history.annotations()
        # The late row once, in its id's place.
        assert list(zip(got[ITEM], got[ANNOTATOR])) == [("i0", "a"), ("i0", "b"), ("i2", "a")]
        pd.testing.assert_frame_equal(got, store.annotations_frame(STREAM))
        pd.testing.assert_frame_equal(history.annotations(), store.annotations_frame(STREAM))
        kept, read = asdict(history.metrics()), asdict(store.stream_metrics(STREAM))
        assert kept == pytest.approx(read, nan_ok=True) and kept["n_annotations"] == 3


def test_a_quiet_history_reads_only_what_is_new(store_url, monkeypatch):
    with LabelStore(store_url) as store:
        _setup(store)
        store.add_annotations(STREAM, [{ITEM: "i0", ANNOTATOR: "a", LABEL: 0}, {ITEM: "i1", ANNOTATOR: "a", LABEL: 1}])
        history = StreamHistory(store, STREAM)
        history.annotations()
        last = int(store.annotations_frame(STREAM)["annotation_id"].max())
        asked = []
        read = _reads.annotations_frame
        monkeypatch.setattr(_reads, "annotations_frame", lambda conn, stream, **kw: asked.append(kw.get("after")) or
                            read(conn, stream, **kw))
        # Once no writer is in flight, a read starts after the largest id (on PostgreSQL, other
        # clients' transactions on the server may hold the floor for a moment).
        deadline = time.monotonic() + 30
        while history.annotations() is not None and asked[-1] != last and time.monotonic() < deadline:
            time.sleep(0.05)
        assert asked[-1] == last


def test_the_history_knows_which_items_have_annotations(seeded):
    history = StreamHistory(seeded, STREAM)
    seeded.add_annotations(STREAM, [{ITEM: "i1", ANNOTATOR: "a", LABEL: 0}])
    history.annotations()
    assert history.annotated(["i0", "i1"]).tolist() == [False, True]
    assert history.annotated([]).tolist() == []


def _steps_of_reading_what_is_new(path, n_items: int) -> int:
    """SQLite's virtual-machine steps (in hundreds) of the history's reads of one new annotation
    and one new resolution, after a stream of ``n_items`` items, each labelled and resolved."""
    with LabelStore(f"sqlite:///{path}") as store:
        _setup(store)
        store.add_items(STREAM, [{ITEM: f"h{k}"} for k in range(n_items)])
        ids = [f"h{k}" for k in range(n_items)]
        store.add_annotations(STREAM, pd.DataFrame({ITEM: ids, ANNOTATOR: "a", LABEL: 0}))
        store.add_resolutions(STREAM, pd.DataFrame({ITEM: ids, LABEL: 0}), method="consensus")
        history = StreamHistory(store, STREAM)
        history.annotations(), history.labels()
        store.add_annotations(STREAM, [{ITEM: "i0", ANNOTATOR: "b", LABEL: 1}])
        store.add_resolutions(STREAM, pd.DataFrame({ITEM: ["i0"], LABEL: [1]}), method="consensus")
        with counting_steps(store) as steps:
            assert len(history.annotations()) == n_items + 1 and len(history.labels()) == n_items + 1
    return steps[0]


def test_reading_what_is_new_costs_what_is_new_not_the_history(tmp_path):
    # SQLite plans without statistics: a read "after id N" of one stream walked the stream's
    # index (its whole history) unless the query keeps the index out of it.
    small = _steps_of_reading_what_is_new(tmp_path / "small.db", 100)
    large = _steps_of_reading_what_is_new(tmp_path / "large.db", 20_000)
    assert large < 2 * small + 20, (small, large)
