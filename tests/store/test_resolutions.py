"""Final labels are never overwritten: corrections supersede, races conflict, and
resolved labels as of a version or a time are reproducible."""

from __future__ import annotations

import threading

import pandas as pd
import pytest
import sqlalchemy as sa

from loop.columns import ITEM, LABEL
from loop.exceptions import ConflictError, SchemaError
from loop.store import RESOLUTION_ID, SUPERSEDES, LabelStore, ResolutionMethod

from .conftest import STREAM, counting_steps


def test_a_correction_supersedes_and_the_history_keeps_both(seeded):
    first = seeded.resolve(STREAM, "i0", "pos", method="consensus", confidence=0.8)
    fix = seeded.resolve(STREAM, "i0", "neg", method=ResolutionMethod.EXPERT, supersedes=first.id, reason="sarcasm",
                         actor="expert-1")
    assert fix.supersedes == first.id and fix.method is ResolutionMethod.EXPERT
    history = seeded.resolutions_frame(STREAM)
    assert history[LABEL].tolist() == [2, 0] and history[SUPERSEDES].tolist()[1] == first.id
    assert seeded.resolved_labels(STREAM)[LABEL].tolist() == [0]
    events = seeded.events_frame(stream=STREAM, item_id="i0")
    superseded = events[events["action"] == "resolution.superseded"].iloc[0]
    assert superseded["before"] == {"resolution_id": first.id, "label": 2}
    assert superseded["after"]["label"] == 0 and superseded["reason"] == "sarcasm" and superseded["actor"] == "expert-1"
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), seeded._engine.begin() as conn:
        conn.execute(sa.text("UPDATE resolutions SET label = 1"))


def test_resolving_twice_without_superseding_is_a_conflict(seeded):
    first = seeded.resolve(STREAM, "i0", 1, method="auto")
    with pytest.raises(ConflictError, match=f"supersedes={first.id}"):
        seeded.resolve(STREAM, "i0", 2, method="adjudicated")


def test_a_retry_returns_the_first_resolution(seeded):
    first = seeded.resolve(STREAM, "i0", 1, method="auto", idempotency_key="job-7:i0")
    again = seeded.resolve(STREAM, "i0", 1, method="auto", idempotency_key="job-7:i0")
    assert again == first
    with pytest.raises(ConflictError, match="job-7:i0"):
        seeded.resolve(STREAM, "i0", 2, method="auto", idempotency_key="job-7:i0")
    assert len(seeded.resolutions_frame(STREAM)) == 1


def test_second_resolution_racing_the_first_loses(seeded):
    first = seeded.resolve(STREAM, "i0", 1, method="consensus")
    seeded.resolve(STREAM, "i0", 2, method="adjudicated", supersedes=first.id, actor="r1")
    with pytest.raises(ConflictError, match="already superseded"):
        seeded.resolve(STREAM, "i0", 0, method="adjudicated", supersedes=first.id, actor="r2")
    assert len(seeded.resolutions_frame(STREAM)) == 2


def test_concurrent_correctors_one_wins(seeded, store_url):
    first = seeded.resolve(STREAM, "i3", 1, method="consensus")
    outcomes, barrier = [], threading.Barrier(4)

    def correct(writer: int, label: int) -> None:
        with LabelStore(store_url) as mine:
            barrier.wait()
            try:
                mine.resolve(STREAM, "i3", label, method="expert", supersedes=first.id, idempotency_key=f"w{writer}")
                outcomes.append("won")
            except ConflictError:
                outcomes.append("conflict")

    threads = [threading.Thread(target=correct, args=(w, label)) for w, label in enumerate((0, 2, 0, 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict", "conflict", "conflict", "won"]
    assert len(seeded.resolutions_frame(STREAM)) == 2


def test_bad_resolutions_name_the_field(seeded):
    first = seeded.resolve(STREAM, "i0", 1, method="auto")
    other = seeded.resolve(STREAM, "i1", 1, method="auto")
    cases = [(dict(item_id="nope", label=1, method="auto"), "'item_id'"),
             (dict(item_id="i2", label="maybe", method="auto"), "'label'"),
             (dict(item_id="i2", label=1, method="vote"), "'method'"),
             (dict(item_id="i2", label=1, method="auto", confidence=2.0), "'confidence'"),
             (dict(item_id="i0", label=1, method="auto", supersedes=other.id), "'supersedes'"),
             (dict(item_id="i0", label=1, method="auto", supersedes=9999), "'supersedes'")]
    for kwargs, message in cases:
        with pytest.raises(SchemaError, match=message):
            seeded.resolve(STREAM, **kwargs)
    assert seeded.resolutions_frame(STREAM)[RESOLUTION_ID].tolist() == [first.id, other.id]


def test_resolved_labels_as_of_a_version_or_a_time_are_reproducible(seeded):
    batch = pd.DataFrame({ITEM: [f"i{k}" for k in range(5)], LABEL: [0, 1, 2, 0, 1]})
    assert seeded.add_resolutions(STREAM, batch, method="consensus").inserted == 5
    version = seeded.resolution_version()
    moment = seeded.resolutions_frame(STREAM)["resolved_at"].max()
    snapshot = seeded.resolved_labels(STREAM, as_of=version)
    current = seeded.resolved_labels(STREAM).set_index(ITEM)
    seeded.resolve(STREAM, "i0", 2, method="expert", supersedes=int(current.loc["i0", RESOLUTION_ID]))
    seeded.resolve(STREAM, "i9", 1, method="expert")
    pd.testing.assert_frame_equal(seeded.resolved_labels(STREAM, as_of=version), snapshot)
    pd.testing.assert_frame_equal(seeded.resolved_labels(STREAM, as_of=moment), snapshot)
    now = seeded.resolved_labels(STREAM).set_index(ITEM)[LABEL]
    assert now["i0"] == 2 and now["i9"] == 1 and len(now) == 6
    assert seeded.add_resolutions(STREAM, batch, method="consensus").existing == 5  # a retried job


def test_resolutions_after_a_version_are_what_changed_since(seeded):
    seeded.add_resolutions(STREAM, pd.DataFrame({ITEM: ["i0", "i1"], LABEL: [0, 1]}), method="consensus")
    version = seeded.resolution_version()
    head = int(seeded.resolved_labels(STREAM).set_index(ITEM).loc["i0", RESOLUTION_ID])
    seeded.resolve(STREAM, "i0", 2, method="expert", supersedes=head)
    seeded.resolve(STREAM, "i2", 1, method="consensus")
    since = seeded.resolutions_frame(STREAM, after=version)
    assert since[ITEM].tolist() == ["i0", "i2"] and since[SUPERSEDES].tolist()[0] == head
    assert seeded.resolutions_frame(STREAM, after=seeded.resolution_version()).empty


def test_batch_resolutions_are_all_or_nothing(seeded):
    seeded.resolve(STREAM, "i1", 1, method="auto")
    batch = pd.DataFrame({ITEM: ["i0", "i1"], LABEL: [0, 2]})  # i1 is already resolved
    with pytest.raises(ConflictError):
        seeded.add_resolutions(STREAM, batch, method="consensus")
    assert seeded.resolved_labels(STREAM)[ITEM].tolist() == ["i1"]


def _steps_of_correcting_one_label(path, n_other: int) -> int:
    """SQLite's steps (in hundreds) of resolving one item, beside ``n_other`` resolutions of
    another stream."""
    with LabelStore(f"sqlite:///{path}") as store:
        store.create_stream(STREAM, ("neg", "pos"))
        store.create_stream("busy", ("neg", "pos"))
        store.add_items("busy", [{ITEM: f"b{k}"} for k in range(n_other)])
        store.add_resolutions("busy", pd.DataFrame({ITEM: [f"b{k}" for k in range(n_other)], LABEL: 0}),
                              method="consensus")
        store.add_items(STREAM, [{ITEM: "i0"}])
        with counting_steps(store) as steps:
            store.add_resolutions(STREAM, pd.DataFrame({ITEM: ["i0"], LABEL: [1]}), method="consensus")
    return steps[0]


def test_resolving_an_item_costs_its_own_chain_not_every_resolution(tmp_path):
    # The current head of each item was looked up by item id alone, which no index serves:
    # each write scanned every resolution of every stream.
    small = _steps_of_correcting_one_label(tmp_path / "small.db", 10)
    large = _steps_of_correcting_one_label(tmp_path / "large.db", 20_000)
    assert large < 2 * small + 20, (small, large)
