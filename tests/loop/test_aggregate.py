"""Tests of loop.aggregate: majority vote and Dawid-Skene."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loop.aggregate import GLAD, SHRINKAGE_GRID, DawidSkene, MajorityVote
from loop.columns import ANNOTATOR, ITEM, LABEL
from loop.exceptions import NotFittedError, SchemaError


def frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[ITEM, ANNOTATOR, LABEL])


def planted_crowd(rng: np.random.Generator, confusion: np.ndarray, n_items: int,
                  prior: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """Every annotator labels every item, drawing from their row of ``confusion[a]``."""
    m, k, _ = confusion.shape
    truth = rng.choice(k, size=n_items, p=prior)
    items = np.tile(np.arange(n_items), m)
    annotators = np.repeat(np.arange(m), n_items)
    cum = confusion[annotators, truth[items]].cumsum(axis=1)
    labels = (rng.random(items.size)[:, None] > cum).sum(axis=1).clip(max=k - 1)
    return frame(zip(items, annotators, labels)), truth


def naive_em_step(annotations: pd.DataFrame, posteriors: dict, classes: list, smoothing: float,
                  shrinkage: float):
    """One M-step then one E-step of the full model, written item by item as in the paper."""
    k = len(classes)
    alpha = np.full((k, k), smoothing / k) + np.eye(k) * smoothing
    counts = {}
    for who, rows in annotations.groupby(ANNOTATOR):
        counts[who] = np.zeros((k, k))
        for item, label in zip(rows[ITEM], rows[LABEL]):
            counts[who][:, classes.index(label)] += posteriors[item]
    # Where the crowd's wrong answers about each class go.
    errors = sum(counts.values()) + alpha
    np.fill_diagonal(errors, 0.0)
    errors /= errors.sum(axis=1, keepdims=True)
    conf = {}
    for who, n in counts.items():
        right_prior, wrong_prior = alpha[0, 0], alpha[0].sum() - alpha[0, 0]
        s = (np.trace(n) + right_prior) / (n.sum() + right_prior + wrong_prior)
        target = (1 - s) * errors
        np.fill_diagonal(target, s)
        full = n + alpha + shrinkage * target
        conf[who] = full / full.sum(axis=1, keepdims=True)
    prior = sum(posteriors.values()) + 1.0
    prior = prior / prior.sum()
    new = {}
    for item, rows in annotations.groupby(ITEM):
        log_p = np.log(prior).copy()
        for who, label in zip(rows[ANNOTATOR], rows[LABEL]):
            log_p += np.log(conf[who][:, classes.index(label)])
        p = np.exp(log_p - log_p.max())
        new[item] = p / p.sum()
    return conf, prior, new


# --------------------------------------------------------------------------------------------
# Majority vote


def test_majority_vote_by_hand(small_annotations):
    mv = MajorityVote().fit(small_annotations)
    assert mv.labels_.tolist() == [0, 1, 2, 1]
    assert mv.labels_.index.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(mv.posteriors_.loc[1].to_numpy(), [0, 2 / 3, 1 / 3])
    assert mv.classes_.tolist() == [0, 1, 2]
    # c disagrees with the majority once out of three labels.
    assert mv.skills_.to_dict() == pytest.approx({"a": 1.0, "b": 1.0, "c": 2 / 3})


def test_majority_vote_ties_go_to_the_first_class():
    mv = MajorityVote().fit(frame([("q", "a", "dog"), ("q", "b", "cat"), ("r", "a", "cat")]))
    assert mv.labels_.to_dict() == {"q": "cat", "r": "cat"}
    assert mv.classes_.tolist() == ["cat", "dog"]


def test_majority_vote_can_draw_ties_at_random():
    # 300 items whose three labels all differ, one item with a clear majority.
    rows = [(i, who, label) for i in range(300) for who, label in zip("abc", ("x", "y", "z"), strict=True)]
    rows += [("clear", "a", "z"), ("clear", "b", "z"), ("clear", "c", "x")]
    mv = MajorityVote(tie_break="random", random_state=0).fit(frame(rows))
    drawn = mv.labels_.drop("clear").value_counts()
    # Each of the three tied labels wins about a third of the time (first-class rule: "x" always).
    assert set(drawn.index) == {"x", "y", "z"} and drawn.min() > 70
    assert mv.labels_["clear"] == "z"
    # Same seed, same draws; the shares and skills do not depend on the rule.
    again = MajorityVote(tie_break="random", random_state=0).fit(frame(rows))
    pd.testing.assert_series_equal(again.labels_, mv.labels_)
    pd.testing.assert_frame_equal(MajorityVote().fit(frame(rows)).posteriors_, mv.posteriors_)


def test_majority_vote_tie_break_is_validated():
    rows = [("q", "a", "dog"), ("q", "b", "cat")]
    with pytest.raises(SchemaError, match="'tie_break'.*'first', 'random'"):
        MajorityVote(tie_break="last").fit(frame(rows))
    with pytest.raises(SchemaError, match="'random_state'"):
        MajorityVote(tie_break="random").fit(frame(rows))
    with pytest.raises(SchemaError, match="'random_state'"):
        MajorityVote(tie_break="random", random_state="seven").fit(frame(rows))


def test_fit_predict_conveniences(small_annotations):
    mv = MajorityVote()
    pd.testing.assert_series_equal(mv.fit_predict(small_annotations), mv.labels_)
    ds = DawidSkene()
    pd.testing.assert_frame_equal(ds.fit_predict_proba(small_annotations), ds.posteriors_)
    pd.testing.assert_series_equal(ds.fit_predict(small_annotations), ds.labels_)


# --------------------------------------------------------------------------------------------
# Dawid-Skene: the math


def test_dawid_skene_matches_an_item_by_item_em_step(small_annotations):
    """max_iter=1 is: majority-vote shares -> M -> E -> M; compare with a plain loop version."""
    rows = small_annotations.copy()
    rows[LABEL] = rows[LABEL].map({0: "x", 1: "y", 2: "z"})
    classes = ["x", "y", "z"]
    votes = pd.crosstab(rows[ITEM], rows[LABEL]).reindex(columns=classes, fill_value=0)
    start = {i: (v / v.sum()).to_numpy(float) for i, v in votes.iterrows()}
    _, _, post = naive_em_step(rows, start, classes, smoothing=1.0, shrinkage=10.0)
    conf, prior, _ = naive_em_step(rows, post, classes, smoothing=1.0, shrinkage=10.0)

    ds = DawidSkene(max_iter=1, shrinkage=10.0).fit(rows)
    assert ds.n_iter_ == 1
    np.testing.assert_allclose(ds.posteriors_.to_numpy(), np.stack([post[i] for i in range(4)]), rtol=1e-12)
    for a, who in enumerate(ds.annotators_):
        np.testing.assert_allclose(ds.confusion_[a], conf[who], rtol=1e-12)
    np.testing.assert_allclose(ds.priors_.to_numpy(), prior, rtol=1e-12)


def test_dawid_skene_unanimous_items_get_their_label(small_annotations):
    ds = DawidSkene().fit(small_annotations)
    assert ds.labels_.tolist() == [0, 1, 2, 1]
    post = ds.posteriors_.to_numpy()
    np.testing.assert_allclose(post.sum(axis=1), 1.0)
    assert post[0, 0] > 0.9 and post[2, 2] > 0.9
    np.testing.assert_allclose(ds.confusion_.sum(axis=2), 1.0)
    assert ds.priors_.sum() == pytest.approx(1.0)
    assert ds.confusion_.shape == (3, 3, 3)
    assert ds.confusion_of("c").loc[1, 2] == ds.confusion_[2, 1, 2]
    # c, who disagreed once, is estimated less skilled than a and b.
    assert ds.skills_["c"] < min(ds.skills_["a"], ds.skills_["b"])


@pytest.mark.parametrize("model", ["full", "one_coin"])
def test_recovers_planted_confusion_matrices(model):
    rng = np.random.default_rng(7)
    k, m = 3, 5
    accuracy = np.linspace(0.5, 0.9, m)
    confusion = np.empty((m, k, k))
    for a in range(m):
        confusion[a] = (1 - accuracy[a]) / (k - 1)
        np.fill_diagonal(confusion[a], accuracy[a])
    if model == "full":
        # Annotator 0 mistakes class 1 for class 2 far more than for class 0.
        confusion[0, 1] = [0.05, 0.55, 0.40]
    annotations, truth = planted_crowd(rng, confusion, 1500, prior=np.array([0.5, 0.3, 0.2]))
    ds = DawidSkene(model).fit(annotations)
    assert np.abs(ds.confusion_ - confusion).max() < 0.06
    np.testing.assert_allclose(ds.skills_.to_numpy(), accuracy, atol=0.04)
    np.testing.assert_allclose(ds.priors_.to_numpy(), [0.5, 0.3, 0.2], atol=0.04)
    ds_acc = (ds.labels_.to_numpy() == truth).mean()
    mv_acc = (MajorityVote().fit(annotations).labels_.to_numpy() == truth).mean()
    assert ds_acc > mv_acc + 0.02


def test_auto_shrinkage_follows_the_evidence():
    """Annotators who differ only in accuracy: shrink hard. Each with their own confusions: don't."""
    rng = np.random.default_rng(11)
    k, m = 4, 6
    accuracy = np.linspace(0.6, 0.85, m)
    plain = np.empty((m, k, k))
    own = np.empty((m, k, k))
    for a in range(m):
        plain[a] = (1 - accuracy[a]) / (k - 1)
        np.fill_diagonal(plain[a], accuracy[a])
        # Each annotator sends their errors on class c to one class of their own.
        own[a] = np.eye(k) * accuracy[a]
        own[a, np.arange(k), (np.arange(k) + 1 + a % (k - 1)) % k] = 1 - accuracy[a]
    prior = np.full(k, 1 / k)
    shrink = {}
    for name, confusion in [("plain", plain), ("own", own)]:
        annotations, _ = planted_crowd(rng, confusion, 800, prior)
        ds = DawidSkene("full").fit(annotations)
        assert ds.shrinkage_ in SHRINKAGE_GRID
        shrink[name] = ds.shrinkage_
    assert shrink["plain"] >= 100 and shrink["own"] <= 3


def test_mace_recovers_planted_honesty_and_spamming_habits():
    """Annotators answer honestly with probability theta, else spam from a habit of their own."""
    rng = np.random.default_rng(17)
    k, m = 4, 8
    honesty = np.linspace(0.2, 0.9, m)
    habit = rng.dirichlet(np.full(k, 0.5), size=m)  # some nearly always answer the same
    confusion = (1 - honesty)[:, None, None] * habit[:, None, :] + honesty[:, None, None] * np.eye(k)
    annotations, truth = planted_crowd(rng, confusion, 1500, prior=np.full(k, 1 / k))
    ds = DawidSkene("mace").fit(annotations)
    assert np.abs(ds.confusion_ - confusion).max() < 0.06
    np.testing.assert_allclose(ds.confusion_.sum(axis=2), 1.0)
    # The MACE form: off the diagonal, each column is the same spam share in every row.
    off = ~np.eye(k, dtype=bool)
    for conf in ds.confusion_:
        spam = np.where(off, conf, np.nan)
        np.testing.assert_allclose(np.nanmax(spam, axis=0), np.nanmin(spam, axis=0), rtol=1e-9)
    mace_acc = (ds.labels_.to_numpy() == truth).mean()
    mv_acc = (MajorityVote().fit(annotations).labels_.to_numpy() == truth).mean()
    assert mace_acc > mv_acc + 0.02
    assert ds.shrinkage_ == 0.0


def planted_worlds(rng: np.random.Generator, k: int = 4) -> dict[str, np.ndarray]:
    """Confusion matrices of three crowds, each of the form of one annotator model."""
    m = 6
    accuracy = np.linspace(0.55, 0.85, m)
    own, plain = np.empty((m, k, k)), np.empty((m, k, k))
    for a in range(m):
        # Each annotator sends their errors on class c to one class of their own.
        own[a] = np.eye(k) * accuracy[a]
        own[a, np.arange(k), (np.arange(k) + 1 + a % (k - 1)) % k] = 1 - accuracy[a]
        plain[a] = (1 - accuracy[a]) / (k - 1)
        np.fill_diagonal(plain[a], accuracy[a])
    honesty = np.linspace(0.2, 0.9, 8)
    habit = rng.dirichlet(np.full(k, 0.5), size=8)
    mace = (1 - honesty)[:, None, None] * habit[:, None, :] + honesty[:, None, None] * np.eye(k)
    return {"full": own, "one_coin": plain, "mace": mace}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_items", [100, 400])
def test_auto_picks_the_model_the_crowd_was_drawn_from(seed, n_items):
    """Without gold, the held-out likelihood finds the form of the confusion matrices."""
    rng = np.random.default_rng(seed)
    for truth_model, confusion in planted_worlds(rng).items():
        annotations, _ = planted_crowd(rng, confusion, n_items, np.full(4, 0.25))
        auto = DawidSkene().fit(annotations)
        assert auto.model_ == truth_model
        assert auto.model_scores_.index.tolist() == ["full", "one_coin", "mace"]
        assert auto.model_scores_.idxmax() == auto.model_
        # The chosen model is then fitted on every annotation, as if it had been named.
        named = DawidSkene(auto.model_).fit(annotations)
        pd.testing.assert_frame_equal(auto.posteriors_, named.posteriors_, check_exact=True)
        np.testing.assert_array_equal(auto.confusion_, named.confusion_)


def test_a_named_model_is_recorded_and_not_compared(small_annotations):
    ds = DawidSkene("mace").fit(small_annotations)
    assert ds.model_ == "mace" and ds.model_scores_.empty


def test_auto_on_a_sample_of_items_is_seeded():
    """Large crowds are compared on ``selection_items`` items; the seed fixes which."""
    rng = np.random.default_rng(23)
    annotations, _ = planted_crowd(rng, planted_worlds(rng)["full"], 1500, np.full(4, 0.25))
    small = DawidSkene(selection_items=300, random_state=4).fit(annotations)
    again = DawidSkene(selection_items=300, random_state=4).fit(annotations)
    other = DawidSkene(selection_items=300, random_state=5).fit(annotations)
    pd.testing.assert_series_equal(small.model_scores_, again.model_scores_, check_exact=True)
    assert not small.model_scores_.equals(other.model_scores_)
    assert small.model_ == other.model_ == "full"
    # A generator is accepted too (and advanced by the fit).
    assert DawidSkene(random_state=np.random.default_rng(0)).fit(annotations).model_ == "full"


def test_one_coin_confusion_has_one_parameter_per_annotator(small_annotations):
    ds = DawidSkene("one_coin").fit(small_annotations)
    for conf in ds.confusion_:
        off = conf[~np.eye(3, dtype=bool)]
        np.testing.assert_allclose(off, off[0])
        np.testing.assert_allclose(np.diag(conf), conf[0, 0])


@st.composite
def crowds(draw):
    n_items = draw(st.integers(1, 12))
    n_annotators = draw(st.integers(1, 5))
    pairs = draw(st.lists(st.tuples(st.integers(0, n_items - 1), st.integers(0, n_annotators - 1)),
                          min_size=1, max_size=40, unique=True))
    labels = draw(st.lists(st.sampled_from(["cat", "dog", "emu"]), min_size=len(pairs), max_size=len(pairs)))
    rows = [(f"i{i}", f"w{a}", lab) for (i, a), lab in zip(pairs, labels)]
    return frame(rows), draw(st.integers(0, 2**32 - 1))


@settings(max_examples=50, deadline=None)
@given(crowds())
def test_a_random_tie_break_picks_a_most_voted_label_and_changes_nothing_else(crowd):
    annotations, seed = crowd
    first = MajorityVote().fit(annotations)
    drawn = MajorityVote(tie_break="random", random_state=seed).fit(annotations)
    shares = first.posteriors_
    for item, label in drawn.labels_.items():
        assert shares.loc[item, label] == shares.loc[item].max()  # one of the tied winners
    untied = (shares.to_numpy() == shares.to_numpy().max(axis=1, keepdims=True)).sum(axis=1) == 1
    pd.testing.assert_series_equal(drawn.labels_[untied], first.labels_[untied])
    pd.testing.assert_frame_equal(drawn.posteriors_, shares)


@settings(max_examples=50, deadline=None)
@given(crowds(), st.sampled_from(["auto", "full", "one_coin", "mace"]))
def test_same_result_whatever_the_row_order(crowd, model):
    annotations, seed = crowd
    shuffled = annotations.sample(frac=1.0, random_state=seed)
    # One fold split is enough to show model="auto" draws its folds whatever the row order.
    def ds() -> DawidSkene:
        return DawidSkene(model, cv_repeats=1)

    # A few GLAD iterations suffice: invariance must hold at every iteration.
    for make in (MajorityVote, ds, lambda: GLAD(max_iter=3)):
        a, b = make().fit(annotations), make().fit(shuffled)
        pd.testing.assert_series_equal(a.labels_, b.labels_)
        pd.testing.assert_frame_equal(a.posteriors_, b.posteriors_, check_exact=True)
        pd.testing.assert_series_equal(a.skills_, b.skills_, check_exact=True)
    gold = pd.Series(["emu"], index=[annotations[ITEM].iloc[0]])
    a, b = ds().fit(annotations, gold=gold), ds().fit(shuffled, gold=gold)
    pd.testing.assert_frame_equal(a.posteriors_, b.posteriors_, check_exact=True)
    np.testing.assert_array_equal(a.confusion_, b.confusion_)
    a, b = GLAD(max_iter=3).fit(annotations, gold=gold), GLAD(max_iter=3).fit(shuffled, gold=gold)
    pd.testing.assert_frame_equal(a.posteriors_, b.posteriors_, check_exact=True)
    pd.testing.assert_series_equal(a.abilities_, b.abilities_, check_exact=True)
    pd.testing.assert_series_equal(a.difficulties_, b.difficulties_, check_exact=True)
    post = ds().fit(annotations).posteriors_.to_numpy()
    assert np.isfinite(post).all()
    np.testing.assert_allclose(post.sum(axis=1), 1.0)


def test_auto_repeats_the_split_on_small_crowds_only():
    """Small crowds average several fold splits (a steadier choice); large ones need one."""
    rng = np.random.default_rng(29)
    small, _ = planted_crowd(rng, planted_worlds(rng)["one_coin"], 100, np.full(4, 0.25))  # 600 labels
    auto = DawidSkene().fit(small).model_scores_
    pd.testing.assert_series_equal(auto, DawidSkene(cv_repeats=5).fit(small).model_scores_, check_exact=True)
    assert not auto.equals(DawidSkene(cv_repeats=1).fit(small).model_scores_)
    large, _ = planted_crowd(rng, planted_worlds(rng)["one_coin"], 2000, np.full(4, 0.25))  # 12,000 labels
    pd.testing.assert_series_equal(DawidSkene().fit(large).model_scores_,
                                   DawidSkene(cv_repeats=1).fit(large).model_scores_, check_exact=True)


@settings(max_examples=40, deadline=None)
@given(crowds(), st.integers(2, 6))
def test_auto_scores_are_log_probabilities_and_the_best_one_is_fitted(crowd, folds):
    annotations, seed = crowd
    auto = DawidSkene(cv_folds=folds, random_state=seed).fit(annotations)
    scores = auto.model_scores_.to_numpy()
    assert np.isfinite(scores).all() and (scores <= 0).all()
    assert auto.model_ == auto.model_scores_.idxmax()
    named = DawidSkene(auto.model_).fit(annotations)
    pd.testing.assert_frame_equal(auto.posteriors_, named.posteriors_, check_exact=True)


# --------------------------------------------------------------------------------------------
# Dawid-Skene: thin data and gold


def test_single_label_items_sparse_annotators_and_unused_classes():
    rng = np.random.default_rng(3)
    n = 200
    truth = rng.integers(3, size=n)
    rows = [(i, f"good{j}", int(truth[i])) for i in range(n) for j in range(3) if rng.random() < 0.8]
    rows += [(n, "good0", 2), (n + 1, "once", 1)]  # two items with one label each
    rows += [(i, "binary", int(min(truth[i], 1))) for i in range(20)]  # never says 2
    ds = DawidSkene().fit(frame(rows))
    assert np.isfinite(ds.confusion_).all() and np.isfinite(ds.posteriors_.to_numpy()).all()
    assert (ds.confusion_ > 0).all()
    assert ds.labels_[n] == 2 and ds.labels_[n + 1] == 1
    np.testing.assert_allclose(ds.confusion_.sum(axis=2), 1.0)
    assert ds.skills_.notna().all()


def test_gold_anchors_posteriors_and_skills():
    """Two colluding annotators swap classes; gold on some items reveals it."""
    rng = np.random.default_rng(5)
    n = 300
    truth = rng.integers(2, size=n)
    rows = []
    for i in range(n):
        rows += [(i, "liar1", 1 - truth[i]), (i, "liar2", 1 - truth[i]), (i, "honest", truth[i])]
    annotations = frame(rows)
    gold = pd.Series(truth[:60], index=pd.RangeIndex(60, name=ITEM))

    plain = DawidSkene().fit(annotations)
    assert (plain.labels_.to_numpy() == truth).mean() < 0.1  # the majority lies

    anchored = DawidSkene().fit(annotations, gold=gold)
    np.testing.assert_array_equal(anchored.posteriors_.to_numpy()[np.arange(60), truth[:60]], 1.0)
    assert (anchored.labels_.to_numpy()[60:] == truth[60:]).all()
    assert anchored.skills_["honest"] > 0.95 > 0.05 > anchored.skills_["liar1"]


def test_gold_with_unseen_items_and_classes(small_annotations):
    gold = pd.Series([2, 3], index=[0, 99])  # item 99 has no labels; class 3 only in gold
    ds = DawidSkene().fit(small_annotations, gold=gold)
    assert ds.classes_.tolist() == [0, 1, 2, 3]
    assert ds.labels_[0] == 2
    assert 99 not in ds.labels_.index


@pytest.mark.shared_data
@pytest.mark.filterwarnings("ignore")  # crowd-kit's deprecated pandas calls
def test_rte_agrees_with_crowdkit(rte):
    ck = pytest.importorskip("crowdkit.aggregation")
    data = rte.annotations.rename(columns={ITEM: "task", ANNOTATOR: "worker"})[["task", "worker", LABEL]]
    theirs = ck.DawidSkene(n_iter=100).fit_predict(data)
    classic = DawidSkene(shrinkage=0.0).fit(rte.annotations).labels_
    assert (classic.loc[theirs.index].to_numpy() == theirs.to_numpy()).mean() >= 0.99
    ours = DawidSkene().fit(rte.annotations)
    assert (ours.labels_.loc[theirs.index].to_numpy() == theirs.to_numpy()).mean() >= 0.98
    gold = rte.gold
    assert (ours.labels_.loc[gold.index] == gold).mean() >= 0.92


# Accuracy (%) of crowd-kit 1.4.2's best method on each set, picked after seeing gold
# (benchmarks/aggregation.py; BENCHMARKS.md, "Aggregation"), and the target's slack: 0.3
# points, or one item on the small quizzes.
CROWDKIT_BEST = {"music_genre": (79.57, 0.3), "rte": (92.75, 0.3), "temp": (94.16, 0.3),
                 "quiz_chinese": (100 * 16 / 24, 100 / 24), "quiz_english": (100 * 16 / 30, 100 / 30),
                 "quiz_medicine": (100 * 29 / 36, 100 / 36)}


@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(CROWDKIT_BEST))
def test_the_default_is_within_target_of_crowdkits_best_method(crowd_loader, name):
    crowd = crowd_loader(name)
    labels = DawidSkene().fit(crowd.annotations).labels_
    gold = crowd.gold[crowd.gold.index.isin(labels.index)]
    accuracy = 100 * (labels.loc[gold.index].to_numpy() == gold.to_numpy()).mean()
    best, slack = CROWDKIT_BEST[name]
    assert accuracy >= best - slack - 1e-9


# --------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("Estimator", [MajorityVote, DawidSkene, GLAD])
def test_bad_annotations(Estimator, small_annotations):
    with pytest.raises(SchemaError, match="non-empty"):
        Estimator().fit(small_annotations.iloc[:0])
    with pytest.raises(SchemaError, match="missing values"):
        Estimator().fit(small_annotations.assign(label=[0, 1, np.nan, 1, 1, 2, 2, 2, 2, 1]))
    with pytest.raises(SchemaError, match="at most one label"):
        Estimator().fit(pd.concat([small_annotations, small_annotations.iloc[:1]]))
    with pytest.raises(SchemaError, match="columns"):
        Estimator().fit(small_annotations.drop(columns=[LABEL]))
    with pytest.raises(SchemaError):
        Estimator().fit(small_annotations.to_numpy())


@pytest.mark.parametrize("params, name", [
    ({"model": "two_coin"}, "model"),
    ({"max_iter": 0}, "max_iter"),
    ({"tol": -1.0}, "tol"),
    ({"smoothing": 0.0}, "smoothing"),
    ({"shrinkage": -1.0}, "shrinkage"),
    ({"shrinkage": "full"}, "shrinkage"),
    ({"cv_folds": 1}, "cv_folds"),
    ({"cv_folds": 2.5}, "cv_folds"),
    ({"cv_repeats": 0}, "cv_repeats"),
    ({"cv_repeats": "many"}, "cv_repeats"),
    ({"selection_items": 0}, "selection_items"),
    ({"random_state": None}, "random_state"),
    ({"random_state": 0.5}, "random_state"),
])
def test_bad_parameters(params, name, small_annotations):
    with pytest.raises(SchemaError, match=f"'{name}'"):
        DawidSkene(**params).fit(small_annotations)


@pytest.mark.parametrize("params, name", [
    ({"max_iter": 0}, "max_iter"),
    ({"tol": -1.0}, "tol"),
    ({"m_step_iter": 0}, "m_step_iter"),
    ({"ability_prior": np.nan}, "ability_prior"),
    ({"easiness_prior": "high"}, "easiness_prior"),
])
def test_glad_bad_parameters(params, name, small_annotations):
    with pytest.raises(SchemaError, match=f"'{name}'"):
        GLAD(**params).fit(small_annotations)


def test_bad_gold(small_annotations):
    with pytest.raises(SchemaError, match="'gold'"):
        GLAD().fit(small_annotations, gold=pd.Series([1, 2], index=[0, 0]))
    with pytest.raises(SchemaError, match="'gold'"):
        DawidSkene().fit(small_annotations, gold={0: 1})
    with pytest.raises(SchemaError, match="'gold'"):
        DawidSkene().fit(small_annotations, gold=pd.Series([1.0, np.nan], index=[0, 1]))
    with pytest.raises(SchemaError, match="'gold'"):
        DawidSkene().fit(small_annotations, gold=pd.Series([1, 2], index=[0, 0]))


@pytest.mark.parametrize("Estimator", [MajorityVote, DawidSkene, GLAD])
def test_not_fitted(Estimator):
    est = Estimator()
    for name in ("labels_", "posteriors_", "classes_", "skills_"):
        with pytest.raises(NotFittedError, match="not fitted"):
            getattr(est, name)
    assert not hasattr(est, "labels_")


def test_confusion_of_unknown_annotator(small_annotations):
    with pytest.raises(NotFittedError):
        DawidSkene().confusion_of("a")
    with pytest.raises(SchemaError, match="'annotator'"):
        DawidSkene().fit(small_annotations).confusion_of("zed")


def test_labels_of_mixed_types_sort_by_type_then_value():
    rows = [(1, "a", "x"), (1, "b", "x"), (2, "a", 3), (2, "b", 3), (3, "a", 10), (3, "b", "x")]
    for est in (MajorityVote(), DawidSkene()):
        est.fit(frame(rows))
        assert est.classes_.tolist() == [3, 10, "x"]
        assert est.labels_[1] == "x" and est.labels_[2] == 3
    assert MajorityVote().fit(frame(rows)).labels_[3] == 10  # a tie: the first class wins


def test_convergence_and_iteration_cap(small_annotations):
    converged = DawidSkene(max_iter=500, tol=1e-9).fit(small_annotations)
    assert 1 < converged.n_iter_ < 500
    assert np.isfinite(converged.log_likelihood_) and converged.log_likelihood_ < 0
    capped = DawidSkene(max_iter=2, tol=0.0).fit(small_annotations)
    assert capped.n_iter_ == 2


@pytest.mark.parametrize("model", ["auto", "full", "one_coin", "mace"])
def test_a_single_class(model):
    ds = DawidSkene(model).fit(frame([(1, "a", "x"), (1, "b", "x"), (2, "a", "x")]))
    assert ds.labels_.tolist() == ["x", "x"]
    np.testing.assert_allclose(ds.confusion_, 1.0)
    np.testing.assert_allclose(ds.posteriors_.to_numpy(), 1.0)


# --------------------------------------------------------------------------------------------
# GLAD


def glad_crowd(rng: np.random.Generator, ability: np.ndarray, easiness: np.ndarray, k: int,
               per_item: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Each item is labelled by ``per_item`` random annotators; right with probability
    sigmoid(ability * easiness), otherwise a uniformly drawn wrong class."""
    n, m = easiness.size, ability.size
    truth = rng.integers(k, size=n)
    who = np.argsort(rng.random((n, m)), axis=1)[:, :per_item]
    items = np.repeat(np.arange(n), per_item)
    annotators = who.ravel()
    right = rng.random(items.size) < 1 / (1 + np.exp(-ability[annotators] * easiness[items]))
    wrong = (truth[items] + rng.integers(1, k, size=items.size)) % k
    return frame(zip(items, annotators, np.where(right, truth[items], wrong))), truth


def test_glad_recovers_planted_abilities_and_difficulties():
    rng = np.random.default_rng(13)
    m, n, k = 20, 1500, 4
    ability = np.linspace(-0.5, 2.0, m)  # from adversarial to expert
    easiness = np.exp(rng.normal(0.5, 0.8, size=n))
    annotations, truth = glad_crowd(rng, ability, easiness, k, per_item=5)
    glad = GLAD().fit(annotations)
    rank = lambda x: pd.Series(x).rank().to_numpy()  # noqa: E731
    assert np.corrcoef(rank(glad.abilities_.to_numpy()), rank(ability))[0, 1] > 0.95
    assert np.corrcoef(rank(glad.difficulties_.to_numpy()), rank(1 / easiness))[0, 1] > 0.4
    assert glad.abilities_.iloc[0] < 0 < glad.abilities_.iloc[-1]  # the adversary is found
    glad_acc = (glad.labels_.to_numpy() == truth).mean()
    mv_acc = (MajorityVote().fit(annotations).labels_.to_numpy() == truth).mean()
    assert glad_acc > mv_acc + 0.02
    np.testing.assert_allclose(glad.posteriors_.to_numpy().sum(axis=1), 1.0)
    np.testing.assert_allclose(glad.priors_.to_numpy(), np.bincount(truth) / n, atol=0.04)
    assert glad.skills_.iloc[-1] > glad.skills_.iloc[0]


def test_glad_thin_data_gold_and_a_single_class(small_annotations):
    glad = GLAD().fit(small_annotations)
    assert glad.labels_.tolist() == DawidSkene().fit(small_annotations).labels_.tolist()
    assert np.isfinite(glad.difficulties_.to_numpy()).all() and (glad.difficulties_ > 0).all()
    anchored = GLAD().fit(small_annotations, gold=pd.Series([1, 3], index=[0, 99]))
    assert anchored.classes_.tolist() == [0, 1, 2, 3]
    assert anchored.posteriors_.loc[0].tolist() == [0.0, 1.0, 0.0, 0.0]
    one = GLAD().fit(frame([(1, "a", "x"), (1, "b", "x"), (2, "a", "x")]))
    assert one.labels_.tolist() == ["x", "x"]
    np.testing.assert_allclose(one.posteriors_.to_numpy(), 1.0)
    capped = GLAD(max_iter=2, tol=0.0).fit(small_annotations)
    assert capped.n_iter_ == 2 and np.isfinite(capped.log_likelihood_)


# --------------------------------------------------------------------------------------------
# Dawid-Skene: the comparison's shortcuts give the same numbers as the plain computation
# (these reach private helpers: the public result they protect is `model_scores_`)


def separate_fold_fits(annotations: pd.DataFrame, *, folds: int, repeats: int, seed: int,
                       gold: pd.Series | None = None, max_iter: int = 100,
                       fits: int | None = None) -> pd.Series:
    """`model_scores_` computed the plain way: one EM per (repeat, fold, model), over the
    first `fits` (repeat, fold) pairs (all of them by default)."""
    from loop.aggregate import MODELS, _encode, _fit_em, _gold_codes, _subset

    enc = _encode(annotations, None if gold is None else pd.Index(gold.unique()))
    gold_rows, gold_codes = _gold_codes(enc, gold)
    gold_of = np.full(len(enc.items), -1)
    gold_of[gold_rows] = gold_codes
    rng, rows = np.random.default_rng(seed), np.arange(enc.item.size)
    total, scored = dict.fromkeys(MODELS, 0.0), 0
    fits = folds * repeats if fits is None else fits
    for repeat in range(repeats):
        fold = rng.permutation(rows.size) % folds
        for f in range(min(folds, fits - repeat * folds)):
            train, test = rows[fold != f], rows[fold == f]
            sub, kept = _subset(enc, train)
            known = np.isin(gold_rows, kept)
            pos = np.searchsorted(kept, enc.item[test])
            seen = (pos < kept.size) & (kept[np.minimum(pos, kept.size - 1)] == enc.item[test])
            scored += test.size
            for model in MODELS:
                fit = _fit_em(sub, model, smoothing=1.0, shrinkage="auto", max_iter=max_iter, tol=1e-4,
                              gold_rows=np.searchsorted(kept, gold_rows[known]),
                              gold_codes=gold_codes[known])
                post = np.where(seen[:, None], fit.posteriors[np.minimum(pos, kept.size - 1)], fit.priors)
                anchored = gold_of[enc.item[test]]
                post[anchored >= 0] = np.eye(enc.n_classes)[anchored[anchored >= 0]]
                said = fit.confusion[enc.annotator[test], :, enc.label[test]]
                total[model] += float(np.log((post * said).sum(axis=1)).sum())
    return pd.Series({model: total[model] / scored for model in MODELS})


@pytest.mark.parametrize("world", ["full", "one_coin", "mace"])
def test_grouped_fold_fits_score_as_separate_fits(world):
    """All fold fits of a model run as one grouped EM; each fold keeps its own class prior,
    error pattern, shrinkage and stopping iteration, so the scores are those of separate fits."""
    rng = np.random.default_rng(41)
    annotations, truth = planted_crowd(rng, planted_worlds(rng)[world], 60, np.array([0.4, 0.3, 0.2, 0.1]))
    # Thin the crowd so folds leave some items without training labels.
    annotations = annotations.sample(frac=0.5, random_state=3).reset_index(drop=True)
    gold = pd.Series(truth[:6], index=pd.RangeIndex(6, name=ITEM))
    auto = DawidSkene(cv_repeats=3, random_state=7).fit(annotations, gold=gold)
    expected = separate_fold_fits(annotations, folds=5, repeats=3, seed=7, gold=gold)
    np.testing.assert_allclose(auto.model_scores_.to_numpy(), expected.to_numpy(), rtol=1e-9)


@pytest.mark.parametrize(("scored", "fits"), [(240, 3), (680, 9)])
def test_auto_repeats_score_only_the_folds_needed(monkeypatch, scored, fits):
    """cv_repeats="auto" scores folds until _SELECTION_SCORED held-out labels are scored: on a
    crowd of 400 labels (80 a fold), 240 take three folds of one split and 680 take
    nine folds, all five of one split and four of the next, not two whole splits."""
    import loop.aggregate

    rng = np.random.default_rng(47)
    annotations, _ = planted_crowd(rng, planted_worlds(rng)["full"], 100, np.array([0.4, 0.3, 0.2, 0.1]))
    annotations = annotations.sample(n=400, random_state=2).reset_index(drop=True)
    monkeypatch.setattr(loop.aggregate, "_SELECTION_SCORED", scored)
    auto = DawidSkene(random_state=13).fit(annotations)
    expected = separate_fold_fits(annotations, folds=5, repeats=-(-fits // 5), seed=13, fits=fits)
    np.testing.assert_allclose(auto.model_scores_.to_numpy(), expected.to_numpy(), rtol=1e-9)


@pytest.mark.parametrize("max_iter", [8, 10, 12])
def test_grouped_fold_fits_cut_at_max_iter_score_as_separate_fits(max_iter):
    """Crowds that stop leave the grouped EM while the others run on; when max_iter cuts the
    rest short, each keeps its last values: still the scores of separate fits."""
    rng = np.random.default_rng(43)
    annotations, _ = planted_crowd(rng, planted_worlds(rng)["full"], 60, np.array([0.4, 0.3, 0.2, 0.1]))
    annotations = annotations.sample(frac=0.5, random_state=5).reset_index(drop=True)
    auto = DawidSkene(cv_repeats=3, max_iter=max_iter, random_state=11).fit(annotations)
    expected = separate_fold_fits(annotations, folds=5, repeats=3, seed=11, max_iter=max_iter)
    np.testing.assert_allclose(auto.model_scores_.to_numpy(), expected.to_numpy(), rtol=1e-9)


@st.composite
def fold_crowds(draw):
    """Small random crowds with enough labels for every fold to train and score."""
    n_items, n_annotators = draw(st.integers(4, 15)), draw(st.integers(2, 6))
    pairs = draw(st.lists(st.tuples(st.integers(0, n_items - 1), st.integers(0, n_annotators - 1)),
                          min_size=15, max_size=60, unique=True))
    labels = draw(st.lists(st.sampled_from(["cat", "dog", "emu"]), min_size=len(pairs), max_size=len(pairs)))
    return frame([(f"i{i}", f"w{a}", lab) for (i, a), lab in zip(pairs, labels)]), draw(st.integers(0, 2**32 - 1))


@settings(max_examples=25, deadline=None)
@given(fold_crowds(), st.sampled_from([0.0, 0.5, 2.0]), st.sampled_from([6, 100]))
def test_grouped_fold_fits_equal_fold_by_fold_fits(crowd, drop_share, max_iter):
    """Stopped crowds ride along in the grouped EM, frozen and unsearched, until they hold
    _DROP_SHARE of the stack (0: they leave at once; 2: never): whenever they leave, every
    fold's score is that of its own separate EM, also when max_iter cuts the fits short."""
    from unittest import mock

    import loop.aggregate

    annotations, seed = crowd
    with mock.patch.object(loop.aggregate, "_DROP_SHARE", drop_share):
        auto = DawidSkene(cv_repeats=3, max_iter=max_iter, random_state=seed).fit(annotations)
    expected = separate_fold_fits(annotations, folds=5, repeats=3, seed=seed, max_iter=max_iter)
    np.testing.assert_allclose(auto.model_scores_.to_numpy(), expected.to_numpy(), rtol=1e-9, atol=0)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4))
def test_shrinkage_climb_finds_the_grid_maximum(seed, groups):
    """Climbing from any start reaches the grid's best shrinkage when the marginal
    likelihood has one maximum over the grid (and a point no worse than its neighbours always)."""
    from loop.aggregate import _eb_shrinkage

    rng = np.random.default_rng(seed)
    m, k = int(rng.integers(2, 12)), int(rng.integers(2, 5))
    counts = rng.gamma(0.5, 4.0, size=(groups, m, k, k)) * (rng.random((groups, m, k, k)) < 0.7)
    target = rng.dirichlet(np.ones(k), size=(groups, m, k))
    alpha = np.full((k, k), 1.0 / k) + np.eye(k)
    grid = np.asarray(SHRINKAGE_GRID)
    scores = np.array([[_eb_shrinkage_score(counts[g], alpha, target[g], lam) for lam in grid]
                       for g in range(groups)])
    starts = [np.full(groups, -1)] + [np.full(groups, j) for j in range(grid.size)]
    for start in starts:
        climbed = _eb_shrinkage(counts, alpha, target, start)
        for g, at in enumerate(climbed):
            tol = 1e-9 * abs(scores[g]).max()
            assert scores[g, at] >= scores[g, max(at - 1, 0)] - tol
            assert scores[g, at] >= scores[g, min(at + 1, grid.size - 1)] - tol
            rises = np.diff(scores[g]) > 0
            if not np.any(rises[1:] & ~rises[:-1]):  # one maximum: rises, then falls
                assert at == np.argmax(scores[g])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 5), st.booleans())
def test_shrinkage_search_without_small_counts_moves_as_the_full_climb(seed, groups, transposed):
    """Scoring a start's neighbours without the cells of small counts (bounded, not dropped)
    never settles a crowd the full climb would move: from every start, the search lands where
    the full climb does. The M-step passes transposed views of its (crowds, m, l, c) arrays;
    plain arrays work the same."""
    from loop.aggregate import _EB_SMALL_COUNT, _eb_climb, _eb_settled, _eb_shrinkage

    rng = np.random.default_rng(seed)
    m, k = int(rng.integers(2, 12)), int(rng.integers(2, 6))
    counts = rng.gamma(0.5, 4.0, size=(groups, m, k, k))
    # Most cells small, as once the posteriors are sharp: some exactly 0, some just under the
    # cut, some just over it.
    small = rng.random(counts.shape) < 0.7
    counts[small] = rng.choice([0.0, 1e-9, 0.9 * _EB_SMALL_COUNT, _EB_SMALL_COUNT], size=int(small.sum()))
    target = rng.dirichlet(np.ones(k), size=(groups, m, k))
    if transposed:
        counts = np.ascontiguousarray(counts.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
        target = np.ascontiguousarray(target.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    alpha = np.full((k, k), 1.0 / k) + np.eye(k)
    for j in range(len(SHRINKAGE_GRID)):
        start = np.full(groups, j)
        climbed = _eb_climb(counts, alpha, target, start)
        settled = _eb_settled(counts, alpha, target, start)
        assert (climbed[settled] == j).all()
        np.testing.assert_array_equal(_eb_shrinkage(counts, alpha, target, start), climbed)


def test_shrinkage_search_settles_sharp_counts_without_the_full_climb(monkeypatch):
    """Counts from sharp posteriors (annotators who say the truth, or a class they confuse it
    with, with a little posterior mass elsewhere) are mostly small: the check settles every
    crowd at the full climb's own choice, and the full climb is not run."""
    import loop.aggregate
    from loop.aggregate import _eb_climb, _eb_shrinkage

    rng = np.random.default_rng(3)
    groups, m, k = 4, 30, 6
    counts = rng.uniform(0.0, 1e-6, size=(groups, m, k, k))
    counts[:, :, np.arange(k), np.arange(k)] = rng.uniform(2.0, 12.0, size=(groups, m, k))
    counts[:, :, np.arange(k), (np.arange(k) + 1) % k] = rng.uniform(0.0, 2.0, size=(groups, m, k))
    target = rng.dirichlet(np.ones(k), size=(groups, m, k))
    alpha = np.full((k, k), 1.0 / k) + np.eye(k)
    best = _eb_climb(counts, alpha, target, np.full(groups, -1))
    monkeypatch.setattr(loop.aggregate, "_eb_climb", None)  # any call would raise
    np.testing.assert_array_equal(_eb_shrinkage(counts, alpha, target, best), best)


def test_shrinkage_search_climbs_where_small_counts_are_few():
    """Where fewer than _EB_MIN_SMALL_SHARE of the cells are small, the check is skipped (it
    would cost more than it saves) and nothing is settled by it."""
    from loop.aggregate import _eb_settled

    rng = np.random.default_rng(5)
    counts = rng.gamma(2.0, 4.0, size=(3, 8, 4, 4)) + 1.0
    target = rng.dirichlet(np.ones(4), size=(3, 8, 4))
    alpha = np.full((4, 4), 0.25) + np.eye(4)
    assert not _eb_settled(counts, alpha, target, np.full(3, 4)).any()


def _eb_shrinkage_score(counts: np.ndarray, alpha: np.ndarray, target: np.ndarray, lam: float) -> float:
    """The Dirichlet-multinomial marginal log-likelihood of one crowd's counts, term by term."""
    from scipy.special import gammaln

    beta = alpha + lam * target
    total, n = beta.sum(axis=2), counts.sum(axis=2)
    return float((gammaln(total) - gammaln(total + n)).sum() + (gammaln(beta + counts) - gammaln(beta)).sum())


# --------------------------------------------------------------------------------------------
# Dawid-Skene: the final fit holds a settled shrinkage instead of searching it every M-step


def counting_search(monkeypatch, answer=None) -> list[int]:
    """Record the shrinkage position every search returns (``answer(call, start)`` replaces
    the search when given)."""
    import loop.aggregate

    real, found = loop.aggregate._eb_shrinkage, []

    def search(counts, alpha, target, start):
        at = real(counts, alpha, target, start) if answer is None else answer(len(found), start)
        found.append(int(at[0]))
        return at

    monkeypatch.setattr(loop.aggregate, "_eb_shrinkage", search)
    return found


@pytest.mark.parametrize(("seed", "world"), [(0, "mace"), (0, "full"), (1, "full"), (3, "one_coin")])
def test_held_shrinkage_fits_as_searching_every_m_step(monkeypatch, seed, world):
    """Once the search has kept the shrinkage five M-steps running, the final fit holds it
    and searches again only before it stops: the same fit as searching at every M-step
    (where the shrinkage moves for several M-steps first, too), with fewer searches."""
    import loop.aggregate

    rng = np.random.default_rng(seed)
    annotations, _ = planted_crowd(rng, planted_worlds(rng)[world], 200, np.array([0.4, 0.3, 0.2, 0.1]))
    annotations = annotations.sample(frac=0.5, random_state=seed).reset_index(drop=True)
    found = counting_search(monkeypatch)
    held = DawidSkene("full").fit(annotations)
    held_searches = len(found)
    found.clear()
    monkeypatch.setattr(loop.aggregate, "_SHRINKAGE_STEADY", 10**6)
    every = DawidSkene("full").fit(annotations)
    np.testing.assert_array_equal(held.posteriors_.to_numpy(), every.posteriors_.to_numpy())
    np.testing.assert_array_equal(held.confusion_, every.confusion_)
    assert (held.n_iter_, held.shrinkage_) == (every.n_iter_, every.shrinkage_)
    assert len(found) == every.n_iter_ + 1
    assert held_searches < len(found)


def test_held_shrinkage_that_moves_at_the_end_keeps_the_fit_running(monkeypatch):
    """A fit about to stop searches its held shrinkage again; when the search moves it, the
    fit runs on with the new value and stops only once a search keeps it."""
    rng = np.random.default_rng(0)
    annotations, _ = planted_crowd(rng, planted_worlds(rng)["mace"], 200, np.array([0.4, 0.3, 0.2, 0.1]))
    annotations = annotations.sample(frac=0.5, random_state=0).reset_index(drop=True)
    moves = {"at": 10**6}
    found = counting_search(monkeypatch, lambda call, start: np.full(start.shape, 4 if call < moves["at"] else 5))
    settled = DawidSkene("full").fit(annotations)
    # Searches 1-6 settle on 4 (held from the seventh M-step); the seventh search, the one
    # before stopping, finds 5.
    found.clear()
    moves["at"] = 6
    moved = DawidSkene("full").fit(annotations)
    assert found[:7] == [4] * 6 + [5]
    assert moved.shrinkage_ == SHRINKAGE_GRID[5] and settled.shrinkage_ == SHRINKAGE_GRID[4]
    # After the move: five searches to settle again, then the search before stopping.
    assert len(found) == 7 + 5 + 1 and moved.n_iter_ > settled.n_iter_


def test_fit_cut_at_max_iter_searches_its_held_shrinkage_at_the_last_m_step(monkeypatch):
    """tol=0 never stops the fit: the last M-step max_iter allows searches the held shrinkage
    anyway, as every M-step did before the hold, so the fit ends with the search's value."""
    rng = np.random.default_rng(0)
    annotations, _ = planted_crowd(rng, planted_worlds(rng)["mace"], 200, np.array([0.4, 0.3, 0.2, 0.1]))
    found = counting_search(monkeypatch, lambda call, start: np.full(start.shape, 4 if call < 6 else 5))
    cut = DawidSkene("full", max_iter=9, tol=0.0).fit(annotations)
    # The first M-step and iterations 1-5 search (4, five times kept); 6-8 hold; 9 searches.
    assert found == [4] * 6 + [5]
    assert cut.n_iter_ == 9 and cut.shrinkage_ == SHRINKAGE_GRID[5]
