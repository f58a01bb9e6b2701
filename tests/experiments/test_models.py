"""A team's own model: the one factory, its checks, and loading a registered model safely."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.config import ConfigError, ModelConfig, parse_config
from experiments.models import make_estimator, trusted_modules
from loop.calibration import CalibratedClassifier, TemperatureScaling

HGB = "sklearn.ensemble.HistGradientBoostingClassifier"


def small_classifier(*, C: float = 1.0):
    """A factory in the ``package.module:factory`` form (this test module is importable)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=500)


class NotAClassifier:
    def fit(self, x, y):
        return self


def test_the_default_is_the_built_in_logistic_regression():
    model = make_estimator()
    assert [type(step).__name__ for step in model] == ["StandardScaler", "LogisticRegression"]
    assert model[-1].C == 0.05
    assert trusted_modules(ModelConfig()) == ()


def test_an_import_path_builds_the_class_with_its_params():
    model = make_estimator(ModelConfig(HGB, {"max_iter": 7}))
    assert type(model).__name__ == "HistGradientBoostingClassifier" and model.max_iter == 7
    # Its tree predictors live beside it; nothing wider is trusted.
    assert trusted_modules(ModelConfig(HGB)) == ("sklearn.ensemble._hist_gradient_boosting",)


def test_a_factory_path_calls_the_factory():
    model = make_estimator(ModelConfig(f"{__name__}:small_classifier", {"C": 0.5}))
    assert type(model).__name__ == "LogisticRegression" and model.C == 0.5
    # The factory's package, and only the module of what it built.
    assert trusted_modules(ModelConfig(f"{__name__}:small_classifier")) == ("tests.experiments",
                                                                            "sklearn.linear_model._logistic")


@pytest.mark.parametrize(("estimator", "params", "named"), [
    ("sklearn.ensemble.NoSuchClassifier", {}, "model.estimator: module 'sklearn.ensemble' has no"),
    ("nosuchpackage.Model", {}, "model.estimator: cannot import module 'nosuchpackage'"),
    ("not a path", {}, "model.estimator: expected an import path"),
    ("sklearn.linear_model.LinearRegression", {}, "model.estimator: expected a classifier with fit and predict_proba"),
    (f"{__name__}.NotAClassifier", {}, "has no predict_proba"),
    (HGB, {"no_such_param": 1}, "model.params: sklearn.ensemble.HistGradientBoostingClassifier refused"),
    (None, {"C": 1.0}, "model.params: expected no params without model.estimator"),
])
def test_a_bad_estimator_is_refused_naming_the_key(estimator, params, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.").replace("(", r"\(")):
        make_estimator(ModelConfig(estimator, params))


def test_the_model_section_parses():
    cfg = parse_config({"model": {"estimator": HGB, "params": {"max_iter": 20}}})
    assert cfg.model == ModelConfig(HGB, {"max_iter": 20})


def test_a_program_trains_the_configured_estimator():
    from experiments import tracking as T
    from experiments.program import run_program

    cfg = parse_config({"program": {"rounds": 1, "items_per_round": 80, "budget_per_round": 5.0,
                                    "calibration_items": 60, "holdout_items": 150},
                        "model": {"estimator": HGB, "params": {"max_iter": 15}},
                        "tracking": {"uri": "none"}, "store": {"url": "sqlite://"}})
    tracker = T.MemoryTracker()
    result = run_program(cfg, tracker=tracker)
    assert all(type(m.estimator).__name__ == "HistGradientBoostingClassifier" for m in tracker.models)
    assert isinstance(tracker.models[0], CalibratedClassifier)
    assert 0.5 < result.model_accuracy <= 1.0


# --- registered models: published, loaded, refused --------------------------------------------


def _calibrated(estimator, seed: int = 0) -> tuple[CalibratedClassifier, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 4))
    y = (x[:, 0] + 0.3 * rng.normal(size=300) > 0).astype(int)
    estimator.fit(x[:200], y[:200])
    scaler = TemperatureScaling().fit(estimator.predict_proba(x[200:]), y[200:])
    return CalibratedClassifier(estimator, scaler, n_classes=2), x


@pytest.fixture
def registry(mlflow_uri):
    import mlflow

    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_registry_uri(mlflow_uri)
    mlflow.set_experiment("models-tests")  # this store's own: another module may have set another store's
    return mlflow_uri


def test_a_gradient_boosting_model_is_registered_and_loaded_with_its_modules_trusted(registry):
    from experiments.tracking import MlflowTracker
    from serve.registry import UnsafeModelError, load_model
    from loop.exceptions import SchemaError

    cfg = ModelConfig(HGB, {"max_iter": 15})
    model, x = _calibrated(make_estimator(cfg))
    plain = MlflowTracker(registry, "models-hgb-plain", "models-hgb")
    plain.start("refused", params={}, tags={})
    with pytest.raises(SchemaError, match="TreePredictor"):  # not trusted without the config
        plain.publish(model, aliases=("champion",))
    plain.finish(failed=True)
    tracker = MlflowTracker(registry, "models-hgb", "models-hgb", trusted_modules=trusted_modules(cfg))
    tracker.start("hgb", params={}, tags={})
    tracker.publish(model, aliases=("champion",))
    tracker.finish()
    loaded = tracker.load_model("champion")
    np.testing.assert_allclose(loaded.predict_proba(x), model.predict_proba(x))
    # A loader that was not told about the estimator refuses the tree predictors, naming them.
    with pytest.raises(UnsafeModelError, match=r"model\.uri: .*TreePredictor.*model\.estimator"):
        load_model("models:/models-hgb@champion")


def test_a_pickle_flavour_loads_only_when_the_config_allows_it(registry):
    import mlflow
    import mlflow.sklearn

    from serve.registry import UnsafeModelError, load_model

    model, x = _calibrated(make_estimator())
    with mlflow.start_run():
        mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle",
                                 pyfunc_predict_fn="predict_proba", registered_model_name="models-pickled")
    with pytest.raises(UnsafeModelError, match=r"model\.uri: .*flavour sklearn \(cloudpickle\).*"
                                               r"set model\.allow_pickle: true"):
        load_model("models:/models-pickled/1")
    loaded = load_model("models:/models-pickled/1", allow_pickle=True)
    np.testing.assert_allclose(loaded.predict_proba(x), model.predict_proba(x))


def test_a_pyfunc_model_scores_when_allowed_and_its_answer_is_checked(registry):
    import mlflow
    import mlflow.pyfunc

    from loop.exceptions import SchemaError
    from serve.registry import UnsafeModelError, load_model

    class Sigmoid(mlflow.pyfunc.PythonModel):
        def __init__(self, total: float = 1.0):
            self.total = total

        def predict(self, context, model_input, params=None):
            z = np.asarray(model_input, dtype=float)[:, 0]
            p = 1 / (1 + np.exp(-z))
            return self.total * np.c_[1 - p, p]

    with mlflow.start_run():
        mlflow.pyfunc.log_model(name="model", python_model=Sigmoid(), registered_model_name="models-pyfunc")
        mlflow.pyfunc.log_model(name="bad", python_model=Sigmoid(1.01), registered_model_name="models-pyfunc-bad")
    with pytest.raises(UnsafeModelError, match=r"flavour python_function \(cloudpickle\)"):
        load_model("models:/models-pyfunc/1")
    model = load_model("models:/models-pyfunc/1", allow_pickle=True)
    x = np.array([[0.0, 1.0], [2.0, 0.0]])
    np.testing.assert_allclose(model.predict_proba(x)[:, 1], 1 / (1 + np.exp(-x[:, 0])))
    bad = load_model("models:/models-pyfunc-bad/1", allow_pickle=True)
    with pytest.raises(SchemaError, match=r"model\.uri: .*predict must return class probabilities"):
        bad.predict_proba(x)
