"""How much annotators agree: Krippendorff's alpha, Fleiss' kappa, pairwise Cohen's kappa,
per-class specific agreement, percent agreement and per-annotator accuracy against gold.

Every function takes the long annotations frame (``item_id, annotator_id, label``; labels of
any hashable type; not every annotator labels every item) and is vectorised over it: the
frame is reduced once to the counts ``n[u, c]`` (how many annotators gave item ``u`` the
label ``c``) and ``m[u] = sum_c n[u, c]`` (how many labels item ``u`` has), and each
statistic is a few sums over those counts. An item with fewer than two labels cannot show
agreement or disagreement; it is *not pairable* and drops out of every statistic except
:func:`annotator_accuracy`.

Undefined values: a chance-corrected statistic (alpha, Fleiss' kappa) is ``0 / 0`` when no
item is pairable or when the pairable labels use a single class; both functions then raise
:class:`~loop.exceptions.SchemaError`, never return NaN. Frames with one row per pair or per
class (:func:`cohen_kappa_pairwise`, :func:`per_class_agreement`) hold NaN in the rows
where the value is undefined, and say so in their docstrings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._validation import check_annotations, check_int, check_option, factorize, fail
from .columns import (
    ACCURACY,
    AGREEMENT,
    ANNOTATOR,
    ANNOTATOR_A,
    ANNOTATOR_B,
    ITEM,
    KAPPA,
    LABEL,
    N_AGREEING,
    N_CORRECT,
    N_ITEMS,
    N_LABELS,
    N_PAIRS,
    SPECIFIC_AGREEMENT,
)

__all__ = [
    "LEVELS",
    "Level",
    "annotator_accuracy",
    "coincidence_matrix",
    "cohen_kappa_pairwise",
    "fleiss_kappa",
    "krippendorff_alpha",
    "nominal_agreement_from_counts",
    "per_class_agreement",
    "percent_agreement",
]

Level = Literal["nominal", "ordinal", "interval", "ratio"]
LEVELS: Final[tuple[str, ...]] = ("nominal", "ordinal", "interval", "ratio")

# Count (item, label) cells densely while there are at most this many cells per annotation.
DENSE_CELLS_PER_ROW: Final = 8

# Below this many shared items a pair's kappa is mostly noise.
DEFAULT_MIN_OVERLAP: Final = 10


@dataclass(frozen=True)
class _Counts:
    """The annotations reduced to one row per (item, label) cell with a positive count.

    ``item``, ``label``, ``count`` and ``n_ratings`` have shape ``(n_cells,)``: the item code,
    the label code, ``n[u, c]`` and ``m[u]`` of each cell. ``classes`` has shape ``(k,)``: the
    label value of each code, sorted when the labels can be sorted. ``n_items`` counts every
    item of the frame, pairable or not.
    """

    item: np.ndarray
    label: np.ndarray
    count: np.ndarray
    n_ratings: np.ndarray
    classes: pd.Index
    n_items: int

    def pairable(self) -> _Counts:
        """The cells of items with at least two labels."""
        keep = self.n_ratings >= 2
        return _Counts(self.item[keep], self.label[keep], self.count[keep],
                       self.n_ratings[keep], self.classes, self.n_items)

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def _count_cells(annotations: pd.DataFrame) -> _Counts:
    """Reduce a checked annotations frame to its (item, label) counts."""
    # Item order does not matter; cells come out sorted by item code, then label code.
    item, items = factorize(annotations[ITEM], sort=False)
    label, classes = factorize(annotations[LABEL])
    k = len(classes)
    key = item * k + label
    if len(items) * k <= DENSE_CELLS_PER_ROW * key.size:
        # Few classes: counting into every (item, class) cell beats sorting the keys.
        dense = np.bincount(key, minlength=len(items) * k)
        cell = np.flatnonzero(dense > 0)
        count = dense[cell]
    else:
        cell, count = np.unique(key, return_counts=True)
    cell_item, cell_label = np.divmod(cell, k)
    n_ratings = np.bincount(item, minlength=len(items))
    return _Counts(item=cell_item, label=cell_label, count=count.astype(np.int64),
                   n_ratings=n_ratings[cell_item].astype(np.int64), classes=classes,
                   n_items=len(items))


def _require_pairable(counts: _Counts, name: str) -> _Counts:
    pairable = counts.pairable()
    if pairable.count.size == 0:
        raise fail(name, "a frame with at least one item labelled by two or more annotators",
                   f"{counts.n_items} items with one label each")
    return pairable


def _coincidences(counts: _Counts) -> np.ndarray:
    """Krippendorff's coincidence matrix of pairable cells, shape ``(k, k)``.

    ``o[c, d] = sum_u (n[u, c] * n[u, d] - [c == d] * n[u, c]) / (m[u] - 1)``: each item
    spreads its ``m[u]`` pairable values over the ordered pairs of its labels.
    """
    k = counts.n_classes
    weight = counts.count / (counts.n_ratings - 1)
    # Cells are sorted by item, so the (items x classes) count matrix is built as CSR directly.
    indptr = np.r_[0, np.cumsum(np.bincount(counts.item, minlength=counts.n_items))]
    by_item = sp.csr_matrix((counts.count.astype(np.float64), counts.label, indptr),
                            shape=(counts.n_items, k))
    scaled = sp.csr_matrix((weight, counts.label, indptr), shape=(counts.n_items, k))
    o = (by_item.T @ scaled).toarray()
    o[np.diag_indices(k)] -= np.bincount(counts.label, weights=weight, minlength=k)
    return o


def _coincidence_margins(counts: _Counts) -> tuple[np.ndarray, np.ndarray]:
    """The diagonal ``o[c, c]`` and the margins ``n_c`` of the coincidence matrix, shape
    ``(k,)`` each, without building the matrix: all that nominal alpha needs."""
    k = counts.n_classes
    diagonal = np.bincount(counts.label, weights=counts.count * (counts.count - 1) / (counts.n_ratings - 1),
                           minlength=k)
    return diagonal, np.bincount(counts.label, weights=counts.count, minlength=k).astype(np.float64)


def coincidence_matrix(annotations: pd.DataFrame) -> pd.DataFrame:
    """Krippendorff's coincidence matrix: how often each ordered pair of labels is given to
    the same item by two different annotators, each item weighted by ``1 / (m_u - 1)``.

    Parameters
    ----------
    annotations : DataFrame
        Long frame with columns ``item_id, annotator_id, label``.

    Returns
    -------
    DataFrame, shape (k, k)
        ``o[c, d] = sum_u (n_uc * n_ud - [c == d] * n_uc) / (m_u - 1)`` over items with
        ``m_u >= 2`` labels; symmetric; its total is the number of pairable labels. Index and
        columns are the classes seen in the frame (sorted when sortable), including classes
        that occur only on single-label items (their row is zero).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"item_id": [0, 0, 1, 1], "annotator_id": ["a", "b", "a", "b"],
    ...                    "label": ["x", "x", "x", "y"]})
    >>> coincidence_matrix(df).to_numpy().tolist()
    [[2.0, 1.0], [1.0, 0.0]]
    """
    counts = _count_cells(check_annotations(annotations))
    o = _coincidences(counts.pairable())
    return pd.DataFrame(o, index=counts.classes.rename(LABEL), columns=counts.classes.rename(LABEL))


def _distances(classes: pd.Index, n_c: np.ndarray, level: str) -> np.ndarray:
    """Squared distance between the classes, shape ``(k, k)``, for a level of measurement."""
    if level == "nominal":
        return 1.0 - np.eye(len(classes))
    values = classes.to_numpy()
    if values.dtype.kind not in "iuf":
        raise fail("annotations", f"numeric labels for level={level!r}",
                   f"labels of dtype {classes.dtype}")
    if level == "ordinal":
        # Ranks by value: the mass of labels between c and d, less half the mass of each end.
        order = np.argsort(values, kind="stable")
        cum = np.concatenate([[0.0], np.cumsum(n_c[order])])
        rank = np.empty(len(values), dtype=np.int64)
        rank[order] = np.arange(len(values))
        lo, hi = np.minimum.outer(rank, rank), np.maximum.outer(rank, rank)
        sorted_n = n_c[order]
        return (cum[hi + 1] - cum[lo] - (sorted_n[lo] + sorted_n[hi]) / 2) ** 2
    v = values.astype(np.float64)
    diff = np.subtract.outer(v, v)
    if level == "interval":
        return diff ** 2
    total = np.add.outer(v, v)
    return np.divide(diff, total, out=np.zeros_like(diff), where=total != 0) ** 2


def krippendorff_alpha(annotations: pd.DataFrame, *, level: Level = "nominal") -> float:
    """Krippendorff's alpha: agreement beyond chance, with missing labels allowed.

    ``alpha = 1 - D_o / D_e`` with observed disagreement ``D_o = sum(o * d) / n`` and expected
    disagreement ``D_e = sum(e * d) / n``, where ``o`` is the coincidence matrix
    (:func:`coincidence_matrix`), ``n_c = sum_d o[c, d]``, ``n = sum_c n_c``,
    ``e[c, d] = (n_c * n_d - [c == d] * n_c) / (n - 1)`` and ``d`` the squared distance of the
    level of measurement (nominal: ``[c != d]``; ordinal, interval, ratio as in Krippendorff
    2011). For nominal data this is
    ``1 - (n - 1) * (n - sum_c o[c, c]) / (n ** 2 - sum_c n_c ** 2)``.

    Items with fewer than two labels are not pairable and drop out. The result equals the
    ``krippendorff`` package's ``alpha(reliability_data, level_of_measurement=level)`` on the
    annotators x items matrix of the same frame.

    Parameters
    ----------
    annotations : DataFrame
        Long frame with columns ``item_id, annotator_id, label``; labels any hashable for
        ``level="nominal"``, numbers for the other levels (ordinal ranks them by value).
    level : {"nominal", "ordinal", "interval", "ratio"}, default "nominal"

    Returns
    -------
    float
        In ``[-1, 1]`` for nominal data with at least two classes: 1 for perfect agreement,
        about 0 for agreement at chance, negative for systematic disagreement.

    Raises
    ------
    SchemaError
        When the frame is malformed, when no item has two labels (alpha is undefined; the
        ``krippendorff`` package raises ``ValueError`` too), or when the pairable labels use a
        single class, so that the expected disagreement is 0 (the package raises a
        ``ValueError`` when the whole frame uses one class, and returns NaN when only the
        single-label items use another).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"item_id": [0, 0, 1, 1, 2, 2], "annotator_id": ["a", "b"] * 3,
    ...                    "label": ["x", "x", "y", "y", "x", "y"]})
    >>> round(krippendorff_alpha(df), 4)
    0.4444
    """
    check_option(level, "level", LEVELS)
    counts = _require_pairable(_count_cells(check_annotations(annotations)), "annotations")
    return _alpha(counts, level)


def _alpha(counts: _Counts, level: str) -> float:
    if level == "nominal":
        # sum(o * d) = n - trace(o) and sum(e * d) = (n^2 - sum_c n_c^2) / (n - 1).
        diagonal, n_c = _coincidence_margins(counts)
        n = n_c.sum()
        observed = n - diagonal.sum()
        expected = (n * n - (n_c ** 2).sum()) / (n - 1)
    else:
        o = _coincidences(counts)
        n_c = o.sum(axis=0)
        n = n_c.sum()
        d = _distances(counts.classes, n_c, level)
        observed = (o * d).sum()
        expected = ((np.outer(n_c, n_c) - np.diag(n_c)) / (n - 1) * d).sum()
    if expected <= 0:
        used = counts.classes[n_c > 0].tolist()
        raise fail("annotations", "items with two or more labels that use at least two distinct "
                   "labels (alpha is 0/0 otherwise)", f"only the label(s) {used[:5]} on those items")
    return float(1.0 - observed / expected)


def fleiss_kappa(annotations: pd.DataFrame) -> float:
    """Fleiss' kappa for items that all have the same number of labels ``m``.

    ``kappa = (P_bar - P_e) / (1 - P_e)``, with ``P_u = sum_c n_uc (n_uc - 1) / (m (m - 1))``
    the share of agreeing annotator pairs on item ``u``, ``P_bar`` its mean over items,
    ``p_c = sum_u n_uc / (N m)`` the share of labels in class ``c`` and
    ``P_e = sum_c p_c ** 2`` (Fleiss 1971). The annotators may differ from item to item.

    Parameters
    ----------
    annotations : DataFrame
        Long frame with columns ``item_id, annotator_id, label``; every item with the same
        number (at least 2) of labels.

    Returns
    -------
    float
        1 for perfect agreement, about 0 at chance.

    Raises
    ------
    SchemaError
        When items have different numbers of labels (use :func:`krippendorff_alpha`, which
        allows missing labels), fewer than two labels each, or all labels are one class.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"item_id": [0, 0, 1, 1], "annotator_id": ["a", "b"] * 2,
    ...                    "label": [1, 1, 0, 1]})
    >>> round(fleiss_kappa(df), 4)
    -0.3333
    """
    counts = _count_cells(check_annotations(annotations))
    per_item = np.bincount(counts.item, weights=counts.count, minlength=counts.n_items)
    m_values = np.unique(per_item).astype(np.int64)
    if m_values.size != 1:
        sizes = pd.Series(per_item.astype(np.int64)).value_counts().sort_index()
        shown = ", ".join(f"{c} items with {m}" for m, c in sizes.iloc[:5].items())
        raise fail("annotations", "the same number of labels on every item for Fleiss' kappa "
                   "(krippendorff_alpha allows missing labels)", f"{shown}")
    m = int(m_values[0])
    if m < 2:
        raise fail("annotations", "at least two labels per item", "one label per item")
    if counts.n_classes < 2:
        raise fail("annotations", "labels of at least two classes (kappa is 0/0 otherwise)",
                   f"only the label {counts.classes[0]!r}")
    n_items = counts.n_items
    agree = float((counts.count * (counts.count - 1)).sum()) / (n_items * m * (m - 1))
    p_c = np.bincount(counts.label, weights=counts.count, minlength=counts.n_classes) / (n_items * m)
    chance = float((p_c ** 2).sum())
    return (agree - chance) / (1.0 - chance)


def percent_agreement(annotations: pd.DataFrame) -> float:
    """Observed agreement: the share of annotator pairs on an item that gave the same label,
    averaged over pairable items (each item counts once, whatever its number of labels).

    ``mean_u sum_c n_uc (n_uc - 1) / (m_u (m_u - 1))`` over items with ``m_u >= 2``; with the
    same ``m`` on every item it is Fleiss' ``P_bar``. Not corrected for chance: two annotators
    who always say the majority class agree often. Cheap, and easy to read on a dashboard.

    Parameters
    ----------
    annotations : DataFrame
        Long frame with columns ``item_id, annotator_id, label``.

    Returns
    -------
    float
        In ``[0, 1]``.

    Raises
    ------
    SchemaError
        When the frame is malformed or no item has two labels.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"item_id": [0, 0, 0, 1, 1], "annotator_id": ["a", "b", "c", "a", "b"],
    ...                    "label": [1, 1, 0, 2, 2]})
    >>> round(percent_agreement(df), 4)   # item 0: 1 of 3 pairs agree; item 1: 1 of 1
    0.6667
    """
    return _percent_agreement(_require_pairable(_count_cells(check_annotations(annotations)), "annotations"))


def _percent_agreement(counts: _Counts) -> float:
    m = counts.n_ratings
    share = counts.count * (counts.count - 1) / (m * (m - 1))
    per_item = np.bincount(counts.item, weights=share, minlength=counts.n_items)
    n_pairable = np.unique(counts.item).size
    return float(per_item.sum() / n_pairable)


def nominal_agreement_from_counts(counts: Any) -> tuple[float, float]:
    """Nominal Krippendorff's alpha and percent agreement from a matrix of label counts.

    What :func:`krippendorff_alpha` and :func:`percent_agreement` give for a frame whose item
    ``u`` has ``counts[u, c]`` labels ``c``: for a reader that keeps the counts up to date as
    annotations arrive instead of counting every annotation again. Rows with fewer than two
    labels do not count (as in the frame functions).

    Parameters
    ----------
    counts : array-like of int, shape (n_items, k)
        Non-negative label counts; column ``c`` is class code ``c``.

    Returns
    -------
    alpha, agreement : float

    Raises
    ------
    SchemaError
        As the frame functions: no row with two labels, or a single label value on those rows.

    Examples
    --------
    >>> round(nominal_agreement_from_counts([[0, 2, 0], [1, 1, 0], [0, 0, 1]])[1], 4)
    0.5
    """
    matrix = np.asarray(counts)
    if matrix.ndim != 2 or matrix.dtype.kind not in "iu" or (matrix < 0).any():
        raise fail("counts", "a 2-D array of non-negative integer label counts", f"an array of shape {matrix.shape} "
                   f"and dtype {matrix.dtype}")
    # Cells sorted by item, then label code, as _count_cells makes them.
    item, label = np.nonzero(matrix)
    n_ratings = matrix.sum(axis=1)
    cells = _Counts(item=item, label=label, count=matrix[item, label].astype(np.int64),
                    n_ratings=n_ratings[item].astype(np.int64), classes=pd.RangeIndex(matrix.shape[1]),
                    n_items=matrix.shape[0])
    cells = _require_pairable(cells, "counts")
    return _alpha(cells, "nominal"), _percent_agreement(cells)


def per_class_agreement(annotations: pd.DataFrame) -> pd.DataFrame:
    """Specific agreement for each class: when an annotator says ``c``, how often does another
    annotator on the same item say ``c`` too.

    Over the ordered pairs of different annotators on the same item,
    ``specific_agreement[c] = n_agreeing[c] / n_pairs[c]`` with
    ``n_pairs[c] = sum_u n_uc (m_u - 1)`` (pairs whose first annotator said ``c``) and
    ``n_agreeing[c] = sum_u n_uc (n_uc - 1)`` (pairs where both did). With two annotators per
    item this is the positive specific agreement ``2a / (2a + b + c)`` of a 2 x 2 table
    (Uebersax; Fleiss 1975). A low value points at a class the guidelines leave ambiguous.

    Parameters
    ----------
    annotations : DataFrame
        Long frame with columns ``item_id, annotator_id, label``.

    Returns
    -------
    DataFrame, shape (k, 4)
        Indexed by class (name ``label``; every class in the frame, sorted when sortable),
        columns ``n_labels`` (labels of the class on pairable items), ``n_pairs``,
        ``n_agreeing`` and ``specific_agreement`` (NaN for a class only ever given on items
        with a single label).

    Raises
    ------
    SchemaError
        When the frame is malformed.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"item_id": [0, 0, 1, 1], "annotator_id": ["a", "b"] * 2,
    ...                    "label": ["x", "x", "x", "y"]})
    >>> per_class_agreement(df)[SPECIFIC_AGREEMENT].round(4).tolist()
    [0.6667, 0.0]
    """
    everything = _count_cells(check_annotations(annotations))
    counts = everything.pairable()
    k = counts.n_classes
    n_labels = np.bincount(counts.label, weights=counts.count, minlength=k).astype(np.int64)
    n_pairs = np.bincount(counts.label, weights=counts.count * (counts.n_ratings - 1),
                          minlength=k).astype(np.int64)
    n_agreeing = np.bincount(counts.label, weights=counts.count * (counts.count - 1),
                             minlength=k).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        specific = np.where(n_pairs > 0, n_agreeing / np.maximum(n_pairs, 1), np.nan)
    return pd.DataFrame({N_LABELS: n_labels, N_PAIRS: n_pairs, N_AGREEING: n_agreeing,
                         SPECIFIC_AGREEMENT: specific},
                        index=everything.classes.rename(LABEL))


def _pair_rows(item: np.ndarray, annotator: np.ndarray, label: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of rows on the same item with ``annotator_a < annotator_b`` (as codes).

    Returns the annotator codes and the label codes of both sides, shape ``(n_pairs,)`` each.
    """
    order = np.lexsort((annotator, item))
    item, annotator, label = item[order], annotator[order], label[order]
    starts = np.flatnonzero(np.r_[True, item[1:] != item[:-1]])
    sizes = np.diff(np.r_[starts, item.size])
    # Within an item of size s, row i pairs with rows i+1 .. s-1 (annotators are sorted).
    offset = np.arange(item.size) - np.repeat(starts, sizes)
    n_after = np.repeat(sizes, sizes) - offset - 1
    first = np.repeat(np.arange(item.size), n_after)
    step = np.arange(first.size) - np.repeat(np.cumsum(n_after) - n_after, n_after) + 1
    second = first + step
    return annotator[first], annotator[second], label[first], label[second]


def cohen_kappa_pairwise(annotations: pd.DataFrame, *,
                         min_overlap: int = DEFAULT_MIN_OVERLAP) -> pd.DataFrame:
    """Cohen's kappa for every pair of annotators that labelled at least ``min_overlap`` of
    the same items.

    For a pair on its ``n`` shared items: observed agreement ``p_o`` (share of shared items
    they labelled alike), chance agreement ``p_e = sum_c a_c b_c / n ** 2`` from each
    annotator's label counts ``a_c``, ``b_c`` on those items, and
    ``kappa = (p_o - p_e) / (1 - p_e)``, as ``sklearn.metrics.cohen_kappa_score`` on the two
    label vectors.

    Parameters
    ----------
    annotations : DataFrame
        Long frame with columns ``item_id, annotator_id, label``.
    min_overlap : int, default 10
        Pairs sharing fewer items are left out; kappa on a handful of items is mostly noise.

    Returns
    -------
    DataFrame, shape (n_pairs, 5)
        Columns ``annotator_a, annotator_b, n_items, agreement, kappa``, one row per pair with
        ``annotator_a`` before ``annotator_b`` (sorted ids when sortable), sorted by the pair.
        ``kappa`` is NaN where it is undefined: both annotators gave one and the same class on
        every shared item (``p_e = 1``; scikit-learn returns NaN with a warning there). Empty,
        with these columns, when no pair shares enough items.

    Raises
    ------
    SchemaError
        When the frame is malformed or ``min_overlap`` is not an integer of at least 1.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"item_id": [0, 0, 1, 1, 2, 2], "annotator_id": ["a", "b"] * 3,
    ...                    "label": [0, 0, 1, 1, 0, 1]})
    >>> cohen_kappa_pairwise(df, min_overlap=1)[KAPPA].round(4).tolist()
    [0.4]
    """
    frame = check_annotations(annotations)
    min_overlap = check_int(min_overlap, "min_overlap", low=1)
    item, _ = factorize(frame[ITEM])
    annotator, annotators = factorize(frame[ANNOTATOR])
    label, classes = factorize(frame[LABEL])
    a, b, la, lb = _pair_rows(item, annotator, label)
    n_ann, k = len(annotators), len(classes)

    pair_key = a * n_ann + b
    pairs, pair_idx, n_shared = np.unique(pair_key, return_inverse=True, return_counts=True)
    n_agree = np.bincount(pair_idx, weights=la == lb, minlength=pairs.size)
    # sum_c a_c * b_c per pair, from the sparse (pair, class) counts of either side.
    keys_a, count_a = np.unique(pair_idx * k + la, return_counts=True)
    keys_b, count_b = np.unique(pair_idx * k + lb, return_counts=True)
    common, ia, ib = np.intersect1d(keys_a, keys_b, assume_unique=True, return_indices=True)
    chance_mass = np.bincount(common // k, weights=count_a[ia] * count_b[ib].astype(np.float64),
                              minlength=pairs.size)

    n = n_shared.astype(np.float64)
    # kappa = (n * agree - S) / (n^2 - S), S = sum_c a_c b_c; integers held exactly in float64.
    denominator = n * n - chance_mass
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = np.where(denominator > 0, (n * n_agree - chance_mass) / denominator, np.nan)
    keep = n_shared >= min_overlap
    return pd.DataFrame({
        ANNOTATOR_A: annotators.take(pairs[keep] // n_ann).to_numpy(),
        ANNOTATOR_B: annotators.take(pairs[keep] % n_ann).to_numpy(),
        N_ITEMS: n_shared[keep].astype(np.int64),
        AGREEMENT: n_agree[keep] / n[keep],
        KAPPA: kappa[keep],
    })


def annotator_accuracy(annotations: pd.DataFrame, gold: pd.Series) -> pd.DataFrame:
    """Each annotator's accuracy against gold, on the items that have gold.

    Parameters
    ----------
    annotations : DataFrame
        Long frame with columns ``item_id, annotator_id, label``.
    gold : Series
        True label by ``item_id`` (index), for the items where it is known; labels comparable
        with the annotations' (the same codes or values).

    Returns
    -------
    DataFrame, shape (n_annotators, 3)
        Indexed by ``annotator_id`` (sorted when sortable), columns ``n_items`` (labels the
        annotator gave on gold items), ``n_correct`` and ``accuracy`` (``n_correct /
        n_items``; NaN for an annotator with no gold items). Every annotator of the frame
        has a row.

    Raises
    ------
    SchemaError
        When the frame is malformed, or ``gold`` is not a Series with unique item ids and no
        missing values.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"item_id": [0, 0, 1, 1], "annotator_id": ["a", "b"] * 2,
    ...                    "label": [1, 1, 0, 1]})
    >>> annotator_accuracy(df, pd.Series({0: 1, 1: 0}))[ACCURACY].tolist()
    [1.0, 0.5]
    """
    frame = check_annotations(annotations)
    if not isinstance(gold, pd.Series):
        raise fail("gold", "a Series of true labels indexed by item_id", f"a {type(gold).__name__}")
    if gold.index.has_duplicates:
        dup = gold.index[gold.index.duplicated()][0]
        raise fail("gold", "one label per item_id", f"item_id {dup!r} more than once")
    if gold.isna().any():
        raise fail("gold", "no missing values", f"{int(gold.isna().sum())} missing")
    truth = frame[ITEM].map(gold)
    has_gold = truth.notna().to_numpy()
    correct = (frame[LABEL].to_numpy() == truth.to_numpy()) & has_gold
    annotator, annotators = factorize(frame[ANNOTATOR])
    n_items = np.bincount(annotator, weights=has_gold, minlength=len(annotators)).astype(np.int64)
    n_correct = np.bincount(annotator, weights=correct, minlength=len(annotators)).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(n_items > 0, n_correct / np.maximum(n_items, 1), np.nan)
    return pd.DataFrame({N_ITEMS: n_items, N_CORRECT: n_correct, ACCURACY: accuracy},
                        index=annotators.rename(ANNOTATOR))
