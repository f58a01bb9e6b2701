"""Label store write and read throughput, on SQLite and PostgreSQL.

For each database: annotations written per second by ``LabelStore.add_annotations`` (one
writer, batched; then 8 concurrent writer processes), each against a bare ``executemany`` of
the same rows through the same driver in the same run (the rows the store would insert, with
no validation, no idempotency check and no audit events); and the time to read the long
annotations frame of 1,000,000 annotations. Target: the store keeps at least 50% of the bare
insert's throughput in each setting.

Bare and store batches alternate (one writer) and so do bare and store rounds (8 writers,
each sending one batch per round), so load from other work on the machine hits both alike.

Run: ``.venv/bin/python benchmarks/store.py [--rows 200000] [--read-rows 1000000]
[--pg postgresql://postgres@127.0.0.1:5432/test]``. PostgreSQL cases are skipped with a note
when the server is unreachable. Each database gets fresh files or schemas, dropped at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from loop.columns import ANNOTATOR, ITEM, LABEL, SECONDS
from loop.store import IDEMPOTENCY_KEY, LabelStore
from loop.store import _annotations
from loop.store._engine import make_engine, write_transaction

STREAM = "bench"
CLASSES = ("a", "b", "c", "d")
N_ANNOTATORS = 50
BATCH = 5_000
WRITERS = 8


@dataclass(frozen=True)
class Rate:
    rows: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.rows / self.seconds


def make_annotations(n: int, n_items: int, seed: int, prefix: str) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        ITEM: (rng.integers(0, n_items, n)).astype(str),
        ANNOTATOR: ("w" + pd.Series(rng.integers(0, N_ANNOTATORS, n)).astype(str)).to_numpy(),
        LABEL: rng.integers(0, len(CLASSES), n),
        SECONDS: rng.gamma(2.0, 10.0, n).round(2),
        IDEMPOTENCY_KEY: [f"{prefix}-{k}" for k in range(n)],
    })


def setup(url: str, n_items: int) -> None:
    with LabelStore(url) as store:
        store.create_stream(STREAM, CLASSES)
        for k in range(N_ANNOTATORS):
            store.add_annotator(f"w{k}", streams=[STREAM], hourly_rate=20.0)
        ids = [str(i) for i in range(n_items)]
        for start in range(0, n_items, 50_000):
            store.add_items(STREAM, pd.DataFrame({ITEM: ids[start:start + 50_000]}))


def _bare_sql(dialect: str) -> str:
    mark = "?" if dialect == "sqlite" else "%s"
    cols = _annotations.STORED
    return f"INSERT INTO annotations ({', '.join(cols)}) VALUES ({', '.join([mark] * len(cols))})"


def bare_tuples(url: str, frame: pd.DataFrame) -> list[list[tuple]]:
    """The rows the store would insert, per batch, as driver tuples (prepared outside the clock)."""
    store = LabelStore(url)
    engine = store._engine
    out = []
    with engine.connect() as conn:
        for start in range(0, len(frame), BATCH):
            prepared = _annotations.prepare(conn, store.stream(STREAM), frame.iloc[start:start + BATCH])
            out.append(_annotations.row_tuples(prepared, engine.dialect.name))
    store.close()
    return out


def _bare_batch(engine, sql: str, rows: list[tuple]) -> None:
    with write_transaction(engine) as conn:
        cursor = conn.connection.dbapi_connection.cursor()
        cursor.executemany(sql, rows)
        cursor.close()


def write_one(bare_url: str, store_url: str, frame: pd.DataFrame, batches: list[list[tuple]]) -> tuple[float, float]:
    """One writer, batch by batch, alternating bare and store so that a load spike on the
    machine hits both the same. Returns the two total times."""
    engine, store = make_engine(bare_url), LabelStore(store_url)
    sql = _bare_sql(engine.dialect.name)
    store.stream(STREAM)
    bare = mine = 0.0
    for k, rows in enumerate(batches):
        start = time.perf_counter()
        _bare_batch(engine, sql, rows)
        middle = time.perf_counter()
        store.add_annotations(STREAM, frame.iloc[k * BATCH:(k + 1) * BATCH])
        bare, mine = bare + middle - start, mine + time.perf_counter() - middle
    engine.dispose(), store.close()
    return bare, mine


def _worker(bare_url: str, store_url: str, frame: pd.DataFrame, batches: list[list[tuple]], commands, barrier,
            out) -> None:
    engine, store = make_engine(bare_url), LabelStore(store_url)
    sql = _bare_sql(engine.dialect.name)
    store.stream(STREAM)
    while (command := commands.get()) is not None:
        kind, k = command
        barrier.wait()
        start = time.perf_counter()
        if kind == "bare":
            _bare_batch(engine, sql, batches[k])
        else:
            store.add_annotations(STREAM, frame.iloc[k * BATCH:(k + 1) * BATCH])
        out.put((kind, start, time.perf_counter()))
    engine.dispose(), store.close()


def write_concurrent(bare_url: str, store_url: str, frames: list[pd.DataFrame],
                     batches: list[list[list[tuple]]]) -> tuple[float, float]:
    """``len(frames)`` writer processes; in each round every writer sends one batch, bare and
    store rounds alternating. A round lasts from the common start to the last writer's end."""
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(len(frames)), ctx.Queue()
    queues = [ctx.Queue() for _ in frames]
    procs = [ctx.Process(target=_worker, args=(bare_url, store_url, f, b, q, barrier, out))
             for f, b, q in zip(frames, batches, queues)]
    for p in procs:
        p.start()
    totals = {"bare": 0.0, "store": 0.0}
    for k in range(len(batches[0])):
        for kind in ("bare", "store"):
            for q in queues:
                q.put((kind, k))
            spans = [out.get()[1:] for _ in procs]
            totals[kind] += max(e for _, e in spans) - min(s for s, _ in spans)
    for q in queues:
        q.put(None)
    for p in procs:
        p.join()
    return totals["bare"], totals["store"]


class Databases:
    """Fresh, empty databases of one kind: SQLite files or PostgreSQL schemas."""

    def __init__(self, kind: str, pg: str, tmp: Path) -> None:
        self.kind, self.pg, self.tmp, self.schemas = kind, pg, tmp, []

    def fresh(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.tmp / f'{uuid.uuid4().hex}.db'}"
        import psycopg

        schema = f"loop_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.pg, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        self.schemas.append(schema)
        return f"{self.pg}?options=-csearch_path%3D{schema}"

    def drop(self) -> None:
        if self.schemas:
            import psycopg

            with psycopg.connect(self.pg, autocommit=True) as conn:
                for schema in self.schemas:
                    conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def bench_writes(dbs: Databases, rows: int, n_items: int) -> list[tuple[str, Rate, Rate]]:
    results = []
    frame = make_annotations(rows, n_items, seed=0, prefix="one")
    bare_url, store_url = dbs.fresh(), dbs.fresh()
    setup(bare_url, n_items), setup(store_url, n_items)
    bare, mine = write_one(bare_url, store_url, frame, bare_tuples(bare_url, frame))
    results.append(("1 writer, batches of 5,000", Rate(rows, bare), Rate(rows, mine)))
    parts = [make_annotations(rows // WRITERS, n_items, seed=w + 1, prefix=f"w{w}") for w in range(WRITERS)]
    bare_url, store_url = dbs.fresh(), dbs.fresh()
    setup(bare_url, n_items), setup(store_url, n_items)
    bare, mine = write_concurrent(bare_url, store_url, parts, [bare_tuples(bare_url, p) for p in parts])
    total = sum(len(p) for p in parts)
    results.append((f"{WRITERS} writer processes", Rate(total, bare), Rate(total, mine)))
    return results


def bench_read(dbs: Databases, n_rows: int, n_items: int) -> tuple[float, int]:
    url = dbs.fresh()
    setup(url, n_items)
    frame = make_annotations(n_rows, n_items, seed=99, prefix="read")
    with LabelStore(url) as store:
        for start in range(0, n_rows, 100_000):
            store.add_annotations(STREAM, frame.iloc[start:start + 100_000])
        start = time.perf_counter()
        got = store.annotations_frame(STREAM)
        return time.perf_counter() - start, len(got)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="annotations per write setting (default 200,000)")
    parser.add_argument("--read-rows", type=int, default=1_000_000, help="annotations for the read (default 1,000,000)")
    parser.add_argument("--items", type=int, default=50_000, help="items in the stream (default 50,000)")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--only", choices=["sqlite", "postgresql"], default=None)
    args = parser.parse_args(argv)
    kinds = [k for k in ("sqlite", "postgresql") if args.only in (None, k)]
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            if kind == "postgresql" and not _pg_up(args.pg):
                print(f"== postgresql: skipped, {args.pg} is unreachable")
                continue
            dbs = Databases(kind, args.pg, Path(tmp))
            try:
                print(f"== {kind}")
                for setting, bare, store in bench_writes(dbs, args.rows, args.items):
                    ratio = store.per_second / bare.per_second
                    ok &= ratio >= 0.5
                    print(f"  {setting:<28} bare executemany {bare.per_second:>10,.0f} rows/s   "
                          f"add_annotations {store.per_second:>10,.0f} rows/s   ratio {ratio:.2f} "
                          f"({'meets' if ratio >= 0.5 else 'MISSES'} >= 0.50)")
                seconds, n = bench_read(dbs, args.read_rows, args.items)
                print(f"  annotations_frame of {n:,} annotations: {seconds:.2f} s")
            finally:
                dbs.drop()
    return 0 if ok else 1


def _pg_up(url: str) -> bool:
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3):
            return True
    except Exception:  # any failure means: not available for this run
        return False


if __name__ == "__main__":
    sys.exit(main())
