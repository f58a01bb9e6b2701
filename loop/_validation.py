"""Argument checks shared by every public function of :mod:`loop`.

Each check returns the argument in its canonical form (a float64 array, an int64 array,
a clean frame) or raises :class:`~loop.exceptions.SchemaError` with a message of one form:
*The 'name' argument must be <expected>. Got <what was given> instead.*
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd

from .columns import ANNOTATION_COLUMNS, ANNOTATOR, ITEM
from .exceptions import SchemaError

# Rows of a probability matrix may drift from 1 by float32 rounding or a softmax of logits.
PROB_SUM_ATOL = 1e-4


def fail(name: str, expected: str, got: str) -> SchemaError:
    """Build the one error message every check uses."""
    return SchemaError(f"The {name!r} argument must be {expected}. Got {got} instead.")


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_array(value: Any, name: str, *, ndim: int, dtype: Any = np.float64) -> np.ndarray:
    """Convert ``value`` to an array of ``ndim`` dimensions, refusing ragged or text input."""
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise fail(name, f"a {ndim}-D numeric array", f"{_describe(value)} ({exc})") from None
    if array.ndim != ndim:
        raise fail(name, f"a {ndim}-D array", f"an array of shape {array.shape}")
    return array


def check_pred_probs(value: Any, name: str = "pred_probs", *, ndim: int = 2) -> np.ndarray:
    """Check class probabilities: shape ``(n, k)`` (or ``(m, n, k)`` with ``ndim=3``), ``k >= 2``,
    finite values in ``[0, 1]`` whose last axis sums to 1."""
    shape = "(n_items, n_classes)" if ndim == 2 else "(n_models, n_items, n_classes)"
    probs = check_array(value, name, ndim=ndim)
    if probs.shape[-1] < 2 or probs.shape[-2] < 1:
        raise fail(name, f"an array of shape {shape} with at least 1 item and 2 classes",
                   f"shape {probs.shape}")
    if not np.isfinite(probs).all():
        raise fail(name, "finite probabilities", f"{int((~np.isfinite(probs)).sum())} NaN or inf values")
    if probs.min() < 0 or probs.max() > 1:
        raise fail(name, "probabilities in [0, 1]", f"values from {probs.min():.4g} to {probs.max():.4g}")
    sums = probs.sum(axis=-1)
    bad = np.abs(sums - 1) > PROB_SUM_ATOL
    if bad.any():
        first = np.argwhere(bad)[0]
        raise fail(name, "rows that sum to 1", f"{int(bad.sum())} rows that do not (row {tuple(first.tolist())} sums to {sums[tuple(first)]:.6g})")
    return probs


def check_labels(value: Any, name: str = "labels", *, n_classes: int | None = None,
                 n_items: int | None = None) -> np.ndarray:
    """Check integer class labels ``0 .. n_classes - 1``, one per item."""
    raw = np.asarray(value)
    if raw.ndim != 1:
        raise fail(name, "a 1-D array of integer class labels", f"an array of shape {raw.shape}")
    if raw.size == 0:
        raise fail(name, "a non-empty array of class labels", "an empty array")
    if raw.dtype.kind == "f":
        if not np.isfinite(raw).all():
            raise fail(name, "integer class labels", "NaN or inf values")
        if not np.equal(np.mod(raw, 1), 0).all():
            raise fail(name, "integer class labels", "non-integer floats")
    elif raw.dtype.kind not in "iub":
        raise fail(name, "integer class labels", f"dtype {raw.dtype}")
    labels = raw.astype(np.int64)
    if n_items is not None and labels.shape[0] != n_items:
        raise fail(name, f"one label per item ({n_items} labels)", f"{labels.shape[0]} labels")
    if labels.min() < 0 or (n_classes is not None and labels.max() >= n_classes):
        upper = "" if n_classes is None else f" and below {n_classes}"
        raise fail(name, f"labels at least 0{upper}", f"labels from {labels.min()} to {labels.max()}")
    return labels


def _compact_integers(values: pd.Series) -> tuple[np.ndarray, int, int] | None:
    """``(array, min, max)`` when a column holds integers whose range is at most twice their
    count, so a table indexed by value is cheap; ``None`` otherwise."""
    if not (pd.api.types.is_integer_dtype(values.dtype) and len(values)):
        return None
    raw = values.to_numpy()
    if raw.dtype.kind not in "iu":
        return None
    low, high = int(raw.min()), int(raw.max())
    return (raw, low, high) if high - low <= 2 * raw.size else None


def factorize(values: pd.Series, *, sort: bool = True) -> tuple[np.ndarray, pd.Index]:
    """Integer codes ``0 .. u - 1`` of a column, shape ``(n,)``, and the ``u`` distinct values
    they stand for; the values sorted when ``sort`` and they can be sorted (mixed types
    cannot), in order of appearance otherwise. Missing values must have been refused before.
    """
    compact = _compact_integers(values)
    if compact is not None:
        # Integer ids in a compact range (class codes, 0 .. n - 1 item ids): a lookup table is
        # several times faster than hashing, and its codes come out sorted.
        raw, low, high = compact
        offset = (raw if low == 0 else raw - low).astype(np.int64, copy=False)
        present = np.bincount(offset, minlength=high - low + 1) > 0
        if present.all():
            # Every id in the range occurs: the offsets are the codes. A read-only view, since
            # it may share memory with the caller's frame.
            codes = offset.view()
            codes.flags.writeable = False
        else:
            codes = (np.cumsum(present) - 1)[offset]
        return codes, pd.Index((np.flatnonzero(present) + low).astype(raw.dtype))
    try:
        codes, uniques = pd.factorize(values, sort=sort)
    except TypeError:
        codes, uniques = pd.factorize(values, sort=False)
    return codes.astype(np.int64, copy=False), pd.Index(uniques)


def _has_duplicate_pairs(first: pd.Series, second: pd.Series) -> bool:
    """Whether some (first, second) pair occurs on two rows: sorted integer codes, two to three
    times faster than ``DataFrame.duplicated`` on 10^6 rows."""
    a, n_a = _injective_codes(first)
    b, n_b = _injective_codes(second)
    cells = n_a * n_b
    # 32-bit keys sort about twice as fast as 64-bit ones.
    dtype = np.int32 if cells < 2**31 else np.int64
    key = np.sort(a.astype(dtype) * dtype(n_b) + b.astype(dtype))
    return bool((key[1:] == key[:-1]).any())


def _injective_codes(values: pd.Series) -> tuple[np.ndarray, int]:
    """Codes ``0 .. size - 1`` that tell distinct values apart, and ``size``: integer ids in a
    compact range are their own codes (offset by the minimum); anything else is factorized."""
    compact = _compact_integers(values)
    if compact is not None:
        raw, low, high = compact
        return raw - low, high - low + 1
    codes, uniques = factorize(values, sort=False)
    return codes, len(uniques)


def _has_missing(column: pd.Series) -> bool:
    """Whether a column holds a missing value, without pandas' reductions where the dtype
    cannot hold one (integer and boolean numpy columns)."""
    if not isinstance(column.dtype, np.dtype):  # pandas extension dtypes (Int64, string) hold NA
        return bool(column.isna().to_numpy().any())
    if column.dtype.kind in "iub":
        return False
    if column.dtype.kind == "f":
        return bool(np.isnan(column.to_numpy()).any())
    return bool(column.isna().to_numpy().any())


def check_annotations(value: Any, name: str = "annotations", *,
                      classes: Collection[Hashable] | None = None) -> pd.DataFrame:
    """Check the long annotations frame: columns ``item_id, annotator_id, label``, no missing
    values, no duplicate (item, annotator) pair; with ``classes``, labels inside that set.

    Returns a copy restricted to the three columns plus any extra ones, index reset.
    """
    if not isinstance(value, pd.DataFrame):
        raise fail(name, f"a DataFrame with columns {list(ANNOTATION_COLUMNS)}", f"a {type(value).__name__}")
    missing = [c for c in ANNOTATION_COLUMNS if c not in value.columns]
    if missing:
        raise fail(name, f"a DataFrame with columns {list(ANNOTATION_COLUMNS)}",
                   f"columns {list(value.columns)} (missing {missing})")
    if value.empty:
        raise fail(name, "a non-empty DataFrame", "an empty one")
    if any(_has_missing(value[c]) for c in ANNOTATION_COLUMNS):
        nulls = value[list(ANNOTATION_COLUMNS)].isna().sum()
        where = ", ".join(f"{c}: {n}" for c, n in nulls.items() if n)
        raise fail(name, "no missing values in item_id, annotator_id, label", f"missing values ({where})")
    if _has_duplicate_pairs(value[ITEM], value[ANNOTATOR]):
        dup = value.duplicated([ITEM, ANNOTATOR])
        row = value.loc[dup, [ITEM, ANNOTATOR]].iloc[0]
        raise fail(name, "at most one label per (item_id, annotator_id)",
                   f"{int(dup.sum())} duplicates, the first ({row[ITEM]!r}, {row[ANNOTATOR]!r})")
    if classes is not None:
        from .columns import LABEL

        unknown = ~value[LABEL].isin(list(classes))
        if unknown.any():
            bad = sorted(map(str, value.loc[unknown, LABEL].unique()))[:5]
            raise fail(name, f"labels in the class set {sorted(map(str, classes))}", f"labels {bad}")
    return value.reset_index(drop=True)


def check_option(value: Any, name: str, options: Iterable[Any]) -> Any:
    """Check that ``value`` is one of ``options``."""
    options = list(options)
    if value not in options:
        raise fail(name, f"one of {options}", _describe(value))
    return value


def check_real(value: Any, name: str, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> float:
    """Check a real number inside a (possibly open) interval."""
    if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(value):
        raise fail(name, "a finite real number", _describe(value))
    lo_ok = low is None or (value > low if low_open else value >= low)
    hi_ok = high is None or (value < high if high_open else value <= high)
    if not (lo_ok and hi_ok):
        left = "(-inf" if low is None else f"{'(' if low_open else '['}{low}"
        right = "inf)" if high is None else f"{high}{')' if high_open else ']'}"
        raise fail(name, f"a number in {left}, {right}", _describe(value))
    return float(value)


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """Check an integer inside ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise fail(name, "an integer", _describe(value))
    if (low is not None and value < low) or (high is not None and value > high):
        raise fail(name, f"an integer in [{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]",
                   _describe(value))
    return int(value)


def check_rng(value: Any, name: str = "rng") -> np.random.Generator:
    """Accept a ``numpy.random.Generator`` or an int seed; nothing else (no global state)."""
    if isinstance(value, np.random.Generator):
        return value
    if isinstance(value, Integral) and not isinstance(value, bool):
        return np.random.default_rng(int(value))
    raise fail(name, "a numpy.random.Generator or an int seed", _describe(value))
