"""Serving benchmark: rows scored and routed per second over HTTP, labelloop's Ray Serve app
against ``mlflow models serve`` of the same registered model, in the same run.

One calibrated digits classifier (:class:`loop.calibration.CalibratedClassifier`, logistic
regression + temperature) is published to a temporary MLflow registry as
``models:/serving-bench@champion``. Then, on this machine:

- ``mlflow models serve -m models:/serving-bench@champion --env-manager local`` (uvicorn,
  its default single worker), fed ``/invocations`` with ``{"inputs": [[...]]}`` and with
  ``dataframe_split``; its answer is the probabilities only;
- labelloop's app (:func:`serve.local.start_local`: Router, the HTTP ingress, -> Scorer
  (``@serve.batch``) on a local Ray in Serve's high-throughput mode: HAProxy, gRPC), fed
  ``/v1/route`` in the readable JSON form and in the compact form (base64 float32 features,
  columnar answer), and ``/v1/score`` compact. Its answers carry
  the probabilities or signals *and* the routing decision with its reason.

For 1, 64 and 1,024 rows per request, ``--concurrency`` client threads send pre-encoded
bodies for ``--seconds``, ``--repeats`` times per cell in alternating order (best run kept,
for both servers alike: the machine may be shared); the table gives requests/s, rows/s,
median and 95th-percentile latency and the ratio to the best MLflow form. Every answer must be HTTP 200; before timing, both servers'
probabilities are checked against the model in process. Run::

    .venv/bin/python benchmarks/serving.py                           # about 3 minutes on 2 cores
    .venv/bin/python benchmarks/serving.py --repeats 1 --seconds 2   # quicker, noisier

Target (issue 4): labelloop's throughput at 1,024 rows per request >= 3x MLflow's.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loop.calibration import CalibratedClassifier, TemperatureScaling  # noqa: E402

MODEL_NAME = "serving-bench"
ROWS = (1, 64, 1024)
TARGET_RATIO = 3.0
TARGET_ROWS = 1024


@dataclass(frozen=True)
class Target:
    """One (server, endpoint, payload form)."""

    name: str
    url: str
    body: callable  # rows (n, d) -> bytes
    baseline: bool  # an MLflow form


@dataclass(frozen=True)
class Result:
    target: str
    rows: int
    requests_per_s: float
    rows_per_s: float
    p50_ms: float
    p95_ms: float
    n_requests: int


def train_model(seed: int) -> tuple[CalibratedClassifier, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    with threadpool_limits(1):
        clf = LogisticRegression(C=0.01, max_iter=2000).fit(x[:1000], y[:1000])
    scaler = TemperatureScaling().fit(clf.predict_proba(x[1000:1400]), y[1000:1400])
    return CalibratedClassifier(clf, scaler, n_classes=10), x


def start_mlflow_serve(tracking_uri: str, port: int, workers: int, log: Path) -> subprocess.Popen:
    bin_dir = str(Path(sys.executable).parent)  # it runs `uvicorn` from PATH, as in an activated venv
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    command = [str(Path(sys.executable).with_name("mlflow")), "models", "serve",
               "-m", f"models:/{MODEL_NAME}@champion", "--env-manager", "local",
               "--host", "127.0.0.1", "-p", str(port), "-w", str(workers)]
    process = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).ok:
                return process
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError("mlflow models serve did not answer /ping within 180 s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, 15)  # its own session: uvicorn and its workers
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)


def mlflow_inputs(rows: np.ndarray) -> bytes:
    return json.dumps({"inputs": rows.tolist()}).encode()


def mlflow_split(rows: np.ndarray) -> bytes:
    return json.dumps({"dataframe_split": {"columns": list(range(rows.shape[1])), "data": rows.tolist()}}).encode()


def labelloop_json(rows: np.ndarray) -> bytes:
    return json.dumps({"item_ids": list(range(len(rows))), "features": rows.tolist()}).encode()


def labelloop_compact(rows: np.ndarray) -> bytes:
    data = np.ascontiguousarray(rows, dtype="<f4")
    return json.dumps({"item_ids": list(range(len(rows))), "features_b64": base64.b64encode(data.tobytes()).decode(),
                       "shape": list(data.shape), "dtype": "float32"}).encode()


def load(target: Target, rows: np.ndarray, *, seconds: float, concurrency: int) -> Result:
    """``concurrency`` threads post pre-encoded bodies for ``seconds``; every answer must be 200."""
    n = len(rows)
    bodies = [target.body(np.roll(rows, -i, axis=0)[:n]) for i in range(4)]
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    failures: list[str] = []
    start_gate = threading.Barrier(concurrency + 1)
    stop_at: list[float] = [0.0]

    def worker(k: int) -> None:
        with requests.Session() as session:
            session.headers["Content-Type"] = "application/json"
            for body in bodies[:2]:  # warm the connection and the server path
                session.post(target.url, data=body, timeout=120)
            start_gate.wait()
            i = k
            while time.perf_counter() < stop_at[0]:
                t0 = time.perf_counter()
                answer = session.post(target.url, data=bodies[i % len(bodies)], timeout=120)
                _ = answer.content
                if answer.status_code != 200:
                    failures.append(f"HTTP {answer.status_code}: {answer.text[:200]}")
                    return
                latencies[k].append(time.perf_counter() - t0)
                i += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + 1e9
    start_gate.wait()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"{target.name} at {n} rows: {failures[0]}")
    done = np.concatenate([np.asarray(lat) for lat in latencies])
    return Result(target=target.name, rows=n, requests_per_s=len(done) / elapsed,
                  rows_per_s=len(done) * n / elapsed, p50_ms=1e3 * float(np.median(done)),
                  p95_ms=1e3 * float(np.quantile(done, 0.95)), n_requests=len(done))


def check_answers(model: CalibratedClassifier, x: np.ndarray, mlflow_url: str, serve_url: str) -> str:
    """Both servers return the model's probabilities (to float precision)."""
    from serve.client import ServeClient

    rows = x[:64]
    want = model.predict_proba(rows)
    theirs = requests.post(mlflow_url, data=mlflow_inputs(rows), timeout=60,
                           headers={"Content-Type": "application/json"}).json()["predictions"]
    _, ours = ServeClient(serve_url, dtype="float32").score(np.arange(64), rows)
    gap_theirs = float(np.abs(np.asarray(theirs) - want).max())
    gap_ours = float(np.abs(ours - want).max())
    if max(gap_theirs, gap_ours) > 1e-6:
        raise RuntimeError(f"probabilities differ from the model: mlflow {gap_theirs:.2g}, labelloop {gap_ours:.2g}")
    return f"max |p - model| on 64 rows: mlflow {gap_theirs:.1e}, labelloop {gap_ours:.1e}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed load per run (default 3)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per cell, best kept (default 2)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--mlflow-workers", type=int, default=1, help="uvicorn workers of mlflow models serve "
                        "(default 1, its own default)")
    parser.add_argument("--rows", type=int, nargs="+", default=list(ROWS), help="rows per request")
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args(argv)

    import mlflow

    from serve.local import quiet_port, shutdown_local, start_local
    from serve.registry import publish_model

    root = Path(tempfile.mkdtemp(prefix="llserve"))
    tracking_uri = f"sqlite:///{root}/mlflow.db"
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("serving-bench")
    model, x = train_model(opts.seed)
    version = publish_model(model, model_name=MODEL_NAME, tracking_uri=tracking_uri, input_example=x[:2])
    print(f"model: {model!r}, registered as models:/{MODEL_NAME}/{version} (@champion)")

    mlflow_port = quiet_port()
    mlflow_process = start_mlflow_serve(tracking_uri, mlflow_port, opts.mlflow_workers, root / "mlflow-serve.log")
    try:
        # auth none: the benchmark measures scoring, not the token lookup.
        serve_url = start_local({"model_name": MODEL_NAME, "tracking_uri": tracking_uri, "auth": "none"},
                                ray_temp_dir=root / "ray", port=quiet_port(), num_cpus=os.cpu_count())
        mlflow_url = f"http://127.0.0.1:{mlflow_port}/invocations"
        print(check_answers(model, x, mlflow_url, serve_url))
        targets = [
            Target("mlflow /invocations inputs", mlflow_url, mlflow_inputs, True),
            Target("mlflow /invocations dataframe_split", mlflow_url, mlflow_split, True),
            Target("labelloop /v1/route json", f"{serve_url}/v1/route", labelloop_json, False),
            Target("labelloop /v1/route compact", f"{serve_url}/v1/route", labelloop_compact, False),
            Target("labelloop /v1/score compact", f"{serve_url}/v1/score", labelloop_compact, False),
        ]
        print(f"{os.cpu_count()} cores; {opts.concurrency} client threads; best of {opts.repeats} x "
              f"{opts.seconds:g} s per cell; "
              f"mlflow models serve with {opts.mlflow_workers} worker(s); labelloop app: Router (ingress) "
              "and Scorer (max_batch_size 16), 1 replica each, on a local Ray, HAProxy\n")
        results = []
        for n in opts.rows:
            rows = np.resize(x, (n, x.shape[1])).astype(np.float64)
            # The machine is shared: each cell runs --repeats times, in alternating order so
            # that neither server always goes first, and keeps its best run.
            trials: dict[str, list[Result]] = {t.name: [] for t in targets}
            for repeat in range(opts.repeats):
                for target in targets if repeat % 2 == 0 else targets[::-1]:
                    trials[target.name].append(load(target, rows, seconds=opts.seconds,
                                                    concurrency=opts.concurrency))
            results.extend(max(trials[t.name], key=lambda r: r.rows_per_s) for t in targets)
        met = report(results)
    finally:
        stop(mlflow_process)
        shutdown_local()
        shutil.rmtree(root, ignore_errors=True)
    return 0 if met else 1


def report(results: list[Result]) -> bool:
    header = f"{'rows/req':>8}  {'server, endpoint, payload':<38} {'req/s':>8} {'rows/s':>10} {'p50 ms':>8} {'p95 ms':>8} {'x mlflow':>8}"
    print(header)
    print("-" * len(header))
    met = True
    for n in sorted({r.rows for r in results}):
        cell = [r for r in results if r.rows == n]
        best_mlflow = max(r.rows_per_s for r in cell if r.target.startswith("mlflow"))
        for r in cell:
            ratio = r.rows_per_s / best_mlflow
            print(f"{n:>8}  {r.target:<38} {r.requests_per_s:>8.1f} {r.rows_per_s:>10.0f} {r.p50_ms:>8.1f} "
                  f"{r.p95_ms:>8.1f} {ratio:>8.2f}")
        if n == TARGET_ROWS:
            best = max(r.rows_per_s for r in cell if r.target.startswith("labelloop"))
            route_best = max(r.rows_per_s for r in cell if r.target.startswith("labelloop /v1/route"))
            met = route_best >= TARGET_RATIO * best_mlflow
            print(f"\ntarget at {n} rows/request: labelloop route >= {TARGET_RATIO:g}x the best MLflow form: "
                  f"{route_best / best_mlflow:.2f}x (score: {best / best_mlflow:.2f}x) -> "
                  f"{'MET' if met else 'NOT MET'}")
        print()
    return met


if __name__ == "__main__":
    sys.exit(main())
