"""The quality gate inside the program refuses a genuinely worse retrained model."""

from __future__ import annotations

import pytest
from sklearn.dummy import DummyClassifier

import experiments.program as program
from experiments import tracking as T
from experiments.config import parse_config
from experiments.world import build_world
from loop.gate import QualityGate

SMALL = {"program": {"rounds": 1, "items_per_round": 80, "budget_per_round": 5.0, "calibration_items": 60,
                     "holdout_items": 150, "audit_rate": 0.05},
         "store": {"url": "sqlite://"}, "serve": {"url": "in_process"}}


@pytest.mark.slow
def test_a_worse_challenger_is_refused_and_the_champion_stays(monkeypatch, mlflow_uri, tmp_path):
    from mlflow import MlflowClient

    name = "gate-refuses-worse"
    cfg = parse_config({**SMALL, "tracking": {"uri": mlflow_uri, "experiment": name, "registered_model": name},
                        "store": {"url": f"sqlite:///{tmp_path}/labels.db"}})
    cfg = cfg.replace(gate=QualityGate(min_accuracy_gain=0.0, max_ece=1.0, max_recall_drop=1.0))
    real = program._classifier
    built = []

    def good_then_useless(model=None):
        # The seed champion is the real model; every retrained challenger only predicts the
        # most frequent class: a worse model, not a stricter gate.
        built.append(1)
        return real(model) if len(built) == 1 else DummyClassifier(strategy="prior")

    monkeypatch.setattr(program, "_classifier", good_then_useless)
    result = program.run_program(cfg, world=build_world(cfg))
    assert len(built) == 2 and result.promotions == 0
    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "2"
    run = client.get_run(result.run_id)
    reason = run.data.tags[T.TAG_GATE_REASON]
    assert reason.startswith("refused: accuracy gain -"), reason
    assert run.data.metrics[T.CHALLENGER_ACCURACY] < run.data.metrics[T.MODEL_ACCURACY] - 0.3
