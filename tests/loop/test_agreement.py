"""Agreement statistics: checked against the krippendorff package, scikit-learn and worked
examples from the literature, with property tests for the invariants."""

from __future__ import annotations

import itertools

import krippendorff  # GPL: a test-only reference, never imported by loop/
import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score

from loop.agreement import (
    annotator_accuracy,
    coincidence_matrix,
    cohen_kappa_pairwise,
    fleiss_kappa,
    krippendorff_alpha,
    nominal_agreement_from_counts,
    per_class_agreement,
    percent_agreement,
)
from loop.columns import (
    ACCURACY,
    AGREEMENT,
    ANNOTATOR,
    ANNOTATOR_A,
    ANNOTATOR_B,
    ITEM,
    KAPPA,
    LABEL,
    N_AGREEING,
    N_CORRECT,
    N_ITEMS,
    N_LABELS,
    N_PAIRS,
    SPECIFIC_AGREEMENT,
)
from loop.exceptions import SchemaError

SETTINGS = settings(max_examples=50, deadline=None)


def _frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[ITEM, ANNOTATOR, LABEL])


def _from_matrix(matrix) -> pd.DataFrame:
    """Long frame of an annotators x items matrix with NaN for missing labels."""
    rows = [(j, i, value) for i, row in enumerate(matrix) for j, value in enumerate(row)
            if not (isinstance(value, float) and np.isnan(value))]
    return _frame(rows)


def _reliability_matrix(annotations: pd.DataFrame) -> np.ndarray:
    """The krippendorff package's input: annotators x items, NaN where a label is missing."""
    return annotations.pivot(index=ANNOTATOR, columns=ITEM, values=LABEL).to_numpy(dtype=np.float64)


@st.composite
def annotation_frames(draw, *, min_items: int = 1, max_items: int = 25, max_annotators: int = 6,
                      max_classes: int = 4, missing: bool = True) -> pd.DataFrame:
    """Random long frames: int labels, some (item, annotator) cells missing."""
    n_items = draw(st.integers(min_items, max_items))
    n_annotators = draw(st.integers(2, max_annotators))
    n_classes = draw(st.integers(2, max_classes))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    present = rng.random((n_items, n_annotators)) < (draw(st.floats(0.3, 1.0)) if missing else 1.0)
    present[0, 0] = True  # never an empty frame
    items, annotators = np.nonzero(present)
    labels = rng.integers(0, n_classes, items.size)
    # Mostly agreeing crowds, so alpha covers the whole range and not only chance.
    truth = rng.integers(0, n_classes, n_items)
    agree = rng.random(items.size) < draw(st.floats(0.0, 1.0))
    labels = np.where(agree, truth[items], labels)
    return pd.DataFrame({ITEM: items, ANNOTATOR: annotators, LABEL: labels})


def _reference_alpha(annotations: pd.DataFrame, level: str = "nominal") -> float | None:
    """krippendorff.alpha, or None where it refuses or returns NaN (alpha undefined)."""
    try:
        with np.errstate(invalid="ignore", divide="ignore"):
            value = krippendorff.alpha(reliability_data=_reliability_matrix(annotations),
                                       level_of_measurement=level)
    except ValueError:
        return None
    return None if np.isnan(value) else float(value)


# ------------------------------------------------------------------ Krippendorff's alpha

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", the example with missing
# data: 3 coders x 15 units; also the krippendorff package's doctest.
KRIPPENDORFF_2011 = [
    [np.nan, np.nan, np.nan, np.nan, np.nan, 3, 4, 1, 2, 1, 1, 3, 3, np.nan, 3],
    [1, np.nan, 2, 1, 3, 3, 4, 3, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan],
    [np.nan, np.nan, 2, 1, 3, 4, 4, np.nan, 2, 1, 1, 3, 3, np.nan, 4],
]
# Hayes & Krippendorff (2007), 4 observers x 12 units, ordinal answer 0.815.
HAYES_2007 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, np.nan, np.nan, np.nan],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, np.nan, 3],
    [np.nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, np.nan],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, np.nan],
]


@pytest.mark.parametrize(("matrix", "level", "expected"), [
    (KRIPPENDORFF_2011, "nominal", 0.691358),
    (KRIPPENDORFF_2011, "interval", 0.810845),
    (HAYES_2007, "ordinal", 0.815),
    (HAYES_2007, "ratio", 0.797),
])
def test_alpha_reproduces_published_examples(matrix, level, expected) -> None:
    value = krippendorff_alpha(_from_matrix(matrix), level=level)
    assert value == pytest.approx(expected, abs=5e-4 if expected == round(expected, 3) else 1e-6)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
def test_alpha_equals_the_krippendorff_package_at_every_level(level: str) -> None:
    rng = np.random.default_rng(3)
    present = rng.random((300, 7)) < 0.5
    items, annotators = np.nonzero(present)
    truth = rng.integers(1, 6, 300)
    labels = np.where(rng.random(items.size) < 0.6, truth[items], rng.integers(1, 6, items.size))
    frame = pd.DataFrame({ITEM: items, ANNOTATOR: annotators, LABEL: labels})
    assert krippendorff_alpha(frame, level=level) == pytest.approx(_reference_alpha(frame, level), abs=1e-9)


@SETTINGS
@given(annotation_frames())
def test_alpha_equals_the_krippendorff_package_on_random_frames_with_missing_data(frame) -> None:
    reference = _reference_alpha(frame)
    if reference is None:
        with pytest.raises(SchemaError):
            krippendorff_alpha(frame)
    else:
        assert krippendorff_alpha(frame) == pytest.approx(reference, abs=1e-9)


@SETTINGS
@given(annotation_frames())
def test_counts_give_what_the_frame_gives(frame) -> None:
    counts = pd.crosstab(frame[ITEM], frame[LABEL]).reindex(columns=range(4), fill_value=0).to_numpy()
    try:
        alpha, agreement = krippendorff_alpha(frame), percent_agreement(frame)
    except SchemaError:
        with pytest.raises(SchemaError):
            nominal_agreement_from_counts(counts)
        return
    assert nominal_agreement_from_counts(counts) == pytest.approx((alpha, agreement), abs=1e-12)


@SETTINGS
@given(annotation_frames(min_items=2), st.integers(0, 2**32 - 1))
def test_perfect_agreement_gives_alpha_one(frame, seed) -> None:
    # Every annotator of an item gives it the same label; at least two labels are used.
    rng = np.random.default_rng(seed)
    truth = pd.Series(rng.permutation(np.arange(frame[ITEM].nunique()) % 2))
    frame = frame.assign(**{LABEL: frame[ITEM].map(dict(zip(frame[ITEM].unique(), truth)))})
    pairable = frame.groupby(ITEM).filter(lambda g: len(g) >= 2)
    assume(pairable[LABEL].nunique() >= 2)
    assert krippendorff_alpha(frame) == 1.0


@SETTINGS
@given(annotation_frames(), st.integers(0, 2**32 - 1))
def test_alpha_is_invariant_to_row_order_and_to_renaming_classes(frame, seed) -> None:
    reference = _reference_alpha(frame)
    assume(reference is not None)
    rng = np.random.default_rng(seed)
    shuffled = frame.iloc[rng.permutation(len(frame))]
    names = {c: f"class-{p}" for c, p in zip(range(4), rng.permutation(4))}
    renamed = frame.assign(**{LABEL: frame[LABEL].map(names)})
    value = krippendorff_alpha(frame)
    assert krippendorff_alpha(shuffled) == pytest.approx(value, abs=1e-12)
    assert krippendorff_alpha(renamed) == pytest.approx(value, abs=1e-12)


def test_alpha_with_many_classes_equals_the_package() -> None:
    # More classes than labels per item: the (item, class) cells are counted sparsely.
    rng = np.random.default_rng(5)
    items = np.repeat(np.arange(200), 3)
    truth = rng.integers(0, 150, 200)
    labels = np.where(rng.random(600) < 0.6, truth[items], rng.integers(0, 150, 600))
    frame = pd.DataFrame({ITEM: items, ANNOTATOR: np.tile([0, 1, 2], 200), LABEL: labels})
    assert 200 * frame[LABEL].nunique() > 8 * len(frame)
    assert krippendorff_alpha(frame) == pytest.approx(_reference_alpha(frame), abs=1e-9)
    assert per_class_agreement(frame)[N_LABELS].sum() == 600


def test_items_with_one_label_do_not_change_alpha(small_annotations) -> None:
    extra = _frame([(10, "a", 0), (11, "b", 5), (12, "c", 2)])
    with_singles = pd.concat([small_annotations, extra], ignore_index=True)
    assert krippendorff_alpha(with_singles) == krippendorff_alpha(small_annotations)


def test_alpha_accepts_mixed_hashable_labels_and_ids() -> None:
    frame = _frame([("u1", 1, "x"), ("u1", "b", "x"), (2, 1, ("t", 1)), (2, "b", ("t", 1)),
                    (3.5, 1, "x"), (3.5, "b", ("t", 1))])
    codes = frame.assign(**{LABEL: frame[LABEL].map({"x": 0, ("t", 1): 1}),
                            ITEM: pd.factorize(frame[ITEM])[0], ANNOTATOR: pd.factorize(frame[ANNOTATOR])[0]})
    assert krippendorff_alpha(frame) == pytest.approx(_reference_alpha(codes), abs=1e-12)


def test_alpha_without_pairable_items_raises() -> None:
    frame = _frame([(0, "a", 0), (1, "b", 1), (2, "a", 1)])
    with pytest.raises(SchemaError, match="two or more annotators"):
        krippendorff_alpha(frame)


def test_alpha_with_one_class_everywhere_raises_like_the_package() -> None:
    frame = _frame([(0, "a", 1), (0, "b", 1), (1, "a", 1), (1, "b", 1)])
    with pytest.raises(ValueError):
        krippendorff.alpha(reliability_data=_reliability_matrix(frame), level_of_measurement="nominal")
    with pytest.raises(SchemaError, match="at least two distinct labels"):
        krippendorff_alpha(frame)


def test_alpha_with_one_class_on_pairable_items_raises_where_the_package_gives_nan() -> None:
    frame = _frame([(0, "a", 1), (0, "b", 1), (1, "a", 1), (1, "b", 1), (2, "a", 0)])
    assert _reference_alpha(frame) is None  # the package: NaN (0 / 0)
    with pytest.raises(SchemaError, match="only the label"):
        krippendorff_alpha(frame)


def test_alpha_rejects_unknown_levels_and_text_for_numeric_levels(small_annotations) -> None:
    with pytest.raises(SchemaError, match="'level'"):
        krippendorff_alpha(small_annotations, level="cardinal")
    text = small_annotations.assign(**{LABEL: small_annotations[LABEL].map({0: "lo", 1: "mid", 2: "hi"})})
    with pytest.raises(SchemaError, match="numeric labels"):
        krippendorff_alpha(text, level="ordinal")
    assert krippendorff_alpha(text) == krippendorff_alpha(small_annotations)


def test_alpha_on_a_real_crowd_equals_the_package(music_genre) -> None:
    frame = music_genre.annotations
    assert krippendorff_alpha(frame) == pytest.approx(_reference_alpha(frame), abs=1e-9)


# ------------------------------------------------------------------ coincidence matrix

def test_coincidence_matrix_by_hand() -> None:
    # Item 0: x, x, y (m = 3); item 1: y, y (m = 2); item 2: z alone (not pairable).
    frame = _frame([(0, "a", "x"), (0, "b", "x"), (0, "c", "y"), (1, "a", "y"), (1, "b", "y"),
                    (2, "a", "z")])
    o = coincidence_matrix(frame)
    expected = np.array([[2 / 2, 2 / 2, 0], [2 / 2, 0 / 2 + 2, 0], [0, 0, 0]])
    np.testing.assert_allclose(o.to_numpy(), expected)
    assert list(o.index) == ["x", "y", "z"] and o.index.name == LABEL


@SETTINGS
@given(annotation_frames())
def test_coincidence_matrix_is_symmetric_and_sums_to_the_pairable_labels(frame) -> None:
    o = coincidence_matrix(frame).to_numpy()
    sizes = frame.groupby(ITEM).size()
    np.testing.assert_allclose(o, o.T, atol=1e-12)
    assert o.sum() == pytest.approx(sizes[sizes >= 2].sum())
    assert (o >= -1e-12).all()


# ------------------------------------------------------------------ Fleiss' kappa

# Fleiss (1971) as worked on Wikipedia ("Fleiss' kappa"): 10 subjects, 14 raters, 5 categories.
FLEISS_TABLE = np.array([
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
])


def _from_counts(table: np.ndarray) -> pd.DataFrame:
    """Long frame from an items x categories count table; rater ids differ per item."""
    rows = []
    for item, counts in enumerate(table):
        labels = np.repeat(np.arange(table.shape[1]), counts)
        rows += [(item, f"r{item}-{j}", int(label)) for j, label in enumerate(labels)]
    return _frame(rows)


def test_fleiss_kappa_reproduces_the_worked_example() -> None:
    assert round(fleiss_kappa(_from_counts(FLEISS_TABLE)), 3) == 0.210
    # Its parts, as the worked example states them: P_bar = 0.378, P_e = 0.213.
    assert percent_agreement(_from_counts(FLEISS_TABLE)) == pytest.approx(0.378, abs=5e-4)


@SETTINGS
@given(annotation_frames(min_items=2, missing=False), st.integers(0, 2**32 - 1))
def test_fleiss_kappa_and_alpha_agree_on_complete_data(frame, seed) -> None:
    # With m labels on each of N items, alpha = 1 - (1 - kappa) (N m - 1) / (N m).
    assume(frame[LABEL].nunique() >= 2)
    n = len(frame)
    kappa = fleiss_kappa(frame.iloc[np.random.default_rng(seed).permutation(n)])
    assert krippendorff_alpha(frame) == pytest.approx(1 - (1 - kappa) * (n - 1) / n, abs=1e-9)


def test_fleiss_kappa_perfect_agreement_is_one() -> None:
    assert fleiss_kappa(_from_counts(np.array([[3, 0], [0, 3], [3, 0]]))) == 1.0


def test_fleiss_kappa_needs_the_same_number_of_labels_per_item(small_annotations) -> None:
    with pytest.raises(SchemaError, match="same number of labels on every item.*1 items with 1, 3 items with 3"):
        fleiss_kappa(small_annotations)


@pytest.mark.parametrize(("rows", "fragment"), [
    ([(0, "a", 0), (1, "a", 1)], "at least two labels per item"),
    ([(0, "a", 0), (0, "b", 0), (1, "a", 0), (1, "b", 0)], "at least two classes"),
])
def test_fleiss_kappa_undefined_cases_raise(rows, fragment) -> None:
    with pytest.raises(SchemaError, match=fragment):
        fleiss_kappa(_frame(rows))


# ------------------------------------------------------------------ pairwise Cohen's kappa

def _crowd(seed: int, n_items: int = 60, n_annotators: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    present = rng.random((n_items, n_annotators)) < 0.6
    items, annotators = np.nonzero(present)
    truth = rng.integers(0, 3, n_items)
    labels = np.where(rng.random(items.size) < 0.7, truth[items], rng.integers(0, 3, items.size))
    return pd.DataFrame({ITEM: items, ANNOTATOR: [f"w{a}" for a in annotators], LABEL: labels})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pairwise_kappa_equals_sklearn_for_every_pair(seed: int) -> None:
    frame = _crowd(seed)
    result = cohen_kappa_pairwise(frame, min_overlap=1)
    wide = frame.pivot(index=ITEM, columns=ANNOTATOR, values=LABEL)
    expected = []
    for a, b in itertools.combinations(sorted(wide.columns), 2):
        both = wide[[a, b]].dropna()
        if len(both):
            with np.errstate(all="ignore"):
                kappa = cohen_kappa_score(both[a], both[b]) if both.stack().nunique() > 1 else np.nan
            expected.append((a, b, len(both), float((both[a] == both[b]).mean()), kappa))
    expected = pd.DataFrame(expected, columns=[ANNOTATOR_A, ANNOTATOR_B, N_ITEMS, AGREEMENT, KAPPA])
    pd.testing.assert_frame_equal(result, expected, check_exact=False, atol=1e-12, rtol=0)


def test_pairwise_kappa_leaves_out_pairs_with_little_overlap() -> None:
    frame = _crowd(0)
    everything = cohen_kappa_pairwise(frame, min_overlap=1)
    kept = cohen_kappa_pairwise(frame, min_overlap=25)
    assert len(kept) < len(everything) and (kept[N_ITEMS] >= 25).all()
    pd.testing.assert_frame_equal(kept, everything[everything[N_ITEMS] >= 25].reset_index(drop=True))
    assert list(cohen_kappa_pairwise(frame, min_overlap=10_000).columns) == list(everything.columns)
    assert cohen_kappa_pairwise(frame, min_overlap=10_000).empty


def test_pairwise_kappa_is_nan_when_undefined_and_one_when_perfect() -> None:
    frame = _frame([(0, "a", 1), (0, "b", 1), (1, "a", 1), (1, "b", 1),
                    (0, "c", 0), (1, "c", 1)])
    result = cohen_kappa_pairwise(frame, min_overlap=1).set_index([ANNOTATOR_A, ANNOTATOR_B])
    assert np.isnan(result.loc[("a", "b"), KAPPA]) and result.loc[("a", "b"), AGREEMENT] == 1.0
    assert result.loc[("a", "c"), KAPPA] == pytest.approx(0.0)
    perfect = _frame([(0, "a", 1), (0, "b", 1), (1, "a", 0), (1, "b", 0)])
    assert cohen_kappa_pairwise(perfect, min_overlap=1)[KAPPA].tolist() == [1.0]


@pytest.mark.parametrize("bad", [0, -1, 2.5, "10", True])
def test_pairwise_kappa_rejects_bad_min_overlap(small_annotations, bad) -> None:
    with pytest.raises(SchemaError, match="'min_overlap'"):
        cohen_kappa_pairwise(small_annotations, min_overlap=bad)


# ------------------------------------------------------------------ per-class agreement

def test_per_class_agreement_is_positive_specific_agreement_for_two_annotators() -> None:
    # A 2 x 2 table: both say yes on 6 items (a), yes/no on 2 (b), no/yes on 1 (c), both no on 3 (d).
    pairs = [("yes", "yes")] * 6 + [("yes", "no")] * 2 + [("no", "yes")] * 1 + [("no", "no")] * 3
    rows = [(i, who, lab) for i, pair in enumerate(pairs) for who, lab in zip("ab", pair)]
    table = per_class_agreement(_frame(rows))
    assert table.loc["yes", SPECIFIC_AGREEMENT] == pytest.approx(2 * 6 / (2 * 6 + 2 + 1))
    assert table.loc["no", SPECIFIC_AGREEMENT] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert table.loc["yes", N_LABELS] == 6 * 2 + 2 + 1
    assert list(table.columns) == [N_LABELS, N_PAIRS, N_AGREEING, SPECIFIC_AGREEMENT]


def test_per_class_agreement_gives_nan_for_a_class_seen_only_alone(small_annotations) -> None:
    frame = pd.concat([small_annotations, _frame([(9, "a", 7)])], ignore_index=True)
    table = per_class_agreement(frame)
    assert list(table.index) == [0, 1, 2, 7]
    assert table.loc[7, [N_LABELS, N_PAIRS, N_AGREEING]].tolist() == [0, 0, 0]
    assert np.isnan(table.loc[7, SPECIFIC_AGREEMENT])
    # Class 1: item 1 (a, b say 1, c says 2): 2 labels, 2 * 2 pairs, 2 agreeing.
    assert table.loc[1, [N_LABELS, N_PAIRS, N_AGREEING]].tolist() == [2, 4, 2]


@SETTINGS
@given(annotation_frames())
def test_per_class_counts_add_up_to_the_ordered_pairs(frame) -> None:
    table = per_class_agreement(frame)
    sizes = frame.groupby(ITEM).size()
    pairable = sizes[sizes >= 2]
    assert table[N_LABELS].sum() == pairable.sum()
    assert table[N_PAIRS].sum() == (pairable * (pairable - 1)).sum()
    counts = frame.groupby([ITEM, LABEL]).size()
    assert table[N_AGREEING].sum() == (counts * (counts - 1)).sum()
    assert table[SPECIFIC_AGREEMENT].dropna().between(0, 1).all()


# ------------------------------------------------------------------ percent agreement

def test_percent_agreement_by_hand(small_annotations) -> None:
    # Items 0 and 2: 3 of 3 pairs agree; item 1: 1 of 3; item 3 has one label.
    assert percent_agreement(small_annotations) == pytest.approx((1 + 1 / 3 + 1) / 3)


@SETTINGS
@given(annotation_frames())
def test_percent_agreement_is_the_mean_share_of_agreeing_pairs(frame) -> None:
    sizes = frame.groupby(ITEM).size()
    assume((sizes >= 2).any())
    shares = []
    for _, group in frame.groupby(ITEM):
        labels = group[LABEL].tolist()
        if len(labels) >= 2:
            pairs = list(itertools.combinations(labels, 2))
            shares.append(np.mean([x == y for x, y in pairs]))
    assert percent_agreement(frame) == pytest.approx(np.mean(shares), abs=1e-12)


def test_percent_agreement_without_pairable_items_raises() -> None:
    with pytest.raises(SchemaError, match="two or more annotators"):
        percent_agreement(_frame([(0, "a", 0), (1, "a", 0)]))


# ------------------------------------------------------------------ accuracy against gold

def test_annotator_accuracy_by_hand(small_annotations) -> None:
    gold = pd.Series({0: 0, 1: 1, 3: 2})  # item 2 has no gold
    table = annotator_accuracy(small_annotations, gold)
    assert list(table.index) == ["a", "b", "c"] and table.index.name == ANNOTATOR
    assert table[N_ITEMS].tolist() == [3, 2, 2]
    assert table[N_CORRECT].tolist() == [2, 2, 1]
    np.testing.assert_allclose(table[ACCURACY], [2 / 3, 1.0, 0.5])


def test_annotator_accuracy_is_nan_for_annotators_without_gold_items(small_annotations) -> None:
    table = annotator_accuracy(small_annotations, pd.Series({3: 1}))
    assert table.loc["a", ACCURACY] == 1.0
    assert table.loc["b", N_ITEMS] == 0 and np.isnan(table.loc["b", ACCURACY])


def test_annotator_accuracy_on_a_real_crowd(music_genre) -> None:
    table = annotator_accuracy(music_genre.annotations, music_genre.gold)
    joined = music_genre.annotations.join(music_genre.gold.rename("gold"), on=ITEM)
    expected = (joined[LABEL] == joined["gold"]).groupby(joined[ANNOTATOR]).mean()
    pd.testing.assert_series_equal(table[ACCURACY].dropna(), expected.loc[table[ACCURACY].dropna().index],
                                   check_names=False)


@pytest.mark.parametrize(("gold", "fragment"), [
    ({0: 1}, "Series"),
    (pd.Series([1, 0], index=[0, 0]), "one label per item_id"),
    (pd.Series([1.0, np.nan], index=[0, 1]), "no missing values"),
])
def test_annotator_accuracy_rejects_bad_gold(small_annotations, gold, fragment) -> None:
    with pytest.raises(SchemaError, match=f"'gold'.*{fragment}"):
        annotator_accuracy(small_annotations, gold)


# ------------------------------------------------------------------ bad frames, every function

EVERY_FUNCTION = [krippendorff_alpha, fleiss_kappa, percent_agreement, per_class_agreement,
                  cohen_kappa_pairwise, coincidence_matrix,
                  lambda frame: annotator_accuracy(frame, pd.Series({0: 0}))]


@pytest.mark.parametrize("function", EVERY_FUNCTION)
@pytest.mark.parametrize(("frame", "fragment"), [
    (np.zeros((3, 3)), "DataFrame"),
    (pd.DataFrame({ITEM: [0], LABEL: [1]}), "missing"),
    (pd.DataFrame(columns=[ITEM, ANNOTATOR, LABEL]), "non-empty"),
    (_frame([(0, "a", 1), (0, "a", 0), (0, "b", 1)]), "at most one label"),
    (_frame([(0, "a", 1), (0, "b", None)]), "missing values"),
])
def test_every_function_rejects_malformed_frames(function, frame, fragment) -> None:
    with pytest.raises(SchemaError, match=f"'annotations'.*{fragment}"):
        function(frame)
