"""A program publishes guidance from its confused pairs, logs each version once, measures its impact."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import tracking as T
from experiments.config import parse_config
from experiments.program import run_program
from loop.store import LabelStore

GUIDED = {"program": {"rounds": 4, "items_per_round": 100, "budget_per_round": 8.0, "calibration_items": 60,
                      "holdout_items": 150, "audit_rate": 0.05},
          "guidance": {"publish_round": 2, "pairs": 2, "clarity": 0.9, "adoption_half_life_days": 0.5},
          "tracking": {"uri": "none"}, "store": {"url": "sqlite://"}}


@pytest.fixture(scope="module")
def guided_run():
    cfg = parse_config(GUIDED)
    store, tracker = LabelStore("sqlite://"), T.MemoryTracker()
    result = run_program(cfg, store=store, tracker=tracker)
    return result, store, tracker


def test_the_program_publishes_a_version_from_its_confused_pairs(guided_run):
    result, store, tracker = guided_run
    g = store.guideline(result.stream)
    assert g.version == 1 and g.author == "labelloop program" and g.published_at is not None
    pairs = g.examples["pairs"]
    assert 1 <= len(pairs) <= 2 and all(f"## {a} vs {b}" in g.text for a, b in pairs)
    assert tracker.tags[T.TAG_GUIDANCE].startswith("round 2: published version 1 for ")


def test_each_version_is_logged_once_as_markdown_and_json(guided_run):
    result, store, tracker = guided_run
    g = store.guideline(result.stream)
    assert tracker.tags[T.TAG_GUIDELINE_VERSION] == "1"
    assert tracker.texts[T.GUIDELINE_MD.format(version=1)] == g.text
    meta = json.loads(tracker.texts[T.GUIDELINE_JSON.format(version=1)])
    assert meta["version"] == 1 and meta["pairs"] == g.examples["pairs"] and meta["examples"] == g.examples
    assert [p for p in tracker.texts if p.startswith("guidelines/")] == ["guidelines/v1.md", "guidelines/v1.json"]


def test_the_impact_is_logged_with_its_truth_companion(guided_run):
    _, _, tracker = guided_run
    final = tracker.history().loc[4]
    for name in (T.GUIDELINE_GAIN, "guideline_gain_ci_low", "guideline_gain_ci_high", "guideline_baseline_accuracy",
                 T.TRUE_GUIDELINE_GAIN):
        assert np.isfinite(final[name]), name
    assert final["guideline_gain_ci_low"] <= final[T.GUIDELINE_GAIN] <= final["guideline_gain_ci_high"]
    table = tracker.tables[T.GUIDELINE_IMPACT_CSV]
    assert {"before", "after"} == set(table["phase"]) and (table["answers"] > 0).all()
    assert "graded against resolved labels" in tracker.tags[T.TAG_GUIDELINE_IMPACT]


def test_the_simulated_crowd_follows_a_guideline_once_its_delay_has_passed():
    """Clarity 1 removes the pair's confusion for whoever follows it; experts are untouched."""
    from experiments.ports import Request, SimulatedWorkforce
    from experiments.world import build_world
    from loop.simulate import Guideline

    world = build_world(parse_config(GUIDED))
    truth = world.truth
    threes = truth.index[truth.to_numpy() == 3][:150]
    wf = SimulatedWorkforce(world)

    def eights(round_: int) -> int:
        ticket = wf.submit(Request(threes, labels_per_item=3, round=round_), rng=np.random.default_rng(round_))
        return int((wf.collect(ticket)["label"] == 8).sum())

    assert eights(1) > 0  # 3 and 8 are confused by this crowd
    wf.follow_guideline(Guideline("v1", {(3, 8): 1.0}), half_life_days=0.5, since=lambda r: r - 2.0,
                        rng=np.random.default_rng(0))
    assert eights(1) > 0      # asked before publication: nobody follows it yet
    assert eights(40) == 0    # 38 days later everyone does (delays are exponential, median half a day)
    delays = wf._delays
    assert set(delays.index) == set(world.workforce.crowd.ids)  # the crowd only, not the experts


def test_no_publish_round_no_guideline(tmp_path):
    cfg = parse_config({**GUIDED, "program": {**GUIDED["program"], "rounds": 1}, "guidance": {}})
    store, tracker = LabelStore("sqlite://"), T.MemoryTracker()
    result = run_program(cfg, store=store, tracker=tracker)
    assert not tracker.texts and T.TAG_GUIDELINE_VERSION not in tracker.tags
    assert T.GUIDELINE_GAIN not in tracker.history().columns
    assert store.events_frame(stream=result.stream).query("action == 'guideline.published'").empty


def test_a_guideline_artifact_never_carries_a_password():
    tracker = T.MemoryTracker()
    tracker.log_text("see postgresql://labelloop:s3cret@db/labels", "guidelines/v1.md")
    assert tracker.texts["guidelines/v1.md"] == "see postgresql://labelloop:***@db/labels"
