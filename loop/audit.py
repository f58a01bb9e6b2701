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
from scipy import optimize, stats

from ._validation import check_array, check_int, check_option, check_real, check_rng, fail

__all__ = ["ErrorRateEstimate", "audit_sample", "audit_truth_posterior", "estimate_error_rate", "estimate_error_rate_stratified",
           "latent_audit_fit", "latent_error_rate", "wilson_interval"]

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


def audit_truth_posterior(labels: Any, answers: Any, *, error_rate: Any, confusion: Any,
                          wrong_truth: Any) -> np.ndarray:
    """Each audited item's true class given its label and the experts' answers (a latent-class model).

    An expert who agrees with a label is not proof that it is right: experts err the way the
    crowd does (on the genuinely confusable pairs), so a wrong label is agreed with more often
    than chance. The label is right with probability ``1 - p``; when wrong, the true class is
    ``i`` with probability ``wrong_truth[label, i]``; every expert answers ``j`` about class
    ``i`` with probability ``confusion[i, j]``, independently given the class::

        P(y = i | l, answers) ∝ prior(i | l) * prod_e confusion[i, answer_e]

    Parameters
    ----------
    labels : array-like of int, shape (n,)
        The labels audited, in ``0 .. k - 1``.
    answers : array-like of float, shape (n, m)
        The experts' answers per item (first check, second opinion...), NaN where none was asked.
    error_rate : float or array-like of float, shape (n,)
        ``p``: the prior probability that each label is wrong, in [0, 1].
    confusion : array-like of float, shape (k, k)
        The experts' confusion matrix, row-stochastic: true class (rows) x answer (columns).
    wrong_truth : array-like of float, shape (k, k)
        ``P(true class i | label l, the label is wrong)``: rows are labels, zero diagonal, each
        row sums to 1.

    Returns
    -------
    ndarray of shape (n, k)
        Rows sum to 1. ``1 - posterior[range(n), labels]`` is each label's probability of being wrong.
        Answers the model gives no chance (under a ``confusion`` with zeros) leave the prior.

    Examples
    --------
    >>> c = np.array([[0.9, 0.1], [0.1, 0.9]]); r = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> audit_truth_posterior([0], [[0.0]], error_rate=0.5, confusion=c, wrong_truth=r).round(2)
    array([[0.9, 0.1]])
    """
    labels, answers, confusion, wrong_truth = _check_audit(labels, answers, confusion, wrong_truth)
    p = np.broadcast_to(check_array(error_rate, "error_rate", ndim=np.ndim(error_rate)), labels.shape).astype(np.float64)
    if np.isnan(p).any() or p.min() < 0 or p.max() > 1:
        raise fail("error_rate", "probabilities in [0, 1], one or one per label", f"values from {p.min()} to {p.max()}")
    prior = p[:, None] * wrong_truth[labels]
    prior[np.arange(labels.size), labels] = 1.0 - p
    joint = prior * _answer_likelihood(answers, confusion)
    total = joint.sum(axis=1, keepdims=True)
    # Answers the model calls impossible (an error where ``confusion`` has none) say nothing: the prior stands.
    return np.where(total > 0, joint / np.where(total > 0, total, 1.0), prior)


def _check_audit(labels: Any, answers: Any, confusion: Any,
                 wrong_truth: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    confusion = _check_stochastic(confusion, "confusion")
    k = confusion.shape[0]
    wrong_truth = _check_stochastic(wrong_truth, "wrong_truth", k=k)
    if np.abs(np.diag(wrong_truth)).max() > 1e-9:
        raise fail("wrong_truth", "a matrix with a zero diagonal (a wrong label is not its own class)",
                   f"diagonal {np.diag(wrong_truth).round(3).tolist()}")
    labels = check_array(labels, "labels", ndim=1)
    if labels.size and (np.isnan(labels).any() or (labels != np.round(labels)).any() or labels.min() < 0
                        or labels.max() >= k):
        raise fail("labels", f"integer classes in 0 .. {k - 1}", f"values from {np.nanmin(labels)} to {np.nanmax(labels)}")
    answers = check_array(answers, "answers", ndim=2)
    if answers.shape[0] != labels.size:
        raise fail("answers", f"an array of shape ({labels.size}, m), one row per label", f"shape {answers.shape}")
    given = ~np.isnan(answers)
    if given.any() and ((answers[given] != np.round(answers[given])).any() or answers[given].min() < 0
                        or answers[given].max() >= k):
        raise fail("answers", f"integer classes in 0 .. {k - 1} or NaN", "other values")
    return labels.astype(np.int64), answers, confusion, wrong_truth


def _answer_likelihood(answers: np.ndarray, confusion: np.ndarray) -> np.ndarray:
    """P(the experts' answers | true class i), (n, k): independent given the class."""
    likelihood = np.ones((answers.shape[0], confusion.shape[0]))
    for column in answers.T:
        asked = ~np.isnan(column)
        likelihood[asked] *= confusion[:, column[asked].astype(np.int64)].T
    return likelihood


def latent_error_rate(labels: Any, answers: Any, *, confusion: Any, wrong_truth: Any) -> float:
    """The maximum-likelihood share of wrong labels among audited items, experts' errors allowed for.

    The ``p`` of :func:`audit_truth_posterior` that makes the experts' answers most likely
    (the log-likelihood ``sum_j log((1 - p) L_right_j + p L_wrong_j)`` is concave in ``p``, so
    the bounded search finds its one maximum). At that ``p`` the labels' posterior probabilities
    of being wrong average to ``p`` (the EM fixed point), so their sum is the stratum's error
    count. With experts who never err it is the share of labels they reject.

    Parameters are as :func:`audit_truth_posterior`'s (without ``error_rate``).

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> c = np.eye(3); r = (1 - np.eye(3)) / 2
    >>> round(latent_error_rate([0, 1, 2, 0], [[0.0], [1.0], [2.0], [1.0]], confusion=c, wrong_truth=r), 3)
    0.25
    """
    labels, answers, confusion, wrong_truth = _check_audit(labels, answers, confusion, wrong_truth)
    if labels.size == 0:
        raise fail("labels", "at least one audited label", "none")
    return _mixture_mle(*_right_and_wrong(labels, answers, confusion, wrong_truth))[0]


def _right_and_wrong(labels: np.ndarray, answers: np.ndarray, confusion: np.ndarray,
                     wrong_truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P(answers | the label is right) and P(answers | it is wrong), each (n,)."""
    likelihood = _answer_likelihood(answers, confusion)
    return likelihood[np.arange(labels.size), labels], (wrong_truth[labels] * likelihood).sum(axis=1)


def _mixture_mle(l_right: np.ndarray, l_wrong: np.ndarray) -> tuple[float, float]:
    """The share ``p`` maximising ``sum log((1 - p) l_right + p l_wrong)``, and that maximum."""

    def negative_log_likelihood(q: float) -> float:
        return -float(np.log(np.maximum((1.0 - q) * l_right + q * l_wrong, 1e-300)).sum())

    fit = optimize.minimize_scalar(negative_log_likelihood, bounds=(0.0, 1.0), method="bounded",
                                   options={"xatol": 1e-7})
    # The bounded search never lands on 0 or 1 itself: check the ends, where many audits' maxima are.
    best = min([0.0, float(fit.x), 1.0], key=negative_log_likelihood)
    return best, -negative_log_likelihood(best)


def latent_audit_fit(labels: Any, answers: Any, groups: Any, *, errors_to: Any, wrong_truth: Any,
                     prior_accuracy: float = 0.95, prior_answers: float = 10.0) -> tuple[float, pd.Series]:
    """The experts' accuracy and each group's error rate that make the audits' answers most likely.

    The experts' confusion is ``a I + (1 - a) errors_to``: accuracy ``a``, their errors going
    where ``errors_to`` says (the genuinely confusable pairs). One audit's answers cannot tell
    a wrong label from an expert's slip; second opinions can (a right label a first expert
    disputed is mostly upheld by the second), so ``a`` is fitted on every audit so far, each
    group (e.g. a round's design stratum) with its own error rate (profiled out by
    :func:`latent_error_rate`), with a Beta prior at ``prior_accuracy`` worth
    ``prior_answers`` answers.

    Parameters
    ----------
    labels, answers : as :func:`audit_truth_posterior`'s, shapes (n,) and (n, m)
    groups : array-like, shape (n,)
        Each audited item's group; every group has its own error rate.
    errors_to : array-like of float, shape (k, k)
        Where an expert's errors about class ``i`` go: zero diagonal, rows sum to 1.
    wrong_truth : array-like of float, shape (k, k)
        As :func:`audit_truth_posterior`'s.
    prior_accuracy : float in (0, 1)
    prior_answers : float >= 0

    Returns
    -------
    accuracy : float
    rates : Series of float, indexed by group

    Examples
    --------
    >>> e = (1 - np.eye(2)); labels = np.zeros(40, dtype=int)
    >>> answers = np.c_[np.r_[np.zeros(30), np.ones(10)], np.r_[np.full(30, np.nan), np.ones(8), np.zeros(2)]]
    >>> a, rates = latent_audit_fit(labels, answers, np.zeros(40), errors_to=e, wrong_truth=e)
    >>> round(a, 2), round(float(rates[0.0]), 2)
    (0.95, 0.22)
    """
    labels, answers, errors_to, wrong_truth = _check_audit(labels, answers, errors_to, wrong_truth)
    if np.abs(np.diag(errors_to)).max() > 1e-9:
        raise fail("errors_to", "a matrix with a zero diagonal (where errors go)", f"diagonal {np.diag(errors_to).tolist()}")
    groups = np.asarray(groups)
    if groups.shape != labels.shape or labels.size == 0:
        raise fail("groups", f"one group per audited label, shape ({labels.size},), at least one", f"shape {groups.shape}")
    prior_accuracy = check_real(prior_accuracy, "prior_accuracy", low=0, high=1, low_open=True, high_open=True)
    prior_answers = check_real(prior_answers, "prior_answers", low=0)
    codes, names = pd.factorize(pd.Series(groups), sort=True)
    k = errors_to.shape[0]

    def profile(a: float) -> tuple[float, list[float]]:
        l_right, l_wrong = _right_and_wrong(labels, answers, a * np.eye(k) + (1.0 - a) * errors_to, wrong_truth)
        fits = [_mixture_mle(l_right[codes == g], l_wrong[codes == g]) for g in range(len(names))]
        prior = prior_answers * (prior_accuracy * np.log(a) + (1.0 - prior_accuracy) * np.log1p(-a))
        return sum(f[1] for f in fits) + prior, [f[0] for f in fits]

    fit = optimize.minimize_scalar(lambda a: -profile(a)[0], bounds=(0.5, 1.0 - 1e-6), method="bounded",
                                   options={"xatol": 1e-5})
    accuracy = float(fit.x)
    return accuracy, pd.Series(profile(accuracy)[1], index=names, name="error_rate")


def _check_stochastic(value: Any, name: str, *, k: int | None = None) -> np.ndarray:
    matrix = check_array(value, name, ndim=2)
    size = matrix.shape[0] if k is None else k
    if matrix.shape != (size, size) or size < 2:
        raise fail(name, f"a square ({size}, {size}) matrix, k >= 2", f"shape {matrix.shape}")
    if not np.isfinite(matrix).all() or matrix.min() < 0 or np.abs(matrix.sum(axis=1) - 1).max() > 1e-6:
        raise fail(name, "a row-stochastic matrix (non-negative rows summing to 1)",
                   f"row sums {matrix.sum(axis=1).round(4).tolist()}")
    return matrix
