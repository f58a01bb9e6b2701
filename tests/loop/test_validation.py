"""The shared argument checks: canonical forms out, one message form for every failure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loop._validation import (
    check_annotations,
    check_int,
    check_labels,
    check_option,
    check_pred_probs,
    check_real,
    check_rng,
)
from loop.columns import ANNOTATOR, ITEM, LABEL
from loop.exceptions import LoopError, SchemaError


def test_schema_error_is_a_value_error_and_a_loop_error() -> None:
    assert issubclass(SchemaError, ValueError) and issubclass(SchemaError, LoopError)


def test_pred_probs_accepts_lists_and_returns_float64() -> None:
    out = check_pred_probs([[0.2, 0.8], [1.0, 0.0]])
    assert out.dtype == np.float64 and out.shape == (2, 2)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ([0.2, 0.8], "2-D array"),
        ([[1.0], [1.0]], "at least 1 item and 2 classes"),
        ([[0.5, np.nan]], "finite"),
        ([[-0.1, 1.1]], "[0, 1]"),
        ([[0.3, 0.3]], "sum to 1"),
        ([["a", "b"]], "numeric"),
    ],
)
def test_pred_probs_rejects_bad_input_naming_the_argument(value, fragment) -> None:
    with pytest.raises(SchemaError, match="'pred_probs'") as info:
        check_pred_probs(value)
    assert fragment in str(info.value)


def test_committee_probs_are_three_dimensional() -> None:
    assert check_pred_probs(np.full((3, 4, 2), 0.5), ndim=3).shape == (3, 4, 2)
    with pytest.raises(SchemaError, match="3-D"):
        check_pred_probs(np.full((4, 2), 0.5), ndim=3)


def test_labels_accept_integer_floats_and_reject_the_rest() -> None:
    assert check_labels(np.array([0.0, 2.0]), n_classes=3).tolist() == [0, 2]
    for bad, fragment in [([0, 3], "below 3"), ([0.5], "non-integer"), (["a"], "dtype"), ([], "empty"),
                          ([[0]], "1-D"), ([np.nan], "NaN")]:
        with pytest.raises(SchemaError, match=fragment):
            check_labels(np.array(bad), n_classes=3)
    with pytest.raises(SchemaError, match="2 labels"):
        check_labels([0, 1, 1], n_items=2)


def test_annotations_frame_checks(small_annotations: pd.DataFrame) -> None:
    assert check_annotations(small_annotations, classes=[0, 1, 2]).shape == small_annotations.shape
    with pytest.raises(SchemaError, match="missing"):
        check_annotations(small_annotations.drop(columns=[LABEL]))
    with pytest.raises(SchemaError, match="empty"):
        check_annotations(small_annotations.iloc[:0])
    with pytest.raises(SchemaError, match="duplicates"):
        check_annotations(pd.concat([small_annotations, small_annotations.iloc[:1]]))
    with pytest.raises(SchemaError, match="missing values"):
        check_annotations(small_annotations.assign(**{ANNOTATOR: None}))
    nullable = small_annotations.astype({LABEL: "Int64"})
    nullable.loc[2, LABEL] = pd.NA
    with pytest.raises(SchemaError, match="missing values \\(label: 1\\)"):
        check_annotations(nullable)
    with pytest.raises(SchemaError, match="missing values \\(item_id: 1\\)"):
        check_annotations(small_annotations.astype({ITEM: float}).assign(**{ITEM: [np.nan] + [1.0] * 9}))
    many = pd.DataFrame({ITEM: np.arange(1000) % 500, ANNOTATOR: np.arange(1000) // 500, LABEL: 0})
    assert len(check_annotations(many)) == 1000  # the dense duplicate count finds none
    with pytest.raises(SchemaError, match="duplicates"):
        check_annotations(many.assign(**{ANNOTATOR: 0}))
    with pytest.raises(SchemaError, match="class set"):
        check_annotations(small_annotations, classes=[0, 1])
    with pytest.raises(SchemaError, match="DataFrame"):
        check_annotations([(0, "a", 1)])
    assert list(check_annotations(small_annotations.set_index(ITEM, drop=False)).index) == list(range(10))


def test_scalar_checks() -> None:
    assert check_real(0.5, "t", low=0, high=1) == 0.5
    with pytest.raises(SchemaError, match=r"'t' argument must be a number in \(0, 1\]"):
        check_real(0, "t", low=0, high=1, low_open=True)
    with pytest.raises(SchemaError, match="finite real"):
        check_real(float("nan"), "t")
    with pytest.raises(SchemaError, match="an integer"):
        check_int(True, "n")
    with pytest.raises(SchemaError, match=r"\[1, inf\]"):
        check_int(0, "n", low=1)
    with pytest.raises(SchemaError, match="one of"):
        check_option("foo", "method", ["a", "b"])


def test_rng_takes_a_generator_or_a_seed_only() -> None:
    assert check_rng(3).integers(100) == np.random.default_rng(3).integers(100)
    gen = np.random.default_rng(1)
    assert check_rng(gen) is gen
    with pytest.raises(SchemaError, match="Generator"):
        check_rng(np.random.RandomState(0))
