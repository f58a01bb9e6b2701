"""The program's measurements (step 8, *Measure*): a round's figures and its routed-item table.

:class:`Measures` computes every round's row of :mod:`experiments.tracking` metrics from what the
program hands it (the labels before and after, the plan, the audit, the models' evaluations,
the stream's annotations and agreement): the estimated figures always, the figures that need
the truth (``true_error_rate``, errors fixed, introduced and removed, the auto-accepted labels'
true error rate) only when the dataset knows it. It keeps the running totals; the program logs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from loop.columns import COST, ITEM, LABEL, REASON, ROUTE, SECONDS
from loop.gate import ModelEvaluation
from loop.store import ANNOTATION_ID
from loop.strategies import ACTION, PLANNED_COST, Action

from . import tracking as T
from .audits import AuditResult, confirmed_changes

__all__ = ["Measures"]


class Measures:
    """A program's figures, round by round.

    Parameters
    ----------
    dataset : Dataset
        Its ``truth`` (None: only estimated figures) and ``initial`` labels are read when needed
        (a live dataset's grow as items arrive).

    Attributes
    ----------
    rows : list of dict
        One row per round logged, ``round`` first.
    fixed, introduced : int
        Labels fixed and broken over the rounds (against the truth; 0 without it).
    confirmed : int
        Label changes confirmed by two independent annotators, summed over the rounds.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        truth = dataset.truth
        # By object id, looked up over every arrived item each round (pandas' Arrow str index
        # lookups are ~10x slower).
        self.truth = None if truth is None else pd.Series(truth.to_numpy(), index=pd.Index(truth.index, dtype=object))
        self.rows: list[dict[str, float]] = []
        self.fixed = self.introduced = self.confirmed = 0
        # The truth and the initial labels' errors of the arrived items, in arrival order, kept
        # and extended by the new items (a lookup of every arrived id was ~10 ms each, 3 a round).
        self._ids = np.zeros(0, dtype=object)
        self._truth = np.zeros(0, dtype=np.int64)
        self._initial_wrong = np.zeros(0, dtype=bool)
        # Which annotations are their item's first, kept for the rows read so far (the stream's
        # frame only grows; a duplicate check of every annotation's id cost the history).
        self._rows = np.zeros(0, dtype=np.int64)
        self._initial = np.zeros(0, dtype=bool)
        self._labelled: set[str] = set()

    @property
    def known(self) -> bool:
        """Whether the truth is known (a simulation)."""
        return self.truth is not None

    def wrong(self, labels: pd.Series) -> np.ndarray:
        """Which of ``labels`` (class codes by item id) differ from the truth."""
        return labels.to_numpy(dtype=np.int64) != self.truth.reindex(labels.index).to_numpy(dtype=np.int64)

    def round_row(self, round_: int, *, arrived: np.ndarray, new: np.ndarray, before: pd.Series, after: pd.Series,
                  plan: pd.DataFrame | None, audit: AuditResult | None, evaluation: ModelEvaluation,
                  challenger: ModelEvaluation, promoted: bool, round_cost: float, budget: float,
                  resolution_hours: float, annotations: pd.DataFrame, stats: Any, cutoff: float | None,
                  pairs: pd.DataFrame | None, at: np.ndarray | None = None) -> dict[str, float]:
        """The round's metrics (:mod:`experiments.tracking` names); kept in :attr:`rows`. ``at``:
        the positions of the plan's items in ``arrived``, when the program knows them."""
        arrived = pd.Index(arrived, dtype=object)  # object ids: Arrow str lookups are ~10x slower
        is_initial = self._first_labels(annotations)
        row: dict[str, float] = {
            T.N_ITEMS: len(arrived),
            T.MODEL_ACCURACY: evaluation.accuracy, T.MODEL_ECE: evaluation.ece,
            T.CHALLENGER_ACCURACY: challenger.accuracy, T.CHALLENGER_ECE: challenger.ece, T.PROMOTED: float(promoted),
            T.PROGRAM_COST: float(annotations.loc[~is_initial, COST].sum()),
            T.ROUND_COST: round_cost, T.BUDGET: budget, T.ANNOTATOR_HOURS: float(annotations[SECONDS].sum() / 3600),
            T.ANNOTATIONS: float(len(annotations)),
            T.CORRECTION_FREQUENCY: stats.correction_frequency, T.KRIPPENDORFF_ALPHA: stats.krippendorff_alpha,
            T.PERCENT_AGREEMENT: stats.percent_agreement, T.RESOLUTION_HOURS: resolution_hours,
        }
        if plan is not None:
            counts = plan[ACTION].value_counts()
            row.update({T.ACTION_COUNT_PREFIX + a.value: float(counts.get(a.value, 0)) for a in Action})
            auto = plan.loc[plan[ACTION] == Action.AUTO_ACCEPT.value, ITEM].astype(str)
            row[T.AUTO_ACCEPT_RATE] = float(pd.Index(new, dtype=object).isin(auto.to_numpy(dtype=object)).mean())
        before, after = before.reindex(arrived), after.reindex(arrived)  # once: each costs a lookup per item
        if self.known:
            row.update(self._true_figures(round_, arrived, before, after, plan, at))
        if audit is not None:
            est = audit.estimate
            row.update({T.AUDIT_ERROR_RATE: est.rate, T.AUDIT_CI_LOW: est.low, T.AUDIT_CI_HIGH: est.high,
                        T.AUDIT_N: float(est.n_audited)})
            if audit.auto is not None:
                row.update({T.AUTO_ACCEPT_ESTIMATE: audit.auto.rate, T.AUTO_ACCEPT_ESTIMATE_CI_LOW: audit.auto.low,
                            T.AUTO_ACCEPT_ESTIMATE_CI_HIGH: audit.auto.high})
        if round_ > 0:
            confirmed = confirmed_changes(annotations, before, after)
            self.confirmed += confirmed
            row.update({T.ERRORS_FIXED_CONFIRMED: float(confirmed), T.ERRORS_REMOVED_ESTIMATE: float(self.confirmed)})
        if plan is not None and cutoff is not None:
            row[T.AUTO_ACCEPT_CUTOFF] = cutoff  # under a bound, the lowest confidence it let through (1: none)
        if pairs is not None and len(pairs):
            row[T.TOP_PAIR_SHARE] = float(pairs["share"].iloc[0])
        self.rows.append({"round": round_, **row})
        return row

    def _first_labels(self, annotations: pd.DataFrame) -> np.ndarray:
        """Whether each row of ``annotations`` (the stream's, in the store's order) is its item's
        first label: checked for the rows new since the last call, all again if earlier rows
        changed (a row committed late)."""
        rows = annotations[ANNOTATION_ID].to_numpy(dtype=np.int64) if ANNOTATION_ID in annotations.columns else None
        n = len(self._rows)
        if rows is None or len(rows) < n or not np.array_equal(rows[:n], self._rows):
            if rows is None:
                return (~annotations[ITEM].duplicated()).to_numpy()
            self._initial, self._labelled, n = self._initial[:0], set(), 0
        first = np.zeros(len(rows) - n, dtype=bool)
        for i, item in enumerate(annotations[ITEM].iloc[n:].astype(str).tolist()):
            if item not in self._labelled:
                self._labelled.add(item)
                first[i] = True
        self._rows, self._initial = rows.copy(), np.concatenate([self._initial, first])
        return self._initial

    def _true_figures(self, round_: int, arrived: pd.Index, before: pd.Series, after: pd.Series,
                      plan: pd.DataFrame | None, at: np.ndarray | None = None) -> dict[str, float]:
        """The figures only a simulation knows (against the truth): ``true_error_rate``, errors
        fixed, introduced and removed, the auto-accepted labels' true error rate. ``before`` and
        ``after``: the labels of ``arrived``, in its order."""
        truth, initial_wrong = self._aligned(arrived)
        now_wrong = after.to_numpy(dtype=np.int64) != truth
        was_wrong = before.to_numpy(dtype=np.int64) != truth
        fixed, introduced = int((was_wrong & ~now_wrong).sum()), int((~was_wrong & now_wrong).sum())
        if round_ > 0:
            self.fixed, self.introduced = self.fixed + fixed, self.introduced + introduced
        row = {T.TRUE_ERROR_RATE: float(now_wrong.mean()), T.ERRORS_FIXED: fixed, T.ERRORS_INTRODUCED: introduced,
               T.ERRORS_REMOVED: float(initial_wrong.sum() - now_wrong.sum())}
        if plan is not None:
            is_auto = (plan[ACTION] == Action.AUTO_ACCEPT.value).to_numpy()
            # By arrival position (under tiered most settled items are auto-accepted, ~76,000 at
            # 10^5): given, or one lookup of their ids instead of one in the labels and one in the truth.
            auto = None if at is not None else plan.loc[is_auto, ITEM].astype(str)
            where = at[is_auto] if at is not None else after.index.get_indexer(auto)
            if not is_auto.any():
                row[T.AUTO_ACCEPT_ERROR_RATE] = float("nan")
            elif (where >= 0).all():
                row[T.AUTO_ACCEPT_ERROR_RATE] = float(now_wrong[where].mean())
            else:
                row[T.AUTO_ACCEPT_ERROR_RATE] = float(self.wrong(after.reindex(auto)).mean())
        return row

    def _aligned(self, arrived: pd.Index) -> tuple[np.ndarray, np.ndarray]:
        """The true label and whether the initial label was wrong, of each of ``arrived``, in its
        order: looked up for the items new since the last call (all again if the order changed)."""
        ids = arrived.to_numpy(dtype=object)
        n = len(self._ids)
        if len(ids) < n or not np.array_equal(ids[:n], self._ids):
            n = 0
        tail = pd.Index(ids[n:], dtype=object)
        if len(tail) or n < len(self._ids):
            initial = self.dataset.initial
            initial = pd.Series(initial[LABEL].to_numpy(), index=pd.Index(initial[ITEM], dtype=object))
            truth = self.truth.reindex(tail).to_numpy(dtype=np.int64)
            self._truth = np.concatenate([self._truth[:n], truth])
            self._initial_wrong = np.concatenate([self._initial_wrong[:n],
                                                  initial.reindex(tail).to_numpy(dtype=np.int64) != truth])
            self._ids = ids.copy()
        return self._truth, self._initial_wrong

    def routed_table(self, plan: pd.DataFrame, candidates: pd.DataFrame, before: pd.Series,
                     after: pd.Series, at: np.ndarray | None = None) -> pd.DataFrame:
        """The round's items acted on, most urgent first: their signals, action, route, reason,
        planned cost, label before and after (and the true label when known). ``at``: when the
        plan is the candidates in their order (``plan_round`` keeps it), its rows' positions in
        ``before`` and ``after`` (the arrived items, in order; the program knows them); else
        the rows are matched by id."""
        table = candidates.drop(columns=[c for c in (ROUTE,) if c in candidates.columns])
        planned = plan[[ITEM, ACTION, ROUTE, REASON, "priority", PLANNED_COST]]
        ids = None if at is not None else plan[ITEM].astype(str).to_numpy()
        if at is not None or len(plan) == len(candidates) and np.array_equal(ids, candidates[ITEM].astype(str).to_numpy()):
            # The plan comes in the candidates' order (plan_round keeps it): the merge's rows are
            # the plan's as they are (a merge on string ids costs a hash of every candidate, and
            # under tiered every settled item is a candidate again each round).
            table = table.assign(**{c: planned[c].array for c in planned.columns if c != ITEM})
        else:
            table = table.merge(planned, on=ITEM, how="left")
        if at is None:
            at = before.index.get_indexer(ids)
        if (at >= 0).all() and after.index.equals(before.index):
            # The labels share one index (the arrived items, in order): one lookup of the plan's
            # ids serves both, and the truth too when it is aligned with that order (each lookup
            # of ~85,000 ids, under tiered every settled item, costs ~20 ms at 10^5).
            table = table.assign(label_before=before.to_numpy()[at], label_after=after.to_numpy()[at])
        else:
            ids = plan[ITEM].astype(str).to_numpy() if ids is None else ids
            table = table.assign(label_before=before.reindex(ids).to_numpy(), label_after=after.reindex(ids).to_numpy())
        if self.known:
            aligned = (len(self._ids) == len(before) and self.truth.dtype == self._truth.dtype and (at >= 0).all()
                       and np.array_equal(self._ids, before.index.to_numpy(dtype=object)))
            table = table.assign(true_label=self._truth[at] if aligned else
                                 self.truth.reindex(plan[ITEM].astype(str).to_numpy()).to_numpy())
        return table[table[ACTION] != Action.KEEP.value].sort_values("priority", ascending=False)
