"""The reads a live program needs: a stream's items in insertion order, and its annotators."""

from __future__ import annotations

from loop.store import LabelStore

from .conftest import STREAM


def test_items_frame_reads_payloads_in_insertion_order_and_only_what_is_new(seeded: LabelStore) -> None:
    items = seeded.items_frame(STREAM)
    assert list(items["item_id"]) == [f"i{k}" for k in range(10)]
    assert items["payload"].iloc[3] == {"text": "review 3"}
    assert items["item_row"].is_monotonic_increasing
    seeded.add_items(STREAM, [{"item_id": "late", "payload": {"features": [1.0, 2.0], "label": "pos"}}])
    new = seeded.items_frame(STREAM, after=int(items["item_row"].iloc[-1]))
    assert list(new["item_id"]) == ["late"] and new["payload"].iloc[0]["features"] == [1.0, 2.0]
    assert seeded.items_frame("other").empty


def test_annotators_frame_lists_the_streams_people(seeded: LabelStore) -> None:
    people = seeded.annotators_frame(STREAM)
    assert list(people["annotator_id"]) == ["a", "b", "c"]
    assert list(people["hourly_rate"]) == [36.0, 18.0, 0.0] and people["active"].all()
    assert list(seeded.annotators_frame("other")["annotator_id"]) == ["d"]
