"""Calibration: make a model's confidence mean what it says before routing trusts it.

A model is calibrated when, among the items it scores with confidence 0.9, about 90% are
right. Modern classifiers are usually over-confident; the router auto-accepts on confidence,
so an over-confident model would wave wrong labels through.

- :class:`TemperatureScaling` (Guo et al., 2017) divides the logits by one learned
  temperature ``T``: ``p_c ∝ exp(z_c / T)``. ``T > 1`` softens over-confident predictions,
  ``T < 1`` sharpens under-confident ones; the predicted class never changes. Fit it on
  held-out probabilities or logits (a validation split or out-of-fold predictions), never on
  the data the model was trained on.
- :func:`expected_calibration_error` and :func:`reliability_table` measure the gap between
  confidence (the top probability) and accuracy, bin by bin.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.optimize import brentq, minimize_scalar
from scipy.special import log_softmax, logsumexp, softmax

from ._validation import check_array, check_int, check_labels, check_option, check_pred_probs, fail
from .columns import ACCURACY, BIN_LOWER, BIN_UPPER, COUNT, GAP, MEAN_CONFIDENCE
from .exceptions import NotFittedError

__all__ = ["CalibratedClassifier", "TemperatureScaling", "calibrate", "expected_calibration_error", "reliability_table"]

Kind = Literal["probs", "logits"]
Strategy = Literal["uniform", "quantile"]

_KINDS = ("probs", "logits")
_STRATEGIES = ("uniform", "quantile")
# The search runs on log T; outside [1/100, 100] the model is broken, not miscalibrated.
_LOG_T_BOUNDS = (np.log(1e-2), np.log(1e2))
# log(0) would make the NLL infinite for an item whose label got probability 0.
_PROB_FLOOR = 1e-12


class TemperatureScaling:
    """Temperature scaling: one learned temperature that rescales logits.

    ``fit`` minimises the negative log-likelihood of the held-out labels over ``log T``
    (bounded to ``T`` in ``[0.01, 100]``, :func:`scipy.optimize.minimize_scalar`).
    Probabilities are turned into logits with ``log p``, so on probabilities the map is
    ``p_c ** (1 / T)``, renormalised.

    Parameters
    ----------
    kind : {"probs", "logits"}, default="probs"
        What ``fit`` and ``transform`` receive: class probabilities (rows sum to 1) or raw
        logits (any finite reals).

    Attributes
    ----------
    temperature_ : float
        The learned temperature; above 1 means the model was over-confident.
    temperature_high_ : float
        The upper end of the temperature's 95% profile-likelihood interval (Wilks: the
        log-likelihood of the labels within 1.92 of its maximum; at most 100). Read the
        probabilities at it to be cautious when the labels were few.
    n_classes_ : int
        Number of classes seen in ``fit``.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[0.99, 0.01], [0.99, 0.01], [0.01, 0.99], [0.99, 0.01]])
    >>> ts = TemperatureScaling().fit(probs, [0, 1, 1, 0])  # 3 of 4 right at 0.99
    >>> round(ts.temperature_, 2)
    4.18
    >>> ts.transform(probs)[0].round(3).tolist()  # now says 0.75, as accurate as it is
    [0.75, 0.25]
    """

    def __init__(self, *, kind: Kind = "probs") -> None:
        self.kind = kind

    def fit(self, X: ArrayLike, labels: ArrayLike) -> TemperatureScaling:
        """Learn ``temperature_`` from held-out predictions and their true labels.

        Parameters
        ----------
        X : array-like of shape (n_items, n_classes)
            Held-out probabilities or logits, as set by ``kind``.
        labels : array-like of shape (n_items,)
            True class indices in ``0 .. n_classes - 1``.

        Returns
        -------
        self : TemperatureScaling
        """
        logits = self._logits(X)
        labels = check_labels(labels, n_classes=logits.shape[1], n_items=logits.shape[0])
        picked = (np.arange(logits.shape[0]), labels)

        def nll(log_t: float) -> float:
            scaled = logits / np.exp(log_t)
            return float(np.mean(logsumexp(scaled, axis=1) - scaled[picked]))

        result = minimize_scalar(nll, bounds=_LOG_T_BOUNDS, method="bounded",
                                 options={"xatol": 1e-6})
        self.temperature_ = float(np.exp(result.x))
        # The mean NLL times n is the log-likelihood's drop; chi-squared(1) / 2 at 95% is 1.92.
        n, drop = logits.shape[0], 3.841458820694124 / 2

        def excess(log_t: float) -> float:
            return n * (nll(log_t) - nll(result.x)) - drop

        top = _LOG_T_BOUNDS[1]
        high = top if excess(top) <= 0 else brentq(excess, result.x, top)
        self.temperature_high_ = max(self.temperature_, min(float(np.exp(high)), float(np.exp(top))))
        self.n_classes_ = int(logits.shape[1])
        return self

    def transform(self, X: ArrayLike) -> np.ndarray:
        """Calibrated probabilities ``softmax(logits / temperature_)``.

        Parameters
        ----------
        X : array-like of shape (n_items, n_classes)
            Probabilities or logits, as set by ``kind``.

        Returns
        -------
        ndarray of shape (n_items, n_classes)
            Calibrated probabilities; each row sums to 1 and keeps its most probable class.
        """
        if not hasattr(self, "temperature_"):
            raise NotFittedError("This TemperatureScaling instance is not fitted yet. "
                                 "Call 'fit' with held-out predictions and labels first.")
        logits = self._logits(X)
        if logits.shape[1] != self.n_classes_:
            raise fail(self._input_name, f"an array with {self.n_classes_} classes, as in fit",
                       f"{logits.shape[1]} classes")
        return softmax(logits / self.temperature_, axis=1)

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Alias of :meth:`transform`, for code written against classifiers."""
        return self.transform(X)

    def fit_transform(self, X: ArrayLike, labels: ArrayLike) -> np.ndarray:
        """``fit(X, labels)`` then ``transform(X)``."""
        return self.fit(X, labels).transform(X)

    def __repr__(self) -> str:
        return f"TemperatureScaling(kind={self.kind!r})"

    @property
    def _input_name(self) -> str:
        return "pred_probs" if self.kind == "probs" else "logits"

    def _logits(self, X: Any) -> np.ndarray:
        check_option(self.kind, "kind", _KINDS)
        if self.kind == "probs":
            probs = check_pred_probs(X)
            return np.log(np.maximum(probs, _PROB_FLOOR))
        logits = check_array(X, "logits", ndim=2)
        if logits.shape[0] < 1 or logits.shape[1] < 2:
            raise fail("logits", "an array of shape (n_items, n_classes) with at least 1 item "
                       "and 2 classes", f"shape {logits.shape}")
        if not np.isfinite(logits).all():
            raise fail("logits", "finite values", f"{int((~np.isfinite(logits)).sum())} NaN or inf values")
        # Shifting each row by its log-sum-exp changes nothing after softmax, at any
        # temperature, and keeps exp() away from overflow.
        return log_softmax(logits, axis=1)


class CalibratedClassifier:
    """A fitted classifier followed by a fitted :class:`TemperatureScaling`: what gets served.

    Both parts are fitted elsewhere (the classifier on the resolved labels, the scaler on
    held-out gold); this only chains them, and lays the classifier's columns out over the
    full class set, so a class missing from one round's training labels still has a column.

    Parameters
    ----------
    estimator : fitted classifier
        Has ``predict_proba`` and ``classes_`` (integer codes ``0 .. n_classes - 1``).
    scaler : fitted TemperatureScaling
        Fitted on ``n_classes`` columns (the output of :meth:`raw_proba` on held-out items).
    n_classes : int
        Size of the full class set.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> x, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])
    >>> clf = LogisticRegression().fit(x, y)
    >>> model = CalibratedClassifier(clf, TemperatureScaling().fit(clf.predict_proba(x), y), n_classes=2)
    >>> model.predict_proba(x).shape, model.predict(x).tolist()
    ((4, 2), [0, 0, 1, 1])
    """

    def __init__(self, estimator: Any, scaler: TemperatureScaling, *, n_classes: int) -> None:
        if not hasattr(estimator, "predict_proba") or not hasattr(estimator, "classes_"):
            raise fail("estimator", "a fitted classifier with predict_proba and classes_", type(estimator).__name__)
        if not hasattr(scaler, "temperature_"):
            raise NotFittedError("The 'scaler' must be a fitted TemperatureScaling.")
        self.n_classes = check_int(n_classes, "n_classes", low=2)
        columns = check_labels(np.asarray(estimator.classes_), "estimator.classes_", n_classes=self.n_classes)
        if scaler.n_classes_ != self.n_classes:
            raise fail("scaler", f"a TemperatureScaling fitted on {self.n_classes} classes",
                       f"one fitted on {scaler.n_classes_}")
        self.estimator = estimator
        self.scaler = scaler
        self.classes_ = np.arange(self.n_classes)
        self._columns = columns

    @property
    def temperature_(self) -> float:
        return self.scaler.temperature_

    def raw_proba(self, X: ArrayLike) -> np.ndarray:
        """The classifier's probabilities over the full class set, before calibration."""
        return _over_classes(self.estimator.predict_proba(X), self._columns, self.n_classes)

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Calibrated probabilities, shape ``(n_items, n_classes)``."""
        return self.scaler.transform(self.raw_proba(X))

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Most probable class per item, shape ``(n_items,)``."""
        return self.predict_proba(X).argmax(axis=1)

    def __repr__(self) -> str:
        return f"CalibratedClassifier({self.estimator!r}, temperature={self.temperature_:.3g}, n_classes={self.n_classes})"


def calibrate(estimator: Any, X_calibration: ArrayLike, y_calibration: ArrayLike, *,
              n_classes: int) -> CalibratedClassifier:
    """A fitted classifier with a temperature fitted on held-out gold: the served model.

    The classifier's probabilities of ``X_calibration`` are laid out over the full class set
    (a class missing from its training labels gets a column of zeros), and a
    :class:`TemperatureScaling` is fitted on them against ``y_calibration``.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> x, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])
    >>> model = calibrate(LogisticRegression().fit(x, y), x, y, n_classes=3)
    >>> model.predict_proba(x).shape
    (4, 3)
    """
    n = check_int(n_classes, "n_classes", low=2)
    if not hasattr(estimator, "predict_proba") or not hasattr(estimator, "classes_"):
        raise fail("estimator", "a fitted classifier with predict_proba and classes_", type(estimator).__name__)
    columns = check_labels(np.asarray(estimator.classes_), "estimator.classes_", n_classes=n)
    raw = _over_classes(estimator.predict_proba(X_calibration), columns, n)
    return CalibratedClassifier(estimator, TemperatureScaling().fit(raw, y_calibration), n_classes=n)


def _over_classes(probs: ArrayLike, columns: np.ndarray, n_classes: int) -> np.ndarray:
    """A classifier's probabilities (one column per class it saw) laid out over all classes."""
    raw = np.asarray(probs, dtype=np.float64)
    out = np.zeros((raw.shape[0], n_classes))
    out[:, columns] = raw
    return out


def expected_calibration_error(pred_probs: ArrayLike, labels: ArrayLike, *, n_bins: int = 15,
                               strategy: Strategy = "uniform") -> float:
    """Expected calibration error of the top-class confidence.

    ``ECE = sum_b (n_b / n) * |accuracy_b - mean_confidence_b|`` over bins ``b`` of the
    confidence ``max_c p_c``; ``accuracy_b`` is the share of items in ``b`` whose most
    probable class is the true label.

    Parameters
    ----------
    pred_probs : array-like of shape (n_items, n_classes)
        Class probabilities; rows sum to 1.
    labels : array-like of shape (n_items,)
        True class indices in ``0 .. n_classes - 1``.
    n_bins : int, default=15
        Number of bins.
    strategy : {"uniform", "quantile"}, default="uniform"
        ``"uniform"``: equal-width bins ``(b/B, (b+1)/B]`` on [0, 1] (Guo et al., 2017).
        ``"quantile"``: bins holding about equally many items (fewer bins when many
        confidences tie).

    Returns
    -------
    float
        In ``[0, 1]``; 0 is perfectly calibrated.

    Examples
    --------
    >>> probs = [[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]]
    >>> round(expected_calibration_error(probs, [0, 1, 1, 1], n_bins=10), 6)
    0.4
    """
    table = reliability_table(pred_probs, labels, n_bins=n_bins, strategy=strategy)
    filled = table[table[COUNT] > 0]
    return float((filled[COUNT] * filled[GAP].abs()).sum() / filled[COUNT].sum())


def reliability_table(pred_probs: ArrayLike, labels: ArrayLike, *, n_bins: int = 15,
                      strategy: Strategy = "uniform") -> pd.DataFrame:
    """Confidence against accuracy, bin by bin: the data of a reliability diagram.

    Parameters
    ----------
    pred_probs : array-like of shape (n_items, n_classes)
        Class probabilities; rows sum to 1.
    labels : array-like of shape (n_items,)
        True class indices in ``0 .. n_classes - 1``.
    n_bins : int, default=15
        Number of bins.
    strategy : {"uniform", "quantile"}, default="uniform"
        How to place the bin edges, as in :func:`expected_calibration_error`.

    Returns
    -------
    DataFrame
        One row per bin, columns ``bin_lower, bin_upper, count, mean_confidence, accuracy,
        gap``. A bin holds the items with ``bin_lower < confidence <= bin_upper`` (the first
        bin also holds ``confidence == bin_lower``). ``gap = mean_confidence - accuracy``:
        positive where the model is over-confident. Empty bins (uniform strategy only) have
        ``count`` 0 and NaN statistics.

    Examples
    --------
    >>> table = reliability_table([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6]], [0, 1, 1], n_bins=5)
    >>> table[["bin_upper", "count", "gap"]].round(2).values.tolist()
    [[0.2, 0.0, nan], [0.4, 0.0, nan], [0.6, 1.0, -0.4], [0.8, 0.0, nan], [1.0, 2.0, 0.4]]
    """
    probs = check_pred_probs(pred_probs)
    labels = check_labels(labels, n_classes=probs.shape[1], n_items=probs.shape[0])
    n_bins = check_int(n_bins, "n_bins", low=1)
    check_option(strategy, "strategy", _STRATEGIES)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = _bin_edges(confidence, n_bins, strategy)
    # Right-closed bins: the number of inner edges strictly below a confidence is its bin.
    bins = np.searchsorted(edges[1:-1], confidence, side="left")
    n = len(edges) - 1
    count = np.bincount(bins, minlength=n).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(bins, weights=confidence, minlength=n) / count
        accuracy = np.bincount(bins, weights=correct, minlength=n) / count
    return pd.DataFrame({
        BIN_LOWER: edges[:-1],
        BIN_UPPER: edges[1:],
        COUNT: count.astype(np.int64),
        MEAN_CONFIDENCE: mean_confidence,
        ACCURACY: accuracy,
        GAP: mean_confidence - accuracy,
    })


def _bin_edges(confidence: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    edges = np.quantile(confidence, np.linspace(0.0, 1.0, n_bins + 1))
    edges[0], edges[-1] = 0.0, 1.0
    return np.unique(edges)
