"""Resolution rules: each action's rule, experts over the crowd, ties drawn from the rng."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loop.columns import ANNOTATOR, ITEM, LABEL, REASON
from loop.exceptions import SchemaError
from loop.resolution import (METHOD, METHOD_ADJUDICATED, METHOD_AUTO, METHOD_CONSENSUS, METHOD_EXPERT,
                             RESOLUTION_COLUMNS, resolve_actions)
from loop.strategies import ACTION

EXPERTS = {"e1", "e2"}


def _plan(**actions: str) -> pd.DataFrame:
    return pd.DataFrame({ITEM: list(actions), ACTION: list(actions.values())})


def _answers(*rows: tuple[str, str, int]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[ITEM, ANNOTATOR, LABEL])


def _resolve(plan, answers, annotations=None, **kw):
    kw.setdefault("strategy", "random")
    kw.setdefault("predicted", pd.Series({i: 0 for i in plan[ITEM]}))
    return resolve_actions(plan, answers, answers if annotations is None else annotations, experts=EXPERTS, **kw)


def _by_item(out: pd.DataFrame) -> dict[str, tuple[int, str]]:
    return {i: (int(l), m) for i, l, m in zip(out[ITEM], out[LABEL], out[METHOD])}


def test_keep_resolves_nothing_and_columns_are_fixed() -> None:
    out = _resolve(_plan(a="keep"), _answers())
    assert out.empty and tuple(out.columns) == RESOLUTION_COLUMNS


def test_auto_accept_takes_the_predicted_class() -> None:
    out = _resolve(_plan(a="auto_accept", b="keep"), _answers(), predicted=pd.Series({"a": 3, "b": 1}))
    assert _by_item(out) == {"a": (3, METHOD_AUTO)}
    assert "the model's label" in out[REASON].iloc[0]
    tiered = _resolve(_plan(a="auto_accept"), _answers(), strategy="tiered", predicted=pd.Series({"a": 3}))
    assert "consensus of the model" in tiered[REASON].iloc[0]


def test_expert_label_is_final_and_beats_the_crowd() -> None:
    answers = _answers(("a", "c1", 1), ("a", "e1", 2))
    assert _by_item(_resolve(_plan(a="expert"), answers)) == {"a": (2, METHOD_EXPERT)}


def test_double_blind_agreed_vs_adjudicated() -> None:
    answers = _answers(("a", "c1", 1), ("a", "c2", 1),              # agreed
                       ("b", "c1", 0), ("b", "c2", 1), ("b", "e1", 2))  # disagreed: the expert adjudicates
    out = _by_item(_resolve(_plan(a="double_blind", b="double_blind"), answers))
    assert out == {"a": (1, METHOD_CONSENSUS), "b": (2, METHOD_ADJUDICATED)}


def test_a_double_blind_pair_missing_an_answer_or_its_adjudication_settles_nothing() -> None:
    # People: the second label (or the adjudicator) did not come within the SLA.
    answers = _answers(("a", "c1", 1), ("b", "c1", 0), ("b", "c2", 1))
    assert _resolve(_plan(a="double_blind", b="double_blind"), answers).empty


def test_review_without_tiered_is_dawid_skene_and_named() -> None:
    history = _answers(*[(f"i{j}", a, j % 2) for j in range(6) for a in ("c1", "c2", "c3")],
                       ("a", "c1", 1), ("a", "c2", 1), ("a", "c3", 0))
    out = _resolve(_plan(a="review"), history.tail(1), annotations=history)
    assert _by_item(out) == {"a": (1, METHOD_CONSENSUS)}
    assert "Dawid-Skene" in out[REASON].iloc[0]


def test_tiered_review_takes_the_posterior_argmax() -> None:
    answers = _answers(("a", "c1", 0), ("a", "c2", 1))
    posterior = pd.DataFrame([[0.2, 0.8]], index=["a"])
    out = _resolve(_plan(a="review"), answers, strategy="tiered", posterior=posterior)
    assert _by_item(out) == {"a": (1, METHOD_CONSENSUS)}
    with pytest.raises(SchemaError, match="'posterior'"):
        _resolve(_plan(a="review"), answers, strategy="tiered")


def test_triple_majority_and_ties_drawn_with_the_given_rng() -> None:
    answers = _answers(("a", "c1", 1), ("a", "c2", 1), ("a", "c3", 0),
                       ("b", "c1", 0), ("b", "c2", 1), ("b", "c3", 2))
    plan = _plan(a="triple", b="triple")
    draws = {_by_item(_resolve(plan, answers, rng=np.random.default_rng(seed)))["b"][0] for seed in range(30)}
    assert draws == {0, 1, 2}  # a three-way tie is not always the first class
    out = _by_item(_resolve(plan, answers, rng=np.random.default_rng(5)))
    assert out["a"] == (1, METHOD_CONSENSUS)
    again = _by_item(_resolve(plan, answers, rng=np.random.default_rng(5)))
    assert again == out
    with pytest.raises(SchemaError, match="'rng'"):
        _resolve(plan, answers)


def test_inputs_are_validated() -> None:
    with pytest.raises(SchemaError, match="'plan'"):
        _resolve(pd.DataFrame({ITEM: ["a"]}), _answers())
    with pytest.raises(SchemaError, match="'plan.action'"):
        _resolve(_plan(a="shout"), _answers())
    with pytest.raises(SchemaError, match="'strategy'"):
        _resolve(_plan(a="keep"), _answers(), strategy="vibes")


def test_the_public_names_are_listed_once_and_exist() -> None:
    import loop.resolution as module

    assert sorted(module.__all__) == sorted(set(module.__all__))
    assert all(hasattr(module, name) for name in module.__all__)
