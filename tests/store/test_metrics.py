"""Per-annotator and per-stream metrics on a small crowd worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loop.agreement import krippendorff_alpha, percent_agreement
from loop.columns import ANNOTATOR, ITEM, LABEL, SECONDS
from loop.store import CREATED_AT, LabelStore, StreamMetrics
from loop.store._metrics import annotator_metrics

from .conftest import STREAM

T0 = pd.Timestamp("2024-05-01T08:00:00Z")


@pytest.fixture
def crowd(seeded: LabelStore) -> LabelStore:
    """i0: a, b, c say 0. i1: a, b say 1 (hours 0, 1), c says 2 (hour 2). i2: a, b say 2.
    i1 is resolved 1 then corrected to 2; i0 is resolved 0. Every label took 10 seconds."""
    rows = [("i0", "a", 0, 0), ("i0", "b", 0, 0), ("i0", "c", 0, 0), ("i1", "a", 1, 0), ("i1", "b", 1, 1),
            ("i1", "c", 2, 2), ("i2", "a", 2, 0), ("i2", "b", 2, 0)]
    seeded.add_annotations(STREAM, pd.DataFrame(
        [{ITEM: i, ANNOTATOR: a, LABEL: y, SECONDS: 10.0, CREATED_AT: T0 + pd.Timedelta(hours=h)}
         for i, a, y, h in rows]))
    first = seeded.resolve(STREAM, "i1", 1, method="consensus")
    seeded.resolve(STREAM, "i1", 2, method="expert", supersedes=first.id)
    seeded.resolve(STREAM, "i0", 0, method="consensus")
    return seeded


def test_annotator_metrics(crowd):
    m = crowd.annotator_metrics(STREAM)
    assert m.loc["a", "n_annotations"] == 3 and m.loc["c", "n_items"] == 2
    assert m.loc["a", "agreement"] == pytest.approx(4 / 5)  # i0 2 of 2, i1 1 of 2, i2 1 of 1
    assert m.loc["c", "agreement"] == pytest.approx(2 / 4)
    assert m.loc["a", "correction_rate"] == pytest.approx(1 / 2)  # i1 overturned, i0 kept
    assert m.loc["c", "correction_rate"] == 0
    assert m.loc["b", "seconds_per_item"] == pytest.approx(10.0)
    assert m.loc["a", "cost"] == pytest.approx(3 * 10 * 36 / 3600)
    assert m.loc["c", "cost"] == 0


def test_stream_metrics(crowd):
    m = crowd.stream_metrics(STREAM)
    assert isinstance(m, StreamMetrics)
    assert (m.n_items, m.n_annotations, m.n_annotators, m.n_resolved) == (10, 8, 3, 2)
    frame = crowd.annotations_frame(STREAM)
    assert m.percent_agreement == pytest.approx((1 + 1 / 3 + 1) / 3)
    assert m.percent_agreement == pytest.approx(percent_agreement(frame[[ITEM, ANNOTATOR, LABEL]]))
    assert m.krippendorff_alpha == pytest.approx(krippendorff_alpha(frame[[ITEM, ANNOTATOR, LABEL]]))
    assert m.correction_frequency == pytest.approx(1 / 2)
    resolved_at = crowd.resolutions_frame(STREAM).query("item_id == 'i1'")["resolved_at"].min()
    assert m.median_resolution_hours == pytest.approx((resolved_at - (T0 + pd.Timedelta(hours=2))).total_seconds() / 3600)
    assert m.seconds_per_item == pytest.approx(80 / 3)
    assert m.total_cost == pytest.approx((3 * 36 + 3 * 18) * 10 / 3600)


def test_metrics_of_an_empty_stream_are_nan_not_errors(seeded):
    m = seeded.stream_metrics(STREAM)
    assert m.n_annotations == 0 and np.isnan(m.percent_agreement) and np.isnan(m.median_resolution_hours)
    assert seeded.annotator_metrics(STREAM).empty


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from("abcd"), st.integers(0, 2)), min_size=1, max_size=40))
def test_annotator_agreement_and_correction_rate_are_shares(rows):
    frame = pd.DataFrame(rows, columns=[ITEM, ANNOTATOR, LABEL]).drop_duplicates([ITEM, ANNOTATOR])
    frame[SECONDS] = 1.0
    frame["cost"] = 0.0
    frame[CREATED_AT] = T0
    history = pd.DataFrame({"resolution_id": [1], ITEM: [0], LABEL: [1], "supersedes": pd.array([None], dtype="Int64")})
    m = annotator_metrics(frame, history)
    for col in ("agreement", "correction_rate"):
        values = m[col].dropna()
        assert ((values >= 0) & (values <= 1)).all()
    assert m["n_annotations"].sum() == len(frame)
