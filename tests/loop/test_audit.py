"""Random audits give an error rate with an honest interval."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loop.audit import audit_sample, estimate_error_rate, estimate_error_rate_stratified
from loop.exceptions import SchemaError


def test_audit_sample_is_uniform_distinct_and_reproducible() -> None:
    ids = np.arange(1000) * 3
    first = audit_sample(ids, rate=0.1, rng=7)
    assert first.shape == (100,) and len(set(first)) == 100 and set(first) <= set(ids)
    assert np.array_equal(first, audit_sample(ids, rate=0.1, rng=7))
    assert not np.array_equal(first, audit_sample(ids, rate=0.1, rng=8))
    # Uniform: every item is drawn about equally often over many audits.
    counts = np.zeros(20)
    gen = np.random.default_rng(0)
    for _ in range(2000):
        counts[audit_sample(np.arange(20), size=5, rng=gen)] += 1
    assert counts.min() > 400 and counts.max() < 600


def test_audit_sample_rejects_bad_arguments() -> None:
    with pytest.raises(SchemaError, match="'size'"):
        audit_sample(range(10), rng=0)
    with pytest.raises(SchemaError, match="'size'"):
        audit_sample(range(10), size=2, rate=0.1, rng=0)
    with pytest.raises(SchemaError, match="'size'.*\\[0, 10\\]"):
        audit_sample(range(10), size=11, rng=0)
    with pytest.raises(SchemaError, match="'rate'"):
        audit_sample(range(10), rate=1.5, rng=0)


def test_wilson_interval_covers_the_true_rate_about_95_percent_of_the_time() -> None:
    gen = np.random.default_rng(1)
    true_rate, n = 0.03, 300
    errors = gen.binomial(n, true_rate, size=2000)
    covered = [est.low <= true_rate <= est.high for est in map(lambda e: estimate_error_rate(n, int(e)), errors)]
    assert 0.92 <= np.mean(covered) <= 0.98


def test_exact_interval_is_wider_than_wilson() -> None:
    wilson, exact = estimate_error_rate(200, 6), estimate_error_rate(200, 6, method="exact")
    assert exact.low <= wilson.low and exact.high >= wilson.high
    assert "3.00%" in str(wilson) and "6/200" in str(wilson)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 5000), data=st.data())
def test_interval_contains_the_point_estimate(n: int, data) -> None:
    errors = data.draw(st.integers(0, n))
    est = estimate_error_rate(n, errors)
    assert 0 <= est.low <= est.rate <= est.high <= 1


def test_error_rate_rejects_impossible_counts() -> None:
    with pytest.raises(SchemaError, match="'n_errors'"):
        estimate_error_rate(10, 11)
    with pytest.raises(SchemaError, match="'n_audited'"):
        estimate_error_rate(0, 0)
    with pytest.raises(SchemaError, match="'method'"):
        estimate_error_rate(10, 1, method="bayes")


def test_stratified_estimate_is_unbiased_where_a_pooled_share_is_not() -> None:
    # 90% of items are auto-accepted with 1% errors; 10% are reviewed with 20% errors.
    gen = np.random.default_rng(2)
    population = np.array([9000, 1000])
    rates = np.array([0.01, 0.2])
    truth = float(population @ rates / population.sum())
    estimates, pooled = [], []
    for _ in range(500):
        audited = np.array([100, 100])
        errors = gen.binomial(audited, rates)
        frame = pd.DataFrame({"population": population, "audited": audited, "errors": errors})
        estimates.append(estimate_error_rate_stratified(frame).rate)
        pooled.append(errors.sum() / audited.sum())
    assert np.mean(estimates) == pytest.approx(truth, abs=0.003)
    assert np.mean(pooled) > truth + 0.05


def test_stratified_with_one_stratum_matches_the_simple_share() -> None:
    frame = pd.DataFrame({"population": [1000], "audited": [100], "errors": [7]})
    est = estimate_error_rate_stratified(frame)
    assert est.rate == pytest.approx(0.07) and est.low < 0.07 < est.high
    full = estimate_error_rate_stratified(frame.assign(population=100, audited=100))
    assert full.low == full.high == pytest.approx(0.07)  # a census has no sampling error


def test_stratified_rejects_an_unaudited_stratum() -> None:
    frame = pd.DataFrame({"population": [1000, 50], "audited": [100, 0], "errors": [7, 0]})
    with pytest.raises(SchemaError, match="'strata'.*audited"):
        estimate_error_rate_stratified(frame)
    with pytest.raises(SchemaError, match="columns"):
        estimate_error_rate_stratified(frame.drop(columns="errors"))


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 2000), population=st.integers(0, 5000), data=st.data())
def test_stratified_wilson_of_one_stratum_is_the_wilson_interval(n: int, population: int, data) -> None:
    errors = data.draw(st.integers(0, n))
    frame = pd.DataFrame({"population": [n + population], "audited": [n], "errors": [errors]})
    got, want = estimate_error_rate_stratified(frame, method="wilson"), estimate_error_rate(n, errors)
    assert got.rate == pytest.approx(want.rate)
    assert got.low == pytest.approx(want.low, abs=1e-9) and got.high == pytest.approx(want.high, abs=1e-9)


def test_stratified_wilson_covers_with_an_oversampled_stratum_and_few_errors() -> None:
    # An auto-accepted stratum of 700 items (1% wrong) oversampled against the other 300 (20%
    # wrong): 20 and 10 audited, a handful of errors, where the normal interval collapses.
    gen = np.random.default_rng(3)
    population, audited, rates = np.array([700, 300]), np.array([20, 10]), np.array([0.01, 0.20])
    truth = float(population @ rates / population.sum())
    covered, normal_covered = [], []
    for _ in range(2000):
        frame = pd.DataFrame({"population": population, "audited": audited, "errors": gen.binomial(audited, rates)})
        est, normal = (estimate_error_rate_stratified(frame, method=m) for m in ("wilson", "normal"))
        covered.append(est.low <= truth <= est.high)
        normal_covered.append(normal.low <= truth <= normal.high)
        assert 0 <= est.low <= est.rate <= est.high <= 1
    assert 0.93 <= np.mean(covered) <= 0.99
    assert np.mean(normal_covered) < np.mean(covered)


def test_stratified_rejects_an_unknown_method() -> None:
    frame = pd.DataFrame({"population": [10], "audited": [5], "errors": [1]})
    with pytest.raises(SchemaError, match="'method'"):
        estimate_error_rate_stratified(frame, method="bootstrap")


# --- the latent-class count: experts who share the labels' mistakes ------------------------------


def _pairs_matrix(k: int) -> np.ndarray:
    """Classes confusable in pairs (0-1, 2-3, ...): every error about a class goes to its partner."""
    partner = np.arange(k) ^ 1
    matrix = np.zeros((k, k))
    matrix[np.arange(k), partner] = 1.0
    return matrix


def _synthetic_audit(rng: np.random.Generator, *, n: int, p: float, accuracy: float, errors_to: np.ndarray,
                     wrong_truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """One adjudicated audit of ``n`` labels, ``p`` of them wrong (the truth drawn from
    ``wrong_truth``), by experts right with ``accuracy`` whose errors go where ``errors_to``
    says; a second expert only where the first disputes. Returns the labels, the answers,
    the true share of wrong labels and the plain count's (a dispute counts when the second
    also rejects the label)."""
    k = errors_to.shape[0]
    labels = rng.integers(0, k, n)
    wrong = rng.random(n) < p
    truth = labels.copy()
    for i in np.flatnonzero(wrong):
        truth[i] = rng.choice(k, p=wrong_truth[labels[i]])
    confusion = accuracy * np.eye(k) + (1.0 - accuracy) * errors_to

    def answer() -> np.ndarray:
        return np.array([rng.choice(k, p=confusion[t]) for t in truth], dtype=np.float64)

    first, second = answer(), answer()
    second[first == labels] = np.nan
    plain = (first != labels) & (second != labels)  # NaN != label: no second asked never happens here
    return labels, np.c_[first, second], float(wrong.mean()), float(plain.mean())


def test_the_latent_count_removes_the_bias_of_experts_who_share_the_labels_mistakes() -> None:
    # Experts right 85% of the time whose errors go to the class a wrong label has (pairs):
    # they agree with a wrong label 15% of the time, which the plain count takes as proof (it
    # misses those errors, and a second opinion that shares the mistake too). The latent-class fit, told only where
    # errors go, fits the experts' accuracy from the second opinions and removes the bias.
    from loop.audit import latent_audit_fit

    k, rng = 6, np.random.default_rng(11)
    pairs = _pairs_matrix(k)
    labels, answers, groups, truth, plain = [], [], [], [], []
    for audit in range(60):
        lab, ans, true_share, plain_share = _synthetic_audit(rng, n=40, p=0.3, accuracy=0.85, errors_to=pairs,
                                                             wrong_truth=pairs)
        labels.append(lab), answers.append(ans), groups.append(np.full(40, audit))
        truth.append(true_share), plain.append(plain_share)
    accuracy, rates = latent_audit_fit(np.concatenate(labels), np.concatenate(answers), np.concatenate(groups),
                                       errors_to=pairs, wrong_truth=pairs)
    truth, plain = np.asarray(truth), np.asarray(plain)
    latent = rates.to_numpy() - truth
    assert np.mean(plain - truth) < -0.05  # the planted bias (-0.074 here)
    # Within noise of 0 (-0.011 here, standard error 0.006 over the 60 audits).
    assert abs(float(latent.mean())) < min(0.02, 3 * latent.std(ddof=1) / np.sqrt(latent.size))
    assert accuracy == pytest.approx(0.85, abs=0.03)


def test_with_experts_who_err_rarely_and_independently_the_latent_count_is_the_plain_one() -> None:
    from loop.audit import latent_audit_fit

    k, rng = 10, np.random.default_rng(5)
    uniform = (1.0 - np.eye(k)) / (k - 1)
    labels, answers, groups, plain = [], [], [], []
    for audit in range(40):
        lab, ans, _, plain_share = _synthetic_audit(rng, n=30, p=0.2, accuracy=0.97, errors_to=uniform,
                                                    wrong_truth=uniform)
        labels.append(lab), answers.append(ans), groups.append(np.full(30, audit)), plain.append(plain_share)
    _, rates = latent_audit_fit(np.concatenate(labels), np.concatenate(answers), np.concatenate(groups),
                                errors_to=uniform, wrong_truth=uniform)
    assert np.abs(rates.to_numpy() - np.asarray(plain)).max() < 0.02
    assert abs(float(np.mean(rates.to_numpy() - np.asarray(plain)))) < 0.003


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=30))
def test_with_experts_who_never_err_the_latent_rate_is_the_share_they_reject(pairs) -> None:
    from loop.audit import latent_error_rate

    labels = np.array([label for label, _ in pairs])
    answers = np.array([[answer] for _, answer in pairs], dtype=np.float64)
    rate = latent_error_rate(labels, answers, confusion=np.eye(4), wrong_truth=(1 - np.eye(4)) / 3)
    assert rate == pytest.approx(float(np.mean(answers[:, 0] != labels)), abs=1e-4)


@settings(max_examples=50, deadline=None)
@given(st.floats(0.0, 1.0), st.floats(0.5, 0.99), st.integers(0, 3), st.integers(0, 3))
def test_the_truth_posterior_is_a_distribution_and_agreement_lowers_the_doubt(p, accuracy, label, answer) -> None:
    from loop.audit import audit_truth_posterior

    k = 4
    confusion = accuracy * np.eye(k) + (1 - accuracy) * _pairs_matrix(k)
    post = audit_truth_posterior([label, label], [[answer, np.nan], [label, np.nan]], error_rate=p,
                                 confusion=confusion, wrong_truth=_pairs_matrix(k))
    assert np.allclose(post.sum(axis=1), 1.0) and (post >= 0).all()
    # An expert's agreement never makes the label more doubtful than the prior, nor a dispute less.
    assert 1 - post[1, label] <= p + 1e-12
    if answer != label:
        assert 1 - post[0, label] >= p - 1e-12


def test_the_latent_functions_refuse_bad_input_naming_the_field() -> None:
    from loop.audit import audit_truth_posterior, latent_audit_fit

    eye, pairs = np.eye(2), _pairs_matrix(2)
    with pytest.raises(SchemaError, match="'confusion'"):
        audit_truth_posterior([0], [[0.0]], error_rate=0.1, confusion=[[0.5, 0.4], [0, 1]], wrong_truth=pairs)
    with pytest.raises(SchemaError, match="'wrong_truth'"):
        audit_truth_posterior([0], [[0.0]], error_rate=0.1, confusion=eye, wrong_truth=eye)
    with pytest.raises(SchemaError, match="'labels'"):
        audit_truth_posterior([2], [[0.0]], error_rate=0.1, confusion=eye, wrong_truth=pairs)
    with pytest.raises(SchemaError, match="'answers'"):
        audit_truth_posterior([0, 1], [[0.0]], error_rate=0.1, confusion=eye, wrong_truth=pairs)
    with pytest.raises(SchemaError, match="'error_rate'"):
        audit_truth_posterior([0], [[0.0]], error_rate=1.5, confusion=eye, wrong_truth=pairs)
    with pytest.raises(SchemaError, match="'groups'"):
        latent_audit_fit([0, 1], [[0.0], [1.0]], [0], errors_to=pairs, wrong_truth=pairs)
    with pytest.raises(SchemaError, match="'errors_to'"):
        latent_audit_fit([0], [[0.0]], [0], errors_to=eye, wrong_truth=pairs)
