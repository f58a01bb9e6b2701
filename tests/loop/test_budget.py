"""Budgeting: the plan stays within the budget, the carry, overspending charged."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loop.budget import Budget, audit_reserve, carry_over, planning_costs
from loop.exceptions import SchemaError
from loop.strategies import TaskCosts

EXPECTED = TaskCosts(crowd=1.0, expert=5.0, adjudication_share=0.4)


def test_planning_costs_rise_to_what_labels_cost_never_below_expected() -> None:
    costs = planning_costs(EXPECTED, [2.0, 4.0], [3.0])
    assert (costs.crowd, costs.expert, costs.adjudication_share) == (3.0, 5.0, 0.4)
    assert planning_costs(EXPECTED, [], []) == EXPECTED


def test_reserve_is_the_audit_overrun_plus_one_sd_of_spending() -> None:
    crowd, expert = np.array([1.0, 3.0]), np.array([6.0, 8.0])
    costs = planning_costs(EXPECTED, crowd, expert)  # crowd 2, expert 7
    reserve = audit_reserve(EXPECTED, costs, crowd, expert, audit_size=3, budget=10.0)
    spread = np.sqrt(3 * 1.0 ** 2 + 10.0 / 2.0 * 1.0 ** 2)
    assert reserve == pytest.approx(3 * (7.0 - 5.0) + spread)
    assert audit_reserve(EXPECTED, EXPECTED, [], [], audit_size=0, budget=10.0) == 0.0


def test_carry_charges_overspending_and_keeps_no_audit_saving() -> None:
    assert carry_over(10.0, 7.0, 4.0, 3.0) == 2.0  # the audit overran by 1
    assert carry_over(10.0, 7.0, 1.0, 3.0) == 3.0  # its saving is not handed out
    assert carry_over(10.0, 12.0, 0.0, 0.0) == -2.0


def test_budget_carries_unspent_and_overspent_amounts() -> None:
    budget = Budget(10.0, EXPECTED)
    books = budget.open_round([], [], audit_size=0)
    assert books.budget == books.plannable == 10.0
    budget.close_round(books, plan_cost=6.0, audit_cost=0.0)
    assert budget.open_round([], [], audit_size=0).budget == 14.0
    budget.close_round(budget.open_round([], [], audit_size=0), plan_cost=30.0, audit_cost=0.0)
    assert budget.carry == -16.0
    assert budget.open_round([], [], audit_size=0).budget == 0.0  # never negative


def test_a_budget_that_does_not_carry_stays_per_round() -> None:
    budget = Budget(10.0, EXPECTED, carries=False)
    budget.close_round(budget.open_round([], [], audit_size=0), plan_cost=3.0, audit_cost=0.0)
    assert budget.carry == 0.0 and budget.open_round([], [], audit_size=0).budget == 10.0


@settings(max_examples=60, deadline=None)
@given(per_round=st.floats(0, 100), spends=st.lists(st.floats(0, 1), min_size=1, max_size=8),
       audit=st.lists(st.floats(0, 20), min_size=1, max_size=8))
def test_planned_total_stays_within_the_budget_when_spending_follows_the_plan(per_round, spends, audit) -> None:
    # Each round spends a share of what it may plan, and its audit what it was planned at: the
    # plans and audits over the program never exceed rounds x per_round plus the audits' plan.
    budget = Budget(per_round, EXPECTED)
    total = 0.0
    for share, _ in zip(spends, audit):
        books = budget.open_round([], [], audit_size=2)
        assert 0.0 <= books.plannable <= books.budget
        plan_cost = share * books.plannable
        budget.close_round(books, plan_cost=plan_cost, audit_cost=books.planned_audit)
        total += plan_cost
    assert total <= per_round * min(len(spends), len(audit)) + 1e-9


def test_inputs_are_validated() -> None:
    with pytest.raises(SchemaError, match="'per_round'"):
        Budget(-1.0, EXPECTED)
    with pytest.raises(SchemaError, match="'expected'"):
        Budget(1.0, {"crowd": 1.0})
    with pytest.raises(SchemaError, match="'crowd_costs'"):
        planning_costs(EXPECTED, [[1.0]], [])
    with pytest.raises(SchemaError, match="'audit_size'"):
        audit_reserve(EXPECTED, EXPECTED, [], [], audit_size=-1, budget=1.0)


def test_the_public_names_are_listed_once_and_exist() -> None:
    import loop.budget as module

    assert sorted(module.__all__) == sorted(set(module.__all__))
    assert all(hasattr(module, name) for name in module.__all__)
