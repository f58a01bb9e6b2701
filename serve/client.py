"""A small HTTP client for the Serve app: arrays and frames in, frames out.

>>> client = ServeClient("http://127.0.0.1:8000")              # doctest: +SKIP
>>> routes = client.route(item_ids, features, labels=current)  # doctest: +SKIP
>>> routes[["item_id", "route", "reason"]].head()              # doctest: +SKIP
>>> client.route(item_ids, probabilities=probs)                # doctest: +SKIP

``route`` takes the class probabilities instead of the features when you already have them
(from :meth:`ServeClient.score`, say): the app then routes them without running the model.

By default requests use the compact payload (features as base64 bytes, answers as columns),
which is several times cheaper to encode and parse than rows of JSON numbers; pass
``compact=False`` for the readable form. Large batches are split into requests of at most
``chunk_size`` rows and the answers put back together in order.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pandas as pd
import requests
from numpy.typing import ArrayLike

from loop._validation import check_array, check_int, check_option, fail
from loop.columns import CONFIDENCE, ENTROPY, LABEL_ISSUE_SCORE, MARGIN, PRIORITY, REASON, ROUTE, SCORE_COLUMNS

from .exceptions import RequestError, ServeError, ServiceUnavailable
from .payload import decode_b64_array, encode_b64_array, probabilities_problem

__all__ = ["ROUTE_COLUMNS", "SCORE_COLUMNS", "TOKEN_ENV_VAR", "ServeClient"]

TOKEN_ENV_VAR = "LABELLOOP_TOKEN"

ROUTE_COLUMNS = (*SCORE_COLUMNS, ROUTE, REASON, PRIORITY)
_FLOAT_COLUMNS = (CONFIDENCE, MARGIN, ENTROPY, LABEL_ISSUE_SCORE, PRIORITY)
_DTYPES = ("float32", "float64")  # the features dtypes serve.payload's codec sends


class ServeClient:
    """Talk to a running labelloop Serve app over HTTP.

    Parameters
    ----------
    base_url : str
        E.g. ``"http://127.0.0.1:8000"`` (what :func:`serve.local.start_local` returns).
    compact : bool, default=True
        Send features as base64 bytes and read answers as columns (fast), or send rows of
        JSON numbers and read one record per item (readable).
    dtype : {"float64", "float32"}, default="float64"
        Bytes of the compact features; float32 halves the payload, rounding the features.
    timeout : float, default=60
        Seconds to wait for each answer.
    chunk_size : int, default=4096
        Most rows per request; larger batches are split.
    session : requests.Session, optional
        Reuse a session (connection pool, auth headers, proxies).
    token : str, optional
        A bearer token (:mod:`serve.auth`): a client token scores and routes, an admin token
        also reloads. Default ``$LABELLOOP_TOKEN``; none for an app with ``auth: none``.

    Raises
    ------
    RequestError
        The app refused a request (4xx); ``.field`` and ``.message`` say why.
    ServiceUnavailable
        No model is loaded yet (503), or the app could not be reached in time.
    ServeError
        Any other error answer.
    """

    def __init__(self, base_url: str, *, compact: bool = True, dtype: str = "float64",
                 timeout: float = 60.0, chunk_size: int = 4096,
                 session: requests.Session | None = None, token: str | None = None) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise fail("base_url", "an http(s) URL such as 'http://127.0.0.1:8000'", repr(base_url))
        self.base_url = base_url.rstrip("/")
        self.compact = bool(compact)
        self.dtype = check_option(dtype, "dtype", tuple(_DTYPES))
        self.timeout = float(timeout)
        self.chunk_size = check_int(chunk_size, "chunk_size", low=1)
        self._session = session or requests.Session()
        token = token if token is not None else os.environ.get(TOKEN_ENV_VAR)
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"

    # -- scoring -------------------------------------------------------------------------

    def route(self, item_ids: ArrayLike, features: ArrayLike | None = None, labels: ArrayLike | None = None, *,
              probabilities: ArrayLike | None = None,
              label_issue_scores: ArrayLike | None = None) -> pd.DataFrame:
        """Score and route items, from their features or from class probabilities you have.

        Parameters
        ----------
        item_ids : array-like of shape (n,)
            Unique ids (int or str).
        features : array-like of shape (n, d), optional
            The model's input; give this or ``probabilities``.
        labels : array-like of shape (n,), optional
            Current labels (class codes, or names when the app has ``class_names``); None or
            NaN where an item has none. Labelled items get a ``label_issue_score``.
        probabilities : array-like of shape (n, k), optional
            Class probabilities instead of features (e.g. what :meth:`score` returned): the
            app routes them without running the model. Rows sum to 1, columns in the order of
            the app's classes; always sent as float64.
        label_issue_scores : array-like of shape (n,), optional
            Your own label-issue score per item, in [0, 1] (e.g. with the annotators' labels
            as evidence): the Router routes on them instead of the Scorer's self-confidence
            score, and the answer's ``label_issue_score`` holds them.

        Returns
        -------
        DataFrame of n rows
            Columns ``item_id, predicted, runner_up, confidence, margin, entropy,
            label_issue_score, route, reason, priority``, in the order of ``item_ids``.
        """
        frame, _ = self._post_batches("/v1/route", item_ids, labels, features=features,
                                      probabilities=probabilities, return_probabilities=False,
                                      label_issue_scores=label_issue_scores)
        return frame[list(ROUTE_COLUMNS)]

    def score(self, item_ids: ArrayLike, features: ArrayLike,
              labels: ArrayLike | None = None) -> tuple[pd.DataFrame, np.ndarray]:
        """Score items: signals per item, and the class probabilities.

        Returns
        -------
        scores : DataFrame of n rows
            Columns ``item_id, predicted, runner_up, confidence, margin, entropy,
            label_issue_score``.
        probs : ndarray of shape (n, n_classes)
            Calibrated class probabilities, columns in the order of ``model()["classes"]``.
        """
        frame, probs = self._post_batches("/v1/score", item_ids, labels, features=features, return_probabilities=True)
        return frame[list(SCORE_COLUMNS)], probs

    # -- the app -------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``{"status": "ok", "model": {...}}``, or ``{"status": "no_model", ...}`` before a champion exists."""
        answer = self._request("GET", "/v1/health", allow={503})
        return answer

    def model(self) -> dict[str, Any]:
        """The served model: name, alias, version, run_id, classes, n_features, temperature, loaded_at."""
        return self._request("GET", "/v1/model")

    def thresholds(self) -> dict[str, Any]:
        """The Router's thresholds (``RoutingThresholds.to_dict()`` form) under ``"thresholds"``."""
        return self._request("GET", "/v1/thresholds")

    def reload(self) -> dict[str, Any]:
        """Load the version the alias points at now; ``changed`` says whether it moved."""
        return self._request("POST", "/v1/reload", body=b"{}")

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> ServeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ServeClient({self.base_url!r}, compact={self.compact})"

    # -- private -------------------------------------------------------------------------

    def _post_batches(self, path: str, item_ids: ArrayLike, labels: ArrayLike | None, *,
                      features: ArrayLike | None, probabilities: ArrayLike | None = None,
                      return_probabilities: bool,
                      label_issue_scores: ArrayLike | None = None) -> tuple[pd.DataFrame, np.ndarray | None]:
        ids = _plain_ids(item_ids)
        if (features is None) == (probabilities is None):
            raise fail("features", "given, or 'probabilities' instead (exactly one of the two)",
                       "both" if features is not None else "neither")
        if features is not None:
            given, x = "features", check_array(features, "features", ndim=2)
            if x.shape[0] != len(ids):
                raise fail("features", f"one row per item id ({len(ids)} rows)", f"{x.shape[0]} rows")
        else:
            given, x = "probabilities", _probabilities(probabilities, len(ids))
        plain_labels = None if labels is None else _plain_labels(labels, len(ids))
        issues = None if label_issue_scores is None else _issue_scores(label_issue_scores, len(ids))
        frames, probs = [], []
        for start in range(0, max(len(ids), 1), self.chunk_size):
            stop = start + self.chunk_size
            body = self._body(ids[start:stop], given, x[start:stop],
                              None if plain_labels is None else plain_labels[start:stop], return_probabilities,
                              None if issues is None else issues[start:stop])
            answer = self._request("POST", path, body=body)
            frame, p = _read_answer(answer)
            frames.append(frame)
            probs.append(p)
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        for column in _FLOAT_COLUMNS:
            if column in frame.columns:
                frame[column] = frame[column].astype("float64")
        return frame, (np.concatenate(probs) if return_probabilities else None)

    def _body(self, ids: list[Any], given: str, x: np.ndarray, labels: list[Any] | None,
              return_probabilities: bool, issues: np.ndarray | None = None) -> bytes:
        # ``given`` names what ``x`` holds: "features" or "probabilities" (always float64:
        # float32 rounding could push a row's sum outside the app's tolerance).
        body: dict[str, Any] = {"item_ids": ids}
        if self.compact:
            dtype = self.dtype if given == "features" else "float64"
            encoded = encode_b64_array(x, dtype)
            body.update({f"{given}_b64": encoded["b64"], "shape": encoded["shape"]})
            if given == "features":
                body["dtype"] = dtype
        else:
            body[given] = x.tolist()
        if labels is not None:
            body["labels"] = labels
        if issues is not None and self.compact:
            body["label_issue_scores_b64"] = encode_b64_array(issues)["b64"]
        elif issues is not None:
            body["label_issue_scores"] = issues.tolist()
        body["return_probabilities"] = return_probabilities
        return json.dumps(body, allow_nan=False, separators=(",", ":")).encode()

    def _request(self, method: str, path: str, *, body: bytes | None = None,
                 allow: set[int] = frozenset()) -> dict[str, Any]:
        url = self.base_url + path
        try:
            answer = self._session.request(method, url, data=body, timeout=self.timeout,
                                           headers={"Content-Type": "application/json"} if method == "POST" else None)
        except requests.Timeout:
            raise ServiceUnavailable(f"{method} {url} did not answer within {self.timeout:g} s.") from None
        except requests.ConnectionError as exc:
            raise ServiceUnavailable(f"Cannot reach the Serve app at {self.base_url} ({exc}).") from None
        if answer.ok or answer.status_code in allow:
            return answer.json()
        raise _error(answer, method, url)


def _error(answer: requests.Response, method: str, url: str) -> ServeError:
    try:
        detail = answer.json()["error"]
        message, field = str(detail["message"]), detail.get("field")
    except (ValueError, KeyError, TypeError):
        message, field = f"{method} {url} answered: {answer.text[:300]!r}", None
    status = answer.status_code
    kind = RequestError if 400 <= status < 500 else ServiceUnavailable if status in (502, 503, 504) else ServeError
    return kind(message, status=status, field=field)


def _read_answer(answer: dict[str, Any]) -> tuple[pd.DataFrame, np.ndarray | None]:
    if "columns" in answer:
        arrays = {name: _decode(encoded) for name, encoded in answer.get("arrays", {}).items()}
        probs = arrays.pop("probabilities", None)
        return pd.DataFrame({**answer["columns"], **arrays}), probs
    items = answer["items"]
    probs = np.array([item.pop("probabilities") for item in items]) if items and "probabilities" in items[0] else None
    return pd.DataFrame.from_records(items), probs


def _decode(encoded: dict[str, Any]) -> np.ndarray:
    return decode_b64_array(encoded["b64"], encoded["shape"], encoded["dtype"], field="answer").astype(np.float64)


def _plain_ids(item_ids: ArrayLike) -> list[Any]:
    ids = item_ids.tolist() if isinstance(item_ids, (np.ndarray, pd.Index, pd.Series)) else list(item_ids)
    if not ids:
        raise fail("item_ids", "at least one item id", "an empty sequence")
    return [i.item() if isinstance(i, np.generic) else i for i in ids]


def _issue_scores(values: ArrayLike, n: int) -> np.ndarray:
    scores = check_array(values, "label_issue_scores", ndim=1)
    if scores.shape[0] != n:
        raise fail("label_issue_scores", f"one score per item ({n} scores)", f"{scores.shape[0]} scores")
    if not np.all((scores >= 0) & (scores <= 1)):
        raise fail("label_issue_scores", "numbers in [0, 1]", "values outside it or NaN")
    return scores.astype(np.float64)


def _probabilities(values: ArrayLike, n: int) -> np.ndarray:
    probs = check_array(values, "probabilities", ndim=2)
    if probs.shape[0] != n:
        raise fail("probabilities", f"one row per item id ({n} rows)", f"{probs.shape[0]} rows")
    problem = probabilities_problem(probs)
    if problem is not None:
        where, expected, got = problem
        raise fail("probabilities", expected, got + (f" at {list(where)}" if where else ""))
    return probs


def _plain_labels(labels: ArrayLike, n: int) -> list[Any]:
    values = pd.Series(labels.tolist() if isinstance(labels, np.ndarray) else list(labels), dtype=object)
    if len(values) != n:
        raise fail("labels", f"one label (or None) per item ({n} labels)", f"{len(values)} labels")
    out: list[Any] = []
    for value in values:
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            out.append(None)
        elif isinstance(value, (float, np.floating)) and float(value).is_integer():
            out.append(int(value))
        elif isinstance(value, (np.integer, np.str_)):
            out.append(value.item())
        else:
            out.append(value)
    return out
