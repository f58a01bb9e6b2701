"""Parquet and CSV round trips, and Label Studio task JSON out and exports back in."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from loop.columns import ANNOTATOR, ITEM, LABEL, SECONDS
from loop.exceptions import SchemaError
from loop.store import EVIDENCE, IDEMPOTENCY_KEY, RATIONALE, TASK_ID, LabelStore

from .conftest import STREAM

CORE = [ITEM, ANNOTATOR, LABEL, SECONDS, RATIONALE, EVIDENCE, IDEMPOTENCY_KEY]


def _fresh_like(url: str, tmp_path) -> LabelStore:
    """A second store with the same stream, people and items (SQLite, whatever the source)."""
    other = LabelStore(f"sqlite:///{tmp_path / 'copy.db'}")
    other.create_stream(STREAM, ("neg", "neu", "pos"))
    for name in "abc":
        other.add_annotator(name, streams=[STREAM])
    other.add_items(STREAM, [{"item_id": f"i{k}"} for k in range(10)])
    return other


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_annotations_and_resolutions_round_trip(seeded, tmp_path, suffix):
    seeded.add_annotations(STREAM, [
        {ITEM: "i0", ANNOTATOR: "a", LABEL: 0, SECONDS: 4.5, RATIONALE: "clear", EVIDENCE: {"span": [1, 4]}},
        {ITEM: "i0", ANNOTATOR: "b", LABEL: 2, SECONDS: 7.0},
        {ITEM: "i1", ANNOTATOR: "c", LABEL: 1}])
    first = seeded.resolve(STREAM, "i0", 0, method="consensus")
    seeded.resolve(STREAM, "i0", 2, method="expert", supersedes=first.id, reason="sarcasm")
    seeded.resolve(STREAM, "i1", 1, method="auto", confidence=0.97)
    ann_path = seeded.export_annotations(STREAM, tmp_path / f"ann{suffix}")
    res_path = seeded.export_resolutions(STREAM, tmp_path / f"res{suffix}")
    with _fresh_like(seeded.url, tmp_path) as other:
        assert other.import_annotations(STREAM, ann_path).inserted == 3
        assert other.import_annotations(STREAM, ann_path).existing == 3
        assert other.import_resolutions(STREAM, res_path).inserted == 3
        assert other.import_resolutions(STREAM, res_path).existing == 3
        extras = (RATIONALE, EVIDENCE, IDEMPOTENCY_KEY)
        mine = seeded.annotations_frame(STREAM, extras=extras)[CORE]
        theirs = other.annotations_frame(STREAM, extras=extras)[CORE]
        pd.testing.assert_frame_equal(mine, theirs)
        cols = [ITEM, LABEL, "method", "confidence", "supersedes_key", "idempotency_key"]
        # Imported by generation (firsts, then corrections), so compare as sets of rows.
        def history(store):
            return store.resolutions_frame(STREAM)[cols].sort_values("idempotency_key").reset_index(drop=True)
        pd.testing.assert_frame_equal(history(seeded), history(other))
        assert other.resolved_labels(STREAM)[LABEL].tolist() == [2, 1]


def test_unknown_file_kind_is_refused(seeded, tmp_path):
    with pytest.raises(SchemaError, match="'path'"):
        seeded.export_annotations(STREAM, tmp_path / "x.xlsx")


def _with_tasks(store: LabelStore) -> pd.DataFrame:
    store.add_model_version("m1", uri="models:/sentiment/1")
    store.add_predictions(STREAM, "m1", pd.DataFrame({ITEM: ["i0", "i1"],
                                                      "probs": [[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]]}))
    store.add_tasks(STREAM, pd.DataFrame({ITEM: ["i0", "i1", "i2"], "guideline_version": 1}))
    return store.tasks_frame(STREAM)


def test_label_studio_tasks_carry_predictions_as_pre_annotations(seeded, tmp_path):
    tasks = _with_tasks(seeded)
    out = seeded.export_label_studio(STREAM, tmp_path / "tasks.json", from_name="sentiment", to_name="text")
    assert json.loads((tmp_path / "tasks.json").read_text()) == out
    assert [t["data"]["item_id"] for t in out] == ["i0", "i1", "i2"]
    assert out[0]["data"]["text"] == "review 0"  # the payload's fields become task data
    assert out[0]["data"]["labelloop_task_id"] == int(tasks["task_id"].iloc[0])
    pred = out[0]["predictions"][0]
    assert pred["model_version"] == "m1" and pred["score"] == pytest.approx(0.7)
    assert pred["result"][0] | {"id": None} == {"id": None, "from_name": "sentiment", "to_name": "text",
                                                  "type": "choices", "value": {"choices": ["pos"]}}
    assert out[1]["predictions"][0]["result"][0]["value"]["choices"] == ["neg"]
    assert "predictions" not in out[2]  # no prediction for i2


def test_label_studio_export_comes_back_as_annotations(seeded):
    tasks = _with_tasks(seeded)
    exported = seeded.export_label_studio(STREAM)
    for k, task in enumerate(exported):  # what Label Studio adds when people label
        task["annotations"] = [
            {"id": 100 + k, "completed_by": {"id": 1, "email": "a"}, "lead_time": 12.5,
             "created_at": "2024-03-01T10:00:00Z", "was_cancelled": False,
             "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["neu"]}},
                        {"from_name": "why", "to_name": "text", "type": "textarea", "value": {"text": ["hedged"]}}]},
            {"id": 200 + k, "completed_by": {"id": 2, "email": "b"}, "was_cancelled": True, "result": []}]
    result = seeded.import_label_studio(STREAM, exported)
    assert (result.inserted, result.existing) == (3, 0)
    assert seeded.import_label_studio(STREAM, exported).existing == 3
    frame = seeded.annotations_frame(STREAM, extras=(RATIONALE,))
    assert frame[LABEL].tolist() == [1, 1, 1] and frame[ANNOTATOR].tolist() == ["a", "a", "a"]
    np.testing.assert_allclose(frame[SECONDS], 12.5)
    assert frame[TASK_ID].tolist() == tasks["task_id"].tolist()
    assert frame[RATIONALE].tolist() == ["hedged"] * 3
    exported[0]["annotations"][0]["result"][0]["value"]["choices"] = ["ecstatic"]
    exported[0]["annotations"][0]["id"] = 999
    with pytest.raises(SchemaError, match="'label'"):
        seeded.import_label_studio(STREAM, exported)
