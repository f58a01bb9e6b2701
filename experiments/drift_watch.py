"""The program's drift check: each round's arrivals against the reference window, the alert,
and the targeted relabel queue (the math is :mod:`loop.drift`).

A program with ``drift.enabled`` keeps one :class:`DriftWatch`. From round
``drift.reference_rounds`` on, each round (:meth:`DriftWatch.check`):

1. *Reference.* The items of rounds ``0 .. reference_rounds - 1``: their features, the
   champion's predicted class (out of fold for the items it was trained on, as the program
   judges them) and their current labels. Refitted each round with this round's champion and
   labels, so that a new model or a fixed label is never taken for drift.
2. *Current window.* The round's new arrivals, the same three views
   (:meth:`loop.drift.DriftReference.check`); and the class views (predicted classes, labels)
   of every arrival since the reference, so that a class mix that moves a little each round is
   caught once it has added up (their threshold is scaled to the window's size).
3. *Alert.* When a view passes its threshold: an event ``drift.alert`` on the stream in the
   label store (``after``: the report, with the queue; ``reason``: the one-line summary), the
   report and the queue as MLflow artifacts (``drift/round_NN.csv``,
   ``drift/relabel_round_NN.csv``), the summary as the tag ``labelloop.drift``.
4. *Queue.* From the items the round's plan sends to no person (eligible, kept or
   auto-accepted), the drifted region
   ranked (:func:`loop.drift.relabel_queue`), or with ``drift.queue: blanket`` as many drawn
   uniformly; cut at ``floor(relabel_budget / planned cost of the action)``. The action is
   ``relabel_action``, or with ``auto`` (the default) chosen per alert by what drifted
   (:func:`choose_action`). When only the class mix moved (no feature or novelty finding: a
   prior shift), the class prior of the arrivals since the reference is re-estimated from the
   model's probabilities (:class:`loop.drift.PriorShift`, Saerens' EM), their posterior is
   corrected by it, and the items whose label the corrected posterior overturns join the region,
   ranked by the corrected label-issue score (:func:`prior_pool`); the estimate is in the alert.
   The program routes them with that action (their tasks and
   reasons, which name the action and why, like any other) and resolves them with the
   round's work.

Nothing here reads the truth: the program measures what the queue removed
(``true_drift_errors_removed``) only where the dataset knows it.
"""

from __future__ import annotations

import math
import numpy as np
import pandas as pd

from loop.columns import ITEM, LABEL, LABEL_ISSUE_SCORE, PRIORITY, REASON, ROUTE, RUNNER_UP
from loop.drift import (FEATURE, KS, LABELS, NOVELTY, PREDICTED, PREDICTION, PRIOR_DECISION, DriftReference,
                        DriftReport, PriorShift, blanket_queue, relabel_queue)
from loop.store import LabelStore
from loop.strategies import ACTION, Action, TaskCosts

from . import tracking as T
from .config import DriftConfig

__all__ = ["DRIFT_ALERT", "DriftWatch", "choose_action", "merge_queue", "pool_frame", "prior_pool", "queue_outcome"]

DRIFT_ALERT = "drift.alert"  # the store event's action
CLASS_MIX = (PREDICTION, LABELS)  # the views of which classes arrive
ITEM_LOOK = (FEATURE, KS, NOVELTY)  # the views of what the items look like


def choose_action(report: DriftReport, setting: str) -> tuple[Action, str]:
    """The relabel action of an alert and why (one phrase).

    ``setting`` is ``drift.relabel_action``: an explicit action is kept. ``auto``: ``expert``
    when a feature (PSI or KS) or novelty finding drifted, the items look new and the crowd,
    who have not seen them, is least to be trusted; ``double_blind`` when only the class mix
    moved (predicted classes and/or labels): the crowd labels those classes as well as before,
    and two agreeing crowd labels (an expert where they disagree) seldom overturn a right label,
    where a single expert, wrong about as often as the labels, breaks about as many as it fixes.
    """
    if setting != "auto":
        return Action(setting), f"drift.relabel_action {setting}"
    kinds = {f.kind for f in report.drifted}
    look = sorted(kinds & set(ITEM_LOOK))
    if look:
        return Action.EXPERT, f"auto: the items look new ({', '.join(look)} drifted)"
    mix = sorted(kinds & set(CLASS_MIX))
    return Action.DOUBLE_BLIND, f"auto: only the class mix moved ({', '.join(mix) or 'nothing else'} drifted)"


class DriftWatch:
    """The drift check of one program (module docstring).

    Parameters
    ----------
    cfg : DriftConfig
    n_classes : int
    store : LabelStore
    stream : str
    tracker : Tracker
    seed : int
        The blanket queue's draws (``[seed, 37, round]``).
    """

    def __init__(self, cfg: DriftConfig, *, n_classes: int, store: LabelStore, stream: str, tracker: T.Tracker,
                 seed: int) -> None:
        self.cfg, self.n_classes, self.store, self.stream, self.tracker = cfg, n_classes, store, stream, tracker
        self.seed = seed
        self.n_reference: int | None = None
        self.alerts: list[int] = []  # rounds with an alert
        # The last alert's relabel action and why (choose_action): the program routes its queue so.
        self.action: Action = Action.EXPERT if cfg.relabel_action == "auto" else Action(cfg.relabel_action)
        self.action_why = ""
        self.prior: PriorShift | None = None  # the last alert's re-estimated prior (a class-mix alert)

    def set_reference(self, n_items: int) -> None:
        """The first ``n_items`` arrived items (in arrival order) are the reference window."""
        self.n_reference = n_items

    def check(self, round_: int, *, x: np.ndarray, predicted: np.ndarray, labels: np.ndarray,
              current: np.ndarray, pool: pd.DataFrame, costs: TaskCosts, probs: np.ndarray | None = None,
              posterior: np.ndarray | None = None) -> tuple[DriftReport | None, pd.DataFrame]:
        """The round's report and relabel queue (empty without an alert).

        Parameters
        ----------
        x, predicted, labels : arrays over every arrived item, in arrival order
        current : ndarray of int
            Arrival positions of the round's new items.
        pool : DataFrame
            Items that may be relabelled (``item_id, label, predicted, label_issue_score`` and
            ``position``, their arrival position).
        costs : TaskCosts
            The round's planned costs: the queue's length is the budget over the action's.
        probs, posterior : ndarray of shape (n_arrived, k), optional
            The model's probabilities and the posterior the labels were decided on (model and
            annotators), over every arrived item. With ``probs``, an alert where only the class
            mix moved re-estimates the prior (:func:`prior_pool`).
        """
        if self.n_reference is None or len(current) == 0:
            return None, _no_queue()
        ref, since = slice(0, self.n_reference), slice(self.n_reference, len(predicted))
        reference = DriftReference(self.cfg.thresholds()).fit(x[ref], predicted[ref], labels[ref],
                                                              n_classes=self.n_classes)
        after = (predicted[since], labels[since]) if len(predicted) - self.n_reference > len(current) else None
        report = reference.check(x[current], predicted[current], labels[current], since=after)
        if not report.alert:
            return report, _no_queue()
        action, why = choose_action(report, self.cfg.relabel_action)
        self.action, self.action_why = action, why
        self.prior = None
        if probs is not None and not {f.kind for f in report.drifted} & set(ITEM_LOOK):
            self.prior = PriorShift().fit(probs[ref], probs[since])
            pool = prior_pool(pool, self.prior, probs if posterior is None else posterior, self.n_reference)
        max_items = int(math.floor(self.cfg.relabel_budget / costs.planned(action) + 1e-9))
        where = pool["position"].to_numpy(dtype=np.int64)
        if self.cfg.queue == "blanket":
            queue = blanket_queue(pool, max_items=max_items, rng=np.random.default_rng([self.seed, 37, round_]))
        else:
            queue = relabel_queue(report, reference, pool, x[where], x[current], max_items=max_items)
        if len(queue):
            queue = queue.assign(**{REASON: queue[REASON] + f"; relabel by {action.value} ({why})"})
        self.alerts.append(round_)
        self._record(round_, report, queue)
        return report, queue

    def _record(self, round_: int, report: DriftReport, queue: pd.DataFrame) -> None:
        after = {**report.to_dict(), "round": round_, "queue": self.cfg.queue,
                 "relabel_action": self.action.value, "relabel_action_why": self.action_why,
                 "relabel_setting": self.cfg.relabel_action, "relabel_budget": self.cfg.relabel_budget,
                 "prior": None if self.prior is None else {"reference": self.prior.reference_prior_.tolist(),
                                                           "estimated": self.prior.prior_.tolist()},
                 "relabel": [{"item_id": str(i), "reason": r} for i, r in zip(queue[ITEM], queue[REASON])]}
        prior = "" if self.prior is None else f"; re-estimated prior {self.prior.summary()}"
        summary = (f"round {round_}: {report.summary()}{prior}; {len(queue)} items to relabel by {self.action.value} "
                   f"({self.action_why})")
        self.store.record_alert(self.stream, DRIFT_ALERT, after, reason=summary)
        findings = pd.DataFrame([{"kind": f.kind, "name": f.name, "statistic": f.statistic, "value": f.value,
                                  "threshold": f.threshold, "by": f.by, "moved": "; ".join(f.moved),
                                  "detail": f.detail} for f in report.drifted])
        self.tracker.log_table(findings, T.drift_report_path(round_))
        if len(queue):
            self.tracker.log_table(queue, T.drift_queue_path(round_))
        self.tracker.set_tags({T.TAG_DRIFT: summary})

    def figures(self, report: DriftReport | None) -> dict[str, float]:
        """The round's drift metrics (none before the reference is complete)."""
        if report is None:
            return {}
        return {T.DRIFT_PSI_MAX: report.max_psi("feature"), T.DRIFT_PREDICTION_PSI: report.max_psi("prediction"),
                T.DRIFT_LABEL_PSI: report.max_psi("label"),
                T.DRIFT_NOVEL_SHARE: float(report.novel.mean()) if report.novel.size else 0.0,
                T.DRIFT_ALERTS: float(len(report.drifted))}


def prior_pool(pool: pd.DataFrame, shift: PriorShift, posterior: np.ndarray, n_reference: int) -> pd.DataFrame:
    """The pool with its items since the reference judged under the re-estimated prior: their
    label-issue score from the corrected posterior, and :data:`~loop.drift.PRIOR_DECISION` its
    class (-1 for the reference's items, which arrived under the old prior)."""
    pos = pool["position"].to_numpy(dtype=np.int64)
    after = pos >= n_reference
    label = pool[LABEL].to_numpy(dtype=np.int64)
    decision = np.full(len(pool), -1, dtype=np.int64)
    issue = pool[LABEL_ISSUE_SCORE].to_numpy(dtype=np.float64).copy()
    if after.any():
        corrected = shift.correct(posterior[pos[after]])
        decision[after] = corrected.argmax(axis=1)
        issue[after] = 1.0 - corrected[np.arange(after.sum()), label[after]]
    return pool.assign(**{LABEL_ISSUE_SCORE: issue, PRIOR_DECISION: decision})


def merge_queue(plan: pd.DataFrame, queue: pd.DataFrame, action: Action, costs: TaskCosts) -> pd.DataFrame:
    """The plan (or routing decisions) with the queue's items (none sent to a person by it)
    given ``action`` and the queue's reasons."""
    if queue.empty:
        return plan
    plan = plan.copy()
    hit = plan[ITEM].astype(str).isin(queue[ITEM].astype(str).to_numpy(dtype=object)).to_numpy()
    why = queue.assign(**{ITEM: queue[ITEM].astype(str)}).set_index(ITEM)
    ids = plan.loc[hit, ITEM].astype(str)
    if ACTION in plan.columns:
        plan.loc[hit, ACTION] = action.value
    plan.loc[hit, ROUTE] = action.value  # the route of the same name (review, expert, double_blind)
    plan.loc[hit, REASON] = why[REASON].reindex(ids).to_numpy()
    plan.loc[hit, PRIORITY] = why[PRIORITY].reindex(ids).to_numpy()
    if "planned_cost" in plan.columns:
        plan.loc[hit, "planned_cost"] = costs.planned(action)
    return plan


def _no_queue() -> pd.DataFrame:
    return pd.DataFrame({ITEM: pd.Series(dtype=object), REASON: pd.Series(dtype=object),
                         PRIORITY: pd.Series(dtype=np.float64)})


def pool_frame(candidates: pd.DataFrame, plan: pd.DataFrame, positions: np.ndarray,
               probs: np.ndarray) -> pd.DataFrame:
    """The candidates the plan sends to no person (kept, or auto-accepted), with the model's
    class and runner-up (from ``probs``, over every arrived item) and their arrival position."""
    kept = plan.loc[plan[ACTION].isin([Action.KEEP.value, Action.AUTO_ACCEPT.value]), ITEM].astype(str).to_numpy(dtype=object)
    ids = candidates[ITEM].astype(str)
    keep = ids.isin(kept).to_numpy()
    pos = positions[keep]
    ranked = np.argsort(-probs[pos], axis=1, kind="stable")
    return pd.DataFrame({ITEM: ids.to_numpy(dtype=object)[keep], LABEL: candidates[LABEL].to_numpy()[keep],
                         PREDICTED: ranked[:, 0], RUNNER_UP: ranked[:, 1],
                         LABEL_ISSUE_SCORE: candidates[LABEL_ISSUE_SCORE].to_numpy(dtype=np.float64)[keep],
                         "position": pos})


def queue_outcome(queue: pd.DataFrame, before: pd.Series, after: pd.Series,
                  truth: pd.Series | None) -> dict[str, float]:
    """What the relabeling did: labels changed (no truth), and, where the truth is known, wrong
    labels before minus wrong labels after."""
    ids = pd.Index(queue[ITEM].astype(str), dtype=object)
    old = before.reindex(ids).to_numpy(dtype=np.float64)
    new = after.reindex(ids).to_numpy(dtype=np.float64)
    out = {T.DRIFT_RELABEL_CHANGED: float((old != new).sum())}
    if truth is not None:
        right = truth.reindex(ids).to_numpy(dtype=np.float64)
        out[T.TRUE_DRIFT_QUEUE_WRONG] = float((old != right).sum())
        out[T.TRUE_DRIFT_ERRORS_REMOVED] = float((old != right).sum() - (new != right).sum())
    return out
