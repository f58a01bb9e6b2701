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
