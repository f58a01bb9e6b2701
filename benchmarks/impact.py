"""What reading annotator impact costs (issue 13 §4): ``GET /v1/me/impact`` for an annotator
reads what that annotator touched (an admin's, for everyone, the stream's whole history); a
program round reads only what the round holds.

A synthetic stream of ``--items`` items over ``--rounds`` closed rounds (each round: every item
of the round labelled by two of 20 annotators, a third of its labels changed by a superseding
resolution, a prediction per item), on SQLite (``--stores postgresql`` too). Prints the seconds
(wall and CPU) of :meth:`LabelStore.annotator_impact` (the whole history, what the endpoint
computes per stream) and of one round's read (``impact_inputs(rounds=[r])`` and its table, what
the program does at each close), and of one annotator's rows (``annotator_impact(stream,
annotator=...)``, what the endpoint computes for an annotator's token; checked equal to their
rows of the whole history). No peer: nothing else computes these figures. Run::

    nice .venv/bin/python benchmarks/impact.py                 # 20,000 items, 20 rounds
    .venv/bin/python benchmarks/impact.py --items 2000 --rounds 4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loop.store import LabelStore  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432/test"
K = 3


def build(store: LabelStore, n_items: int, rounds: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    store.create_stream("s", [f"c{k}" for k in range(K)])
    people = [f"a{j}" for j in range(20)]
    for name in people:
        store.add_annotator(name, streams=["s"])
    store.add_model_version("m")
    per_round = n_items // rounds
    for r in range(rounds):
        ids = [f"i{k}" for k in range(r * per_round, (r + 1) * per_round)]
        store.add_items("s", [{"item_id": i} for i in ids])
        pairs = rng.choice(len(people), size=(len(ids), 2), replace=True)
        labels = rng.integers(0, K, size=(len(ids), 2))
        store.add_annotations("s", pd.DataFrame({
            "item_id": np.repeat(ids, 2), "annotator_id": [people[p] for p in pairs.ravel()],
            "label": labels.ravel(), "idempotency_key": [f"{i}:{n}" for i in ids for n in range(2)]}))
        store.add_resolutions("s", pd.DataFrame({"item_id": ids, "label": labels[:, 0]}), method="consensus")
        heads = store.resolutions_frame("s", after=store.resolution_version() - len(ids)).set_index("item_id")
        changed = [i for i, (a, b) in zip(ids, labels) if a != b]
        store.add_resolutions("s", pd.DataFrame({"item_id": changed,
                                                 "label": [int(labels[int(i[1:]) - r * per_round, 1]) for i in changed],
                                                 "supersedes": heads.loc[changed, "resolution_id"].to_numpy()}),
                              method="adjudicated")
        store.close_round("s", r, skills={p: 0.8 for p in people})
        store.add_predictions("s", "m", [{"item_id": i, "probs": list(rng.dirichlet(np.ones(K)))} for i in ids])


def timed(fn) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--stores", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite"])
    parser.add_argument("--pg", default=PG)
    args = parser.parse_args()
    print(f"{args.items} items, {args.rounds} rounds, 2 labels an item, 20 annotators")
    print(f"{'store':<11}{'annotations':>12}  {'whole history (wall / cpu s)':>30}  {'one round (wall / cpu s)':>26}")
    for kind in args.stores:
        with tempfile.TemporaryDirectory() as tmp:
            if kind == "sqlite":
                url = f"sqlite:///{tmp}/impact.db"
            else:
                import uuid

                import psycopg
                schema = f"impact_bench_{uuid.uuid4().hex[:8]}"
                with psycopg.connect(args.pg, autocommit=True) as conn:
                    conn.execute(f'CREATE SCHEMA "{schema}"')
                url = f"{args.pg}?options=-csearch_path%3D{schema}"
            with LabelStore(url) as store:
                build(store, args.items, args.rounds)
                n = len(store.annotations_frame("s"))
                whole = timed(lambda: store.annotator_impact("s"))
                marks = store.round_marks("s")
                last = args.rounds - 1
                one = timed(lambda: store.impact_inputs("s", rounds=[last], marks=marks).table())
                same = one[2][one[2]["round"] == last].reset_index(drop=True).equals(
                    whole[2][whole[2]["round"] == last].reset_index(drop=True))
                marks_s = timed(lambda: store.round_marks("s"))
                mine = timed(lambda: store.annotator_impact("s", annotator="a0"))
                mine_same = mine[2].equals(whole[2][whole[2]["annotator_id"] == "a0"].reset_index(drop=True))
            if kind == "postgresql":
                with psycopg.connect(args.pg, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        print(f"{kind:<11}{n:>12,}  {whole[0]:>19.2f} / {whole[1]:.2f}  {one[0]:>17.3f} / {one[1]:.3f}"
              f"   (the round's rows equal: {same}); ratio whole / one round {whole[0] / one[0]:.0f}x")
        print(f"{'':<11}one annotator (a0): {mine[0]:.3f} / {mine[1]:.3f} s wall / CPU (their rows equal the whole "
              f"history's: {mine_same}); round marks {marks_s[0] * 1000:.1f} / {marks_s[1] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
