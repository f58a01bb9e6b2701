"""Annotation variants: what an annotator is shown, and the validation rule a label passes.

A :class:`Variant` is one arm of an experiment on the annotation process. Its effects on a
simulated crowd, each documented where it is modelled:

- **guideline** (:class:`Guideline`): moves a share of the confusion on the class pairs it
  clarifies back to the diagonal (:meth:`Guideline.apply`).
- **examples shown** (``examples = e`` worked examples per class): every confusion cell is
  scaled by ``1 - EXAMPLE_GAIN * (1 - exp(-e / EXAMPLE_SCALE))``, the removed mass going to
  the diagonal (a small gain with diminishing returns: 3 examples remove about 6% of the
  errors, many examples at most 10%), and reading them costs time: seconds are multiplied by
  ``1 + EXAMPLE_SECONDS * e``.
- **suggestion shown** (the model's label is pre-filled): *anchoring*. With probability
  ``anchoring`` the annotator takes the suggestion as it is; otherwise they answer as without
  it. It helps when the suggestion is right and hurts when it is wrong::

      P(correct) = anchoring * 1[suggestion right] + (1 - anchoring) * P(correct without it)

  Accepting a suggestion is quicker: those answers take ``SUGGESTION_SECONDS`` of the time.
- **double-blind rule** for class pairs: when the first answer falls in a named pair, a second
  annotator answers blind; if they disagree, a third decides by majority (the first answer
  stands when all three differ). The label is better on those pairs and costs the extra
  answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._validation import check_int, check_real, check_rng, fail
from ..columns import ANNOTATOR, COST, ITEM, LABEL, SECONDS
from ._crowd import Annotator, SimulatedCrowd, _check_truth
from ._model import Guideline

__all__ = ["EXAMPLE_GAIN", "EXAMPLE_SCALE", "EXAMPLE_SECONDS", "SUGGESTION_SECONDS", "Variant", "annotate_variant",
           "examples_effect"]

EXAMPLE_GAIN = 0.10       # the most of an annotator's confusion that examples can remove
EXAMPLE_SCALE = 5.0       # examples per class for 63% of that gain
EXAMPLE_SECONDS = 0.02    # extra share of an item's time per example shown
SUGGESTION_SECONDS = 0.6  # share of the time an accepted suggestion takes
ANSWERS = "answers"       # column of annotate_variant: answers behind each task's label


@dataclass(frozen=True)
class Variant:
    """One arm of an experiment on the annotation process.

    Parameters
    ----------
    name : str
    guideline : Guideline or None
        The guideline version in force (None: the annotators' own understanding).
    suggestion : bool, default=False
        Whether the model's suggested label is shown.
    anchoring : float in [0, 1], default=0.3
        With a suggestion shown, the probability an annotator takes it as it is.
    examples : int >= 0, default=0
        Worked examples shown per class.
    double_blind : tuple of (int, int), default=()
        Class pairs whose labels need two agreeing blind answers.
    """

    name: str
    guideline: Guideline | None = None
    suggestion: bool = False
    anchoring: float = 0.3
    examples: int = 0
    double_blind: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise fail("name", "a non-empty string", repr(self.name))
        if self.guideline is not None and not isinstance(self.guideline, Guideline):
            raise fail("guideline", "a Guideline or None", type(self.guideline).__name__)
        if not isinstance(self.suggestion, bool):
            raise fail("suggestion", "True or False", repr(self.suggestion))
        check_real(self.anchoring, "anchoring", low=0, high=1)
        check_int(self.examples, "examples", low=0)
        pairs = []
        for pair in self.double_blind:
            if (not isinstance(pair, Sequence) or len(pair) != 2 or pair[0] == pair[1]
                    or not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c >= 0 for c in pair)):
                raise fail("double_blind", "pairs of two different class codes", repr(pair))
            pairs.append((int(min(pair)), int(max(pair))))
        object.__setattr__(self, "double_blind", tuple(sorted(set(pairs))))

    def confusion(self, crowd: SimulatedCrowd) -> np.ndarray:
        """The crowd's confusion matrices under this variant's guideline and examples, (m, k, k)."""
        matrix = crowd.confusion if self.guideline is None else self.guideline.apply(crowd.confusion)
        return examples_effect(matrix, self.examples)


def examples_effect(confusion: Any, examples: int) -> np.ndarray:
    """Confusion matrices (k, k) or (m, k, k) when ``examples`` examples per class are shown.

    Off-diagonal cells scale by ``1 - EXAMPLE_GAIN * (1 - exp(-examples / EXAMPLE_SCALE))``;
    the mass removed goes to the diagonal, so rows still sum to 1.

    Examples
    --------
    >>> examples_effect(np.array([[0.8, 0.2], [0.4, 0.6]]), 0)
    array([[0.8, 0.2],
           [0.4, 0.6]])
    >>> examples_effect(np.array([[0.8, 0.2], [0.4, 0.6]]), 5).round(3)
    array([[0.813, 0.187],
           [0.375, 0.625]])
    """
    e = check_int(examples, "examples", low=0)
    matrix = np.array(confusion, dtype=np.float64)
    if matrix.ndim not in (2, 3) or matrix.shape[-1] != matrix.shape[-2]:
        raise fail("confusion", "an array of shape (k, k) or (m, k, k)", f"shape {matrix.shape}")
    keep = 1.0 - EXAMPLE_GAIN * (1.0 - np.exp(-e / EXAMPLE_SCALE))
    eye = np.eye(matrix.shape[-1], dtype=bool)
    off = np.where(eye, 0.0, matrix) * keep
    return off + eye * (1.0 - off.sum(axis=-1, keepdims=True))


def annotate_variant(crowd: SimulatedCrowd, assignment: pd.DataFrame, true_labels: Any, variant: Variant, *,
                     suggestions: pd.Series | None = None, difficulty: pd.Series | None = None,
                     rng: np.random.Generator | int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate one task per row of ``assignment`` under ``variant``.

    Parameters
    ----------
    crowd : SimulatedCrowd
    assignment : DataFrame with columns item_id, annotator_id
        The first annotator of each task; unique item ids (one task per item per call).
    true_labels : Series indexed by item_id
    variant : Variant
    suggestions : Series of class codes indexed by item_id
        Required when ``variant.suggestion``: the model's label of each item.
    difficulty : Series, optional
        As in :meth:`SimulatedCrowd.annotate`.
    rng : Generator or int

    Returns
    -------
    tasks : DataFrame
        One row per task, in the order of ``assignment``: ``item_id, annotator_id`` (the first
        annotator), ``label`` (the task's final label), ``seconds`` and ``cost`` (all its
        answers), ``answers`` (1, or 2-3 under the double-blind rule).
    answers : DataFrame
        Every answer: ``item_id, annotator_id, label, seconds, cost``.

    Examples
    --------
    >>> from loop.simulate import make_crowd
    >>> crowd = make_crowd({"expert": 4}, 3, rng=0)
    >>> tasks, answers = annotate_variant(crowd, crowd.assign([0, 1], 1, rng=0), pd.Series([0, 2]),
    ...                                   Variant("v", double_blind=((0, 1),)), rng=0)
    >>> list(tasks.columns)
    ['item_id', 'annotator_id', 'label', 'seconds', 'cost', 'answers']
    """
    generator = check_rng(rng)
    if not isinstance(variant, Variant):
        raise fail("variant", "a Variant", type(variant).__name__)
    truth = _check_truth(true_labels, crowd.n_classes)
    if not isinstance(assignment, pd.DataFrame) or assignment[ITEM].duplicated().any():
        raise fail("assignment", "a DataFrame with one row per item", "duplicate item ids")
    if variant.suggestion:
        if not isinstance(suggestions, pd.Series) or suggestions.reindex(assignment[ITEM]).isna().any():
            raise fail("suggestions", "a Series of class codes for every assigned item", type(suggestions).__name__)
    shown = _VariantCrowd(crowd, variant)
    first = shown.answer(assignment, truth, suggestions, difficulty, generator)
    answers = [first]
    labels = first[LABEL].to_numpy().copy()
    count = np.ones(len(first), dtype=np.int64)
    seconds, cost = first[SECONDS].to_numpy().copy(), first[COST].to_numpy().copy()
    if variant.double_blind and len(crowd) >= 3:
        in_pair = np.zeros(len(first), dtype=bool)
        for a, b in variant.double_blind:
            in_pair |= np.isin(labels, (a, b))
        second = _more(shown, first[in_pair], truth, suggestions, difficulty, generator)
        agree = second[LABEL].to_numpy() == labels[in_pair]
        where = np.flatnonzero(in_pair)
        count[where] += 1
        seconds[where] += second[SECONDS].to_numpy()
        cost[where] += second[COST].to_numpy()
        answers.append(second)
        split = where[~agree]
        if split.size:
            asked = pd.concat([first.iloc[split], second[~agree]], ignore_index=True)
            third = _more(shown, first.iloc[split], truth, suggestions, difficulty, generator, exclude=asked)
            sides = second[LABEL].to_numpy()[~agree]
            labels[split] = np.where(third[LABEL].to_numpy() == sides, sides, labels[split])
            count[split] += 1
            seconds[split] += third[SECONDS].to_numpy()
            cost[split] += third[COST].to_numpy()
            answers.append(third)
    tasks = pd.DataFrame({ITEM: first[ITEM].to_numpy(), ANNOTATOR: first[ANNOTATOR].to_numpy(), LABEL: labels,
                          SECONDS: seconds, COST: cost, ANSWERS: count})
    return tasks, pd.concat(answers, ignore_index=True)


def _more(shown: _VariantCrowd, tasks: pd.DataFrame, truth: pd.Series, suggestions: pd.Series | None,
          difficulty: pd.Series | None, rng: np.random.Generator, exclude: pd.DataFrame | None = None) -> pd.DataFrame:
    """One more blind answer per task, from an annotator who has not answered it."""
    if tasks.empty:
        return tasks.iloc[:0]
    blocked = tasks[[ITEM, ANNOTATOR]] if exclude is None else exclude[[ITEM, ANNOTATOR]]
    assignment = shown.crowd.assign(tasks[ITEM].to_numpy(), 1, exclude=blocked, rng=rng)
    return shown.answer(assignment, truth, suggestions, difficulty, rng)


@dataclass(frozen=True, eq=False)
class _VariantCrowd:
    """The crowd as it answers under a variant (its confusion matrices computed once)."""

    crowd: SimulatedCrowd
    variant: Variant

    def answer(self, assignment: pd.DataFrame, truth: pd.Series, suggestions: pd.Series | None,
               difficulty: pd.Series | None, rng: np.random.Generator) -> pd.DataFrame:
        out = self._changed().annotate(assignment[[ITEM, ANNOTATOR]], truth, difficulty=difficulty, rng=rng)
        factor = 1.0 + EXAMPLE_SECONDS * self.variant.examples
        if self.variant.suggestion:
            took = rng.random(len(out)) < self.variant.anchoring
            suggested = suggestions.reindex(out[ITEM]).to_numpy().astype(np.int64)
            out[LABEL] = np.where(took, suggested, out[LABEL].to_numpy())
            factor = factor * np.where(took, SUGGESTION_SECONDS, 1.0)
        out[SECONDS] = out[SECONDS] * factor
        out[COST] = out[COST] * factor
        return out

    def _changed(self) -> SimulatedCrowd:
        cached = self.__dict__.get("_cached")
        if cached is None:
            cached = SimulatedCrowd(tuple(
                Annotator(a.annotator_id, a.tier, c, seconds_median=a.seconds_median, seconds_sigma=a.seconds_sigma,
                          cost_per_hour=a.cost_per_hour)
                for a, c in zip(self.crowd.annotators, self.variant.confusion(self.crowd), strict=True)))
            self.__dict__["_cached"] = cached
        return cached
