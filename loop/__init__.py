"""labelloop's core library: signals, label issues, calibration, routing, aggregation,
agreement and simulated annotators, on numpy and pandas. No ray, mlflow, optuna or fastapi."""

__version__ = "0.1.0"
