"""A stream's history kept in memory: appending what is new gives what a whole read gives,
whoever wrote it."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd

from loop.columns import ANNOTATOR, ITEM, LABEL
from loop.store import RESOLUTION_ID, SUPERSEDES_KEY, LabelStore, StreamHistory

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
        other.add_annotations(STREAM, [{ITEM: "i3", ANNOTATOR: "c", LABEL: 2}, {ITEM: "i0", ANNOTATOR: "a", LABEL: 2}])
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
    # Series, not ==: a figure no item defines yet is NaN in both.
    assert pd.Series(asdict(history.metrics())).equals(pd.Series(asdict(seeded.stream_metrics(STREAM))))
