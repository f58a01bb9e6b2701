"""Budgeting a labelling program's rounds: what a round may plan, and what it carries on.

A program has ``per_round`` cost units a round. Planned and actual costs differ (an
annotation's seconds vary, and a program meets a few annotators whose speed decides what its
labels cost), so :class:`Budget` keeps the books:

- **Carry.** A round's budget is ``per_round`` plus what earlier rounds left unspent, minus
  what they overspent (never below 0), so every budgeted strategy spends the same over the
  program.
- **Planning costs** (:func:`planning_costs`). A round is planned at the higher of the
  expected cost of a crowd and an expert label and what they have actually cost so far.
- **Audit reserve** (:func:`audit_reserve`). Audits are planned at the expected expert cost;
  what a round's audit will probably cost beyond that, plus one standard deviation of the
  round's spending, is held back from the round's plan (and carried to the next when unspent).
- **Overspend** (:func:`carry_over`). What the audit did cost beyond its plan is charged like
  the strategy's own overspending; a saving on the audit is not handed out. So the total,
  audits included, stays within the planned total, also after the last round.

A budget that does not carry (``triple_majority``, whose cost is its protocol's) keeps a
carry of 0.

Pure functions and one small class of plain numbers; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._validation import check_int, check_real, fail
from .strategies import TaskCosts

__all__ = ["Budget", "RoundBudget", "audit_reserve", "carry_over", "planning_costs"]


def planning_costs(expected: TaskCosts, crowd_costs: Any, expert_costs: Any) -> TaskCosts:
    """The planned cost of a crowd and an expert label: the expected one, raised to the mean of
    what such labels have cost so far.

    Parameters
    ----------
    expected : TaskCosts
        Expected costs (over every annotator of the workforce).
    crowd_costs, expert_costs : array-like, shape (n,) and (m,)
        What each crowd label and each expert label of the stream has cost so far.

    Returns
    -------
    TaskCosts
        ``adjudication_share`` as expected.

    Examples
    --------
    >>> planning_costs(TaskCosts(crowd=1.0, expert=5.0), [1.5, 2.5], []).crowd
    2.0
    """
    crowd, expert = _costs(crowd_costs, "crowd_costs"), _costs(expert_costs, "expert_costs")
    crowd_cost = max(expected.crowd, float(crowd.mean())) if crowd.size else expected.crowd
    expert_cost = max(expected.expert, float(expert.mean())) if expert.size else expected.expert
    return TaskCosts(crowd=crowd_cost, expert=expert_cost, adjudication_share=expected.adjudication_share)


def audit_reserve(expected: TaskCosts, costs: TaskCosts, crowd_costs: Any, expert_costs: Any, *,
                  audit_size: int, budget: float) -> float:
    """What a round's plan holds back for its audit and the spread of its spending.

    ``audit_size * (costs.expert - expected.expert)`` (the audit's likely cost beyond its
    planned ``audit_size * expected.expert``) plus one standard deviation of the round's
    spending, ``sqrt(audit_size * sd_expert**2 + budget / costs.crowd * sd_crowd**2)`` (the
    sample standard deviations of the labels' costs so far; 0 with fewer than two).

    Parameters
    ----------
    expected : TaskCosts
        The expected costs the audit is planned at.
    costs : TaskCosts
        The round's planning costs (:func:`planning_costs`).
    crowd_costs, expert_costs : array-like, shape (n,) and (m,)
        What each crowd label and each expert label has cost so far.
    audit_size : int >= 0
        Items the round's audit will check.
    budget : float >= 0
        The round's budget.

    Returns
    -------
    float
    """
    crowd, expert = _costs(crowd_costs, "crowd_costs"), _costs(expert_costs, "expert_costs")
    audit_size = check_int(audit_size, "audit_size", low=0)
    budget = check_real(budget, "budget", low=0)
    spread_crowd = float(crowd.std()) if crowd.size > 1 else 0.0
    spread_expert = float(expert.std()) if expert.size > 1 else 0.0
    spread = np.sqrt(audit_size * spread_expert ** 2 + budget / costs.crowd * spread_crowd ** 2)
    return audit_size * (costs.expert - expected.expert) + float(spread)


def carry_over(budget: float, plan_cost: float, audit_cost: float, planned_audit: float) -> float:
    """What a round hands on: its budget less what its plan cost and less what its audit cost
    beyond ``planned_audit`` (a saving on the audit is not handed out). Negative: overspent.

    Examples
    --------
    >>> carry_over(10.0, plan_cost=8.0, audit_cost=3.0, planned_audit=2.0)
    1.0
    >>> carry_over(10.0, plan_cost=8.0, audit_cost=1.0, planned_audit=2.0)
    2.0
    """
    return budget - plan_cost - max(0.0, audit_cost - planned_audit)


@dataclass(frozen=True)
class RoundBudget:
    """One round's books, as :meth:`Budget.open_round` planned them.

    Attributes
    ----------
    budget : float
        ``per_round`` plus the carry, at least 0.
    costs : TaskCosts
        The planning costs.
    reserve : float
        Held back from the plan (:func:`audit_reserve`).
    planned_audit : float
        The audit's planned cost, ``audit_size * expected.expert``.
    """

    budget: float
    costs: TaskCosts
    reserve: float
    planned_audit: float

    @property
    def plannable(self) -> float:
        """What the strategy may plan: the budget less the reserve, at least 0."""
        return max(0.0, self.budget - self.reserve)


class Budget:
    """A program's budget across rounds: the carry, the planning costs, the audit reserve.

    Parameters
    ----------
    per_round : float >= 0
        Cost units a round.
    expected : TaskCosts
        Expected costs of a crowd and an expert label.
    carries : bool, default True
        False: every round gets ``per_round`` and the carry stays 0 (a strategy that ignores
        the budget by design).

    Attributes
    ----------
    carry : float
        What earlier rounds handed on (negative: overspent).

    Examples
    --------
    >>> budget = Budget(10.0, TaskCosts(crowd=1.0, expert=5.0))
    >>> books = budget.open_round([], [], audit_size=0)
    >>> books.plannable
    10.0
    >>> budget.close_round(books, plan_cost=12.0, audit_cost=0.0)
    >>> budget.open_round([], [], audit_size=0).budget
    8.0
    """

    def __init__(self, per_round: float, expected: TaskCosts, *, carries: bool = True) -> None:
        self.per_round = check_real(per_round, "per_round", low=0)
        if not isinstance(expected, TaskCosts):
            raise fail("expected", "a TaskCosts", type(expected).__name__)
        self.expected = expected
        self.carries = bool(carries)
        self.carry = 0.0

    def open_round(self, crowd_costs: Any, expert_costs: Any, *, audit_size: int) -> RoundBudget:
        """Plan a round, given what each crowd and expert label has cost so far and the audit's size."""
        budget = max(0.0, self.per_round + self.carry)
        costs = planning_costs(self.expected, crowd_costs, expert_costs)
        reserve = audit_reserve(self.expected, costs, crowd_costs, expert_costs, audit_size=audit_size, budget=budget)
        return RoundBudget(budget=budget, costs=costs, reserve=reserve,
                           planned_audit=audit_size * self.expected.expert)

    def close_round(self, books: RoundBudget, *, plan_cost: float, audit_cost: float) -> None:
        """Charge what the round's plan and audit did cost (:func:`carry_over`)."""
        if self.carries:
            self.carry = carry_over(books.budget, plan_cost, audit_cost, books.planned_audit)


def _costs(value: Any, name: str) -> np.ndarray:
    costs = np.asarray(value, dtype=np.float64).reshape(-1) if np.ndim(value) <= 1 else None
    if costs is None or not np.isfinite(costs).all() or (costs < 0).any():
        raise fail(name, "a 1-D array of finite costs >= 0", repr(value)[:60])
    return costs
