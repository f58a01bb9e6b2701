"""loop.calibration: temperature scaling recovers known miscalibration; ECE by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp, softmax
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.naive_bayes import GaussianNB

from loop.calibration import TemperatureScaling, expected_calibration_error, reliability_table
from loop.columns import ACCURACY, BIN_LOWER, BIN_UPPER, COUNT, GAP, MEAN_CONFIDENCE
from loop.exceptions import NotFittedError, SchemaError


def _sample_labels(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Labels drawn from the probabilities themselves: a perfectly calibrated model."""
    cumulative = probs.cumsum(axis=1)
    u = rng.random((probs.shape[0], 1))
    return np.minimum((u > cumulative).sum(axis=1), probs.shape[1] - 1)


def _sharpen(probs: np.ndarray, power: float) -> np.ndarray:
    sharp = probs**power
    return sharp / sharp.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def calibrated() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    probs = rng.dirichlet(np.full(4, 0.7), size=20_000)
    return probs, _sample_labels(probs, rng)


def test_temperature_undoes_a_known_sharpening(calibrated) -> None:
    probs, labels = calibrated
    over_confident = _sharpen(probs, 3.0)  # p ** 3 is temperature 1/3 on log p
    ts = TemperatureScaling().fit(over_confident[:10_000], labels[:10_000])
    assert ts.temperature_ == pytest.approx(3.0, rel=0.1)
    held_out, held_labels = over_confident[10_000:], labels[10_000:]
    before = expected_calibration_error(held_out, held_labels)
    after = expected_calibration_error(ts.transform(held_out), held_labels)
    assert before > 0.1
    assert after < before / 3


def test_temperature_is_one_on_calibrated_probabilities(calibrated) -> None:
    probs, labels = calibrated
    ts = TemperatureScaling().fit(probs, labels)
    assert ts.temperature_ == pytest.approx(1.0, abs=0.05)
    np.testing.assert_allclose(ts.transform(probs), probs, atol=0.02)


def test_over_confident_naive_bayes_on_digits_is_softened() -> None:
    X, y = load_digits(return_X_y=True)
    X_train, X_rest, y_train, y_rest = train_test_split(X, y, test_size=0.6, random_state=0)
    probs = GaussianNB().fit(X_train, y_train).predict_proba(X_rest)
    probs_cal, probs_test, y_cal, y_test = train_test_split(probs, y_rest, test_size=0.5, random_state=0)
    ts = TemperatureScaling().fit(probs_cal, y_cal)
    assert ts.temperature_ > 1.5
    calibrated = ts.predict_proba(probs_test)
    assert expected_calibration_error(calibrated, y_test) < 0.5 * expected_calibration_error(probs_test, y_test)
    np.testing.assert_array_equal(calibrated.argmax(axis=1), probs_test.argmax(axis=1))


def test_logits_and_their_softmax_give_the_same_temperature(rng) -> None:
    logits = rng.normal(scale=4.0, size=(2_000, 5))
    labels = _sample_labels(softmax(logits / 4.0, axis=1), rng)  # true temperature 4
    from_logits = TemperatureScaling(kind="logits").fit(logits, labels)
    from_probs = TemperatureScaling().fit(softmax(logits, axis=1), labels)
    assert from_logits.temperature_ == pytest.approx(4.0, rel=0.15)
    assert from_logits.temperature_ == pytest.approx(from_probs.temperature_, rel=1e-4)
    np.testing.assert_allclose(from_logits.transform(logits), from_probs.transform(softmax(logits, axis=1)),
                               atol=1e-6)


def test_huge_logits_do_not_overflow() -> None:
    logits = np.array([[1000.0, 0.0], [0.0, 1000.0], [1000.0, 999.0]])
    ts = TemperatureScaling(kind="logits").fit(logits, [0, 0, 1])
    out = ts.transform(logits)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(axis=1), 1.0)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 6))
def test_transform_keeps_rows_valid_and_the_predicted_class(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(k, 0.5), size=40)
    labels = rng.integers(0, k, size=40)
    out = TemperatureScaling().fit_transform(probs, labels)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    assert np.all((out >= 0) & (out <= 1))
    # Argmax survives unless two classes were within float rounding of a tie.
    top2 = np.sort(probs, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-9
    np.testing.assert_array_equal(out.argmax(axis=1)[clear], probs.argmax(axis=1)[clear])


def test_not_fitted_error_before_fit() -> None:
    with pytest.raises(NotFittedError, match="fit"):
        TemperatureScaling().transform([[0.5, 0.5]])
    with pytest.raises(AttributeError):  # NotFittedError is also an AttributeError
        TemperatureScaling().predict_proba([[0.5, 0.5]])
    assert not hasattr(TemperatureScaling(), "temperature_")


def test_fit_returns_self_and_only_fit_sets_learned_attributes() -> None:
    ts = TemperatureScaling(kind="probs")
    assert ts.fit([[0.8, 0.2], [0.3, 0.7]], [0, 1]) is ts
    assert ts.n_classes_ == 2 and ts.temperature_ > 0
    assert repr(ts) == "TemperatureScaling(kind='probs')"


def test_temperature_scaling_bad_input() -> None:
    with pytest.raises(SchemaError, match="'kind'"):
        TemperatureScaling(kind="scores").fit([[0.5, 0.5]], [0])
    with pytest.raises(SchemaError, match="'labels'"):
        TemperatureScaling().fit([[0.5, 0.5]], [2])
    with pytest.raises(SchemaError, match="'labels'.*one label per item"):
        TemperatureScaling().fit([[0.5, 0.5], [0.5, 0.5]], [0])
    with pytest.raises(SchemaError, match="'pred_probs'.*sum to 1"):
        TemperatureScaling().fit([[0.5, 0.6]], [0])
    with pytest.raises(SchemaError, match="'logits'.*finite"):
        TemperatureScaling(kind="logits").fit([[np.inf, 0.0]], [0])
    fitted = TemperatureScaling().fit([[0.9, 0.1], [0.2, 0.8]], [0, 1])
    with pytest.raises(SchemaError, match="'pred_probs'.*2 classes, as in fit"):
        fitted.transform([[0.2, 0.3, 0.5]])


def test_ece_on_a_hand_computed_example() -> None:
    # Confidences 0.9, 0.9, 0.6, 0.6; right, wrong, right, right.
    probs = [[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]]
    labels = [0, 1, 1, 1]
    # Bin (0.8, 0.9]: confidence 0.9, accuracy 0.5; bin (0.5, 0.6]: confidence 0.6, accuracy 1.
    expected = 0.5 * abs(0.9 - 0.5) + 0.5 * abs(0.6 - 1.0)
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(expected)
    # One bin: |mean confidence - accuracy| = |0.75 - 0.75|.
    assert expected_calibration_error(probs, labels, n_bins=1) == pytest.approx(0.0)
    assert expected_calibration_error(probs, labels, n_bins=2, strategy="quantile") == pytest.approx(expected)


def test_reliability_table_layout_and_signs() -> None:
    probs = [[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]]
    table = reliability_table(probs, [0, 1, 1, 1], n_bins=10)
    assert list(table.columns) == [BIN_LOWER, BIN_UPPER, COUNT, MEAN_CONFIDENCE, ACCURACY, GAP]
    assert len(table) == 10 and table[COUNT].sum() == 4
    np.testing.assert_allclose(table[BIN_LOWER], np.arange(10) / 10, atol=1e-12)
    np.testing.assert_allclose(table[BIN_UPPER], np.arange(1, 11) / 10, atol=1e-12)
    filled = table[table[COUNT] > 0]
    np.testing.assert_allclose(filled[BIN_UPPER], [0.6, 0.9])
    # Under-confident bin: negative gap; over-confident bin: positive.
    np.testing.assert_allclose(filled[GAP], [-0.4, 0.4])
    assert table.loc[table[COUNT] == 0, [MEAN_CONFIDENCE, ACCURACY, GAP]].isna().all().all()


def test_bins_are_closed_on_the_right() -> None:
    table = reliability_table([[0.5, 0.5], [0.75, 0.25], [1.0, 0.0]], [0, 0, 0], n_bins=4)
    assert table[COUNT].tolist() == [0, 1, 1, 1]  # 0.5 in (0.25, 0.5], 0.75 in (0.5, 0.75]


def _naive_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> float:
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        inside = (confidence > lo) & (confidence <= hi) if b else (confidence <= hi)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return total


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 20), st.integers(2, 5))
def test_ece_matches_a_naive_loop(seed: int, n_bins: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(k, 0.4), size=60)
    labels = rng.integers(0, k, size=60)
    ece = expected_calibration_error(probs, labels, n_bins=n_bins)
    assert ece == pytest.approx(_naive_ece(probs, labels, n_bins), abs=1e-12)
    assert 0.0 <= ece <= 1.0
    quantile = reliability_table(probs, labels, n_bins=n_bins, strategy="quantile")
    assert quantile[COUNT].sum() == 60 and len(quantile) <= n_bins


def test_quantile_bins_hold_about_equal_counts(calibrated) -> None:
    probs, labels = calibrated
    table = reliability_table(probs, labels, n_bins=10, strategy="quantile")
    assert len(table) == 10
    assert table[COUNT].min() >= 0.95 * len(labels) / 10
    assert isinstance(table, pd.DataFrame)


def test_ece_bad_input() -> None:
    probs = [[0.9, 0.1], [0.2, 0.8]]
    with pytest.raises(SchemaError, match="'n_bins'"):
        expected_calibration_error(probs, [0, 1], n_bins=0)
    with pytest.raises(SchemaError, match="'strategy'.*uniform"):
        expected_calibration_error(probs, [0, 1], strategy="equal")
    with pytest.raises(SchemaError, match="'labels'"):
        reliability_table(probs, [0, 5])
    with pytest.raises(SchemaError, match="'pred_probs'"):
        reliability_table([[0.9, np.nan]], [0])


def test_calibrated_classifier_fills_missing_classes_and_applies_the_temperature() -> None:
    from sklearn.linear_model import LogisticRegression

    from loop.calibration import CalibratedClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))
    y = (x[:, 0] > 0).astype(int) * 2  # classes 0 and 2 only; class 1 never seen
    clf = LogisticRegression().fit(x, y)
    raw = np.zeros((300, 3))
    raw[:, [0, 2]] = clf.predict_proba(x)
    scaler = TemperatureScaling().fit(raw, y)
    model = CalibratedClassifier(clf, scaler, n_classes=3)
    probs = model.predict_proba(x)
    assert probs.shape == (300, 3) and np.allclose(probs.sum(axis=1), 1)
    assert np.allclose(probs, scaler.transform(raw))
    assert (model.predict(x) == probs.argmax(axis=1)).all() and model.temperature_ == scaler.temperature_
    with pytest.raises(SchemaError, match="'scaler'"):
        CalibratedClassifier(clf, TemperatureScaling().fit(clf.predict_proba(x), y // 2), n_classes=3)
    with pytest.raises(SchemaError, match="'estimator'"):
        CalibratedClassifier(object(), scaler, n_classes=3)
    with pytest.raises(NotFittedError):
        CalibratedClassifier(clf, TemperatureScaling(), n_classes=3)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(5, 200))
def test_the_temperature_interval_ends_where_the_likelihood_has_dropped_by_1_92(seed: int, n: int) -> None:
    gen = np.random.default_rng(seed)
    logits = gen.normal(0, 3, size=(n, 3))
    labels = np.array([gen.choice(3, p=p) for p in softmax(logits / 2.0, axis=1)])
    ts = TemperatureScaling(kind="logits").fit(logits, labels)

    def loglik(t: float) -> float:
        scaled = logits / t
        return float((scaled[np.arange(n), labels] - logsumexp(scaled, axis=1)).sum())

    assert ts.temperature_ <= ts.temperature_high_ <= 100 + 1e-9
    if ts.temperature_high_ < 99.99:
        assert loglik(ts.temperature_) - loglik(ts.temperature_high_) == pytest.approx(1.92, abs=1e-3)


def test_the_temperature_interval_covers_the_true_temperature() -> None:
    gen = np.random.default_rng(5)
    covered = 0
    for _ in range(200):
        logits = gen.normal(0, 3, size=(40, 4))
        labels = np.array([gen.choice(4, p=p) for p in softmax(logits / 2.0, axis=1)])
        covered += TemperatureScaling(kind="logits").fit(logits, labels).temperature_high_ >= 2.0
    # The upper end of a two-sided 95% interval: above the truth about 97.5% of the time.
    assert covered >= 0.94 * 200
