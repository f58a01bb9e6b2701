"""serve.args and serve.config: the app's arguments and its Serve config YAML."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from loop.exceptions import SchemaError
from loop.routing import RoutingThresholds
from serve.args import AppArgs
from serve.config import IMPORT_PATH, ROUTER, load_serve_config, write_serve_config

pytest.importorskip("ray")


def test_round_trip(tmp_path):
    thresholds = RoutingThresholds(auto_accept_confidence=0.95, expert_margin=0.2, always_human={"7"},
                                   guideline_refs={("3", "5"): "guide §2"})
    args = AppArgs(model_name="digits", tracking_uri="http://mlflow:5000", refresh_seconds=30,
                   class_names=list("abc"))
    path = write_serve_config(tmp_path / "sub" / "serve.yaml", app_args=args, thresholds=thresholds, port=9000)
    loaded = load_serve_config(path)
    assert loaded.app_args == args
    assert loaded.thresholds == thresholds
    assert (loaded.host, loaded.port) == ("0.0.0.0", 9000)
    document = yaml.safe_load(path.read_text())
    app = document["applications"][0]
    assert app["import_path"] == IMPORT_PATH
    assert "thresholds" not in app["args"]  # only in the Router's user_config: changed in place
    assert app["deployments"] == [{"name": ROUTER, "user_config": thresholds.to_dict()}]


def test_thresholds_default_to_the_app_args(tmp_path):
    args = {"model_name": "m", "thresholds": {"expert_margin": 0.3}}
    loaded = load_serve_config(write_serve_config(tmp_path / "s.yaml", app_args=args))
    assert loaded.thresholds == RoutingThresholds(expert_margin=0.3)


@pytest.mark.parametrize(("app_args", "thresholds", "named"), [
    ({"model_name": "m", "colour": "red"}, None, "args.colour"),
    ({"model_name": ""}, None, "args.model_name"),
    ({"model_name": "m", "max_batch_size": 0}, None, "args.max_batch_size"),
    ({"model_name": "m"}, {"auto_accept": 0.9}, "config"),
    ({"model_name": "m"}, {"expert_margin": 2.0}, "expert_margin"),
])
def test_invalid_config_is_refused_and_nothing_is_written(tmp_path, app_args, thresholds, named):
    path = tmp_path / "serve.yaml"
    with pytest.raises(SchemaError, match=named):
        write_serve_config(path, app_args=app_args, thresholds=thresholds)
    assert not path.exists()


def test_load_refuses_what_is_not_a_labelloop_serve_config(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("applications: [{name: other, import_path: 'x.y:app'}]\n")
    with pytest.raises(SchemaError, match="applications"):
        load_serve_config(path)
    path.write_text("applications: 3\n")
    with pytest.raises(SchemaError, match="applications"):
        load_serve_config(path)
    path.write_text("{unclosed\n")
    with pytest.raises(SchemaError, match="path"):
        load_serve_config(path)
    with pytest.raises(SchemaError, match="path"):
        load_serve_config(tmp_path / "missing.yaml")


def test_app_args_validation():
    with pytest.raises(ValidationError, match="unknown keys"):
        AppArgs(model_name="m", thresholds={"nope": 1})
    with pytest.raises(ValidationError, match="distinct"):
        AppArgs(model_name="m", class_names=["a", "a"])
    assert AppArgs(model_name="m", thresholds={"expert_margin": 0.2}).routing_thresholds().expert_margin == 0.2


def test_build_app_takes_the_args_serve_passes():
    # What `serve run serve.app:build_app model_name=m` and a config's `args:` go through.
    from ray.serve import Application
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    from serve.app import build_app

    app = call_user_app_builder_with_args_if_necessary(build_app, {"model_name": "m", "router_replicas": 2})
    assert isinstance(app, Application)
    with pytest.raises(ValidationError):
        call_user_app_builder_with_args_if_necessary(build_app, {"model_nam": "m"})


def test_absolute_sqlite_uri(tmp_path, monkeypatch):
    from serve.local import absolute_sqlite_uri

    monkeypatch.chdir(tmp_path)
    assert absolute_sqlite_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/mlflow.db"
    assert absolute_sqlite_uri(None) is None


def test_app_args_keep_the_thresholds_as_one_object():
    strict = RoutingThresholds(expert_margin=0.3, always_human={"x"})
    assert AppArgs(model_name="m", thresholds=strict).thresholds is strict  # not re-parsed
    parsed = AppArgs(model_name="m", thresholds=strict.to_dict())
    assert parsed.thresholds == strict and parsed.routing_thresholds() is parsed.thresholds
    # Where they leave the process (a Serve config's args) they are the to_dict form again.
    assert parsed.model_dump(mode="json")["thresholds"] == strict.to_dict()
    assert AppArgs(model_name="m").routing_thresholds() == RoutingThresholds()
