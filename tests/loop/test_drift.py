"""Drift statistics, the drift check, and the relabel queue (loop.drift)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from loop.columns import ITEM, LABEL, LABEL_ISSUE_SCORE, PRIORITY, REASON
from loop.drift import (PREDICTED, PRIOR_DECISION, DriftReference, DriftThresholds, PriorShift, blanket_queue,
                        class_shift, feature_psi, holm, ks_features, psi, quantile_edges, relabel_queue)
from loop.exceptions import NotFittedError, SchemaError

counts = st.lists(st.integers(0, 50), min_size=2, max_size=12).filter(lambda c: sum(c) > 0)


@given(counts, st.data())
@settings(max_examples=200, deadline=None)
def test_psi_is_non_negative_symmetric_and_zero_only_for_the_same_shares(a, data):
    b = data.draw(st.lists(st.integers(0, 50), min_size=len(a), max_size=len(a)).filter(lambda c: sum(c) > 0))
    assert psi(a, b) >= 0
    assert psi(a, b) == pytest.approx(psi(b, a), abs=1e-12)
    assert psi(a, a) == 0
    # Proportional counts of the same total smooth alike: zero.
    assert psi(a, [2 * v for v in a]) == pytest.approx(psi([2 * v for v in a], a), abs=1e-12)


@given(counts)
@settings(max_examples=100, deadline=None)
def test_psi_grows_as_one_bins_share_moves_further(a):
    base = np.asarray(a, dtype=float) + 1
    more, most = base.copy(), base.copy()
    more[0] += 10 * base.sum()
    most[0] += 100 * base.sum()
    assert psi(base, most) > psi(base, more) > 0


def test_psi_refuses_what_is_not_counts():
    with pytest.raises(SchemaError, match="'reference'"):
        psi([0, 0], [1, 1])
    with pytest.raises(SchemaError, match="'current'"):
        psi([1, 1], [1, 1, 1])
    with pytest.raises(SchemaError, match="'epsilon'"):
        psi([1, 1], [1, 1], epsilon=0)


@pytest.mark.filterwarnings("ignore:ks_2samp. Exact calculation unsuccessful")
@given(st.lists(st.floats(-100, 100), min_size=3, max_size=40), st.lists(st.floats(-100, 100), min_size=3,
                                                                         max_size=40))
@settings(max_examples=100, deadline=None)
def test_ks_agrees_with_scipy(a, b):
    table = ks_features(np.array(a)[:, None], np.array(b)[:, None])
    expected = stats.ks_2samp(a, b)
    assert table["statistic"].iloc[0] == pytest.approx(expected.statistic)
    assert table["p"].iloc[0] == pytest.approx(expected.pvalue)


@given(st.lists(st.floats(0, 1), min_size=1, max_size=20))
def test_holm_is_at_least_the_raw_p_at_most_bonferroni_and_keeps_their_order(p):
    p = np.array(p)
    adjusted = holm(p)
    assert (adjusted >= p - 1e-12).all()
    assert (adjusted <= np.minimum(1, p * p.size) + 1e-12).all()
    order = np.argsort(p, kind="stable")
    assert (np.diff(adjusted[order]) >= -1e-12).all()


def test_quantile_edges_of_a_discrete_feature_are_distinct():
    edges = quantile_edges(np.array([0, 0, 0, 0, 1, 1, 2, 16] * 10, dtype=float), 10)
    assert np.all(np.diff(edges) > 0)
    assert feature_psi(np.zeros((5, 1)), np.zeros((5, 1)))[0] == 0
    # Alike shares of windows of other sizes: near zero, not zero (each window's half-item smoothing).
    assert 0 < feature_psi(np.zeros((5, 1)), np.zeros((4, 1)))[0] < 0.01


def test_class_shift_reads_counts_and_tests_them():
    value, p, ref, cur = class_shift([0, 0, 1, 1], [0, 0, 0, 0], 3)
    assert value > 0 and 0 <= p <= 1
    assert ref.tolist() == [2, 2, 0] and cur.tolist() == [4, 0, 0]
    with pytest.raises(SchemaError, match="'current'"):
        class_shift([0, 1], [3], 3)


def _digits():
    from sklearn.datasets import load_digits

    return load_digits(return_X_y=True)


@pytest.fixture(scope="module")
def digits():
    return _digits()


def test_no_shift_raises_few_alarms_and_a_planted_one_is_always_caught(digits):
    x, y = digits
    alarms, caught = 0, 0
    for seed in range(20):
        order = np.random.default_rng(seed).permutation(len(y))
        ref, cur = order[:300], order[300:450]
        reference = DriftReference().fit(x[ref], y[ref], y[ref], n_classes=10)
        alarms += reference.check(x[cur], y[cur], y[cur]).alert
        shifted = x[cur].copy()
        shifted[:, 20] = np.minimum(shifted[:, 20] + 6, 16)  # one pixel darker
        report = reference.check(shifted, y[cur], y[cur])
        caught += any(f.name == "feature 20" for f in report.drifted)
    assert alarms <= 2  # the threshold's false alarm rate is a few percent (benchmarks/drift.py)
    assert caught == 20


def test_a_prior_shift_names_the_classes_that_moved(digits):
    x, y = digits
    rng = np.random.default_rng(3)
    ref = rng.permutation(len(y))[:300]
    many = rng.choice(np.flatnonzero(np.isin(y, [2, 7])), 100, replace=False)
    cur = np.concatenate([many, rng.choice(np.flatnonzero(~np.isin(y, [2, 7])), 50, replace=False)])
    report = DriftReference().fit(x[ref], y[ref], y[ref], n_classes=10).check(x[cur], y[cur], y[cur])
    labels = next(f for f in report.findings if f.kind == "label")
    assert labels.drifted and set(labels.moved) == {"2", "7"}
    assert labels.by == pytest.approx(labels.value / labels.threshold)
    assert "labels psi" in report.summary()
    assert report.to_dict()["label_psi"] == pytest.approx(labels.value)


def _mild_shift(x, y, rng, n):
    """``n`` digits whose classes 2 and 7 are each three times as likely as the others."""
    weight = np.where(np.isin(y, [2, 7]), 3.0, 1.0)
    return rng.choice(len(y), n, replace=False, p=weight / weight.sum())


def test_a_small_prior_shift_adds_up_since_the_reference(digits):
    """One round of 100 items of a mild shift stays under the threshold; the 300 since the
    reference pass the threshold scaled to their size (the same chi-square quantile)."""
    x, y = digits
    rng = np.random.default_rng(6)
    order = rng.permutation(len(y))
    ref, rest = order[:300], order[300:]
    since = rest[_mild_shift(x[rest], y[rest], rng, 300)]
    cur = since[-100:]
    reference = DriftReference().fit(x[ref], y[ref], y[ref], n_classes=10)
    alone = reference.check(x[cur], y[cur], y[cur])
    assert not any(f.kind in ("prediction", "label") for f in alone.drifted)
    report = reference.check(x[cur], y[cur], y[cur], since=(y[since], y[since]))
    later = {f.name: f for f in report.findings if f.name.endswith("since the reference")}
    assert set(later) == {"predicted classes since the reference", "labels since the reference"}
    assert later["labels since the reference"].threshold == pytest.approx(0.3 * (1 / 300 + 1 / 300) / (1 / 300 + 1 / 100))
    assert later["labels since the reference"].drifted and set(later["labels since the reference"].moved) >= {"2", "7"}
    # The current window alone as "since": nothing added (the same evidence twice is no more).
    same = reference.check(x[cur], y[cur], y[cur], since=(y[cur], y[cur]))
    assert len(same.findings) == len(alone.findings)


def test_the_since_window_alarms_about_as_rarely_as_one_round(digits):
    x, y = digits
    alarms = 0
    for seed in range(30):
        order = np.random.default_rng([seed, 43]).permutation(len(y))
        ref, since = order[:300], order[300:700]
        report = DriftReference().fit(x[ref], y[ref], y[ref], n_classes=10).check(
            x[since[-100:]], y[since[-100:]], y[since[-100:]], since=(y[since], y[since]))
        alarms += any(f.name.endswith("since the reference") for f in report.drifted)
    assert alarms <= 2  # each of the two views at about 1% (benchmarks/drift.py measures it over more)


def test_the_since_window_checks_its_input(digits):
    x, y = digits
    reference = DriftReference().fit(x[:300], y[:300], y[:300], n_classes=10)
    with pytest.raises(SchemaError, match="'since'"):
        reference.check(x[300:400], y[300:400], y[300:400], since=y[300:500])
    with pytest.raises(SchemaError, match="'since'"):
        reference.check(x[300:400], y[300:400], y[300:400], since=(y[300:350], y[300:350]))
    with pytest.raises(SchemaError, match="'since'"):
        reference.check(x[300:400], y[300:400], y[300:400], since=(y[300:500], y[300:450]))


# --- the prior shift -------------------------------------------------------------------------------


def _posteriors(prior, n, rng, centers=(0.0, 1.5, 3.0)):
    """Items of three classes on a line (unit normal around each center) and their posterior
    under a uniform prior: calibrated for a uniform reference, stale for any other prior."""
    y = rng.choice(3, n, p=prior)
    z = rng.normal(np.asarray(centers)[y], 1.0)
    like = stats.norm.pdf(z[:, None], loc=np.asarray(centers)[None, :])
    return like / like.sum(axis=1, keepdims=True), y


probs3 = st.lists(st.lists(st.floats(0.01, 1.0), min_size=3, max_size=3), min_size=1, max_size=30).map(
    lambda rows: (lambda a: a / a.sum(axis=1, keepdims=True))(np.array(rows)))


@given(probs3, probs3)
@settings(max_examples=100, deadline=None)
def test_the_prior_is_a_distribution_and_corrected_rows_sum_to_one(ref, cur):
    shift = PriorShift().fit(ref, cur)
    assert shift.prior_.min() >= 0 and shift.prior_.sum() == pytest.approx(1.0)
    assert shift.reference_prior_.sum() == pytest.approx(1.0)
    corrected = shift.correct(cur)
    assert corrected.min() >= 0 and np.allclose(corrected.sum(axis=1), 1.0)
    # The EM's fixed point, once it converged (towards a class of share 0 it crawls): the
    # corrected probabilities' mean is the estimated prior.
    if shift.n_iter_ < shift.max_iter:
        assert np.allclose(corrected.mean(axis=0), shift.prior_, atol=1e-4)


@given(probs3)
@settings(max_examples=100, deadline=None)
def test_no_shift_no_correction(probs):
    shift = PriorShift().fit(probs, probs)
    assert np.allclose(shift.weights_, 1.0) and shift.n_iter_ == 1
    assert np.allclose(shift.correct(probs), probs)


def test_em_recovers_a_planted_prior_that_the_argmax_counts_miss():
    rng = np.random.default_rng(0)
    ref, _ = _posteriors([1 / 3, 1 / 3, 1 / 3], 3000, rng)
    cur, y = _posteriors([0.6, 0.3, 0.1], 3000, rng)
    shift = PriorShift().fit(ref, cur)
    assert np.abs(shift.prior_ - [0.6, 0.3, 0.1]).max() < 0.03
    counted = np.bincount(cur.argmax(axis=1), minlength=3) / len(cur)
    assert np.abs(counted - [0.6, 0.3, 0.1]).max() > 0.05  # the classes' overlap blurs the counts
    # The corrected posterior decides more items right: the stale prior tipped them.
    assert (shift.correct(cur).argmax(axis=1) == y).mean() > (cur.argmax(axis=1) == y).mean() + 0.02
    assert shift.summary().startswith("class 0 33% -> 61%; class 2")


def test_the_prior_shift_checks_its_input():
    with pytest.raises(NotFittedError):
        PriorShift().correct([[0.5, 0.5]])
    with pytest.raises(SchemaError, match="'current_probs'"):
        PriorShift().fit([[0.5, 0.5]], [[0.2, 0.3, 0.5]])
    with pytest.raises(SchemaError, match="'reference_probs'"):
        PriorShift().fit([[0.5, 0.6]], [[0.5, 0.5]])
    with pytest.raises(SchemaError, match="'max_iter'"):
        PriorShift(max_iter=0).fit([[0.5, 0.5]], [[0.5, 0.5]])
    with pytest.raises(SchemaError, match="'probs'"):
        PriorShift().fit([[0.5, 0.5]], [[0.5, 0.5]]).correct([[0.2, 0.3, 0.5]])


def test_continuous_features_are_ks_tested_with_holm():
    rng = np.random.default_rng(0)
    ref, cur = rng.normal(size=(300, 4)), rng.normal(size=(150, 4))
    cur[:, 2] += 0.8
    reference = DriftReference().fit(ref, np.zeros(300, int), np.zeros(300, int), n_classes=2)
    assert reference.continuous_.tolist() == [0, 1, 2, 3]
    ks = [f for f in reference.check(cur, np.zeros(150, int), np.zeros(150, int)).findings if f.kind == "ks"]
    assert [f.name for f in ks if f.drifted] == ["feature 2"]


def test_a_new_subpopulation_shows_as_novel_arrivals(digits):
    x, y = digits
    order = np.random.default_rng(5).permutation(len(y))
    ref, cur = order[:300], order[300:420]
    new = x[cur].copy()
    new[:40] = new[:40].reshape(-1, 8, 8)[:, :, ::-1].reshape(-1, 64)  # mirrored digits: a new look
    report = DriftReference().fit(x[ref], y[ref], y[ref], n_classes=10).check(new, y[cur], y[cur])
    assert any(f.kind == "novelty" for f in report.drifted)
    # A blunt instrument in 64 dimensions (a fifth of the mirrored digits are novel), but a sharp test.
    assert report.novel[:40].mean() > report.novel[40:].mean() + 0.1


def test_the_reference_checks_its_input():
    with pytest.raises(NotFittedError):
        DriftReference().check(np.zeros((3, 2)), [0, 0, 0], [0, 0, 0])
    with pytest.raises(SchemaError, match="'x'"):
        DriftReference().fit(np.zeros((3, 2)), [0, 0, 0], [0, 0, 0], n_classes=2)  # too few for 5 neighbours
    reference = DriftReference().fit(np.random.default_rng(0).normal(size=(20, 2)), np.zeros(20, int),
                                     np.zeros(20, int), n_classes=2)
    with pytest.raises(SchemaError, match="'labels'"):
        reference.check(np.zeros((3, 2)), [0, 0, 0], [0, 5, 0])
    with pytest.raises(SchemaError, match="'current'"):
        reference.check(np.zeros((3, 3)), [0, 0, 0], [0, 0, 0])
    with pytest.raises(SchemaError, match="'ks_alpha'"):
        DriftThresholds(ks_alpha=1.0)


# --- the relabel queue -----------------------------------------------------------------------------


def _pool(x, labels, predicted, issue):
    return pd.DataFrame({ITEM: [f"i{k}" for k in range(len(labels))], LABEL: labels, PREDICTED: predicted,
                         LABEL_ISSUE_SCORE: issue})


def test_the_queue_takes_the_moved_bins_items_ranked_within_the_budget():
    rng = np.random.default_rng(1)
    ref = rng.uniform(0, 1, size=(400, 2))
    cur = rng.uniform(0, 1, size=(150, 2))
    cur[:, 0] = rng.uniform(0.8, 1.0, size=150)  # feature 0 piles into its top bins
    reference = DriftReference().fit(ref, np.zeros(400, int), np.zeros(400, int), n_classes=2)
    report = reference.check(cur, np.zeros(150, int), np.zeros(150, int))
    pool_x = rng.uniform(0, 1, size=(200, 2))
    issue = rng.uniform(size=200)
    pool = _pool(pool_x, np.zeros(200, int), np.zeros(200, int), issue)
    queue = relabel_queue(report, reference, pool, pool_x, cur, max_items=7)
    assert list(queue.columns) == [ITEM, REASON, PRIORITY] and len(queue) == 7
    taken = pool.set_index(ITEM).loc[queue[ITEM]]
    assert (pool_x[pool[ITEM].isin(queue[ITEM]).to_numpy(), 0] >= 0.8 - 1e-9).all()  # the moved bins only
    assert queue[PRIORITY].is_monotonic_decreasing
    # Within the region, the most doubtful labels first.
    region = pool_x[:, 0] >= reference.edges_[0][-2]
    assert taken[LABEL_ISSUE_SCORE].min() >= np.sort(issue[region])[-7] - 1e-12
    assert queue[REASON].str.contains(r"feature 0 bin \[").all()
    assert queue[REASON].str.contains("moved").all()
    assert relabel_queue(report, reference, pool, pool_x, cur, max_items=0).empty


def test_the_queue_of_a_class_shift_and_of_novel_arrivals():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(300, 3))
    cur = np.vstack([rng.normal(size=(40, 3)), rng.normal(loc=8.0, size=(60, 3))])  # a new cluster
    reference = DriftReference().fit(ref, rng.integers(0, 3, 300), rng.integers(0, 3, 300), n_classes=3)
    predicted = np.r_[rng.integers(0, 3, 40), np.full(60, 2)]
    report = reference.check(cur, predicted, predicted)
    kinds = {f.kind for f in report.drifted}
    assert {"novelty", "prediction"} <= kinds
    pool_x = np.vstack([rng.normal(size=(50, 3)), cur[40:]])  # the new cluster's items are labelled
    pool = _pool(pool_x, np.r_[rng.integers(0, 2, 50), np.full(60, 2)], np.r_[rng.integers(0, 2, 50), np.full(60, 2)],
                 np.zeros(110))
    queue = relabel_queue(report, reference, pool, pool_x, cur, max_items=30)
    assert len(queue) == 30
    assert queue[ITEM].isin(pool[ITEM].iloc[50:]).all()  # the cluster's items first: they match most views
    assert queue[REASON].str.contains("new arrivals unlike the reference").all()
    assert queue[REASON].str.contains("class 2").all()


def test_the_queue_of_a_class_shift_takes_the_labels_the_reestimated_prior_overturns():
    rng = np.random.default_rng(6)
    ref = rng.normal(size=(300, 3))
    reference = DriftReference().fit(ref, rng.integers(0, 3, 300), rng.integers(0, 3, 300), n_classes=3)
    predicted = np.where(rng.random(100) < 0.7, 2, rng.integers(0, 3, 100))
    report = reference.check(rng.normal(size=(100, 3)), predicted, predicted)
    assert report.alert and {f.kind for f in report.drifted} <= {"prediction", "label"}
    pool_x = rng.normal(size=(60, 3))
    labels = np.zeros(60, int)  # all labelled 0, which did not rise; the model agrees
    pool = _pool(pool_x, labels, labels, np.full(60, 0.2)).assign(**{PRIOR_DECISION: -1})
    pool.loc[[5, 17], PRIOR_DECISION] = 2  # the corrected posterior decides 2 for these two
    pool.loc[[8], PRIOR_DECISION] = 0  # re-estimated and kept
    pool.loc[[30, 31], [LABEL, PREDICTED]] = 2  # labelled as the class that rose: what the prior confirms
    queue = relabel_queue(report, reference, pool, pool_x, rng.normal(size=(100, 3)), max_items=5)
    assert sorted(queue[ITEM]) == ["i17", "i5"]
    assert queue[REASON].str.contains("the re-estimated class prior decides 2, not its label 0").all()
    # Without the estimate, the items of the class that rose are the region.
    plain = relabel_queue(report, reference, pool.drop(columns=[PRIOR_DECISION]), pool_x, rng.normal(size=(100, 3)),
                          max_items=5)
    assert sorted(plain[ITEM]) == ["i30", "i31"]


def test_no_drift_no_queue_and_the_queue_checks_its_input():
    rng = np.random.default_rng(4)
    ref = rng.normal(size=(300, 2))
    reference = DriftReference().fit(ref, np.zeros(300, int), np.zeros(300, int), n_classes=2)
    cur = rng.normal(size=(100, 2))
    report = reference.check(cur, np.zeros(100, int), np.zeros(100, int))
    assert not report.alert and report.summary().startswith("no drift")
    pool = _pool(ref[:10], np.zeros(10, int), np.zeros(10, int), np.ones(10))
    assert relabel_queue(report, reference, pool, ref[:10], cur, max_items=5).empty
    with pytest.raises(SchemaError, match="'pool'"):
        relabel_queue(report, reference, pool.drop(columns=[PREDICTED]), ref[:10], cur, max_items=5)
    with pytest.raises(SchemaError, match="'pool_x'"):
        relabel_queue(report, reference, pool, ref[:9], cur, max_items=5)
    with pytest.raises(SchemaError, match="'max_items'"):
        relabel_queue(report, reference, pool, ref[:10], cur, max_items=-1)


def test_the_blanket_queue_draws_uniformly_within_the_budget():
    pool = pd.DataFrame({ITEM: [f"i{k}" for k in range(100)]})
    first = blanket_queue(pool, max_items=10, rng=np.random.default_rng(0))
    assert len(first) == 10 and first[ITEM].is_unique
    assert first[ITEM].tolist() == blanket_queue(pool, max_items=10, rng=np.random.default_rng(0))[ITEM].tolist()
    draws = pd.concat([blanket_queue(pool, max_items=10, rng=np.random.default_rng(s)) for s in range(200)])
    share = draws[ITEM].value_counts(normalize=True)
    assert share.size == 100 and share.max() < 0.02  # every item, none favoured (1% each)


@given(st.floats(1e-12, 1.0, exclude_max=True), st.floats(1e-6, 0.5), st.sampled_from(["psi", "binomial_p"]))
def test_by_is_past_one_exactly_when_the_finding_drifted(value, threshold, statistic):
    from loop.drift import DriftFinding

    value = value * 5 if statistic == "psi" else value
    drifted = value > threshold if statistic == "psi" else value < threshold
    finding = DriftFinding("x", "x", statistic, value, threshold, drifted)
    if value != threshold:
        assert (finding.by > 1) == drifted
