"""Tests for loop.simulate: simulated annotators, guidelines and the fit to real crowds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from loop.agreement import annotator_accuracy, krippendorff_alpha
from loop.columns import ACCURACY, ANNOTATOR, COST, ITEM, LABEL, SECONDS
from loop.exceptions import SchemaError
from loop.simulate import (
    DEFAULT_PROFILES,
    Annotator,
    CrowdProfile,
    Guideline,
    SimulatedCrowd,
    Tier,
    TierProfile,
    annotator_confusions,
    confusability_from_confusion,
    confusability_from_probs,
    crowd_like,
    draw_item_difficulty,
    fit_crowd_profile,
    make_crowd,
    uniform_confusability,
)

K = 4
# Errors on class 0 go to 1 and back, errors on 2 go to 3 and back.
PAIRS = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=float)


def confused_profiles(share: float = 1.0) -> dict[Tier, TierProfile]:
    return {tier: TierProfile(p.accuracy_mean, p.accuracy_std, p.seconds_median, cost_per_hour=p.cost_per_hour,
                              confusable_share=share)
            for tier, p in DEFAULT_PROFILES.items()}


def truth(n: int, k: int = K) -> np.ndarray:
    return np.arange(n) % k


def off_diagonal_counts(frame: pd.DataFrame, true_labels: np.ndarray, k: int = K) -> np.ndarray:
    counts = np.zeros((k, k))
    np.add.at(counts, (true_labels[frame[ITEM].to_numpy()], frame[LABEL].to_numpy()), 1)
    return counts


# --- where errors go ----------------------------------------------------------------------------

def test_uniform_confusability_spreads_errors_evenly():
    q = uniform_confusability(3)
    np.testing.assert_allclose(q, [[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])


def test_confusability_from_probs_finds_the_confused_pair():
    y = truth(400)
    probs = np.full((400, K), 0.02)
    probs[np.arange(400), y] = 0.8
    partner = np.array([1, 0, 3, 2])[y]
    probs[np.arange(400), partner] += 0.14
    q = confusability_from_probs(probs / probs.sum(axis=1, keepdims=True), y)
    np.testing.assert_allclose(q.sum(axis=1), 1)
    np.testing.assert_allclose(np.diag(q), 0)
    assert (q.argmax(axis=1) == [1, 0, 3, 2]).all()
    assert q[0, 1] > 0.7


def test_confusability_of_a_never_confused_or_absent_class_is_uniform():
    q = confusability_from_confusion([[5, 0, 0], [1, 4, 0], [0, 0, 0]])
    np.testing.assert_allclose(q[0], [0, 0.5, 0.5])
    np.testing.assert_allclose(q[1], [1, 0, 0])
    np.testing.assert_allclose(q[2], [0.5, 0.5, 0])


@settings(max_examples=50, deadline=None)
@given(acc=st.lists(st.floats(0, 1), min_size=1, max_size=5), share=st.floats(0, 1),
       seed=st.integers(0, 2**16))
def test_annotator_confusions_are_row_stochastic_with_the_accuracy_on_the_diagonal(acc, share, seed):
    q = confusability_from_confusion(np.random.default_rng(seed).random((K, K)))
    c = annotator_confusions(acc, q, confusable_share=share)
    assert c.shape == (len(acc), K, K)
    np.testing.assert_allclose(c.sum(axis=2), 1, atol=1e-12)
    assert c.min() >= 0
    np.testing.assert_allclose(np.diagonal(c, axis1=1, axis2=2), np.repeat(np.array(acc)[:, None], K, axis=1))


def test_class_difficulty_lowers_the_accuracy_of_hard_classes_only():
    c = annotator_confusions([0.8], PAIRS, class_difficulty=[0, -1.0, 0, 1.0])[0]
    assert c[0, 0] == pytest.approx(0.8)
    assert c[1, 1] < 0.8 < c[3, 3]


# --- tiers and crowds ---------------------------------------------------------------------------

def test_make_crowd_is_deterministic_given_the_seed():
    a = make_crowd({Tier.NOVICE: 5, Tier.EXPERT: 2}, K, confusability=PAIRS, rng=3)
    b = make_crowd({Tier.EXPERT: 2, Tier.NOVICE: 5}, K, confusability=PAIRS, rng=3)
    c = make_crowd({Tier.NOVICE: 5, Tier.EXPERT: 2}, K, confusability=PAIRS, rng=4)
    np.testing.assert_array_equal(a.confusion, b.confusion)
    assert a.ids.tolist() == b.ids.tolist()
    assert not np.array_equal(a.confusion, c.confusion)


def test_ask_is_deterministic_given_the_rng():
    crowd = make_crowd({Tier.NOVICE: 6}, K, rng=0)
    first = crowd.ask(truth(50), labels_per_item=3, rng=np.random.default_rng(7))
    again = crowd.ask(truth(50), labels_per_item=3, rng=np.random.default_rng(7))
    other = crowd.ask(truth(50), labels_per_item=3, rng=np.random.default_rng(8))
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)


def test_experts_are_more_accurate_than_experienced_than_novices():
    crowd = make_crowd({Tier.NOVICE: 10, Tier.EXPERIENCED: 10, Tier.EXPERT: 10}, K, confusability=PAIRS, rng=0)
    y = truth(2000)
    accuracy = {}
    for tier in Tier:
        out = crowd.ask(y, tier=tier, rng=1)
        assert set(out[ANNOTATOR]) <= set(crowd.members(tier))
        accuracy[tier] = (out[LABEL].to_numpy() == y[out[ITEM]]).mean()
    assert accuracy[Tier.EXPERT] > accuracy[Tier.EXPERIENCED] > accuracy[Tier.NOVICE]
    for tier in Tier:
        assert accuracy[tier] == pytest.approx(DEFAULT_PROFILES[tier].accuracy_mean, abs=0.05)


def test_errors_land_on_the_confusable_pairs_in_proportion_to_the_share():
    y = truth(4000)
    for share in (1.0, 0.6):
        crowd = make_crowd({Tier.NOVICE: 20}, K, confusability=PAIRS, profiles=confused_profiles(share), rng=0)
        counts = off_diagonal_counts(crowd.ask(y, labels_per_item=2, rng=1), y)
        errors = counts.sum() - np.trace(counts)
        on_pairs = (counts * PAIRS).sum() / errors
        # s of the errors follow Q; of the uniform rest, 1 / (k - 1) land on the partner anyway.
        expected = share + (1 - share) / (K - 1)
        assert on_pairs == pytest.approx(expected, abs=0.03)


def test_a_tier_can_hold_spammers_who_answer_at_random():
    sloppy = {Tier.NOVICE: TierProfile(0.8, 0.05, 20.0, spammer_share=0.5)}
    crowd = make_crowd({Tier.NOVICE: 40}, K, profiles=sloppy, rng=0)
    random_rows = np.isclose(crowd.confusion, 1 / K).all(axis=(1, 2))
    assert 10 <= random_rows.sum() <= 30
    assert (crowd.accuracy[~random_rows] > 0.6).all()
    plain = make_crowd({Tier.NOVICE: 40}, K, rng=0)
    assert not np.isclose(plain.confusion, 1 / K).all(axis=(1, 2)).any()


def test_labels_follow_the_annotators_confusion_matrix():
    row = np.array([0.6, 0.25, 0.1, 0.05])
    matrix = np.vstack([row, np.roll(row, 1), np.roll(row, 2), np.roll(row, 3)])
    crowd = SimulatedCrowd((Annotator("a", Tier.NOVICE, matrix),))
    y = np.zeros(20_000, dtype=int)
    out = crowd.annotate(pd.DataFrame({ITEM: np.arange(y.size), ANNOTATOR: "a"}), y, rng=0)
    freq = np.bincount(out[LABEL], minlength=K) / y.size
    np.testing.assert_allclose(freq, row, atol=0.01)


def test_seconds_and_cost_are_positive_and_priced_by_the_hour():
    crowd = make_crowd({Tier.NOVICE: 4, Tier.EXPERT: 4}, K, rng=0)
    out = crowd.ask(truth(3000), labels_per_item=2, rng=1)
    assert (out[SECONDS] > 0).all() and (out[COST] > 0).all()
    rate = out[ANNOTATOR].map({a.annotator_id: a.cost_per_hour for a in crowd.annotators})
    np.testing.assert_allclose(out[COST], out[SECONDS] / 3600 * rate)
    by_tier = out.groupby(out[ANNOTATOR].str.split("-").str[0])[SECONDS].median()
    assert by_tier["novice"] == pytest.approx(DEFAULT_PROFILES[Tier.NOVICE].seconds_median, rel=0.35)
    assert by_tier["expert"] == pytest.approx(DEFAULT_PROFILES[Tier.EXPERT].seconds_median, rel=0.35)
    cost_per_item = out.groupby(out[ANNOTATOR].str.split("-").str[0])[COST].mean()
    assert cost_per_item["expert"] > cost_per_item["novice"]


def test_assign_picks_distinct_annotators_and_respects_tier_and_exclusions():
    crowd = make_crowd({Tier.NOVICE: 5, Tier.EXPERT: 3}, K, rng=0)
    items = [f"doc-{i}" for i in range(200)]
    first = crowd.assign(items, 2, tier=Tier.NOVICE, rng=1)
    assert len(first) == 400 and not first.duplicated([ITEM, ANNOTATOR]).any()
    assert first[ITEM].tolist()[::2] == items
    second = crowd.assign(items, 3, tier="novice", exclude=first, rng=2)
    assert not second.merge(first, on=[ITEM, ANNOTATOR]).shape[0]
    assert set(second[ANNOTATOR]) <= set(crowd.members(Tier.NOVICE))
    varying = crowd.assign(items[:3], np.array([0, 1, 8]), rng=3)
    assert varying.groupby(ITEM).size().to_dict() == {"doc-1": 1, "doc-2": 8}
    # Uniform over the pool: every novice gets about the same share.
    shares = crowd.assign(np.arange(5000), 1, tier=Tier.NOVICE, rng=4)[ANNOTATOR].value_counts(normalize=True)
    np.testing.assert_allclose(shares, 0.2, atol=0.03)


@settings(max_examples=50, deadline=None)
@given(counts=st.lists(st.integers(0, 3), min_size=1, max_size=30), seed=st.integers(0, 2**16))
def test_assign_gives_each_item_its_count_of_distinct_fresh_annotators(counts, seed):
    crowd = make_crowd({Tier.NOVICE: 6}, 3, rng=0)
    items = np.arange(len(counts))
    earlier = crowd.assign(items, 2, rng=seed)
    picked = crowd.assign(items, np.array(counts), exclude=earlier, rng=seed + 1)
    assert picked.groupby(ITEM).size().reindex(items, fill_value=0).tolist() == counts
    assert not picked.duplicated([ITEM, ANNOTATOR]).any()
    assert picked.merge(earlier, on=[ITEM, ANNOTATOR]).empty


def test_double_blind_then_expert_adjudication():
    """The pattern of the experiments: two novices blind, then an expert on disagreements."""
    crowd = make_crowd({Tier.NOVICE: 8, Tier.EXPERT: 2}, K, confusability=PAIRS, rng=0)
    y = pd.Series(truth(300), index=[f"i{j}" for j in range(300)])
    blind = crowd.ask(y, tier=Tier.NOVICE, labels_per_item=2, rng=1)
    split = blind.groupby(ITEM)[LABEL].nunique()
    disputed = y[split[split > 1].index]
    adjudicated = crowd.ask(disputed, tier=Tier.EXPERT, exclude=blind, rng=2)
    assert set(adjudicated[ITEM]) == set(disputed.index)
    assert (adjudicated[LABEL].to_numpy() == disputed[adjudicated[ITEM]].to_numpy()).mean() > 0.85


# --- guidelines ---------------------------------------------------------------------------------

@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**16), factor=st.floats(0, 1), a=st.integers(0, K - 1), b=st.integers(0, K - 1))
def test_guideline_moves_the_pair_confusion_to_the_diagonal_and_nothing_else(seed, factor, a, b):
    assume(a != b)
    rng = np.random.default_rng(seed)
    c = rng.dirichlet(np.ones(K), size=K)
    new = Guideline("v2", {(a, b): factor}).apply(c)
    np.testing.assert_allclose(new.sum(axis=1), 1)
    assert new[a, b] == pytest.approx((1 - factor) * c[a, b])
    assert new[b, a] == pytest.approx((1 - factor) * c[b, a])
    assert new[a, a] == pytest.approx(c[a, a] + factor * c[a, b])
    untouched = np.ones((K, K), dtype=bool)
    untouched[[a, b, a, b], [b, a, a, b]] = False
    np.testing.assert_array_equal(new[untouched], c[untouched])


def test_guideline_reduces_confusions_on_its_pair_by_about_the_factor():
    crowd = make_crowd({Tier.NOVICE: 20}, K, confusability=PAIRS, profiles=confused_profiles(0.8), rng=0)
    y = truth(8000)
    assignment = crowd.assign(np.arange(y.size), 3, rng=1)
    before = off_diagonal_counts(crowd.annotate(assignment, y, rng=2), y)
    after = off_diagonal_counts(crowd.annotate(assignment, y, guideline=Guideline("v2", {(1, 0): 0.5}), rng=2), y)
    pair = before[0, 1] + before[1, 0]
    assert (after[0, 1] + after[1, 0]) / pair == pytest.approx(0.5, abs=0.06)
    assert (after[2, 3] + after[3, 2]) / (before[2, 3] + before[3, 2]) == pytest.approx(1, abs=0.06)
    assert after[0, 0] + after[1, 1] > before[0, 0] + before[1, 1]


def test_guideline_keys_are_unordered_pairs():
    assert dict(Guideline("v3", {(5, 3): 0.2}).fixes) == {(3, 5): 0.2}


# --- item difficulty ----------------------------------------------------------------------------

def test_hard_items_are_hard_for_every_tier_and_random_answers_do_not_care():
    spammer = Annotator("spam", Tier.NOVICE, np.full((K, K), 1 / K))
    crowd = SimulatedCrowd(make_crowd({Tier.NOVICE: 5, Tier.EXPERT: 5}, K, rng=0).annotators + (spammer,))
    y = pd.Series(truth(4000))
    hard = pd.Series(3.0, index=y.index)
    assignment = crowd.assign(y.index, len(crowd), rng=1)

    def accuracy(frame):
        hit = frame[LABEL].to_numpy() == y[frame[ITEM]].to_numpy()
        return pd.Series(hit).groupby(frame[ANNOTATOR].str.split("-").str[0].to_numpy()).mean()

    easy_acc = accuracy(crowd.annotate(assignment, y, rng=2))
    hard_acc = accuracy(crowd.annotate(assignment, y, difficulty=hard, rng=2))
    assert hard_acc["novice"] < easy_acc["novice"] - 0.2
    assert hard_acc["expert"] < easy_acc["expert"] - 0.1
    assert hard_acc["spam"] == pytest.approx(0.25, abs=0.03)
    same = crowd.annotate(assignment, y, difficulty=pd.Series(0.0, index=y.index), rng=2)
    pd.testing.assert_frame_equal(same, crowd.annotate(assignment, y, rng=2))


def test_draw_item_difficulty_has_the_requested_spread():
    d = draw_item_difficulty(np.arange(20_000), 1.5, rng=0)
    assert d.std() == pytest.approx(1.5, rel=0.03)
    assert d.index.tolist()[:3] == [0, 1, 2]


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: Annotator("a", Tier.NOVICE, [[0.9, 0.2], [0.1, 0.9]]),          # rows do not sum to 1
    lambda: Annotator("a", Tier.NOVICE, [[1.2, -0.2], [0.1, 0.9]]),         # negative probability
    lambda: Annotator("a", Tier.NOVICE, np.eye(3)[:2]),                     # not square
    lambda: Annotator("a", "wizard", np.eye(2)),                            # unknown tier
    lambda: make_crowd({"wizard": 3}, K, rng=0),                            # unknown tier
    lambda: make_crowd({Tier.NOVICE: -1}, K, rng=0),                        # negative count
    lambda: make_crowd({Tier.NOVICE: 0}, K, rng=0),                         # nobody
    lambda: make_crowd({Tier.NOVICE: 2}, K, confusability=np.eye(K), rng=0),  # errors on the diagonal
    lambda: make_crowd({Tier.NOVICE: 2}, K, confusability=PAIRS[:2], rng=0),  # wrong shape
    lambda: make_crowd({Tier.NOVICE: 2}, K, rng=None),                      # no rng
    lambda: TierProfile(accuracy_mean=1.2, accuracy_std=0.1, seconds_median=10),
    lambda: TierProfile(accuracy_mean=0.8, accuracy_std=0.5, seconds_median=10),
    lambda: TierProfile(accuracy_mean=0.8, accuracy_std=0.1, seconds_median=-1),
    lambda: Guideline("v2", {(1, 1): 0.5}),
    lambda: Guideline("v2", {(0, 1): 1.5}),
    lambda: Guideline("v2", {(0, 1): 0.5, (1, 0): 0.2}),
    lambda: Guideline("", {}),
    lambda: Guideline("v2", {(0, 9): 0.5}).apply(np.eye(3)),
    lambda: SimulatedCrowd((Annotator("a", Tier.NOVICE, np.eye(2)), Annotator("a", Tier.NOVICE, np.eye(2)))),
    lambda: SimulatedCrowd((Annotator("a", Tier.NOVICE, np.eye(2)), Annotator("b", Tier.NOVICE, np.eye(3)))),
])
def test_bad_configuration_raises_schema_error(make):
    with pytest.raises(SchemaError, match="argument must be"):
        make()


def test_unknown_tier_error_lists_the_valid_ones():
    with pytest.raises(SchemaError, match="novice.*experienced.*expert"):
        make_crowd({"wizard": 3}, K, rng=0)


@pytest.fixture
def crowd():
    return make_crowd({Tier.NOVICE: 3, Tier.EXPERT: 1}, K, rng=0)


@pytest.mark.parametrize("call", [
    lambda c: c.ask(truth(10), labels_per_item=5, rng=0),                       # more than the pool
    lambda c: c.ask(truth(10), tier=Tier.EXPERIENCED, rng=0),                     # tier not in crowd
    lambda c: c.ask(truth(10), labels_per_item=-1, rng=0),                      # negative count
    lambda c: c.ask([0, 1, 4], rng=0),                                          # label outside classes
    lambda c: c.ask([0.5, 1], rng=0),                                           # not integers
    lambda c: c.assign([1, 1], rng=0),                                          # duplicate items
    lambda c: c.annotate(pd.DataFrame({ITEM: [0], ANNOTATOR: ["nobody"]}), [1], rng=0),
    lambda c: c.annotate(pd.DataFrame({ITEM: [7], ANNOTATOR: ["novice-00"]}), [1], rng=0),
    lambda c: c.annotate(pd.DataFrame({ITEM: [0, 0], ANNOTATOR: ["novice-00"] * 2}), [1], rng=0),
    lambda c: c.annotate(pd.DataFrame({ITEM: [0]}), [1], rng=0),
    lambda c: c.ask(truth(3), difficulty=pd.Series([np.nan, 0, 0]), rng=0),
    lambda c: c.ask(truth(3), guideline={(0, 1): 0.5}, rng=0),
])
def test_bad_calls_raise_schema_error(crowd, call):
    with pytest.raises(SchemaError, match="argument must be"):
        call(crowd)


# --- fitting a profile and mimicking a crowd ----------------------------------------------------

def synthetic_crowd(seed: int = 0):
    """60 workers of varied skill and 6 spammers, 8 labels on each of 1,500 items of varied
    difficulty (sd 0.8)."""
    rng = np.random.default_rng(seed)
    workers = make_crowd({Tier.NOVICE: 40, Tier.EXPERIENCED: 20}, K, confusability=PAIRS, rng=rng)
    spammers = tuple(Annotator(f"spam-{i}", Tier.NOVICE, np.full((K, K), 1 / K)) for i in range(6))
    crowd = SimulatedCrowd(workers.annotators + spammers)
    y = pd.Series(truth(1500))
    difficulty = draw_item_difficulty(y.index, 0.8, rng=rng)
    return crowd, y, crowd.ask(y, labels_per_item=8, difficulty=difficulty, rng=rng)


def test_fit_crowd_profile_finds_spammers_errors_and_item_difficulty():
    crowd, y, annotations = synthetic_crowd()
    profile = fit_crowd_profile(annotations, y, n_classes=K)
    assert isinstance(profile, CrowdProfile)
    spam = profile.spammer_probability
    is_spam = spam.index.str.startswith("spam")
    assert spam[is_spam].min() > 0.9 and spam[~is_spam].max() < 0.05
    assert profile.spammer_share == pytest.approx(6 / 66, abs=0.02)
    assert (profile.confusability.argmax(axis=1) == [1, 0, 3, 2]).all()
    assert profile.item_difficulty_std == pytest.approx(0.8, abs=0.15)
    assert profile.class_bias_std < 0.3  # make_crowd gives workers no class bias of their own
    observed = annotator_accuracy(annotations, y)[ACCURACY]
    pd.testing.assert_series_equal(profile.accuracy.sort_index(), observed.sort_index(), check_names=False)


def test_crowd_like_builds_a_twin_per_annotator_and_keeps_spammers_random():
    crowd, y, annotations = synthetic_crowd()
    profile = fit_crowd_profile(annotations, y, n_classes=K)
    twins = crowd_like(profile, rng=0)
    assert sorted(twins.ids) == sorted(profile.correct.index)
    spam_rows = twins.confusion[twins.ids.str.startswith("spam")]
    np.testing.assert_allclose(spam_rows, np.broadcast_to(spam_rows[:, :1, :], spam_rows.shape))
    again = crowd_like(profile, rng=0)
    np.testing.assert_array_equal(twins.confusion, again.confusion)
    unknown = crowd_like(profile, annotator_ids=["new-1", "new-2"], rng=0)
    assert unknown.ids.tolist() == ["new-1", "new-2"]


def test_fit_crowd_profile_rejects_bad_input(small_annotations):
    with pytest.raises(SchemaError, match="gold"):
        fit_crowd_profile(small_annotations, pd.Series([1], index=["nowhere"]))
    with pytest.raises(SchemaError, match="gold"):
        fit_crowd_profile(small_annotations, [0, 1, 2])
    with pytest.raises(SchemaError, match="annotations"):
        fit_crowd_profile(small_annotations, pd.Series([0, 1]), n_classes=2)
    with pytest.raises(SchemaError, match="profile"):
        crowd_like("not a profile", rng=0)


# --- calibration against the real crowds --------------------------------------------------------

# How near a simulated twin of a real crowd comes to it, on the real crowd's own items and
# (item, annotator) pairs; each figure averaged over SIMULATIONS simulated crowds.
SIMULATIONS = 4
TOLERANCE = {"accuracy_mean": 0.03, "accuracy_std": 0.03, "alpha": 0.04}


def crowd_statistics(annotations: pd.DataFrame, gold: pd.Series) -> dict[str, float]:
    accuracy = annotator_accuracy(annotations, gold)[ACCURACY].dropna()
    return {"accuracy_mean": accuracy.mean(), "accuracy_std": accuracy.std(), "alpha": krippendorff_alpha(annotations)}


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["music_genre", "rte", "weather"])
def test_simulated_twin_matches_the_real_crowd(name, crowd_loader):
    dataset = crowd_loader(name)
    real = dataset.annotations[dataset.annotations[ITEM].isin(dataset.gold.index)]
    profile = fit_crowd_profile(real, dataset.gold, n_classes=dataset.n_classes)
    rng = np.random.default_rng(2026)
    simulated = []
    for _ in range(SIMULATIONS):
        twins = crowd_like(profile, rng=rng)
        difficulty = draw_item_difficulty(dataset.gold.index, profile.item_difficulty_std, rng=rng)
        simulated.append(crowd_statistics(twins.annotate(real, dataset.gold, difficulty=difficulty, rng=rng),
                                          dataset.gold))
    target = crowd_statistics(real, dataset.gold)
    for key, tolerance in TOLERANCE.items():
        mean = float(np.mean([s[key] for s in simulated]))
        assert mean == pytest.approx(target[key], abs=tolerance), (name, key, mean, target[key])
