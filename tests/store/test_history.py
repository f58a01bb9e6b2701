"""A stream's history kept in memory: appending what is new gives what a whole read gives,
whoever wrote it."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest

from loop.columns import ANNOTATOR, ITEM, LABEL, SECONDS
from loop.store import IDEMPOTENCY_KEY, RESOLUTION_ID, SUPERSEDES_KEY, LabelStore, StreamHistory

from .conftest import STREAM


def _labels(store: LabelStore) -> pd.Series:
    current = store.resolved_labels(STREAM)
    return pd.Series(current[LABEL].to_numpy(), index=current[ITEM].astype(str).to_numpy())


def test_the_history_follows_every_writer(seeded, store_url):
    history = StreamHistory(seeded, STREAM)
    assert history.annotations().empty and history.labels().empty
    seeded.add_annotations(STREAM, [{ITEM: "i3", ANNOTATOR: "a", LABEL: 0}, {ITEM: "i1", ANNOTATOR: "b", LABEL: 1}])
    seeded.add_resolutions(STREAM, pd.DataFrame({ITEM: ["i3", "i1"], LABEL: [0, 1]}), method="consensus")
    assert history.labels().index.tolist() == ["i1", "i3"]
    with LabelStore(store_url) as other:  # somebody else's answers and corrections
        other.add_annotations(STREAM, [{ITEM: "i3", ANNOTATOR: "c", LABEL: 2}, {ITEM: "i0", ANNOTATOR: "a", LABEL: 2},
                                       {ITEM: "i1", ANNOTATOR: "c", LABEL: 1, SECONDS: 30.0}])
    assert history.metrics().krippendorff_alpha == seeded.stream_metrics(STREAM).krippendorff_alpha
    with LabelStore(store_url) as other:
        # An annotator labels an item again: the later label counts (as the store's metrics count it).
        other.add_annotations(STREAM, [{ITEM: "i1", ANNOTATOR: "c", LABEL: 0, IDEMPOTENCY_KEY: "again"}])
        head = int(other.resolved_labels(STREAM).set_index(ITEM).loc["i3", RESOLUTION_ID])
        other.resolve(STREAM, "i3", 2, method="expert", supersedes=head)
        other.resolve(STREAM, "i0", 2, method="consensus")
    pd.testing.assert_frame_equal(history.annotations(), seeded.annotations_frame(STREAM))
    pd.testing.assert_series_equal(history.labels(), _labels(seeded), check_names=False, check_index_type=False)
    current = seeded.resolved_labels(STREAM)
    assert history.heads().tolist() == current[RESOLUTION_ID].tolist()
    got, want = history.resolutions(), seeded.resolutions_frame(STREAM)
    pd.testing.assert_frame_equal(got.drop(columns=SUPERSEDES_KEY), want.drop(columns=SUPERSEDES_KEY))
    # (A column of no values yet reads as objects, then as strings: the missing ones differ in kind only.)
    assert got[SUPERSEDES_KEY].fillna("").tolist() == want[SUPERSEDES_KEY].fillna("").tolist()
    kept, read = asdict(history.metrics()), asdict(seeded.stream_metrics(STREAM))
    assert kept.pop("stream") == read.pop("stream")
    assert kept == pytest.approx(read, nan_ok=True)  # running totals: equal up to rounding
    assert np.isfinite(kept["krippendorff_alpha"]) and np.isfinite(kept["median_resolution_hours"])
    assert np.isnan(history.metrics(resolution_hours=False).median_resolution_hours)
