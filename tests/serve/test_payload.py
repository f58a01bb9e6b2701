"""serve.payload: both request forms give the same arrays; refusals name the field; answers are strict JSON."""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from loop.columns import CONFIDENCE, ITEM, LABEL_ISSUE_SCORE, PREDICTED, REASON, ROUTE
from serve.payload import (BadRequest, decode_b64_array, encode_answer, encode_b64_array, parse_request,
                           probabilities_problem)


def _body(**fields) -> bytes:
    return json.dumps(fields).encode()


def _compact(x: np.ndarray, dtype: str = "float32", **fields) -> bytes:
    code = {"float32": "<f4", "float64": "<f8"}[dtype]
    return _body(features_b64=base64.b64encode(np.asarray(x, dtype=code).tobytes()).decode(),
                 shape=list(x.shape), dtype=dtype, **fields)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_compact_and_readable_forms_agree(rng, dtype):
    x = rng.integers(0, 17, size=(5, 8)).astype(float)
    ids = ["a", "b", 3, 4, "e"]
    readable = parse_request(_body(item_ids=ids, features=x.tolist(), labels=[0, None, 2, None, 1]))
    compact = parse_request(_compact(x, dtype, item_ids=ids, labels=[0, None, 2, None, 1]))
    np.testing.assert_array_equal(readable.features, compact.features)
    assert readable.item_ids == compact.item_ids == ids
    assert readable.labels.tolist() == compact.labels.tolist() == [0, -1, 2, -1, 1]
    assert (readable.compact, compact.compact) == (False, True)


def test_labels_by_class_name():
    parsed = parse_request(_body(item_ids=[1, 2, 3], features=[[0.0]] * 3, labels=["dog", None, "cat"]),
                           class_names=["cat", "dog"])
    assert parsed.labels.tolist() == [1, -1, 0]
    with pytest.raises(BadRequest) as caught:
        parse_request(_body(item_ids=[1], features=[[0.0]], labels=["cow"]), class_names=["cat", "dog"])
    assert caught.value.field == "labels.0" and "'cow'" in caught.value.message


@pytest.mark.parametrize(("body", "status", "field"), [
    (b"", 400, "body"),
    (b"null", 422, "body"),
    (_body(item_ids=[1] * 3, features=[[0.0]] * 3), 422, "item_ids"),
    (_body(item_ids=[1, 2], features=[[0.0], [float("inf")]]), 422, "features.1.0"),
    (_body(item_ids=[1], features=[[]]), 422, "features"),
    (_body(item_ids=[1], features=[[0.0]], shape=[1, 1]), 422, "shape"),
    (_body(item_ids=[1], features_b64="AAAA", shape=[-1, 1]), 422, "shape"),
    (_body(item_ids=[1], features=[[0.0]], labels=[True]), 400, "labels.0"),
    (_body(item_ids=[1], features=[[0.0]], return_probabilities="yes"), 422, "return_probabilities"),
])
def test_refusals_name_the_field(body, status, field):
    with pytest.raises(BadRequest) as caught:
        parse_request(body)
    assert (caught.value.status, caught.value.field) == (status, field)
    assert caught.value.body() == {"error": {"field": field, "message": caught.value.message}}


@pytest.mark.parametrize(("body", "field"), [
    (_body(item_ids=[1, 2], features=[[0.0], [True]]), "features.1.0"),
    (_body(item_ids=[1], features=[["1.5"]]), "features.0.0"),
    (_body(item_ids=[1], features=[[0.0]], labels=[1.0]), "labels.0"),
    (_body(item_ids=[1], probabilities=[[0.5, "0.5"]]), "probabilities.0.1"),
    (_body(item_ids=[1], probabilities=[[False, True]]), "probabilities.0.0"),
    (_body(item_ids=[1], features=[[0.0]], label_issue_scores=[True]), "label_issue_scores.0"),
    (_body(item_ids=[1], features=[[0.0]], label_issue_scores=["0.5"]), "label_issue_scores.0"),
])
def test_booleans_and_strings_are_not_numbers(body, field):
    with pytest.raises(BadRequest) as caught:
        parse_request(body)
    assert (caught.value.status, caught.value.field) == (400, field)
    assert "not booleans or strings" in caught.value.message or "integers" in caught.value.message


@pytest.mark.parametrize("code", [2 ** 63, 2 ** 64, 10 ** 30])
def test_label_codes_beyond_int64_are_400_not_500(code):
    body = b'{"item_ids": [1, 2], "features": [[0.0], [1.0]], "labels": [0, ' + str(code).encode() + b"]}"
    for form in (body, body.replace(b'"features": [[0.0], [1.0]]', b'"probabilities": [[0.5, 0.5], [1.0, 0.0]]')):
        with pytest.raises(BadRequest) as caught:
            parse_request(form)
        assert (caught.value.status, caught.value.field) == (400, "labels.1")
        assert str(code) in caught.value.message
    # The largest int64 code still parses; the class count refuses it later (422).
    assert parse_request(_body(item_ids=[1], features=[[0.0]], labels=[2 ** 63 - 1])).labels.tolist() == [2 ** 63 - 1]


def test_integers_are_numbers():
    parsed = parse_request(_body(item_ids=[1], features=[[0, 2]], label_issue_scores=[1]))
    assert parsed.features.tolist() == [[0.0, 2.0]] and parsed.label_issue_scores.tolist() == [1.0]


def test_too_many_rows_is_413():
    with pytest.raises(BadRequest) as caught:
        parse_request(_body(item_ids=[1, 2, 3], features=[[0.0]] * 3), max_rows=2)
    assert caught.value.status == 413


def test_bad_request_survives_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(BadRequest("labels.3", "out of range", 422)))
    assert (error.field, error.message, error.status) == ("labels.3", "out of range", 422)


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=6),
                  elements=st.floats(allow_nan=False, allow_infinity=False, width=64)))
def test_b64_round_trip_is_exact(x):
    encoded = encode_b64_array(x)
    assert encoded["shape"] == list(x.shape)
    np.testing.assert_array_equal(decode_b64_array(encoded["b64"], encoded["shape"], "float64", field="x"), x)


def _frame() -> pd.DataFrame:
    return pd.DataFrame({ITEM: ["a", "b"], PREDICTED: [3, 5], CONFIDENCE: [0.9, 0.6],
                         LABEL_ISSUE_SCORE: [np.nan, 0.25], ROUTE: ["auto_accept", "review"],
                         REASON: ["confidence 0.900 >= auto-accept 0.90", "why not"]})


def test_readable_answer_is_strict_json_with_nulls():
    probs = np.array([[0.9, 0.1], [0.4, 0.6]])
    text = encode_answer(_frame(), probs, compact=False, model={"version": "2"}, classes=["x", "y"]).decode()
    answer = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert answer["n_items"] == 2 and answer["classes"] == ["x", "y"] and answer["model"] == {"version": "2"}
    first, second = answer["items"]
    assert first == {ITEM: "a", PREDICTED: 3, CONFIDENCE: 0.9, LABEL_ISSUE_SCORE: None, ROUTE: "auto_accept",
                     REASON: "confidence 0.900 >= auto-accept 0.90", "probabilities": [0.9, 0.1]}
    assert second[LABEL_ISSUE_SCORE] == 0.25


def test_compact_answer_carries_floats_as_arrays():
    probs = np.array([[0.9, 0.1], [0.4, 0.6]])
    answer = json.loads(encode_answer(_frame(), probs, compact=True, model={}, classes=[0, 1]))
    assert answer["columns"] == {ITEM: ["a", "b"], PREDICTED: [3, 5], ROUTE: ["auto_accept", "review"],
                                 REASON: ["confidence 0.900 >= auto-accept 0.90", "why not"]}
    arrays = {name: decode_b64_array(a["b64"], a["shape"], a["dtype"], field=name)
              for name, a in answer["arrays"].items()}
    np.testing.assert_array_equal(arrays["probabilities"], probs)
    np.testing.assert_array_equal(arrays[CONFIDENCE], [0.9, 0.6])
    assert np.isnan(arrays[LABEL_ISSUE_SCORE][0]) and arrays[LABEL_ISSUE_SCORE][1] == 0.25


def test_label_issue_scores_in_both_forms():
    scores = [0.0, 0.25, 1.0]
    readable = parse_request(_body(item_ids=[1, 2, 3], features=[[0.0]] * 3, label_issue_scores=scores))
    compact = parse_request(_compact(np.zeros((3, 1)), item_ids=[1, 2, 3], label_issue_scores_b64=_issues_b64(scores)))
    np.testing.assert_array_equal(readable.label_issue_scores, scores)
    np.testing.assert_array_equal(compact.label_issue_scores, scores)
    assert parse_request(_body(item_ids=[1], features=[[0.0]])).label_issue_scores is None


def _issues_b64(values) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f8").tobytes()).decode()


@pytest.mark.parametrize(("body", "status", "field"), [
    (_body(item_ids=[1, 2], features=[[0.0]] * 2, label_issue_scores=[0.5]), 422, "label_issue_scores"),
    (_body(item_ids=[1, 2], features=[[0.0]] * 2, label_issue_scores=[0.5, 1.5]), 422, "label_issue_scores.1"),
    (_body(item_ids=[1, 2], features=[[0.0]] * 2, label_issue_scores=[-0.1, 0.5]), 422, "label_issue_scores.0"),
    (b'{"item_ids": [1], "features": [[0.0]], "label_issue_scores": [NaN]}', 422, "label_issue_scores.0"),
    (_body(item_ids=[1], features=[[0.0]], label_issue_scores=["high"]), 400, "label_issue_scores.0"),
    (_body(item_ids=[1], features=[[0.0]], label_issue_scores=[None]), 422, "label_issue_scores.0"),
    (_body(item_ids=[1, 2], features=[[0.0]] * 2, label_issue_scores_b64=_issues_b64([0.5, np.nan])),
     422, "label_issue_scores_b64.1"),
    (_body(item_ids=[1, 2], features=[[0.0]] * 2, label_issue_scores_b64=_issues_b64([0.5])),
     422, "label_issue_scores_b64"),
    (_body(item_ids=[1], features=[[0.0]], label_issue_scores_b64="***"), 400, "label_issue_scores_b64"),
    (_body(item_ids=[1], features=[[0.0]], label_issue_scores=[0.5], label_issue_scores_b64=_issues_b64([0.5])),
     422, "label_issue_scores"),
])
def test_bad_label_issue_scores_name_the_field(body, status, field):
    with pytest.raises(BadRequest) as caught:
        parse_request(body)
    assert (caught.value.status, caught.value.field) == (status, field)
    assert len(caught.value.message) > 10


def test_probabilities_in_both_forms(rng):
    probs = rng.dirichlet(np.ones(4), size=5)
    readable = parse_request(_body(item_ids=list(range(5)), probabilities=probs.tolist(), labels=[0, None, 3, 1, 2]))
    compact = parse_request(_body(item_ids=list(range(5)), probabilities_b64=_issues_b64(probs), shape=[5, 4]))
    np.testing.assert_array_equal(readable.probabilities, probs)  # JSON floats round-trip exactly
    np.testing.assert_array_equal(compact.probabilities, probs)
    assert readable.features is None and compact.features is None
    assert (readable.compact, compact.compact) == (False, True)
    assert readable.labels.tolist() == [0, -1, 3, 1, 2]
    assert parse_request(_body(item_ids=[1], features=[[0.0]])).probabilities is None


def test_probabilities_must_match_the_apps_classes():
    parsed = parse_request(_body(item_ids=[1], probabilities=[[0.2, 0.8]], labels=["dog"]),
                           class_names=["cat", "dog"])
    assert parsed.labels.tolist() == [1]
    for body, field in [(_body(item_ids=[1], probabilities=[[0.2, 0.3, 0.5]]), "probabilities"),
                        (_body(item_ids=[1], probabilities_b64=_issues_b64([[0.2, 0.3, 0.5]]), shape=[1, 3]),
                         "probabilities_b64")]:
        with pytest.raises(BadRequest) as caught:
            parse_request(body, class_names=["cat", "dog"])
        assert caught.value.field == field
        assert "2 classes" in caught.value.message and "3 columns" in caught.value.message


@pytest.mark.parametrize(("probs", "where"), [
    ([[0.5, 0.5], [0.2, 0.8]], None),
    ([[0.5, 0.5 + 1e-5]], None),  # within the tolerance
    ([[1.0]], ()),
    ([[0.5, np.inf]], (0, 1)),
    ([[0.5, 0.5], [1.2, -0.2]], (1, 0)),
    ([[0.5, 0.5], [0.5, 0.5 + 1e-3]], (1,)),
])
def test_probabilities_problem_points_at_the_first_bad_value(probs, where):
    problem = probabilities_problem(np.asarray(probs, dtype=np.float64))
    assert (problem if problem is None else problem[0]) == where
