"""The annotator model: skill tiers, where errors go, guidelines, item difficulty.

A simulated annotator is a confusion matrix ``C`` of shape ``(k, k)``: ``C[y, l]`` is the
probability of answering ``l`` when the truth is ``y``. Its diagonal is the annotator's
accuracy; its errors go where a *confusability* matrix ``Q`` (row-stochastic, zero
diagonal) says::

    C[y] = a_y * e_y + (1 - a_y) * (s * Q[y] + (1 - s) * U[y])

with ``U`` spreading errors evenly and ``s`` the share of errors that follow ``Q``.

The same matrix reads as *knows the answer, else answers as when unsure* (see
:func:`_knowledge`); item difficulty moves the odds of knowing, so hard items are hard for
every tier while an annotator who answers at random is unaffected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from .._validation import check_array, check_int, check_labels, check_pred_probs, check_real, check_rng, fail

# A row of a confusion matrix may drift from 1 by float rounding after a guideline moves mass.
_ROW_ATOL = 1e-6


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
    spammer_share : float
        Share in [0, 1] of the tier's annotators who answer uniformly at random, whatever the
        truth (real crowds have a few; see :attr:`CrowdProfile.spammer_share`).
    """

    accuracy_mean: float
    accuracy_std: float
    seconds_median: float
    seconds_sigma: float = 0.5
    speed_spread: float = 0.3
    cost_per_hour: float = 20.0
    confusable_share: float = 0.8
    spammer_share: float = 0.0

    def __post_init__(self) -> None:
        mean = check_real(self.accuracy_mean, "accuracy_mean", low=0, high=1, low_open=True, high_open=True)
        check_real(self.accuracy_std, "accuracy_std", low=0, high=float(np.sqrt(mean * (1 - mean))), high_open=True)
        check_real(self.seconds_median, "seconds_median", low=0, low_open=True)
        check_real(self.seconds_sigma, "seconds_sigma", low=0)
        check_real(self.speed_spread, "speed_spread", low=0)
        check_real(self.cost_per_hour, "cost_per_hour", low=0)
        check_real(self.confusable_share, "confusable_share", low=0, high=1)
        check_real(self.spammer_share, "spammer_share", low=0, high=1)

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
           [0.5, 0.5, 0. ]])
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


def draw_adoption_delays(annotator_ids: Any, half_life: float, *, rng: np.random.Generator | int) -> pd.Series:
    """Draw when each annotator starts following a newly published guideline.

    A published guideline does not change everyone's answers at once: people read it when
    they next open it. Each annotator adopts it after a delay drawn from an exponential
    distribution whose median is ``half_life`` (a constant hazard: whoever has not adopted yet
    is as likely to adopt in the next hour as anyone else), so the share who follow it ``t``
    after publication is ``1 - 2 ** (-t / half_life)``, and the crowd's accuracy on the pair it
    clarifies rises as :func:`loop.guidance.propagation` models it. Pass the annotators whose
    delay has passed as ``adopters`` to :meth:`SimulatedCrowd.annotate` or :meth:`SimulatedCrowd.ask`.

    Parameters
    ----------
    annotator_ids : array-like of shape (m,)
        Unique annotator ids.
    half_life : float
        The median delay (> 0), in the unit the caller measures time in (a program: days).
    rng : Generator or int

    Returns
    -------
    Series of float indexed by annotator_id

    Examples
    --------
    >>> delays = draw_adoption_delays([f"a{i}" for i in range(1000)], 2.0, rng=0)
    >>> bool(abs(delays.median() - 2.0) < 0.2)  # a sample of 1,000: the median is near 2
    True
    """
    people = _check_item_ids(annotator_ids)
    scale = check_real(half_life, "half_life", low=0)
    if scale <= 0:
        raise fail("half_life", "a positive median delay", repr(half_life))
    return pd.Series(check_rng(rng).exponential(scale / np.log(2), len(people)), index=people, name="adoption_delay")


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
    >>> draw_item_difficulty(["a", "b"], 1.0, rng=0).round(2).to_dict()
    {'a': 0.13, 'b': -0.13}
    """
    items = _check_item_ids(item_ids)
    spread = check_real(std, "std", low=0)
    return pd.Series(spread * check_rng(rng).standard_normal(len(items)), index=items, name="difficulty")


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
