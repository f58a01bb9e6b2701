"""A writer process for the reliability tests (run as a script, not collected by pytest).

``write``: send this writer's annotations in batches, resending earlier batches, parts of
batches and a neighbour's rows at random (what retrying clients do). ``hang``: send one
batch and stop inside the transaction, after the rows and events are written but before the
commit, printing IN_TRANSACTION, so the test can SIGKILL it there.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from loop.columns import ANNOTATOR, ITEM, LABEL, SECONDS
from loop.store import IDEMPOTENCY_KEY, LabelStore
from loop.store import _annotations

STREAM = "load"
N_ITEMS = 1_000


def rows(writer: int, n: int) -> pd.DataFrame:
    """Writer ``writer``'s annotations; the content is a function of the key, so any process
    resending a key sends the same annotation."""
    k = np.arange(n)
    return pd.DataFrame({ITEM: (k % N_ITEMS).astype(str), ANNOTATOR: f"w{writer}", LABEL: (k * 7 + writer) % 3,
                         SECONDS: (k % 13).astype(float), IDEMPOTENCY_KEY: [f"w{writer}-{j}" for j in k]})


def write(store: LabelStore, writer: int, n: int, batch: int, writers: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    mine, neighbour = rows(writer, n), rows((writer + 1) % writers, n)
    starts = list(range(0, n, batch))
    for b, start in enumerate(starts):
        part = mine.iloc[start:start + batch]
        extra = neighbour.sample(n=batch // 10, random_state=int(rng.integers(1 << 31)))
        store.add_annotations(STREAM, pd.concat([part, extra]))
        if rng.random() < 0.5:  # resend a random earlier batch
            old = starts[int(rng.integers(0, b + 1))]
            store.add_annotations(STREAM, mine.iloc[old:old + batch])
        if rng.random() < 0.5:  # a client that timed out resends a random half of what it sent
            store.add_annotations(STREAM, part.sample(frac=0.5, random_state=int(rng.integers(1 << 31))))


def hang(store: LabelStore, writer: int, n: int) -> None:
    original = _annotations.insert

    def insert_then_stall(*args, **kwargs):
        inserted = original(*args, **kwargs)
        print(f"IN_TRANSACTION {inserted}", flush=True)
        time.sleep(120)
        return inserted

    _annotations.insert = insert_then_stall
    store.add_annotations(STREAM, rows(writer, n))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["write", "hang"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--writer", type=int, required=True)
    parser.add_argument("--n", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with LabelStore(args.url) as store:
        if args.mode == "write":
            write(store, args.writer, args.n, args.batch, args.writers, args.seed)
        else:
            hang(store, args.writer, args.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
