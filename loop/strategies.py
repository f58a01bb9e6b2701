"""Annotation strategies: given a round's scored items and a budget, who looks at what.

A strategy is a function of a candidates frame (one row per item the program may still act
on) and a budget in cost units. :func:`plan_round` returns one :class:`Action` per item:

=================  =======================================================================
``keep``           nobody looks; the item's current label stays
``auto_accept``    the model's predicted label is taken (free)
``review``         one more crowd annotator labels it; the labels are aggregated
``expert``         one expert labels it; the expert's label is final
``double_blind``   two crowd annotators label it without seeing each other; when they
                   disagree an expert adjudicates
``triple``         two more crowd annotators; the majority of the three labels is final
=================  =======================================================================

The strategies compared by the program (:class:`Strategy`):

- ``random``: review items drawn uniformly at random, as many as the budget pays for;
- ``least_confidence``: review the items whose model confidence is lowest;
- ``cleanlab``: review the items whose current label has the lowest self-confidence (the
  model's probability of that label, cleanlab's ranking);
- ``triple_majority``: every new item gets two more crowd labels and the majority wins. It
  ignores the budget: its cost is the protocol's, which is what the others are compared to;
- ``tiered``: labelloop's routing (:func:`loop.routing.route`) on the scores, where the
  label-issue score sends suspected wrong labels (new or old) to double-blind relabelling,
  torn items to an expert, confident ones to auto-accept and the rest to review. Items sent
  to people are served by priority (highest first) until the budget is spent; the rest keep
  their label this round ("deferred") and are routed again next round; with
  ``deferred_accept``, a deferred item whose consensus confidently names another class takes
  it instead (free). The routing decisions
  can also come in precomputed (``decisions=``, e.g. from the Serve app's Router); the budget
  is then applied to them the same way.

Budgets are in the same cost units as the annotations' ``cost`` column. Each action has a
planned cost (:class:`TaskCosts`); an item is taken when the planned costs of all items taken
before it plus its own stay within the budget, in the strategy's order (a prefix: the budget
never skips an expensive item to take a cheaper one further down).

Pure functions: frames in, a frame out; randomness only through ``rng``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import pandas as pd

from ._validation import check_real, check_rng, fail, map_codes
from .columns import CONFIDENCE, ITEM, LABEL, PREDICTED, PRIORITY, REASON, ROUTE, SCORE_COLUMNS
from .routing import Route, RoutingThresholds, route

__all__ = ["ACTION", "IS_NEW", "PLAN_COLUMNS", "PLANNED_COST", "SELF_CONFIDENCE", "Action", "Strategy",
           "TaskCosts", "plan_round"]

ACTION = "action"
PLANNED_COST = "planned_cost"
SELF_CONFIDENCE = "self_confidence"  # the model's probability of the item's current label
IS_NEW = "is_new"  # the item arrived this round
PLAN_COLUMNS = (ITEM, ACTION, ROUTE, REASON, PRIORITY, PLANNED_COST)


class Strategy(str, Enum):
    """The annotation strategies the program compares."""

    RANDOM = "random"
    LEAST_CONFIDENCE = "least_confidence"
    CLEANLAB = "cleanlab"
    TRIPLE_MAJORITY = "triple_majority"
    TIERED = "tiered"

    def __str__(self) -> str:
        return self.value


class Action(str, Enum):
    """What happens to one item this round (see the module docstring)."""

    KEEP = "keep"
    AUTO_ACCEPT = "auto_accept"
    REVIEW = "review"
    EXPERT = "expert"
    DOUBLE_BLIND = "double_blind"
    TRIPLE = "triple"

    def __str__(self) -> str:
        return self.value

    @property
    def crowd_labels(self) -> int:
        """Crowd annotations the action asks for."""
        return {Action.REVIEW: 1, Action.DOUBLE_BLIND: 2, Action.TRIPLE: 2}.get(self, 0)


@dataclass(frozen=True)
class TaskCosts:
    """Expected cost of one annotation, used to plan a round within its budget.

    Parameters
    ----------
    crowd : float > 0
        Expected cost of one crowd annotation.
    expert : float > 0
        Expected cost of one expert annotation.
    adjudication_share : float in [0, 1], default=0.5
        Planned share of double-blind pairs that disagree and need the expert.

    Examples
    --------
    >>> TaskCosts(crowd=0.1, expert=0.3).planned(Action.DOUBLE_BLIND)
    0.35
    """

    crowd: float
    expert: float
    adjudication_share: float = 0.5

    def __post_init__(self) -> None:
        check_real(self.crowd, "crowd", low=0, low_open=True)
        check_real(self.expert, "expert", low=0, low_open=True)
        check_real(self.adjudication_share, "adjudication_share", low=0, high=1)

    def planned(self, action: Action | str) -> float:
        """Planned cost of one item under ``action``."""
        action = Action(action)
        cost = action.crowd_labels * self.crowd
        if action is Action.EXPERT:
            cost += self.expert
        elif action is Action.DOUBLE_BLIND:
            cost += self.adjudication_share * self.expert
        return round(cost, 12)


_ROUTE_ACTION = {Route.AUTO_ACCEPT.value: Action.AUTO_ACCEPT.value, Route.REVIEW.value: Action.REVIEW.value,
                 Route.EXPERT.value: Action.EXPERT.value, Route.DOUBLE_BLIND.value: Action.DOUBLE_BLIND.value}


def plan_round(candidates: pd.DataFrame, strategy: Strategy | str, *, budget: float, costs: TaskCosts,
               thresholds: RoutingThresholds | None = None,
               rng: np.random.Generator | int | None = None,
               decisions: pd.DataFrame | None = None, deferred_accept: float | None = None) -> pd.DataFrame:
    """Decide what happens to each candidate item this round.

    Parameters
    ----------
    candidates : DataFrame of n rows
        The scores frame of :func:`loop.routing.score_items` (``item_id, predicted,
        runner_up, confidence, margin, entropy, label_issue_score``) plus ``self_confidence``
        (the model's probability of the current label, in [0, 1]) and ``is_new`` (bool).
        Unique ``item_id``.
    strategy : Strategy or str
        One of ``random, least_confidence, cleanlab, triple_majority, tiered``.
    budget : float >= 0
        Cost units the round may spend (ignored by ``triple_majority``).
    costs : TaskCosts
        Planned cost of each action.
    thresholds : RoutingThresholds, optional
        ``tiered`` only: the routing policy, ``route(candidates, thresholds)``. The other
        strategies do not route, so they refuse thresholds rather than ignore them.
    rng : Generator or int, optional
        Required by ``random``.
    decisions : DataFrame, optional
        ``tiered`` only, instead of ``thresholds``: routing decisions already made for the
        candidates (the output of :func:`loop.routing.route`, columns ``item_id, route,
        reason, priority``, one row per candidate in any order), e.g. by the Serve app's
        Router under its own thresholds. ``tiered`` takes exactly one of the two.
    deferred_accept : float in (0, 1], optional
        ``tiered`` only (default off): an item routed to a person whom the budget cannot pay
        for this round takes ``predicted`` (action ``auto_accept``) instead of keeping its label
        when ``predicted`` is another class with ``confidence >= deferred_accept``; the
        candidates then need ``label``, the current label in the codes of ``predicted``. When
        the routing decides on a consensus of the model and the annotators, a label that
        consensus doubts this much is worse to keep for another round than the consensus.

    Returns
    -------
    DataFrame of n rows, in the order of ``candidates``
        Columns ``item_id, action, route, reason, priority, planned_cost``. ``route`` is the
        routing decision of ``tiered`` (empty string for other strategies), ``priority`` is
        higher for items served first (the strategy's order), ``planned_cost`` is 0 for
        ``keep`` and ``auto_accept``. Except under ``triple_majority``, the planned costs
        sum to at most ``budget``.

    Raises
    ------
    SchemaError
        Missing columns, an unknown strategy, a negative budget, a missing ``rng`` where the
        strategy needs one, ``thresholds`` or ``decisions`` for a strategy other than
        ``tiered``, neither or both of them for ``tiered``, or ``decisions`` that do not
        match the candidates.

    Examples
    --------
    >>> from loop.routing import score_items
    >>> scores = score_items([[0.99, 0.01], [0.6, 0.4], [0.55, 0.45]], classes=[0, 1])
    >>> cands = scores.assign(self_confidence=[0.99, 0.4, 0.55], is_new=True)
    >>> plan = plan_round(cands, "cleanlab", budget=0.1, costs=TaskCosts(crowd=0.1, expert=0.3))
    >>> plan["action"].tolist()
    ['keep', 'review', 'keep']
    """
    strategy = _check_strategy(strategy)
    frame = _check_candidates(candidates)
    budget = check_real(budget, "budget", low=0)
    if not isinstance(costs, TaskCosts):
        raise fail("costs", "a TaskCosts", type(costs).__name__)
    if deferred_accept is not None:
        deferred_accept = check_real(deferred_accept, "deferred_accept", low=0, low_open=True, high=1)
        if LABEL not in frame.columns:
            raise fail("candidates", "a label column (the current label) with deferred_accept",
                       f"a frame with columns {list(frame.columns)}")
    if strategy is not Strategy.TIERED:
        # Only tiered routes; a policy handed to another strategy would have no effect.
        for name, value in (("thresholds", thresholds), ("decisions", decisions),
                            ("deferred_accept", deferred_accept)):
            if value is not None:
                raise fail(name, f"None for the {strategy.value} strategy (only tiered routes)",
                           f"a {type(value).__name__}")
    n = len(frame)
    if strategy is Strategy.TRIPLE_MAJORITY:
        new = frame[IS_NEW].to_numpy(dtype=bool)
        actions = np.where(new, Action.TRIPLE.value, Action.KEEP.value).astype(object)
        reasons = np.where(new, "new item: two more crowd labels, majority of three", "old item: kept").astype(object)
        return _plan(frame, actions, np.full(n, ""), reasons, new.astype(np.float64), costs)
    if strategy is Strategy.TIERED:
        return _plan_tiered(frame, budget, costs, thresholds, decisions, deferred_accept)
    order, priority, reasons = _ranking(frame, strategy, rng)
    take = _within_budget(np.full(n, costs.planned(Action.REVIEW)), order, budget)
    actions = np.where(take, Action.REVIEW.value, Action.KEEP.value).astype(object)
    reasons = np.where(take, reasons, reasons + "; not reviewed: over budget").astype(object)
    return _plan(frame, actions, np.full(n, ""), reasons, priority, costs)


def _ranking(frame: pd.DataFrame, strategy: Strategy, rng: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The review order of a ranking strategy, a priority (higher = earlier) and reasons."""
    n = len(frame)
    if strategy is Strategy.RANDOM:
        if rng is None:
            raise fail("rng", "a numpy.random.Generator or an int seed for the random strategy", "None")
        keys = check_rng(rng).random(n)
        order = np.argsort(keys, kind="stable")
        return order, 1.0 - keys, np.full(n, "random review", dtype=object)
    if strategy is Strategy.LEAST_CONFIDENCE:
        signal, text = frame[CONFIDENCE].to_numpy(dtype=np.float64), "confidence"
    else:
        signal, text = frame[SELF_CONFIDENCE].to_numpy(dtype=np.float64), "self-confidence of the label"
    order = np.argsort(signal, kind="stable")
    reasons = text + " " + pd.Series(signal).map("{:.3f}".format).to_numpy(dtype=object)
    return order, 1.0 - signal, reasons


def _plan_tiered(frame: pd.DataFrame, budget: float, costs: TaskCosts, thresholds: RoutingThresholds | None,
                 decisions: pd.DataFrame | None, deferred_accept: float | None) -> pd.DataFrame:
    if decisions is not None and thresholds is not None:
        # The decisions were routed under somebody's thresholds (the Router's); these would be
        # ignored, and need not be the same.
        raise fail("thresholds", "None when decisions are given (they are routed already)", "a RoutingThresholds")
    if decisions is not None:
        decided = _check_decisions(decisions, frame)
    elif not isinstance(thresholds, RoutingThresholds):
        raise fail("thresholds", "a RoutingThresholds for the tiered strategy (or its decisions)",
                   type(thresholds).__name__)
    else:
        decided = route(frame, thresholds)
    routes = decided[ROUTE].to_numpy(dtype=object)
    # Under tiered every settled item is a candidate each round: arrays, not a dict map of each.
    wanted = map_codes(routes, _ROUTE_ACTION, dtype=object)
    priority = decided[PRIORITY].to_numpy(dtype=np.float64)
    person = routes != Route.AUTO_ACCEPT.value
    planned = np.where(person, map_codes(wanted, _planned_costs(costs)), 0.0)
    # Highest priority first; ties keep the candidates' order.
    order = np.argsort(-priority, kind="stable")
    order = order[person[order]]
    take = _within_budget(planned, order, budget)
    deferred = person & ~take
    actions = np.where(deferred, Action.KEEP.value, wanted).astype(object)
    reasons = decided[REASON].to_numpy(dtype=object).copy()
    reasons[deferred] = reasons[deferred] + "; deferred: over budget"  # not every candidate's reason
    if deferred_accept is not None:
        doubted = deferred & (frame[PREDICTED].to_numpy() != frame[LABEL].to_numpy()) & \
            (frame[CONFIDENCE].to_numpy(dtype=np.float64) >= deferred_accept)
        actions[doubted] = Action.AUTO_ACCEPT.value
        reasons[doubted] = reasons[doubted] + f"; the consensus (confidence >= {deferred_accept:g}) replaces the label"

    return _plan(frame, actions, routes, reasons, priority, costs)


def _within_budget(planned: np.ndarray, order: np.ndarray, budget: float) -> np.ndarray:
    """Mask of the items in the longest prefix of ``order`` whose planned costs fit ``budget``."""
    take = np.zeros(planned.shape[0], dtype=bool)
    # A tiny tolerance so that a budget of exactly k tasks pays for k tasks despite rounding.
    fits = np.cumsum(planned[order]) <= budget * (1 + 1e-9) + 1e-12
    take[order[: int(np.argmin(fits)) if not fits.all() else order.size]] = True
    return take


def _plan(frame: pd.DataFrame, actions: np.ndarray, routes: np.ndarray, reasons: np.ndarray,
          priority: np.ndarray, costs: TaskCosts) -> pd.DataFrame:
    return pd.DataFrame({
        ITEM: frame[ITEM].array,  # as it is: a conversion there and back costs every candidate's id
        ACTION: pd.Series(actions, dtype="str"),
        ROUTE: pd.Series(routes, dtype="str"),
        REASON: pd.Series(reasons, dtype="str"),
        PRIORITY: np.asarray(priority, dtype=np.float64),
        PLANNED_COST: map_codes(actions, _planned_costs(costs), dtype=np.float64),
    }, columns=list(PLAN_COLUMNS))


def _planned_costs(costs: TaskCosts) -> dict[str, float]:
    return {a.value: costs.planned(a) for a in Action}


def _check_strategy(value: Any) -> Strategy:
    try:
        return Strategy(value)
    except ValueError:
        raise fail("strategy", f"one of {[s.value for s in Strategy]}", repr(value)) from None


def _check_decisions(value: Any, frame: pd.DataFrame) -> pd.DataFrame:
    """Routing decisions for exactly the candidates, put in the candidates' order."""
    columns = [ITEM, ROUTE, REASON, PRIORITY]
    if not isinstance(value, pd.DataFrame) or any(c not in value.columns for c in columns):
        raise fail("decisions", f"a DataFrame with columns {columns} (the output of loop.routing.route)",
                   f"a {type(value).__name__}" if not isinstance(value, pd.DataFrame)
                   else f"a frame with columns {list(value.columns)}")
    ids = value[ITEM].astype(str)
    wanted = frame[ITEM].astype(str)
    # Object arrays: pandas' Arrow-backed str isin costs ~10 us an item (0.1 s a round at 25k candidates).
    mine, theirs = ids.to_numpy(dtype=object), wanted.to_numpy(dtype=object)
    # Decisions routed from the candidates come in their order: then no lookup is needed.
    in_order = len(mine) == len(theirs) and bool((mine == theirs).all())
    # In the candidates' order the ids are theirs, unique (_check_candidates): no second check.
    if len(ids) != len(wanted) or not in_order and (pd.Index(mine, dtype=object).has_duplicates or
                                                    not pd.Index(theirs, dtype=object).isin(mine).all()):
        raise fail("decisions", "one row per candidate item", f"{len(ids)} rows for {len(wanted)} candidates "
                   "with other or duplicate item ids")
    routes = value[ROUTE].astype(str)
    unknown = routes[~routes.isin(list(_ROUTE_ACTION))]
    if len(unknown):
        raise fail("decisions.route", f"values among {list(_ROUTE_ACTION)}", repr(unknown.iloc[0]))
    priority = value[PRIORITY].to_numpy(dtype=np.float64)
    if not np.isfinite(priority).all():
        raise fail("decisions.priority", "finite numbers", "NaN or inf")
    value = value.assign(**{ITEM: ids})
    if in_order:  # as the lookup below lays it out: the item id first, a fresh index
        return value[[ITEM, *(c for c in value.columns if c != ITEM)]].reset_index(drop=True)
    return value.set_index(ITEM).loc[wanted.to_numpy()].reset_index()


def _check_candidates(value: Any) -> pd.DataFrame:
    if not isinstance(value, pd.DataFrame):
        raise fail("candidates", "a DataFrame (the scores frame plus self_confidence and is_new)",
                   f"a {type(value).__name__}")
    needed = [c for c in (*SCORE_COLUMNS, SELF_CONFIDENCE, IS_NEW) if c not in value.columns]
    if needed:
        raise fail("candidates", f"a frame with columns {[*SCORE_COLUMNS, SELF_CONFIDENCE, IS_NEW]}",
                   f"a frame missing {needed}")
    if value[ITEM].duplicated().any():
        raise fail("candidates", "unique item ids", f"duplicates {value.loc[value[ITEM].duplicated(), ITEM].tolist()[:5]}")
    self_conf = value[SELF_CONFIDENCE].to_numpy(dtype=np.float64)
    if not np.all((self_conf >= 0) & (self_conf <= 1)):
        raise fail(f"candidates.{SELF_CONFIDENCE}", "values in [0, 1]", "values outside it or NaN")
    return value.reset_index(drop=True)
