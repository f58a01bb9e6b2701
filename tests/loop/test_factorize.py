"""The integer codes behind the annotation statistics, and the duplicate check built on them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loop._validation import check_annotations, factorize
from loop.columns import ANNOTATOR, ITEM, LABEL
from loop.exceptions import SchemaError


@pytest.mark.parametrize("values", [
    pd.Series([5, 3, 3, 9, 5]),                       # compact integers: the lookup table
    pd.Series([5, 3, 3, 10**12, 5]),                  # sparse integers: hashing
    pd.Series([-3, -1, -3], dtype="int8"),
    pd.Series([2, 0, 2], dtype="uint8"),
    pd.Series([1, 2, 1], dtype="Int64"),
    pd.Series(["b", "a", "b"]),
    pd.Series([1.5, -2.0, 1.5]),
])
def test_factorize_gives_sorted_codes_that_map_back(values: pd.Series) -> None:
    codes, uniques = factorize(values)
    assert codes.dtype == np.int64
    assert list(uniques) == sorted(set(values.tolist()))
    assert uniques.take(codes).tolist() == values.tolist()


def test_factorize_keeps_unsortable_values_in_order_of_appearance() -> None:
    values = pd.Series([("t", 1), "x", 2, "x"], dtype=object)
    codes, uniques = factorize(values)
    assert codes.tolist() == [0, 1, 2, 1] and list(uniques) == [("t", 1), "x", 2]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 40), st.sampled_from([0, 1, 2, 10**10, "a", "b"])),
                min_size=1, max_size=30))
def test_duplicate_pairs_are_refused_exactly_when_pandas_finds_them(pairs) -> None:
    frame = pd.DataFrame({ITEM: [p[0] for p in pairs], ANNOTATOR: [p[1] for p in pairs], LABEL: 0})
    if frame.duplicated([ITEM, ANNOTATOR]).any():
        with pytest.raises(SchemaError, match="at most one label"):
            check_annotations(frame)
    else:
        assert len(check_annotations(frame)) == len(frame)


@pytest.mark.parametrize("annotators", [[7, 8, 7], ["w7", "w8", "w7"]])
def test_duplicate_check_on_integer_and_text_ids(annotators) -> None:
    frame = pd.DataFrame({ITEM: [0, 0, 0], ANNOTATOR: annotators, LABEL: [1, 2, 1]})
    with pytest.raises(SchemaError, match=r"1 duplicates, the first \(.*0.*, .*7.*\)"):
        check_annotations(frame)


def test_map_codes_maps_each_value_and_refuses_one_that_is_not_a_key():
    from loop._validation import map_codes

    got = map_codes(np.array(["b", "a", "b"], dtype=object), {"a": 1.5, "b": 2.0})
    assert got.dtype == np.float64 and got.tolist() == [2.0, 1.5, 2.0]
    assert map_codes(["x"], {"x": "y"}, dtype=object).tolist() == ["y"]
    # get_indexer's -1 would have taken the last value silently.
    with pytest.raises(KeyError, match="c"):
        map_codes(["a", "c"], {"a": 1, "b": 2})
