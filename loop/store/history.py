"""A stream's history kept in memory and brought up to date by reading only what is new.

A live stream's history only grows; a reader that needs it several times a round (a
labelling program) would otherwise read it whole each time, and a round's cost would grow
with everything the team ever labelled. :class:`StreamHistory` reads the annotations and
resolutions stored after its last read (``after=`` the largest id it has) and appends them,
so what other writers stored (people answering, a second program) arrives too.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from ..agreement import nominal_agreement_from_counts
from ..columns import ANNOTATOR, COST, ITEM, LABEL, SECONDS
from ..exceptions import SchemaError
from . import _metrics, _reads
from . import _schema as S
from ._columns import ANNOTATION_ID, CREATED_AT, RESOLUTION_ID
from ._records import StreamMetrics
from .store import LabelStore

__all__ = ["StreamHistory"]


class StreamHistory:
    """The annotations frame and the current labels of one stream, read incrementally.

    Parameters
    ----------
    store : LabelStore
    stream : str

    Notes
    -----
    :meth:`metrics` keeps its figures up to date from what is new (label counts per item, running
    totals), so it costs what is new, not the history; costs are at the hourly rates of when each
    annotation was read.

    On PostgreSQL two writers may commit out of id order: a row with a smaller id can become
    visible after one with a larger id was read. Each read therefore starts at a floor below
    which nothing can still arrive, not at the largest id read, and drops the rows it already
    has (see :meth:`annotations`); a row committed late is read once, in its id's place. The
    floor is the largest id read when no writer was in flight; while writers are busy it lags by
    about one read, and it stays put while a writing transaction of the database server stays
    open (the rows above it are read again each time: the price of missing none).

    Examples
    --------
    >>> store = LabelStore("sqlite://")
    >>> _ = store.create_stream("s", ["neg", "pos"])
    >>> _ = store.add_annotator("a", streams=["s"])
    >>> _ = store.add_items("s", [{"item_id": "r1"}, {"item_id": "r2"}])
    >>> history = StreamHistory(store, "s")
    >>> _ = store.add_annotations("s", [{"item_id": "r1", "annotator_id": "a", "label": "pos"}])
    >>> len(history.annotations())
    1
    >>> _ = store.add_resolutions("s", [{"item_id": "r1", "label": "pos"}], method="consensus")
    >>> history.labels().to_dict()
    {'r1': 1}
    """

    def __init__(self, store: LabelStore, stream: str) -> None:
        self.store, self.stream = store, stream
        k = len(store.stream(stream).classes)  # refuses an unknown stream now
        self._annotations: pd.DataFrame | None = None
        # Annotation ids at or below the floor are all read (or never to be seen); those above
        # it that were read are kept to drop them when read again. Each read leaves a mark,
        # (largest id it saw, the next transaction id after it), that lifts the floor once
        # every transaction older than that has ended.
        self._floor = 0
        self._above = np.zeros(0, dtype=np.int64)
        self._marks: deque[tuple[int, int]] = deque()
        # For metrics(): each item's position, its latest label per annotator and their counts
        # (what agreement is computed on), the labels it ever had (as bits: has it had two?),
        # and the item position of each annotation row.
        self._item_pos: dict[str, int] = {}
        self._latest: dict[tuple[str, str], tuple[int, int]] = {}
        self._counts = np.zeros((1024, k), dtype=np.int64)
        self._ever = np.zeros(1024, dtype=np.int64)
        self._row_item = np.zeros(0, dtype=np.int64)
        self._annotators: set[str] = set()
        self._totals = np.zeros(4)  # seconds, labels with seconds, cost, labels with a cost
        self._chains: dict[str, int] = {}  # resolutions per item
        self._corrected = 0  # items with more than one
        self._resolutions: pd.DataFrame | None = None
        # The current resolution of each item (label, resolution id), by item id, sorted as
        # :meth:`LabelStore.resolved_labels` sorts them.
        self._heads = pd.DataFrame({LABEL: pd.Series(dtype=np.int64), RESOLUTION_ID: pd.Series(dtype=np.int64)},
                                   index=pd.Index([], dtype=object, name=ITEM))

    def annotations(self) -> pd.DataFrame:
        """The stream's annotations frame (as :meth:`LabelStore.annotations_frame`), in id
        order, with what was stored since the last call added."""
        # Why a floor and not the largest id read: ids are drawn when a row is inserted and
        # become visible when its transaction commits, so on PostgreSQL a writer that drew id 5
        # may commit after another writer's id 6 was read. Reading "after 6" would skip 5
        # forever. Every id up to the largest one a read saw (M) was drawn before the read's
        # snapshot (ids are drawn in increasing order), by a transaction that had its
        # transaction id by then (writers take one first), so one below the snapshot's next
        # transaction id (X). Once a snapshot's oldest running transaction is at or above X,
        # every row with an id up to M is visible in it or never will be: the read on that
        # snapshot (from the old floor) gets the last of them, and M becomes the floor. With
        # nothing in flight (always on SQLite) that is the read's own snapshot.
        s = self.store.stream(self.stream)
        with self.store._read() as conn, _reads.one_snapshot(conn) as (oldest, next_xid):
            read = _reads.annotations_frame(conn, s, after=None if self._annotations is None else self._floor)
        ids = read[ANNOTATION_ID].to_numpy(dtype=np.int64)
        if len(ids):
            self._marks.append((int(ids.max()), next_xid))
        floor = self._settled(oldest)
        new = read[~np.isin(ids, self._above)].reset_index(drop=True) if len(self._above) else read
        if self._annotations is None:
            self._annotations = new
            self._count(new)
        elif len(new):
            late = len(self._annotations) and new[ANNOTATION_ID].iloc[0] < self._annotations[ANNOTATION_ID].iloc[-1]
            self._annotations = new if self._annotations.empty else \
                pd.concat([self._annotations, new], ignore_index=True)
            self._count(new)
            if late:  # a row committed late: put it in its id's place (rare, and cheap on sorted ids)
                order = np.argsort(self._annotations[ANNOTATION_ID].to_numpy(), kind="stable")
                self._annotations = self._annotations.take(order).reset_index(drop=True)
                self._row_item = self._row_item[order]
        self._above = np.concatenate([self._above, new[ANNOTATION_ID].to_numpy(dtype=np.int64)])
        if floor > self._floor:
            self._floor = floor
        self._above = self._above[self._above > self._floor]
        return self._annotations

    def annotated(self, item_ids: Any) -> np.ndarray:
        """Which of ``item_ids`` have annotations among those read so far (call
        :meth:`annotations` first to bring them up to date), by a lookup per id: it costs the ids
        asked about, not the history."""
        known = self._item_pos
        return np.fromiter((str(i) in known for i in np.asarray(item_ids, dtype=object).tolist()), dtype=bool,
                           count=len(item_ids))

    def _settled(self, oldest: int) -> int:
        """The largest id of the reads (this one included) all of whose transactions had
        ended before ``oldest``: the floor once this read is done."""
        floor = self._floor
        while self._marks and self._marks[0][1] <= oldest:
            floor = max(floor, self._marks.popleft()[0])
        return floor

    def labels(self) -> pd.Series:
        """The current label of every resolved item (class code), by item id (sorted)."""
        self._refresh_resolutions()
        return self._heads[LABEL]

    def heads(self) -> pd.Series:
        """The current resolution id of every resolved item (what a correction supersedes)."""
        self._refresh_resolutions()
        return self._heads[RESOLUTION_ID]

    def resolutions(self) -> pd.DataFrame:
        """Every resolution of the stream (as :meth:`LabelStore.resolutions_frame`)."""
        self._refresh_resolutions()
        return self._resolutions

    def metrics(self, *, resolution_hours: bool = True) -> StreamMetrics:
        """:meth:`LabelStore.stream_metrics`, from counts kept up to date as the history grows.

        ``resolution_hours=False`` leaves ``median_resolution_hours`` NaN: it is the one figure
        that reads every annotation of the items whose labels ever disagreed, and those grow
        with the history."""
        s = self.store.stream(self.stream)
        with self.store._read() as conn:
            n_items = conn.execute(sa.select(sa.func.count()).select_from(S.items)
                                   .where(S.items.c.stream_id == s.id)).scalar()
        annotations, history = self.annotations(), self.resolutions()
        n_annotated = len(self._item_pos)
        try:
            alpha, agreement = nominal_agreement_from_counts(self._counts[:n_annotated])
        except SchemaError:  # no item with two labels, or a single class: undefined
            alpha = agreement = float("nan")
        hours = self._resolution_hours(annotations, history) if resolution_hours else float("nan")
        seconds, n_seconds, cost, n_cost = self._totals
        return StreamMetrics(
            stream=self.stream, n_items=n_items, n_annotations=len(annotations), n_annotators=len(self._annotators),
            n_resolved=len(self._heads), percent_agreement=agreement, krippendorff_alpha=alpha,
            correction_frequency=self._corrected / len(self._chains) if self._chains else float("nan"),
            median_resolution_hours=hours,
            seconds_per_item=float(seconds / n_annotated) if n_annotated and n_seconds else float("nan"),
            total_cost=float(cost) if n_cost else float("nan"),
            cost_per_item=float(cost / n_annotated) if n_annotated and n_cost else float("nan"))

    def _resolution_hours(self, annotations: pd.DataFrame, history: pd.DataFrame) -> float:
        # Only an item whose labels ever differed has a disagreement to resolve.
        split = np.flatnonzero(_bits(self._ever[:len(self._item_pos)]) >= 2)
        rows = np.isin(self._row_item, split)
        names = np.array(list(self._item_pos), dtype=object)[split]
        resolved = history[pd.Index(history[ITEM].to_numpy(dtype=object), dtype=object).isin(names)]
        return _metrics._median_resolution_hours(annotations[rows], resolved)

    def _count(self, new: pd.DataFrame) -> None:
        """Fold new annotations into the counts :meth:`metrics` reads."""
        if new.empty:
            return
        items, people = new[ITEM].to_numpy(dtype=object), new[ANNOTATOR].to_numpy(dtype=object)
        labels = new[LABEL].to_numpy(dtype=np.int64)
        # Like _metrics.latest_per_pair: a later label of the same annotator replaces theirs
        # (later in time; at the same time, the one stored last).
        stamps = pd.DatetimeIndex(new[CREATED_AT]).as_unit("us").asi8
        where = np.empty(len(new), dtype=np.int64)
        positions, latest = self._item_pos, self._latest
        for j, (item, who, label, at) in enumerate(zip(items, people, labels.tolist(), stamps.tolist())):
            p = positions.setdefault(item, len(positions))
            if p >= len(self._ever):
                self._counts = np.concatenate([self._counts, np.zeros_like(self._counts)])
                self._ever = np.concatenate([self._ever, np.zeros_like(self._ever)])
            where[j] = p
            before = latest.get((item, who))
            if before is not None:
                if at < before[1]:
                    continue
                self._counts[p, before[0]] -= 1
            self._counts[p, label] += 1
            latest[(item, who)] = (label, at)
        np.bitwise_or.at(self._ever, where, np.left_shift(1, labels))
        self._row_item = np.concatenate([self._row_item, where])
        self._annotators.update(people.tolist())
        seconds, cost = new[SECONDS].to_numpy(dtype=np.float64), new[COST].to_numpy(dtype=np.float64)
        self._totals += [np.nansum(seconds), np.isfinite(seconds).sum(), np.nansum(cost), np.isfinite(cost).sum()]

    def _refresh_resolutions(self) -> None:
        # Resolution writers lock the table until they commit, so resolution ids commit in
        # order and "after the largest id read" misses nothing.
        if self._resolutions is None:
            new = self._resolutions = self.store.resolutions_frame(self.stream)
        else:
            last = int(self._resolutions[RESOLUTION_ID].iloc[-1]) if len(self._resolutions) else 0
            new = self.store.resolutions_frame(self.stream, after=last)
            if new.empty:
                return
            self._resolutions = new if self._resolutions.empty else \
                pd.concat([self._resolutions, new], ignore_index=True)
        if new.empty:
            return
        for item in new[ITEM].astype(str).tolist():
            n = self._chains.get(item, 0) + 1
            self._chains[item] = n
            self._corrected += n == 2
        # A correction must supersede the item's current resolution, so an item's newest
        # resolution is its head.
        newest = new.drop_duplicates(ITEM, keep="last")
        newest = pd.DataFrame({LABEL: newest[LABEL].to_numpy(dtype=np.int64),
                               RESOLUTION_ID: newest[RESOLUTION_ID].to_numpy(dtype=np.int64)},
                              index=pd.Index(newest[ITEM].astype(str).to_numpy(), dtype=object, name=ITEM))
        # The heads stay sorted by id: the new ids are placed by binary search (a hash of every
        # head and a re-sort of them all cost ~75 ms a round at 10^5 items).
        heads = self._heads.index.to_numpy(dtype=object)
        newest = newest.sort_index(kind="stable")
        ids = newest.index.to_numpy(dtype=object)
        at = np.searchsorted(heads, ids) if len(heads) else np.zeros(len(ids), dtype=np.int64)
        known = at < len(heads)
        known[known] = heads[at[known]] == ids[known]
        values = self._heads[[LABEL, RESOLUTION_ID]].to_numpy(dtype=np.int64, copy=True)
        values[at[known]] = newest[known].to_numpy(dtype=np.int64)
        if not known.all():
            fresh = ~known
            values = np.insert(values, at[fresh], newest[fresh].to_numpy(dtype=np.int64), axis=0)
            heads = np.insert(heads, at[fresh], ids[fresh])
        self._heads = pd.DataFrame({LABEL: values[:, 0], RESOLUTION_ID: values[:, 1]},
                                   index=pd.Index(heads, dtype=object, name=ITEM))


def _bits(values: np.ndarray) -> np.ndarray:
    """How many bits of each value are set."""
    count = np.zeros(values.shape, dtype=np.int64)
    values = values.copy()
    while values.any():
        count += values & 1
        values >>= 1
    return count
