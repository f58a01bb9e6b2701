"""The Serve app's edge, hardened, over real HTTP in Serve's high-throughput mode (HAProxy in
front, gRPC between replicas, as serve.local starts it), against a real MLflow registry.

Requests past gRPC's 4 MiB message are served whole; label codes past int64, booleans and
strings where numbers belong get 400; bodies that are not JSON get 415 (a cross-site form cannot
reload the model) and oversized ones 413 before they are read; a pickle-flavour version is
refused by the poller and by POST /v1/reload alike while the old one keeps serving; and nothing
the app starts listens beyond 127.0.0.1.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import re
import socket
import subprocess
import time
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests

pytest.importorskip("ray")
pytest.importorskip("mlflow")

from sklearn.datasets import load_digits  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from serve.client import ServeClient  # noqa: E402

pytestmark = pytest.mark.slow

MODEL = "digits-hardening"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def app(ray_serve, tmp_path_factory):
    """Version 1 as champion; the app polls the alias every second. Scoring needs no token
    (``auth: none``); reload is admin-only, so ServeClient sends an admin token
    (``$LABELLOOP_TOKEN``) and raw reload requests carry ``app["admin"]``."""
    import os

    from loop.store import LabelStore
    from serve.client import TOKEN_ENV_VAR

    tokens_url = f"sqlite:///{tmp_path_factory.mktemp('tokens')}/tokens.db"
    with LabelStore(tokens_url) as tokens:
        admin = tokens.issue_token("hardening-tests", "admin")
    before = os.environ.get(TOKEN_ENV_VAR)
    os.environ[TOKEN_ENV_VAR] = admin
    try:
        yield {**_app(ray_serve, tmp_path_factory, {"auth": "none", "store_url": tokens_url}),
               "admin": {"Authorization": f"Bearer {admin}"}}
    finally:
        if before is None:
            os.environ.pop(TOKEN_ENV_VAR, None)
        else:
            os.environ[TOKEN_ENV_VAR] = before


def _app(ray_serve, tmp_path_factory, auth):
    import mlflow

    from serve.local import start_local
    from serve.registry import publish_model

    x, y = load_digits(return_X_y=True)
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("hardening", artifact_location=str(root / "artifacts"))
    mlflow.set_experiment("hardening")
    with threadpool_limits(1):
        model = LogisticRegression(C=0.01, max_iter=500).fit(x, y)
    version = publish_model(model, model_name=MODEL, tracking_uri=uri)
    url = start_local({"model_name": MODEL, "tracking_uri": uri, "refresh_seconds": 1.0, **auth}, port=ray_serve.port)
    return {"url": url, "uri": uri, "x": x, "model": model, "version": version}


def _rows(x: np.ndarray, n: int) -> np.ndarray:
    return np.resize(x, (n, x.shape[1]))


# ----------------------------------------------------------------------------- past gRPC's 4 MiB

@pytest.mark.parametrize(("n", "compact", "dtype"), [
    (8192, False, None),          # 8,192 x 64 float64: 4.2 MB to the Scorer, once a 500
    (16500, True, "float64"),     # 8.4 MB
    (16500, True, "float32"),     # 4.2 MB, once a 500
    (65536, True, "float32"),     # the documented limit, max_rows_per_request
    (65536, True, "float64"),     # and as ServeClient sends it by default: a 45 MB body
])
def test_requests_past_grpcs_message_limit_are_served_whole(app, n, compact, dtype):
    x = _rows(app["x"], n)
    ids = list(range(n))
    if compact:
        body = {"item_ids": ids, "features_b64": base64.b64encode(x.astype(np.dtype(dtype).newbyteorder("<"))
                                                                   .tobytes()).decode(),
                "shape": [n, 64], "dtype": dtype, "return_probabilities": True}
    else:
        body = {"item_ids": ids, "features": x.tolist(), "labels": [i % 10 for i in range(n)],
                "return_probabilities": True}
    answer = requests.post(app["url"] + "/v1/route", data=json.dumps(body), headers=JSON, timeout=300)
    assert answer.status_code == 200, answer.text[:300]
    got = answer.json()
    assert got["n_items"] == n and got["model"]["version"] == app["version"]
    if compact:
        assert got["columns"]["item_id"] == ids
        p = got["arrays"]["probabilities"]
        probs = np.frombuffer(base64.b64decode(p["b64"]), "<f8").reshape(p["shape"])
    else:
        assert [item["item_id"] for item in got["items"]] == ids
        probs = np.array([item["probabilities"] for item in got["items"]])
    want = app["model"].predict_proba(x.astype(dtype or np.float64))
    np.testing.assert_allclose(probs, want, rtol=1e-9, atol=1e-12)


def test_a_bad_label_deep_in_a_split_request_is_named_by_its_row(app):
    n = 8192
    labels = [0] * n
    labels[5000] = 10  # beyond the model's classes, in the third part
    answer = requests.post(app["url"] + "/v1/score", headers=JSON, timeout=120, data=json.dumps(
        {"item_ids": list(range(n)), "features": _rows(app["x"], n).tolist(), "labels": labels}))
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "labels.5000"


# ----------------------------------------------------------------------------- bad numbers are 400

@pytest.mark.parametrize("path", ["/v1/score", "/v1/route"])
@pytest.mark.parametrize(("body", "field"), [
    (b'{"item_ids": [1, 2], "features": [[0.0], [0.0]], "labels": [0, 9223372036854775808]}', "labels.1"),
    (b'{"item_ids": [1], "features": [[0.0]], "labels": [18446744073709551616]}', "labels.0"),
    (b'{"item_ids": [1], "features": [[true]]}', "features.0.0"),
    (b'{"item_ids": [1], "features": [["1.5"]]}', "features.0.0"),
    (b'{"item_ids": [1], "features": [[0.0]], "labels": [false]}', "labels.0"),
])
def test_label_overflow_booleans_and_strings_are_400(app, path, body, field):
    answer = requests.post(app["url"] + path, data=body, headers=JSON, timeout=30)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == field


def test_probabilities_that_are_booleans_are_400(app):
    answer = requests.post(app["url"] + "/v1/route", headers=JSON, timeout=30,
                           data=b'{"item_ids": [1], "probabilities": [[true, false]]}')
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "probabilities.0.0"


# ----------------------------------------------------------------------------- JSON only, and not too much of it

@pytest.mark.parametrize(("path", "headers", "data"), [
    ("/v1/reload", {}, None),
    ("/v1/reload", {"Content-Type": "application/x-www-form-urlencoded"}, b"a=1"),  # a cross-site form
    ("/v1/reload", {"Content-Type": "text/plain"}, b"{}"),
    ("/v1/route", {"Content-Type": "text/plain"}, b'{"item_ids": [1], "features": [[0.0]]}'),
    ("/v1/score", {"Content-Type": "multipart/form-data; boundary=x"}, b"--x--"),
])
def test_a_post_that_is_not_json_is_415(app, path, headers, data):
    answer = requests.post(app["url"] + path, headers=headers, data=data, timeout=30)
    assert answer.status_code == 415, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["error"]["field"] == "Content-Type"


def test_reload_with_json_still_works(app):
    answer = requests.post(app["url"] + "/v1/reload", headers={**JSON, **app["admin"]}, data=b"{}", timeout=60)
    assert answer.status_code == 200 and answer.json()["version"] == app["version"]
    assert ServeClient(app["url"]).reload()["changed"] is False


def _raw_post(url: str, head: dict[str, str], chunks, *, read_timeout: float = 60) -> tuple[int, dict]:
    """POST with hand-written framing; stops sending when the server answers or closes."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=read_timeout) as conn:
        lines = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.hostname}:{parts.port}",
                 *(f"{k}: {v}" for k, v in head.items()), "", ""]
        conn.sendall("\r\n".join(lines).encode())
        sent = 0
        try:
            for chunk in chunks:
                conn.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the server answered and closed: read what it said
        received = b""
        while b"\r\n\r\n" not in received or len(received.split(b"\r\n\r\n", 1)[1]) < _length(received):
            data = conn.recv(65536)
            if not data:
                break
            received += data
    status = int(received.split(b" ", 2)[1])
    return status, json.loads(received.split(b"\r\n\r\n", 1)[1][:_length(received)])


def _length(received: bytes) -> int:
    found = re.search(rb"(?i)content-length: *(\d+)", received)
    return int(found.group(1)) if found else 1 << 30


def test_a_declared_body_over_the_limit_is_413_without_reading_it(app):
    from serve.args import AppArgs

    limit = AppArgs(model_name="x").max_body_bytes
    # 69 MB declared, 1 byte sent: the answer comes without the body.
    status, body = _raw_post(app["url"] + "/v1/route", {**JSON, "Content-Length": str(69_000_000)}, [b"{"])
    assert status == 413 and body["error"]["field"] == "body" and str(limit) in body["error"]["message"]


def test_a_chunked_body_over_the_limit_is_413(app):
    from serve.args import AppArgs

    limit = AppArgs(model_name="x").max_body_bytes
    block = b"x" * (1 << 20)
    frame = f"{len(block):x}\r\n".encode() + block + b"\r\n"
    chunks = [frame] * (limit // len(block) + 8)  # 8 MiB past the limit, without Content-Length
    status, body = _raw_post(app["url"] + "/v1/route", {**JSON, "Transfer-Encoding": "chunked"}, chunks)
    assert status == 413 and body["error"]["field"] == "body"


# ----------------------------------------------------------------------------- pickles do not load

def test_a_pickle_version_is_refused_by_the_poller_and_by_reload(app):
    """Registry write access plus an open /v1/reload is not code execution: the alias moved to a
    cloudpickle version is refused by the poller and by POST /v1/reload alike, naming the
    flavour, and the old version keeps serving."""
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(app["uri"])
    mlflow.set_registry_uri(app["uri"])
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(app["model"], name="model", serialization_format="cloudpickle",
                                        pyfunc_predict_fn="predict_proba", registered_model_name=MODEL)
    registry = MlflowClient(tracking_uri=app["uri"], registry_uri=app["uri"])
    registry.set_registered_model_alias(MODEL, "champion", str(info.registered_model_version))
    client = ServeClient(app["url"])
    try:
        time.sleep(3.5)  # three polls
        assert client.model()["version"] == app["version"]
        answer = requests.post(app["url"] + "/v1/reload", headers={**JSON, **app["admin"]}, data=b"{}", timeout=60)
        assert answer.status_code == 503
        error = answer.json()["error"]
        assert error["field"] == "model" and "flavour sklearn (cloudpickle)" in error["message"]
        assert "allow_pickle" in error["message"]
        assert client.model()["version"] == app["version"]
        assert client.route([1], app["x"][:1])["route"].size == 1
    finally:
        registry.set_registered_model_alias(MODEL, "champion", app["version"])


# ----------------------------------------------------------------------------- what listens where

def _listeners() -> list[tuple[str, int, set[int]]]:
    """(address, port, pids) of every listening TCP socket, from ``ss -ltnpH``."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        fields = line.split()
        address, _, port = fields[3].rpartition(":")
        rows.append((address, int(port), {int(p) for p in re.findall(r"pid=(\d+)", line)}))
    return rows


def _pids(pattern: str) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if re.search(pattern.encode(), f.read()):
                        found.add(int(entry))
            except OSError:
                continue
    return found


def test_nothing_the_app_starts_listens_beyond_the_configured_host(app, ray_serve):
    """HAProxy (frontend, stats, metrics) and the Router's HTTP server listen on 127.0.0.1 only;
    HAProxy's admin socket is this user's alone, and its error page is JSON.

    Not counted: each Serve replica's gRPC servers (replica to replica), which Ray 2.56 binds to
    ``[::]:0`` in ``ray/serve/_private/replica.py`` with no setting: a team firewalls the node, as
    Ray's docs ask for every Ray port."""
    import stat

    assert ray_serve.host == "127.0.0.1"
    folder = os.path.dirname(os.environ["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"])  # Ray adds /<node id>/
    haproxy = _pids(re.escape(folder + "/") + r"\w+/haproxy\.cfg")
    replicas = _pids(r"ServeReplica:labelloop")
    assert haproxy and replicas
    listening = _listeners()
    seen = [(a, p) for a, p, pids in listening if pids & haproxy]
    ports = {int(os.environ["RAY_SERVE_HAPROXY_STATS_PORT"]), int(os.environ["RAY_SERVE_HAPROXY_METRICS_PORT"]),
             ray_serve.port}
    assert ports <= {p for _, p in seen}, seen
    assert all(a == "127.0.0.1" for a, _ in seen), seen
    http = [(a, p) for a, p, pids in listening if pids & replicas and a != "[::]" and a != "*"]
    assert http and all(a == "127.0.0.1" for a, _ in http), http
    # What is left on the replicas is Ray's: IPv6 "any" sockets (ss shows "*" or "[::]"), never
    # an IPv4 0.0.0.0 of ours.
    wild = [(a, p) for a, p, pids in listening if pids & replicas and a not in ("127.0.0.1",)]
    assert all(a in ("[::]", "*") for a, _ in wild), wild
    assert not [(a, p) for a, p, pids in listening if pids & (haproxy | replicas) and a == "0.0.0.0"]
    (socket_path,) = glob.glob(os.path.join(folder, "*", "admin.sock"))
    assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    # HAProxy's own 500 (no replica answered) is the JSON error shape too.
    (page,) = glob.glob(os.path.join(folder, "*", "500.http"))
    head, _, body = open(page, "rb").read().partition(b"\r\n\r\n")
    assert b"application/json" in head and "error" in json.loads(body)
