"""The model a config names: the one factory of labelloop's estimators.

``model.estimator`` in a config is an import path of a class
(``sklearn.ensemble.HistGradientBoostingClassifier``) or of a factory function
(``package.module:factory``), built with ``model.params`` as keyword arguments; left out, it is
the built-in logistic regression (standardised features, ``C=0.05``). Every place that trains
a model (the program's retraining, the world's confusability model, the tour) builds it here,
so a team's own estimator is trained, calibrated and registered like the built-in one.

The fitted estimator is wrapped in :class:`loop.calibration.CalibratedClassifier` by the
caller, then logged with skops (:mod:`serve.registry`). skops refuses types it does not know;
:func:`trusted_modules` names the modules whose types a model of this config may hold (the
named estimator's own package, nothing wider), so that a gradient-boosting model's tree
predictors load and anything else is still refused.
"""

from __future__ import annotations

import importlib
from typing import Any

from serve.registry import covered_by

from .config import ConfigError, ModelConfig, config_error

__all__ = ["make_estimator", "resolve_estimator", "trusted_modules"]

_PATH_FORM = "an import path of a class (package.module.Class) or a factory (package.module:factory)"


def resolve_estimator(path: str) -> Any:
    """The class or factory that ``path`` names.

    Parameters
    ----------
    path : str
        ``package.module.Class`` or ``package.module:factory``.

    Raises
    ------
    ConfigError
        ``model.estimator: expected ..., got '...'`` when the module or the name is not there.

    Examples
    --------
    >>> resolve_estimator("sklearn.ensemble.HistGradientBoostingClassifier").__name__
    'HistGradientBoostingClassifier'
    """
    if ":" in path:
        module_name, _, name = path.partition(":")
    else:
        module_name, _, name = path.rpartition(".")
    if not module_name or not name or not all(part.isidentifier() for part in module_name.split(".") + name.split(".")):
        raise config_error("model.estimator", _PATH_FORM, path)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"model.estimator: cannot import module {module_name!r} of {path!r} ({exc})") from None
    target: Any = module
    for part in name.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ConfigError(f"model.estimator: module {module_name!r} has no {name!r} (from {path!r})")
    if not callable(target):
        raise config_error("model.estimator", f"{_PATH_FORM} naming something callable", path)
    return target


def make_estimator(model: ModelConfig | None = None) -> Any:
    """A new, unfitted estimator as ``model`` says; the built-in logistic regression by default.

    Parameters
    ----------
    model : ModelConfig, optional
        ``estimator`` (import path or None) and ``params`` (keyword arguments).

    Returns
    -------
    estimator
        Has ``fit`` and ``predict_proba`` (scikit-learn's classifier interface).

    Raises
    ------
    ConfigError
        Naming ``model.estimator`` (not importable, not a classifier) or ``model.params`` (the
        estimator refused them).

    Examples
    --------
    >>> from experiments.config import ModelConfig
    >>> make_estimator(ModelConfig("sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 50})).max_iter
    50
    """
    model = model or ModelConfig()
    if model.estimator is None:
        if model.params:
            raise config_error("model.params", "no params without model.estimator (the built-in model "
                               "takes none)", dict(model.params))
        return _builtin()
    factory = resolve_estimator(model.estimator)
    try:
        estimator = factory(**model.params)
    except TypeError as exc:
        raise ConfigError(f"model.params: {model.estimator} refused {dict(model.params)!r} ({exc})") from None
    missing = [verb for verb in ("fit", "predict_proba") if not callable(getattr(estimator, verb, None))]
    if missing:
        raise ConfigError(f"model.estimator: expected a classifier with fit and predict_proba, got "
                          f"{model.estimator!r} ({type(estimator).__name__} has no {' or '.join(missing)})")
    return estimator


def trusted_modules(model: ModelConfig | None = None) -> tuple[str, ...]:
    """Modules whose types a model of this config may hold beyond skops' defaults and labelloop's.

    The package of the named class or factory, and the module of the estimator it builds: for
    ``sklearn.ensemble.HistGradientBoostingClassifier``,
    ``sklearn.ensemble._hist_gradient_boosting`` (its tree predictors live there). Empty for
    the built-in model, whose types skops trusts already. A type ``a.b.C`` is covered by a
    module ``m`` when ``a.b`` is ``m`` or inside it.

    Examples
    --------
    >>> from experiments.config import ModelConfig
    >>> trusted_modules(ModelConfig("sklearn.ensemble.HistGradientBoostingClassifier"))
    ('sklearn.ensemble._hist_gradient_boosting',)
    """
    model = model or ModelConfig()
    if model.estimator is None:
        return ()
    named = getattr(resolve_estimator(model.estimator), "__module__", None) or ""
    built = type(make_estimator(model)).__module__
    # The named object's package (a class's private helpers live beside it), but only the very
    # module of what a factory builds: a factory returning a Pipeline must not trust all of sklearn.
    modules = [m for m in (named.rpartition(".")[0] or named, built) if m]
    return tuple(m for i, m in enumerate(modules) if not covered_by(m, modules[:i]))


def _builtin() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
