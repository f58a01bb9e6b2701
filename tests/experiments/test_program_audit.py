"""The program's audit when the experts run out: an item every expert has labelled already is
left out of the audit's draw, not asked of an expert who is not there."""

from __future__ import annotations

from experiments import tracking as T
from experiments.config import parse_config
from experiments.program import run_program
from loop.columns import ANNOTATOR, ITEM
from loop.store import LabelStore


def test_the_audit_skips_items_no_expert_is_left_for() -> None:
    # One expert, a wide expert route and an audit of half the items: items the expert has
    # labelled come up for audit every round.
    cfg = parse_config({
        "program": {"rounds": 2, "items_per_round": 60, "budget_per_round": 1000.0, "audit_rate": 0.5,
                    "calibration_items": 40, "holdout_items": 60, "seed": 0},
        "crowd": {"tiers": {"novice": 4, "experienced": 2, "expert": 1}},
        "thresholds": {"auto_accept_confidence": 0.999, "expert_margin": 0.4, "double_blind_issue_score": 0.99},
        "tracking": {"uri": "none"}, "store": {"url": "sqlite://"},
    })
    store = LabelStore("sqlite://")
    result = run_program(cfg, store=store, tracker=T.MemoryTracker())
    annotations = store.annotations_frame(result.stream)
    expert = annotations[annotations[ANNOTATOR].str.startswith("expert")]
    assert len(expert) > 0 and not expert.duplicated([ITEM, ANNOTATOR]).any()
    # The audit still ran: every round has an estimate.
    assert result.rounds.loc[1:, T.AUDIT_N].gt(0).all()
