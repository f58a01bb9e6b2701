"""Strategies: one action per item, within budget, in each strategy's order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loop.exceptions import SchemaError
from loop.routing import RoutingThresholds, score_items
from loop.strategies import (ACTION, IS_NEW, PLAN_COLUMNS, PLANNED_COST, SELF_CONFIDENCE, Action, Strategy,
                             TaskCosts, plan_round)

COSTS = TaskCosts(crowd=0.1, expert=0.3, adjudication_share=0.5)
THRESHOLDS = RoutingThresholds(auto_accept_confidence=0.9, expert_margin=0.1, double_blind_issue_score=0.7)


def candidates(n: int = 40, seed: int = 0, k: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(k, 0.4), size=n)
    labels = rng.integers(0, k, size=n)
    issue = rng.random(n)
    scores = score_items(probs, item_ids=[f"i{i}" for i in range(n)], label_issue_scores=issue)
    return scores.assign(**{SELF_CONFIDENCE: probs[np.arange(n), labels], IS_NEW: np.arange(n) % 2 == 0})


def policy(strategy: Strategy | str) -> RoutingThresholds | None:
    """The thresholds a strategy takes: tiered's routing policy, None for the others."""
    return THRESHOLDS if Strategy(strategy) is Strategy.TIERED else None


@pytest.mark.parametrize("strategy", list(Strategy))
def test_one_action_per_item_in_input_order(strategy):
    frame = candidates()
    plan = plan_round(frame, strategy, budget=1.0, costs=COSTS, thresholds=policy(strategy), rng=0)
    assert list(plan.columns) == list(PLAN_COLUMNS)
    assert plan["item_id"].tolist() == frame["item_id"].tolist()
    assert set(plan[ACTION]) <= {a.value for a in Action}
    assert (plan[PLANNED_COST] >= 0).all()


@pytest.mark.parametrize("strategy", [Strategy.RANDOM, Strategy.LEAST_CONFIDENCE, Strategy.CLEANLAB, Strategy.TIERED])
@settings(max_examples=40, deadline=None)
@given(budget=st.floats(0, 5), seed=st.integers(0, 1000))
def test_budgeted_strategies_plan_within_budget(strategy, budget, seed):
    plan = plan_round(candidates(seed=seed), strategy, budget=budget, costs=COSTS, thresholds=policy(strategy),
                      rng=seed)
    assert plan[PLANNED_COST].sum() <= budget + 1e-9


@pytest.mark.parametrize("strategy", [Strategy.RANDOM, Strategy.LEAST_CONFIDENCE, Strategy.CLEANLAB, Strategy.TIERED])
@settings(max_examples=30, deadline=None)
@given(low=st.floats(0, 3), extra=st.floats(0, 3), seed=st.integers(0, 1000))
def test_more_budget_never_looks_at_fewer_items(strategy, low, extra, seed):
    frame = candidates(seed=seed)
    looked = []
    for budget in (low, low + extra):
        plan = plan_round(frame, strategy, budget=budget, costs=COSTS, thresholds=policy(strategy), rng=seed)
        looked.append(set(plan.loc[~plan[ACTION].isin(["keep", "auto_accept"]), "item_id"]))
    assert looked[0] <= looked[1]


def test_rankings_review_the_lowest_signal_first():
    frame = candidates(n=30, seed=3)
    budget = 5 * COSTS.crowd  # five reviews
    least = plan_round(frame, "least_confidence", budget=budget, costs=COSTS)
    reviewed = least.loc[least[ACTION] == "review", "item_id"]
    assert set(reviewed) == set(frame.nsmallest(5, "confidence")["item_id"])
    ranked = plan_round(frame, "cleanlab", budget=budget, costs=COSTS)
    reviewed = ranked.loc[ranked[ACTION] == "review", "item_id"]
    assert set(reviewed) == set(frame.nsmallest(5, SELF_CONFIDENCE)["item_id"])


def test_random_review_is_reproducible_and_needs_an_rng():
    frame = candidates()
    a = plan_round(frame, "random", budget=0.5, costs=COSTS, rng=7)
    b = plan_round(frame, "random", budget=0.5, costs=COSTS, rng=np.random.default_rng(7))
    pd.testing.assert_frame_equal(a, b)
    assert (a[ACTION] == "review").sum() == 5
    with pytest.raises(SchemaError, match="'rng'"):
        plan_round(frame, "random", budget=0.5, costs=COSTS)


def test_triple_majority_labels_every_new_item_whatever_the_budget():
    frame = candidates()
    plan = plan_round(frame, "triple_majority", budget=0.0, costs=COSTS)
    assert (plan[ACTION] == np.where(frame[IS_NEW], "triple", "keep")).all()
    assert plan[PLANNED_COST].sum() == pytest.approx(frame[IS_NEW].sum() * 2 * COSTS.crowd)


def test_tiered_follows_the_routes_and_defers_by_priority():
    frame = candidates(n=60, seed=5)
    free = plan_round(frame, "tiered", budget=1e9, costs=COSTS, thresholds=THRESHOLDS)
    # With an unlimited budget every item gets the action of its route.
    assert (free[ACTION] == free["route"]).all()
    tight = plan_round(frame, "tiered", budget=1.0, costs=COSTS, thresholds=THRESHOLDS)
    deferred = tight[(tight[ACTION] == "keep")]
    served = tight[~tight[ACTION].isin(["keep", "auto_accept"])]
    assert len(deferred) and len(served)
    assert deferred["reason"].str.endswith("deferred: over budget").all()
    # Auto-accept is free and never deferred; people are served highest priority first.
    assert (tight.loc[free[ACTION] == "auto_accept", ACTION] == "auto_accept").all()
    assert served["priority"].min() >= deferred["priority"].max()


def test_a_deferred_item_takes_a_confident_consensus_that_names_another_class():
    frame = candidates(n=60, seed=5)
    frame["label"] = np.random.default_rng(1).integers(0, 4, size=len(frame))
    kept = plan_round(frame, "tiered", budget=1.0, costs=COSTS, thresholds=THRESHOLDS)
    plan = plan_round(frame, "tiered", budget=1.0, costs=COSTS, thresholds=THRESHOLDS, deferred_accept=0.6)
    deferred = kept[ACTION].eq("keep").to_numpy()
    doubted = deferred & (frame["predicted"] != frame["label"]).to_numpy() & (frame["confidence"] >= 0.6).to_numpy()
    assert doubted.any() and (deferred & ~doubted).any()
    assert (plan.loc[doubted, ACTION] == "auto_accept").all() and (plan.loc[doubted, PLANNED_COST] == 0).all()
    assert plan.loc[doubted, "reason"].str.contains("consensus").all()
    # Everything else is planned as before: the same people, the same deferred labels kept.
    pd.testing.assert_frame_equal(plan[~doubted], kept[~doubted])


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"strategy": "cleanlab", "deferred_accept": 0.7}, "'deferred_accept'"),
    ({"strategy": "tiered", "thresholds": THRESHOLDS, "deferred_accept": 1.5}, "'deferred_accept'"),
    ({"strategy": "tiered", "thresholds": THRESHOLDS, "deferred_accept": 0.7, "no_label": True}, "'candidates'"),
])
def test_deferred_accept_is_checked(kwargs, field):
    frame = candidates().assign(label=0)
    if kwargs.pop("no_label", False):
        frame = frame.drop(columns="label")
    with pytest.raises(SchemaError, match=field):
        plan_round(frame, budget=1.0, costs=COSTS, **kwargs)


def test_tiered_needs_thresholds():
    with pytest.raises(SchemaError, match="'thresholds'"):
        plan_round(candidates(), "tiered", budget=1.0, costs=COSTS)


def test_tiered_takes_precomputed_decisions_in_any_order():
    from loop.routing import route

    frame = candidates(n=60, seed=7)
    decided = route(frame, THRESHOLDS)
    for budget in (1.0, 1e9):
        want = plan_round(frame, "tiered", budget=budget, costs=COSTS, thresholds=THRESHOLDS)
        shuffled = decided.sample(frac=1.0, random_state=0)
        got = plan_round(frame, "tiered", budget=budget, costs=COSTS, decisions=shuffled)
        pd.testing.assert_frame_equal(got, want)
    # The decisions are followed as given: everything routed to an expert.
    experts = decided.assign(route="expert", reason="asked by the router")
    plan = plan_round(frame, "tiered", budget=1e9, costs=COSTS, decisions=experts)
    assert (plan[ACTION] == "expert").all() and (plan["reason"] == "asked by the router").all()


def test_thresholds_are_taken_only_where_they_route():
    from loop.routing import route

    frame = candidates(n=10)
    # Tiered routes on thresholds or on decisions routed already, never on both: the
    # thresholds would be ignored.
    with pytest.raises(SchemaError, match="'thresholds'.*routed already"):
        plan_round(frame, "tiered", budget=1.0, costs=COSTS, thresholds=THRESHOLDS, decisions=route(frame, THRESHOLDS))
    # The other strategies do not route: thresholds (or decisions) given to them are refused.
    for strategy in (Strategy.RANDOM, Strategy.LEAST_CONFIDENCE, Strategy.CLEANLAB, Strategy.TRIPLE_MAJORITY):
        with pytest.raises(SchemaError, match=f"'thresholds'.*None for the {strategy.value} strategy"):
            plan_round(frame, strategy, budget=1.0, costs=COSTS, thresholds=THRESHOLDS, rng=0)
        with pytest.raises(SchemaError, match="'decisions'"):
            plan_round(frame, strategy, budget=1.0, costs=COSTS, decisions=route(frame, THRESHOLDS), rng=0)


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.iloc[1:], "'decisions'"),
    (lambda d: pd.concat([d.iloc[1:], d.iloc[1:2]]), "'decisions'"),
    (lambda d: d.drop(columns=["reason"]), "'decisions'"),
    (lambda d: d.assign(route="later"), "'decisions.route'"),
    (lambda d: d.assign(priority=np.nan), "'decisions.priority'"),
])
def test_bad_decisions_are_refused(change, message):
    from loop.routing import route

    frame = candidates(n=10)
    with pytest.raises(SchemaError, match=message):
        plan_round(frame, "tiered", budget=1.0, costs=COSTS, decisions=change(route(frame, THRESHOLDS)))


def test_task_costs():
    assert COSTS.planned("review") == pytest.approx(0.1)
    assert COSTS.planned("expert") == pytest.approx(0.3)
    assert COSTS.planned("double_blind") == pytest.approx(0.35)
    assert COSTS.planned("triple") == pytest.approx(0.2)
    assert COSTS.planned("keep") == COSTS.planned("auto_accept") == 0
    with pytest.raises(SchemaError, match="'crowd'"):
        TaskCosts(crowd=0, expert=1)


@pytest.mark.parametrize("bad, message", [
    (pd.DataFrame({"item_id": [1]}), "'candidates'"),
    ("frame", "'candidates'"),
])
def test_bad_candidates_are_refused(bad, message):
    with pytest.raises(SchemaError, match=message):
        plan_round(bad, "cleanlab", budget=1.0, costs=COSTS)


def test_bad_arguments_are_refused():
    frame = candidates()
    with pytest.raises(SchemaError, match="'strategy'"):
        plan_round(frame, "best", budget=1.0, costs=COSTS)
    with pytest.raises(SchemaError, match="'budget'"):
        plan_round(frame, "cleanlab", budget=-1.0, costs=COSTS)
    with pytest.raises(SchemaError, match="'candidates'"):
        plan_round(pd.concat([frame, frame]), "cleanlab", budget=1.0, costs=COSTS)
    with pytest.raises(SchemaError, match="self_confidence"):
        plan_round(frame.assign(**{SELF_CONFIDENCE: 2.0}), "cleanlab", budget=1.0, costs=COSTS)
