"""A temporary MLflow registry with a champion, for tests that deploy the Serve app."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def temp_registry(root: Path, experiment: str) -> str:
    """A SQLite tracking store under ``root`` with ``experiment`` (artifacts beside it), set as
    this process's tracking URI; returns the URI."""
    import mlflow

    uri = f"sqlite:///{root}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment(experiment, artifact_location=str(root / "artifacts"))
    mlflow.set_experiment(experiment)
    return uri


def digits_champion(root: Path, model_name: str) -> tuple[str, Any, Any, str]:
    """A calibrated digits classifier (logistic regression + temperature) published as
    ``models:/<model_name>@champion`` in a temporary registry: (tracking URI, digits features,
    the model, its version)."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from loop.calibration import CalibratedClassifier, TemperatureScaling
    from serve.registry import publish_model

    uri = temp_registry(root, model_name)
    x, y = load_digits(return_X_y=True)
    with threadpool_limits(1):
        clf = LogisticRegression(C=0.01, max_iter=2000).fit(x[:900], y[:900])
    model = CalibratedClassifier(clf, TemperatureScaling().fit(clf.predict_proba(x[900:1300]), y[900:1300]),
                                 n_classes=10)
    version = publish_model(model, model_name=model_name, tracking_uri=uri)
    return uri, x, model, version
