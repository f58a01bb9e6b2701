"""Stream-wide events (a drift alert) in the audit trail."""

from __future__ import annotations

import pytest

from loop.exceptions import SchemaError

from .conftest import STREAM


def test_an_alert_is_one_event_on_the_stream_with_its_content(seeded):
    report = {"summary": "drift: labels psi 0.5 > 0.25", "drifted": [{"kind": "label", "value": 0.5}],
              "relabel": [{"item_id": "i3", "reason": "labelled class 2, whose share moved"}]}
    before = len(seeded.events_frame())
    seeded.record_alert(STREAM, "drift.alert", report, reason="round 3: drift: labels psi 0.5 > 0.25")
    events = seeded.events_frame(stream=STREAM)
    alert = events[events["action"] == "drift.alert"]
    assert len(seeded.events_frame()) == before + 1 and len(alert) == 1
    row = alert.iloc[0]
    assert row["entity"] == "stream" and row["entity_id"] == seeded.stream(STREAM).id
    assert row["after"] == report and row["reason"] == "round 3: drift: labels psi 0.5 > 0.25"
    assert (seeded.events_frame(stream="other")["action"] != "drift.alert").all()


@pytest.mark.parametrize(("args", "name"), [
    (("nope", "drift.alert", {}, "r"), "stream"),
    ((STREAM, "drift alert", {}, "r"), "action"),
    ((STREAM, "x" * 51 + ".y", {}, "r"), "action"),
    ((STREAM, "drift.alert", ["a"], "r"), "after"),
    ((STREAM, "drift.alert", {"v": object()}, "r"), "after"),
    ((STREAM, "drift.alert", {}, 3), "reason"),
])
def test_a_bad_alert_is_refused_naming_the_field_and_nothing_is_written(seeded, args, name):
    stream, action, after, reason = args
    before = len(seeded.events_frame())
    with pytest.raises(SchemaError, match=f"'{name}'"):
        seeded.record_alert(stream, action, after, reason=reason)
    assert len(seeded.events_frame()) == before
