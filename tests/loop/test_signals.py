"""loop.signals: values on hand-made rows, ranges and invariants, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy as scipy_entropy

from loop.exceptions import SchemaError
from loop.signals import (
    entropy,
    least_confidence,
    margin,
    mean_kl_to_consensus,
    top_two,
    vote_entropy,
)

SINGLE = (least_confidence, margin, entropy)
COMMITTEE = (vote_entropy, mean_kl_to_consensus)


@st.composite
def prob_matrices(draw, *, max_items: int = 30, max_classes: int = 8) -> np.ndarray:
    n = draw(st.integers(1, max_items))
    k = draw(st.integers(2, max_classes))
    alpha = draw(st.sampled_from([0.05, 0.5, 1.0, 5.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).dirichlet(np.full(k, alpha), size=n)


@st.composite
def committees(draw) -> np.ndarray:
    m = draw(st.integers(1, 6))
    n = draw(st.integers(1, 20))
    k = draw(st.integers(2, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).dirichlet(np.full(k, 0.5), size=(m, n))


def test_values_on_hand_made_rows() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(least_confidence(probs), [0.3, 2 / 3, 0.0])
    np.testing.assert_allclose(margin(probs), [0.5, 0.0, 1.0], atol=1e-12)
    expected = -(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1))
    np.testing.assert_allclose(entropy(probs, normalize=False), [expected, np.log(3), 0.0])
    np.testing.assert_allclose(entropy(probs), [expected / np.log(3), 1.0, 0.0])


def test_top_two_breaks_ties_towards_the_lower_index() -> None:
    predicted, runner_up, gap = top_two([[0.1, 0.6, 0.3], [0.4, 0.2, 0.4], [0.25, 0.25, 0.5]])
    assert predicted.tolist() == [1, 0, 2]
    assert runner_up.tolist() == [2, 2, 0]
    np.testing.assert_allclose(gap, [0.3, 0.0, 0.25])
    assert predicted.dtype == np.int64 and runner_up.dtype == np.int64


@settings(max_examples=50, deadline=None)
@given(prob_matrices())
def test_single_model_scores_are_in_range_and_consistent(probs: np.ndarray) -> None:
    n, k = probs.shape
    for score in SINGLE:
        values = score(probs)
        assert values.shape == (n,)
        assert np.all((values >= 0) & (values <= 1))
    assert np.all(least_confidence(probs) <= 1 - 1 / k + 1e-12)
    predicted, runner_up, gap = top_two(probs)
    assert np.all(predicted != runner_up)
    rows = np.arange(n)
    np.testing.assert_allclose(least_confidence(probs), 1 - probs[rows, predicted])
    np.testing.assert_allclose(margin(probs), gap)
    assert np.all(probs[rows, runner_up] >= np.where(np.arange(k) == predicted[:, None], -1, probs).max(axis=1))
    np.testing.assert_allclose(entropy(probs, normalize=False), scipy_entropy(probs, axis=1), atol=1e-10)


@settings(max_examples=50, deadline=None)
@given(prob_matrices(), st.integers(0, 2**32 - 1))
def test_scores_do_not_depend_on_class_order(probs: np.ndarray, seed: int) -> None:
    perm = np.random.default_rng(seed).permutation(probs.shape[1])
    for score in SINGLE:
        np.testing.assert_allclose(score(probs[:, perm]), score(probs), atol=1e-12)


def test_more_peaked_rows_score_as_less_uncertain() -> None:
    probs = np.array([[0.4, 0.35, 0.25], [0.6, 0.3, 0.1], [0.9, 0.07, 0.03]])
    for uncertainty in (least_confidence, entropy):
        assert np.all(np.diff(uncertainty(probs)) < 0)
    assert np.all(np.diff(margin(probs)) > 0)  # margin is the gap: higher = more certain


def test_vote_entropy_counts_hard_votes() -> None:
    committee = np.array([
        [[0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.2, 0.3, 0.5]],
        [[0.8, 0.2, 0.0], [0.3, 0.7, 0.0], [0.1, 0.8, 0.1]],
        [[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.6, 0.2, 0.2]],
    ])
    # item 0: 3 votes for class 0; item 1: 2 vs 1; item 2: one vote each.
    raw = vote_entropy(committee, normalize=False)
    two_one = -(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3))
    np.testing.assert_allclose(raw, [0.0, two_one, np.log(3)])
    np.testing.assert_allclose(vote_entropy(committee), [0.0, two_one / np.log(3), 1.0])


def test_a_committee_of_one_never_disagrees() -> None:
    committee = np.random.default_rng(3).dirichlet(np.ones(4), size=(1, 10))
    for score in COMMITTEE:
        np.testing.assert_array_equal(score(committee), np.zeros(10))


def test_mean_kl_to_consensus_is_the_jensen_shannon_divergence_for_two_members() -> None:
    committee = np.random.default_rng(4).dirichlet(np.ones(5), size=(2, 50))
    js = jensenshannon(committee[0], committee[1], axis=1) ** 2  # scipy returns the distance
    np.testing.assert_allclose(mean_kl_to_consensus(committee, normalize=False), js, atol=1e-12)


def test_mean_kl_is_zero_for_agreement_and_one_for_total_disagreement() -> None:
    same = np.tile(np.array([[0.2, 0.5, 0.3]]), (4, 1, 1))
    np.testing.assert_allclose(mean_kl_to_consensus(same), [0.0], atol=1e-12)
    one_hot = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    np.testing.assert_allclose(mean_kl_to_consensus(one_hot), [1.0])
    np.testing.assert_allclose(vote_entropy(one_hot), [1.0])


@settings(max_examples=50, deadline=None)
@given(committees())
def test_committee_scores_are_in_range(committee: np.ndarray) -> None:
    for score in COMMITTEE:
        values = score(committee)
        assert values.shape == (committee.shape[1],)
        assert np.all((values >= 0) & (values <= 1))
    # Member order is irrelevant.
    reversed_ = committee[::-1]
    np.testing.assert_allclose(mean_kl_to_consensus(reversed_), mean_kl_to_consensus(committee), atol=1e-12)
    np.testing.assert_allclose(vote_entropy(reversed_), vote_entropy(committee))


@pytest.mark.parametrize("bad, fragment", [
    ([[0.5, 0.6]], "sum to 1"),
    ([[-0.1, 1.1]], "[0, 1]"),
    ([[np.nan, 1.0]], "finite"),
    ([0.5, 0.5], "2-D"),
    ([[1.0]], "2 classes"),
    ([["a", "b"]], "numeric"),
])
@pytest.mark.parametrize("score", SINGLE + (top_two,))
def test_single_model_scores_reject_bad_probabilities(score, bad, fragment: str) -> None:
    with pytest.raises(SchemaError, match="'pred_probs'") as info:
        score(bad)
    assert fragment in str(info.value)


@pytest.mark.parametrize("score", COMMITTEE)
def test_committee_scores_want_three_dimensions(score) -> None:
    with pytest.raises(SchemaError, match="'committee_probs' argument must be a 3-D array"):
        score([[0.5, 0.5]])
    with pytest.raises(SchemaError, match="'committee_probs'.*sum to 1"):
        score([[[0.5, 0.6]]])
