"""A round's annotator impact, for the program's MLflow run (:mod:`loop.impact` does the counting).

At the close of every round the program records it in the label store (``round.closed``, with
the resolver's skill estimates: Dawid-Skene's ``skills_``, the probability each annotator's label
is right, under the annotator model the program's resolver weighs, ``program.annotator_model``,
fitted on every label of the items the round touched),
then logs the round's per-annotator table as ``impact/round_<r>.csv`` and two aggregates:
``annotators_with_confirmed_fixes`` (annotators who fixed a label the retrained model agrees
with) and ``top_annotator_share`` (the largest share of the round's error reduction).

"The retrained model" is the round's challenger, read out of fold (its probabilities for an
item come from the folds that did not train on that item's label, so it cannot agree merely by
having learnt the fix). The store's own reading (``GET /v1/me/impact``) uses the first
prediction stored after the round instead: the next round's, out of sample in the program too.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

import numpy as np
import pandas as pd

from loop.aggregate import DawidSkene
from loop.columns import ANNOTATOR, ITEM, LABEL
from loop.impact import PREDICTED, ROUND, SKILL
from loop.store import LabelStore

from . import tracking as T

__all__ = ["RoundImpact", "resolver_skills"]

# program.annotator_model -> the Dawid-Skene model of the same name.
_MODELS: Final = {"one_coin": "one_coin", "dawid_skene": "full"}


def resolver_skills(annotations: pd.DataFrame, annotator_model: str = "one_coin", *, fit_items: int | None = None,
                    random_state: Any = 0) -> dict[str, float]:
    """Each annotator's estimated probability of a right label (Dawid-Skene's ``skills_``) from
    ``annotations`` (at most ``fit_items`` items' labels, drawn uniformly); empty when they
    hold fewer than two classes."""
    frame = annotations[[ITEM, ANNOTATOR, LABEL]].astype({ITEM: str, ANNOTATOR: str})
    if fit_items is not None:
        items = frame[ITEM].unique()
        if len(items) > fit_items:
            chosen = np.random.default_rng(random_state).choice(items, size=fit_items, replace=False)
            frame = frame[frame[ITEM].isin(chosen)]
    if frame.empty or frame[LABEL].nunique() < 2:
        return {}
    skills = DawidSkene(model=_MODELS.get(annotator_model, "one_coin")).fit(frame).skills_
    return {str(k): float(np.clip(v, 0.0, 1.0)) for k, v in skills.items() if np.isfinite(v)}


class RoundImpact:
    """Closes a program's rounds in the label store and measures each one's annotator impact,
    reading only what the round holds (its rows and every label of the items they name), so a
    long program's rounds stay flat. The skills are fitted on those labels (at most
    ``fit_items`` items' worth).

    Parameters
    ----------
    store : LabelStore
    stream : str
    annotator_model : str
        ``program.annotator_model``: the Dawid-Skene model of the same name gives the skills.
    fit_items : int, optional
        ``program.max_fit_items``.
    random_state : seed
        Draws the items of a bounded fit.
    """

    def __init__(self, store: LabelStore, stream: str, *, annotator_model: str = "one_coin",
                 fit_items: int | None = None, random_state: Any = 0) -> None:
        self.store, self.stream = store, stream
        self.annotator_model, self.fit_items, self.random_state = annotator_model, fit_items, random_state
        self.marks: list[dict[str, Any]] | None = None  # the stream's round marks, read once a session

    def close(self, round_: int, *, out_of_fold: pd.DataFrame | None = None,
              truth: pd.Series | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
        """Close ``round_`` and return its per-annotator impact table and aggregates.

        ``out_of_fold``: the retrained model's out-of-fold class probabilities by item id
        (columns in class-code order); ``truth``: the true class by item id (simulation only:
        adds ``true_errors_fixed``)."""
        if self.marks is None:
            self.marks = self.store.round_marks(self.stream)
        # Before the close, what the round holds is the round in progress: one read for both the
        # skills and the table.
        current = self.marks[-1]["round"] + 1 if self.marks else 0
        inputs = self.store.impact_inputs(self.stream, rounds=[current], marks=self.marks)
        skills = resolver_skills(inputs.answers, self.annotator_model, fit_items=self.fit_items,
                                 random_state=self.random_state)
        self.marks.append(self.store.close_round(self.stream, round_, skills=skills))
        inputs = dataclasses.replace(inputs, closed_round=current, skills=pd.DataFrame(
            {ROUND: current, ANNOTATOR: list(skills), SKILL: list(skills.values())}))
        nexts = None
        if out_of_fold is not None and len(out_of_fold):
            nexts = pd.DataFrame({ITEM: out_of_fold.index.astype(str), ROUND: current,
                                  PREDICTED: out_of_fold.to_numpy().argmax(axis=1).astype(np.int64)})
        table = inputs.table(next_predictions=nexts, truth=truth)
        this = table[table[ROUND] == current].assign(**{ROUND: round_}).reset_index(drop=True)
        share = this["share_of_error_reduction"]
        metrics = {T.ANNOTATORS_WITH_CONFIRMED_FIXES: float((this["errors_fixed_model_right"] > 0).sum()),
                   T.TOP_ANNOTATOR_SHARE: float(share.max()) if len(share) else 0.0}
        return this, metrics
