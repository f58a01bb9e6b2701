"""Request and answer bodies of the HTTP API: pydantic at the edge, arrays inside.

Two forms of the same request, both JSON:

- readable: ``{"item_ids": [...], "features": [[...], ...], "labels": [...]}``
- compact: ``{"item_ids": [...], "features_b64": "<base64>", "shape": [n, d],
  "dtype": "float32", "labels": [...]}``, the features as little-endian float32 or
  float64 bytes, row-major (``base64.b64encode(x.astype("<f4").tobytes())``).

``/v1/route`` also takes class probabilities the caller already has instead of features, so
the model does not run again on items it scored a moment ago (``/v1/score`` refuses them:
they are an input of routing only):

- readable: ``{"item_ids": [...], "probabilities": [[...], ...]}``, n rows of k numbers;
- compact: ``{"item_ids": [...], "probabilities_b64": "<base64>", "shape": [n, k]}``, always
  little-endian float64, row-major (``base64.b64encode(p.astype("<f8").tobytes())``);
  ``dtype`` belongs to ``features_b64`` and may only say ``"float64"`` here.

A request carries exactly one of ``features``, ``features_b64``, ``probabilities`` and
``probabilities_b64``; ``shape`` is the ``[n, d]`` or ``[n, k]`` of the base64 one. The
probabilities must be finite, each in [0, 1], each row summing to 1 within
:data:`PROB_SUM_TOLERANCE`, with k >= 2 columns in the order of the app's classes: k must equal
the length of the app's ``class_names`` when it has them (the Scorer refuses a model whose
class count differs from them). Without ``class_names`` the Router does not ask the Scorer for
the served model's class count (that would cost the replica hop this form saves): the classes
are then ``0 .. k - 1`` of the k columns sent, and label codes must be below k.

``labels`` (optional) are the items' current labels, as class codes ``0 .. k - 1`` or, when
the app has ``class_names``, as names; ``null`` where an item has none. ``return_probabilities``
(optional) asks for the class probabilities (default: yes on ``/v1/score``, no on
``/v1/route``).

``label_issue_scores`` (optional, ``/v1/route`` only) are the caller's own label-issue scores,
one number in [0, 1] per item, e.g. computed with the annotators' labels as evidence; the
Router then routes on them instead of the Scorer's self-confidence score (and the answer's
``label_issue_score`` shows them). Compact form: ``label_issue_scores_b64``, n little-endian
float64 values in base64 (``base64.b64encode(s.astype("<f8").tobytes())``).

A readable request gets a readable answer, one record per item (``model`` is ``null`` when
the request carried probabilities: no model ran, the caller's probabilities were routed)::

    {"model": {"name": "digits", "version": "3", "alias": "champion"},
     "classes": [0, 1, ...], "n_items": 2,
     "items": [{"item_id": 7, "predicted": 3, "runner_up": 5, "confidence": 0.61,
                "margin": 0.3, "entropy": 0.4, "label_issue_score": null,
                "route": "review", "reason": "...", "priority": 0.39}, ...]}

A compact request gets the compact answer: the text and integer fields as columns
(``"columns": {"item_id": [...], "predicted": [...], "route": [...], ...}``) and the float
fields and the probabilities as little-endian arrays (``"arrays": {"confidence": {"b64": ...,
"shape": [n], "dtype": "float64"}, ..., "probabilities": {..., "shape": [n, k]}}``; NaN where
an item has no label-issue score).

Errors are ``{"error": {"field": ..., "message": ...}}`` with a 4xx status (see
:class:`BadRequest`).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from loop._validation import PROB_SUM_ATOL
from loop.columns import NO_LABEL, PRIORITY, REASON, ROUTE, SCORE_COLUMNS

__all__ = [
    "PROB_SUM_TOLERANCE",
    "BadRequest",
    "ParsedRequest",
    "ScoreRequest",
    "check_label_codes",
    "chunk_bounds",
    "decode_b64_array",
    "encode_answer",
    "encode_b64_array",
    "error_body",
    "parse_request",
    "probabilities_problem",
]

ROUTE_ANSWER_COLUMNS = (*SCORE_COLUMNS, ROUTE, REASON, PRIORITY)
_DTYPES = {"float32": "<f4", "float64": "<f8"}
# loop's one tolerance: a request's probabilities are held to what score_items checks anyway.
PROB_SUM_TOLERANCE = PROB_SUM_ATOL
_INPUTS = ("features", "features_b64", "probabilities", "probabilities_b64")
_MAX_CODE = np.iinfo(np.int64).max
# Fields whose values are numbers: a boolean or a string there is a wrong type (400), never read as
# 1.0 or parsed from text. Labels are codes, or class names when the app has them.
_NUMBER_FIELDS = frozenset({"features", "probabilities", "label_issue_scores", "labels"})
_TYPE_ERRORS = frozenset({"float_type", "int_type", "string_type", "float_parsing", "int_parsing", "int_from_float"})


class BadRequest(Exception):
    """A request the app refuses; becomes ``{"error": {"field", "message"}}`` with ``status``."""

    def __init__(self, field: str | None, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.status = status

    def body(self) -> dict[str, Any]:
        return error_body(self.field, self.message)

    def __reduce__(self):  # raised in a Scorer replica, re-raised by the ingress: keep the fields
        return (type(self), (self.field, self.message, self.status))


def error_body(field: str | None, message: str) -> dict[str, Any]:
    """The one error shape every 4xx/5xx answer has."""
    return {"error": {"field": field, "message": message}}


class ScoreRequest(BaseModel):
    """Body of ``POST /v1/score`` and ``POST /v1/route`` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    item_ids: list[StrictInt | StrictStr] = Field(description="one unique id per item")
    features: list[list[StrictFloat]] | None = Field(None, description="n rows of d numbers")
    features_b64: str | None = Field(None, description="little-endian row-major float bytes, base64")
    shape: tuple[int, int] | None = Field(None, description="[n, d] of features_b64, or [n, k] of probabilities_b64")
    dtype: Literal["float32", "float64"] = Field("float32", description="dtype of features_b64")
    probabilities: list[list[StrictFloat]] | None = Field(
        None, description="/v1/route only, instead of features: n rows of k class probabilities "
                          "(the model does not run)")
    probabilities_b64: str | None = Field(
        None, description="probabilities as little-endian row-major float64 bytes, base64, with 'shape'")
    labels: list[StrictInt | StrictStr | None] | None = Field(
        None, description="current label per item (code or class name), null where none")
    return_probabilities: StrictBool | None = Field(
        None, description="include class probabilities (default: yes on /score, no on /route)")
    label_issue_scores: list[StrictFloat] | None = Field(
        None, description="/v1/route only: the caller's label-issue score per item, in [0, 1]; "
                          "the Router routes on them instead of the Scorer's own")
    label_issue_scores_b64: str | None = Field(
        None, description="label_issue_scores as n little-endian float64 values, base64")


@dataclass(frozen=True)
class ParsedRequest:
    """A checked request, as arrays.

    Attributes
    ----------
    item_ids : list of int or str, length n
    features : ndarray of float, shape (n, d), or None
        None when the request carried probabilities instead.
    labels : ndarray of int64, shape (n,), or None
        Class codes; ``-1`` where an item has no current label. With features, not yet checked
        against the model's class count (the Scorer does that); with probabilities, below k.
    compact : bool
        Whether the request used ``features_b64`` or ``probabilities_b64`` (and so gets the
        compact answer).
    return_probabilities : bool or None
    label_issue_scores : ndarray of float64, shape (n,), or None
        The caller's label-issue scores, in [0, 1] (``/v1/route`` only).
    probabilities : ndarray of float64, shape (n, k), or None
        The caller's class probabilities (``/v1/route`` only), checked; None when the
        request carried features.
    """

    item_ids: list[Any]
    features: np.ndarray | None
    labels: np.ndarray | None
    compact: bool
    return_probabilities: bool | None
    label_issue_scores: np.ndarray | None = None
    probabilities: np.ndarray | None = None


def parse_request(body: bytes, *, class_names: Sequence[Any] | None = None,
                  max_rows: int | None = None) -> ParsedRequest:
    """Check a request body and turn it into arrays.

    Parameters
    ----------
    body : bytes
        The raw JSON body.
    class_names : sequence, optional
        The app's class names, to read labels given by name.
    max_rows : int, optional
        Larger requests are refused with 413.

    Returns
    -------
    ParsedRequest

    Raises
    ------
    BadRequest
        400 for a body that is not JSON, bad base64, a boolean or a string where a number belongs,
        or a label code beyond int64; 413 for too many rows; 422 for
        everything else (unknown fields, wrong types or shapes, NaN or inf, empty batch,
        duplicate ids, unknown label names, label-issue scores outside [0, 1], features and
        probabilities together, probabilities that are not distributions over the classes).

    Examples
    --------
    >>> p = parse_request(b'{"item_ids": [1, 2], "features": [[0, 1], [2, 3]], "labels": [0, null]}')
    >>> p.features.shape, p.labels.tolist(), p.compact
    ((2, 2), [0, -1], False)
    >>> parse_request(b'{"item_ids": [1], "probabilities": [[0.25, 0.75]]}').probabilities
    array([[0.25, 0.75]])
    """
    try:
        request = ScoreRequest.model_validate_json(body)
    except ValidationError as exc:
        raise _from_validation_error(exc) from None
    n = len(request.item_ids)
    if n == 0:
        raise BadRequest("item_ids", "The batch is empty: send at least one item.")
    if max_rows is not None and n > max_rows:
        raise BadRequest("item_ids", f"At most {max_rows} items per request; got {n}. Split the batch.", 413)
    if len(set(request.item_ids)) != n:
        seen: set[Any] = set()
        first = next(i for i in request.item_ids if i in seen or seen.add(i))
        raise BadRequest("item_ids", f"Item ids must be unique; {first!r} appears more than once.")
    given = [name for name in _INPUTS if getattr(request, name) is not None]
    if len(given) != 1:
        # "features" when nothing or both feature forms came; "probabilities" as soon as a
        # probabilities form is among several.
        field = "probabilities" if any(g.startswith("probabilities") for g in given) else "features"
        raise BadRequest(field, "Give exactly one of 'features' (rows of numbers), 'features_b64' (base64 "
                         "bytes with 'shape' and 'dtype'), 'probabilities' (rows of class probabilities, "
                         f"/v1/route only) and 'probabilities_b64'; got {given or 'none'}.")
    features = probs = None
    if given[0].startswith("features"):
        features = _features(request, n)
    else:
        probs = _probabilities(request, n, class_names)
    labels = None if request.labels is None else _labels(request.labels, n, class_names)
    if labels is not None and probs is not None:
        check_label_codes(labels, probs.shape[1], f"these probabilities ({probs.shape[1]} columns)")
    return ParsedRequest(item_ids=request.item_ids, features=features, labels=labels,
                         compact=given[0].endswith("_b64"),
                         return_probabilities=request.return_probabilities,
                         label_issue_scores=_issue_scores(request, n), probabilities=probs)


def check_label_codes(labels: np.ndarray, k: int, whose: str, *, offset: int = 0) -> None:
    """Refuse label codes ``>= k`` (``labels`` as :class:`ParsedRequest` holds them); ``offset``:
    the request's row of ``labels[0]``, for the field name when these are part of a request."""
    if labels.max() >= k:
        i = int(np.argmax(labels >= k))
        raise BadRequest(f"labels.{offset + i}", f"Label codes are 0 .. {k - 1} for {whose}; got {labels[i]}.")


# Serve's replicas call each other with gRPC messages of at most 4 MiB
# (RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH): a part of a request, and its answer, stays within
# a quarter of that, leaving room for pickling and the columns beside the arrays.
MESSAGE_BUDGET = 1024 ** 2
# Per row of an answer beyond its k probabilities: the scores frame's columns, pickled.
_ANSWER_ROW_BYTES = 256


def chunk_bounds(n_rows: int, bytes_in: int, k: int, *, budget: int = MESSAGE_BUDGET) -> list[tuple[int, int]]:
    """Row ranges ``[(start, stop), ...]`` covering ``0 .. n_rows`` whose rows fit ``budget`` bytes.

    Parameters
    ----------
    n_rows : int
    bytes_in : int
        Bytes of one row sent (features: d * itemsize, and its label).
    k : int
        Classes of the answer: a row comes back as k float64 probabilities and its scores.
    budget : int, default=MESSAGE_BUDGET

    Examples
    --------
    >>> chunk_bounds(5000, 64 * 8 + 8, 10)
    [(0, 2016), (2016, 4032), (4032, 5000)]
    >>> chunk_bounds(3, 64 * 8, 10)
    [(0, 3)]
    """
    per_row = max(bytes_in, 8 * k + _ANSWER_ROW_BYTES, 1)
    size = max(1, budget // per_row)
    return [(start, min(start + size, n_rows)) for start in range(0, max(n_rows, 1), size)]


def probabilities_problem(probs: np.ndarray) -> tuple[tuple[int, ...], str, str] | None:
    """The first way an (n, k) float array fails to be class probabilities, or None.

    Returns ``(position, expected, got)``: the position of the first bad value (``(i, j)``),
    row (``(i,)``) or ``()`` for the shape; what was expected and what came, in words. Both
    the server (:class:`BadRequest`) and :class:`serve.client.ServeClient` (``SchemaError``)
    word their refusals from it.
    """
    k = probs.shape[1]
    if k < 2:
        return (), "rows of k >= 2 class probabilities", f"{k} column{'s' * (k != 1)}"
    bad = ~np.isfinite(probs)
    if bad.any():
        i, j = np.argwhere(bad)[0].tolist()
        return (i, j), "finite numbers", f"{float(probs[i, j])} ({int(bad.sum())} NaN or inf values)"
    bad = (probs < 0) | (probs > 1)
    if bad.any():
        i, j = np.argwhere(bad)[0].tolist()
        return (i, j), "numbers in [0, 1]", f"{float(probs[i, j])!r} ({int(bad.sum())} values outside)"
    sums = probs.sum(axis=1)
    bad = np.abs(sums - 1) > PROB_SUM_TOLERANCE
    if bad.any():
        i = int(np.argmax(bad))
        return ((i,), f"rows summing to 1 (within {PROB_SUM_TOLERANCE:g})",
                f"a row summing to {float(sums[i])!r} ({int(bad.sum())} such rows)")
    return None


def _probabilities(request: ScoreRequest, n: int, class_names: Sequence[Any] | None) -> np.ndarray:
    if request.probabilities is not None:
        field = "probabilities"
        if request.shape is not None:
            raise BadRequest("shape", "'shape' goes with 'features_b64' and 'probabilities_b64' only.")
        widths = {len(row) for row in request.probabilities}
        if len(widths) > 1:
            raise BadRequest(field, f"Every row must have the same number of classes; got widths {sorted(widths)}.")
        probs = np.asarray(request.probabilities, dtype=np.float64)
        if probs.ndim != 2:  # an empty list of rows
            probs = probs.reshape(len(request.probabilities), 0)
    else:
        field = "probabilities_b64"
        if request.shape is None:
            raise BadRequest("shape", "'probabilities_b64' needs 'shape': [n_items, n_classes].")
        if "dtype" in request.model_fields_set and request.dtype != "float64":
            raise BadRequest("dtype", f"'probabilities_b64' is float64 bytes; 'dtype' {request.dtype!r} "
                             "applies to 'features_b64' only.")
        probs = decode_b64_array(request.probabilities_b64, request.shape, "float64", field=field)
    if probs.shape[0] != n:
        raise BadRequest(field, f"One row of probabilities per item id: {n} ids but {probs.shape[0]} rows.")
    if class_names is not None and probs.shape[1] != len(class_names):
        raise BadRequest(field, f"One probability per class: the app has {len(class_names)} classes "
                         f"({list(class_names)}); got {probs.shape[1]} columns.")
    problem = probabilities_problem(probs)
    if problem is not None:
        where, expected, got = problem
        raise BadRequest(".".join(map(str, (field, *where))), f"Probabilities must be {expected}; got {got}.")
    return probs.astype(np.float64)


def _issue_scores(request: ScoreRequest, n: int) -> np.ndarray | None:
    if request.label_issue_scores is not None and request.label_issue_scores_b64 is not None:
        raise BadRequest("label_issue_scores", "Give at most one of 'label_issue_scores' (numbers) and "
                         "'label_issue_scores_b64' (base64 float64 bytes); got both.")
    if request.label_issue_scores is not None:
        field, values = "label_issue_scores", np.asarray(request.label_issue_scores, dtype=np.float64)
        if values.shape[0] != n:
            raise BadRequest(field, f"One label-issue score per item id: {n} ids but {values.shape[0]} scores.")
    elif request.label_issue_scores_b64 is not None:
        field = "label_issue_scores_b64"
        values = decode_b64_array(request.label_issue_scores_b64, (n,), "float64", field=field)
    else:
        return None
    bad = ~((values >= 0) & (values <= 1))  # NaN fails both comparisons
    if bad.any():
        i = int(np.argmax(bad))
        raise BadRequest(f"{field}.{i}", f"Label-issue scores must be numbers in [0, 1]; got {values[i]} "
                         f"({int(bad.sum())} bad values).")
    return values.astype(np.float64)


def _features(request: ScoreRequest, n: int) -> np.ndarray:
    if request.features is not None:
        if request.shape is not None:
            raise BadRequest("shape", "'shape' goes with 'features_b64' and 'probabilities_b64' only.")
        widths = {len(row) for row in request.features}
        if len(widths) > 1:
            raise BadRequest("features", f"Every row must have the same number of features; got widths {sorted(widths)}.")
        features = np.asarray(request.features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] == 0:
            raise BadRequest("features", f"Features must be n rows of d >= 1 numbers; got shape {features.shape}.")
    else:
        if request.shape is None:
            raise BadRequest("shape", "'features_b64' needs 'shape': [n_items, n_features].")
        features = decode_b64_array(request.features_b64, request.shape, request.dtype, field="features_b64")
        if not np.isfinite(features).all():
            bad = int((~np.isfinite(features)).sum())
            raise BadRequest("features_b64", f"Features must be finite numbers; got {bad} NaN or inf values.")
    if features.shape[0] != n:
        raise BadRequest("features", f"One row of features per item id: {n} ids but {features.shape[0]} rows.")
    return features


def decode_b64_array(text: str, shape: Sequence[int], dtype: str, *, field: str) -> np.ndarray:
    """Little-endian bytes in base64 -> array of ``shape``; :class:`BadRequest` when they disagree."""
    if any(s < 0 for s in shape):
        raise BadRequest("shape", f"'shape' must be non-negative; got {list(shape)}.")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(field, f"Not valid base64 ({exc}).", 400) from None
    layout = np.dtype(_DTYPES[dtype])
    expected = math.prod(shape) * layout.itemsize
    if len(raw) != expected:
        raise BadRequest(field, f"{len(raw)} bytes do not hold shape {list(shape)} of {dtype} "
                         f"({expected} bytes expected).")
    return np.frombuffer(raw, dtype=layout).reshape(tuple(shape))


def encode_b64_array(array: np.ndarray, dtype: str = "float64") -> dict[str, Any]:
    """An array as ``{"b64", "shape", "dtype"}`` (little-endian, row-major)."""
    data = np.ascontiguousarray(array, dtype=_DTYPES[dtype])
    return {"b64": base64.b64encode(data.tobytes()).decode("ascii"), "shape": list(data.shape), "dtype": dtype}


def _labels(values: list[Any], n: int, class_names: Sequence[Any] | None) -> np.ndarray:
    if len(values) != n:
        raise BadRequest("labels", f"One label (or null) per item id: {n} ids but {len(values)} labels.")
    names = {} if class_names is None else {str(c): code for code, c in enumerate(class_names)}
    codes = np.full(n, NO_LABEL, dtype=np.int64)
    for i, value in enumerate(values):
        if value is None:
            continue
        if isinstance(value, str):
            if value not in names:
                known = sorted(names) if names else "none (the app has no class_names; send codes)"
                raise BadRequest(f"labels.{i}", f"Unknown class name {value!r}; known names: {known}.")
            codes[i] = names[value]
        elif value < 0:
            raise BadRequest(f"labels.{i}", f"Label codes are 0 .. n_classes - 1; got {value}.")
        elif value > _MAX_CODE:  # would not fit the int64 codes: no model has that many classes
            raise BadRequest(f"labels.{i}", f"Label codes are 0 .. n_classes - 1; got {value}, beyond any "
                             "class code.", 400)
        else:
            codes[i] = value
    return codes


_UNION_MESSAGES = {
    "item_ids": "Item ids must be integers or strings",
    "labels": "Labels must be class codes (integers), class names (strings) or null",
}


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    return loc[:1] + tuple(part for part in loc[1:] if isinstance(part, int))


def _from_validation_error(exc: ValidationError) -> BadRequest:
    first = exc.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return BadRequest("body", f"The body is not valid JSON: {first['msg']}.", 400)
    if first["type"] == "model_type":
        return BadRequest("body", "The body must be a JSON object with 'item_ids' and 'features' (or "
                          "'features_b64', 'shape', 'dtype'; on /v1/route, or 'probabilities').", 422)
    # Past the field name, keep the list positions only: unions add their member names
    # ("item_ids.0.int") to the location.
    loc = _clean_loc(first["loc"])
    field = ".".join(map(str, loc)) or "body"
    message = _UNION_MESSAGES.get(loc[0], first["msg"]) if len(first["loc"]) > len(loc) else first["msg"]
    if first["type"] == "extra_forbidden":
        message = f"Unknown field; valid fields are {sorted(ScoreRequest.model_fields)}"
    status = 422
    if loc and loc[0] in _NUMBER_FIELDS and first["type"] in _TYPE_ERRORS \
            and isinstance(first.get("input"), (bool, str, float)):
        status = 400
        what = "Label codes must be integers (or class names, or null)" if loc[0] == "labels" else \
            "Values must be JSON numbers, not booleans or strings"
        message = f"{what}; got {first.get('input')!r}"
    more = len({_clean_loc(e["loc"]) for e in exc.errors()}) - 1  # a union fails once per member
    extra = f" (and {more} more errors)" if more > 0 else ""
    return BadRequest(field, f"{message}.{extra}", status)


def encode_answer(frame: pd.DataFrame, probs: np.ndarray | None, *, compact: bool,
                  model: dict[str, Any] | None, classes: Sequence[Any]) -> bytes:
    """Serialise an answer frame (score or route columns) and optional probabilities to JSON bytes.

    Parameters
    ----------
    frame : DataFrame of n rows
        Columns among ``SCORE_COLUMNS`` and ``route, reason, priority``.
    probs : ndarray of shape (n, k), or None
    compact : bool
        Columns, with the float columns and the probabilities as base64 arrays (True), or one
        record per item (False).
    model : dict or None
        ``name``, ``version``, ``alias`` of the model that scored the batch; None when no
        model ran (the request carried the probabilities).
    classes : sequence of length k

    Returns
    -------
    bytes
        Strict JSON: NaN becomes ``null``.
    """
    answer: dict[str, Any] = {"model": model, "classes": list(classes), "n_items": len(frame)}
    if compact:
        # Float columns travel as bytes: writing and reading 1,024 floats as text costs more
        # than the routing itself.
        floats = [name for name in frame.columns if frame[name].dtype.kind == "f"]
        answer["columns"] = {name: _json_list(frame[name]) for name in frame.columns if name not in floats}
        arrays = {name: encode_b64_array(frame[name].to_numpy()) for name in floats}
        if probs is not None:
            arrays["probabilities"] = encode_b64_array(probs)
        answer["arrays"] = arrays
    else:
        columns = {name: _json_list(frame[name]) for name in frame.columns}
        names = list(columns)
        answer["items"] = [dict(zip(names, row)) for row in zip(*columns.values())]
        if probs is not None:
            for record, row in zip(answer["items"], probs.tolist()):
                record["probabilities"] = row
    return json.dumps(answer, allow_nan=False, separators=(",", ":")).encode()


def _json_list(column: pd.Series) -> list[Any]:
    values = column.to_numpy()
    if values.dtype.kind == "f":
        out = values.tolist()
        if np.isnan(values).any():
            out = [None if v != v else v for v in out]  # v != v only for NaN
        return out
    if values.dtype.kind in "iub":
        return values.tolist()
    return [v.item() if isinstance(v, np.generic) else v for v in values.tolist()]


