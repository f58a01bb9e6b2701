"""A round's annotator impact, for the program's MLflow run (:mod:`loop.impact` does the counting).

At the close of every round the program records it in the label store (``round.closed``, with
the resolver's skill estimates: Dawid-Skene's ``skills_``, the probability each annotator's label
is right, under the annotator model the program's resolver weighs, ``program.annotator_model``),
then logs the round's per-annotator table as ``impact/round_<r>.csv`` and two aggregates:
``annotators_with_confirmed_fixes`` (annotators who fixed a label the retrained model agrees
with) and ``top_annotator_share`` (the largest share of the round's error reduction).

"The retrained model" is the round's challenger, read out of fold (its probabilities for an
item come from the folds that did not train on that item's label, so it cannot agree merely by
having learnt the fix). The store's own reading (``GET /v1/me/impact``) uses the first
prediction stored after the round instead: the next round's, out of sample in the program too.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd

from loop.aggregate import DawidSkene
from loop.columns import ANNOTATOR, ITEM, LABEL
from loop.impact import PREDICTED, ROUND
from loop.store import LabelStore

from . import tracking as T

__all__ = ["resolver_skills", "round_impact"]

# program.annotator_model -> the Dawid-Skene model of the same name.
_MODELS: Final = {"one_coin": "one_coin", "dawid_skene": "full"}


def resolver_skills(annotations: pd.DataFrame, annotator_model: str = "one_coin") -> dict[str, float]:
    """Each annotator's estimated probability of a right label (Dawid-Skene's ``skills_``);
    empty without annotations."""
    frame = annotations[[ITEM, ANNOTATOR, LABEL]].astype({ITEM: str, ANNOTATOR: str})
    if frame.empty or frame[LABEL].nunique() < 2:
        return {}
    skills = DawidSkene(model=_MODELS.get(annotator_model, "one_coin")).fit(frame).skills_
    return {str(k): float(np.clip(v, 0.0, 1.0)) for k, v in skills.items() if np.isfinite(v)}


def round_impact(store: LabelStore, stream: str, round_: int, *, annotations: pd.DataFrame,
                 annotator_model: str = "one_coin", out_of_fold: pd.DataFrame | None = None,
                 truth: pd.Series | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """Close ``round_`` in the store and return its per-annotator impact table and aggregates.

    ``out_of_fold``: the retrained model's out-of-fold class probabilities by item id (columns
    in class-code order); ``truth``: the true class by item id (simulation only: adds
    ``true_errors_fixed``)."""
    store.close_round(stream, round_, skills=resolver_skills(annotations, annotator_model))
    nexts = None
    if out_of_fold is not None and len(out_of_fold):
        nexts = pd.DataFrame({ITEM: out_of_fold.index.astype(str), ROUND: round_,
                              PREDICTED: out_of_fold.to_numpy().argmax(axis=1).astype(np.int64)})
    table = store.impact_inputs(stream).table(next_predictions=nexts, truth=truth)
    this = table[table[ROUND] == round_].reset_index(drop=True)
    share = this["share_of_error_reduction"]
    metrics = {T.ANNOTATORS_WITH_CONFIRMED_FIXES: float((this["errors_fixed_model_right"] > 0).sum()),
               T.TOP_ANNOTATOR_SHARE: float(share.max()) if len(share) else 0.0}
    return this, metrics
