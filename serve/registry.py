"""Put a model where the Scorer finds it: log it to MLflow, register a version, set aliases.

The retraining step of the program and the tests and benchmarks all publish models the same
way, so the Scorer's contract (``mlflow.sklearn`` flavour, ``predict_proba`` as the pyfunc
method, a registered version under an alias) is written down once, here.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["log_and_register", "model_requirements", "publish_model", "trusted_types"]

# What loading a labelloop model needs: its classes, the estimator, and skops to read it.
_REQUIREMENTS = ("labelloop", "scikit-learn", "numpy", "scipy", "pandas", "skops", "cleanlab")

# MLflow 3 saves scikit-learn models with skops, which loads only types it is told to trust.
# We trust our own estimators (labelloop's package) and nothing else beyond skops' defaults.
_OWN_PACKAGES = ("loop.",)


def publish_model(model: Any, *, model_name: str, tracking_uri: str | None = None,
                  aliases: Sequence[str] = ("champion",), input_example: Any = None,
                  run_name: str | None = None, pip_requirements: Sequence[str] | None = None) -> str:
    """Log ``model`` in a new MLflow run, register it as a new version, point ``aliases`` at it.

    Parameters
    ----------
    model : fitted scikit-learn classifier
        For example a :class:`loop.calibration.CalibratedClassifier`.
    model_name : str
        Registered model name.
    tracking_uri : str, optional
        Tracking and registry URI; default MLflow's own resolution.
    aliases : sequence of str, default=("champion",)
        Aliases to set on the new version (e.g. ``("challenger",)``).
    input_example : array-like, optional
        A few rows, to record the model's signature.
    run_name : str, optional
    pip_requirements : sequence of str, optional
        The model's Python requirements; default the installed versions of labelloop and the
        libraries a served model loads with (:func:`model_requirements`). Giving them spares
        MLflow's inference, which imports the model in a subprocess (seconds per version).

    Returns
    -------
    str
        The new version number.
    """
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    with mlflow.start_run(run_name=run_name):
        return log_and_register(model, model_name=model_name, aliases=aliases, input_example=input_example,
                                pip_requirements=pip_requirements)


def log_and_register(model: Any, *, model_name: str, aliases: Sequence[str], input_example: Any = None,
                     pip_requirements: Sequence[str] | None = None) -> str:
    """Log ``model`` into the active MLflow run, register it as a new version of ``model_name``
    and point ``aliases`` at it; returns the version.

    The one place that knows how a served model is stored: the scikit-learn flavour with
    ``predict_proba`` as the pyfunc method, labelloop's own types trusted by skops, pinned
    requirements. MLflow's progress lines ("Created version ...") are kept off the terminal.
    """
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient

    with _mlflow_quiet():
        info = mlflow.sklearn.log_model(model, name="model", pyfunc_predict_fn="predict_proba",
                                        input_example=input_example, registered_model_name=model_name,
                                        skops_trusted_types=trusted_types(model),
                                        pip_requirements=list(pip_requirements or model_requirements()))
    version = str(info.registered_model_version)
    client = MlflowClient(tracking_uri=mlflow.get_tracking_uri(), registry_uri=mlflow.get_registry_uri())
    for alias in aliases:
        client.set_registered_model_alias(model_name, alias, version)
    return version


@contextlib.contextmanager
def _mlflow_quiet() -> Iterator[None]:
    """Keep MLflow's progress lines (printed to stderr) off the terminal for the block; if the
    block fails, what MLflow printed is shown after all, since it may explain the failure."""
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            yield
    except BaseException:
        sys.stderr.write(held.getvalue())
        raise


def trusted_types(model: Any) -> list[str]:
    """The types in ``model`` that skops does not trust by default and that labelloop defines.

    Raises
    ------
    SchemaError
        When the model holds other untrusted types (say so explicitly, or log with
        ``serialization_format="cloudpickle"``).
    """
    import skops.io

    from loop._validation import fail

    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    foreign = [t for t in untrusted if not t.startswith(_OWN_PACKAGES)]
    if foreign:
        raise fail("model", "a model skops can load with labelloop's types trusted", f"other types {foreign}")
    return list(untrusted)


def model_requirements() -> list[str]:
    """Pinned requirements of a served labelloop model, from the installed versions.

    Examples
    --------
    >>> [r.split("==")[0] for r in model_requirements()][:2]
    ['labelloop', 'scikit-learn']
    """
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in _REQUIREMENTS:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pins.append(name)
    return pins
