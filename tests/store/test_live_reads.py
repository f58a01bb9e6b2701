"""What a live program reads of a stream: its items in insertion order."""

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

