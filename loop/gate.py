"""The quality gate: a retrained model is promoted only when it is better where it matters.

A challenger replaces the champion when, on the same held-out gold set,

1. its accuracy is at least ``min_accuracy_gain`` above the champion's,
2. its expected calibration error is at most ``max_ece`` (routing trusts confidence), and
3. no class loses more than ``max_recall_drop`` of recall (an average gain must not hide a
   class the model stopped seeing).

With no champion yet, only the calibration check applies, plus ``min_accuracy`` when set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from ._validation import check_labels, check_pred_probs, check_real, fail
from .calibration import expected_calibration_error

__all__ = ["GateDecision", "ModelEvaluation", "QualityGate", "decide", "evaluate_model"]


@dataclass(frozen=True)
class QualityGate:
    """Promotion rules, all read from the program config.

    Parameters
    ----------
    min_accuracy_gain : float, default=0.0
        Accuracy the challenger must add over the champion (can be negative to allow a small
        loss in exchange for calibration, but not below -1).
    max_ece : float, default=0.05
        Highest expected calibration error accepted, in [0, 1].
    max_recall_drop : float, default=0.05
        Largest recall any single class may lose, in [0, 1].
    min_accuracy : float, default=0.0
        Floor on accuracy, applied with or without a champion.
    """

    min_accuracy_gain: float = 0.0
    max_ece: float = 0.05
    max_recall_drop: float = 0.05
    min_accuracy: float = 0.0

    def __post_init__(self) -> None:
        check_real(self.min_accuracy_gain, "min_accuracy_gain", low=-1, high=1)
        check_real(self.max_ece, "max_ece", low=0, high=1)
        check_real(self.max_recall_drop, "max_recall_drop", low=0, high=1)
        check_real(self.min_accuracy, "min_accuracy", low=0, high=1)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> QualityGate:
        """Build from a config mapping; unknown keys are refused with the valid ones listed."""
        if not isinstance(config, Mapping):
            raise fail("gate", "a mapping of gate settings", f"a {type(config).__name__}")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(config) - set(valid))
        if unknown:
            raise fail("gate", f"a mapping with keys among {valid}", f"unknown keys {unknown}")
        return cls(**config)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class ModelEvaluation:
    """A model's figures on the gold set.

    Attributes
    ----------
    accuracy : float
    ece : float
        Expected calibration error (15 uniform bins).
    recall : ndarray of shape (n_classes,)
        Recall per class; NaN for a class absent from the gold set.
    n_items : int
    """

    accuracy: float
    ece: float
    recall: np.ndarray
    n_items: int

    def to_metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat metrics for a tracking backend, e.g. ``{"accuracy": 0.93, "recall_3": 0.88}``."""
        out = {f"{prefix}accuracy": self.accuracy, f"{prefix}ece": self.ece}
        out.update({f"{prefix}recall_{c}": float(r) for c, r in enumerate(self.recall) if np.isfinite(r)})
        return out


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided and why.

    Attributes
    ----------
    promote : bool
    checks : DataFrame
        One row per check: ``check, value, limit, passed``.
    reason : str
        One sentence a person can read, naming every failed check (or that all passed).
    """

    promote: bool
    checks: pd.DataFrame
    reason: str


def evaluate_model(labels: ArrayLike, pred_probs: ArrayLike) -> ModelEvaluation:
    """Accuracy, calibration error and per-class recall of ``pred_probs`` against gold ``labels``.

    Parameters
    ----------
    labels : array-like of shape (n,)
        Gold class codes.
    pred_probs : array-like of shape (n, k)

    Examples
    --------
    >>> ev = evaluate_model([0, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    >>> round(ev.accuracy, 3), ev.recall.tolist()
    (0.667, [1.0, 0.5])
    """
    probs = check_pred_probs(pred_probs)
    gold = check_labels(labels, n_classes=probs.shape[1], n_items=probs.shape[0])
    predicted = probs.argmax(axis=1)
    k = probs.shape[1]
    support = np.bincount(gold, minlength=k)
    hits = np.bincount(gold[predicted == gold], minlength=k)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, hits / support, np.nan)
    return ModelEvaluation(
        accuracy=float((predicted == gold).mean()),
        ece=expected_calibration_error(probs, gold),
        recall=recall,
        n_items=int(gold.shape[0]),
    )


def decide(challenger: ModelEvaluation, champion: ModelEvaluation | None, gate: QualityGate) -> GateDecision:
    """Apply ``gate`` to a challenger, against the champion when there is one.

    Examples
    --------
    >>> old = ModelEvaluation(0.90, 0.03, np.array([0.9, 0.9]), 100)
    >>> new = ModelEvaluation(0.93, 0.02, np.array([0.99, 0.8]), 100)
    >>> d = decide(new, old, QualityGate(max_recall_drop=0.05))
    >>> d.promote, d.reason
    (False, 'refused: recall of class 1 fell by 0.100 > 0.050')
    """
    if not isinstance(gate, QualityGate):
        raise fail("gate", "a QualityGate", f"a {type(gate).__name__}")
    rows = [
        ("min_accuracy", challenger.accuracy, gate.min_accuracy, challenger.accuracy >= gate.min_accuracy,
         f"accuracy {challenger.accuracy:.3f} < floor {gate.min_accuracy:.3f}"),
        ("max_ece", challenger.ece, gate.max_ece, challenger.ece <= gate.max_ece,
         f"calibration error {challenger.ece:.3f} > {gate.max_ece:.3f}"),
    ]
    if champion is not None:
        if champion.recall.shape != challenger.recall.shape:
            raise fail("champion", f"an evaluation over {challenger.recall.shape[0]} classes",
                       f"one over {champion.recall.shape[0]}")
        gain = challenger.accuracy - champion.accuracy
        rows.append(("min_accuracy_gain", gain, gate.min_accuracy_gain, gain >= gate.min_accuracy_gain,
                     f"accuracy gain {gain:+.3f} < {gate.min_accuracy_gain:+.3f}"))
        drops = np.nan_to_num(champion.recall - challenger.recall, nan=0.0)
        worst = int(np.argmax(drops))
        rows.append(("max_recall_drop", float(drops[worst]), gate.max_recall_drop, drops[worst] <= gate.max_recall_drop,
                     f"recall of class {worst} fell by {drops[worst]:.3f} > {gate.max_recall_drop:.3f}"))
    checks = pd.DataFrame([r[:4] for r in rows], columns=["check", "value", "limit", "passed"])
    failed = [r[4] for r in rows if not r[3]]
    promote = not failed
    if promote:
        against = "no champion yet" if champion is None else f"accuracy {champion.accuracy:.3f} -> {challenger.accuracy:.3f}"
        reason = f"promoted: every check passed ({against})"
    else:
        reason = "refused: " + "; ".join(failed)
    return GateDecision(promote=promote, checks=checks, reason=reason)
