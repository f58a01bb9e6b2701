"""Simulated annotators that err like real ones.

A simulated annotator is a confusion matrix ``C`` of shape ``(k, k)``: ``C[y, l]`` is the
probability of answering ``l`` when the truth is ``y``. Its diagonal is the annotator's
accuracy ``a``; its errors go to the classes that are really confusable with ``y``::

    C[y] = a * e_y + (1 - a) * (s * Q[y] + (1 - s) * U[y])

where ``Q`` is a *confusability* matrix (row-stochastic, zero diagonal: where errors on
class ``y`` land, learned from a model's out-of-fold probabilities or from a real crowd),
``U`` spreads errors uniformly over the other classes and ``s`` is the share of errors that
follow ``Q``. Accuracies are drawn per annotator from a Beta distribution whose mean and
spread depend on the skill :class:`Tier`; so are the seconds per item (log-normal) and the
cost per hour. A :class:`Guideline` version moves a share of the confusion on named class
pairs back to the diagonal.

Typical use, on 10 classes with a model's out-of-fold probabilities::

    Q = confusability_from_probs(oof_probs, labels)
    crowd = make_crowd({Tier.NOVICE: 20, Tier.EXPERT: 3}, 10, confusability=Q, rng=0)
    noisy = crowd.ask(labels, tier=Tier.NOVICE, labels_per_item=3, rng=1)
    reviewed = crowd.ask(labels[doubtful], tier=Tier.EXPERT, rng=2)

To mimic a real crowd, :func:`fit_crowd_profile` measures it against gold (skill
distribution, where errors go, how labels are spread over items) and :func:`crowd_like`
builds a simulated twin for each real annotator. Everything random takes an ``rng``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import brentq
from scipy.special import expit, logit
from scipy.stats import betabinom, binom

from ._validation import check_annotations, check_array, check_int, check_labels, check_pred_probs, check_real, check_rng, fail
from .agreement import annotator_accuracy
from .columns import ANNOTATOR, COST, ITEM, LABEL, N_CORRECT, N_ITEMS, SECONDS

__all__ = [
    "DEFAULT_PROFILES",
    "Annotator",
    "CrowdProfile",
    "Guideline",
    "SimulatedCrowd",
    "Tier",
    "TierProfile",
    "annotator_confusions",
    "confusability_from_confusion",
    "confusability_from_probs",
    "crowd_like",
    "draw_item_difficulty",
    "fit_crowd_profile",
    "make_crowd",
    "uniform_confusability",
]

# A row of a confusion matrix may drift from 1 by float rounding after a guideline moves mass.
_ROW_ATOL = 1e-6
# Cells of the (item, annotator) key matrix drawn at once by ``assign``; bounds its memory.
_ASSIGN_CHUNK_CELLS = 2_000_000
_SECONDS_PER_HOUR = 3600.0


class Tier(str, Enum):
    """Skill tier of an annotator."""

    NOVICE = "novice"
    EXPERIENCED = "experienced"
    EXPERT = "expert"


def _check_tier(value: Any, name: str = "tier") -> Tier:
    try:
        return Tier(value)
    except ValueError:
        raise fail(name, f"one of {[t.value for t in Tier]}", repr(value)) from None


@dataclass(frozen=True)
class TierProfile:
    """How annotators of one tier behave.

    Parameters
    ----------
    accuracy_mean, accuracy_std : float
        Mean and standard deviation across annotators of the per-annotator accuracy, which is
        Beta distributed; ``0 < mean < 1`` and ``0 <= std < sqrt(mean * (1 - mean))``.
    seconds_median : float
        Median seconds an annotator of this tier spends on an item (> 0).
    seconds_sigma : float
        Log-scale spread of the seconds of one annotator from item to item (>= 0).
    speed_spread : float
        Log-scale spread across annotators of their median seconds per item (>= 0).
    cost_per_hour : float
        What an hour of this tier costs (>= 0), in any currency.
    confusable_share : float
        Share ``s`` in [0, 1] of errors that follow the confusability matrix; the rest fall
        uniformly on the other classes.
    """

    accuracy_mean: float
    accuracy_std: float
    seconds_median: float
    seconds_sigma: float = 0.5
    speed_spread: float = 0.3
    cost_per_hour: float = 20.0
    confusable_share: float = 0.8

    def __post_init__(self) -> None:
        mean = check_real(self.accuracy_mean, "accuracy_mean", low=0, high=1, low_open=True, high_open=True)
        check_real(self.accuracy_std, "accuracy_std", low=0, high=float(np.sqrt(mean * (1 - mean))), high_open=True)
        check_real(self.seconds_median, "seconds_median", low=0, low_open=True)
        check_real(self.seconds_sigma, "seconds_sigma", low=0)
        check_real(self.speed_spread, "speed_spread", low=0)
        check_real(self.cost_per_hour, "cost_per_hour", low=0)
        check_real(self.confusable_share, "confusable_share", low=0, high=1)

    def sample_accuracy(self, n: int, *, rng: np.random.Generator | int) -> np.ndarray:
        """Draw ``n`` annotator accuracies, shape ``(n,)``, from this tier's Beta distribution."""
        n = check_int(n, "n", low=0)
        return _beta_draws(self.accuracy_mean, self.accuracy_std, n, check_rng(rng))


def _beta_draws(mean: float, std: float, n: int, rng: np.random.Generator) -> np.ndarray:
    if std == 0:
        return np.full(n, mean)
    # Method of moments: mean = a / (a + b), var = mean (1 - mean) / (a + b + 1).
    total = mean * (1 - mean) / std**2 - 1
    return rng.beta(mean * total, (1 - mean) * total, size=n)


# Experts are faster per item but cost more per hour; their rare errors are almost all on the
# pairs that are genuinely ambiguous, while a novice's also include slips anywhere.
DEFAULT_PROFILES: Mapping[Tier, TierProfile] = MappingProxyType({
    Tier.NOVICE: TierProfile(accuracy_mean=0.72, accuracy_std=0.10, seconds_median=20.0,
                             cost_per_hour=15.0, confusable_share=0.6),
    Tier.EXPERIENCED: TierProfile(accuracy_mean=0.86, accuracy_std=0.05, seconds_median=15.0,
                                  cost_per_hour=30.0, confusable_share=0.8),
    Tier.EXPERT: TierProfile(accuracy_mean=0.96, accuracy_std=0.02, seconds_median=12.0,
                             cost_per_hour=90.0, confusable_share=0.95),
})


# ---------------------------------------------------------------------------------------------
# Where errors go


def uniform_confusability(n_classes: int) -> np.ndarray:
    """Errors spread evenly over the other classes: shape ``(k, k)``, ``1 / (k - 1)`` off the
    diagonal, 0 on it."""
    k = check_int(n_classes, "n_classes", low=2)
    return (1.0 - np.eye(k)) / (k - 1)


def confusability_from_confusion(confusion: Any, name: str = "confusion") -> np.ndarray:
    """Turn a count or probability confusion matrix into a confusability matrix.

    The diagonal is dropped and each row rescaled to sum to 1; a row without off-diagonal
    mass (a class never confused, or never seen) becomes uniform.

    Parameters
    ----------
    confusion : array of shape (k, k)
        Non-negative; ``confusion[y, l]`` counts (or weighs) answers ``l`` for truth ``y``.

    Returns
    -------
    ndarray of shape (k, k)
        Row-stochastic with a zero diagonal.

    Examples
    --------
    >>> confusability_from_confusion([[8, 2, 0], [1, 9, 0], [0, 0, 5]]).round(2)
    array([[0. , 1. , 0. ],
           [1. , 0. , 0. ],
           [0. , 0.5, 0.5]])
    """
    matrix = check_array(confusion, name, ndim=2)
    k = matrix.shape[0]
    if k < 2 or matrix.shape != (k, k):
        raise fail(name, "a square (k, k) array with k >= 2", f"shape {matrix.shape}")
    if not np.isfinite(matrix).all() or matrix.min() < 0:
        raise fail(name, "finite non-negative values", f"values from {np.nanmin(matrix):.4g} to {np.nanmax(matrix):.4g}")
    off = matrix * (1.0 - np.eye(k))
    sums = off.sum(axis=1, keepdims=True)
    uniform = uniform_confusability(k)
    return np.where(sums > 0, off / np.where(sums > 0, sums, 1.0), uniform)


def confusability_from_probs(pred_probs: Any, labels: Any) -> np.ndarray:
    """Where errors go, from a model: the mean predicted probability per true class, with the
    diagonal dropped and rows rescaled to 1.

    Use out-of-fold probabilities (cross-validation), so the model's doubt reflects the data
    rather than its memory of the training set.

    Parameters
    ----------
    pred_probs : array of shape (n, k)
    labels : array of shape (n,)
        True class of each item, ``0 .. k - 1``.

    Returns
    -------
    ndarray of shape (k, k)
        Row-stochastic with a zero diagonal; classes absent from ``labels`` get uniform rows.

    Examples
    --------
    >>> probs = [[0.8, 0.2, 0.0], [0.3, 0.7, 0.0], [0.0, 0.1, 0.9]]
    >>> confusability_from_probs(probs, [0, 1, 2]).round(2)
    array([[0., 1., 0.],
           [1., 0., 0.],
           [0., 1., 0.]])
    """
    probs = check_pred_probs(pred_probs)
    n, k = probs.shape
    y = check_labels(labels, n_classes=k, n_items=n)
    totals = np.zeros((k, k))
    np.add.at(totals, y, probs)
    return confusability_from_confusion(totals)


def _check_confusability(value: Any, k: int, name: str = "confusability") -> np.ndarray:
    matrix = check_array(value, name, ndim=2)
    if matrix.shape != (k, k):
        raise fail(name, f"an array of shape ({k}, {k})", f"shape {matrix.shape}")
    _check_stochastic(matrix, name)
    if np.abs(np.diag(matrix)).max() > _ROW_ATOL:
        raise fail(name, "a zero diagonal (it says where errors go)", f"diagonal {np.diag(matrix).round(3).tolist()}")
    return matrix


def _check_stochastic(matrix: np.ndarray, name: str) -> None:
    if not np.isfinite(matrix).all() or matrix.min() < 0 or matrix.max() > 1:
        raise fail(name, "probabilities in [0, 1]", f"values from {np.nanmin(matrix):.4g} to {np.nanmax(matrix):.4g}")
    sums = matrix.sum(axis=-1)
    bad = np.abs(sums - 1) > _ROW_ATOL
    if bad.any():
        first = tuple(np.argwhere(bad)[0].tolist())
        raise fail(name, "rows that sum to 1 (row-stochastic)",
                   f"{int(bad.sum())} rows that do not (row {first} sums to {sums[first]:.6g})")


def annotator_confusions(accuracy: Any, confusability: Any, *, confusable_share: Any = 1.0,
                         class_difficulty: Any = None) -> np.ndarray:
    """Confusion matrices of annotators with the given accuracies.

    ``C[j, y] = a_jy * e_y + (1 - a_jy) * (s_j * Q[y] + (1 - s_j) / (k - 1) * (1 - e_y))``
    with ``a_jy = expit(logit(a_j) + d_y)`` when class difficulties ``d`` are given, else
    ``a_jy = a_j``.

    Parameters
    ----------
    accuracy : array of shape (m,)
        Accuracy ``a_j`` of each annotator, in [0, 1].
    confusability : array of shape (k, k)
        ``Q``: row-stochastic, zero diagonal.
    confusable_share : float or array of shape (m,)
        ``s_j`` in [0, 1].
    class_difficulty : array of shape (k,) or (m, k), optional
        Logit offsets ``d_y`` (or ``d_jy``, one row per annotator): negative for classes that
        are harder than average.

    Returns
    -------
    ndarray of shape (m, k, k)
        Row-stochastic.

    Examples
    --------
    >>> annotator_confusions([0.9], [[0, 1], [1, 0]])[0]
    array([[0.9, 0.1],
           [0.1, 0.9]])
    """
    acc = np.atleast_1d(np.asarray(accuracy, dtype=np.float64))
    if acc.ndim != 1 or not np.isfinite(acc).all() or acc.min() < 0 or acc.max() > 1:
        raise fail("accuracy", "a 1-D array of accuracies in [0, 1]", f"{acc!r}"[:80])
    q = np.asarray(confusability, dtype=np.float64)
    k = q.shape[0] if q.ndim == 2 else 0
    q = _check_confusability(q, max(k, 2))
    share = np.broadcast_to(np.asarray(confusable_share, dtype=np.float64), acc.shape)
    if not np.isfinite(share).all() or share.min() < 0 or share.max() > 1:
        raise fail("confusable_share", "shares in [0, 1]", f"{confusable_share!r}"[:80])
    per_class = np.repeat(acc[:, None], k, axis=1)
    if class_difficulty is not None:
        d = np.asarray(class_difficulty, dtype=np.float64)
        if d.shape not in ((k,), (acc.size, k)) or not np.isfinite(d).all():
            raise fail("class_difficulty", f"a finite array of shape ({k},) or ({acc.size}, {k})",
                       f"shape {d.shape}")
        per_class = expit(logit(np.clip(per_class, 1e-9, 1 - 1e-9)) + d)
    errors = share[:, None, None] * q + (1 - share[:, None, None]) * uniform_confusability(k)
    eye = np.eye(k)
    return per_class[:, :, None] * eye + (1 - per_class)[:, :, None] * errors


# ---------------------------------------------------------------------------------------------
# Guidelines


@dataclass(frozen=True)
class Guideline:
    """A version of the labeling guidelines and the class pairs it clarifies.

    Parameters
    ----------
    version : str
        A name, e.g. ``"v2"``.
    fixes : mapping of (class_a, class_b) -> float
        For each pair, the factor in [0, 1] by which confusion between the two classes (both
        directions) is reduced: 0.5 halves it, 1 removes it. The removed mass goes to the
        diagonal (the annotator now answers correctly). Other cells are untouched.

    Examples
    --------
    >>> g = Guideline("v2", {(0, 1): 0.5})
    >>> g.apply(np.array([[0.8, 0.2], [0.4, 0.6]]))
    array([[0.9, 0.1],
           [0.2, 0.8]])
    """

    version: str
    fixes: Mapping[tuple[int, int], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.version, str) or not self.version:
            raise fail("version", "a non-empty string", repr(self.version))
        if not isinstance(self.fixes, Mapping):
            raise fail("fixes", "a mapping of (class_a, class_b) -> factor in [0, 1]", type(self.fixes).__name__)
        clean: dict[tuple[int, int], float] = {}
        for pair, factor in self.fixes.items():
            if (not isinstance(pair, tuple) or len(pair) != 2
                    or not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c >= 0 for c in pair)
                    or pair[0] == pair[1]):
                raise fail("fixes", "keys that are pairs of two different class codes (a, b)", repr(pair))
            key = (int(min(pair)), int(max(pair)))
            if key in clean:
                raise fail("fixes", "each class pair once", f"{pair!r} twice")
            clean[key] = check_real(factor, f"fixes[{pair!r}]", low=0, high=1)
        object.__setattr__(self, "fixes", MappingProxyType(clean))

    def apply(self, confusion: Any) -> np.ndarray:
        """Confusion matrices under this guideline.

        Parameters
        ----------
        confusion : array of shape (k, k) or (m, k, k)
            Row-stochastic.

        Returns
        -------
        ndarray of the same shape
            ``C[a, b]`` and ``C[b, a]`` scaled by ``1 - factor`` for each fixed pair, the
            difference added to ``C[a, a]`` and ``C[b, b]``.
        """
        matrix = np.array(confusion, dtype=np.float64)
        if matrix.ndim not in (2, 3) or matrix.shape[-1] != matrix.shape[-2]:
            raise fail("confusion", "an array of shape (k, k) or (m, k, k)", f"shape {matrix.shape}")
        _check_stochastic(matrix, "confusion")
        k = matrix.shape[-1]
        for (a, b), factor in self.fixes.items():
            if b >= k:
                raise fail("fixes", f"class codes below {k}", f"the pair ({a}, {b})")
            for src, dst in ((a, b), (b, a)):
                moved = factor * matrix[..., src, dst]
                matrix[..., src, dst] -= moved
                matrix[..., src, src] += moved
        return matrix


def draw_item_difficulty(item_ids: Any, std: float, *, rng: np.random.Generator | int) -> pd.Series:
    """Draw how hard each item is: logit offsets from ``Normal(0, std)``.

    Real crowds agree more than independent annotators of the same skill would, because some
    items are hard for everyone. Pass the result as ``difficulty`` to
    :meth:`SimulatedCrowd.annotate` or :meth:`SimulatedCrowd.ask`; ``std`` for a real crowd
    is :attr:`CrowdProfile.item_difficulty_std`.

    Parameters
    ----------
    item_ids : array-like of shape (n,)
        Unique item ids.
    std : float
        Spread on the logit scale (>= 0); 1 makes an annotator with accuracy 0.8 range from
        about 0.6 to 0.92 over the middle two thirds of items.
    rng : Generator or int

    Returns
    -------
    Series of float indexed by item_id
        Positive means harder than average.

    Examples
    --------
    >>> draw_item_difficulty([3, 4], 0.0, rng=0).tolist()
    [0.0, 0.0]
    """
    items = _check_item_ids(item_ids)
    spread = check_real(std, "std", low=0)
    return pd.Series(spread * check_rng(rng).standard_normal(len(items)), index=items, name="difficulty")


# ---------------------------------------------------------------------------------------------
# Annotators and crowds


@dataclass(frozen=True, eq=False)
class Annotator:
    """One simulated annotator.

    Parameters
    ----------
    annotator_id : str
    tier : Tier
    confusion : array of shape (k, k)
        Row-stochastic; ``confusion[y, l]`` = P(answer ``l`` | truth ``y``).
    seconds_median : float
        Median seconds per item (> 0).
    seconds_sigma : float
        Log-scale spread of seconds from item to item (>= 0).
    cost_per_hour : float
        (>= 0).
    """

    annotator_id: str
    tier: Tier
    confusion: np.ndarray
    seconds_median: float = 15.0
    seconds_sigma: float = 0.5
    cost_per_hour: float = 20.0

    def __post_init__(self) -> None:
        if not isinstance(self.annotator_id, str) or not self.annotator_id:
            raise fail("annotator_id", "a non-empty string", repr(self.annotator_id))
        object.__setattr__(self, "tier", _check_tier(self.tier))
        matrix = check_array(self.confusion, "confusion", ndim=2)
        if matrix.shape[0] < 2 or matrix.shape[0] != matrix.shape[1]:
            raise fail("confusion", "a square (k, k) array with k >= 2", f"shape {matrix.shape}")
        _check_stochastic(matrix, "confusion")
        matrix = matrix.copy()
        matrix.setflags(write=False)
        object.__setattr__(self, "confusion", matrix)
        check_real(self.seconds_median, "seconds_median", low=0, low_open=True)
        check_real(self.seconds_sigma, "seconds_sigma", low=0)
        check_real(self.cost_per_hour, "cost_per_hour", low=0)

    @property
    def n_classes(self) -> int:
        return self.confusion.shape[0]

    @property
    def accuracy(self) -> float:
        """Accuracy under a uniform class prior: the mean of the diagonal."""
        return float(np.diag(self.confusion).mean())


@dataclass(frozen=True, eq=False)
class SimulatedCrowd:
    """A pool of simulated annotators sharing one class set.

    Parameters
    ----------
    annotators : sequence of Annotator
        Unique ids, the same number of classes.

    Attributes
    ----------
    ids : pandas.Index
        Annotator ids in pool order.
    tiers : ndarray of Tier, shape (m,)
    confusion : ndarray of shape (m, k, k)
        Read-only stack of the annotators' confusion matrices.
    n_classes : int
    """

    annotators: tuple[Annotator, ...]
    ids: pd.Index = field(init=False, repr=False)
    tiers: np.ndarray = field(init=False, repr=False)
    confusion: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        pool = tuple(self.annotators) if isinstance(self.annotators, Sequence) else None
        if not pool or not all(isinstance(a, Annotator) for a in pool):
            raise fail("annotators", "a non-empty sequence of Annotator", repr(self.annotators)[:60])
        ks = {a.n_classes for a in pool}
        if len(ks) > 1:
            raise fail("annotators", "annotators over the same number of classes", f"class counts {sorted(ks)}")
        ids = pd.Index([a.annotator_id for a in pool], dtype=object)
        if ids.has_duplicates:
            raise fail("annotators", "unique annotator ids", f"duplicates {ids[ids.duplicated()].tolist()[:5]}")
        stack = np.stack([a.confusion for a in pool])
        stack.setflags(write=False)
        object.__setattr__(self, "annotators", pool)
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "tiers", np.array([a.tier for a in pool], dtype=object))
        object.__setattr__(self, "confusion", stack)

    def __len__(self) -> int:
        return len(self.annotators)

    @property
    def n_classes(self) -> int:
        return self.confusion.shape[1]

    @property
    def accuracy(self) -> pd.Series:
        """Accuracy of each annotator under a uniform class prior, by annotator id."""
        return pd.Series(np.diagonal(self.confusion, axis1=1, axis2=2).mean(axis=1), index=self.ids, name="accuracy")

    def members(self, tier: Tier | str | None = None) -> pd.Index:
        """Ids of the annotators of ``tier`` (all of them when ``None``)."""
        return self.ids[self._pool(tier)]

    def _pool(self, tier: Tier | str | None) -> np.ndarray:
        if tier is None:
            return np.arange(len(self))
        tier = _check_tier(tier)
        # Elementwise ==: numpy turns a str-Enum scalar into a plain string array and then
        # compares nothing equal against the object array of Tier members.
        pool = np.flatnonzero([t is tier for t in self.tiers])
        if pool.size == 0:
            raise fail("tier", f"a tier present in the crowd {sorted({t.value for t in self.tiers})}", repr(tier.value))
        return pool

    def assign(self, item_ids: Any, labels_per_item: Any = 1, *, tier: Tier | str | None = None,
               exclude: pd.DataFrame | None = None, rng: np.random.Generator | int) -> pd.DataFrame:
        """Pick distinct annotators for each item, uniformly at random.

        Parameters
        ----------
        item_ids : array-like of shape (n,)
            Unique item ids.
        labels_per_item : int or array of shape (n,)
            How many distinct annotators each item gets (>= 0).
        tier : Tier, optional
            Draw only from this tier.
        exclude : DataFrame with columns item_id, annotator_id, optional
            Pairs that must not be drawn, e.g. the earlier annotations of these items, so a
            reviewer is never the original annotator.
        rng : Generator or int

        Returns
        -------
        DataFrame with columns item_id, annotator_id
            ``sum(labels_per_item)`` rows, grouped by item in the order of ``item_ids``.

        Examples
        --------
        >>> crowd = make_crowd({Tier.NOVICE: 5}, 3, rng=0)
        >>> crowd.assign([10, 11], 2, rng=0).shape
        (4, 2)
        """
        generator = check_rng(rng)
        items = _check_item_ids(item_ids)
        n = len(items)
        counts = _check_counts(labels_per_item, n)
        pool = self._pool(tier)
        blocked = _exclusion_mask(exclude, items, self.ids[pool])
        available = pool.size - blocked.sum(axis=1)
        short = counts > available
        if short.any():
            i = int(np.flatnonzero(short)[0])
            raise fail("labels_per_item", f"at most the number of available annotators ({pool.size} in the pool)",
                       f"{counts[i]} for item {items[i]!r} with {available[i]} available")
        top = int(counts.max(initial=0))
        chosen = np.empty((n, top), dtype=np.int64)
        step = max(1, _ASSIGN_CHUNK_CELLS // max(pool.size, 1))
        for start in range(0, n, step):
            stop = min(n, start + step)
            # Uniform random keys, blocked pairs pushed last: the `top` smallest keys of a row
            # are a uniform sample without replacement of its allowed annotators.
            keys = generator.random((stop - start, pool.size))
            keys[blocked[start:stop]] = np.inf
            if top < pool.size:
                part = np.argpartition(keys, top - 1, axis=1)[:, :top] if top else np.empty((stop - start, 0), np.int64)
            else:
                part = np.broadcast_to(np.arange(pool.size), keys.shape)
            order = np.argsort(np.take_along_axis(keys, part, axis=1), axis=1, kind="stable")
            chosen[start:stop] = np.take_along_axis(part, order, axis=1)
        keep = np.arange(top) < counts[:, None]
        rows, _ = np.nonzero(keep)
        return pd.DataFrame({
            ITEM: items.take(rows).to_numpy(),
            ANNOTATOR: self.ids[pool[chosen[keep]]].to_numpy(),
        })

    def annotate(self, assignment: pd.DataFrame, true_labels: Any, *, guideline: Guideline | None = None,
                 difficulty: pd.Series | None = None, rng: np.random.Generator | int) -> pd.DataFrame:
        """Simulate the answers, seconds and cost of each (item, annotator) pair.

        Labels are drawn all at once: for row ``r`` the answer is the first class whose
        cumulative probability ``cumsum(C[annotator_r, truth_r])`` exceeds a uniform draw.
        Seconds are ``seconds_median * exp(seconds_sigma * z)`` with ``z`` standard normal;
        cost is ``seconds / 3600 * cost_per_hour``.

        Parameters
        ----------
        assignment : DataFrame with columns item_id, annotator_id
            Annotator ids must be in the crowd; at most one row per pair.
        true_labels : Series indexed by item_id, or array of shape (n,)
            True class codes; an array is indexed by item ids ``0 .. n - 1``.
        guideline : Guideline, optional
            Guideline version in force; its fixes change every annotator's confusion.
        difficulty : Series of float indexed by item_id, optional
            Logit offset of each item's difficulty (see :func:`draw_item_difficulty`): the
            odds that an annotator knows the answer are divided by ``exp(difficulty)``;
            errors keep their distribution; annotators who answer at random are unaffected.
            Items missing from it have difficulty 0. Pass the same Series to every call, so
            a hard item stays hard for every tier.
        rng : Generator or int

        Returns
        -------
        DataFrame with columns item_id, annotator_id, label, seconds, cost
            One row per assignment row, in its order.

        Examples
        --------
        >>> crowd = make_crowd({Tier.EXPERT: 3}, 2, rng=0)
        >>> out = crowd.annotate(crowd.assign([0, 1], 3, rng=1), [0, 1], rng=2)
        >>> list(out.columns)
        ['item_id', 'annotator_id', 'label', 'seconds', 'cost']
        """
        generator = check_rng(rng)
        pairs = _check_assignment(assignment)
        truth = _check_truth(true_labels, self.n_classes)
        who = self.ids.get_indexer(pairs[ANNOTATOR])
        if (who < 0).any():
            unknown = pairs.loc[who < 0, ANNOTATOR].unique()[:5].tolist()
            raise fail("assignment", "annotator ids of this crowd", f"unknown ids {unknown}")
        where = truth.index.get_indexer(pairs[ITEM])
        if (where < 0).any():
            missing = pairs.loc[where < 0, ITEM].unique()[:5].tolist()
            raise fail("true_labels", "a label for every assigned item", f"no label for items {missing}")
        confusion = self.confusion if guideline is None else _check_guideline(guideline).apply(self.confusion)
        y = truth.to_numpy()[where]
        if difficulty is None:
            rows = confusion[who, y]
        else:
            offset = _check_difficulty(difficulty).reindex(pairs[ITEM]).fillna(0.0).to_numpy()
            rows = _harder(confusion, who, y, offset)
        labels = _sample_rows(rows, generator)
        median = np.array([a.seconds_median for a in self.annotators])[who]
        sigma = np.array([a.seconds_sigma for a in self.annotators])[who]
        rate = np.array([a.cost_per_hour for a in self.annotators])[who]
        seconds = median * np.exp(sigma * generator.standard_normal(len(pairs)))
        return pd.DataFrame({
            ITEM: pairs[ITEM].to_numpy(),
            ANNOTATOR: pairs[ANNOTATOR].to_numpy(),
            LABEL: labels,
            SECONDS: seconds,
            COST: seconds / _SECONDS_PER_HOUR * rate,
        })

    def ask(self, true_labels: Any, *, tier: Tier | str | None = None, labels_per_item: Any = 1,
            exclude: pd.DataFrame | None = None, guideline: Guideline | None = None,
            difficulty: pd.Series | None = None, rng: np.random.Generator | int) -> pd.DataFrame:
        """Have ``labels_per_item`` distinct annotators (of ``tier``) label every item.

        :meth:`assign` then :meth:`annotate`: the one call an experiment needs to send items
        to review, to an expert, or to two blind annotators (``labels_per_item=2``).

        Parameters
        ----------
        true_labels : Series indexed by item_id, or array of shape (n,)
            The items to label and their true classes.
        tier, labels_per_item, exclude, guideline, difficulty
            As in :meth:`assign` and :meth:`annotate`.
        rng : Generator or int

        Returns
        -------
        DataFrame with columns item_id, annotator_id, label, seconds, cost

        Examples
        --------
        >>> crowd = make_crowd({Tier.NOVICE: 4, Tier.EXPERT: 1}, 3, rng=0)
        >>> crowd.ask([0, 2, 1], tier=Tier.EXPERT, rng=0)[ANNOTATOR].unique().tolist()
        ['expert-00']
        """
        generator = check_rng(rng)
        truth = _check_truth(true_labels, self.n_classes)
        assignment = self.assign(truth.index, labels_per_item, tier=tier, exclude=exclude, rng=generator)
        return self.annotate(assignment, truth, guideline=guideline, difficulty=difficulty, rng=generator)


def make_crowd(n_per_tier: Mapping[Tier | str, int], n_classes: int, *, confusability: Any = None,
               profiles: Mapping[Tier, TierProfile] = DEFAULT_PROFILES,
               rng: np.random.Generator | int) -> SimulatedCrowd:
    """Build a crowd with ``n_per_tier[t]`` annotators of each tier.

    Each annotator's accuracy is drawn from its tier's Beta distribution and its median
    seconds per item from a log-normal around the tier's median; its errors follow
    ``confusability`` with the tier's ``confusable_share``. Ids are ``"<tier>-<nn>"``.

    Parameters
    ----------
    n_per_tier : mapping of Tier -> int
        Counts >= 0, at least one annotator in all.
    n_classes : int
        ``k >= 2``.
    confusability : array of shape (k, k), optional
        Row-stochastic with a zero diagonal (see :func:`confusability_from_probs`);
        uniform when omitted.
    profiles : mapping of Tier -> TierProfile
    rng : Generator or int

    Returns
    -------
    SimulatedCrowd

    Examples
    --------
    >>> crowd = make_crowd({"novice": 2, "expert": 1}, 4, rng=0)
    >>> crowd.ids.tolist()
    ['novice-00', 'novice-01', 'expert-00']
    """
    generator = check_rng(rng)
    k = check_int(n_classes, "n_classes", low=2)
    q = uniform_confusability(k) if confusability is None else _check_confusability(confusability, k)
    if not isinstance(n_per_tier, Mapping):
        raise fail("n_per_tier", "a mapping of tier -> number of annotators", type(n_per_tier).__name__)
    counts = {_check_tier(t, "n_per_tier"): check_int(c, f"n_per_tier[{t!r}]", low=0) for t, c in n_per_tier.items()}
    if sum(counts.values()) == 0:
        raise fail("n_per_tier", "at least one annotator", repr(dict(n_per_tier)))
    annotators: list[Annotator] = []
    for tier in Tier:  # a fixed order, so the draws do not depend on the mapping's order
        count = counts.get(tier, 0)
        if count == 0:
            continue
        if tier not in profiles or not isinstance(profiles[tier], TierProfile):
            raise fail("profiles", f"a TierProfile for tier {tier.value!r}", repr(profiles.get(tier)))
        profile = profiles[tier]
        accuracy = profile.sample_accuracy(count, rng=generator)
        seconds = profile.seconds_median * np.exp(profile.speed_spread * generator.standard_normal(count))
        confusions = annotator_confusions(accuracy, q, confusable_share=profile.confusable_share)
        annotators += [
            Annotator(f"{tier.value}-{i:02d}", tier, confusions[i], seconds_median=float(seconds[i]),
                      seconds_sigma=profile.seconds_sigma, cost_per_hour=profile.cost_per_hour)
            for i in range(count)
        ]
    return SimulatedCrowd(tuple(annotators))


# ---------------------------------------------------------------------------------------------
# Calibration against a real crowd


@dataclass(frozen=True, eq=False)
class CrowdProfile:
    """What a real crowd looks like, measured against gold (see :func:`fit_crowd_profile`).

    The crowd is a mixture: a share of *spammers* who answer at random (accuracy ``1 / k``)
    and *workers* whose accuracy is Beta distributed, whose errors follow ``confusability``,
    whose accuracy varies by class (``class_difficulty``, and ``class_bias_std`` from worker
    to worker) and by item (``item_difficulty_std``).

    Attributes
    ----------
    n_classes : int
    correct, n_gold : Series by annotator_id
        Gold-checked labels each annotator got right, and how many were checked.
    spammer_share : float
        Share of annotators who answer at random.
    spammer_probability : Series by annotator_id
        Posterior probability that each annotator is a spammer.
    spammer_answers : ndarray of shape (k,)
        How spammers spread their answers over the classes, whatever the truth.
    accuracy_alpha, accuracy_beta : float
        Beta distribution of the workers' accuracy, fitted by the moments of a beta-binomial
        (the binomial noise of annotators with few labels is not counted as skill spread).
    confusability : ndarray of shape (k, k)
        Where the workers' errors land (answers vs gold, diagonal dropped).
    class_difficulty : ndarray of shape (k,)
        Logit offset of each class's accuracy from the workers' average.
    item_difficulty_std : float
        Spread of item difficulty on the logit scale: how much more the crowd agrees on some
        items, and less on others, than independent annotators would.
    class_bias_std : float
        Spread on the logit scale of each worker's own accuracy on each class around
        ``class_difficulty``: workers differ in which classes they get wrong, and so agree
        less than their accuracies alone suggest.
    labels_per_item : Series by item_id
        Labels each item received.
    seconds_median : float or None
        Median seconds per label, where the source records it.
    """

    n_classes: int
    correct: pd.Series
    n_gold: pd.Series
    spammer_share: float
    spammer_probability: pd.Series
    spammer_answers: np.ndarray
    accuracy_alpha: float
    accuracy_beta: float
    confusability: np.ndarray
    class_difficulty: np.ndarray
    item_difficulty_std: float
    class_bias_std: float
    labels_per_item: pd.Series
    seconds_median: float | None = None

    @property
    def accuracy(self) -> pd.Series:
        """Observed accuracy of each annotator on gold items."""
        return (self.correct / self.n_gold).rename("accuracy")

    @property
    def accuracy_mean(self) -> float:
        """Mean accuracy of the fitted mixture of spammers and workers."""
        worker = self.accuracy_alpha / (self.accuracy_alpha + self.accuracy_beta)
        return self.spammer_share / self.n_classes + (1 - self.spammer_share) * worker

    @property
    def accuracy_std(self) -> float:
        """Standard deviation of accuracy across annotators in the fitted mixture (without the
        binomial noise of a finite number of labels)."""
        a, b, pi = self.accuracy_alpha, self.accuracy_beta, self.spammer_share
        mean, var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
        second = pi / self.n_classes**2 + (1 - pi) * (var + mean**2)
        return float(np.sqrt(max(second - self.accuracy_mean**2, 0.0)))

    @property
    def skill(self) -> pd.Series:
        """Posterior mean accuracy of each annotator under the fitted mixture."""
        a, b = self.accuracy_alpha, self.accuracy_beta
        worker = (self.correct + a) / (self.n_gold + a + b)
        spam = self.spammer_probability
        return (spam / self.n_classes + (1 - spam) * worker).rename("skill")


def fit_crowd_profile(annotations: pd.DataFrame, gold: pd.Series, *, n_classes: int | None = None,
                      max_iter: int = 100) -> CrowdProfile:
    """Measure a real crowd against gold, to simulate one like it with :func:`crowd_like`.

    1. Skill: each annotator's correct count on gold items is a draw from either a spammer
       (``Binomial(n_j, 1 / k)``) or a worker (``BetaBinomial(n_j, alpha, beta)``); the share
       of spammers, the posterior of each annotator and the Beta are fitted by EM, the Beta
       by weighted moments.
    2. Where errors go and class difficulty: the workers' answers against gold (each label
       weighted by its annotator's probability of being a worker).
    3. Item difficulty: the excess variance of each item's correct count over what
       independent annotators of the fitted skills would give, on the logit scale (delta
       method): ``sigma^2 = sum_i [(c_i - sum p)^2 - sum p(1-p)] / sum_i [(sum w)^2 - sum w^2]``
       with ``w = p (1 - p)``.

    Parameters
    ----------
    annotations : DataFrame with columns item_id, annotator_id, label
        Integer class codes; an optional ``seconds`` column.
    gold : Series of class codes indexed by item_id
        For some or all items; only annotators with gold-checked labels enter the fit.
    n_classes : int, optional
        Defaults to one more than the largest code seen.
    max_iter : int
        EM iterations at most.

    Returns
    -------
    CrowdProfile

    Examples
    --------
    >>> profile = fit_crowd_profile(dataset.annotations, dataset.gold)  # doctest: +SKIP
    >>> crowd = crowd_like(profile, rng=0)  # doctest: +SKIP
    """
    frame = check_annotations(annotations)
    labels = check_labels(frame[LABEL].to_numpy(), "annotations")
    if not isinstance(gold, pd.Series) or gold.empty:
        raise fail("gold", "a non-empty Series of class codes indexed by item_id", type(gold).__name__)
    gold_codes = check_labels(gold.to_numpy(), "gold")
    k = int(max(labels.max(), gold_codes.max())) + 1 if n_classes is None else check_int(n_classes, "n_classes", low=2)
    check_labels(labels, "annotations", n_classes=k)
    check_labels(gold_codes, "gold", n_classes=k)
    max_iter = check_int(max_iter, "max_iter", low=1)
    gold = pd.Series(gold_codes, index=gold.index)

    table = annotator_accuracy(frame, gold)
    table = table[table[N_ITEMS] > 0]
    if table.empty:
        raise fail("gold", "labels for some annotated items", "no overlap with annotations' item_id")
    correct, n_gold = table[N_CORRECT].rename("correct"), table[N_ITEMS].rename("n_gold")
    spam, alpha, beta = _fit_skill_mixture(correct.to_numpy(), n_gold.to_numpy(), 1.0 / k, max_iter)
    spam = pd.Series(spam, index=table.index, name="spammer_probability")

    checked = frame[ITEM].isin(gold.index).to_numpy()
    rows = frame.loc[checked]
    y, answer = gold.reindex(rows[ITEM]).to_numpy(), labels[checked]
    worker = 1.0 - spam.reindex(rows[ANNOTATOR]).to_numpy()
    counts = np.zeros((k, k))
    np.add.at(counts, (y, answer), worker)
    # Spammers answer from one distribution whatever the item: often a favourite class.
    spam_answers = np.bincount(answer, weights=1.0 - worker, minlength=k) + 1.0
    spam_answers /= spam_answers.sum()
    skill = (correct + alpha) / (n_gold + alpha + beta)
    base = logit(np.clip(skill.reindex(rows[ANNOTATOR]).to_numpy(), 1e-6, 1 - 1e-6))
    hit = (answer == y).astype(np.float64)
    difficulty = _fit_class_difficulty(hit, y, base, worker, spam_answers, k)
    who = rows[ANNOTATOR].to_numpy()
    bias_std = _fit_bias_spread(hit[worker >= 0.5], y[worker >= 0.5], who[worker >= 0.5],
                                base[worker >= 0.5] + difficulty[y[worker >= 0.5]], k)

    # Item difficulty from the over-dispersion of each item's correct count. A worker's
    # accuracy on class y is c + (1 - c) kappa (see _knowledge) and difficulty moves
    # logit(kappa); spammers do not care.
    per_class = expit(base[:, None] + difficulty[None, :])  # (n, k): this worker on each class
    q = confusability_from_confusion(counts)
    chance = (((1 - per_class) * q[:, y].T).sum(axis=1)) / (k - 1)
    p_worker = per_class[np.arange(y.size), y]
    kappa = np.clip((p_worker - chance) / (1 - chance), 0.0, 1.0)
    item_std = _fit_item_spread(hit, rows[ITEM].to_numpy(), kappa, chance, worker, spam_answers[y], bias_std)

    seconds = float(frame[SECONDS].median()) if SECONDS in frame and frame[SECONDS].notna().any() else None
    return CrowdProfile(
        n_classes=k,
        correct=correct,
        n_gold=n_gold,
        spammer_share=float(spam.mean()),
        spammer_probability=spam,
        spammer_answers=spam_answers,
        accuracy_alpha=alpha,
        accuracy_beta=beta,
        confusability=confusability_from_confusion(counts),
        class_difficulty=difficulty,
        item_difficulty_std=item_std,
        class_bias_std=bias_std,
        labels_per_item=frame.groupby(ITEM).size().rename("labels"),
        seconds_median=seconds,
    )


def _fit_class_difficulty(hit: np.ndarray, y: np.ndarray, base: np.ndarray, worker: np.ndarray,
                          spam_answers: np.ndarray, k: int, n_iter: int = 30) -> np.ndarray:
    """Logit offset ``d_y`` per class such that, on the labels of class ``y``, the expected
    number correct ``sum worker * expit(base + d_y) + (1 - worker) * spam_answers[y]``
    equals the observed one (Newton steps; 0 for classes never seen)."""
    d = np.zeros(k)
    seen = np.bincount(y, minlength=k) > 0
    for _ in range(n_iter):
        p = expit(base + d[y])
        gap = np.bincount(y, weights=hit - worker * p - (1 - worker) * spam_answers[y], minlength=k)
        slope = np.bincount(y, weights=worker * p * (1 - p), minlength=k)
        d = np.clip(d + np.where(slope > 1e-12, gap / np.maximum(slope, 1e-12), 0.0), -8.0, 8.0)
    return np.where(seen, d, 0.0)


def _fit_item_spread(hit: np.ndarray, item: np.ndarray, kappa: np.ndarray, chance: np.ndarray,
                     worker: np.ndarray, spam_hit: np.ndarray, bias_std: float, n_nodes: int = 16) -> float:
    """Spread ``sigma`` of item difficulty, by matching the over-dispersion of items' correct
    counts.

    Observed: ``sum_i [(c_i - sum_r p_r)^2 - sum_r p_r (1 - p_r)]``, the excess of the
    squared residuals over independent labels. Predicted for a given ``sigma``: the sum over
    items of the covariances of their labels' correctness,
    ``E_e[(sum_r p_r(e))^2 - sum_r p_r(e)^2] - [(sum_r p_r)^2 - sum_r p_r^2]`` with
    ``p_r(e) = c_r + (1 - c_r) expit(x_r - e)`` for a worker (``x_r`` such that the mean over
    ``e ~ N(0, sigma^2)`` and the worker's own class offsets is ``kappa_r``), computed by
    Gauss-Hermite quadrature; increasing in ``sigma``, solved by Brent's method.
    """
    codes, items = pd.factorize(item)
    to_items = sparse.csr_matrix((np.ones(codes.size), (codes, np.arange(codes.size))),
                                 shape=(items.size, codes.size))
    p = worker * (chance + (1 - chance) * kappa) + (1 - worker) * spam_hit
    observed = float(((to_items @ (hit - p)) ** 2).sum() - (p * (1 - p)).sum())
    if observed <= 0:
        return 0.0
    nodes, weights = np.polynomial.hermite_e.hermegauss(n_nodes)
    weights = weights / weights.sum()
    logit_kappa = logit(np.clip(kappa, 1e-9, 1 - 1e-9))
    blur = np.sqrt(1.0 + np.pi * bias_std**2 / 8.0)  # averages over the unknown class offsets

    def predicted(sigma: float) -> float:
        x = logit_kappa * np.sqrt(1.0 + np.pi * (sigma**2 + bias_std**2) / 8.0)
        knows = np.where(kappa[:, None] > 0, expit((x[:, None] - sigma * nodes[None, :]) / blur), 0.0)
        at = worker[:, None] * (chance[:, None] + (1 - chance[:, None]) * knows) + ((1 - worker) * spam_hit)[:, None]
        mean = at @ weights
        pairs = ((to_items @ at) ** 2 - to_items @ at**2) @ weights
        return float(pairs.sum() - ((to_items @ mean) ** 2 - to_items @ mean**2).sum())

    high = 6.0
    if predicted(high) < observed:
        return high
    return float(brentq(lambda sigma: predicted(sigma) - observed, 0.0, high, xtol=1e-3))


def _fit_bias_spread(hit: np.ndarray, y: np.ndarray, who: np.ndarray, logits: np.ndarray, k: int,
                     n_iter: int = 20) -> float:
    """Spread ``tau`` of per-(worker, class) logit offsets ``b_jy ~ N(0, tau^2)``.

    Each worker gets its own overall offset (Newton), so that its residuals ``R_jy`` (observed
    minus expected correct on class ``y``) sum to 0; then, with ``V_jy = sum p (1 - p)`` and
    ``S_j = sum_y V_jy``, the moments ``E sum_y R_jy^2 = S_j - sum_y V_jy^2 / S_j + tau^2 T_j``
    with ``T_j = sum_y V_jy^2 - 2 sum_y V_jy^3 / S_j + (sum_y V_jy^2)^2 / S_j^2`` give ``tau``.
    """
    if hit.size == 0:
        return 0.0
    code, _ = pd.factorize(who)
    m = int(code.max()) + 1
    offset = np.zeros(m)
    for _ in range(n_iter):
        p = expit(logits + offset[code])
        gap = np.bincount(code, weights=hit - p, minlength=m)
        slope = np.bincount(code, weights=p * (1 - p), minlength=m)
        offset = np.clip(offset + np.where(slope > 1e-9, gap / np.maximum(slope, 1e-9), 0.0), -10.0, 10.0)
    p = expit(logits + offset[code])
    cell = code * k + y
    resid = np.bincount(cell, weights=hit - p, minlength=m * k).reshape(m, k)
    var = np.bincount(cell, weights=p * (1 - p), minlength=m * k).reshape(m, k)
    total = var.sum(axis=1)
    ok = total > 1e-9
    resid, var, total = resid[ok], var[ok], total[ok]
    square = (var**2).sum(axis=1)
    excess = (resid**2).sum(axis=1) - (total - square / total)
    scale = square - 2 * (var**3).sum(axis=1) / total + square**2 / total**2
    denominator = float(scale.sum())
    return float(np.sqrt(max(float(excess.sum()) / denominator, 0.0))) if denominator > 1e-12 else 0.0


def _fit_skill_mixture(correct: np.ndarray, n: np.ndarray, chance: float,
                       max_iter: int) -> tuple[np.ndarray, float, float]:
    """EM for a mixture of spammers (accuracy ``chance``) and Beta-distributed workers.

    Returns the posterior spammer probability of each annotator and the workers' Beta.
    """
    spam = (correct / n <= chance).astype(np.float64) * 0.5
    share = 0.1
    log_spam = binom.logpmf(correct, n, chance)
    alpha = beta = 1.0
    for _ in range(max_iter):
        alpha, beta = _fit_beta_binomial(correct, n, 1.0 - spam)
        log_worker = betabinom.logpmf(correct, n, alpha, beta)
        share = float(np.clip(spam.mean(), 1e-6, 0.5))
        new = expit(np.log(share) + log_spam - np.log1p(-share) - log_worker)
        if np.abs(new - spam).max() < 1e-6:
            spam = new
            break
        spam = new
    alpha, beta = _fit_beta_binomial(correct, n, 1.0 - spam)
    return spam, alpha, beta


def _fit_beta_binomial(correct: np.ndarray, n: np.ndarray, weight: np.ndarray) -> tuple[float, float]:
    """Weighted moment fit of a Beta skill distribution to per-annotator ``correct / n``.

    ``Var(p_j) = mu (1 - mu) (rho + (1 - rho) / n_j)`` with ``rho = 1 / (alpha + beta + 1)``;
    solving the weighted average for ``rho`` removes the binomial part.
    """
    p = correct / n
    total_weight = weight.sum()
    if total_weight <= 1e-9:
        return 1.0, 1.0
    mu = float(np.clip((weight * p).sum() / total_weight, 1e-3, 1 - 1e-3))
    effective = total_weight - (weight**2).sum() / total_weight
    if effective <= 1e-9:
        return mu * 50.0, (1 - mu) * 50.0
    var = float((weight * (p - mu) ** 2).sum() / effective)
    h = float((weight / n).sum() / total_weight)
    ratio = var / (mu * (1 - mu))
    rho = float(np.clip((ratio - h) / (1 - h) if h < 1 else ratio, 1e-4, 0.99))
    return mu * (1.0 / rho - 1.0), (1 - mu) * (1.0 / rho - 1.0)


def crowd_like(profile: CrowdProfile, *, annotator_ids: Sequence[Hashable] | None = None,
               profiles: Mapping[Tier, TierProfile] = DEFAULT_PROFILES,
               rng: np.random.Generator | int) -> SimulatedCrowd:
    """A simulated twin for each annotator of a real crowd.

    Each twin is a spammer with the probability that its real annotator is one (unknown ids:
    ``spammer_share``); the workers' accuracies are drawn from the profile's Beta and handed
    out by rank of estimated skill. The draws keep the real
    spread; the ranks keep who did how much work, which in real crowds is far from
    independent of skill (spammers often label the most). Workers' errors follow the
    profile's confusability and class difficulty; spammers answer from ``spammer_answers``
    whatever the truth.

    The twins' accuracies are for an item of average difficulty: pass
    ``difficulty=draw_item_difficulty(items, profile.item_difficulty_std, rng=...)`` to
    :meth:`SimulatedCrowd.annotate` for their accuracy over items to match the real one
    (``E[expit(x + sigma z)] ~ expit(x / sqrt(1 + pi sigma^2 / 8))``).

    Each twin's tier is the one whose mean accuracy in ``profiles`` is nearest; seconds come
    from the profile when the source recorded them, else from the tier; cost per hour from
    the tier.

    Parameters
    ----------
    profile : CrowdProfile
    annotator_ids : sequence, optional
        Ids to build (default: the annotators with gold-checked labels); ids unknown to the
        profile get a random rank.
    profiles : mapping of Tier -> TierProfile
    rng : Generator or int

    Returns
    -------
    SimulatedCrowd
        Annotator ids are the real ids as strings.
    """
    generator = check_rng(rng)
    if not isinstance(profile, CrowdProfile):
        raise fail("profile", "a CrowdProfile (see fit_crowd_profile)", type(profile).__name__)
    ids = profile.skill.index if annotator_ids is None else pd.Index(list(annotator_ids))
    if ids.empty or ids.has_duplicates:
        raise fail("annotator_ids", "a non-empty sequence of unique ids", f"{len(ids)} ids, duplicated: {ids.has_duplicates}")
    m, k = len(ids), profile.n_classes
    skill = profile.skill.reindex(ids).to_numpy(dtype=np.float64, copy=True)
    spam = profile.spammer_probability.reindex(ids).to_numpy(dtype=np.float64, copy=True)
    unknown = np.isnan(skill)
    skill[unknown] = generator.random(int(unknown.sum()))
    spam[unknown] = profile.spammer_share
    # Each twin is a spammer with its real annotator's posterior probability of being one.
    is_spam = generator.random(m) < spam
    workers = np.flatnonzero(~is_spam)
    accuracy = np.full(m, 1.0 / k)
    accuracy[workers[np.argsort(skill[workers], kind="stable")]] = np.sort(
        generator.beta(profile.accuracy_alpha, profile.accuracy_beta, size=workers.size))
    # Each worker's own class offsets, centred so they move no one's overall accuracy; since
    # E[expit(x + tau z)] ~ expit(x / sqrt(1 + pi tau^2 / 8)), the rest is stretched to match.
    bias = profile.class_bias_std * generator.standard_normal((m, k))
    bias -= bias.mean(axis=1, keepdims=True)
    stretch = np.sqrt(1.0 + np.pi * profile.class_bias_std**2 * (1 - 1 / k) / 8.0)
    logits = (logit(np.clip(accuracy, 1e-9, 1 - 1e-9))[:, None] + profile.class_difficulty) * stretch + bias
    confusions = annotator_confusions(np.full(m, 0.5), profile.confusability, class_difficulty=logits)
    confusions[is_spam] = profile.spammer_answers
    # From accuracy over items to accuracy on an item of average difficulty, likewise.
    stretch = np.sqrt(1.0 + np.pi * profile.item_difficulty_std**2 / 8.0)
    kappa, chance = _knowledge(confusions)
    classes = np.tile(np.arange(k), m)
    hit = _shift_knowledge(kappa, chance, scale=stretch).ravel()
    confusions = _with_hit(confusions.reshape(m * k, k), classes, hit).reshape(m, k, k)

    tiers = [t for t in Tier if t in profiles]
    means = np.array([profiles[t].accuracy_mean for t in tiers])
    annotators = []
    for i, annotator_id in enumerate(ids):
        tier = tiers[int(np.abs(means - accuracy[i]).argmin())]
        tier_profile = profiles[tier]
        annotators.append(Annotator(
            str(annotator_id), tier, confusions[i],
            seconds_median=profile.seconds_median or tier_profile.seconds_median,
            seconds_sigma=tier_profile.seconds_sigma, cost_per_hour=tier_profile.cost_per_hour,
        ))
    return SimulatedCrowd(tuple(annotators))


# ---------------------------------------------------------------------------------------------
# Private helpers


def _sample_rows(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One class per row of ``probs`` (n, k) by inverse CDF."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0]) * cdf[:, -1]  # rows sum to 1 up to rounding
    return np.minimum((cdf <= u[:, None]).sum(axis=1), probs.shape[1] - 1).astype(np.int64)


def _knowledge(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Read confusion matrices (m, k, k) as *knows the answer, else answers as when unsure*.

    ``C[y] = kappa_y e_y + (1 - kappa_y) g_y`` where ``g_y[y] = c_y``, the rate at which the
    annotator says ``y`` when the truth is another class. Returns ``kappa`` and ``c``, both
    (m, k); an annotator who answers at random has ``kappa = 0``.
    """
    k = confusion.shape[-1]
    hit = np.diagonal(confusion, axis1=-2, axis2=-1)
    chance = np.clip((confusion.sum(axis=-2) - hit) / (k - 1), 0.0, 1.0 - 1e-12)
    kappa = np.clip((hit - chance) / (1.0 - chance), 0.0, 1.0)
    return kappa, chance


def _shift_knowledge(kappa: np.ndarray, chance: np.ndarray, offset: Any = 0.0, scale: Any = 1.0) -> np.ndarray:
    """Accuracy after moving the logit of ``kappa`` to ``scale * logit(kappa) - offset``."""
    moved = expit(scale * logit(np.clip(kappa, 1e-12, 1 - 1e-12)) - offset)
    return chance + (1.0 - chance) * np.where(kappa > 0, moved, 0.0)


def _with_hit(rows: np.ndarray, y: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """Rows (n, k) with ``rows[i, y[i]] = hit[i]`` and the errors rescaled to ``1 - hit``."""
    n, k = rows.shape
    errors = rows.copy()
    errors[np.arange(n), y] = 0.0
    miss = errors.sum(axis=1, keepdims=True)
    # A perfect annotator has no errors of its own to rescale: spread the new ones evenly.
    errors = np.where(miss > 1e-12, errors / np.maximum(miss, 1e-12), uniform_confusability(k)[y])
    out = (1.0 - hit)[:, None] * errors
    out[np.arange(n), y] = hit
    return out


def _harder(confusion: np.ndarray, who: np.ndarray, y: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Answer probabilities (n, k) of annotators ``who`` on items of class ``y`` and
    difficulty ``offset``: the odds of knowing the answer divided by ``exp(offset)``."""
    kappa, chance = _knowledge(confusion)
    hit = _shift_knowledge(kappa[who, y], chance[who, y], offset=offset)
    return _with_hit(confusion[who, y], y, hit)


def _check_difficulty(value: Any) -> pd.Series:
    if not isinstance(value, pd.Series) or value.index.has_duplicates:
        raise fail("difficulty", "a Series of logit offsets indexed by unique item ids", type(value).__name__)
    offsets = check_array(value.to_numpy(), "difficulty", ndim=1)
    if not np.isfinite(offsets).all():
        raise fail("difficulty", "finite logit offsets", f"{int((~np.isfinite(offsets)).sum())} NaN or inf values")
    return pd.Series(offsets, index=value.index)


def _check_item_ids(value: Any) -> pd.Index:
    items = pd.Index(value)
    if items.ndim != 1 or items.empty:
        raise fail("item_ids", "a non-empty 1-D sequence of item ids", repr(value)[:60])
    if items.hasnans or items.has_duplicates:
        raise fail("item_ids", "unique ids without missing values",
                   f"{int(items.duplicated().sum())} duplicates, {int(items.isna().sum())} missing")
    return items


def _check_counts(value: Any, n: int) -> np.ndarray:
    if np.ndim(value) == 0:
        counts = np.full(n, check_int(value, "labels_per_item", low=0), dtype=np.int64)
    else:
        counts = np.asarray(value)
        if counts.shape != (n,) or counts.dtype.kind not in "iu":
            raise fail("labels_per_item", f"an int or an integer array of shape ({n},)", f"shape {counts.shape}, dtype {counts.dtype}")
        counts = counts.astype(np.int64)
    if counts.min(initial=0) < 0:
        raise fail("labels_per_item", "counts >= 0", f"a minimum of {counts.min()}")
    return counts


def _exclusion_mask(exclude: pd.DataFrame | None, items: pd.Index, pool_ids: pd.Index) -> np.ndarray:
    blocked = np.zeros((len(items), len(pool_ids)), dtype=bool)
    if exclude is None:
        return blocked
    if not isinstance(exclude, pd.DataFrame) or not {ITEM, ANNOTATOR} <= set(exclude.columns):
        raise fail("exclude", f"a DataFrame with columns {[ITEM, ANNOTATOR]}", type(exclude).__name__)
    rows = items.get_indexer(exclude[ITEM])
    cols = pool_ids.get_indexer(exclude[ANNOTATOR].astype(str))
    ok = (rows >= 0) & (cols >= 0)
    blocked[rows[ok], cols[ok]] = True
    return blocked


def _check_assignment(value: Any) -> pd.DataFrame:
    if not isinstance(value, pd.DataFrame) or not {ITEM, ANNOTATOR} <= set(value.columns):
        raise fail("assignment", f"a DataFrame with columns {[ITEM, ANNOTATOR]}", type(value).__name__)
    if value.empty:
        raise fail("assignment", "a non-empty DataFrame", "an empty one")
    pairs = value[[ITEM, ANNOTATOR]]
    if pairs.isna().any().any():
        raise fail("assignment", "no missing item or annotator ids", f"{int(pairs.isna().any(axis=1).sum())} rows with some")
    if pairs.duplicated().any():
        raise fail("assignment", "at most one row per (item_id, annotator_id)", f"{int(pairs.duplicated().sum())} duplicates")
    return pairs.reset_index(drop=True)


def _check_truth(value: Any, k: int) -> pd.Series:
    if isinstance(value, pd.Series):
        if value.index.has_duplicates:
            raise fail("true_labels", "a Series with unique item ids as index", "duplicate item ids")
        return pd.Series(check_labels(value.to_numpy(), "true_labels", n_classes=k), index=value.index)
    return pd.Series(check_labels(value, "true_labels", n_classes=k))


def _check_guideline(value: Any) -> Guideline:
    if not isinstance(value, Guideline):
        raise fail("guideline", "a Guideline", type(value).__name__)
    return value
