"""The quality gate promotes a better model and refuses a worse one, saying why."""

from __future__ import annotations

import numpy as np
import pytest

from loop.exceptions import SchemaError
from loop.gate import ModelEvaluation, QualityGate, decide, evaluate_model


def _evaluation(accuracy: float, ece: float = 0.02, recall=(0.9, 0.9, 0.9)) -> ModelEvaluation:
    return ModelEvaluation(accuracy, ece, np.array(recall, dtype=float), 300)


def test_evaluate_model_measures_accuracy_recall_and_calibration(rng) -> None:
    labels = rng.integers(0, 3, size=3000)
    probs = np.full((3000, 3), 0.1)
    probs[np.arange(3000), labels] = 0.8  # right 100% of the time at confidence 0.8
    ev = evaluate_model(labels, probs)
    assert ev.accuracy == 1.0 and ev.recall.tolist() == [1.0, 1.0, 1.0]
    assert ev.ece == pytest.approx(0.2)
    assert ev.to_metrics("gold_")["gold_recall_2"] == 1.0


def test_absent_class_has_nan_recall_and_does_not_block() -> None:
    ev = evaluate_model([0, 0], [[0.9, 0.1], [0.8, 0.2]])
    assert np.isnan(ev.recall[1]) and "recall_1" not in ev.to_metrics()
    assert decide(ev, ev, QualityGate(max_ece=1)).promote


def test_better_model_is_promoted() -> None:
    d = decide(_evaluation(0.93), _evaluation(0.90), QualityGate(min_accuracy_gain=0.01))
    assert d.promote and d.reason.startswith("promoted") and d.checks["passed"].all()


def test_worse_model_is_refused_naming_the_failed_check() -> None:
    d = decide(_evaluation(0.88), _evaluation(0.90), QualityGate())
    assert not d.promote and "accuracy gain -0.020" in d.reason


def test_average_gain_cannot_hide_a_class_losing_recall() -> None:
    d = decide(_evaluation(0.95, recall=(1.0, 1.0, 0.7)), _evaluation(0.90), QualityGate(max_recall_drop=0.1))
    assert not d.promote and "recall of class 2 fell by 0.200" in d.reason


def test_badly_calibrated_model_is_refused_even_without_champion() -> None:
    d = decide(_evaluation(0.99, ece=0.2), None, QualityGate(max_ece=0.05))
    assert not d.promote and "calibration error 0.200 > 0.050" in d.reason
    assert list(d.checks["check"]) == ["min_accuracy", "max_ece"]
    assert decide(_evaluation(0.99), None, QualityGate()).reason == "promoted: every check passed (no champion yet)"


def test_every_failure_is_listed() -> None:
    d = decide(_evaluation(0.5, ece=0.3, recall=(0.1, 0.1, 0.1)), _evaluation(0.9), QualityGate(min_accuracy=0.6))
    assert not d.promote and d.reason.count(";") == 3


def test_gate_config_is_validated() -> None:
    assert QualityGate.from_dict({"max_ece": 0.1}).to_dict()["max_ece"] == 0.1
    with pytest.raises(SchemaError, match="unknown keys \\['max_eec'\\]"):
        QualityGate.from_dict({"max_eec": 0.1})
    with pytest.raises(SchemaError, match="'max_recall_drop'"):
        QualityGate(max_recall_drop=2)
    with pytest.raises(SchemaError, match="'champion'"):
        decide(_evaluation(0.9), _evaluation(0.9, recall=(1, 1)), QualityGate())
