"""Per-annotator and per-stream figures from the annotations frame and the resolution
history (pure pandas: the store reads, these functions compute)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..agreement import krippendorff_alpha, percent_agreement
from ..columns import ANNOTATOR, COST, ITEM, LABEL, SECONDS
from ..exceptions import SchemaError
from ._columns import CREATED_AT, RESOLUTION_ID, RESOLVED_AT
from ._records import StreamMetrics
from ._resolutions import current_only


def latest_per_pair(annotations: pd.DataFrame) -> pd.DataFrame:
    """One label per (item, annotator): the latest, when an annotator labelled an item again."""
    return annotations.sort_values(CREATED_AT, kind="stable").drop_duplicates([ITEM, ANNOTATOR], keep="last")


def annotator_metrics(annotations: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """One row per annotator, indexed by ``annotator_id``.

    Columns: ``n_annotations``, ``n_items``, ``agreement`` (share of the other annotators'
    labels on the same items that match theirs), ``correction_rate`` (share of their labels
    on resolved items that differ from the final label), ``seconds_per_item``,
    ``total_seconds``, ``cost``. NaN where undefined (no shared items, nothing resolved, no
    time recorded).
    """
    pairs = latest_per_pair(annotations)
    n_u = pairs.groupby(ITEM)[LABEL].transform("size")
    n_ul = pairs.groupby([ITEM, LABEL])[LABEL].transform("size")
    shared = n_u > 1
    final = current_only(history).set_index(ITEM)[LABEL] if len(history) else pd.Series(dtype=np.int64)
    resolved_label = pairs[ITEM].map(final)
    work = pd.DataFrame({
        ANNOTATOR: pairs[ANNOTATOR],
        "others": np.where(shared, n_u - 1, 0),
        "matches": np.where(shared, n_ul - 1, 0),
        "resolved": resolved_label.notna(),
        "overturned": resolved_label.notna() & (resolved_label != pairs[LABEL]),
    })
    by = work.groupby(ANNOTATOR)
    everything = annotations.groupby(ANNOTATOR)
    out = pd.DataFrame({
        "n_annotations": everything.size(),
        "n_items": everything[ITEM].nunique(),
        "agreement": by["matches"].sum() / by["others"].sum().replace(0, np.nan),
        "correction_rate": by["overturned"].sum() / by["resolved"].sum().replace(0, np.nan),
        "seconds_per_item": everything[SECONDS].sum(min_count=1) / everything[ITEM].nunique(),
        "total_seconds": everything[SECONDS].sum(min_count=1),
        "cost": everything[COST].sum(min_count=1),
    })
    out.index.name = ANNOTATOR
    return out


def stream_metrics(name: str, annotations: pd.DataFrame, history: pd.DataFrame, n_items: int) -> StreamMetrics:
    pairs = latest_per_pair(annotations)
    n_annotated = annotations[ITEM].nunique()
    heads = current_only(history) if len(history) else history
    chains = history.groupby(ITEM)[RESOLUTION_ID].size() if len(history) else pd.Series(dtype=int)
    total_seconds = annotations[SECONDS].sum(min_count=1)
    total_cost = annotations[COST].sum(min_count=1)
    return StreamMetrics(
        stream=name,
        n_items=n_items,
        n_annotations=len(annotations),
        n_annotators=annotations[ANNOTATOR].nunique(),
        n_resolved=len(heads),
        percent_agreement=_or_nan(percent_agreement, pairs),
        krippendorff_alpha=_or_nan(krippendorff_alpha, pairs),
        correction_frequency=float((chains > 1).mean()) if len(chains) else float("nan"),
        median_resolution_hours=_median_resolution_hours(annotations, history),
        seconds_per_item=float(total_seconds / n_annotated) if n_annotated else float("nan"),
        total_cost=float(total_cost) if pd.notna(total_cost) else float("nan"),
        cost_per_item=float(total_cost / n_annotated) if n_annotated and pd.notna(total_cost) else float("nan"),
    )


def _or_nan(statistic, pairs: pd.DataFrame) -> float:
    try:
        return float(statistic(pairs[[ITEM, ANNOTATOR, LABEL]]))
    except SchemaError:  # no item with two labels, or a single class: undefined
        return float("nan")


def _median_resolution_hours(annotations: pd.DataFrame, history: pd.DataFrame) -> float:
    """Median time from the moment an item's annotations first disagree (the first label that
    differs from its first label) to the item's first resolution after that moment."""
    if annotations.empty or history.empty:
        return float("nan")
    ordered = annotations.sort_values([ITEM, CREATED_AT], kind="stable")
    first = ordered.groupby(ITEM)[LABEL].transform("first")
    split = ordered[ordered[LABEL] != first].groupby(ITEM)[CREATED_AT].min()
    resolved = history.merge(split.rename("split"), left_on=ITEM, right_index=True)
    resolved = resolved[resolved[RESOLVED_AT] >= resolved["split"]]
    if resolved.empty:
        return float("nan")
    per_item = resolved.groupby(ITEM).agg(done=(RESOLVED_AT, "min"), split=("split", "first"))
    waits = (per_item["done"] - per_item["split"]).dt.total_seconds()
    return float(np.median(waits.to_numpy()) / 3600.0)

