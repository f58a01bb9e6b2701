"""loop.routing: each rule with its reason, the thresholds' contract, invariants, bad input."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from loop.columns import (
    CONFIDENCE,
    ENTROPY,
    ITEM,
    LABEL_ISSUE_SCORE,
    MARGIN,
    PREDICTED,
    PRIORITY,
    REASON,
    ROUTE,
    RUNNER_UP,
)
from loop.exceptions import SchemaError
from loop.routing import Route, RoutingThresholds, route, score_items


def _scores(rows: list[tuple]) -> pd.DataFrame:
    """(item_id, predicted, runner_up, confidence, margin, label_issue_score) rows."""
    return pd.DataFrame(rows, columns=[ITEM, PREDICTED, RUNNER_UP, CONFIDENCE, MARGIN, LABEL_ISSUE_SCORE])


def _one(row: tuple, thresholds: RoutingThresholds | None = None) -> tuple[str, str, float]:
    out = route(_scores([row]), thresholds or RoutingThresholds())
    return out[ROUTE][0], out[REASON][0], out[PRIORITY][0]


# ----------------------------------------------------------------------------- Route


def test_route_values_are_the_strings_in_the_route_column() -> None:
    assert [r.value for r in Route] == ["auto_accept", "review", "expert", "double_blind"]
    assert Route("expert") is Route.EXPERT and Route.EXPERT == "expert" and str(Route.EXPERT) == "expert"
    assert [r for r in Route if not r.needs_person] == [Route.AUTO_ACCEPT]


# ----------------------------------------------------------------------------- thresholds


def test_thresholds_round_trip_through_dict_yaml_and_json() -> None:
    t = RoutingThresholds(auto_accept_confidence=0.95, expert_margin=0.2, double_blind_issue_score=0.7,
                          class_risk_weights={"cat": 2, "dog": 0.5}, always_human={"tiger"},
                          guideline_refs={("cat", "dog"): "guideline v3 §2"}, max_auto_accept_error=0.02)
    assert RoutingThresholds.from_dict(t.to_dict()) == t
    assert RoutingThresholds.from_dict(yaml.safe_load(yaml.safe_dump(t.to_dict()))) == t
    assert RoutingThresholds.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    assert t.to_dict()["guideline_refs"] == [{"classes": ["cat", "dog"], "ref": "guideline v3 §2"}]


def test_thresholds_are_frozen_hashable_and_picklable() -> None:
    t = RoutingThresholds(class_risk_weights={3: 2.0}, guideline_refs={frozenset({3, 5}): "g"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.expert_margin = 0.5  # type: ignore[misc]
    with pytest.raises(TypeError):
        t.class_risk_weights[3] = 9.0  # type: ignore[index]
    assert hash(t) == hash(RoutingThresholds(class_risk_weights={3: 2}, guideline_refs={(5, 3): "g"}))
    assert pickle.loads(pickle.dumps(t)) == t and copy.deepcopy(t) == t
    assert dataclasses.replace(t, expert_margin=0.2).expert_margin == 0.2


@pytest.mark.parametrize("field, value", [
    ("auto_accept_confidence", 0.0),
    ("auto_accept_confidence", 1.01),
    ("auto_accept_confidence", float("nan")),
    ("auto_accept_confidence", "0.9"),
    ("expert_margin", -0.1),
    ("expert_margin", 1.5),
    ("double_blind_issue_score", 2),
    ("class_risk_weights", {"cat": -1}),
    ("class_risk_weights", [("cat", 1)]),
    ("class_risk_weights", {3: 1, "3": 2}),
    ("always_human", "cat"),
    ("guideline_refs", {("cat",): "g"}),
    ("guideline_refs", {("cat", "dog"): ""}),
    ("guideline_refs", [{"classes": ["cat", "dog"]}]),
    ("max_auto_accept_error", 0.0),
    ("max_auto_accept_error", 1.0),
    ("max_auto_accept_error", "0.02"),
    ("max_auto_accept_error", True),
])
def test_out_of_range_thresholds_name_the_field(field: str, value) -> None:
    with pytest.raises(SchemaError, match=field):
        RoutingThresholds(**{field: value})
    with pytest.raises(SchemaError, match=field):
        RoutingThresholds.from_dict({field: value})


def test_unknown_keys_list_the_valid_ones() -> None:
    with pytest.raises(SchemaError, match=r"unknown keys \['auto_accept'\]") as info:
        RoutingThresholds.from_dict({"auto_accept": 0.9})
    for name in ("auto_accept_confidence", "expert_margin", "double_blind_issue_score",
                 "class_risk_weights", "always_human", "guideline_refs"):
        assert name in str(info.value)
    with pytest.raises(SchemaError, match="'config'"):
        RoutingThresholds.from_dict([("expert_margin", 0.1)])  # type: ignore[arg-type]


def test_edge_thresholds_are_accepted() -> None:
    t = RoutingThresholds(auto_accept_confidence=1, expert_margin=0, double_blind_issue_score=1)
    assert t.auto_accept_confidence == 1.0 and isinstance(t.auto_accept_confidence, float)


# ----------------------------------------------------------------------------- score_items


def test_score_items_builds_the_frame_the_router_reads() -> None:
    probs = [[0.05, 0.9, 0.05], [0.45, 0.1, 0.45], [0.2, 0.3, 0.5]]
    scores = score_items(probs, item_ids=["x", "y", "z"], classes=["a", "b", "c"],
                         label_issue_scores=[0.1, np.nan, 0.9])
    assert list(scores.columns) == [ITEM, PREDICTED, RUNNER_UP, CONFIDENCE, MARGIN, ENTROPY, LABEL_ISSUE_SCORE]
    assert scores[ITEM].tolist() == ["x", "y", "z"]
    assert scores[PREDICTED].tolist() == ["b", "a", "c"]
    assert scores[RUNNER_UP].tolist() == ["a", "c", "b"]
    np.testing.assert_allclose(scores[CONFIDENCE], [0.9, 0.45, 0.5])
    np.testing.assert_allclose(scores[MARGIN], [0.85, 0.0, 0.2], atol=1e-12)
    assert scores[ENTROPY].between(0, 1).all()
    np.testing.assert_array_equal(scores[LABEL_ISSUE_SCORE], [0.1, np.nan, 0.9])


def test_score_items_defaults() -> None:
    scores = score_items([[0.3, 0.7], [0.6, 0.4]])
    assert scores[ITEM].tolist() == [0, 1]
    assert scores[PREDICTED].tolist() == [1, 0]
    assert scores[LABEL_ISSUE_SCORE].isna().all()


@pytest.mark.parametrize("kwargs, name", [
    ({"item_ids": [1]}, "item_ids"),
    ({"item_ids": [1, 1]}, "item_ids"),
    ({"item_ids": [1, None]}, "item_ids"),
    ({"classes": ["a"]}, "classes"),
    ({"classes": ["a", "a"]}, "classes"),
    ({"classes": "ab"}, "classes"),
    ({"label_issue_scores": [0.5, 1.5]}, "label_issue_scores"),
    ({"label_issue_scores": [0.5]}, "label_issue_scores"),
    ({"label_issue_scores": [0.5, np.inf]}, "label_issue_scores"),
])
def test_score_items_bad_input(kwargs: dict, name: str) -> None:
    with pytest.raises(SchemaError, match=f"'{name}'"):
        score_items([[0.3, 0.7], [0.6, 0.4]], **kwargs)


def test_score_items_rejects_bad_probabilities() -> None:
    with pytest.raises(SchemaError, match="'pred_probs'"):
        score_items([[0.3, 0.8]])


# ----------------------------------------------------------------------------- route: rules


def test_each_rule_with_its_reason() -> None:
    t = RoutingThresholds(auto_accept_confidence=0.98, expert_margin=0.10, double_blind_issue_score=0.8,
                          guideline_refs={(3, 5): "guideline v3 §2"})
    scores = _scores([
        ("a", 3, 5, 0.991, 0.985, np.nan),
        ("b", 3, 5, 0.52, 0.04, 0.1),
        ("c", 5, 3, 0.5, 0.02, np.nan),
        ("d", 1, 2, 0.9, 0.85, 0.2),
        ("e", 1, 2, 0.6, 0.3, 0.93),
    ])
    out = route(scores, t)
    assert list(out.columns) == [ITEM, ROUTE, REASON, PRIORITY]
    assert out[ITEM].tolist() == ["a", "b", "c", "d", "e"]
    assert out[ROUTE].tolist() == ["auto_accept", "expert", "expert", "review", "double_blind"]
    assert out[REASON].tolist() == [
        "confidence 0.991 >= auto-accept 0.98",
        "margin 0.04 between 3 and 5 < expert cut-off 0.10 (guideline v3 §2)",
        "margin 0.02 between 5 and 3 < expert cut-off 0.10 (guideline v3 §2)",
        "confidence 0.900 < auto-accept 0.98; 1 over 2 by margin 0.85",
        "label-issue score 0.93 >= double-blind cut-off 0.80; model prefers 1 over 2 by margin 0.30",
    ]
    # The larger of risk 1 - confidence and the issue score (item d: 0.2 > 0.1).
    np.testing.assert_allclose(out[PRIORITY], [0.009, 0.48, 0.5, 0.2, 0.93])


def test_always_human_classes_go_to_review_or_expert() -> None:
    t = RoutingThresholds(always_human=frozenset({"tumour"}))
    assert _one(("a", "tumour", "benign", 0.999, 0.998, np.nan), t)[:2] == (
        "review", "class tumour always goes to a person; confidence 0.999, tumour over benign by margin 0.99")
    assert _one(("a", "tumour", "benign", 0.51, 0.02, np.nan), t)[0] == "expert"
    assert _one(("a", "benign", "tumour", 0.999, 0.998, np.nan), t)[0] == "auto_accept"


def test_risk_weights_multiply_the_risk() -> None:
    t = RoutingThresholds(auto_accept_confidence=0.97, class_risk_weights={"cat": 3, "dog": 0.5})
    # cat: risk 3 * 0.01 = 0.03, weighted confidence 0.97 -> auto-accept, just.
    route_, reason, priority = _one(("a", "cat", "dog", 0.99, 0.98, np.nan), t)
    assert route_ == "auto_accept" and priority == pytest.approx(0.03)
    assert reason == "risk-weighted confidence 0.970 (confidence 0.990, class cat weight 3) >= auto-accept 0.97"
    assert _one(("a", "cat", "dog", 0.985, 0.97, np.nan), t)[0] == "review"
    # dog: risk 0.5 * 0.05 = 0.025 -> weighted confidence 0.975.
    assert _one(("a", "dog", "cat", 0.95, 0.9, np.nan), t)[0] == "auto_accept"
    assert _one(("a", "dog", "cat", 0.95, 0.9, np.nan), RoutingThresholds(auto_accept_confidence=0.97))[0] == "review"


def test_classes_match_by_text_so_json_configs_work_with_integer_codes() -> None:
    config = json.loads('{"class_risk_weights": {"3": 10}, "always_human": [7]}')
    t = RoutingThresholds.from_dict(config)
    assert _one((0, 3, 5, 0.995, 0.99, np.nan), t)[0] == "review"
    assert _one((0, 7, 5, 0.995, 0.99, np.nan), t)[0] == "review"
    assert _one((0, 4, 5, 0.995, 0.99, np.nan), t)[0] == "auto_accept"


def test_threshold_boundaries_and_printed_comparisons_agree() -> None:
    t = RoutingThresholds(auto_accept_confidence=0.98, expert_margin=0.1, double_blind_issue_score=0.8)
    assert _one((0, 1, 2, 0.98, 0.96, 0.8), t)[0] == "double_blind"  # >= cut-off
    assert _one((0, 1, 2, 0.98, 0.96, np.nan), t)[:2] == ("auto_accept", "confidence 0.980 >= auto-accept 0.98")
    assert _one((0, 1, 2, 0.5, 0.1, np.nan), t)[0] == "review"  # margin == cut-off is not below it
    # Rounded to nearest, 0.97996 would print as "0.980 < auto-accept 0.98".
    assert _one((0, 1, 2, 0.97996, 0.96, np.nan), t)[1].startswith("confidence 0.979 < auto-accept 0.98")
    # A threshold with more decimals is printed in full, and so is the signal.
    fine = RoutingThresholds(auto_accept_confidence=0.9995)
    assert _one((0, 1, 2, 0.99949, 0.999, np.nan), fine)[1].startswith("confidence 0.9994 < auto-accept 0.9995")


def test_missing_label_issue_scores_never_route_double_blind() -> None:
    scores = _scores([(0, 1, 2, 0.5, 0.3, np.nan)]).drop(columns=[LABEL_ISSUE_SCORE])
    t = RoutingThresholds(double_blind_issue_score=0.0)
    assert route(scores, t)[ROUTE].tolist() == ["review"]
    assert route(_scores([(0, 1, 2, 0.5, 0.3, np.nan)]), t)[ROUTE].tolist() == ["review"]
    assert route(_scores([(0, 1, 2, 0.5, 0.3, 0.0)]), t)[ROUTE].tolist() == ["double_blind"]


def test_guideline_applies_to_people_not_to_auto_accept() -> None:
    t = RoutingThresholds(guideline_refs=[{"classes": ["a", "b"], "ref": "guide §1"}])
    assert _one((0, "b", "a", 0.7, 0.5, np.nan), t)[1].endswith("by margin 0.50 (guide §1)")
    assert "guide" not in _one((0, "b", "a", 0.999, 0.998, np.nan), t)[1]
    assert "guide" not in _one((0, "b", "c", 0.7, 0.5, np.nan), t)[1]


def test_output_keeps_row_order_and_ignores_the_index() -> None:
    scores = _scores([(9, 1, 2, 0.99, 0.98, np.nan), (4, 1, 2, 0.5, 0.01, np.nan)])
    scores.index = [100, 7]
    out = route(scores, RoutingThresholds())
    assert out[ITEM].tolist() == [9, 4] and out.index.tolist() == [0, 1]
    assert out[ROUTE].tolist() == ["auto_accept", "expert"]


def test_empty_scores_give_an_empty_decision_frame() -> None:
    out = route(_scores([]), RoutingThresholds())
    assert out.empty and list(out.columns) == [ITEM, ROUTE, REASON, PRIORITY]


# ----------------------------------------------------------------------------- route: bad input


@pytest.mark.parametrize("mutate, fragment", [
    (lambda s: s.drop(columns=[MARGIN]), r"'scores'.*missing \['margin'\]"),
    (lambda s: s.drop(columns=[ITEM, RUNNER_UP]), r"missing \['item_id', 'runner_up'\]"),
    (lambda s: s.assign(confidence=[np.nan, 0.5]), "'scores.confidence'.*NaN"),
    (lambda s: s.assign(margin=[0.2, 1.2]), "'scores.margin'.*\\[0, 1\\]"),
    (lambda s: s.assign(confidence=["high", "low"]), "'scores.confidence'.*numeric"),
    (lambda s: s.assign(label_issue_score=[0.2, -0.5]), "'scores.label_issue_score'"),
    (lambda s: s.assign(predicted=[1, None]), "'scores.predicted'.*missing"),
    (lambda s: s.assign(item_id=[3, 3]), "'scores.item_id'.*unique.*the first 3"),
])
def test_route_bad_scores(mutate, fragment: str) -> None:
    scores = _scores([(0, 1, 2, 0.9, 0.8, np.nan), (1, 2, 1, 0.6, 0.2, 0.3)])
    with pytest.raises(SchemaError, match=fragment):
        route(mutate(scores), RoutingThresholds())


def test_route_wants_a_dataframe_and_thresholds() -> None:
    with pytest.raises(SchemaError, match="'scores'"):
        route(np.zeros((2, 5)), RoutingThresholds())  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match="'thresholds'.*from_dict"):
        route(_scores([(0, 1, 2, 0.9, 0.8, np.nan)]), {"expert_margin": 0.1})  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- invariants


@st.composite
def scored_items(draw) -> pd.DataFrame:
    n = draw(st.integers(1, 60))
    k = draw(st.integers(2, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(k, draw(st.sampled_from([0.1, 0.5, 2.0]))), size=n)
    issues = np.where(rng.random(n) < 0.3, np.nan, rng.random(n))
    return score_items(probs, label_issue_scores=issues)


@st.composite
def thresholds(draw) -> RoutingThresholds:
    unit = st.floats(0, 1, allow_nan=False)
    return RoutingThresholds(
        auto_accept_confidence=draw(st.floats(0.01, 1.0)),
        expert_margin=draw(unit),
        double_blind_issue_score=draw(unit),
        class_risk_weights=draw(st.dictionaries(st.integers(0, 5), st.floats(0, 5), max_size=3)),
        always_human=draw(st.frozensets(st.integers(0, 5), max_size=2)),
    )


@settings(max_examples=50, deadline=None)
@given(scored_items(), thresholds(), st.floats(0.0, 1.0))
def test_raising_auto_accept_never_sends_fewer_items_to_people(scores, t, raise_by) -> None:
    higher = dataclasses.replace(
        t, auto_accept_confidence=t.auto_accept_confidence + raise_by * (1 - t.auto_accept_confidence))
    to_people_low = route(scores, t)[ROUTE] != Route.AUTO_ACCEPT
    to_people_high = route(scores, higher)[ROUTE] != Route.AUTO_ACCEPT
    assert not (to_people_low & ~to_people_high).any()


@settings(max_examples=50, deadline=None)
@given(scored_items(), thresholds())
def test_every_item_gets_one_route_a_reason_and_a_priority(scores, t) -> None:
    out = route(scores, t)
    assert out[ITEM].tolist() == scores[ITEM].tolist()
    assert out[ROUTE].isin([r.value for r in Route]).all()
    assert (out[REASON].str.len() > 0).all() and out[REASON].notna().all()
    assert (out[PRIORITY] >= 0).all() and out[PRIORITY].notna().all()
    # The rule order: a high issue score always wins; then a small margin.
    issue = scores[LABEL_ISSUE_SCORE].fillna(-1.0)
    assert (out[ROUTE][issue >= t.double_blind_issue_score] == Route.DOUBLE_BLIND).all()
    small = (scores[MARGIN] < t.expert_margin) & (issue < t.double_blind_issue_score)
    assert (out[ROUTE][small] == Route.EXPERT).all()


def test_routes_100_000_items_with_every_route_used() -> None:
    # Speed is measured in benchmarks/routing.py, not asserted here: the machines are noisy.
    rng = np.random.default_rng(0)
    scores = score_items(rng.dirichlet(np.full(10, 0.3), size=100_000), label_issue_scores=rng.random(100_000))
    t = RoutingThresholds(auto_accept_confidence=0.9, class_risk_weights={3: 2.0}, always_human={7},
                          guideline_refs={(3, 5): "guideline v3 §2"})
    out = route(scores, t)
    assert len(out) == 100_000 and set(out[ROUTE]) == {r.value for r in Route}


@settings(max_examples=50, deadline=None)
@given(scored_items(), thresholds(), st.integers(0, 2**32 - 1))
def test_current_labels_change_reasons_not_decisions(scores, t, seed) -> None:
    rng = np.random.default_rng(seed)
    k = int(scores[PREDICTED].max()) + 1
    # Integer codes with gaps (NaN) print as integers, like `predicted`.
    labels = np.where(rng.random(len(scores)) < 0.3, np.nan, rng.integers(0, k, len(scores)))
    plain, labelled = route(scores, t), route(scores.assign(label=labels), t)
    pd.testing.assert_frame_equal(plain.drop(columns=[REASON]), labelled.drop(columns=[REASON]))
    for reason, before, label, predicted, where in zip(labelled[REASON], plain[REASON], labels, scores[PREDICTED],
                                                       labelled[ROUTE]):
        if np.isnan(label):
            assert reason == before
        elif where == Route.AUTO_ACCEPT:
            changes = f"; replaces label {int(label)} with {predicted}"
            assert reason == before + (changes if int(label) != predicted else "")
        else:
            assert f"labelled {int(label)}" in reason and ".0" not in reason.split("labelled ")[1][:4]


def test_double_blind_reason_names_the_current_label() -> None:
    scores = score_items([[0.7, 0.2, 0.1]], label_issue_scores=[0.95], classes=["cat", "dog", "fox"])
    reason = route(scores.assign(label=["fox"]), RoutingThresholds())[REASON][0]
    assert reason == ("label-issue score 0.95 >= double-blind cut-off 0.80; labelled fox, "
                      "model prefers cat over dog by margin 0.50")
    unlabelled = route(scores, RoutingThresholds())[REASON][0]
    assert route(scores.assign(label=[pd.NA]), RoutingThresholds())[REASON][0] == unlabelled


def test_class_names_are_compared_as_text_whatever_their_type() -> None:
    # One frame may carry 3 and "3" (codes from one client, names from another): one class.
    scores = pd.DataFrame({"item_id": [1, 2], "predicted": [3, "3"], "runner_up": ["5", 5],
                           "confidence": [0.5, 0.5], "margin": [0.01, 0.01]}, dtype=object)
    scores[["confidence", "margin"]] = scores[["confidence", "margin"]].astype(float)
    thresholds = RoutingThresholds(guideline_refs={frozenset({3, 5}): "guideline v3 §2"},
                                   class_risk_weights={"3": 2.0}, always_human={3})
    decided = route(scores, thresholds)
    assert decided["reason"].str.endswith("(guideline v3 §2)").all()
    assert decided["reason"].nunique() == 1


def test_from_dict_overrides_a_base_without_a_round_trip():
    base = RoutingThresholds(auto_accept_confidence=0.9, always_human={"cat"}, guideline_refs={("a", "b"): "g §1"})
    t = RoutingThresholds.from_dict({"expert_margin": 0.2, "guideline_refs": [{"classes": ["c", "d"], "ref": "g §2"}]},
                                    base=base)
    assert (t.auto_accept_confidence, t.expert_margin, t.always_human) == (0.9, 0.2, frozenset({"cat"}))
    assert dict(t.guideline_refs) == {frozenset({"c", "d"}): "g §2"}  # normalised as by the constructor
    with pytest.raises(SchemaError, match="expert_margin"):
        RoutingThresholds.from_dict({"expert_margin": 2.0}, base=base)
    with pytest.raises(SchemaError, match="unknown keys"):
        RoutingThresholds.from_dict({"nope": 1}, base=base)
    with pytest.raises(SchemaError, match="'base'"):
        RoutingThresholds.from_dict({}, base=base.to_dict())  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- reasons against a plain reference


def _reference_reason(where: str, row: dict, label: str, t: RoutingThresholds) -> str:
    """The sentence of one item, formatted as plainly as it can be: what the vectorised reasons must print."""
    def down(value: float, digits: int) -> str:
        return f"{np.floor(value * 10.0 ** digits + 1e-9) / 10.0 ** digits:.{digits}f}"

    def text(threshold: float) -> str:
        return next(f"{threshold:.{d}f}" for d in range(2, 7) if abs(round(threshold, d) - threshold) < 1e-12
                    or d == 6)

    p, q = str(row[PREDICTED]), str(row[RUNNER_UP])
    cd, md, idd = (max(3, len(text(t.auto_accept_confidence)) - 2), max(2, len(text(t.expert_margin)) - 2),
                   max(2, len(text(t.double_blind_issue_score)) - 2))
    weight = {str(c): w for c, w in t.class_risk_weights.items()}.get(p, 1.0)
    ref = next((f" ({r})" for pair, r in t.guideline_refs.items() if {str(c) for c in pair} == {p, q}), "")
    labelled = f"; labelled {label}" if label else ""
    doubt = f"{p} over {q} by margin {down(row[MARGIN], 2)}{ref}"
    if where == "expert":
        return f"margin {down(row[MARGIN], md)} between {p} and {q} < expert cut-off {text(t.expert_margin)}{ref}{labelled}"
    if where == "double_blind":
        return (f"label-issue score {down(row[LABEL_ISSUE_SCORE], idd)} >= double-blind cut-off "
                f"{text(t.double_blind_issue_score)}; {'labelled ' + label + ', ' if label else ''}model prefers {doubt}")
    if where == "review" and p in {str(c) for c in t.always_human}:
        return f"class {p} always goes to a person; confidence {down(row[CONFIDENCE], 3)}, {doubt}{labelled}"
    clause = (f"confidence {down(row[CONFIDENCE], cd)}" if weight == 1.0 else
              f"risk-weighted confidence {down(1 - weight * (1 - row[CONFIDENCE]), cd)} "
              f"(confidence {down(row[CONFIDENCE], 3)}, class {p} weight {weight:g})")
    if where == "auto_accept":
        return f"{clause} >= auto-accept {text(t.auto_accept_confidence)}" + (
            f"; replaces label {label} with {p}" if label and label != p else "")
    return f"{clause} < auto-accept {text(t.auto_accept_confidence)}; {doubt}{labelled}"


@settings(max_examples=40, deadline=None)
@given(scored_items(), thresholds(), st.integers(0, 2**32 - 1), st.booleans())
def test_every_reason_reads_as_its_plain_sentence(scores, t, seed, named) -> None:
    # Class names (or codes), current labels with gaps, weights, always-human classes and a guideline:
    # every template, each filled as one plain format string would fill it.
    rng = np.random.default_rng(seed)
    names = np.array(["cat", "dog", "fox", "owl", "emu", "yak"], dtype=object)
    if named:
        scores = scores.assign(**{c: names[scores[c].to_numpy(dtype=int)] for c in (PREDICTED, RUNNER_UP)})
        t = dataclasses.replace(t, class_risk_weights={names[int(c)]: w for c, w in t.class_risk_weights.items()},
                                always_human={names[int(c)] for c in t.always_human})
    t = dataclasses.replace(t, guideline_refs={(scores[PREDICTED][0], scores[RUNNER_UP][0]): "guideline v3 §2"})
    labels = np.where(rng.random(len(scores)) < 0.3, None, rng.choice(scores[PREDICTED].to_numpy(), len(scores)))
    out = route(scores.assign(label=labels), t)
    expected = [_reference_reason(where, row, "" if label is None else str(label), t)
                for where, row, label in zip(out[ROUTE], scores.to_dict("records"), labels)]
    assert out[REASON].tolist() == expected
