"""loop.impact: invariants on random histories (hypothesis), the definitions on small frames,
and input checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loop.exceptions import SchemaError
from loop.impact import annotator_impact, impact_totals

PEOPLE = ["u", "v", "w"]


@st.composite
def histories(draw):
    """Answers over a few items and rounds, and a resolution chain per item whose changes
    follow answers (or not), with a random next model."""
    n_items, n_rounds, k = draw(st.integers(1, 6)), draw(st.integers(1, 4)), 3
    answers, history, predictions = [], [], []
    next_id = 1
    for item in range(n_items):
        head = None
        for r in range(n_rounds):
            for person in draw(st.lists(st.sampled_from(PEOPLE), max_size=3)):
                answers.append((f"i{item}", person, draw(st.integers(0, k - 1)), r))
            if head is None or draw(st.booleans()):
                label = draw(st.integers(0, k - 1))
                history.append((next_id, f"i{item}", label, pd.NA if head is None else head, r))
                head, next_id = next_id, next_id + 1
            predictions.append((f"i{item}", r, draw(st.integers(0, k - 1))))
    disputes = [(f"i{draw(st.integers(0, n_items - 1))}", draw(st.sampled_from(PEOPLE)),
                 draw(st.one_of(st.none(), st.integers(0, k - 1))), draw(st.sampled_from(["open", "resolved",
                                                                                         "rejected"])),
                 draw(st.integers(0, n_rounds - 1))) for _ in range(draw(st.integers(0, 3)))]
    return (pd.DataFrame(answers, columns=["item_id", "annotator_id", "label", "round"]),
            pd.DataFrame(history, columns=["resolution_id", "item_id", "label", "supersedes", "round"]),
            pd.DataFrame(disputes, columns=["item_id", "annotator_id", "label", "status", "round"]),
            pd.DataFrame(predictions, columns=["item_id", "round", "predicted"]),
            draw(st.one_of(st.none(), st.integers(0, n_rounds - 1))))


@settings(max_examples=150, deadline=None)
@given(histories())
def test_counts_are_bounded_and_shares_sum_to_at_most_one(case):
    answers, history, disputes, predictions, closed = case
    out = annotator_impact(answers, history, closed_round=closed, disputes=disputes, next_predictions=predictions)
    assert (out["confirmed"] + out["overturned"] + out["pending"] <= out["answers"]).all()
    assert (out["errors_fixed_model_right"] <= out["errors_fixed"]).all()
    shares = out["share_of_error_reduction"]
    assert shares.between(0.0, 1.0).all()
    assert (out.groupby("round")["share_of_error_reduction"].sum() <= 1.0 + 1e-9).all()
    assert out["answers"].sum() == len(answers)
    totals = impact_totals(out) if len(out) else None
    if totals is not None:
        assert totals["share_of_error_reduction"].between(0.0, 1.0).all()
        assert totals["answers"].sum() == len(answers)


@settings(max_examples=100, deadline=None)
@given(histories())
def test_every_model_backed_change_backed_by_someone_gives_shares_summing_to_one(case):
    answers, history, _, predictions, _ = case
    # The next model agrees with every label and every change's new label was answered in its
    # round by the annotator "z": then "z" holds the whole of every round's reduction.
    changes = history[history["supersedes"].notna()]
    backing = changes[["item_id", "label", "round"]].assign(annotator_id="z")
    agree = history[["item_id", "round", "label"]].rename(columns={"label": "predicted"})
    out = annotator_impact(pd.concat([answers[~answers["item_id"].isin(changes["item_id"])], backing]), history,
                           next_predictions=agree)
    changed_before = history.set_index("resolution_id")["label"]
    real = changes[changes["supersedes"].astype("Int64").map(changed_before).to_numpy() != changes["label"].to_numpy()]
    z = out[out["annotator_id"] == "z"].set_index("round")["share_of_error_reduction"]
    for r in real["round"].unique():
        assert z[r] == pytest.approx(1.0)


def test_an_open_round_is_pending_and_a_closed_one_judged():
    answers = pd.DataFrame({"item_id": ["a", "a"], "annotator_id": ["u", "v"], "label": [0, 1], "round": [1, 2]})
    history = pd.DataFrame({"resolution_id": [1], "item_id": ["a"], "label": [1], "supersedes": [pd.NA],
                            "round": [0]})
    out = annotator_impact(answers, history, closed_round=1).set_index("annotator_id")
    assert (out.loc["u", "overturned"], out.loc["u", "pending"]) == (1, 0)
    assert (out.loc["v", "overturned"], out.loc["v", "pending"], out.loc["v", "confirmed"]) == (0, 1, 0)


def test_a_dispute_is_won_only_when_the_label_became_the_proposed_one():
    history = pd.DataFrame({"resolution_id": [1, 2], "item_id": ["a", "a"], "label": [0, 2],
                            "supersedes": [pd.NA, 1], "round": [0, 1]})
    disputes = pd.DataFrame({"item_id": ["a", "a", "a", "a"], "annotator_id": ["u", "v", "w", "x"],
                             "label": [2, 1, pd.NA, 2], "status": ["resolved", "resolved", "resolved", "rejected"],
                             "round": [1, 1, 1, 1]})
    out = annotator_impact(pd.DataFrame(columns=["item_id", "annotator_id", "label", "round"]), history,
                           disputes=disputes).set_index("annotator_id")
    assert out["disputes_won"].to_dict() == {"u": 1, "v": 0, "w": 1, "x": 0}


def test_true_fixes_count_only_where_truth_agrees():
    answers = pd.DataFrame({"item_id": ["a", "b"], "annotator_id": ["u", "u"], "label": [1, 1], "round": [1, 1]})
    history = pd.DataFrame({"resolution_id": [1, 2, 3, 4], "item_id": ["a", "b", "a", "b"], "label": [0, 0, 1, 1],
                            "supersedes": [pd.NA, pd.NA, 1, 2], "round": [0, 0, 1, 1]})
    out = annotator_impact(answers, history, truth=pd.Series({"a": 1, "b": 2}))
    assert out.loc[0, "errors_fixed"] == 2 and out.loc[0, "true_errors_fixed"] == 1
    assert out.loc[0, "errors_fixed_model_right"] == 0  # no next model given: nothing it agrees with


@pytest.mark.parametrize("kwargs,field", [
    ({"answers": [1, 2]}, "answers"),
    ({"answers": pd.DataFrame({"item_id": ["a"], "annotator_id": ["u"], "label": [0]})}, "answers"),
    ({"answers": pd.DataFrame({"item_id": ["a"], "annotator_id": ["u"], "label": [0], "round": [-1]})},
     "answers.round"),
    ({"closed_round": -1}, "closed_round"),
    ({"disputes": pd.DataFrame({"item_id": ["a"]})}, "disputes"),
    ({"truth": {"a": 1}}, "truth"),
])
def test_bad_input_is_refused_naming_the_field(kwargs, field):
    args = {"answers": pd.DataFrame({"item_id": ["a"], "annotator_id": ["u"], "label": [0], "round": [0]}),
            "history": pd.DataFrame({"resolution_id": [1], "item_id": ["a"], "label": [0], "supersedes": [pd.NA],
                                     "round": [0]})}
    args.update(kwargs)
    answers, history = args.pop("answers"), args.pop("history")
    with pytest.raises(SchemaError, match=f"'{field}'"):
        annotator_impact(answers, history, **args)


def test_empty_inputs_give_an_empty_table():
    out = annotator_impact(pd.DataFrame(columns=["item_id", "annotator_id", "label", "round"]),
                           pd.DataFrame(columns=["resolution_id", "item_id", "label", "supersedes", "round"]))
    assert out.empty and np.all(out.columns[:3] == ["round", "annotator_id", "skill"])
