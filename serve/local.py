"""Run the Serve app on this machine: a local Ray, Serve's HTTP proxy, the app, a health check.

The program (``labelloop demo``, ``labelloop run`` with ``serve: local``) uses these; a team
points the program at a cluster's URL instead (``serve deploy config.yaml``, see
:mod:`serve.config`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import requests

from .args import APP_NAME, AppArgs
from .exceptions import ServiceUnavailable

__all__ = ["absolute_sqlite_uri", "shutdown_local", "start_local"]


def start_local(app_args: AppArgs | dict[str, Any], *, ray_temp_dir: str | os.PathLike | None = None,
                port: int = 8000, host: str = "127.0.0.1", num_cpus: int | None = None,
                timeout_s: float = 180.0) -> str:
    """Start (or reuse) a local Ray and Serve, deploy the app, wait until it answers.

    Parameters
    ----------
    app_args : AppArgs or mapping
        What to serve (see :class:`serve.args.AppArgs`). Relative ``sqlite:///`` URIs are made
        absolute against the current directory, since replicas may run elsewhere.
    ray_temp_dir : path, optional
        Ray's session directory (keep it short: unix socket paths must be < 108 characters).
    port, host : int, str
        Where Serve's HTTP proxy listens. When Serve already runs (a test session, a notebook),
        its existing address is used and these are ignored.
    num_cpus : int, optional
        CPUs Ray may use when it is started here; default all of this machine's.
    timeout_s : float, default=180
        How long to wait for the app to answer ``GET /v1/health``.

    Returns
    -------
    str
        The base URL, e.g. ``"http://127.0.0.1:8000"``; give it to
        :class:`serve.client.ServeClient`.

    Raises
    ------
    ServiceUnavailable
        The app did not answer in time.

    Notes
    -----
    The app answers before a champion exists (``/v1/health`` is 503 with status
    ``"no_model"``, scoring is 503): register a version, set the alias, then
    ``ServeClient(url).reload()``.
    """
    import ray
    from ray import serve
    from ray.serve.context import _get_global_client

    from .app import build_app

    args = app_args if isinstance(app_args, AppArgs) else AppArgs.model_validate(app_args)
    args = args.model_copy(update={"tracking_uri": absolute_sqlite_uri(args.tracking_uri),
                                   "registry_uri": absolute_sqlite_uri(args.registry_uri)})
    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 _temp_dir=None if ray_temp_dir is None else str(ray_temp_dir))
    serve.start(http_options={"host": host, "port": port})
    # serve.start keeps the HTTP options of a Serve that already runs; ask it where it listens.
    http = _get_global_client().http_config
    base_url = f"http://{http.host}:{http.port}"
    serve.run(build_app(args), name=APP_NAME, route_prefix="/")
    wait_until_answering(base_url, timeout_s=timeout_s)
    return base_url


def shutdown_local() -> None:
    """Shut down Serve and the local Ray started by :func:`start_local` (no-op when not running)."""
    import ray
    from ray import serve

    if ray.is_initialized():
        serve.shutdown()
        ray.shutdown()


def wait_until_answering(base_url: str, *, timeout_s: float = 60.0) -> int:
    """Poll ``GET /v1/health`` until the app answers (200 with a model, 503 without).

    Returns
    -------
    int
        The last HTTP status (200 or 503).
    """
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            answer = requests.get(f"{base_url}/v1/health", timeout=5)
            if answer.status_code in (200, 503) and "status" in answer.json():
                return answer.status_code
            last = f"HTTP {answer.status_code}"
        except (requests.RequestException, ValueError) as exc:
            last = type(exc).__name__
        time.sleep(0.25)
    raise ServiceUnavailable(f"The Serve app at {base_url} did not answer /v1/health within "
                             f"{timeout_s:g} s (last: {last}).")


def absolute_sqlite_uri(uri: str | None) -> str | None:
    """``sqlite:///mlflow.db`` -> ``sqlite:////abs/dir/mlflow.db``; other URIs unchanged.

    Examples
    --------
    >>> absolute_sqlite_uri("http://mlflow:5000")
    'http://mlflow:5000'
    >>> absolute_sqlite_uri("sqlite:////tmp/m.db")
    'sqlite:////tmp/m.db'
    """
    prefix = "sqlite:///"
    if uri is None or not uri.startswith(prefix) or uri.startswith(prefix + "/"):
        return uri
    path = uri[len(prefix):]
    if path in ("", ":memory:"):
        return uri
    return prefix + str(Path(path).resolve())
