"""Reliability under load and failure, on SQLite and PostgreSQL: concurrent writer processes
with random retries store every annotation once with one event each; a writer killed with
SIGKILL inside its transaction leaves nothing behind, and its batch can be sent again."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import sqlalchemy as sa

from loop.store import LabelStore

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import writer_process as wp  # noqa: E402  (the script the writer processes run)

WRITERS, PER_WRITER = 8, 5_000
ROOT = HERE.parents[1]


def _prepare(url: str, writers: int) -> None:
    with LabelStore(url) as store:
        store.create_stream(wp.STREAM, ("x", "y", "z"))
        for w in range(writers):
            store.add_annotator(f"w{w}", streams=[wp.STREAM])
        store.add_items(wp.STREAM, [{"item_id": str(i)} for i in range(wp.N_ITEMS)])


def _spawn(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(HERE / "writer_process.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _tally(url: str) -> dict[str, int]:
    with LabelStore(url) as store, store._engine.connect() as conn:
        one = lambda sql: conn.execute(sa.text(sql)).scalar()  # noqa: E731
        return {
            "annotations": one("SELECT count(*) FROM annotations"),
            "keys": one("SELECT count(DISTINCT idempotency_key) FROM annotations"),
            "events": one("SELECT count(*) FROM events WHERE action = 'annotation.created'"),
            "annotations_with_one_event": one(
                "SELECT count(*) FROM annotations a JOIN (SELECT entity_id, count(*) AS n FROM events "
                "WHERE entity = 'annotation' GROUP BY entity_id) e ON e.entity_id = a.id WHERE e.n = 1"),
        }


def _write(url: str, writer: int, errors) -> None:
    # A forked child: it inherits the imports, and opens its own connections.
    try:
        with LabelStore(url) as store:
            wp.write(store, writer, PER_WRITER, 500, WRITERS, seed=writer)
    except BaseException:  # report any failure to the parent, then exit non-zero
        errors.put(f"writer {writer}: {traceback.format_exc()}")
        raise


@pytest.mark.slow
def test_concurrent_writers_with_retries_store_each_annotation_once(store_url):
    _prepare(store_url, WRITERS)
    ctx = mp.get_context("fork")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_write, args=(store_url, w, errors)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    failures = [errors.get() for _ in range(errors.qsize())] if not errors.empty() else []
    assert [p.exitcode for p in procs] == [0] * WRITERS, failures
    total = WRITERS * PER_WRITER
    assert _tally(store_url) == {"annotations": total, "keys": total, "events": total,
                                 "annotations_with_one_event": total}
    with LabelStore(store_url) as store:  # and each stored row is the one its key names
        frame = store.annotations_frame(wp.STREAM, extras=("idempotency_key",))
    expected = wp.rows(3, PER_WRITER).set_index("idempotency_key")["label"]
    got = frame.set_index("idempotency_key")["label"].loc[expected.index]
    assert (got == expected).all()


def test_writer_killed_inside_its_transaction_leaves_nothing(store_url):
    _prepare(store_url, 1)
    proc = _spawn("hang", "--url", store_url, "--writer", "0", "--n", "2000")
    line = proc.stdout.readline()
    if not line.startswith("IN_TRANSACTION"):
        proc.kill()
        pytest.fail(f"the writer did not reach its transaction: {line!r} {proc.stderr.read()[-3000:]}")
    assert line.split()[1] == "2000"  # rows and events were written, not committed
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert _tally(store_url) == {"annotations": 0, "keys": 0, "events": 0, "annotations_with_one_event": 0}
    with LabelStore(store_url) as store:  # the same batch, sent again, goes in whole
        result = store.add_annotations(wp.STREAM, wp.rows(0, 2000))
    assert (result.inserted, result.existing) == (2000, 0)
    assert _tally(store_url)["annotations_with_one_event"] == 2000
