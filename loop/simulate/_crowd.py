"""Simulated annotators and the crowd that assigns items to them and answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .._validation import check_array, check_int, check_real, check_rng, check_labels, fail
from ..columns import ACCURACY, ANNOTATOR, COST, ITEM, LABEL, SECONDS
from ._model import (
    DEFAULT_PROFILES,
    Guideline,
    Tier,
    TierProfile,
    _check_confusability,
    _check_difficulty,
    _check_item_ids,
    _check_stochastic,
    _check_tier,
    _harder,
    annotator_confusions,
    uniform_confusability,
)

# Cells of the (item, annotator) key matrix drawn at once by ``assign``; bounds its memory.
_ASSIGN_CHUNK_CELLS = 2_000_000
_SECONDS_PER_HOUR = 3600.0


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
        return pd.Series(np.diagonal(self.confusion, axis1=1, axis2=2).mean(axis=1), index=self.ids, name=ACCURACY)

    def members(self, tier: Tier | str | None = None) -> pd.Index:
        """Ids of the annotators of ``tier`` (all of them when ``None``)."""
        return self.ids[self._pool(tier)]

    def _pool(self, tier: Tier | str | None) -> np.ndarray:
        if tier is None:
            return np.arange(len(self))
        tier = _check_tier(tier)
        # One by one: `self.tiers == tier` has numpy turn the str-Enum into a plain string
        # array, which then matches none of the Tier members.
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
            chosen[start:stop] = _smallest(keys, top)
        keep = np.arange(top) < counts[:, None]
        rows, _ = np.nonzero(keep)
        return pd.DataFrame({
            ITEM: items.take(rows).to_numpy(),
            ANNOTATOR: self.ids[pool[chosen[keep]]].to_numpy(),
        })

    def annotate(self, assignment: pd.DataFrame, true_labels: Any, *, guideline: Guideline | None = None,
                 difficulty: pd.Series | None = None, adopters: Any = None,
                 rng: np.random.Generator | int) -> pd.DataFrame:
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
            Guideline version in force; its fixes change the confusion of every annotator who
            follows it (``adopters``).
        difficulty : Series of float indexed by item_id, optional
            Logit offset of each item's difficulty (see :func:`draw_item_difficulty`): the
            odds that an annotator knows the answer are divided by ``exp(difficulty)``;
            errors keep their distribution; annotators who answer at random are unaffected.
            Items missing from it have difficulty 0. Pass the same Series to every call, so
            a hard item stays hard for every tier.
        adopters : array-like of annotator ids, optional
            Who follows ``guideline`` (default: everyone); the others answer as without it
            (a guideline is adopted over time, see :func:`draw_adoption_delays`).
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
        if guideline is not None and adopters is not None:
            follows = self.ids.isin(pd.Index(np.asarray(adopters, dtype=object).ravel()))
            confusion = np.where(follows[:, None, None], confusion, self.confusion)
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
            ITEM: pairs[ITEM],
            ANNOTATOR: pairs[ANNOTATOR],
            LABEL: labels,
            SECONDS: seconds,
            COST: seconds / _SECONDS_PER_HOUR * rate,
        })

    def ask(self, true_labels: Any, *, tier: Tier | str | None = None, labels_per_item: Any = 1,
            exclude: pd.DataFrame | None = None, guideline: Guideline | None = None,
            difficulty: pd.Series | None = None, adopters: Any = None,
            rng: np.random.Generator | int) -> pd.DataFrame:
        """Have ``labels_per_item`` distinct annotators (of ``tier``) label every item.

        :meth:`assign` then :meth:`annotate`: the one call an experiment needs to send items
        to review, to an expert, or to two blind annotators (``labels_per_item=2``).

        Parameters
        ----------
        true_labels : Series indexed by item_id, or array of shape (n,)
            The items to label and their true classes.
        tier, labels_per_item, exclude, guideline, difficulty, adopters
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
        return self.annotate(assignment, truth, guideline=guideline, difficulty=difficulty, adopters=adopters,
                             rng=generator)


def make_crowd(n_per_tier: Mapping[Tier | str, int], n_classes: int, *, confusability: Any = None,
               profiles: Mapping[Tier, TierProfile] = DEFAULT_PROFILES,
               rng: np.random.Generator | int) -> SimulatedCrowd:
    """Build a crowd with ``n_per_tier[t]`` annotators of each tier.

    Each annotator's accuracy is drawn from its tier's Beta distribution and its median
    seconds per item from a log-normal around the tier's median; its errors follow
    ``confusability`` with the tier's ``confusable_share``; a ``spammer_share`` of the tier
    answers at random. Ids are ``"<tier>-<nn>"``.

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
        if profile.spammer_share > 0:  # no draw otherwise, so crowds without spammers stay as they were
            confusions[generator.random(count) < profile.spammer_share] = 1.0 / k
        annotators += [
            Annotator(f"{tier.value}-{i:02d}", tier, confusions[i], seconds_median=float(seconds[i]),
                      seconds_sigma=profile.seconds_sigma, cost_per_hour=profile.cost_per_hour)
            for i in range(count)
        ]
    return SimulatedCrowd(tuple(annotators))


def _sample_rows(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One class per row of ``probs`` (n, k) by inverse CDF: the number of cumulative
    probabilities at or below a uniform draw. A loop over the k columns, each step over all n
    rows (numpy's cumsum along short rows is slow)."""
    n, k = probs.shape
    u = rng.random(n)
    cdf = np.zeros(n)
    label = np.zeros(n, dtype=np.int64)
    for column in range(k - 1):  # the last class takes whatever is left, rounding included
        cdf += probs[:, column]
        label += cdf <= u
    return label


def _smallest(keys: np.ndarray, top: int) -> np.ndarray:
    """Column indices (n, top) of the ``top`` smallest keys of each row of ``keys`` (n, m),
    smallest first; ``0 <= top <= m``."""
    n, m = keys.shape
    if 0 < top < m:
        part = np.argpartition(keys, top - 1, axis=1)[:, :top]
    else:
        part = np.broadcast_to(np.arange(m)[:top], (n, top))
    order = np.argsort(np.take_along_axis(keys, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


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
