"""Serve config YAML: what ``serve deploy`` / ``serve run`` read, written and read back here.

The file holds one application, ``serve.app:build_app``, its :class:`~serve.args.AppArgs`
under ``args``, and the routing thresholds as the Router's ``user_config``. Editing the
thresholds and running ``serve deploy config.yaml`` again changes them on the running Router
(``reconfigure``) without restarting any replica; ``labelloop tune`` writes its best
thresholds this way.

Example of a written file::

    proxy_location: EveryNode
    http_options: {host: 0.0.0.0, port: 8000}
    applications:
    - name: labelloop
      route_prefix: /
      import_path: serve.app:build_app
      args: {model_name: digits, alias: champion, tracking_uri: 'http://mlflow:5000', ...}
      deployments:
      - name: Router
        user_config: {auto_accept_confidence: 0.97, expert_margin: 0.1, ...}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from loop._validation import fail
from loop.exceptions import SchemaError
from loop.routing import RoutingThresholds

from .args import APP_NAME, AppArgs

__all__ = ["IMPORT_PATH", "ROUTER", "ServeConfig", "load_serve_config", "read_serve_config_document",
           "serve_config_document", "write_serve_config"]

IMPORT_PATH = "serve.app:build_app"
ROUTER = "Router"  # the deployment whose user_config holds the thresholds


@dataclass(frozen=True)
class ServeConfig:
    """A Serve config file, read back.

    Attributes
    ----------
    app_args : AppArgs
    thresholds : RoutingThresholds
        The Router's ``user_config`` (else ``args.thresholds``, else the defaults).
    host : str
    port : int
    """

    app_args: AppArgs
    thresholds: RoutingThresholds
    host: str
    port: int


def write_serve_config(path: str | os.PathLike, *, app_args: AppArgs | Mapping[str, Any],
                       thresholds: RoutingThresholds | Mapping[str, Any] | None = None,
                       host: str = "0.0.0.0", port: int = 8000) -> Path:
    """Write a Serve config YAML for the labelloop app.

    Parameters
    ----------
    path : path
        Where to write (parent directories are created).
    app_args : AppArgs or mapping
        What to serve.
    thresholds : RoutingThresholds or mapping, optional
        The Router's ``user_config``; default ``app_args.thresholds`` or the defaults.
    host, port : str, int
        Where Serve's HTTP proxy listens.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    SchemaError
        Invalid ``app_args`` or ``thresholds`` (nothing is written).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "serve.yaml"
    >>> _ = write_serve_config(path, app_args={"model_name": "digits"},
    ...                        thresholds=RoutingThresholds(auto_accept_confidence=0.95))
    >>> load_serve_config(path).thresholds.auto_accept_confidence
    0.95
    """
    document = serve_config_document(app_args, thresholds=thresholds, host=host, port=port)
    _check_schema(document, source=str(path))
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    header = ("# labelloop Serve config: `serve deploy` or `serve run` this file.\n"
              "# The Router's user_config holds the routing thresholds; edit them and deploy again\n"
              "# to change them without restarting replicas.\n")
    target.write_text(header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    return target


def serve_config_document(app_args: AppArgs | Mapping[str, Any], *,
                          thresholds: RoutingThresholds | Mapping[str, Any] | None = None,
                          host: str = "0.0.0.0", port: int = 8000) -> dict[str, Any]:
    """The Serve config of the labelloop app as a plain mapping (what :func:`write_serve_config` writes).

    Parameters are those of :func:`write_serve_config`.

    Returns
    -------
    dict
        A ``ServeDeploySchema`` document: ``proxy_location``, ``http_options``,
        ``applications``.
    """
    args = _app_args(app_args)
    if thresholds is None:
        routing = args.routing_thresholds()
    elif isinstance(thresholds, RoutingThresholds):
        routing = thresholds
    else:
        routing = RoutingThresholds.from_dict(thresholds)
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": int(port)},
        "applications": [{
            "name": APP_NAME,
            "route_prefix": "/",
            "import_path": IMPORT_PATH,
            "args": args.model_dump(mode="json", exclude={"thresholds"}, exclude_none=True),
            "deployments": [{"name": ROUTER, "user_config": routing.to_dict()}],
        }],
    }


def load_serve_config(path: str | os.PathLike) -> ServeConfig:
    """Read a Serve config YAML written by :func:`write_serve_config` (or by hand).

    Raises
    ------
    SchemaError
        The file is not a Serve config, has no ``serve.app:build_app`` application, or its
        args or thresholds are invalid; the message names the field.
    """
    source = Path(path)
    document = read_serve_config_document(source)
    apps = [a for a in document.get("applications", []) if a.get("import_path") == IMPORT_PATH]
    if len(apps) != 1:
        raise fail("applications", f"exactly one application with import_path {IMPORT_PATH!r}",
                   f"{len(apps)} in {str(source)!r}")
    app = apps[0]
    args = _app_args(app.get("args") or {})
    routers = [d for d in app.get("deployments") or [] if d.get("name") == ROUTER]
    user_config = routers[0].get("user_config") if routers else None
    thresholds = (RoutingThresholds.from_dict(user_config) if user_config is not None
                  else args.routing_thresholds())
    http = document.get("http_options") or {}
    return ServeConfig(app_args=args, thresholds=thresholds, host=str(http.get("host", "0.0.0.0")),
                       port=int(http.get("port", 8000)))


def read_serve_config_document(path: str | os.PathLike) -> dict[str, Any]:
    """Read a Serve config YAML and check it against Ray's ``ServeDeploySchema``.

    Raises
    ------
    SchemaError
        Unreadable file, not a mapping, or not a valid Serve config (the field is named).
    """
    source = Path(path)
    try:
        document = yaml.safe_load(source.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise fail("path", "a readable Serve config YAML file", f"{str(source)!r} ({exc})") from None
    if not isinstance(document, dict):
        raise fail("path", "a Serve config YAML mapping", f"{type(document).__name__} in {str(source)!r}")
    _check_schema(document, source=str(source))
    return document


def _app_args(value: AppArgs | Mapping[str, Any]) -> AppArgs:
    if isinstance(value, AppArgs):
        return value
    if not isinstance(value, Mapping):
        raise fail("app_args", "an AppArgs or a mapping of its fields", f"a {type(value).__name__}")
    try:
        return AppArgs.model_validate(dict(value))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = "args." + ".".join(map(str, first["loc"]))
        raise SchemaError(f"The {field!r} argument must be valid: {first['msg']}.") from None


def _check_schema(document: dict[str, Any], *, source: str) -> None:
    # Ray's own schema of a Serve config; imported here so that reading a config for the
    # tuner does not load Ray until it is needed.
    from ray.serve.schema import ServeDeploySchema

    try:
        ServeDeploySchema.model_validate(document)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(map(str, first["loc"]))
        raise SchemaError(f"The {field!r} field of the Serve config {source!r} is invalid: {first['msg']}.") from None
