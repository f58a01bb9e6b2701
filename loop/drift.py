"""Drift of a stream against a reference window, and the relabel queue it calls for.

Pure functions and one estimator; no I/O, no clock, randomness only through ``rng``.

**What is compared.** A *reference window* (the first rounds of a stream) against a *current
window* (the items of one round), on four views, each with a threshold
(:class:`DriftThresholds`):

- *features*: the population stability index (PSI) of each feature on the reference's quantile
  bins (:func:`feature_psi`), and for continuous features (at least ``min_distinct`` distinct
  reference values) the two-sample Kolmogorov-Smirnov test (:func:`ks_features`,
  ``scipy.stats.ks_2samp``) with Holm's step-down correction across those features, so that
  ``ks_alpha`` bounds the chance of any false rejection in a round, whatever the number of
  features (Holm: no assumption on how the features depend on each other, and never less
  powerful than Bonferroni);
- *predicted classes*: PSI of the class shares of the model's predictions
  (:func:`class_shift`, with a chi-square test's p-value beside it);
- *resolved labels*: the same on the current labels;
- the same two views *since the reference*: every arrival after the reference window (when
  the caller passes it, ``check(..., since=...)``), against a threshold scaled to its size so
  that each look alarms as rarely as the one-round view (below): a prior shift too small to
  pass the threshold in one round of 100 items adds up over the rounds;
- *new arrivals unlike the reference*: each item's distance to its ``neighbors``-th nearest
  reference item (features scaled by the reference's spread, floored at the median feature's);
  an item is *novel* beyond the
  reference's own 99th percentile of that distance (leave-one-out), and the window has drifted
  when the one-sided binomial test of its novel share against 1% rejects at ``novelty_alpha``
  (``scipy.stats.binomtest``). A new sub-population shows here first.

**PSI.** ``sum_b (c_b - r_b) * ln(c_b / r_b)`` over bins ``b`` with reference shares ``r`` and
current shares ``c``: a symmetrised Kullback-Leibler divergence, so it is >= 0, symmetric in
its two arguments, and zero when the two samples' counts agree (alike shares of samples of
other sizes give a little more than zero: the smoothing below weighs on the smaller one more). An empty bin would make it
infinite: each bin's count gets :data:`EPSILON` = half an item first (Jeffreys' prior), so
an empty bin's share is ``0.5 / (n + B / 2)``. A fixed floor (say 1e-4) is no good on small
windows: a bin holding 7% of 300 reference items is empty in 100 current items by chance
about once in a thousand, and a floor of 1e-4 then adds ``0.07 ln(700) = 0.46``; over 64
features of 10 bins that happened in half the windows without drift. With ``n`` reference
and ``m`` current items and ``B`` bins, PSI under no drift is about ``(B - 1) (1/n + 1/m)``
(a chi-square's scale), so small windows need a higher threshold or fewer bins. The class
views' thresholds are set for a window of one round (``m`` items); the since-reference window of
``M`` items is held to ``threshold * (1/n + 1/M) / (1/n + 1/m)``, the same chi-square quantile.

**A prior shift** (:class:`PriorShift`): when only the class mix moved, the model's
probabilities still carry the reference's class prior, so the classes that became common are
under-confident and the ones that became rare over-confident. Saerens, Latinne and Decaestecker
(2002)'s EM re-estimates the current prior from the model's probabilities on the current items
and corrects them, ``p'(k|x) ∝ p(k|x) π'_k / π_k``. The same factor corrects a posterior that
combines the model (as the prior) with annotators' labels, since the annotators' likelihood does
not depend on the prior.

**The relabel queue** (:func:`relabel_queue`). The already-labelled items in the drifted
region, each with the reasons it is there: the items in the bins whose share rose most of
each drifted feature, the items predicted (or labelled) as a class whose share rose or with it as their runner-up, the
items whose label the re-estimated prior overturns (a pool column :data:`PRIOR_DECISION`),
and the items nearest the novel arrivals (``sklearn.neighbors``). They are ranked by how many
drifted views put them there, then by their label-issue score, and cut at the budget's
number of items. :func:`blanket_queue` draws the same number uniformly: the baseline a
targeted queue is measured against.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ref = DriftReference().fit(rng.normal(size=(400, 2)), np.zeros(400, int), np.zeros(400, int), n_classes=2)
>>> report = ref.check(rng.normal(loc=[1.5, 0.0], size=(200, 2)), np.zeros(200, int), np.zeros(200, int))
>>> report.alert, report.drifted[0].name
(True, 'feature 0')
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ._validation import check_array, check_int, check_pred_probs, check_real, check_rng, fail
from .columns import ITEM, LABEL, LABEL_ISSUE_SCORE, PRIORITY, REASON, RUNNER_UP
from .exceptions import NotFittedError

__all__ = ["EPSILON", "PRIOR_DECISION", "DriftFinding", "DriftReference", "DriftReport", "DriftThresholds",
           "PriorShift", "blanket_queue",
           "class_shift", "feature_psi", "holm", "ks_features", "psi", "quantile_edges", "relabel_queue"]

EPSILON = 0.5  # the pseudo-count every bin gets (see the module docstring)
NOVEL_QUANTILE = 0.99  # a new item is novel beyond this quantile of the reference's own distances
PREDICTED = "predicted"  # the model's class (loop.columns.PREDICTED)
FEATURE, KS, PREDICTION, LABELS, NOVELTY = "feature", "ks", "prediction", "label", "novelty"
PRIOR_DECISION = "prior_decision"  # pool column: the class under the re-estimated prior, -1 where not estimated
SINCE = " since the reference"  # the name suffix of the class views over every arrival after the reference
_MOVED_BINS = 2  # the bins (of a drifted feature) whose items join the queue
_TOP_FEATURES = 3  # at most this many drifted features define the region


@dataclass(frozen=True)
class DriftThresholds:
    """When a view has drifted.

    Parameters
    ----------
    psi : float > 0, default 0.4
        A feature's PSI above it has drifted. Above the customary 0.25 because the largest of
        many features' PSI on small windows is noisy: digits' 64 pixels, 300 reference and 100
        current items drawn alike, peak at 0.23 in the median window, above 0.32 in 5% and at
        0.37 in the worst of 100 (150 current items: 0.17, 0.23, 0.28).
    ks_alpha : float in (0, 1), default 0.01
        Family-wise error rate of the KS tests across continuous features (Holm).
    prediction_psi, label_psi : float > 0, default 0.3
        PSI of the predicted-class and resolved-label shares above which they have drifted. The
        PSI of ``k`` classes' shares is about a chi-square of ``k - 1`` degrees of freedom times
        ``1/n + 1/m``: ten classes, 300 and 100 items drawn alike, reach 0.25 in about 3% of
        windows and 0.3 in about 1%. The window since the reference (``M`` items) is held to
        the threshold times ``(1/n + 1/M) / (1/n + 1/m)``: the same quantile.
    novelty_alpha : float in (0, 1), default 0.001
        Level of the binomial test of the share of novel arrivals.
    bins : int >= 2, default 10
        Quantile bins of each feature.
    min_distinct : int >= 2, default 20
        A feature with at least this many distinct reference values is continuous (KS too).
    neighbors : int >= 1, default 5
        The k of the novelty distance, and the queue's neighbours of each novel arrival.
    """

    psi: float = 0.4
    ks_alpha: float = 0.01
    prediction_psi: float = 0.3
    label_psi: float = 0.3
    novelty_alpha: float = 0.001
    bins: int = 10
    min_distinct: int = 20
    neighbors: int = 5

    def __post_init__(self) -> None:
        for name in ("psi", "prediction_psi", "label_psi"):
            object.__setattr__(self, name, check_real(getattr(self, name), name, low=0, low_open=True))
        for name in ("ks_alpha", "novelty_alpha"):
            object.__setattr__(self, name, check_real(getattr(self, name), name, low=0, high=1, low_open=True,
                                                      high_open=True))
        check_int(self.bins, "bins", low=2)
        check_int(self.min_distinct, "min_distinct", low=2)
        check_int(self.neighbors, "neighbors", low=1)


@dataclass(frozen=True)
class DriftFinding:
    """One view's statistic against its threshold.

    Attributes
    ----------
    kind : str
        ``feature`` (PSI), ``ks``, ``prediction``, ``label`` or ``novelty``.
    name : str
        What was compared: ``feature 3``, ``predicted classes``, ``labels``, ``new arrivals``.
    statistic : str
        ``psi``, ``ks_p_holm`` (Holm-adjusted p-value), ``binomial_p``.
    value, threshold : float
    drifted : bool
        ``value > threshold`` (PSI) or ``value < threshold`` (p-values).
    moved : tuple of str
        What moved: the bins whose share rose most (``[0.2, 0.4)``), the classes whose share rose.
    detail : str
        One line with the shares (reference -> current).
    """

    kind: str
    name: str
    statistic: str
    value: float
    threshold: float
    drifted: bool
    moved: tuple[str, ...] = ()
    detail: str = ""

    @property
    def by(self) -> float:
        """How far past the threshold (above 1: past it): ``value / threshold`` for a PSI; for a
        p-value ``log(value) / log(threshold)``, its orders of magnitude over the threshold's
        (p = 1e-9 against 0.001 is 3)."""
        if self.statistic == "psi":
            return self.value / self.threshold
        return float(np.log(max(self.value, 1e-300)) / np.log(self.threshold))


@dataclass(frozen=True)
class DriftReport:
    """Every view's finding for one window; :attr:`drifted` are those past their threshold.

    Attributes
    ----------
    findings : tuple of DriftFinding
        Every feature's PSI, KS of the continuous ones, predicted classes, labels, novelty.
    n_reference, n_current : int
    novel : ndarray of bool, shape (n_current,)
        Which current items are novel (far from every reference item).
    """

    findings: tuple[DriftFinding, ...]
    n_reference: int
    n_current: int
    novel: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool), repr=False)

    @property
    def drifted(self) -> tuple[DriftFinding, ...]:
        """The findings past their threshold, the furthest first."""
        return tuple(sorted((f for f in self.findings if f.drifted), key=lambda f: -f.by))

    @property
    def alert(self) -> bool:
        return bool(self.drifted)

    def max_psi(self, kind: str = FEATURE) -> float:
        """The largest PSI of a kind (``feature``, ``prediction``, ``label``); 0 when none."""
        values = [f.value for f in self.findings if f.kind == kind and f.statistic == "psi"]
        return float(max(values)) if values else 0.0

    def summary(self) -> str:
        """One line: what drifted and by how much (or that nothing did)."""
        if not self.alert:
            return f"no drift: {self.n_current} items against a reference of {self.n_reference}"
        parts = [f"{f.name} {f.statistic} {f.value:.3g} > {f.threshold:.3g}" if f.statistic == "psi"
                 else f"{f.name} {f.statistic} {f.value:.3g} < {f.threshold:.3g}" for f in self.drifted[:4]]
        more = len(self.drifted) - 4
        return "drift: " + "; ".join(parts) + (f"; and {more} more" if more > 0 else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the drifted findings in full, the largest PSI of each kind, the counts."""
        return {"summary": self.summary(), "n_reference": self.n_reference, "n_current": self.n_current,
                "n_novel": int(self.novel.sum()), "feature_psi_max": self.max_psi(FEATURE),
                "prediction_psi": self.max_psi(PREDICTION), "label_psi": self.max_psi(LABELS),
                "drifted": [{**asdict(f), "moved": list(f.moved), "by": f.by} for f in self.drifted]}


# --- the statistics -------------------------------------------------------------------------------


def psi(reference: Any, current: Any, *, epsilon: float = EPSILON) -> float:
    """Population stability index of two samples' counts over the same bins.

    Parameters
    ----------
    reference, current : array-like of shape (B,)
        Counts per bin (non-negative; a positive total).
    epsilon : float > 0, default :data:`EPSILON`
        The pseudo-count added to every bin before the shares are taken.

    Returns
    -------
    float >= 0
        ``sum (c - r) ln(c / r)`` over the smoothed shares: 0 when the counts agree,
        symmetric in its arguments.

    Examples
    --------
    >>> round(psi([50, 50], [80, 20]), 3)
    0.406
    """
    check_real(epsilon, "epsilon", low=0, low_open=True)
    r, c = _smoothed(reference, "reference", epsilon), _smoothed(current, "current", epsilon)
    if r.shape != c.shape:
        raise fail("current", f"as many bins as reference ({r.size})", f"{c.size}")
    return float(max(0.0, np.sum((c - r) * np.log(c / r))))


def _smoothed(value: Any, name: str, epsilon: float = EPSILON) -> np.ndarray:
    counts = check_array(value, name, ndim=1)
    if counts.size < 1 or not np.isfinite(counts).all() or (counts < 0).any() or counts.sum() <= 0:
        raise fail(name, "finite non-negative counts with a positive total", f"{counts[:6]!r}")
    return (counts + epsilon) / (counts.sum() + epsilon * counts.size)


def quantile_edges(reference: Any, bins: int = 10) -> np.ndarray:
    """Interior bin edges of one feature: the distinct ``1/bins .. (bins-1)/bins`` quantiles of
    the reference (fewer for a feature with few values). Bin ``i`` is ``[edge[i-1], edge[i])``,
    the first from -inf, the last to +inf (:func:`numpy.digitize`)."""
    values = check_array(reference, "reference", ndim=1)
    check_int(bins, "bins", low=2)
    return np.unique(np.quantile(values, np.arange(1, bins) / bins))


def _bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.bincount(np.digitize(values, edges), minlength=edges.size + 1).astype(np.float64)


def feature_psi(reference: Any, current: Any, *, bins: int = 10, epsilon: float = EPSILON) -> np.ndarray:
    """PSI of each feature on the reference's quantile bins.

    Parameters
    ----------
    reference : array-like of shape (n, d)
    current : array-like of shape (m, d)
    bins : int >= 2

    Returns
    -------
    ndarray of shape (d,), >= 0
    """
    ref, cur = _pair(reference, current)
    return np.array([psi(_bin_counts(ref[:, j], e), _bin_counts(cur[:, j], e), epsilon=epsilon)
                     for j, e in enumerate(quantile_edges(ref[:, j], bins) for j in range(ref.shape[1]))])


def _pair(reference: Any, current: Any) -> tuple[np.ndarray, np.ndarray]:
    ref, cur = check_array(reference, "reference", ndim=2), check_array(current, "current", ndim=2)
    if ref.shape[0] < 1 or cur.shape[0] < 1:
        raise fail("reference" if ref.shape[0] < 1 else "current", "at least 1 row", "0 rows")
    if ref.shape[1] != cur.shape[1]:
        raise fail("current", f"{ref.shape[1]} feature columns like reference", f"{cur.shape[1]}")
    if not (np.isfinite(ref).all() and np.isfinite(cur).all()):
        raise fail("current" if np.isfinite(ref).all() else "reference", "finite features", "NaN or inf values")
    return ref, cur


def holm(pvalues: Any) -> np.ndarray:
    """Holm's step-down adjusted p-values (reject where the adjusted value is below alpha).

    Examples
    --------
    >>> holm([0.01, 0.04, 0.03]).round(2).tolist()
    [0.03, 0.06, 0.06]
    """
    p = check_array(pvalues, "pvalues", ndim=1)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def ks_features(reference: Any, current: Any, columns: Any = None) -> pd.DataFrame:
    """Two-sample KS test of each feature (``scipy.stats.ks_2samp``), Holm-adjusted across them.

    Parameters
    ----------
    reference : array-like of shape (n, d)
    current : array-like of shape (m, d)
    columns : array-like of int, optional
        The features to test (default all): the continuous ones.

    Returns
    -------
    DataFrame with columns ``feature, statistic, p, p_holm``, one row per tested feature.
    """
    ref, cur = _pair(reference, current)
    cols = np.arange(ref.shape[1]) if columns is None else np.asarray(columns, dtype=np.int64)
    tests = [stats.ks_2samp(ref[:, j], cur[:, j]) for j in cols]
    p = np.array([t.pvalue for t in tests], dtype=np.float64)
    return pd.DataFrame({"feature": cols, "statistic": [float(t.statistic) for t in tests], "p": p,
                         "p_holm": holm(p)})


def class_shift(reference: Any, current: Any, n_classes: int, *,
                epsilon: float = EPSILON) -> tuple[float, float, np.ndarray, np.ndarray]:
    """PSI of the class shares of two label vectors, and a chi-square test's p-value.

    Parameters
    ----------
    reference, current : array-like of int in [0, n_classes)
    n_classes : int >= 2

    Returns
    -------
    (psi, p, reference_counts, current_counts)
        ``p`` is ``scipy.stats.chi2_contingency`` on the 2 x k table of the classes either
        window holds (1.0 when only one class appears).
    """
    k = check_int(n_classes, "n_classes", low=2)
    counts = []
    for name, value in (("reference", reference), ("current", current)):
        codes = check_array(value, name, ndim=1, dtype=np.int64)
        if codes.size == 0 or codes.min() < 0 or codes.max() >= k:
            raise fail(name, f"at least one class code in [0, {k})", f"{codes[:6]!r}")
        counts.append(np.bincount(codes, minlength=k).astype(np.float64))
    table = np.vstack(counts)
    seen = table.sum(axis=0) > 0
    p = float(stats.chi2_contingency(table[:, seen])[1]) if seen.sum() > 1 else 1.0
    return psi(table[0], table[1], epsilon=epsilon), p, table[0], table[1]


def _rising(ref: np.ndarray, cur: np.ndarray, top: int | None = None) -> np.ndarray:
    """The indices (bins, classes) whose share rose, by their PSI contribution (largest first),
    from counts; for classes all that carry at least a tenth of the positive contribution."""
    r, c = _smoothed(ref, "reference"), _smoothed(cur, "current")
    gain = (c - r) * np.log(c / r)
    up = np.flatnonzero(c > r)
    up = up[np.argsort(-gain[up], kind="stable")]
    if top is not None:
        return up[:top]
    return up[gain[up] >= 0.1 * gain[up].sum()] if up.size else up


def _share(counts: np.ndarray, i: int) -> str:
    return f"{counts[i] / max(counts.sum(), 1):.0%}"


def _bin_text(edges: np.ndarray, b: int) -> str:
    lo = "-inf" if b == 0 else f"{edges[b - 1]:.3g}"
    hi = "inf" if b == edges.size else f"{edges[b]:.3g}"
    return f"[{lo}, {hi})"


# --- the reference --------------------------------------------------------------------------------


class DriftReference:
    """A reference window, fitted once; :meth:`check` compares a window with it.

    Parameters
    ----------
    thresholds : DriftThresholds, optional

    Attributes
    ----------
    edges_ : list of ndarray
        Each feature's interior quantile edges.
    counts_ : list of ndarray
        Each feature's reference bin counts.
    continuous_ : ndarray of int
        The features tested with KS.
    predicted_, labels_ : ndarray of int
        The reference's predicted classes and labels.
    cutoff_ : float
        The novelty distance (the reference's own 99th percentile).
    """

    def __init__(self, thresholds: DriftThresholds | None = None) -> None:
        self.thresholds = thresholds if thresholds is not None else DriftThresholds()

    def fit(self, x: Any, predicted: Any, labels: Any, *, n_classes: int) -> DriftReference:
        """Learn the reference window: features ``(n, d)``, predicted classes and labels ``(n,)``."""
        from sklearn.neighbors import NearestNeighbors

        if not isinstance(self.thresholds, DriftThresholds):
            raise fail("thresholds", "a DriftThresholds", type(self.thresholds).__name__)
        t = self.thresholds
        x = check_array(x, "x", ndim=2)
        self.n_classes_ = check_int(n_classes, "n_classes", low=2)
        if x.shape[0] <= t.neighbors:
            raise fail("x", f"more than neighbors={t.neighbors} reference rows", f"{x.shape[0]}")
        if not np.isfinite(x).all():
            raise fail("x", "finite features", "NaN or inf values")
        self.predicted_, self.labels_ = self._codes(predicted, "predicted", x), self._codes(labels, "labels", x)
        self.x_ = x
        self.edges_ = [quantile_edges(x[:, j], t.bins) for j in range(x.shape[1])]
        self.counts_ = [_bin_counts(x[:, j], e) for j, e in enumerate(self.edges_)]
        distinct = np.array([np.unique(x[:, j]).size for j in range(x.shape[1])])
        self.continuous_ = np.flatnonzero(distinct >= t.min_distinct)
        self.center_ = x.mean(axis=0)
        # Each feature's spread, floored at the median spread: a feature nearly constant in the
        # reference (a pixel almost always blank) would make any change in it look far away.
        spread = x.std(axis=0)
        floor = float(np.median(spread)) if np.median(spread) > 0 else 1.0
        self.scale_ = np.maximum(spread, floor)
        self.nn_ = NearestNeighbors(n_neighbors=t.neighbors).fit(self._scaled(x))
        own = self.nn_.kneighbors(self._scaled(x), n_neighbors=t.neighbors + 1)[0][:, -1]  # itself excluded
        self.cutoff_ = float(np.quantile(own, NOVEL_QUANTILE))
        return self

    def _codes(self, value: Any, name: str, x: np.ndarray) -> np.ndarray:
        codes = check_array(value, name, ndim=1, dtype=np.int64)
        if codes.shape[0] != x.shape[0]:
            raise fail(name, f"one class code per row of x ({x.shape[0]})", f"{codes.shape[0]}")
        if codes.size and (codes.min() < 0 or codes.max() >= self.n_classes_):
            raise fail(name, f"class codes in [0, {self.n_classes_})", f"{codes.min()}..{codes.max()}")
        return codes

    def _scaled(self, x: np.ndarray) -> np.ndarray:
        return (x - self.center_) / self.scale_

    def _check_fitted(self) -> None:
        if not hasattr(self, "cutoff_"):
            raise NotFittedError("This DriftReference is not fitted yet: call fit(x, predicted, labels) first.")

    def novelty(self, x: Any) -> np.ndarray:
        """Each row's distance to its ``neighbors``-th nearest reference item (scaled features)."""
        self._check_fitted()
        x = check_array(x, "x", ndim=2)
        if x.shape[1] != self.x_.shape[1]:
            raise fail("x", f"{self.x_.shape[1]} feature columns like the reference", f"{x.shape[1]}")
        return self.nn_.kneighbors(self._scaled(x))[0][:, -1]

    def check(self, x: Any, predicted: Any, labels: Any, *, since: tuple[Any, Any] | None = None) -> DriftReport:
        """Compare a current window (features ``(m, d)``, predicted classes, labels) with the reference.

        ``since``: the predicted classes and labels of every arrival after the reference (the
        current window's among them), when there are more of them than the window's. Their
        class views join the findings (named ``... since the reference``), each held to the
        threshold scaled to its size (module docstring).
        """
        self._check_fitted()
        t = self.thresholds
        ref, cur = _pair(self.x_, x)
        predicted, labels = self._codes(predicted, "predicted", cur), self._codes(labels, "labels", cur)
        views = [(PREDICTION, "predicted classes", predicted, t.prediction_psi),
                 (LABELS, "labels", labels, t.label_psi)]
        if since is not None:
            if not isinstance(since, tuple) or len(since) != 2:
                raise fail("since", "a pair (predicted, labels) of the arrivals since the reference", type(since).__name__)
            after_p = check_array(since[0], "since", ndim=1, dtype=np.int64)
            if after_p.size < predicted.size:
                raise fail("since", f"at least the current window's {predicted.size} arrivals", f"{after_p.size}")
            rows = np.zeros((after_p.size, 0))
            after_p, after_l = self._codes(after_p, "since", rows), self._codes(since[1], "since", rows)
            if after_p.size > predicted.size:
                # The same chi-square quantile: the null PSI scales as 1/n + 1/m (module docstring).
                n = self.predicted_.size
                scale = (1 / n + 1 / after_p.size) / (1 / n + 1 / predicted.size)
                views += [(PREDICTION, "predicted classes" + SINCE, after_p, t.prediction_psi * scale),
                          (LABELS, "labels" + SINCE, after_l, t.label_psi * scale)]
        findings: list[DriftFinding] = []
        for j, (edges, counts) in enumerate(zip(self.edges_, self.counts_)):
            now = _bin_counts(cur[:, j], edges)
            value = psi(counts, now)
            moved = _rising(counts, now, top=_MOVED_BINS) if value > t.psi else np.zeros(0, dtype=np.int64)
            findings.append(DriftFinding(
                FEATURE, f"feature {j}", "psi", value, t.psi, value > t.psi,
                tuple(_bin_text(edges, b) for b in moved),
                "; ".join(f"bin {_bin_text(edges, b)} {_share(counts, b)} -> {_share(now, b)}" for b in moved)))
        if self.continuous_.size:
            for row in ks_features(ref, cur, self.continuous_).itertuples(index=False):
                findings.append(DriftFinding(KS, f"feature {row.feature}", "ks_p_holm", float(row.p_holm),
                                             t.ks_alpha, bool(row.p_holm < t.ks_alpha),
                                             detail=f"KS statistic {row.statistic:.3f}"))
        for kind, name, codes, limit in views:
            value, p, r, c = class_shift(self.predicted_ if kind == PREDICTION else self.labels_, codes,
                                         self.n_classes_)
            moved = _rising(r, c) if value > limit else np.zeros(0, dtype=np.int64)
            findings.append(DriftFinding(kind, name, "psi", value, limit, value > limit,
                                         tuple(str(k) for k in moved),
                                         "; ".join([f"class {k} {_share(r, k)} -> {_share(c, k)}" for k in moved]
                                                   + [f"chi-square p {p:.2g}"])))
        novel = self.novelty(cur) > self.cutoff_
        p = float(stats.binomtest(int(novel.sum()), novel.size, 1 - NOVEL_QUANTILE, alternative="greater").pvalue)
        findings.append(DriftFinding(NOVELTY, "new arrivals", "binomial_p", p, t.novelty_alpha, p < t.novelty_alpha,
                                     detail=f"{int(novel.sum())} of {novel.size} arrivals unlike the reference "
                                            f"(expected {1 - NOVEL_QUANTILE:.0%})"))
        return DriftReport(tuple(findings), n_reference=ref.shape[0], n_current=cur.shape[0], novel=novel)


# --- the prior shift ------------------------------------------------------------------------------


class PriorShift:
    """The class prior of a current window, re-estimated from a model's probabilities
    (Saerens, Latinne and Decaestecker 2002), and the correction it calls for.

    EM: start from the reference prior ``π`` (the mean of the model's probabilities on the
    reference window, the prior they carry); correct each current item's probabilities,
    ``p'(k|x) = p(k|x) w_k / sum_j p(j|x) w_j`` with ``w = π' / π``; take ``π'`` as their mean;
    repeat until ``π'`` moves less than ``tol``. On the reference window itself the answer is
    ``π`` (the weights are one): no shift, no correction.

    Parameters
    ----------
    max_iter : int >= 1, default 200
    tol : float > 0, default 1e-6
        Largest change of a class's share between two iterations at which EM stops.

    Attributes
    ----------
    reference_prior_, prior_ : ndarray of shape (k,)
        The prior the probabilities carry, and the re-estimated one (both sum to 1).
    weights_ : ndarray of shape (k,)
        ``prior_ / reference_prior_``.
    n_iter_ : int

    Examples
    --------
    >>> ref = np.array([[0.9, 0.1], [0.1, 0.9]] * 50)
    >>> cur = np.array([[0.9, 0.1]] * 70 + [[0.1, 0.9]] * 30)  # 70% predicted 0, each wrong 10% of the time
    >>> shift = PriorShift().fit(ref, cur)
    >>> shift.prior_.round(2).tolist(), shift.correct([[0.5, 0.5]]).round(2).tolist()
    ([0.75, 0.25], [[0.75, 0.25]])
    """

    def __init__(self, *, max_iter: int = 200, tol: float = 1e-6) -> None:
        self.max_iter, self.tol = max_iter, tol

    def fit(self, reference_probs: Any, current_probs: Any) -> PriorShift:
        """Estimate the current prior: the model's probabilities ``(n, k)`` on the reference
        window and ``(m, k)`` on the current one."""
        check_int(self.max_iter, "max_iter", low=1)
        check_real(self.tol, "tol", low=0, low_open=True)
        ref = check_pred_probs(reference_probs, "reference_probs")
        cur = check_pred_probs(current_probs, "current_probs")
        if cur.shape[1] != ref.shape[1]:
            raise fail("current_probs", f"{ref.shape[1]} class columns like reference_probs", f"{cur.shape[1]}")
        # A class the model never gives any probability cannot be re-weighed: its share stays 0.
        self.reference_prior_ = ref.mean(axis=0)
        prior = self.reference_prior_.copy()
        self.n_iter_ = 0
        for self.n_iter_ in range(1, self.max_iter + 1):
            new = self._corrected(cur, prior).mean(axis=0)
            done = float(np.abs(new - prior).max()) < self.tol
            prior = new
            if done:
                break
        self.prior_ = prior
        self.weights_ = np.divide(prior, self.reference_prior_, out=np.zeros_like(prior),
                                  where=self.reference_prior_ > 0)
        return self

    def _corrected(self, probs: np.ndarray, prior: np.ndarray) -> np.ndarray:
        w = np.divide(prior, self.reference_prior_, out=np.zeros_like(prior), where=self.reference_prior_ > 0)
        out = probs * w
        total = out.sum(axis=1, keepdims=True)
        # An item whose every likely class lost all weight keeps its probabilities.
        return np.where(total > 0, out / np.where(total > 0, total, 1.0), probs)

    def correct(self, probs: Any) -> np.ndarray:
        """Probabilities ``(n, k)`` (the model's, or a posterior with the model as its prior)
        under the re-estimated prior; rows sum to 1."""
        if not hasattr(self, "prior_"):
            raise NotFittedError("This PriorShift is not fitted yet: call fit(reference_probs, current_probs) first.")
        p = check_pred_probs(probs, "probs")
        if p.shape[1] != self.prior_.size:
            raise fail("probs", f"{self.prior_.size} class columns", f"{p.shape[1]}")
        return self._corrected(p, self.prior_)

    def summary(self, top: int = 3) -> str:
        """The classes whose share moved most: ``class 3 10% -> 21%; ...``."""
        if not hasattr(self, "prior_"):
            raise NotFittedError("This PriorShift is not fitted yet: call fit(reference_probs, current_probs) first.")
        moved = np.argsort(-np.abs(self.prior_ - self.reference_prior_), kind="stable")[:top]
        return "; ".join(f"class {k} {self.reference_prior_[k]:.0%} -> {self.prior_[k]:.0%}" for k in moved)


# --- the relabel queue ----------------------------------------------------------------------------


def _check_pool(pool: Any, x: Any) -> tuple[pd.DataFrame, np.ndarray]:
    if not isinstance(pool, pd.DataFrame):
        raise fail("pool", "a DataFrame", type(pool).__name__)
    missing = [c for c in (ITEM, LABEL, PREDICTED, LABEL_ISSUE_SCORE) if c not in pool.columns]
    if missing:
        raise fail("pool", f"a DataFrame with columns {[ITEM, LABEL, PREDICTED, LABEL_ISSUE_SCORE]}",
                   f"columns {list(pool.columns)} (missing {missing})")
    x = check_array(x, "pool_x", ndim=2)
    if x.shape[0] != len(pool):
        raise fail("pool_x", f"one row per pool item ({len(pool)})", f"{x.shape[0]} rows")
    return pool.reset_index(drop=True), x


def relabel_queue(report: DriftReport, reference: DriftReference, pool: pd.DataFrame, pool_x: Any,
                  current_x: Any, *, max_items: int) -> pd.DataFrame:
    """The already-labelled items in the drifted region, ranked and cut at ``max_items``.

    Parameters
    ----------
    report : DriftReport
        ``reference.check(current_x, ...)``.
    reference : DriftReference
        Fitted.
    pool : DataFrame
        The items that may be relabelled: ``item_id, label, predicted, label_issue_score``, and
        optionally ``runner_up`` (the model's second class) and :data:`PRIOR_DECISION` (the
        class under the re-estimated prior, :meth:`PriorShift.correct`; -1 where the prior was
        not re-estimated): where the class mix moved, an item whose label it overturns is in
        the region.
    pool_x : array-like of shape (len(pool), d)
        Their features.
    current_x : array-like of shape (report.n_current, d)
        The current window's features (the novel arrivals among them are the ones ``report`` marks).
    max_items : int >= 0
        The budget in items.

    Returns
    -------
    DataFrame with columns ``item_id, reason, priority``, at most ``max_items`` rows, highest
    priority first: the number of drifted views that put the item in the region, plus its
    label-issue score (in [0, 1]). Empty without drift.
    """
    from sklearn.neighbors import NearestNeighbors

    if not isinstance(report, DriftReport):
        raise fail("report", "a DriftReport", type(report).__name__)
    if not isinstance(reference, DriftReference):
        raise fail("reference", "a DriftReference", type(reference).__name__)
    reference._check_fitted()
    pool, x = _check_pool(pool, pool_x)
    max_items = check_int(max_items, "max_items", low=0)
    current = check_array(current_x, "current_x", ndim=2)
    if current.shape[0] != report.n_current:
        raise fail("current_x", f"the report's {report.n_current} rows", f"{current.shape[0]}")
    reasons: list[list[str]] = [[] for _ in range(len(pool))]

    def add(mask: np.ndarray, text: str) -> None:
        for i in np.flatnonzero(mask):
            reasons[i].append(text)

    features = [f for f in report.drifted if f.kind in (FEATURE, KS)]
    seen: set[str] = set()
    for f in features:
        if f.name in seen or len(seen) >= _TOP_FEATURES:
            continue
        seen.add(f.name)
        j = int(f.name.split()[-1])
        edges, counts = reference.edges_[j], reference.counts_[j]
        now = _bin_counts(current[:, j], edges)
        for b in _rising(counts, now, top=_MOVED_BINS):
            add(np.digitize(x[:, j], edges) == b, f"{f.name} bin {_bin_text(edges, b)} moved {_share(counts, b)} -> "
                                                  f"{_share(now, b)} ({f.statistic} {f.value:.3g})")
    mix: dict[str, DriftFinding] = {}
    for f in report.drifted:  # the furthest first: one finding per view (one round or since the reference)
        if f.kind in (PREDICTION, LABELS) and f.moved:
            mix.setdefault(f.kind, f)
    # With a re-estimated prior, a label of a class that rose is what the corrected prior confirms:
    # the region is where the label is another class (the classes that fell, which the stale
    # prior favours) and the model's first or second class rose, or where the prior overturns it.
    reweighed = PRIOR_DECISION in pool.columns
    label = pool[LABEL].to_numpy(dtype=np.int64)
    for f in mix.values():
        if reweighed and f.kind == LABELS:
            continue
        column = PREDICTED if f.kind == PREDICTION else LABEL
        codes = pool[column].to_numpy(dtype=np.int64)
        # An item labelled as another class whose runner-up moved: where a class that became
        # more common is mistaken for its neighbour (the crowd's errors follow the truth).
        second = pool[RUNNER_UP].to_numpy(dtype=np.int64) if RUNNER_UP in pool.columns else None
        for k in f.moved:
            add((codes == int(k)) & ((label != int(k)) if reweighed else True),
                f"{'predicted' if f.kind == PREDICTION else 'labelled'} class {k}, whose share moved "
                f"(PSI {f.value:.3g})")
            if second is not None and f.kind == PREDICTION:
                add((second == int(k)) & (codes != int(k)),
                    f"runner-up class {k}, whose predicted share moved (PSI {f.value:.3g})")
    if mix and reweighed:
        # Where the re-estimated prior overturns the label: the decisions the stale prior tipped.
        decision = pool[PRIOR_DECISION].to_numpy(dtype=np.int64)
        for i in np.flatnonzero((decision >= 0) & (decision != label)):
            reasons[i].append(f"the re-estimated class prior decides {decision[i]}, not its label {label[i]}")
    if any(f.kind == NOVELTY for f in report.drifted) and report.novel.any() and len(pool):
        k = min(reference.thresholds.neighbors, len(pool))
        near = NearestNeighbors(n_neighbors=k).fit(reference._scaled(x))
        hits = near.kneighbors(reference._scaled(current[report.novel]), return_distance=False).ravel()
        counts = np.bincount(hits, minlength=len(pool))
        for i in np.flatnonzero(counts):
            reasons[i].append(f"nearest to {counts[i]} new arrivals unlike the reference")
    matched = np.array([len(r) for r in reasons], dtype=np.float64)
    issue = np.clip(pool[LABEL_ISSUE_SCORE].to_numpy(dtype=np.float64), 0.0, 1.0)
    priority = matched + np.nan_to_num(issue)
    order = np.argsort(-priority, kind="stable")
    order = order[matched[order] > 0][:max_items]
    return pd.DataFrame({ITEM: pool[ITEM].to_numpy(dtype=object)[order],
                         REASON: ["drift relabel: " + "; ".join(reasons[i]) for i in order],
                         PRIORITY: priority[order]})


def blanket_queue(pool: pd.DataFrame, *, max_items: int, rng: Any) -> pd.DataFrame:
    """``max_items`` items of ``pool`` drawn uniformly (columns ``item_id, reason, priority``):
    blanket relabeling, the baseline a targeted queue is measured against."""
    if not isinstance(pool, pd.DataFrame) or ITEM not in pool.columns:
        raise fail("pool", f"a DataFrame with an {ITEM!r} column", type(pool).__name__)
    max_items = check_int(max_items, "max_items", low=0)
    take = check_rng(rng).permutation(len(pool))[:max_items]
    return pd.DataFrame({ITEM: pool[ITEM].to_numpy(dtype=object)[take],
                         REASON: "blanket relabel: drawn uniformly from the labelled items",
                         PRIORITY: np.zeros(take.size)})
