"""Aggregate many annotators' labels into one label per item.

Three estimators, all fitted on the long annotations frame (``item_id, annotator_id, label``)::

    MajorityVote().fit(annotations).labels_      # the most frequent label per item
    DawidSkene().fit(annotations).labels_        # labels weighted by learned annotator skill
    DawidSkene().fit(annotations).model_         # ... by the annotator model chosen without gold
    GLAD().fit(annotations).labels_              # ... by annotator ability and item difficulty

Labels may be any hashable values that sort (ints or strings); ``classes_`` holds them in
sorted order and every ``(n_items, n_classes)`` array uses that column order. Items are in
sorted ``item_id`` order and annotators in sorted ``annotator_id`` order, so a fit does not
depend on the order of the rows. Ties go to the first class in ``classes_`` (``MajorityVote``
can draw them at random instead).

The Dawid-Skene EM works on integer codes: every annotation becomes one non-zero of a sparse
``(n_items, n_annotators * n_classes)`` indicator matrix ``X`` (column ``a * k + l`` means
"annotator ``a`` said ``l``"), so the E-step is one sparse product ``X @ log_confusion`` and
the M-step one product ``X.T @ posteriors``; there are no Python loops over items or
annotators.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import optimize, sparse
from scipy.special import digamma, expit, gammaln

from ._validation import check_annotations, check_int, check_option, check_real, check_rng, fail
from .columns import ANNOTATOR, ITEM, LABEL
from .exceptions import NotFittedError

__all__ = ["GLAD", "DawidSkene", "MajorityVote", "SHRINKAGE_GRID"]

Model = Literal["auto", "full", "one_coin", "mace"]
# The fitted forms of the confusion matrices; model="auto" chooses one of them per crowd.
MODELS: tuple[str, ...] = ("full", "one_coin", "mace")
# Fixed-point sweeps of the honest/spam split in each M-step of model="mace".
_MACE_SWEEPS = 3
# Candidate shrinkage weights (pseudo-labels per confusion row) for shrinkage="auto".
SHRINKAGE_GRID: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
# EM tolerance of the fits that compare the models for model="auto" (the final fit uses `tol`).
_SELECTION_TOL = 1e-4
# cv_repeats="auto": score folds (repeating the fold split) until this many held-out labels are
# scored (at most _SELECTION_MAX_REPEATS splits). On a quiz of 1,200 labels one split's choice between two
# close models turns on which labels it happened to hold out; the mean of five does not.
_SELECTION_SCORED = 10_000
_SELECTION_MAX_REPEATS = 5
# shrinkage="auto", the final fit: once the empirical-Bayes search has kept the same shrinkage
# this many M-steps running, the M-steps hold it without searching (the search is half the
# full model's cost; weather's final fit runs 31 M-steps and its shrinkage settles by the
# fourth), and search again only when the fit is about to stop: it stops only if the shrinkage
# is still the best at its final counts. Not in the comparison's fold fits: they stop after
# 5-15 M-steps, and on weather one fold's shrinkage moved at the seventh.
_SHRINKAGE_STEADY = 5
# Grouped fits: the crowds that stopped leave the stack once they hold this share of its
# annotations. On a small crowd rebuilding the stack costs more than iterating it: quiz_pokemon's
# 25 fold fits stop over 15 iterations, and rebuilding at every stop (18 rebuilds) was a sixth
# of the default's time under cProfile. Until then a stopped crowd rides along, kept and no
# longer searched, and the share bounds the stack at twice the crowds still running.
_DROP_SHARE = 0.5
# The shrinkage search from a start first scores the grid points around it without the cells
# whose soft count is below this (each such cell adds at most count * max|digamma| to a score,
# which is bounded): most of a confusion matrix's cells once the posteriors are sharp (60% on
# quiz_pokemon's fold fits, 37% on weather's), and the two gammaln calls per cell are the
# search's cost. Where the bound cannot tell that the shrinkage stays, the full scores decide.
# Only worth it where small cells are many: on quiz_english's fold fits 9% are, and checking
# first cost more than it saved.
_EB_SMALL_COUNT = 1e-4
_EB_MIN_SMALL_SHARE = 0.4


# --------------------------------------------------------------------------------------------
# Encoding the long frame once


@dataclass(frozen=True)
class _Encoded:
    """The annotations frame as integer codes, rows sorted by (item, annotator).

    ``item``, ``annotator``, ``label`` are ``(n_rows,)`` int64 codes into ``items``,
    ``annotators`` and ``classes`` (each sorted), and ``X`` is the ``(n_items,
    n_annotators * n_classes)`` CSR indicator of who said what about which item.
    """

    item: np.ndarray
    annotator: np.ndarray
    label: np.ndarray
    items: pd.Index
    annotators: pd.Index
    classes: pd.Index
    X: sparse.csr_matrix

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @cached_property
    def XT(self) -> sparse.csr_matrix:
        """``X.T`` in CSR form (the M-step's product), made once for all the models fitted."""
        return self.X.T.tocsr()


def _sorted_codes(values: pd.Series, extra: pd.Index | None = None) -> tuple[np.ndarray, pd.Index]:
    """Codes of ``values`` into their sorted unique values (plus ``extra`` values, if any).

    Values that do not sort together (say ints and strings) are ordered by type name, then
    by value, so the order stays deterministic.
    """
    if extra is not None and len(extra):
        values = pd.concat([values, pd.Series(extra.to_numpy())], ignore_index=True)
    try:
        codes, uniques = pd.factorize(values, sort=True)
    except TypeError:
        codes, uniques = pd.factorize(values)
        order = sorted(range(len(uniques)), key=lambda i: (type(uniques[i]).__name__, str(uniques[i])))
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order))
        codes, uniques = rank[codes], pd.Index(uniques[order], tupleize_cols=False)
    n = len(values) - (0 if extra is None else len(extra))
    return codes[:n].astype(np.int64), pd.Index(uniques, tupleize_cols=False)


def _encode(annotations: pd.DataFrame, extra_classes: pd.Index | None = None) -> _Encoded:
    item, items = _sorted_codes(annotations[ITEM])
    annotator, annotators = _sorted_codes(annotations[ANNOTATOR])
    label, classes = _sorted_codes(annotations[LABEL], extra_classes)
    k = len(classes)
    # Each (item, annotator) pair is unique, so this CSR matrix with sorted indices is the
    # same whatever the row order; reading the rows back from it (sorted by item, then
    # annotator) makes every floating-point sum below independent of the input order too.
    X = sparse.csr_matrix(
        (np.ones(item.size), (item, annotator * k + label)),
        shape=(len(items), len(annotators) * k),
    )
    X.sort_indices()
    item = np.repeat(np.arange(len(items)), np.diff(X.indptr))
    annotator, label = np.divmod(X.indices.astype(np.int64), k)
    return _Encoded(item, annotator, label, items, annotators, classes, X)


def _vote_counts(enc: _Encoded) -> np.ndarray:
    """``(n_items, n_classes)`` number of annotators who gave each class to each item."""
    k = enc.n_classes
    flat = np.bincount(enc.item * k + enc.label, minlength=len(enc.items) * k)
    return flat.reshape(-1, k).astype(np.float64)


def _add_along(x: np.ndarray, axis: int, keepdims: bool = False) -> np.ndarray:
    """``x.sum(axis=axis)`` for a short axis (the ``k`` classes), by adding its slices.

    numpy reduces over an axis of a few elements at a fraction of its elementwise speed (on
    a ``(1375, 6, 6)`` array, ``sum(axis=2)`` costs as much as 15 additions of the whole
    array), and the EM reduces over the classes several times per iteration.
    """
    index: list[Any] = [slice(None)] * x.ndim
    index[axis] = slice(0, 1) if keepdims else 0
    total = x[tuple(index)].copy()
    for j in range(1, x.shape[axis]):
        index[axis] = slice(j, j + 1) if keepdims else j
        total += x[tuple(index)]
    return total


def _argmax_first(posteriors: np.ndarray) -> np.ndarray:
    """Row-wise argmax that breaks (near-)ties by the first class, whatever the rounding."""
    top = posteriors.max(axis=1, keepdims=True)
    return np.argmax(posteriors >= top - 1e-12, axis=1)


class _Aggregator:
    """Shared conveniences: ``fit_predict`` and ``fit_predict_proba``."""

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: a learned attribute asked for before `fit`.
        if name.endswith("_") and not name.startswith("__"):
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet: {name!r} is learned by 'fit'. "
                "Call 'fit' with the annotations first."
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def fit(self, annotations: pd.DataFrame) -> _Aggregator:  # pragma: no cover - overridden
        raise NotImplementedError

    def fit_predict(self, annotations: pd.DataFrame) -> pd.Series:
        """Fit, then return ``labels_``: the aggregated label by ``item_id``."""
        return self.fit(annotations).labels_

    def fit_predict_proba(self, annotations: pd.DataFrame) -> pd.DataFrame:
        """Fit, then return ``posteriors_``: an ``item_id`` x class frame of probabilities."""
        return self.fit(annotations).posteriors_

    def _set_results(self, enc: _Encoded, posteriors: np.ndarray) -> None:
        self.classes_ = enc.classes
        self.posteriors_ = pd.DataFrame(posteriors, index=enc.items.rename(ITEM),
                                        columns=enc.classes.rename(LABEL))
        self.labels_ = pd.Series(enc.classes[_argmax_first(posteriors)], index=enc.items.rename(ITEM),
                                 name=LABEL)


# --------------------------------------------------------------------------------------------
# Majority vote


class _GoldAnchored(_Aggregator):
    """An aggregator whose ``fit`` takes optional ``gold`` labels that anchor their items."""

    def fit(self, annotations: pd.DataFrame, *, gold: pd.Series | None = None) -> _GoldAnchored:  # pragma: no cover
        raise NotImplementedError

    def _check_params(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _encode_with_gold(self, annotations: pd.DataFrame,
                          gold: pd.Series | None) -> tuple[_Encoded, np.ndarray, np.ndarray]:
        """Check the parameters and the input, encode it; the gold items' rows and codes."""
        self._check_params()
        annotations = check_annotations(annotations)
        gold = _check_gold(gold)
        enc = _encode(annotations, None if gold is None else pd.Index(gold.unique()))
        return (enc, *_gold_codes(enc, gold))

    def fit_predict(self, annotations: pd.DataFrame, *, gold: pd.Series | None = None) -> pd.Series:
        """Fit, then return ``labels_``: the most probable class by ``item_id``."""
        return self.fit(annotations, gold=gold).labels_

    def fit_predict_proba(self, annotations: pd.DataFrame, *,
                          gold: pd.Series | None = None) -> pd.DataFrame:
        """Fit, then return ``posteriors_``: an ``item_id`` x class frame of probabilities."""
        return self.fit(annotations, gold=gold).posteriors_


class MajorityVote(_Aggregator):
    """The most frequent label of each item.

    Parameters
    ----------
    tie_break : {"first", "random"}, default "first"
        Which of the tied most frequent labels wins: the first in ``classes_`` (deterministic,
        but it favours the classes that sort first: with three labels that all differ, the
        lowest class always wins), or one drawn uniformly from ``random_state`` (unbiased;
        what "majority vote" usually means when it is a baseline).
    random_state : Generator or int, optional
        The draws of ``tie_break="random"`` (required there, unused otherwise).

    Attributes
    ----------
    classes_ : Index, shape (n_classes,)
        The labels seen, sorted.
    labels_ : Series, shape (n_items,)
        The majority label by ``item_id``.
    posteriors_ : DataFrame, shape (n_items, n_classes)
        Share of the item's annotators who gave each class (rows sum to 1).
    skills_ : Series, shape (n_annotators,)
        Share of each annotator's labels that agree with the majority label.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"item_id": [1, 1, 1, 2], "annotator_id": ["a", "b", "c", "a"],
    ...                       "label": ["cat", "cat", "dog", "dog"]})
    >>> MajorityVote().fit(frame).labels_.tolist()
    ['cat', 'dog']
    """

    def __init__(self, tie_break: Literal["first", "random"] = "first",
                 random_state: np.random.Generator | int | None = None) -> None:
        self.tie_break = tie_break
        self.random_state = random_state

    def fit(self, annotations: pd.DataFrame) -> MajorityVote:
        """Count the votes.

        Parameters
        ----------
        annotations : DataFrame
            Columns ``item_id, annotator_id, label``; one row per (item, annotator).

        Returns
        -------
        self
        """
        check_option(self.tie_break, "tie_break", ("first", "random"))
        rng = None
        if self.tie_break == "random":
            if self.random_state is None:
                raise fail("random_state", "a numpy.random.Generator or an int seed with tie_break='random'", "None")
            rng = check_rng(self.random_state, "random_state")
        enc = _encode(check_annotations(annotations))
        counts = _vote_counts(enc)
        self._set_results(enc, counts / counts.sum(axis=1, keepdims=True))
        if rng is None:
            winner = _argmax_first(counts)
        else:
            # Counts are integers: a uniform key below 1 orders the tied classes at random only.
            winner = np.argmax(counts + rng.random(counts.shape), axis=1)
            self.labels_ = pd.Series(enc.classes[winner], index=enc.items.rename(ITEM), name=LABEL)
        agrees = (enc.label == winner[enc.item]).astype(np.float64)
        self.skills_ = _per_annotator_mean(enc, agrees)
        return self


def _per_annotator_mean(enc: _Encoded, values: np.ndarray) -> pd.Series:
    """Mean of a per-row ``(n_rows,)`` value over each annotator's rows."""
    n = len(enc.annotators)
    means = np.bincount(enc.annotator, weights=values, minlength=n) / np.bincount(enc.annotator, minlength=n)
    return pd.Series(means, index=enc.annotators.rename(ANNOTATOR), name="skill")


# --------------------------------------------------------------------------------------------
# Dawid-Skene


class DawidSkene(_GoldAnchored):
    r"""Dawid and Skene's (1979) latent-class model, fitted by EM in log space.

    Each item has a hidden true class :math:`z_i` with prior :math:`\pi`; annotator :math:`a`
    says :math:`l` about an item of class :math:`c` with probability :math:`\theta_a[c, l]`
    (a row-stochastic confusion matrix). Starting from majority-vote shares, EM alternates

    - M-step: with :math:`n_a[c, l] = \sum_{i:\, a \text{ said } l} P(z_i = c)`,
      :math:`\theta_a[c, l] \propto n_a[c, l] + \alpha_{cl} + \lambda\, \omega_a[c, l]` and
      :math:`\pi_c \propto \sum_i P(z_i = c) + 1`;
    - E-step: :math:`\log P(z_i = c) = \log \pi_c + \sum_{(a, l) \in i} \log \theta_a[c, l]`
      + const, normalised per item (log-sum-exp);

    until the log-likelihood per annotation changes by less than ``tol``.

    Two pseudo-counts keep the estimates sensible when data are thin:

    - :math:`\alpha` (``smoothing``): ``smoothing / k`` in every cell plus ``smoothing`` on
      the diagonal, a Dirichlet prior that keeps every probability positive (items with one
      label, annotators with few labels, classes an annotator never used stay finite) and
      says annotators do a little better than chance;
    - :math:`\lambda\, \omega_a` (``shrinkage``): a target matrix with the annotator's
      overall accuracy :math:`s_a` on the diagonal and :math:`(1 - s_a)\, E[c, l]` elsewhere,
      where :math:`E[c, \cdot]` is where the whole crowd's wrong answers about class
      :math:`c` go. An annotator with few labels of a class gets that row from their own
      accuracy and the crowd's typical confusions (*rock* taken for *metal*); their own
      class-specific confusion is learned where their labels show it. With
      ``shrinkage="auto"`` (default), :math:`\lambda` is re-chosen at every M-step from
      :data:`SHRINKAGE_GRID` by empirical Bayes (the Dirichlet-multinomial marginal
      likelihood of the counts): small when annotators differ from the target in ways
      their data support, large (one-coin-like) when they do not, as on quizzes whose
      answer letters carry no meaning. Once the search has kept :math:`\lambda` five M-steps
      running, the M-steps hold it and search again only when the fit is about to stop (it
      runs on if :math:`\lambda` moves then) or reaches ``max_iter``: a third less CPU for
      the 31 M-steps of weather sentiment's full model, and the same fit, bit for bit, on
      every crowd of ``benchmarks/aggregation.py``. ``shrinkage=0`` is the classic model
      with Laplace smoothing.

    ``model="one_coin"`` uses one parameter per annotator: :math:`\theta_a[c, c] = s_a` and
    :math:`\theta_a[c, l] = (1 - s_a)/(k - 1)`. It ignores class-specific confusion, which
    sometimes matches gold better when the class boundaries are vague (weather sentiment:
    *neutral* vs *not about weather*) and loses when confusions are real.

    ``model="mace"`` is the annotator model of MACE (Hovy et al. 2013): annotator :math:`a`
    answers honestly (the true class) with probability :math:`\theta_a` and otherwise
    "spams" a label drawn from their own habit :math:`\xi_a` (a distribution over classes,
    e.g. always answering *A* on a quiz), so :math:`\theta_a[c, l] = \theta_a [l = c] +
    (1 - \theta_a)\, \xi_a[l]`: :math:`k` parameters per annotator instead of
    :math:`k(k - 1)`. The M-step splits each annotator's soft count of correct answers
    :math:`n_a[l, l]` into honest and spammed parts, :math:`h_a[l] = n_a[l, l]\,
    \theta_a / (\theta_a + (1 - \theta_a)\xi_a[l])`, and sets :math:`\theta_a = (\sum_l
    h_a[l] + \mathrm{smoothing}) / (\sum_{c, l} n_a[c, l] + 2\,\mathrm{smoothing})` and
    :math:`\xi_a[l] \propto \sum_c n_a[c, l] - h_a[l] + \mathrm{smoothing}` (a few
    fixed-point sweeps from the previous values: a generalised EM step). It suits crowds
    where some annotators guess, as on quizzes.

    ``model="auto"`` (default) chooses among the three without gold, by how well each
    predicts annotations it has not seen: the annotations (of at most ``selection_items``
    items drawn at random) are split into ``cv_folds`` folds (``cv_repeats`` times); each
    model is fitted on all folds but one and scores the held-out labels by their predictive
    log-probability
    :math:`\log \sum_c P(z_i = c \mid \text{the item's other labels})\, \theta_a[c, l]`;
    the model with the highest mean over all held-out labels is then fitted on all the
    annotations and recorded in ``model_`` (its scores in ``model_scores_``). No single form
    wins everywhere; on the real crowds of ``benchmarks/aggregation.py`` it picks MACE-style
    on RTE, TEMP, WSD and music genre, one-coin or full on the quizzes (20-40 questions, where
    a matrix per annotator is often more than the data support) and the full model on
    weather sentiment. Cross-validation charges each form for its freedom at its real price
    (the full model's confusions are shrunk, so parameter-counting criteria such as BIC
    over-charge it). It costs at most ``3 * cv_folds * cv_repeats`` fits on the selection
    sample (with ``cv_repeats="auto"``, only as many folds as it takes to score 10,000
    held-out labels), at a looser tolerance, run as three grouped EMs (one per model, all its fold fits at once, each
    fold with its own prior, shrinkage and stopping point), so on small crowds it pays the
    per-iteration overhead three times rather than dozens. Held-out likelihood measures how
    well a model explains the annotations, not agreement with any gold: where a gold set is
    itself a plurality of the crowd (weather sentiment), symmetric models such as
    :class:`GLAD` match it better than the model that explains the annotations best.

    Parameters
    ----------
    model : {"auto", "full", "one_coin", "mace"}, default "auto"
        The form of the confusion matrices, or ``"auto"`` to choose one by held-out
        likelihood (above).
    max_iter : int, default 100
        At most this many EM iterations.
    tol : float, default 1e-6
        Stop when the log-likelihood per annotation changes by less than this.
    smoothing : float, default 1.0
        Dirichlet pseudo-count per confusion row (see above); must be > 0.
    shrinkage : float >= 0 or "auto", default "auto"
        Weight :math:`\lambda`, in pseudo-labels per confusion row, of the target matrix in
        the full model (ignored by the others), or ``"auto"`` to choose it by empirical
        Bayes.
    cv_folds : int, default 5
        Folds of the held-out comparison of ``model="auto"`` (>= 2; ignored otherwise).
    cv_repeats : int >= 1 or "auto", default "auto"
        How many random fold splits ``model="auto"`` averages over; ``"auto"``: folds until
        10,000 held-out labels are scored, at most 5 splits (so on crowds of more than
        10,000 labels, only some folds of one split: three of five at 20,000 labels).
    selection_items : int, default 5000
        ``model="auto"`` compares the models on at most this many items, drawn at random
        (>= 1; ignored otherwise): the comparison's cost stays bounded on large crowds.
    random_state : Generator or int, default 0
        The draws of the items and folds of ``model="auto"``. A fit does not depend on the
        order of the rows for a given seed.

    Attributes
    ----------
    model_ : str
        The model fitted: ``model``, or the one ``"auto"`` chose.
    model_scores_ : Series
        For ``model="auto"``: the held-out log-likelihood per annotation of each candidate
        model (higher is better), by model name; empty otherwise.
    classes_ : Index, shape (n_classes,)
        The labels seen in the annotations or in ``gold``, sorted.
    annotators_ : Index, shape (n_annotators,)
        The annotator ids, sorted; the first axis of ``confusion_``.
    labels_ : Series, shape (n_items,)
        The most probable class by ``item_id`` (ties go to the first class).
    posteriors_ : DataFrame, shape (n_items, n_classes)
        :math:`P(z_i = c)` by ``item_id`` and class; rows sum to 1.
    confusion_ : ndarray, shape (n_annotators, n_classes, n_classes)
        ``confusion_[a, c, l]`` is the probability that annotator ``annotators_[a]`` says
        ``classes_[l]`` about an item whose true class is ``classes_[c]``; each
        ``confusion_[a]`` is row-stochastic. :meth:`confusion_of` returns one as a frame.
    skills_ : Series, shape (n_annotators,)
        Estimated accuracy by ``annotator_id``: the mean posterior probability of the labels
        the annotator gave (on gold items, the share that match gold).
    priors_ : Series, shape (n_classes,)
        Class prior :math:`\pi` by class.
    n_iter_ : int
        EM iterations run.
    log_likelihood_ : float
        Log-likelihood of the annotations per annotation at the last iteration.
    shrinkage_ : float
        The shrinkage used in the last M-step (0 for ``"one_coin"`` and ``"mace"``).

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"item_id": [1, 1, 1, 2, 2, 2], "annotator_id": list("abcabc"),
    ...                       "label": [0, 0, 1, 1, 1, 1]})
    >>> DawidSkene().fit(frame).labels_.tolist()
    [0, 1]
    """

    def __init__(self, model: Model = "auto", *, max_iter: int = 100, tol: float = 1e-6,
                 smoothing: float = 1.0, shrinkage: float | Literal["auto"] = "auto",
                 cv_folds: int = 5, cv_repeats: int | Literal["auto"] = "auto",
                 selection_items: int = 5000, random_state: np.random.Generator | int = 0) -> None:
        self.model = model
        self.max_iter = max_iter
        self.tol = tol
        self.smoothing = smoothing
        self.shrinkage = shrinkage
        self.cv_folds = cv_folds
        self.cv_repeats = cv_repeats
        self.selection_items = selection_items
        self.random_state = random_state

    def _check_params(self) -> None:
        check_option(self.model, "model", ("auto", *MODELS))
        check_int(self.cv_folds, "cv_folds", low=2)
        if not (isinstance(self.cv_repeats, str) and self.cv_repeats == "auto"):
            if isinstance(self.cv_repeats, str):
                raise fail("cv_repeats", "an int >= 1 or 'auto'", repr(self.cv_repeats))
            check_int(self.cv_repeats, "cv_repeats", low=1)
        check_int(self.selection_items, "selection_items", low=1)
        check_rng(self.random_state, "random_state")
        check_int(self.max_iter, "max_iter", low=1)
        check_real(self.tol, "tol", low=0.0)
        check_real(self.smoothing, "smoothing", low=0.0, low_open=True)
        if not (isinstance(self.shrinkage, str) and self.shrinkage == "auto"):
            if isinstance(self.shrinkage, str):
                raise fail("shrinkage", "a number >= 0 or 'auto'", repr(self.shrinkage))
            check_real(self.shrinkage, "shrinkage", low=0.0)

    def fit(self, annotations: pd.DataFrame, *, gold: pd.Series | None = None) -> DawidSkene:
        """Fit the confusion matrices and the item posteriors by EM.

        Parameters
        ----------
        annotations : DataFrame
            Columns ``item_id, annotator_id, label``; one row per (item, annotator).
        gold : Series, optional
            Known true labels by ``item_id``. Those items' posteriors are fixed to their gold
            class at every step, so annotators' confusion is learned against the truth there.
            Gold items without annotations are ignored; gold labels that no annotator gave
            become classes too.

        Returns
        -------
        self
        """
        enc, gold_rows, gold_codes = self._encode_with_gold(annotations, gold)
        options = dict(smoothing=self.smoothing, shrinkage=self.shrinkage, max_iter=self.max_iter,
                       tol=self.tol)

        model, scores = self.model, pd.Series(dtype=np.float64, name="heldout_log_likelihood")
        if model == "auto":
            # The comparison needs its fits converged only roughly: a looser tolerance halves
            # its cost (and makes the same choice on every crowd of the benchmark).
            scores = _heldout_scores(enc, MODELS, folds=self.cv_folds, repeats=self.cv_repeats,
                                     max_items=self.selection_items,
                                     rng=check_rng(self.random_state, "random_state"),
                                     gold_rows=gold_rows, gold_codes=gold_codes,
                                     **{**options, "tol": max(self.tol, _SELECTION_TOL)})
            model = str(scores.idxmax())
        fit = _fit_em(enc, model, gold_rows=gold_rows, gold_codes=gold_codes,
                      hold_shrinkage=_SHRINKAGE_STEADY, **options)

        self.model_ = model
        self.model_scores_ = scores
        self._set_results(enc, fit.posteriors)
        self.annotators_ = enc.annotators.rename(ANNOTATOR)
        self.confusion_ = fit.confusion
        self.priors_ = pd.Series(fit.priors, index=enc.classes.rename(LABEL), name="prior")
        correct = fit.posteriors[enc.item, enc.label]
        self.skills_ = _per_annotator_mean(enc, correct)
        self.n_iter_ = fit.n_iter
        self.log_likelihood_ = fit.log_likelihood
        self.shrinkage_ = fit.shrinkage
        return self

    def confusion_of(self, annotator: Hashable) -> pd.DataFrame:
        """One annotator's confusion matrix as a frame: true class (rows) x given label (columns)."""
        where = self.annotators_.get_indexer([annotator])[0]
        if where < 0:
            raise fail("annotator", "an annotator_id seen in fit", repr(annotator))
        return pd.DataFrame(self.confusion_[where], index=self.classes_.rename("true"),
                            columns=self.classes_.rename(LABEL))


def _check_gold(gold: Any) -> pd.Series | None:
    if gold is None:
        return None
    if not isinstance(gold, pd.Series):
        raise fail("gold", "a Series of labels indexed by item_id", f"a {type(gold).__name__}")
    if gold.isna().any():
        raise fail("gold", "a Series without missing labels", f"{int(gold.isna().sum())} missing")
    if gold.index.has_duplicates:
        raise fail("gold", "one label per item_id", "duplicate item_ids")
    return gold


def _gold_codes(enc: _Encoded, gold: pd.Series | None) -> tuple[np.ndarray, np.ndarray]:
    """Item codes and class codes of the gold items that have annotations."""
    if gold is None:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    rows = enc.items.get_indexer(gold.index)
    known = rows >= 0
    return rows[known], enc.classes.get_indexer(gold.to_numpy()[known])


def _subset(enc: _Encoded, rows: np.ndarray) -> tuple[_Encoded, np.ndarray]:
    """The encoding of the annotation rows ``rows`` (a sorted ``(n,)`` index into ``enc``'s
    rows), keeping every annotator and class but only the items those rows label; and the
    ``enc`` item codes of the items kept (sorted: new item code ``j`` is old code
    ``kept[j]``)."""
    kept, item = np.unique(enc.item[rows], return_inverse=True)
    annotator, label, k = enc.annotator[rows], enc.label[rows], enc.n_classes
    X = sparse.csr_matrix((np.ones(item.size), (item, annotator * k + label)),
                          shape=(kept.size, len(enc.annotators) * k))
    X.sort_indices()
    return _Encoded(item, annotator, label, enc.items[kept], enc.annotators, enc.classes, X), kept


def _heldout_scores(enc: _Encoded, models: tuple[str, ...], *, folds: int, repeats: int | str,
                    max_items: int, rng: np.random.Generator, gold_rows: np.ndarray,
                    gold_codes: np.ndarray, **options: Any) -> pd.Series:
    r"""Mean held-out log-likelihood per annotation of each of ``models``, by model name.

    At most ``max_items`` items are drawn; their annotation rows are dealt into ``folds``
    folds at random, ``repeats`` times (``"auto"``: folds are scored until
    :data:`_SELECTION_SCORED` held-out rows are, at most :data:`_SELECTION_MAX_REPEATS`
    splits; the last split scores only the folds needed). For each fold and model,
    EM runs on the other folds and each held-out row ``(i, a, l)`` scores :math:`\log \sum_c
    p_i(c)\, \theta_a[c, l]`, with :math:`p_i` the item's posterior from its training labels
    (its gold class if it has one; the class prior when it has neither). Rows are drawn in
    the encoding's (item, annotator) order, so the draws do not depend on the order of the
    input rows. All the fold fits of a model run as one grouped EM (see :func:`_fit_em`):
    on a small crowd, 25 separate fits would cost 25 times the per-iteration overhead.
    """
    n, m, k = len(enc.items), len(enc.annotators), enc.n_classes
    items = np.sort(rng.choice(n, size=max_items, replace=False)) if n > max_items else np.arange(n)
    rows = np.flatnonzero(np.isin(enc.item, items)) if n > max_items else np.arange(enc.item.size)
    # How many (split, fold) fits to score: every fold of `repeats` splits, or with "auto" just
    # enough folds to score _SELECTION_SCORED held-out rows. On a crowd of 20,000 labels that is
    # three folds of one split, not five: the scores' noise is set by how many labels they
    # average, and the two folds more would only make the comparison dearer.
    if repeats == "auto":
        scored = int(np.clip(-(-_SELECTION_SCORED * folds // max(rows.size, 1)), 1,
                             folds * _SELECTION_MAX_REPEATS))
        repeats = -(-scored // folds)
    else:
        scored = folds * int(repeats)
    gold_of = np.full(n, -1)
    gold_of[gold_rows] = gold_codes
    is_gold = gold_of >= 0
    # The training rows of every (repeat, fold), stacked: crowd g's items are numbered from
    # offset[g], its annotators from g * m.
    train_parts, test_parts, kept_parts, new_parts = [], [], [], []
    for repeat in range(int(repeats)):
        fold = rng.permutation(rows.size) % folds
        for f in range(min(folds, scored - repeat * folds)):
            train, test = rows[fold != f], rows[fold == f]
            if train.size and test.size:
                train_parts.append(train)
                test_parts.append(test)
                # The training rows are sorted by item: an item's first row starts a new one.
                item = enc.item[train]
                new = np.empty(item.size, bool)
                new[0], new[1:] = True, item[1:] != item[:-1]
                new_parts.append(new)
                kept_parts.append(item[new])
    groups = len(train_parts)
    if groups == 0:
        return pd.Series(dict.fromkeys(models, 0.0), name="heldout_log_likelihood")
    sizes = np.array([kept.size for kept in kept_parts])
    offset = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    item_group = np.repeat(np.arange(groups), sizes)
    kept_all = np.concatenate(kept_parts)  # stacked item -> enc item
    group_of_row = np.repeat(np.arange(groups), [t.size for t in train_parts])
    train_all = np.concatenate(train_parts)
    # Each crowd's rows keep the encoding's (item, annotator) order and the crowds follow one
    # another, so the stacked rows are already sorted by (stacked item, stacked annotator):
    # X is built directly in CSR form, with its column indices sorted within each row.
    stacked_item = np.cumsum(np.concatenate(new_parts)) - 1
    stacked_annotator = group_of_row * m + enc.annotator[train_all]
    label = enc.label[train_all]
    indptr = np.zeros(kept_all.size + 1, np.int64)
    np.cumsum(np.bincount(stacked_item, minlength=kept_all.size), out=indptr[1:])
    X = sparse.csr_matrix((np.ones(label.size), stacked_annotator * k + label, indptr),
                          shape=(kept_all.size, groups * m * k))
    X.has_sorted_indices = True
    stacked = _Encoded(stacked_item, stacked_annotator, label,
                       pd.RangeIndex(kept_all.size), pd.RangeIndex(groups * m), enc.classes, X)
    stacked_gold = np.flatnonzero(is_gold[kept_all])

    # Each held-out row: its crowd, its item's stacked row (or -1: no training label there).
    test_group = np.repeat(np.arange(groups), [t.size for t in test_parts])
    test_all = np.concatenate(test_parts)
    test_pos = np.concatenate([np.searchsorted(kept, enc.item[t]) for kept, t in zip(kept_parts, test_parts)])
    seen = (test_pos < sizes[test_group]) & (
        kept_all[np.minimum(offset[test_group] + test_pos, kept_all.size - 1)] == enc.item[test_all])
    stacked_row = np.where(seen, offset[test_group] + test_pos, 0)
    anchored = gold_of[enc.item[test_all]]  # fixed to gold even with no training label
    gold_test = anchored >= 0
    gold_post = np.eye(k)[anchored[gold_test]]
    # Each held-out row's (annotator, label) row of a fit's confusions laid out as (a, l) x c.
    said_row = (test_group * m + enc.annotator[test_all]) * k + enc.label[test_all]
    scores = {}
    for model in models:
        fit = _fit_em(stacked, model, gold_rows=stacked_gold, gold_codes=gold_of[kept_all[stacked_gold]],
                      groups=groups, item_group=item_group, **options)
        priors = fit.priors.reshape(groups, k)
        post = np.where(seen[:, None], fit.posteriors[stacked_row], priors[test_group])
        post[gold_test] = gold_post
        # (n_test, k): the fold's confusion of each held-out row's annotator, over classes c
        # (np.take on rows: a fraction of the cost of indexing confusion[a, :, l]).
        by_row = np.ascontiguousarray(fit.confusion.transpose(0, 2, 1)).reshape(-1, k)
        said = np.take(by_row, said_row, axis=0)
        scores[model] = float(np.log(_add_along(post * said, 1)).sum()) / test_all.size
    return pd.Series(scores, name="heldout_log_likelihood")


@dataclass(frozen=True)
class _EMResult:
    posteriors: np.ndarray  # (n_items, k)
    confusion: np.ndarray  # (n_annotators, k, k)
    priors: np.ndarray  # (k,), or (groups, k) from a grouped fit
    n_iter: int
    log_likelihood: float
    shrinkage: float


def _fit_em(enc: _Encoded, model: str, *, smoothing: float, shrinkage: float | str, max_iter: int,
            tol: float, gold_rows: np.ndarray, gold_codes: np.ndarray, groups: int = 1,
            item_group: np.ndarray | None = None, hold_shrinkage: int | None = None) -> _EMResult:
    """EM for Dawid-Skene on the encoded annotations; see :class:`DawidSkene`.

    With ``groups=G > 1`` it fits ``G`` independent crowds at once (the held-out comparison's
    fold fits): ``item_group`` ``(n_items,)`` gives each item's crowd, annotators are stacked
    crowd by crowd (annotator ``g * m + a`` is annotator ``a`` of crowd ``g``), and each crowd
    has its own class prior, pooled error pattern, shrinkage and stopping iteration, so the
    result is that of ``G`` separate fits. ``priors`` is then ``(G, k)``; ``n_iter`` is the
    iterations run until every crowd stopped, and ``log_likelihood`` and ``shrinkage`` are the
    last crowd's (the comparison uses only the posteriors, confusions and priors). A crowd
    that stops keeps its values from that iteration and is no longer searched; the stopped
    crowds leave the stack together (see ``drop``) once they hold :data:`_DROP_SHARE` of its
    annotations, so the iterations after cost about what the crowds still running need.

    With ``shrinkage="auto"`` and ``hold_shrinkage=h``, a crowd whose shrinkage search kept the
    same value ``h`` M-steps running holds it without searching until it is about to stop; the
    search then runs again (and at the last M-step ``max_iter`` allows), and if it moves the
    shrinkage the crowd runs on (see :data:`_SHRINKAGE_STEADY`). ``None``: search at every
    M-step.
    """
    k, n_all, m_all = enc.n_classes, len(enc.items), len(enc.annotators)
    m = m_all // groups
    single = groups == 1
    if item_group is None:
        item_group = np.zeros(n_all, np.int64)
    X, XT = enc.X, enc.XT
    rows_per_group = np.maximum(np.bincount(item_group[enc.item], minlength=groups), 1)
    # Pseudo-counts added to each confusion row: `smoothing` spread evenly over the row plus
    # `smoothing` on the diagonal (a Dirichlet prior whose mode is "better than chance").
    alpha = np.full((k, k), smoothing / k) + np.eye(k) * smoothing
    # The one-coin accuracy pools a row's pseudo-counts into right (diagonal) and wrong.
    right_prior, wrong_prior = alpha[0, 0], alpha[0].sum() - alpha[0, 0]
    diag = np.arange(k)
    # model="mace": each annotator's honesty and spamming habit, carried between M-steps.
    honesty, habit = np.full(m_all, 0.5), np.full((m_all, k), 1.0 / k)
    # shrinkage="auto": each crowd's position in SHRINKAGE_GRID, carried between M-steps; how
    # many searches running kept it (held without searching from `hold` on); and
    # which crowds the last M-step's search moved.
    lam_at, steady, moved = np.full(groups, -1), np.zeros(groups, np.int64), np.zeros(0, bool)
    hold = np.inf if hold_shrinkage is None else hold_shrinkage

    def anchor(post: np.ndarray) -> np.ndarray:
        if gold_rows.size:
            post[gold_rows] = 0.0
            post[gold_rows, gold_codes] = 1.0
        return post

    # Inside the loop the confusion matrices are kept transposed, conf[a, l, c] = theta_a[c, l]
    # (each annotator's columns, in X's column order a * k + l): the M-step's counts come out
    # of X.T @ post in that order and the E-step's log_conf is a plain reshape of it, so no
    # (n_annotators, k, k) array is transposed in the loop; rows of theta are normalised over
    # axis 1. The result is transposed back once.
    def m_step(post: np.ndarray, search: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``search``: the crowds whose shrinkage is searched (the others keep theirs)."""
        nonlocal honesty, habit, lam_at, steady, moved
        moved = np.zeros(groups, bool)
        # counts[a, l, c] = sum of P(z_i = c) over the items annotator a labelled l.
        counts = np.asarray(XT @ post).reshape(m_all, k, k)
        if single:
            priors = post.sum(axis=0, keepdims=True) + 1.0
        else:
            # One bincount for all k classes: bin c * groups + g adds column c over crowd g's
            # items in item order, as a bincount per column did.
            keys = (np.arange(k)[:, None] * groups + item_group).reshape(-1)
            priors = np.bincount(keys, weights=np.ravel(post, order="F"), minlength=k * groups)
            priors = np.ascontiguousarray(priors.reshape(k, groups).T) + 1.0
        priors /= priors.sum(axis=1, keepdims=True)
        lam = np.zeros(groups)
        if model == "mace":
            honesty, habit = _mace_update(counts.transpose(0, 2, 1), honesty, habit, smoothing)
            conf = np.repeat(((1.0 - honesty)[:, None] * habit)[:, :, None], k, axis=2)
            conf[:, diag, diag] += honesty[:, None]
            return conf, priors, lam
        right = _add_along(np.diagonal(counts, axis1=1, axis2=2), 1)
        skill = (right + right_prior) / (counts.reshape(m_all, k * k).sum(axis=1) + right_prior + wrong_prior)
        # Where wrong answers go: uniform for the one-coin model; for the full model's
        # shrinkage target, each crowd's pooled pattern of errors (which classes get confused).
        if model == "one_coin":
            errors = np.ones((1, k, k))
        else:
            errors = counts.reshape(groups, m, k, k).sum(axis=1) + alpha.T
        errors[:, diag, diag] = 0.0
        errors /= np.maximum(errors.sum(axis=1, keepdims=True), np.finfo(float).tiny)
        if model == "one_coin":
            target = (1.0 - skill)[:, None, None] * errors[0]
        else:  # each crowd's pattern, broadcast over its annotators rather than repeated
            target = ((1.0 - skill).reshape(groups, m, 1, 1) * errors[:, None]).reshape(m_all, k, k)
        target[:, diag, diag] = skill[:, None]
        if model == "one_coin":
            target /= _add_along(target, 1, keepdims=True)  # a no-op unless k == 1
            return target, priors, lam
        if shrinkage == "auto":
            found = lam_at
            if search.any():
                counts4 = counts.reshape(groups, m, k, k).transpose(0, 1, 3, 2)
                target4 = target.reshape(groups, m, k, k).transpose(0, 1, 3, 2)
                if search.all():
                    found = _eb_shrinkage(counts4, alpha, target4, lam_at)
                else:
                    found = lam_at.copy()
                    found[search] = _eb_shrinkage(counts4[search], alpha, target4[search], lam_at[search])
            kept = found == lam_at
            moved = search & ~kept
            steady = np.where(search, np.where(kept, steady + 1, 0), steady)
            lam_at = found
            lam = np.asarray(SHRINKAGE_GRID)[lam_at]
        else:
            lam[:] = float(shrinkage)
        # counts + alpha.T + lam * target, in place: neither is needed after this.
        target.reshape(groups, -1)[...] *= lam[:, None]
        conf = counts
        conf += alpha.T
        conf += target
        conf /= _add_along(conf, 1, keepdims=True)
        return conf, priors, lam

    def e_step(conf: np.ndarray, priors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # log_conf[a * k + l, c] = log theta_a[c, l], matching the columns of X.
        log_conf = np.log(conf).reshape(m_all * k, k)
        # Column-major, so the reductions over the k classes below run down contiguous columns.
        log_priors = np.log(priors)
        joint = np.asfortranarray(X @ log_conf)
        joint += log_priors if single else log_priors[item_group]
        top = np.maximum.reduce([joint[:, c] for c in range(k)])
        log_norm = top + np.log(np.add.reduce([np.exp(joint[:, c] - top) for c in range(k)]))
        joint -= log_norm[:, None]
        post = np.exp(joint, out=joint)
        # log_norm[i] = log P(item i's labels), so this is the log-likelihood per annotation.
        ll = (np.array([log_norm.sum()]) if single
              else np.bincount(item_group, weights=log_norm, minlength=groups))
        return anchor(post), ll / rows_per_group

    # Grouped fits: the crowds still running (their numbers in the stack given), their items
    # and annotators (positions in enc), and each crowd's result from the iteration it stopped.
    crowd_ids, item_ids, annotator_ids = np.arange(groups), np.arange(n_all), np.arange(m_all)
    result = (np.empty((n_all, k)), np.empty((m_all, k, k)), np.empty((groups, k)), np.empty(groups),
              np.empty(groups))

    def keep(stopped: np.ndarray, post: np.ndarray, conf: np.ndarray, priors: np.ndarray,
             lam: np.ndarray, ll: np.ndarray) -> None:
        """Record the values of the crowds in ``stopped`` (a mask over the crowds running)."""
        items, annotators = stopped[item_group], np.repeat(stopped, m)
        result[0][item_ids[items]], result[1][annotator_ids[annotators]] = post[items], conf[annotators]
        ids = crowd_ids[stopped]
        result[2][ids], result[3][ids], result[4][ids] = priors[stopped], lam[stopped], ll[stopped]

    def drop(stopped: np.ndarray) -> np.ndarray:
        """Take the crowds in ``stopped`` out of the stack; the mask of the items kept. Each
        crowd's sums run over its own items and annotators, in the same order as before, so
        the crowds still running get the same values as if the others were there."""
        nonlocal X, XT, item_group, groups, m_all, rows_per_group, gold_rows, gold_codes
        nonlocal honesty, habit, lam_at, steady, crowd_ids, item_ids, annotator_ids
        running = ~stopped
        items, annotators = running[item_group], np.repeat(running, m)
        # X's rows of the items kept; a crowd's columns shift down by the crowds dropped before it.
        # (Each entry's crowd is its row's: numpy's integer division of the columns is slow.)
        per_row = np.diff(X.indptr)
        shift = (np.cumsum(stopped) * (m * k))[np.repeat(item_group, per_row)]
        entries = np.repeat(items, per_row)
        indptr = np.zeros(int(items.sum()) + 1, X.indptr.dtype)
        np.cumsum(per_row[items], out=indptr[1:])
        X = sparse.csr_matrix((X.data[entries], (X.indices - shift)[entries], indptr),
                              shape=(indptr.size - 1, int(running.sum()) * m * k))
        X.has_sorted_indices = True
        XT = X.T.tocsr()
        new_item = np.cumsum(items) - 1
        gold_kept = items[gold_rows]
        gold_rows, gold_codes = new_item[gold_rows[gold_kept]], gold_codes[gold_kept]
        item_group = (np.cumsum(running) - 1)[item_group[items]]
        groups, m_all = int(running.sum()), int(annotators.sum())
        rows_per_group, lam_at, steady = rows_per_group[running], lam_at[running], steady[running]
        honesty, habit = honesty[annotators], habit[annotators]
        crowd_ids, item_ids, annotator_ids = crowd_ids[running], item_ids[items], annotator_ids[annotators]
        return items

    counts = _vote_counts(enc)
    post = anchor(counts / counts.sum(axis=1, keepdims=True))
    conf, priors, lam = m_step(post, np.ones(groups, bool))
    previous, n_iter, ll = np.full(groups, -np.inf), 0, np.full(groups, -np.inf)
    # Crowds that stopped (their values kept) but are still in the stack, see _DROP_SHARE.
    frozen = np.zeros(groups, bool)
    for n_iter in range(1, max_iter + 1):
        post, ll = e_step(conf, priors)
        stop = (np.abs(ll - previous) < tol) & ~frozen
        held = steady >= hold
        # A crowd about to stop has its held shrinkage searched again at the final counts; if
        # the search moves it, the crowd runs on with the new value instead of stopping. The
        # last M-step allowed searches every crowd, so a fit cut at max_iter ends searched too.
        # A frozen crowd's values are kept already: searching its shrinkage would be wasted.
        conf, priors, lam = m_step(post, search=(~held | stop | (n_iter == max_iter)) & ~frozen)
        stop &= ~(held & moved)
        if stop.all():
            break
        if stop.any():
            keep(stop, post, conf, priors, lam, ll)
            frozen |= stop
            if frozen.all():
                break
            if rows_per_group[frozen].sum() >= _DROP_SHARE * rows_per_group.sum():
                items, running = drop(frozen), ~frozen
                post, conf, priors = post[items], conf[np.repeat(running, m)], priors[running]
                lam, ll, frozen = lam[running], ll[running], frozen[running]
        previous = ll
    if single:
        return _EMResult(post, np.ascontiguousarray(conf.transpose(0, 2, 1)), priors[0], n_iter,
                         float(ll[0]), float(lam[0]))
    # The crowds still running (all stopped together, or at max_iter) keep their last values.
    keep(~frozen, post, conf, priors, lam, ll)
    post, conf, priors, lam, ll = result
    return _EMResult(post, np.ascontiguousarray(conf.transpose(0, 2, 1)), priors, n_iter,
                     float(ll[-1]), float(lam[-1]))


def _mace_update(counts: np.ndarray, honesty: np.ndarray, habit: np.ndarray,
                 smoothing: float) -> tuple[np.ndarray, np.ndarray]:
    r"""Honesty :math:`\theta` ``(n_annotators,)`` and spamming habit :math:`\xi`
    ``(n_annotators, k)`` of the MACE model from the soft counts ``counts[a, c, l]``
    ``(n_annotators, k, k)``, by :data:`_MACE_SWEEPS` fixed-point sweeps from the given
    values (see :class:`DawidSkene`)."""
    right = np.diagonal(counts, axis1=1, axis2=2)  # (m, k): said l about an item of class l
    said = _add_along(counts, 1)  # (m, k): said l at all
    said_total = _add_along(said, 1)
    for _ in range(_MACE_SWEEPS):
        # The share of right answers that were honest rather than lucky spam.
        honest = right * (honesty[:, None] / (honesty[:, None] + (1.0 - honesty[:, None]) * habit))
        honesty = (_add_along(honest, 1) + smoothing) / (said_total + 2.0 * smoothing)
        habit = said - honest + smoothing
        habit /= _add_along(habit, 1, keepdims=True)
    return honesty, habit


def _eb_shrinkage(counts: np.ndarray, alpha: np.ndarray, target: np.ndarray, start: np.ndarray) -> np.ndarray:
    r"""Each crowd's position in :data:`SHRINKAGE_GRID` of the shrinkage :math:`\lambda` that
    maximises the marginal likelihood of its soft counts under the prior :math:`\theta_a[c]
    \sim \mathrm{Dirichlet}(\alpha_c + \lambda\, \omega_a[c])` (empirical Bayes).

    ``counts``, ``target``: ``(n_crowds, n_annotators, k, k)``; ``alpha``: ``(k, k)``;
    ``start``: ``(n_crowds,)`` the previous M-step's positions, or -1 for none. The
    Dirichlet-multinomial log-likelihood of a row :math:`n` under :math:`\beta` is, up to
    terms free of :math:`\beta`, :math:`\log\Gamma(\sum\beta) - \log\Gamma(\sum\beta + \sum n)
    + \sum_l [\log\Gamma(\beta_l + n_l) - \log\Gamma(\beta_l)]`. Without a start it searches
    the whole grid for the first crowd, and the other crowds (folds of one crowd, much alike)
    start from its choice; from a start each climbs to the nearest grid point that beats both
    its neighbours (three evaluations when :math:`\lambda` stays put, instead of nine). The two
    agree when the marginal likelihood has one maximum over the grid, as it had in all 1,889
    M-steps we checked (every fit of ``DawidSkene()`` and ``DawidSkene("full")`` on the 11
    real crowds of ``benchmarks/aggregation.py``).

    From a start, each crowd is first checked without its cells of small soft counts (see
    :func:`_eb_settled`); only the crowds whose shrinkage that check cannot show to stay put
    are climbed with the full scores, so the positions are those of the full climb.
    """
    if (start >= 0).all():
        settled = _eb_settled(counts, alpha, target, start)
        if settled.all():
            return start.copy()
        if settled.any():
            at, rest = start.copy(), ~settled
            at[rest] = _eb_climb(counts[rest], alpha, target[rest], start[rest])
            return at
    return _eb_climb(counts, alpha, target, start)


def _eb_settled(counts: np.ndarray, alpha: np.ndarray, target: np.ndarray, at: np.ndarray) -> np.ndarray:
    r"""``(n_crowds,)`` True where :func:`_eb_climb` from ``at`` certainly stays at ``at``
    (its score beats both neighbours'); False where it may move (this does not say it will),
    and everywhere when fewer than :data:`_EB_MIN_SMALL_SHARE` of the cells are small.

    Shapes as in :func:`_eb_shrinkage`. Each score is summed without the cells whose count
    :math:`n` is below :data:`_EB_SMALL_COUNT`. Such a cell's term :math:`\log\Gamma(\beta + n)
    - \log\Gamma(\beta) = \int_0^n \psi(\beta + t)\, dt` is at most :math:`n H` in size,
    with :math:`H` the largest :math:`|\psi|` over every :math:`\beta` the grid allows
    (:math:`\psi` increases, so it is at an end of that range); the scores left out therefore
    move a crowd's score by at most :math:`H` times its small counts, plus the rounding of the
    sums (bounded below; under 1e-6 on the crowds of the benchmark). A crowd is settled when its score,
    lowered by that bound, beats each neighbour's raised by it: the full scores would then
    rank them the same way, so the climb's answer is the same, bit for bit.
    """
    grid = np.asarray(SHRINKAGE_GRID)
    crowds, k = at.size, counts.shape[-1]
    # The cells in memory order (the M-step passes transposed views of (crowds, m, l, c)
    # arrays), so no copy is made; each crowd's cells stay one block either way.
    cells_per_crowd = counts[0].size
    if all(x.transpose(0, 1, 3, 2).flags.c_contiguous for x in (counts, target)):
        flat, target_flat, alpha_flat = (counts.transpose(0, 1, 3, 2).reshape(-1),
                                         target.transpose(0, 1, 3, 2).reshape(-1), alpha.T.reshape(-1))
    else:
        flat, target_flat, alpha_flat = counts.reshape(-1), target.reshape(-1), alpha.reshape(-1)
    big = np.flatnonzero(flat >= _EB_SMALL_COUNT)
    if big.size > (1.0 - _EB_MIN_SMALL_SHARE) * flat.size:
        return np.zeros(crowds, bool)
    down, up = np.maximum(at - 1, 0), np.minimum(at + 1, grid.size - 1)
    n = _add_along(counts, 3)
    alpha_total, target_total = alpha.sum(axis=1), _add_along(target, 3)
    labels = n.reshape(crowds, -1).sum(axis=1)
    starts = np.searchsorted(big, np.arange(crowds) * cells_per_crowd)
    sizes = np.diff(starts, append=big.size)
    crowd, empty = np.repeat(np.arange(crowds), sizes), sizes == 0
    # (numpy's integer modulo is slow: the prior's cells are gathered from a tiled copy.)
    alpha_big = np.tile(alpha_flat, flat.size // alpha_flat.size)[big]
    n_big, target_big = flat[big], target_flat[big]

    def per_crowd(values: np.ndarray) -> np.ndarray:
        sums = np.add.reduceat(np.append(values, 0.0), starts)
        sums[empty] = 0.0
        return sums

    def score(position: np.ndarray) -> np.ndarray:
        # The same operations as _eb_climb's score, on the cells kept.
        lam = grid[position]
        total = alpha_total + lam[:, None, None] * target_total
        rows = gammaln(total)
        rows -= gammaln(total + n)
        beta = lam[crowd] * target_big
        beta += alpha_big
        cells = gammaln(beta + n_big)
        cells -= gammaln(beta)
        return rows.reshape(crowds, -1).sum(axis=1) + per_crowd(cells)

    # The bound. Every beta lies in [lo, hi] and every row total in [lo_row, hi_row].
    eps = np.finfo(float).eps
    lam_max = grid[-1] * max(float(target_total.max()), 0.0)
    lo, hi = float(alpha.min()), float(alpha.max()) + lam_max + _EB_SMALL_COUNT
    lo_row, hi_row = float(alpha_total.min()), float(alpha_total.max()) + lam_max + float(n.max())
    psi = float(np.abs(digamma([lo, hi, lo_row, hi_row])).max())
    big_gamma = float(np.abs(gammaln([lo, hi_row])).max()) + 1.0
    # The small counts, as what the big ones leave of the crowd's total (its rounding allowed).
    small = np.maximum(labels - per_crowd(n_big), 0.0) + 4.0 * eps * cells_per_crowd * labels
    terms = 2.0 * (cells_per_crowd + n[0].size)
    # Left out: psi * small counts, and each left-out term's own rounding (8 eps * |log gamma|
    # in both codes); summing: terms * eps * the sum of the terms' sizes, in both codes.
    bound = (psi * small + 8.0 * eps * big_gamma * cells_per_crowd
             + 2.0 * terms * eps * (2.0 * psi * labels + 8.0 * eps * big_gamma * terms))
    here = score(at) - bound
    settled = np.ones(crowds, bool)
    for side, moves in ((down, down != at), (up, up != at)):
        if moves.any():
            settled &= ~moves | (here > score(side) + bound)
    return settled


def _eb_climb(counts: np.ndarray, alpha: np.ndarray, target: np.ndarray, start: np.ndarray) -> np.ndarray:
    """:func:`_eb_shrinkage` with the full scores: the grid scan without a start, the climb."""
    n = _add_along(counts, 3)
    grid = np.asarray(SHRINKAGE_GRID)
    alpha_total, target_total = alpha.sum(axis=1), _add_along(target, 3)

    def score(at: np.ndarray, crowds: np.ndarray | slice = slice(None)) -> np.ndarray:
        # The two gammaln calls over (n_crowds, m, k, k) cells are most of the cost of the
        # full model's fits; the arithmetic around them is done in place.
        lam = grid[at][:, None, None]
        total = alpha_total + lam * target_total[crowds]
        rows = gammaln(total)
        rows -= gammaln(total + n[crowds])
        beta = lam[..., None] * target[crowds]
        beta += alpha
        prior = gammaln(beta)
        beta += counts[crowds]
        cells = gammaln(beta, out=beta)
        cells -= prior
        return rows.reshape(len(at), -1).sum(axis=1) + cells.sum(axis=(1, 2, 3))

    def neighbours(at: np.ndarray, down: np.ndarray, up: np.ndarray, here: np.ndarray) -> np.ndarray:
        # At the ends of the grid a neighbour is the point itself: no need to score it again.
        # Both sides are scored in one call.
        scores = np.stack([here, here])
        side, crowd = np.nonzero(np.stack([down != at, up != at]))
        if crowd.size:
            scores[side, crowd] = score(np.where(side == 0, down[crowd], up[crowd]), crowd)
        return scores

    if (start < 0).any():
        first = int(np.argmax(score(np.arange(grid.size), np.zeros(grid.size, np.int64))))
        if len(start) == 1:
            return np.array([first])  # the first of equal maxima, the smallest lambda
        start = np.where(start < 0, first, start)
    at, here = start.copy(), score(start)
    while True:
        down, up = np.maximum(at - 1, 0), np.minimum(at + 1, grid.size - 1)
        # Ties go to the smaller lambda, as in the full search.
        lower, upper = neighbours(at, down, up, here)
        candidates = np.stack([lower, here, upper])
        best = np.argmax(candidates, axis=0)
        moved = np.choose(best, [down, at, up])
        if (moved == at).all():
            return at
        at, here = moved, candidates[best, np.arange(at.size)]


# --------------------------------------------------------------------------------------------
# GLAD: annotator ability and item difficulty


class GLAD(_GoldAnchored):
    r"""Whitehill et al.'s (2009) GLAD model: annotator ability times item easiness.

    Annotator :math:`a` has an ability :math:`\alpha_a` (any real: 0 is guessing, negative
    is adversarial) and item :math:`i` an easiness :math:`\beta_i = e^{b_i} > 0` (its
    difficulty is :math:`1/\beta_i`). The annotator is right with probability
    :math:`\sigma(\alpha_a \beta_i)`, :math:`\sigma(x) = 1 / (1 + e^{-x})`, and otherwise
    says each of the :math:`k - 1` wrong classes alike:

    .. math::

        P(l_{ai} = l \mid z_i = c) = \sigma(\alpha_a\beta_i) \text{ if } l = c, \quad
        \frac{1 - \sigma(\alpha_a\beta_i)}{k - 1} \text{ otherwise.}

    So one hard item does not drag down the skill of everyone who missed it, and an item
    that only weak annotators got "wrong" in the same way is not overruled by them when a
    strong one disagrees. Priors: :math:`\alpha_a \sim N(\mu_\alpha, 1)`, :math:`b_i \sim
    N(\mu_b, 1)` (MAP estimates), and class prior :math:`\pi` learned as in
    :class:`DawidSkene`. Starting from majority-vote shares, EM alternates

    - M-step: with :math:`p_r = P(z_i = l_r)` the posterior of the label given in row
      :math:`r = (a, i)` and :math:`s_r = \alpha_a\beta_i`, maximise

      .. math::

          Q = \sum_r \big[p_r \log\sigma(s_r) + (1 - p_r) \log(1 - \sigma(s_r))\big]
              - \tfrac12 \sum_a (\alpha_a - \mu_\alpha)^2 - \tfrac12 \sum_i (b_i - \mu_b)^2

      by conjugate gradient from the previous values (the gradient is
      :math:`\partial Q/\partial s_r = p_r - \sigma(s_r)`, summed per annotator times
      :math:`\beta_i` and per item times :math:`\alpha_a\beta_i`, minus the prior terms),
      and :math:`\pi_c \propto \sum_i P(z_i = c) + 1`;
    - E-step: :math:`\log P(z_i = c) = \log\pi_c + \sum_{r \in i} [\,l_r = c\,]
      \log\sigma(s_r) + [\,l_r \ne c\,] \log\frac{1 - \sigma(s_r)}{k - 1}` + const,
      normalised per item;

    until the log posterior (log-likelihood of the labels plus log prior) per annotation
    changes by less than ``tol``. Every sum is a ``bincount`` over the annotation rows
    sorted by (item, annotator), so the fit does not depend on the row order.

    Use it when items differ in difficulty (ambiguous tweets, trick questions) more than
    annotators differ in which classes they confuse; :class:`DawidSkene` learns the
    confusions but treats all items alike.

    Parameters
    ----------
    max_iter : int, default 100
        At most this many EM iterations.
    tol : float, default 1e-6
        Stop when the log posterior per annotation changes by less than this.
    m_step_iter : int, default 25
        At most this many conjugate-gradient iterations per M-step.
    ability_prior : float, default 1.0
        Prior mean :math:`\mu_\alpha` of the abilities (1: better than chance).
    easiness_prior : float, default 1.0
        Prior mean :math:`\mu_b` of the log easiness :math:`b_i`.

    Attributes
    ----------
    classes_ : Index, shape (n_classes,)
        The labels seen in the annotations or in ``gold``, sorted.
    labels_ : Series, shape (n_items,)
        The most probable class by ``item_id`` (ties go to the first class).
    posteriors_ : DataFrame, shape (n_items, n_classes)
        :math:`P(z_i = c)` by ``item_id`` and class; rows sum to 1.
    abilities_ : Series, shape (n_annotators,)
        :math:`\alpha_a` by ``annotator_id``.
    difficulties_ : Series, shape (n_items,)
        :math:`1/\beta_i` by ``item_id`` (higher is harder).
    skills_ : Series, shape (n_annotators,)
        Estimated accuracy by ``annotator_id``: the mean posterior probability of the labels
        the annotator gave.
    priors_ : Series, shape (n_classes,)
        Class prior :math:`\pi` by class.
    n_iter_ : int
        EM iterations run.
    log_likelihood_ : float
        Log-likelihood of the annotations per annotation at the last iteration.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"item_id": [1, 1, 1, 2, 2, 2], "annotator_id": list("abcabc"),
    ...                       "label": [0, 0, 1, 1, 1, 1]})
    >>> GLAD().fit(frame).labels_.tolist()
    [0, 1]
    """

    def __init__(self, *, max_iter: int = 100, tol: float = 1e-6, m_step_iter: int = 25,
                 ability_prior: float = 1.0, easiness_prior: float = 1.0) -> None:
        self.max_iter = max_iter
        self.tol = tol
        self.m_step_iter = m_step_iter
        self.ability_prior = ability_prior
        self.easiness_prior = easiness_prior

    def _check_params(self) -> None:
        check_int(self.max_iter, "max_iter", low=1)
        check_real(self.tol, "tol", low=0.0)
        check_int(self.m_step_iter, "m_step_iter", low=1)
        check_real(self.ability_prior, "ability_prior")
        check_real(self.easiness_prior, "easiness_prior")

    def fit(self, annotations: pd.DataFrame, *, gold: pd.Series | None = None) -> GLAD:
        """Fit abilities, item difficulties and the item posteriors by EM.

        Parameters
        ----------
        annotations : DataFrame
            Columns ``item_id, annotator_id, label``; one row per (item, annotator).
        gold : Series, optional
            Known true labels by ``item_id``; those items' posteriors are fixed to their gold
            class at every step (as in :meth:`DawidSkene.fit`).

        Returns
        -------
        self
        """
        enc, gold_rows, gold_codes = self._encode_with_gold(annotations, gold)

        fit = _fit_glad(enc, max_iter=self.max_iter, tol=self.tol, m_step_iter=self.m_step_iter,
                        ability_prior=float(self.ability_prior),
                        easiness_prior=float(self.easiness_prior),
                        gold_rows=gold_rows, gold_codes=gold_codes)

        self._set_results(enc, fit.posteriors)
        self.abilities_ = pd.Series(fit.alpha, index=enc.annotators.rename(ANNOTATOR), name="ability")
        self.difficulties_ = pd.Series(np.exp(-fit.log_beta), index=enc.items.rename(ITEM),
                                       name="difficulty")
        self.priors_ = pd.Series(fit.priors, index=enc.classes.rename(LABEL), name="prior")
        self.skills_ = _per_annotator_mean(enc, fit.posteriors[enc.item, enc.label])
        self.n_iter_ = fit.n_iter
        self.log_likelihood_ = fit.log_likelihood
        return self


@dataclass(frozen=True)
class _GladResult:
    posteriors: np.ndarray  # (n_items, k)
    alpha: np.ndarray  # (n_annotators,)
    log_beta: np.ndarray  # (n_items,)
    priors: np.ndarray  # (k,)
    n_iter: int
    log_likelihood: float


def _fit_glad(enc: _Encoded, *, max_iter: int, tol: float, m_step_iter: int, ability_prior: float,
              easiness_prior: float, gold_rows: np.ndarray, gold_codes: np.ndarray) -> _GladResult:
    """EM for GLAD on the encoded annotations; see :class:`GLAD`."""
    k, m, n = enc.n_classes, len(enc.annotators), len(enc.items)
    item, annotator, label = enc.item, enc.annotator, enc.label
    cell = item * k + label
    # A wrong answer is one of k - 1 classes; with one class there is no wrong answer.
    log_wrong_share = np.log(k - 1) if k > 1 else 0.0

    def anchor(post: np.ndarray) -> np.ndarray:
        if gold_rows.size:
            post[gold_rows] = 0.0
            post[gold_rows, gold_codes] = 1.0
        return post

    def row_logs(alpha: np.ndarray, log_beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = alpha[annotator] * np.exp(log_beta[item])
        return -np.logaddexp(0.0, -s), -np.logaddexp(0.0, s)  # log sigma(s), log(1 - sigma(s))

    def e_step(alpha: np.ndarray, log_beta: np.ndarray, priors: np.ndarray) -> tuple[np.ndarray, float]:
        log_right, log_wrong = row_logs(alpha, log_beta)
        log_wrong = log_wrong - log_wrong_share
        # Every row adds log_wrong to all classes of its item, plus (log_right - log_wrong)
        # to the class it named.
        joint = np.bincount(item, weights=log_wrong, minlength=n)[:, None] + np.log(priors)
        joint += np.bincount(cell, weights=log_right - log_wrong, minlength=n * k).reshape(n, k)
        top = joint.max(axis=1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(joint - top).sum(axis=1))
        return anchor(np.exp(joint - log_norm[:, None])), float(log_norm.sum())

    def m_step(post: np.ndarray, alpha: np.ndarray, log_beta: np.ndarray) -> tuple[np.ndarray, ...]:
        p = post[item, label]

        def negative_q(x: np.ndarray) -> tuple[float, np.ndarray]:
            a, b = x[:m], x[m:]
            beta = np.exp(b)
            s = a[annotator] * beta[item]
            q = (p * -np.logaddexp(0.0, -s) + (1 - p) * -np.logaddexp(0.0, s)).sum()
            q -= 0.5 * (((a - ability_prior) ** 2).sum() + ((b - easiness_prior) ** 2).sum())
            residual = p - expit(s)
            grad_a = np.bincount(annotator, weights=residual * beta[item], minlength=m) - (a - ability_prior)
            grad_b = np.bincount(item, weights=residual * s, minlength=n) - (b - easiness_prior)
            return -q, -np.concatenate([grad_a, grad_b])

        result = optimize.minimize(negative_q, np.concatenate([alpha, log_beta]), jac=True,
                                   method="CG", options={"maxiter": m_step_iter})
        priors = post.sum(axis=0) + 1.0
        return result.x[:m], result.x[m:], priors / priors.sum()

    def log_prior(alpha: np.ndarray, log_beta: np.ndarray) -> float:
        return -0.5 * float(((alpha - ability_prior) ** 2).sum() + ((log_beta - easiness_prior) ** 2).sum())

    counts = _vote_counts(enc)
    post = anchor(counts / counts.sum(axis=1, keepdims=True))
    alpha, log_beta, priors = m_step(post, np.full(m, ability_prior), np.full(n, easiness_prior))
    previous, n_iter, ll = -np.inf, 0, -np.inf
    for n_iter in range(1, max_iter + 1):
        post, ll = e_step(alpha, log_beta, priors)
        objective = (ll + log_prior(alpha, log_beta)) / item.size
        alpha, log_beta, priors = m_step(post, alpha, log_beta)
        if abs(objective - previous) < tol:
            break
        previous = objective
    return _GladResult(post, alpha, log_beta, priors, n_iter, ll / item.size)
