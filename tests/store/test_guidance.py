"""Drafting a guideline version from a stream's confused pairs; measuring its impact (SQLite and PostgreSQL)."""

from __future__ import annotations

import pandas as pd
import pytest

from experiments.guidance import addressed_pairs, guideline_impact
from loop.exceptions import SchemaError

from .conftest import CLASSES, STREAM

PARENT = "# Sentiment\nBe literal.\n## neu\nNo opinion at all."


def _confused_stream(store) -> None:
    """neg/pos confused (sarcasm), neu clean; consensus labels, two auto-accepted ones; answers
    with rationales and guideline_unclear flags."""
    store.create_stream(STREAM, CLASSES)
    for name, tier in (("ann", 1), ("bob", 1), ("eve", 3)):
        store.add_annotator(name, tier=tier, streams=[STREAM])
    rows = []  # item, label, probs, method
    for k in range(8):
        rows.append((f"n{k}", 0, [0.9, 0.05, 0.05], "consensus"))
        rows.append((f"u{k}", 1, [0.05, 0.9, 0.05], "consensus"))
        rows.append((f"p{k}", 2, [0.05, 0.05, 0.9], "consensus"))
    rows += [(f"x{k}", 2, [0.9, 0.05, 0.05], "consensus") for k in range(3)]   # pos labels the model calls neg
    rows += [(f"y{k}", 0, [0.05, 0.05, 0.9], "consensus") for k in range(2)]   # and the reverse
    rows += [("edge-neg", 0, [0.48, 0.04, 0.48], "expert"), ("edge-pos", 2, [0.45, 0.05, 0.5], "adjudicated"),
             ("auto-edge", 0, [0.49, 0.02, 0.49], "auto")]  # nearest the edge, but the model's own label
    store.add_items(STREAM, [{"item_id": r[0], "payload": {"text": r[0]}} for r in rows])
    store.add_model_version("m1")
    store.add_predictions(STREAM, "m1", [{"item_id": r[0], "probs": r[2]} for r in rows])
    store.add_resolutions(STREAM, pd.DataFrame({"item_id": [r[0] for r in rows], "label": [r[1] for r in rows],
                                                "method": [r[3] for r in rows]}))
    store.add_annotations(STREAM, pd.DataFrame([
        ("x0", "ann", 0, "sarcastic praise, so neg?", ["guideline_unclear"]),
        ("x0", "bob", 2, "says great", []),
        ("edge-neg", "ann", 2, "mixed feelings; see https://u:secret@host/x", ["guideline_unclear"]),
        ("u0", "ann", 1, "plain fact", ["guideline_unclear"]),  # neu: not a neg/pos item
    ], columns=["item_id", "annotator_id", "label", "rationale", "flags"]))


def test_draft_from_confused_pairs_is_a_draft_child_of_the_published_version(store):
    _confused_stream(store)
    parent = store.publish_guideline(STREAM, store.add_guideline(STREAM, PARENT, author="lead").version)
    version, draft = store.draft_guideline_from_pairs(STREAM, author="ops", pairs=1, per_class=1)
    assert version.published_at is None and version.parent_version == parent.version and version.author == "ops"
    assert version.text.startswith(PARENT) and "## neg vs pos" in version.text
    assert addressed_pairs(version) == [("neg", "pos")]
    # Trusted examples nearest the edge: not the auto-accepted one.
    assert version.examples["examples"]["neg vs pos"] == {"neg": [{"item_id": "edge-neg", "margin": 0.0}],
                                                           "pos": [{"item_id": "edge-pos", "margin": 0.05}]}
    row = draft.pairs.iloc[0]
    assert (row["answers"], row["guideline_unclear"]) == (3, 2)
    assert row["rationales"][0] == "sarcastic praise, so neg?" and "secret" not in " ".join(row["rationales"])
    event = store.events_frame(stream=STREAM).query("action == 'guideline.drafted'").iloc[-1]
    assert event["actor"] == "ops" and "neg/pos" in event["reason"]


def test_the_published_draft_is_what_a_neg_pos_task_previews(store):
    _confused_stream(store)
    version, _ = store.draft_guideline_from_pairs(STREAM, author="ops", pairs=1)
    store.publish_guideline(STREAM, version.version, actor="ops")
    task = store.add_tasks(STREAM, [{"item_id": "edge-pos"}]).ids[0]  # its likely pair: pos, neg
    preview = store.task_preview(task)
    assert preview.guideline_version == version.version
    assert preview.guideline_section.startswith("## neg vs pos") and "`edge-neg`" in preview.guideline_section


def test_drafting_needs_predictions_and_a_confusion(store):
    store.create_stream(STREAM, CLASSES)
    with pytest.raises(SchemaError, match="'stream'"):
        store.draft_guideline_from_pairs(STREAM, author="ops")
    with pytest.raises(SchemaError, match="'pairs'"):
        store.draft_guideline_from_pairs(STREAM, author="ops", pairs=0)
    with pytest.raises(SchemaError):
        store.draft_guideline_from_pairs("nope", author="ops")
    store.add_items(STREAM, [{"item_id": f"i{k}"} for k in range(3)])
    store.add_model_version("m1")
    store.add_predictions(STREAM, "m1", [{"item_id": f"i{k}", "probs": [1.0 if j == k else 0.0 for j in range(3)]}
                                         for k in range(3)])
    store.add_resolutions(STREAM, pd.DataFrame({"item_id": ["i0", "i1", "i2"], "label": [0, 1, 2],
                                                "method": "consensus"}))
    with pytest.raises(SchemaError, match="no confused pair"):
        store.draft_guideline_from_pairs(STREAM, author="ops")
    assert store.events_frame(stream=STREAM).query("action == 'guideline.drafted'").empty  # nothing stored


def test_impact_grades_the_crowd_against_expert_resolutions(store):
    _confused_stream(store)
    version, _ = store.draft_guideline_from_pairs(STREAM, author="ops", pairs=1)
    published = store.publish_guideline(STREAM, version.version).published_at
    _timed_answers(store, published)
    impact = guideline_impact(store, STREAM, version.version, n_boot=0)
    assert impact.pairs == [("neg", "pos")]
    summary = impact.summary().iloc[0]
    # ann's earlier wrong answer on edge-neg (an expert resolution) is graded too.
    assert (summary["answers_before"], summary["answers_after"]) == (21, 20)
    assert summary["baseline"] == pytest.approx(15 / 21) and summary["gain"] == pytest.approx(6 / 21, abs=0.02)
    assert impact.table()["answers"].sum() == 41
    with pytest.raises(SchemaError, match="'version'"):
        guideline_impact(store, STREAM, store.add_guideline(STREAM, "# draft", author="ops").version)
    with pytest.raises(SchemaError, match="'pairs'"):
        guideline_impact(store, STREAM, version.version, pairs=[("neg", "cat")])


def _timed_answers(store, published) -> None:
    """40 expert-resolved neg/pos items; the crowd's ann right 75% of the time before
    publication and always after, the expert eve always (not graded)."""
    stamp = pd.Timestamp(published)
    gold = [f"g{k}" for k in range(40)]
    store.add_items(STREAM, [{"item_id": g} for g in gold])
    store.add_resolutions(STREAM, pd.DataFrame({"item_id": gold, "label": [0, 2] * 20, "method": "expert"}))
    rows = []
    for k, g in enumerate(gold):
        truth = [0, 2][k % 2]
        before = k < 20
        when = stamp + pd.Timedelta(hours=(-72 + 2 * k) if before else 5 * (k - 20))
        right = (k % 4 != 0) if before else True
        rows.append((g, "ann", truth if right else 2 - truth, when))
        rows.append((g, "eve", truth, when))
    store.add_annotations(STREAM, pd.DataFrame(rows, columns=["item_id", "annotator_id", "label", "created_at"]))
