"""A stream's history kept in memory and brought up to date by reading only what is new.

A live stream's history only grows; a reader that needs it several times a round (a
labelling program) would otherwise read it whole each time, and a round's cost would grow
with everything the team ever labelled. :class:`StreamHistory` reads the annotations and
resolutions stored after its last read (``after=`` the largest id it has) and appends them,
so what other writers stored (people answering, a second program) arrives too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import sqlalchemy as sa

from ..columns import ITEM, LABEL
from . import _metrics
from . import _schema as S
from ._columns import ANNOTATION_ID, RESOLUTION_ID
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
    Ids grow in insertion order. On PostgreSQL two writers committing at the same time may
    commit out of id order, so a row committed late under a smaller id than one already read
    would be missed; one writer (a program and its own workforce) never races itself.

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
        store.stream(stream)  # refuses an unknown stream now
        self._annotations: pd.DataFrame | None = None
        self._resolutions: pd.DataFrame | None = None
        # The current resolution of each item (label, resolution id), by item id, sorted as
        # :meth:`LabelStore.resolved_labels` sorts them.
        self._heads = pd.DataFrame({LABEL: pd.Series(dtype=np.int64), RESOLUTION_ID: pd.Series(dtype=np.int64)},
                                   index=pd.Index([], dtype=object, name=ITEM))

    def annotations(self) -> pd.DataFrame:
        """The stream's annotations frame (as :meth:`LabelStore.annotations_frame`), in insertion
        order, with what was stored since the last call appended."""
        if self._annotations is None:
            self._annotations = self.store.annotations_frame(self.stream)
            return self._annotations
        last = int(self._annotations[ANNOTATION_ID].iloc[-1]) if len(self._annotations) else 0
        new = self.store.annotations_frame(self.stream, after=last)
        if len(new):
            self._annotations = new if self._annotations.empty else \
                pd.concat([self._annotations, new], ignore_index=True)
        return self._annotations

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

    def metrics(self) -> StreamMetrics:
        """:meth:`LabelStore.stream_metrics`, computed on the history in memory."""
        s = self.store.stream(self.stream)
        with self.store._read() as conn:
            n_items = conn.execute(sa.select(sa.func.count()).select_from(S.items)
                                   .where(S.items.c.stream_id == s.id)).scalar()
        return _metrics.stream_metrics(self.stream, self.annotations(), self.resolutions(), n_items)

    def _refresh_resolutions(self) -> None:
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
        # A correction must supersede the item's current resolution, so an item's newest
        # resolution is its head.
        newest = new.drop_duplicates(ITEM, keep="last")
        newest = pd.DataFrame({LABEL: newest[LABEL].to_numpy(dtype=np.int64),
                               RESOLUTION_ID: newest[RESOLUTION_ID].to_numpy(dtype=np.int64)},
                              index=pd.Index(newest[ITEM].astype(str).to_numpy(), dtype=object, name=ITEM))
        known = newest.index.isin(self._heads.index)
        if known.any():
            self._heads.loc[newest.index[known], [LABEL, RESOLUTION_ID]] = newest[known].to_numpy()
        if not known.all():
            self._heads = pd.concat([self._heads, newest[~known]]).sort_index(kind="stable")
