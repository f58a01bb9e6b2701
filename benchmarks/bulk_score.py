"""Bulk scoring benchmark: ``labelloop score`` (Ray Data) rows/s against in-process
``predict_proba`` on one core, in the same run, at 10^4, 10^5 and 10^6 rows.

One calibrated classifier (:class:`loop.calibration.CalibratedClassifier` around labelloop's
built-in model, standardised logistic regression, plus temperature; or ``--estimator`` for
another) is trained on synthetic data (``--features`` features, ``--classes`` classes) and
published to a temporary MLflow registry. For each size a pool is written to Parquet in a
temporary directory (in row groups of 100,000, so memory stays small at 10^6), then:

- **peer**: ``model.predict_proba`` over the pool in process, one BLAS thread
  (``threadpool_limits(1)``), the features already in memory: the model's own cost, in CPU
  seconds of its one core (on a shared machine the wall clock also counts the others' work);
- **same work, one core**: :class:`experiments.score.BulkScorer` called in process on the
  same batches: probabilities, signals, routes with their reasons, the Arrow table; what each
  Ray actor does, without Ray or Parquet (CPU seconds too);
- **labelloop score**: :func:`experiments.score.main` on a local Ray with ``--cpus`` CPUs
  (started once, before the clock), reading the Parquet pool and writing the scored Parquet
  (the store's predictions table is left out here; its write is timed once, at 10^4 rows).

The table gives rows/s; the cores labelloop score used (CPU seconds of this process and every
process below it, Ray's included, read from /proc, over the wall time: on a shared machine the
CPUs Ray was given are not the CPU it got); rows/s per core used (rows per CPU second), its
ratio to the peer's rows/s on its one core; and the growth of the time from one size to the
next (10 = linear).
A breakdown of the one-core work at 10^5 rows says where the time goes. Run::

    .venv/bin/python benchmarks/bulk_score.py            # about 2 minutes on 2 cores
    .venv/bin/python benchmarks/bulk_score.py --sizes 10000 100000 --repeats 1

Target (issue 10): labelloop score at least 50% of in-process predict_proba's rows/s per
core used, and linear growth.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loop.calibration import CalibratedClassifier, TemperatureScaling  # noqa: E402

MODEL_NAME = "bulk-bench"
SIZES = (10_000, 100_000, 1_000_000)
ROW_GROUP = 100_000
TARGET_RATIO = 0.5
BREAKDOWN_BATCHES = 12  # about 10^5 rows
ACTOR_EXIT_SECONDS = 5.0


def train_model(features: int, classes: int, estimator: str | None, seed: int) -> CalibratedClassifier:
    from threadpoolctl import threadpool_limits

    from experiments.config import ModelConfig
    from experiments.models import make_estimator

    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, features))
    y = rng.integers(0, classes, 6000)
    x = centers[y] + 1.5 * rng.normal(size=(6000, features))
    with threadpool_limits(1):
        model = make_estimator(ModelConfig(estimator)).fit(x[:5000], y[:5000])
    scaler = TemperatureScaling().fit(model.predict_proba(x[5000:]), y[5000:])
    return CalibratedClassifier(model, scaler, n_classes=classes), centers


def write_pool(path: Path, n: int, centers: np.ndarray, seed: int) -> None:
    """``item_id, f0 .. f{d-1}, label`` in row groups of ROW_GROUP rows (a tenth without a label)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    k, d = centers.shape
    writer = None
    for start in range(0, n, ROW_GROUP):
        m = min(ROW_GROUP, n - start)
        y = rng.integers(0, k, m)
        x = centers[y] + 1.5 * rng.normal(size=(m, d))
        label = np.where(rng.random(m) < 0.1, None, np.where(rng.random(m) < 0.1, rng.integers(0, k, m), y))
        table = pa.table({"item_id": pa.array(np.arange(start, start + m)),
                          **{f"f{j}": pa.array(x[:, j]) for j in range(d)},
                          "label": pa.array(label.tolist(), type=pa.int64())})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=ROW_GROUP)
    writer.close()


def cpu_seconds(ray_dir: Path) -> float:
    """CPU seconds used so far by this process, Ray's processes (those started with ``ray_dir``,
    its temp dir, on their command line: GCS, raylet...) and every process below them (workers,
    actors), from /proc: user + system time of each, plus that of the children each has reaped
    (so actors that have exited still count, through the raylet that reaped them)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    roots = {os.getpid()}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = sum(int(v) for v in fields[11:15]) / tick  # utime stime cutime cstime
        if str(ray_dir).encode() in command:
            roots.add(int(entry))
    mine, frontier = set(roots), list(roots)
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in mine:
                mine.add(pid)
                frontier.append(pid)
    return sum(times.get(pid, 0.0) for pid in mine)


def batches(path: Path) -> list[pd.DataFrame]:
    import pyarrow.parquet as pq

    return [b.to_pandas() for b in pq.ParquetFile(path).iter_batches(batch_size=8192)]


def time_peer(model: CalibratedClassifier, frames: list[pd.DataFrame], features: list[str]) -> float:
    from threadpoolctl import threadpool_limits

    xs = [f[features].to_numpy(dtype=np.float64) for f in frames]
    with threadpool_limits(1):
        started = time.process_time()
        for x in xs:
            model.predict_proba(x)
        return time.process_time() - started


def time_one_core(scorer, frames: list[pd.DataFrame]) -> float:
    started = time.process_time()
    for frame in frames:
        scorer(frame)
    return time.process_time() - started


class Identity:
    """A map_batches callable that returns its batch: what Ray Data costs without any scoring."""

    def __init__(self, **_: object) -> None:
        pass

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return batch


def time_floor(pool: Path, out: Path, features: list[str], ray_dir: Path) -> tuple[float, float]:
    """Wall and CPU seconds of Ray Data reading the pool, an identity ``map_batches`` on the
    actors of ``labelloop score`` (same batch size, CPUs, concurrency) and writing Parquet."""
    from experiments import score

    columns = score.PoolColumns("item_id", "label", tuple(features))
    batch_size = int(np.clip(2_000_000 // len(features), 4096, 65536))
    cpu, started = cpu_seconds(ray_dir), time.perf_counter()
    score._run_ray(pool, out, Identity, {}, columns, batch_size=batch_size, num_cpus=0.5, concurrency=None)
    wall = time.perf_counter() - started
    time.sleep(ACTOR_EXIT_SECONDS)
    return wall, cpu_seconds(ray_dir) - cpu


def time_io_floor(pool: Path, model: CalibratedClassifier, features: list[str], repeats: int) -> dict[str, float]:
    """CPU seconds (best of ``repeats``, at least 3, one thread) of what any Parquet-to-Parquet
    scorer must do besides ``predict_proba``, with nothing else: read the pool, put its features in
    one array, write the probabilities and the ids. No routing, no reasons, no Ray. (The first read
    in a fresh process costs several times the next ones: 5.5 s against 0.7 s of CPU at 10^6 rows.)"""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from threadpoolctl import threadpool_limits

    def best(step):
        times = []
        for _ in range(max(repeats, 3)):
            started = time.process_time()
            out = step()
            times.append(time.process_time() - started)
        return min(times), out

    threads = pa.cpu_count()
    pa.set_cpu_count(1)
    try:
        with threadpool_limits(1), tempfile.TemporaryDirectory(prefix="io-floor", dir=pool.parent) as out_dir:
            read, table = best(lambda: pq.read_table(pool, use_threads=False))
            convert, x = best(lambda: np.column_stack([table.column(f).to_numpy() for f in features]))
            probs = model.predict_proba(x)
            scored = pa.table({"item_id": table.column("item_id"),
                               **{f"p{j}": pa.array(probs[:, j]) for j in range(probs.shape[1])}})
            write, _ = best(lambda: pq.write_table(scored, Path(out_dir) / "probs.parquet"))
    finally:
        pa.set_cpu_count(threads)
    return {"read the pool": read, "features to one array": convert, "write ids and probabilities": write}


def breakdown(model, scorer, frame: pd.DataFrame, features: list[str]) -> dict[str, float]:
    """CPU seconds per stage of BulkScorer's work on one frame, one core (wall time is noise on a shared machine)."""
    from threadpoolctl import threadpool_limits

    from loop.columns import NO_LABEL
    from loop.routing import route, score_items

    x = frame[features].to_numpy(dtype=np.float64)
    out: dict[str, float] = {}
    with threadpool_limits(1):
        t = time.process_time()
        x = frame[features].to_numpy(dtype=np.float64)
        out["features to numpy"] = time.process_time() - t
        t = time.process_time()
        probs = model.predict_proba(x)
        out["predict_proba"] = time.process_time() - t
        t = time.process_time()
        codes = scorer._label_codes(frame["label"])
        out["label codes"] = time.process_time() - t
        t = time.process_time()
        scores = score_items(probs, item_ids=frame["item_id"].to_numpy(), labels=codes, classes=scorer.classes)
        out["score_items"] = time.process_time() - t
        t = time.process_time()
        scores["label"] = np.where(codes == NO_LABEL, None, scorer.classes[np.maximum(codes, 0)])
        route(scores, scorer.thresholds)
        out["route (reasons)"] = time.process_time() - t
        t = time.process_time()
        scorer(frame)
        out["whole call"] = time.process_time() - t
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--estimator", default=None, help="model.estimator (default: the built-in model)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs Ray gets (cores used)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per size; the best is kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--floor", action="store_true",
                        help="also time Ray Data alone (identity map_batches) at the largest size")
    parser.add_argument("--io-floor", action="store_true",
                        help="also time reading and writing Parquet alone (pyarrow, one thread) at the largest size")
    args = parser.parse_args()

    import logging

    import mlflow

    from experiments import score
    from experiments.config import ModelConfig, parse_config
    from experiments.models import trusted_modules
    from serve.local import init_ray
    from serve.registry import publish_model

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    model, centers = train_model(args.features, args.classes, args.estimator, args.seed)
    features = [f"f{j}" for j in range(args.features)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bulk", dir="/tmp") as tmp:
        tmp = Path(tmp)
        uri = f"sqlite:///{tmp}/mlflow.db"
        os.chdir(tmp)  # MLflow's artifacts land here
        version = publish_model(model, model_name=MODEL_NAME, tracking_uri=uri,
                                trusted_modules=trusted_modules(ModelConfig(args.estimator)))
        cfg = parse_config({"program": {"name": "bulk-bench"},
                            "model": {"estimator": args.estimator} if args.estimator else {},
                            "tracking": {"uri": uri, "registered_model": MODEL_NAME},
                            "store": {"url": f"sqlite:///{tmp}/labels.db"}})
        init_ray(num_cpus=args.cpus, temp_dir=tmp / "ray", log_to_driver=False)
        scorer = score.BulkScorer(model, score.PoolColumns("item_id", "label", tuple(features)),
                                  [str(c) for c in range(args.classes)], cfg.thresholds, f"{MODEL_NAME}/{version}")
        stages = None
        for n in args.sizes:
            pool = tmp / f"pool-{n}.parquet"
            write_pool(pool, n, centers, args.seed + n)
            frames = batches(pool)
            peer = min(time_peer(model, frames, features) for _ in range(args.repeats))
            one_core = min(time_one_core(scorer, frames) for _ in range(args.repeats))
            if stages is None and n >= 100_000:
                stages = breakdown(model, scorer, pd.concat(frames[:BREAKDOWN_BATCHES], ignore_index=True), features)
            del frames
            bulk = []
            for r in range(args.repeats):
                cpu = cpu_seconds(tmp / "ray")
                result = score.main(cfg, pool, tmp / f"scored-{n}-{r}", store=False)
                time.sleep(ACTOR_EXIT_SECONDS)  # the run's actors exit and are reaped: their CPU counts
                bulk.append((result.score_seconds, cpu_seconds(tmp / "ray") - cpu))
                assert result.rows == n
            wall, cpu = min(bulk)
            rows.append({"rows": n, "peer s": peer, "one-core s": one_core, "score s": wall, "score cpu s": cpu})
            print(f"  {n:>9,} rows: predict_proba {peer:.2f} s, same work on one core {one_core:.2f} s, "
                  f"labelloop score {wall:.2f} s ({cpu:.1f} CPU s)", flush=True)
        floor = None
        if args.floor:
            n = args.sizes[-1]
            floor = (n, *min(time_floor(tmp / f"pool-{n}.parquet", tmp / f"floor-{n}-{r}", features, tmp / "ray")
                             for r in range(args.repeats)))
        io_floor = None
        if args.io_floor:
            # In a process of its own: this one runs Ray's driver threads, whose CPU process_time counts.
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                io_floor = (args.sizes[-1], pool.submit(time_io_floor, tmp / f"pool-{args.sizes[-1]}.parquet", model,
                                                        features, args.repeats).result())
        stored = score.main(cfg, tmp / f"pool-{args.sizes[0]}.parquet", tmp / "scored-store", store=True)
        import ray

        ray.shutdown()
    table = pd.DataFrame(rows)
    table["predict_proba rows/s"] = table["rows"] / table["peer s"]
    table["one-core rows/s"] = table["rows"] / table["one-core s"]
    table["score rows/s"] = table["rows"] / table["score s"]
    table["cores used"] = table["score cpu s"] / table["score s"]
    table["score rows/s per core"] = table["rows"] / table["score cpu s"]
    table["ratio per core"] = table["score rows/s per core"] / table["predict_proba rows/s"]
    table["growth"] = table["score s"] / table["score s"].shift(1)
    show = table[["rows", "predict_proba rows/s", "one-core rows/s", "score rows/s", "cores used",
                  "score rows/s per core", "ratio per core", "growth"]]
    model_name = args.estimator or "built-in logistic regression"
    print(f"\nbulk scoring: {args.features} features, {args.classes} classes, {model_name} + temperature; "
          f"labelloop score on {args.cpus} CPUs (Ray Data), best of {args.repeats}")
    print(show.to_string(index=False, float_format=lambda v: f"{v:,.2f}" if v < 100 else f"{v:,.0f}"))
    if stages:
        total = stages.pop("whole call")
        print(f"\none core, {BREAKDOWN_BATCHES * 8192:,} rows, where the time goes "
              f"(whole call {total * 1000:.0f} ms):")
        for name, seconds in stages.items():
            print(f"  {name:<18} {seconds * 1000:8.1f} ms  {seconds / total:6.1%}")
    print(f"\nthe store's predictions table: {stored.rows:,} rows in {stored.store_seconds:.1f} s "
          f"({stored.rows / stored.store_seconds:,.0f} rows/s)")
    if floor:
        n, wall, cpu = floor
        peer = table.set_index("rows").loc[n, "predict_proba rows/s"]
        print(f"\nRay Data alone (read Parquet, identity map_batches, write Parquet), {n:,} rows: {wall:.1f} s, "
              f"{cpu:.1f} CPU s, {n / cpu:,.0f} rows per CPU s = {n / cpu / peer:.2f} of predict_proba's rows/s: "
              f"the highest ratio per core any scoring on Ray Data could reach")
    if io_floor:
        n, steps = io_floor
        peer = table.set_index("rows").loc[n, "peer s"]
        print(f"\nParquet in and out alone (pyarrow, one thread, no Ray, no routing), {n:,} rows, CPU s:")
        for name, seconds in steps.items():
            print(f"  {name:<28} {seconds:6.3f}  {seconds / peer:5.2f}x predict_proba")
        print(f"the highest ratio per core any scorer that reads and writes Parquet could reach: "
              f"{peer / (peer + sum(steps.values())):.2f}")
    met = (table["ratio per core"] >= TARGET_RATIO).all()
    growth = table["growth"].dropna()
    print(f"target: ratio per core >= {TARGET_RATIO} at every size: {'met' if met else 'missed'}; "
          f"growth per 10x rows {', '.join(f'{g:.1f}' for g in growth)} (10 = linear)")


if __name__ == "__main__":
    main()
