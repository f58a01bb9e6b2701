"""An always-valid sequential test of two proportions: variant against control.

Use it to compare the accuracy (or any success rate) of annotation variants while the answers
come in, looking as often as you like, and to stop as soon as the data decide.

**The statistic** is the mixture sequential probability ratio test (mSPRT) of Johari, Pekelis
and Walsh ("Always valid inference", 2017; Johari et al., Operations Research 2022) on the
difference ``theta = p_v - p_c`` of the variant's and the control's success rates. With
``s`` successes out of ``n`` answers in each arm, the estimate and its variance are::

    theta_hat = s_v / n_v - s_c / n_c
    V         = q_c (1 - q_c) / n_c + q_v (1 - q_v) / n_v,   q = (s + 1/2) / (n + 1)

(``q`` keeps ``V`` above 0 when an arm is all right or all wrong). Against the normal mixture
``theta ~ N(theta_0, tau^2)`` the likelihood ratio of ``theta_hat ~ N(theta, V)`` is::

    Lambda(theta_0) = sqrt(V / (V + tau^2)) * exp(tau^2 (theta_hat - theta_0)^2 / (2 V (V + tau^2)))

Under ``theta = theta_0`` it is (asymptotically) a martingale with mean 1, so by Ville's
inequality ``P(sup_n Lambda_n >= 1 / alpha) <= alpha``: stopping the first time it crosses
``1 / alpha`` is a level-``alpha`` test *whenever* one looks. From it, at each look:

- the **always-valid p-value** ``p_n = min(1, 1 / Lambda_1(0), ..., 1 / Lambda_n(0))``, the
  running minimum, so it never increases;
- the **confidence sequence** ``{theta_0 : Lambda_n(theta_0) < 1 / alpha}``, which is
  ``theta_hat +- h`` with::

      h = sqrt(V (V + tau^2) / tau^2 * (2 log(1 / alpha) + log((V + tau^2) / V)))

  and covers ``theta`` at every look at once with probability ``>= 1 - alpha``; the running
  intersection of the intervals (what :class:`SequentialComparison` reports) is as valid.

``tau`` is the spread of effects the test is tuned to find fastest: effects near ``tau`` are
detected soonest; much smaller ones need far more data. A few points (0.05) suits accuracy
differences between annotation variants.

**Decisions** (:func:`decide`), for one variant against the control at level ``alpha``:

- ``winner``: ``p_n <= alpha``; the better arm (the sign of ``theta_hat``) wins;
- ``no_difference``: the confidence sequence lies inside ``(-min_effect, +min_effect)``, an
  *equivalence margin*: any difference that remains is smaller than what matters. Stopping for
  it never adds a false winner (it only ends the search for one), so the level stays ``alpha``;
- ``continue`` otherwise, and always before each arm has ``min_samples`` answers (the normal
  approximation of ``theta_hat`` needs a few dozen).

**K variants against one control** split ``alpha`` by Bonferroni: each of the ``K``
comparisons runs at ``alpha / K``, so the chance that *any* variant is wrongly declared
different stays below ``alpha`` (the union bound holds whatever the dependence through the
shared control).

**Answers that are not independent.** When whole annotators, not single tasks, are randomised
to the arms, one person's answers are alike (people differ in skill), and ``V`` above, which
counts every answer as independent, is too small: the test then finds differences that are
only who happened to be in which arm. :func:`cluster_design_effect` measures how much larger
an arm's variance is when its answers are grouped by annotator (the cluster-robust variance of
the arm's rate over the binomial one, at least 1), and ``update(..., design_effects=...)``
multiplies each arm's part of ``V`` by it.

The normal approximation and the plug-in ``V`` make the guarantee asymptotic, as in Johari et
al.; ``benchmarks/experiment.py`` measures the false-positive rate it really has.

Typical use::

    test = SequentialComparison(["v2"], alpha=0.05, min_effect=0.02)
    for batch in answers:                   # correct counts and totals so far, per arm
        looks = test.update(control=(s_c, n_c), variants={"v2": (s_v, n_v)})
        if test.done:
            break
    looks["v2"].decision, looks["v2"].winner
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from ._validation import check_int, check_real, fail

__all__ = ["CONTROL", "Decision", "Look", "SequentialComparison", "cluster_design_effect", "confidence_sequence",
           "decide", "difference", "likelihood_ratio", "p_value"]

CONTROL = "control"


class Decision(str, Enum):
    """What a look decides for one variant against the control."""

    WINNER = "winner"
    NO_DIFFERENCE = "no_difference"
    CONTINUE = "continue"

    def __str__(self) -> str:
        return self.value


def _counts(successes: Any, trials: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    if not (np.isfinite(s).all() and np.isfinite(n).all()):
        raise fail(name, "finite counts", "NaN or inf")
    if (s < 0).any() or (s > n).any() or (n < 1).any():
        raise fail(name, "counts with 0 <= successes <= trials and trials >= 1",
                   f"successes {np.atleast_1d(s)[:3].tolist()}, trials {np.atleast_1d(n)[:3].tolist()}")
    return s, n


def difference(s_control: Any, n_control: Any, s_variant: Any, n_variant: Any) -> tuple[np.ndarray, np.ndarray]:
    """The estimated difference ``theta_hat = s_v / n_v - s_c / n_c`` and its variance ``V``.

    Parameters
    ----------
    s_control, n_control, s_variant, n_variant : float or array, broadcastable
        Successes and trials of each arm; ``0 <= s <= n``, ``n >= 1``.

    Returns
    -------
    theta_hat, variance : ndarray of the broadcast shape
        ``V = q_c (1 - q_c) / n_c + q_v (1 - q_v) / n_v`` with ``q = (s + 1/2) / (n + 1)``.

    Examples
    --------
    >>> [round(float(v), 5) for v in difference(80, 100, 90, 100)]
    [0.1, 0.00255]
    """
    sc, nc = _counts(s_control, n_control, "control")
    sv, nv = _counts(s_variant, n_variant, "variant")
    qc, qv = (sc + 0.5) / (nc + 1), (sv + 0.5) / (nv + 1)
    return sv / nv - sc / nc, qc * (1 - qc) / nc + qv * (1 - qv) / nv


def _check_tau(tau: Any) -> float:
    return check_real(tau, "tau", low=0, low_open=True)


def _check_alpha(alpha: Any) -> float:
    return check_real(alpha, "alpha", low=0, high=1, low_open=True, high_open=True)


def likelihood_ratio(theta_hat: Any, variance: Any, *, tau: float = 0.05, theta_0: float = 0.0) -> np.ndarray:
    """The mixture likelihood ratio ``Lambda(theta_0)`` (module docstring), computed in logs.

    Parameters
    ----------
    theta_hat, variance : float or array
        From :func:`difference`; ``variance > 0``.
    tau : float > 0
        Standard deviation of the normal mixture over effects.
    theta_0 : float
        The difference under the null.

    Returns
    -------
    ndarray
        ``Lambda >= sqrt(V / (V + tau^2))``; ``inf`` where it overflows.

    Examples
    --------
    >>> round(float(likelihood_ratio(0.1, 0.0025, tau=0.05)), 4)
    1.9221
    """
    t = _check_tau(tau)
    v = np.asarray(variance, dtype=np.float64)
    if not np.isfinite(v).all() or (v <= 0).any():
        raise fail("variance", "finite values > 0", f"{np.atleast_1d(v)[:3].tolist()}")
    z2 = (np.asarray(theta_hat, dtype=np.float64) - theta_0) ** 2
    log = 0.5 * np.log(v / (v + t * t)) + t * t * z2 / (2 * v * (v + t * t))
    with np.errstate(over="ignore"):
        return np.exp(log)


def p_value(theta_hat: Any, variance: Any, *, tau: float = 0.05, previous: Any = 1.0) -> np.ndarray:
    """The always-valid p-value after this look: ``min(previous, 1 / Lambda(0), 1)``.

    Pass the last look's p-value as ``previous`` (1 before the first look): the running
    minimum is what keeps the guarantee when one stops at any look.

    Returns
    -------
    ndarray in [0, 1], never above ``previous``

    Examples
    --------
    >>> round(float(p_value(0.1, 0.0025, tau=0.05)), 4)
    0.5203
    """
    prev = np.asarray(previous, dtype=np.float64)
    if not np.isfinite(prev).all() or (prev < 0).any() or (prev > 1).any():
        raise fail("previous", "p-values in [0, 1]", f"{np.atleast_1d(prev)[:3].tolist()}")
    return np.minimum(prev, np.minimum(1.0, 1.0 / likelihood_ratio(theta_hat, variance, tau=tau)))


def confidence_sequence(theta_hat: Any, variance: Any, *, alpha: float = 0.05,
                        tau: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """This look's interval of the always-valid confidence sequence: ``theta_hat +- h``.

    ``h = sqrt(V (V + tau^2) / tau^2 * (2 log(1 / alpha) + log((V + tau^2) / V)))``, the set
    of ``theta_0`` with ``Lambda(theta_0) < 1 / alpha``.

    Returns
    -------
    low, high : ndarray
        Not clipped to [-1, 1] (the formula's interval, so it is symmetric about
        ``theta_hat``).

    Examples
    --------
    >>> [round(float(b), 4) for b in confidence_sequence(0.1, 0.0025, alpha=0.05, tau=0.05)]
    [-0.0828, 0.2828]
    """
    a, t = _check_alpha(alpha), _check_tau(tau)
    v = np.asarray(variance, dtype=np.float64)
    if not np.isfinite(v).all() or (v <= 0).any():
        raise fail("variance", "finite values > 0", f"{np.atleast_1d(v)[:3].tolist()}")
    half = np.sqrt(v * (v + t * t) / (t * t) * (2 * np.log(1 / a) + np.log((v + t * t) / v)))
    center = np.asarray(theta_hat, dtype=np.float64)
    return center - half, center + half


def decide(p: Any, low: Any, high: Any, *, alpha: float, min_effect: float, ready: Any = True) -> np.ndarray:
    """The decision of a look, elementwise: ``winner``, ``no_difference`` or ``continue``.

    Parameters
    ----------
    p : float or array
        Always-valid p-value (running minimum).
    low, high : float or array
        The confidence sequence's interval (running intersection).
    alpha : float in (0, 1)
        This comparison's level (already divided by K for K variants).
    min_effect : float >= 0
        Equivalence margin: ``no_difference`` when ``-min_effect < low`` and ``high < min_effect``.
    ready : bool or array
        False before each arm has enough answers: then ``continue``.

    Returns
    -------
    ndarray of str (Decision values)

    Examples
    --------
    >>> decide([0.01, 0.5, 0.5], [0.02, -0.01, -0.1], [0.1, 0.01, 0.1], alpha=0.05, min_effect=0.02).tolist()
    ['winner', 'no_difference', 'continue']
    """
    a = _check_alpha(alpha)
    m = check_real(min_effect, "min_effect", low=0)
    p, low, high, ready = np.broadcast_arrays(np.asarray(p, float), np.asarray(low, float),
                                              np.asarray(high, float), np.asarray(ready, bool))
    out = np.full(p.shape, Decision.CONTINUE.value, dtype=object)
    equivalent = (low > -m) & (high < m)
    out[ready & equivalent] = Decision.NO_DIFFERENCE.value
    out[ready & (p <= a)] = Decision.WINNER.value
    return out


@dataclass(frozen=True)
class Look:
    """One variant against the control at one look.

    ``difference``, ``ci_low`` and ``ci_high`` are on ``p_v - p_c``; ``ci_low``/``ci_high`` are
    the running intersection of the confidence sequence (clipped to [-1, 1]); ``p_value`` the
    running minimum. ``winner`` is the variant's name, :data:`CONTROL`, or None.
    """

    variant: str
    n_control: int
    n_variant: int
    rate_control: float
    rate_variant: float
    difference: float
    p_value: float
    ci_low: float
    ci_high: float
    decision: Decision
    winner: str | None


class SequentialComparison:
    """K variants against one control, looked at as often as one likes.

    Parameters
    ----------
    variants : sequence of str
        Names of the variants (not :data:`CONTROL`), distinct, at least one.
    alpha : float in (0, 1), default=0.05
        Family-wise level; each comparison runs at ``alpha / K`` (Bonferroni).
    min_effect : float >= 0, default=0.02
        Equivalence margin of ``no_difference``.
    tau : float > 0, default=0.05
        Mixture spread (effects near it are found fastest).
    min_samples : int >= 1, default=30
        Answers each arm needs before a comparison may decide.

    Attributes
    ----------
    looks_ : dict of str -> Look
        The latest look of each variant.
    decided_ : dict of str -> Look
        The first deciding look of each variant; a decided comparison stays decided.

    Examples
    --------
    >>> test = SequentialComparison(["v2"], min_samples=10)
    >>> look = test.update(control=(30, 100), variants={"v2": (80, 100)})["v2"]
    >>> look.decision.value, look.winner
    ('winner', 'v2')
    """

    def __init__(self, variants: Sequence[str], *, alpha: float = 0.05, min_effect: float = 0.02,
                 tau: float = 0.05, min_samples: int = 30) -> None:
        if isinstance(variants, str) or not isinstance(variants, Sequence) or not variants:
            raise fail("variants", "a non-empty list of variant names", repr(variants)[:60])
        names = [str(v) for v in variants]
        if len(set(names)) != len(names) or CONTROL in names or not all(names):
            raise fail("variants", f"distinct non-empty names other than {CONTROL!r}", repr(names)[:60])
        self.variants = tuple(names)
        self.alpha = _check_alpha(alpha)
        self.min_effect = check_real(min_effect, "min_effect", low=0)
        self.tau = _check_tau(tau)
        self.min_samples = check_int(min_samples, "min_samples", low=1)
        self.looks_: dict[str, Look] = {}
        self.decided_: dict[str, Look] = {}

    @property
    def alpha_per_comparison(self) -> float:
        """``alpha / K``."""
        return self.alpha / len(self.variants)

    @property
    def done(self) -> bool:
        """Every variant's comparison has decided."""
        return len(self.decided_) == len(self.variants)

    def update(self, *, control: tuple[int, int], variants: Mapping[str, tuple[int, int]],
               design_effects: Mapping[str, float] | None = None) -> dict[str, Look]:
        """Look at the cumulative counts: ``(successes, trials)`` of the control and of each variant.

        Counts must not decrease between looks (they are totals so far). An arm with no
        answers yet gives a ``continue`` look with NaN figures. ``design_effects`` (by arm name,
        :data:`CONTROL` for the control; default 1 each) inflate each arm's variance when its
        answers are not independent (:func:`cluster_design_effect`).
        """
        if not isinstance(variants, Mapping) or set(variants) != set(self.variants):
            raise fail("variants", f"counts for exactly {list(self.variants)}", repr(variants)[:60])
        effects = _design_effects(design_effects, (CONTROL, *self.variants))
        sc, nc = _pair(control, "control")
        for name in self.variants:
            sv, nv = _pair(variants[name], f"variants[{name!r}]")
            before = self.looks_.get(name)
            if before is not None and (nv < before.n_variant or nc < before.n_control):
                raise fail(f"variants[{name!r}]", "cumulative counts that never decrease",
                           f"trials {nc}, {nv} after {before.n_control}, {before.n_variant}")
            self.looks_[name] = look = self._look(name, sc, nc, sv, nv, before, effects[CONTROL], effects[name])
            if name not in self.decided_ and look.decision is not Decision.CONTINUE:
                self.decided_[name] = look
        return dict(self.looks_)

    def _look(self, name: str, sc: int, nc: int, sv: int, nv: int, before: Look | None,
              effect_control: float = 1.0, effect_variant: float = 1.0) -> Look:
        if nc == 0 or nv == 0:
            nan = float("nan")
            return Look(name, nc, nv, sc / nc if nc else nan, sv / nv if nv else nan, nan,
                        1.0 if before is None else before.p_value, -1.0, 1.0, Decision.CONTINUE, None)
        a = self.alpha_per_comparison
        theta, _ = difference(sc, nc, sv, nv)
        qc, qv = (sc + 0.5) / (nc + 1), (sv + 0.5) / (nv + 1)
        v = effect_control * qc * (1 - qc) / nc + effect_variant * qv * (1 - qv) / nv
        ready = min(nc, nv) >= self.min_samples
        # The running minimum and intersection start once both arms are ready: before, the
        # normal approximation is too rough for its extremes to be carried forward.
        carried = before is not None and min(before.n_control, before.n_variant) >= self.min_samples
        p = float(p_value(theta, v, tau=self.tau, previous=before.p_value if carried else 1.0))
        low, high = (float(b) for b in confidence_sequence(theta, v, alpha=a, tau=self.tau))
        low, high = max(low, -1.0), min(high, 1.0)
        if carried:
            if max(low, before.ci_low) <= min(high, before.ci_high):
                low, high = max(low, before.ci_low), min(high, before.ci_high)
            else:  # disjoint from the earlier interval (chance <= alpha): the earlier one stands
                low, high = before.ci_low, before.ci_high
        decision = Decision(decide(p, low, high, alpha=a, min_effect=self.min_effect, ready=ready).item())
        winner = None
        if decision is Decision.WINNER:
            winner = name if theta > 0 else CONTROL
        return Look(name, nc, nv, sc / nc, sv / nv, float(theta), p, low, high, decision, winner)


def _design_effects(value: Mapping[str, float] | None, names: Sequence[str]) -> dict[str, float]:
    if value is None:
        return dict.fromkeys(names, 1.0)
    if not isinstance(value, Mapping) or not set(value) <= set(names):
        raise fail("design_effects", f"a mapping from some of {list(names)} to numbers >= 1", repr(value)[:60])
    return {n: check_real(value.get(n, 1.0), f"design_effects[{n!r}]", low=1.0) for n in names}


def cluster_design_effect(successes: Any, trials: Any) -> float:
    """How much more an arm's success rate varies when its answers come in clusters (per annotator).

    ``successes[i]`` of ``trials[i]`` answers are annotator ``i``'s in the arm. The design effect
    is the cluster-robust (CR1) variance of the arm's rate over the binomial one that counts
    every answer as independent, and at least 1 (clusters that happen to agree more than
    chance are not taken as more information than independent answers would give)::

        V_cluster  = k / (k - 1) * sum_i (s_i - p m_i)^2 / N^2
        V_binomial = p (1 - p) / N,     p = sum s_i / N,  N = sum m_i,  k clusters with answers

    With fewer than two clusters nothing says how people differ: the arm counts as one answer
    (the design effect is ``N``). With one answer per cluster it is ``k / (k - 1)``, the small-
    sample factor alone.

    Examples
    --------
    >>> round(cluster_design_effect([1, 0] * 50, [1] * 100), 3)  # one answer each: about independent
    1.01
    >>> round(cluster_design_effect([50, 5], [50, 50]), 1)  # one always right, the other mostly wrong
    81.8
    """
    s = np.asarray(successes, dtype=np.float64).ravel()
    m = np.asarray(trials, dtype=np.float64).ravel()
    if s.shape != m.shape:
        raise fail("trials", f"one count per cluster, as successes ({s.size})", f"{m.size}")
    if not (np.isfinite(s).all() and np.isfinite(m).all()) or (s < 0).any() or (s > m).any():
        raise fail("successes", "finite counts with 0 <= successes <= trials", f"{s[:3].tolist()} of {m[:3].tolist()}")
    answered = m > 0
    s, m = s[answered], m[answered]
    n = float(m.sum())
    if n == 0:
        return 1.0
    k = int(m.size)
    if k < 2:
        return n
    p = float(s.sum()) / n
    binomial = p * (1 - p) / n
    clustered = k / (k - 1) * float(((s - p * m) ** 2).sum()) / n ** 2
    if binomial == 0:  # every answer right (or wrong): nothing varies, clustered or not
        return 1.0
    return max(1.0, clustered / binomial)


def _pair(value: Any, name: str) -> tuple[int, int]:
    if not isinstance(value, tuple) or len(value) != 2:
        raise fail(name, "a (successes, trials) pair", repr(value)[:60])
    n = check_int(value[1], f"{name} trials", low=0)
    s = check_int(value[0], f"{name} successes", low=0, high=n)
    return s, n
