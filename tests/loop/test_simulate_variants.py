"""Experiment arms on a simulated crowd: guideline, examples, suggestion anchoring, double-blind."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loop.columns import ANNOTATOR, COST, ITEM, LABEL, SECONDS
from loop.exceptions import SchemaError
from loop.simulate import Guideline, Tier, Variant, annotate_variant, examples_effect, make_crowd

K = 4


@pytest.fixture(scope="module")
def crowd():
    confusability = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=float)
    return make_crowd({Tier.EXPERIENCED: 12}, K, confusability=confusability, rng=0)


@pytest.fixture(scope="module")
def truth():
    return pd.Series(np.random.default_rng(1).integers(0, K, 4000), index=[f"i{i}" for i in range(4000)])


def _accuracy(crowd, truth, variant, *, suggestions=None, seed=2):
    rng = np.random.default_rng(seed)
    tasks, answers = annotate_variant(crowd, crowd.assign(truth.index, 1, rng=rng), truth, variant,
                                      suggestions=suggestions, rng=rng)
    return (tasks[LABEL].to_numpy() == truth.reindex(tasks[ITEM]).to_numpy()).mean(), tasks, answers


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 50), st.lists(st.floats(0.05, 1), min_size=K, max_size=K))
def test_examples_keep_rows_stochastic_and_never_lower_the_diagonal(examples, weights):
    row = np.array(weights) / np.sum(weights)
    matrix = np.stack([np.roll(row, i) for i in range(K)])
    out = examples_effect(matrix, examples)
    assert np.allclose(out.sum(axis=1), 1)
    assert (np.diag(out) >= np.diag(matrix) - 1e-12).all()
    assert (out >= 0).all()


def test_a_guideline_and_examples_raise_accuracy_and_examples_cost_time(crowd, truth):
    base, base_tasks, _ = _accuracy(crowd, truth, Variant("control"))
    clarified, _, _ = _accuracy(crowd, truth, Variant("v2", guideline=Guideline("v2", {(0, 1): 0.8, (2, 3): 0.8})))
    shown, shown_tasks, _ = _accuracy(crowd, truth, Variant("examples", examples=10))
    assert clarified > base + 0.05
    assert base < shown < clarified
    # Same draws of seconds, multiplied by 1 + 0.02 * 10.
    assert shown_tasks[SECONDS].sum() == pytest.approx(1.2 * base_tasks[SECONDS].sum())


def test_a_shown_suggestion_helps_when_right_and_hurts_when_wrong(crowd, truth):
    base, _, _ = _accuracy(crowd, truth, Variant("control"))
    right, tasks, _ = _accuracy(crowd, truth, Variant("s", suggestion=True, anchoring=0.5), suggestions=truth)
    wrong, _, _ = _accuracy(crowd, truth, Variant("s", suggestion=True, anchoring=0.5), suggestions=(truth + 1) % K)
    # P(correct) = a * 1[right] + (1 - a) * base.
    assert right == pytest.approx(0.5 + 0.5 * base, abs=0.03)
    assert wrong == pytest.approx(0.5 * base, abs=0.03)
    with pytest.raises(SchemaError, match="suggestions"):
        annotate_variant(crowd, crowd.assign(truth.index[:5], 1, rng=0), truth, Variant("s", suggestion=True), rng=0)


def test_double_blind_answers_a_pair_twice_and_its_label_is_better_there(crowd, truth):
    base, base_tasks, _ = _accuracy(crowd, truth, Variant("control"))
    blind, tasks, answers = _accuracy(crowd, truth, Variant("db", double_blind=((0, 1),)))
    first_in_pair = base_tasks[LABEL].isin([0, 1]).to_numpy()
    # Tasks whose first answer is in the pair got 2 or 3 answers, the others 1.
    assert (tasks["answers"].to_numpy()[first_in_pair] >= 2).all()
    assert (tasks["answers"].to_numpy()[~first_in_pair] == 1).all()
    assert len(answers) == tasks["answers"].sum()
    assert tasks[COST].sum() == pytest.approx(answers[COST].sum())
    assert not answers.duplicated([ITEM, ANNOTATOR]).any()
    pair = truth.reindex(tasks[ITEM]).isin([0, 1]).to_numpy()
    right = tasks[LABEL].to_numpy() == truth.reindex(tasks[ITEM]).to_numpy()
    base_right = base_tasks[LABEL].to_numpy() == truth.reindex(base_tasks[ITEM]).to_numpy()
    assert right[pair].mean() > base_right[pair].mean() + 0.03
    assert blind > base


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"name": ""}, "name"), ({"name": "a", "examples": -1}, "examples"), ({"name": "a", "anchoring": 2}, "anchoring"),
    ({"name": "a", "double_blind": ((1, 1),)}, "double_blind"), ({"name": "a", "suggestion": "yes"}, "suggestion"),
    ({"name": "a", "guideline": "v2"}, "guideline"),
])
def test_bad_variants_name_the_field(kwargs, field):
    with pytest.raises(SchemaError, match=field):
        Variant(**kwargs)


def test_the_variants_are_public():
    import loop.simulate as module
    from loop.simulate import _variants

    assert {"Variant", "annotate_variant", "examples_effect"} <= set(module.__all__)
    assert all(hasattr(_variants, name) for name in _variants.__all__)
