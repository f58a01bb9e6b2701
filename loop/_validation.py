"""Argument checks shared by every public function of :mod:`loop`.

Each check returns the argument in its canonical form (a float64 array, an int64 array,
a clean frame) or raises :class:`~loop.exceptions.SchemaError` with a message of one form:
*The 'name' argument must be <expected>. Got <what was given> instead.*
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable, Mapping
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


def map_codes(values: Any, mapping: Mapping[Hashable, Any], *, dtype: Any = None) -> np.ndarray:
    """``mapping[v]`` for each of ``values`` (one of a few keys each: actions, routes), as an
    array of ``dtype``: one hash lookup of each value among the keys, then a take (a dict map of
    each value through a Series costs ~4x). A value that is not a key raises KeyError."""
    keys = pd.Index(list(mapping), dtype=object)
    code = keys.get_indexer(np.asarray(values, dtype=object))
    if (code < 0).any():
        raise KeyError(np.asarray(values, dtype=object)[code < 0][0])
    return np.array(list(mapping.values()), dtype=dtype)[code]


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
    if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(_as_float(value)):
        raise fail(name, "a finite real number", _describe(value))
    lo_ok = low is None or (value > low if low_open else value >= low)
    hi_ok = high is None or (value < high if high_open else value <= high)
    if not (lo_ok and hi_ok):
        left = "(-inf" if low is None else f"{'(' if low_open else '['}{low}"
        right = "inf)" if high is None else f"{high}{')' if high_open else ']'}"
        raise fail(name, f"a number in {left}, {right}", _describe(value))
    return float(value)


def _as_float(value: Real) -> float:
    """``float(value)``, or inf for an integer too large for a float (``10**400``)."""
    try:
        return float(value)
    except OverflowError:
        return float("inf")


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """Check an integer inside ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise fail(name, "an integer", _describe(value))
    if (low is not None and value < low) or (high is not None and value > high):
        raise fail(name, f"an integer in [{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]",
                   _describe(value))
    return int(value)


def _text_problem(value: str, *, max_chars: int | None, empty: bool) -> str | None:
    """What makes a string unstorable, or None: empty, too long, a NUL character (PostgreSQL
    text and JSONB cannot hold one) or a lone surrogate (not encodable as UTF-8)."""
    if not value and not empty:
        return "an empty string"
    if max_chars is not None and len(value) > max_chars:
        return f"a string of {len(value)} characters"
    if "\x00" in value:
        return f"a NUL character ('\\x00') at position {value.index(chr(0))}"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"a lone surrogate ({value[exc.start]!r}) at position {exc.start}"
    return None


def _text_form(max_chars: int | None, empty: bool) -> str:
    size = "" if max_chars is None else f" of at most {max_chars} characters"
    return f"{'a' if empty else 'a non-empty'} string{size} (UTF-8 text without NUL characters)"


def check_text(value: Any, name: str, *, max_chars: int | None = None, empty: bool = False) -> str:
    """Check text the label store can hold on SQLite and PostgreSQL alike: a ``str``, not
    empty (unless ``empty``), at most ``max_chars`` characters, without NUL characters or lone
    surrogates (``"\\ud800"``), which one engine or both cannot store.

    Examples
    --------
    >>> check_text("ann-1", "annotator_id", max_chars=200)
    'ann-1'
    >>> check_text("a\\x00b", "rationale")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    loop.exceptions.SchemaError: The 'rationale' argument must be ... Got a NUL character ('\\x00') at position 1 instead.
    """
    if not isinstance(value, str):
        raise fail(name, _text_form(max_chars, empty), _describe(value))
    problem = _text_problem(value, max_chars=max_chars, empty=empty)
    if problem is not None:
        raise fail(name, _text_form(max_chars, empty), problem)
    return value


def check_text_column(values: pd.Series, name: str, *, max_chars: int | None = None, empty: bool = False,
                      ints: bool = False) -> pd.Series:
    """:func:`check_text` for every present value of a column, shape ``(n,)`` in and out;
    missing values stay missing (refuse them before where a value is required). With
    ``ints``, integers (ids) are accepted and become their decimal strings.

    The common case (all strings, all clean) costs a few passes in C over the column.
    """
    if ints and values.dtype.kind in "iu":
        return pd.Series(values.astype(str).to_numpy(dtype=object), index=values.index, dtype=object)
    if isinstance(values.dtype, pd.StringDtype):
        # pandas' string dtype holds valid UTF-8 only (no lone surrogate): lengths and NULs
        # are checked by its vectorised string methods.
        lengths = values.str.len()
        bad = values.str.contains("\x00", regex=False)
        if not empty:
            bad |= lengths == 0
        if max_chars is not None:
            bad |= lengths > max_chars
        bad = bad.fillna(False).to_numpy(dtype=bool)
        if bad.any():
            row = int(np.argmax(bad))
            problem = _text_problem(values.iloc[row], max_chars=max_chars, empty=empty)
            raise fail(name, _text_form(max_chars, empty), f"{problem} on row {row}")
        return pd.Series(values.to_numpy(dtype=object, na_value=None), index=values.index, dtype=object)
    raw = values.to_numpy(dtype=object)
    missing = pd.isna(values).to_numpy()
    present = raw[~missing] if missing.any() else raw
    if pd.api.types.infer_dtype(present, skipna=False) not in ("string", "empty"):
        converted = []
        for row, v in zip(np.flatnonzero(~missing), present):
            if isinstance(v, str):
                converted.append(v)
            elif ints and isinstance(v, Integral) and not isinstance(v, (bool, np.bool_)):
                converted.append(str(int(v)))
            else:
                form = _text_form(max_chars, empty) + (" or an integer" if ints else "")
                raise fail(name, form, f"{_describe(v)} (a {type(v).__name__}) on row {row}")
        present = np.asarray(converted + [None], dtype=object)[:-1]
        raw = raw.copy()
        raw[~missing] = present
    lengths = np.fromiter(map(len, present), dtype=np.int64, count=len(present))
    joined = "".join(present)
    if len(present) and ((not empty and lengths.min() == 0) or (max_chars is not None and lengths.max() > max_chars)
                         or "\x00" in joined or not (joined.isascii() or _encodes(joined))):
        for row, v in zip(np.flatnonzero(~missing), present):
            problem = _text_problem(v, max_chars=max_chars, empty=empty)
            if problem is not None:
                raise fail(name, _text_form(max_chars, empty), f"{problem} on row {row}")
    return pd.Series(raw, index=values.index, dtype=object)


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_int_column(values: pd.Series, name: str, *, low: int | None = None, high: int | None = None) -> pd.Series:
    """Integers (ids, versions, counts) of a column as nullable ``Int64``, shape ``(n,)``:
    missing values stay missing, integer-valued floats (a column with gaps) are accepted;
    booleans, text, fractions and values outside ``[low, high]`` are refused."""
    def bad(v: Any, row: int) -> SchemaError:
        span = f" in [{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]" \
            if low is not None or high is not None else ""
        return fail(name, f"integers{span}", f"{_describe(v)} on row {row}")

    if values.dtype.kind == "b" or str(values.dtype) == "boolean":
        raise bad(values.iloc[0], 0)
    if values.dtype.kind in "iuf" and isinstance(values.dtype, np.dtype):
        # Numeric columns (the common case): checked in C, a loop only to name a bad row.
        raw = values.to_numpy()
        present = ~np.isnan(raw) if raw.dtype.kind == "f" else np.ones(len(raw), dtype=bool)
        with np.errstate(invalid="ignore"):
            # (trunc, not mod: np.mod is slow on NaN.)
            ok = ~present | (np.isfinite(raw) & (np.trunc(raw) == raw) if raw.dtype.kind == "f" else present)
            if low is not None:
                ok &= ~present | (raw >= low)
            if high is not None:
                ok &= ~present | (raw <= high)
        if ok.all() and (raw.dtype.kind != "f" or not present.any() or np.abs(raw[present]).max() < 2.0 ** 63):
            ints = pd.arrays.IntegerArray(np.where(present, raw, 0).astype(np.int64), ~present)
            return pd.Series(ints, index=values.index)
    out = []
    for row, v in enumerate(values.to_numpy(dtype=object)):
        if v is None or v is pd.NA or (isinstance(v, float) and v != v):
            out.append(None)
            continue
        if isinstance(v, (bool, np.bool_)):
            raise bad(v, row)
        if isinstance(v, Integral):
            v = int(v)
        elif isinstance(v, (float, np.floating)) and np.isfinite(v) and float(v).is_integer():
            v = int(v)
        else:
            raise bad(v, row)
        if (low is not None and v < low) or (high is not None and v > high):
            raise bad(v, row)
        out.append(v)
    return pd.Series(pd.array(out, dtype="Int64"), index=values.index)


def check_rng(value: Any, name: str = "rng") -> np.random.Generator:
    """Accept a ``numpy.random.Generator`` or an int seed; nothing else (no global state)."""
    if isinstance(value, np.random.Generator):
        return value
    if isinstance(value, Integral) and not isinstance(value, bool):
        return np.random.default_rng(int(value))
    raise fail(name, "a numpy.random.Generator or an int seed", _describe(value))
