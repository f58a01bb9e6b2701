"""Revision 0003's columns: annotation flags and source, task kind, blindness and round."""

from __future__ import annotations

import pytest

from loop.exceptions import SchemaError

from .conftest import STREAM


def test_flags_and_source_round_trip(seeded):
    seeded.add_annotations(STREAM, [
        {"item_id": "i0", "annotator_id": "a", "label": "pos", "flags": ["model_wrong", "guideline_unclear"],
         "source": "api"},
        {"item_id": "i1", "annotator_id": "a", "label": "neg"},
    ])
    frame = seeded.annotations_frame(STREAM, extras=("flags", "source")).sort_values("item_id")
    assert frame["flags"].tolist() == [["guideline_unclear", "model_wrong"], []]
    assert frame["source"].tolist() == ["api", None]


@pytest.mark.parametrize("flags", [["bogus"], {"model_wrong": True}, 3])
def test_unknown_flags_are_refused_naming_the_field(seeded, flags):
    with pytest.raises(SchemaError, match="flags"):
        seeded.add_annotations(STREAM, [{"item_id": "i0", "annotator_id": "a", "label": "pos", "flags": flags}])
    assert seeded.annotations_frame(STREAM).empty


def test_a_retry_with_other_flags_is_a_conflict_not_an_overwrite(seeded):
    from loop.exceptions import ConflictError

    row = {"item_id": "i0", "annotator_id": "a", "label": "pos", "idempotency_key": "k1"}
    seeded.add_annotations(STREAM, [row])
    with pytest.raises(ConflictError):
        seeded.add_annotations(STREAM, [{**row, "flags": ["model_wrong"]}])


def test_task_kind_blind_and_round(seeded):
    ids = seeded.add_tasks(STREAM, [{"item_id": "i0", "kind": "double_blind", "round": 2},
                                    {"item_id": "i1", "annotator_id": "a"},
                                    {"item_id": "i2", "kind": "expert", "tier": 2, "blind": True}]).ids
    blind, plain, expert = (seeded.task(i) for i in ids)
    assert (blind.kind, blind.blind, blind.round) == ("double_blind", True, 2)
    assert (plain.kind, plain.blind, plain.round, plain.assigned_at is not None) == ("label", False, None, True)
    assert (expert.kind, expert.blind) == ("expert", True)
    frame = seeded.tasks_frame(STREAM)
    assert frame["kind"].tolist() == ["double_blind", "label", "expert"]
    assert frame["blind"].tolist() == [True, False, True]


@pytest.mark.parametrize("row, field", [({"kind": "chat"}, "kind"), ({"kind": "audit", "blind": False}, "blind"),
                                        ({"blind": "yes"}, "blind"), ({"round": -1}, "round")])
def test_bad_task_fields_are_named(seeded, row, field):
    with pytest.raises(SchemaError, match=field):
        seeded.add_tasks(STREAM, [{"item_id": "i0", **row}])
    assert seeded.tasks_frame(STREAM).empty
