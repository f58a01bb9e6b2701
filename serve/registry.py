"""Put a model where the Scorer finds it, and load it back without running its code.

The retraining step of the program and the tests and benchmarks all publish models the same
way, so the Scorer's contract (``mlflow.sklearn`` flavour, ``predict_proba`` as the pyfunc
method, a registered version under an alias) is written down once, here.

:func:`load_model` is the one way a registered model is loaded (the Serve app's Scorer, the
tracker, ``labelloop score``). It reads the model's flavours first:

- ``sklearn`` saved with skops loads without executing code: skops rebuilds only types it
  trusts, and we trust skops' defaults, labelloop's own types and the modules the caller names
  (those of the config's ``model.estimator``), not the list the model carries about itself
  (anyone who can write a model could put anything on it).
- ``sklearn`` saved with pickle or cloudpickle, and ``python_function`` models (a
  cloudpickled ``python_model``, or a loader module), run code when they load: they load only
  with ``allow_pickle=True`` (``model.allow_pickle: true`` in a config); otherwise
  :class:`UnsafeModelError` names the flavour and the key to set.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from loop.exceptions import SchemaError

__all__ = ["PyfuncClassifier", "UnsafeModelError", "covered_by", "load_model", "log_and_register",
           "model_requirements", "model_version_name", "publish_model", "trusted_types"]

# What loading a labelloop model needs: its classes, the estimator, and skops to read it.
_REQUIREMENTS = ("labelloop", "scikit-learn", "numpy", "scipy", "pandas", "skops", "cleanlab")

# MLflow 3 saves scikit-learn models with skops, which loads only types it is told to trust.
# We trust our own estimators (labelloop's package), the modules a config's model.estimator
# names, and nothing else beyond skops' defaults.
_OWN_PACKAGES = ("loop",)
_ALLOW_PICKLE_KEY = "model.allow_pickle"


class UnsafeModelError(SchemaError):
    """A model would run code when it loads (a pickle flavour, or types skops does not trust),
    and the config does not allow it; the message names the flavour and the key to set."""


def covered_by(name: str, modules: Sequence[str]) -> bool:
    """Whether ``name`` (a module, or a type's ``module.Class``) is one of ``modules`` or inside one.

    Examples
    --------
    >>> covered_by("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor", ["sklearn.ensemble"])
    True
    >>> covered_by("sklearnx.Evil", ["sklearn"])
    False
    """
    return any(name == m or name.startswith(m + ".") for m in modules)


def publish_model(model: Any, *, model_name: str, tracking_uri: str | None = None,
                  aliases: Sequence[str] = ("champion",), input_example: Any = None,
                  run_name: str | None = None, pip_requirements: Sequence[str] | None = None,
                  trusted_modules: Sequence[str] = ()) -> str:
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
    trusted_modules : sequence of str, default=()
        Modules whose types the model may hold beyond skops' defaults and labelloop's (see
        :func:`trusted_types`); ``experiments.models.trusted_modules`` gives a config's.

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
                                pip_requirements=pip_requirements, trusted_modules=trusted_modules)


def log_and_register(model: Any, *, model_name: str, aliases: Sequence[str], input_example: Any = None,
                     pip_requirements: Sequence[str] | None = None, trusted_modules: Sequence[str] = ()) -> str:
    """Log ``model`` into the active MLflow run, register it as a new version of ``model_name``
    and point ``aliases`` at it; returns the version.

    The one place that knows how a served model is stored: the scikit-learn flavour with
    ``predict_proba`` as the pyfunc method, labelloop's own types (and those of
    ``trusted_modules``) trusted by skops, pinned requirements. MLflow's progress lines
    ("Created version ...") are kept off the terminal.
    """
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient

    with _mlflow_quiet():
        info = mlflow.sklearn.log_model(model, name="model", pyfunc_predict_fn="predict_proba",
                                        input_example=input_example, registered_model_name=model_name,
                                        skops_trusted_types=trusted_types(model, trusted_modules),
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


def trusted_types(model: Any, trusted_modules: Sequence[str] = ()) -> list[str]:
    """The types in ``model`` that skops does not trust by default and that labelloop defines,
    or that ``trusted_modules`` hold.

    Raises
    ------
    SchemaError
        When the model holds other untrusted types (name the estimator in ``model.estimator``,
        or log with ``serialization_format="cloudpickle"``).
    """
    import skops.io

    from loop._validation import fail

    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    foreign = [t for t in untrusted if not covered_by(t, _OWN_PACKAGES + tuple(trusted_modules))]
    if foreign:
        raise fail("model", "a model skops can load with labelloop's types and the configured estimator's "
                   "modules trusted", f"other types {foreign}")
    return list(untrusted)


def model_version_name(model_uri: str, *, tracking_uri: str | None = None) -> str:
    """``<name>/<version>`` of a registry URI (``models:/name@alias``, ``models:/name/3``); other
    URIs (``runs:/...``) as they are. What ``labelloop score`` writes on every row."""
    from mlflow import MlflowClient

    if not model_uri.startswith("models:/"):
        return model_uri
    rest = model_uri[len("models:/"):].strip("/")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return f"{name}/{client.get_model_version_by_alias(name, alias).version}"
    name, _, version = rest.partition("/")
    if version.isdigit():
        return f"{name}/{version}"
    return f"{name}/{client.get_latest_versions(name, stages=[version] if version else None)[0].version}"


def load_model(model_uri: str, *, allow_pickle: bool = False, trusted_modules: Sequence[str] = (),
               field: str = "model.uri", allow_key: str = _ALLOW_PICKLE_KEY) -> Any:
    """Load a registered model as an object with ``predict_proba``, running no code unless allowed.

    Parameters
    ----------
    model_uri : str
        ``models:/name@alias``, ``models:/name/3``, ``runs:/<run>/model``...; the tracking and
        registry URIs are MLflow's (``mlflow.set_tracking_uri``).
    allow_pickle : bool, default=False
        Load flavours that unpickle (and so run code): sklearn with pickle or cloudpickle,
        python_function; and skops models holding types outside the trusted modules.
    trusted_modules : sequence of str, default=()
        Modules whose types a skops model may hold beyond skops' defaults and labelloop's.
    field : str, default="model.uri"
        The config key named in errors.
    allow_key : str, default="model.allow_pickle"
        The key that allows code to run, named in refusals.

    Returns
    -------
    model
        The scikit-learn model itself (sklearn flavour), or a :class:`PyfuncClassifier` around
        a pyfunc model whose ``predict`` returns class probabilities.

    Raises
    ------
    UnsafeModelError
        The model would run code when it loads and ``allow_pickle`` is False.
    SchemaError
        The model has neither flavour, or no ``predict_proba``.
    """
    import tempfile
    from pathlib import Path

    import mlflow
    import skops.io
    from mlflow.models import Model

    with tempfile.TemporaryDirectory() as tmp:
        with _mlflow_quiet():  # its progress bars
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        flavors = Model.load(str(local)).flavors
        sk = flavors.get("sklearn")
        if sk is not None:
            fmt = sk.get("serialization_format", "pickle")
            path = str(local / sk["pickled_model"])
            if fmt == "skops":
                untrusted = skops.io.get_untrusted_types(file=path)
                foreign = [t for t in untrusted if not covered_by(t, _OWN_PACKAGES + tuple(trusted_modules))]
                if foreign and not allow_pickle:
                    raise UnsafeModelError(
                        f"{field}: {model_uri} (flavour sklearn, skops) holds types that are neither skops' nor "
                        f"labelloop's nor the configured estimator's: {foreign}; loading them may run code. "
                        f"Name its estimator in model.estimator, or set {allow_key}: true if you trust it.")
                # Every type is one we vetted above (or the config allows code): trust exactly those.
                model = skops.io.load(path, trusted=untrusted)
            else:
                _refuse_unless(allow_pickle, field, allow_key, model_uri, f"sklearn ({fmt})")
                import mlflow.sklearn

                model = mlflow.sklearn.load_model(str(local))
            if not callable(getattr(model, "predict_proba", None)):
                raise SchemaError(f"{field}: {model_uri} is a {type(model).__name__}, which has no predict_proba; "
                                  "log a classifier")
            return model
        py = flavors.get("python_function")
        if py is None:
            raise SchemaError(f"{field}: {model_uri} has neither the sklearn nor the python_function flavour "
                              f"(it has {sorted(flavors)})")
        how = "cloudpickle" if "python_model" in py else py.get("loader_module", "a loader module")
        _refuse_unless(allow_pickle, field, allow_key, model_uri, f"python_function ({how})")
    import mlflow.pyfunc

    with _mlflow_quiet():
        return PyfuncClassifier(mlflow.pyfunc.load_model(model_uri), name=model_uri, field=field)


def _refuse_unless(allow_pickle: bool, field: str, allow_key: str, model_uri: str, flavour: str) -> None:
    if not allow_pickle:
        raise UnsafeModelError(f"{field}: {model_uri} has the flavour {flavour}, which unpickles, and so runs code, "
                               f"when it loads; set {allow_key}: true to load it if you trust its source")


class PyfuncClassifier:
    """An MLflow pyfunc model whose ``predict`` returns class probabilities, as ``predict_proba``.

    Each answer is checked: shape (n, k) with k >= 2, probabilities whose rows sum to 1 within
    loop's one tolerance (:data:`loop._validation.PROB_SUM_ATOL`).
    """

    def __init__(self, model: Any, *, name: str, field: str = "model.uri") -> None:
        self.model = model
        self.name = name
        self.field = field

    def predict_proba(self, X: Any) -> Any:
        import numpy as np

        from loop._validation import check_pred_probs

        X = np.asarray(X)
        names = None
        schema = self.model.metadata.get_input_schema() if self.model.metadata else None
        if schema is not None and schema.has_input_names():
            names = schema.input_names()
        data = X if names is None or len(names) != X.shape[1] else _frame(X, names)
        out = self.model.predict(data)
        try:
            probs = check_pred_probs(np.asarray(out, dtype=np.float64), "predict")
        except (SchemaError, TypeError, ValueError) as exc:
            raise SchemaError(f"{self.field}: {self.name}'s predict must return class probabilities, shape "
                              f"(n_items, n_classes), rows summing to 1: {exc}") from None
        if probs.shape[0] != X.shape[0]:
            raise SchemaError(f"{self.field}: {self.name}'s predict returned {probs.shape[0]} rows for "
                              f"{X.shape[0]} items")
        return probs


def _frame(X: Any, names: Sequence[str]) -> Any:
    import pandas as pd

    return pd.DataFrame(X, columns=list(names))


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
