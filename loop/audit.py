"""Estimate the label error rate of a dataset from a random audit.

Targeted review looks where the model is unsure, so the errors it finds say little about the
rest of the data. The error rate a manager can trust comes from a *random* audit: draw items
uniformly (or uniformly within strata such as routes), have an expert check them, and report
the share that was wrong with a confidence interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from ._validation import check_int, check_option, check_real, check_rng, fail

__all__ = ["ErrorRateEstimate", "audit_sample", "estimate_error_rate", "estimate_error_rate_stratified", "wilson_interval"]

CI_METHODS = ("wilson", "exact")


@dataclass(frozen=True)
class ErrorRateEstimate:
    """An error rate with its confidence interval.

    Attributes
    ----------
    rate : float
        Estimated share of wrong labels in the population.
    low, high : float
        Bounds of the confidence interval.
    n_audited, n_errors : int
        Items checked and errors found among them.
    confidence : float
        Coverage of the interval, e.g. 0.95.
    """

    rate: float
    low: float
    high: float
    n_audited: int
    n_errors: int
    confidence: float

    def __str__(self) -> str:
        pct = int(round(self.confidence * 100))
        return f"{self.rate:.2%} ({pct}% CI {self.low:.2%} to {self.high:.2%}; {self.n_errors}/{self.n_audited} audited)"


def audit_sample(item_ids: Sequence[Any] | np.ndarray, *, size: int | None = None, rate: float | None = None,
                 rng: np.random.Generator | int) -> np.ndarray:
    """Draw a uniform random audit sample without replacement.

    Parameters
    ----------
    item_ids : array-like of shape (n,)
        The population of items.
    size, rate : int or float, keyword-only
        Give exactly one: the number of items, or the share of the population (rounded up, so a
        positive rate always audits at least one item).
    rng : numpy.random.Generator or int

    Returns
    -------
    ndarray of shape (size,)
        The sampled item ids, in population order.

    Examples
    --------
    >>> audit_sample(range(100), rate=0.05, rng=0).shape
    (5,)
    """
    population = np.asarray(item_ids)
    if population.ndim != 1:
        raise fail("item_ids", "a 1-D sequence of item ids", f"shape {population.shape}")
    if (size is None) == (rate is None):
        raise fail("size", "given exactly when 'rate' is not", f"size={size!r}, rate={rate!r}")
    n = population.shape[0]
    if rate is not None:
        size = int(np.ceil(check_real(rate, "rate", low=0, high=1) * n))
    size = check_int(size, "size", low=0, high=n)
    picked = check_rng(rng).choice(n, size=size, replace=False)
    return population[np.sort(picked)]


def estimate_error_rate(n_audited: int, n_errors: int, *, confidence: float = 0.95,
                        method: Literal["wilson", "exact"] = "wilson") -> ErrorRateEstimate:
    """Error rate from a simple random audit, with a binomial confidence interval.

    ``wilson`` is the Wilson score interval (good coverage at small counts and near 0, where
    label error rates live); ``exact`` is Clopper-Pearson (conservative).

    Examples
    --------
    >>> est = estimate_error_rate(200, 6)
    >>> round(est.rate, 3), round(est.low, 3), round(est.high, 3)
    (0.03, 0.014, 0.064)
    """
    n_audited = check_int(n_audited, "n_audited", low=1)
    n_errors = check_int(n_errors, "n_errors", low=0, high=n_audited)
    confidence = check_real(confidence, "confidence", low=0, high=1, low_open=True, high_open=True)
    method = check_option(method, "method", CI_METHODS)
    ci = stats.binomtest(n_errors, n_audited).proportion_ci(confidence_level=confidence, method=method)
    return ErrorRateEstimate(n_errors / n_audited, float(ci.low), float(ci.high), n_audited, n_errors, confidence)


def estimate_error_rate_stratified(strata: pd.DataFrame, *, confidence: float = 0.95,
                                   method: Literal["normal", "wilson"] = "normal") -> ErrorRateEstimate:
    """Error rate from an audit drawn uniformly *within* strata (e.g. one stratum per route).

    The estimate weights each stratum's error share by its share of the population,
    ``p = sum_h W_h p_h`` with ``W_h = N_h / N``. A stratum with no audited item is refused: its
    errors would be invisible.

    - ``normal``: variance ``sum_h W_h^2 (1 - n_h / N_h) p_h (1 - p_h) / (n_h - 1)`` (finite
      population correction), the normal interval clipped to [0, 1]. It collapses to a point
      when every stratum found no error, so use it with tens of errors per stratum.
    - ``wilson``: the Wilson score interval of ``p`` at Kish's effective sample size
      ``n_eff = 1 / sum_h (W_h^2 / n_h)`` (the sample size a uniform audit of the same
      precision would need; ``n`` when the allocation is proportional). It stays honest at
      small counts and near 0, as :func:`estimate_error_rate`'s does, and equals it for one
      stratum.

    Parameters
    ----------
    strata : DataFrame
        One row per stratum with integer columns ``population`` (N_h), ``audited`` (n_h) and
        ``errors``. ``errors`` may be fractional (e.g. an error counted by weight).
    confidence : float
    method : {"normal", "wilson"}, default "normal"

    Examples
    --------
    >>> frame = pd.DataFrame({"population": [900, 100], "audited": [90, 50], "errors": [1, 10]})
    >>> round(estimate_error_rate_stratified(frame).rate, 4)
    0.03
    """
    if not isinstance(strata, pd.DataFrame):
        raise fail("strata", "a DataFrame with columns population, audited, errors", f"a {type(strata).__name__}")
    needed = ["population", "audited", "errors"]
    if strata.empty or any(c not in strata.columns for c in needed):
        raise fail("strata", f"a non-empty DataFrame with columns {needed}", f"columns {list(strata.columns)} and {len(strata)} rows")
    values = strata[needed]
    if values.isna().any().any() or (values < 0).any().any():
        raise fail("strata", "non-negative counts without missing values", "negative or missing counts")
    pop, aud, err = (values[c].to_numpy(dtype=np.float64) for c in needed)
    if (aud < 1).any() or (aud > pop).any() or (err > aud).any():
        raise fail("strata", "1 <= audited <= population and errors <= audited in every stratum",
                   f"audited={aud.astype(int).tolist()}, population={pop.astype(int).tolist()}, errors={err.astype(int).tolist()}")
    confidence = check_real(confidence, "confidence", low=0, high=1, low_open=True, high_open=True)
    method = check_option(method, "method", ("normal", "wilson"))
    weights = pop / pop.sum()
    shares = err / aud
    rate = float(weights @ shares)
    if method == "wilson":
        low, high = _wilson(rate, 1.0 / float(np.sum(weights**2 / aud)), confidence)
        return ErrorRateEstimate(rate, low, high, int(aud.sum()), int(round(err.sum())), confidence)
    fpc = 1 - aud / pop
    with np.errstate(divide="ignore", invalid="ignore"):
        var_h = np.where(aud > 1, shares * (1 - shares) / (aud - 1), 0.0)
    half = stats.norm.ppf(0.5 + confidence / 2) * float(np.sqrt(np.sum(weights**2 * fpc * var_h)))
    return ErrorRateEstimate(rate, max(0.0, rate - half), min(1.0, rate + half), int(aud.sum()), int(err.sum()), confidence)


def wilson_interval(rate: float, n: float, *, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a share ``rate`` of ``n`` items, ``n`` real (an effective
    size, as a stratified or a carried-forward audit has).

    >>> tuple(round(b, 3) for b in wilson_interval(0.1, 50))
    (0.043, 0.214)
    """
    rate = check_real(rate, "rate", low=0, high=1)
    n = check_real(n, "n", low=0, low_open=True)
    confidence = check_real(confidence, "confidence", low=0, high=1, low_open=True, high_open=True)
    return _wilson(rate, n, confidence)


def _wilson(rate: float, n: float, confidence: float) -> tuple[float, float]:
    """The Wilson score interval of a share ``rate`` of ``n`` (which may be an effective, real size)."""
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    denominator = 1 + z**2 / n
    centre = (rate + z**2 / (2 * n)) / denominator
    half = z / denominator * float(np.sqrt(rate * (1 - rate) / n + z**2 / (4 * n**2)))
    # Clipped: rounding must not push a bound past the point estimate at 0 or 1 errors.
    return max(0.0, min(rate, centre - half)), min(1.0, max(rate, centre + half))
