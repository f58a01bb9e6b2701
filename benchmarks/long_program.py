"""A long program: does a round's cost stay flat as a team's history grows? (issue 10 §3)

A table of ``--items`` items (scikit-learn's ``make_classification``: 20 features,
``--classes`` classes) arrives over ``--rounds`` rounds (plus the seed round), labelled by a
simulated crowd built like digits' (:func:`loop.simulate.make_crowd` with the default tiers,
errors on the class pairs a model confuses), on SQLite and on PostgreSQL. Each round prints its
wall seconds, CPU seconds (the process's own: on a shared machine, less moved by the other jobs),
the process's resident memory (RSS now and its peak so far) and where the wall time went:

- ``read``: label-store reads (annotations, resolutions, tasks, metrics);
- ``write``: label-store writes (items, tasks, annotations, resolutions, task statuses);
- ``score``: the champion's scoring of the arrived items (the scorer port);
- ``posterior``: :func:`loop.issues.label_posteriors` (the model and the annotators);
- ``crowd``: the simulated workforce answering;
- ``retrain``: the challenger's fit, out-of-fold probabilities, calibration, evaluation;
- ``impact``: closing the round in the store and measuring its annotators' impact
  (:mod:`experiments.impact`: its reads, the skills' fit, the table), everything inside it;
- ``audit``: the round's audit, its expert answers and writes included: it checks a share
  (``audit_rate``, 3%) of the labels new or changed since the last audit (``--audit-scope
  fresh``, the default here; ``all``, the program's default, checks that share of *every* item
  arrived so far, so its work grows with the history); the summary also gives the ratio
  without it;
- ``other``: the rest (planning, routing, resolving, measuring, the tracker);
- ``gc``: of all that, the seconds Python's cyclic garbage collector ran (``gc.callbacks``), and
  ``gc_full`` how many of its runs were full (generation 2) collections.

Steps nest (a retrain reads the store), so each figure counts only its own time, not that of
the steps inside it (the audit's counts everything inside it). **Target:** round ``--rounds``
costs at most 1.5x round 5. The summary gives the ratios of wall and CPU seconds of those rounds
(each the median of three), and judges the target on CPU seconds read over five rounds each side:
the median of the last five over that of rounds 3-7 (the early rounds alone move by 15% between
quiet runs of the same code). ``--repeats N`` runs each store N times and takes each round's
median over the runs.

The world is built here (a table-backed world will replace it). Run::

    nice .venv/bin/python benchmarks/long_program.py                      # 10^5 items, 50 rounds
    nice .venv/bin/python benchmarks/long_program.py --items 20000 --rounds 20 --stores sqlite
    .venv/bin/python benchmarks/long_program.py --quick                   # 2,000 items, 6 rounds
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import experiments.program as P  # noqa: E402
from experiments.config import parse_config  # noqa: E402
from experiments.ports import CalibratedTrainer  # noqa: E402
from experiments.world import World, Workforce, expected_cost  # noqa: E402
from loop.columns import ITEM, LABEL  # noqa: E402
from loop.simulate import SimulatedCrowd, Tier, confusability_from_probs, make_crowd  # noqa: E402
from loop.store import LabelStore  # noqa: E402
from loop.strategies import TaskCosts  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432/test"
TIERS = {"novice": 12, "experienced": 6, "expert": 3}
STEPS = ("read", "write", "score", "posterior", "crowd", "retrain", "audit", "impact", "other")
_INCLUSIVE = ("audit", "impact")  # steps whose time includes the steps they call
_READS = ("annotations_frame", "resolved_labels", "resolutions_frame", "tasks_frame", "stream_metrics",
          "resolution_version", "stream")
_WRITES = ("add_items", "add_tasks", "add_annotations", "add_resolutions", "set_task_statuses")


def table_world(n_items: int, rounds: int, *, n_classes: int = 6, seed: int = 0, holdout: int = 1000,
                calibration: int = 500) -> World:
    """A world of ``n_items`` stream items from ``make_classification`` (plus gold sets)."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    rng = np.random.default_rng([seed, 7])
    n = n_items + holdout + calibration
    x, y = make_classification(n_samples=n, n_features=20, n_informative=10, n_redundant=4, n_classes=n_classes,
                               n_clusters_per_class=2, class_sep=2.0, flip_y=0.0, random_state=seed)
    ids = np.array([f"row-{i:07d}" for i in range(n)], dtype=object)
    order = rng.permutation(n)
    gold, calib, stream = order[:holdout], order[holdout:holdout + calibration], order[holdout + calibration:]
    # Errors land on the pairs a model confuses, as on digits (fitted on a sample: it is the world's physics).
    sample = order[:min(n, 5000)]
    probs = cross_val_predict(LogisticRegression(max_iter=1000), x[sample], y[sample], cv=5, method="predict_proba")
    people = make_crowd(TIERS, n_classes, confusability=confusability_from_probs(probs, y[sample]), rng=rng)
    crowd = SimulatedCrowd(tuple(a for a in people.annotators if a.tier is not Tier.EXPERT))
    experts = SimulatedCrowd(tuple(a for a in people.annotators if a.tier is Tier.EXPERT))
    workforce = Workforce(crowd, experts)
    truth = pd.Series(y[stream], index=pd.Index(ids[stream], name=ITEM), name=LABEL)
    initial = workforce.ask_crowd(truth, 1, exclude=None, rng=rng).set_index(ITEM).reindex(truth.index).reset_index()
    crowd_cost = float(np.mean([expected_cost(a.tier) for a in crowd.annotators]))
    return World(dataset="table", classes=tuple(f"c{i}" for i in range(n_classes)),
                 features=pd.DataFrame(x, index=pd.Index(ids, name=ITEM)), stream=truth.index.to_numpy(dtype=object),
                 truth=truth, initial=initial, calibration=pd.Series(y[calib], index=pd.Index(ids[calib], name=ITEM)),
                 holdout=pd.Series(y[gold], index=pd.Index(ids[gold], name=ITEM)), workforce=workforce,
                 costs=TaskCosts(crowd=crowd_cost, expert=expected_cost(Tier.EXPERT)),
                 items_per_round=n_items // (rounds + 1))


class GcClock:
    """Seconds spent in Python's garbage collector, and its full collections, since the last take."""

    def __init__(self) -> None:
        self.seconds, self.full, self._start = 0.0, 0, 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
            return
        self.seconds += time.perf_counter() - self._start
        self.full += info["generation"] == 2

    def take(self) -> dict[str, float]:
        out = {"gc": self.seconds, "gc_full": float(self.full)}
        self.seconds, self.full = 0.0, 0
        return out


class StepClock:
    """Exclusive seconds per step: a step's time minus the time of the steps it called."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STEPS, 0.0)
        self._stack: list[list] = []

    def wrap(self, step: str, fn: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if any(f[0] in _INCLUSIVE for f in self._stack):
                return fn(*args, **kwargs)
            frame = [step, time.perf_counter(), 0.0]  # step, start, time of nested steps
            self._stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                self._stack.pop()
                spent = time.perf_counter() - frame[1]
                self.seconds[step] += spent - frame[2]
                if self._stack:
                    self._stack[-1][2] += spent
        return timed

    def take(self) -> dict[str, float]:
        out, self.seconds = self.seconds, dict.fromkeys(STEPS, 0.0)
        return out


@contextlib.contextmanager
def instrumented(clock: StepClock, store: LabelStore, world: World) -> Iterator[None]:
    """Time the program's steps by wrapping what it calls (the program itself is unchanged)."""
    saved: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, step: str) -> None:
        saved.append((owner, name, owner.__dict__.get(name, None) if not isinstance(owner, type) else
                      owner.__dict__[name]))
        setattr(owner, name, clock.wrap(step, getattr(owner, name)))

    for name in _READS:
        patch(store, name, "read")
    for name in _WRITES:
        patch(store, name, "write")
    for name in ("score",):
        patch(P.InProcessScorer, name, "score")
    patch(P, "label_posteriors", "posterior")
    patch(CalibratedTrainer, "train", "retrain")
    patch(P._Program, "_audit", "audit")
    patch(P._Program, "_log_impact", "impact")
    for name in ("ask_crowd", "ask_experts"):
        patch(Workforce, name, "crowd")
    try:
        yield
    finally:
        for owner, name, old in reversed(saved):
            if isinstance(owner, type) or owner is P:
                setattr(owner, name, old)
            else:
                delattr(owner, name)


def rss_mb() -> tuple[float, float]:
    """Resident memory now and the process's peak, in MB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    now = pages * resource.getpagesize() / 2 ** 20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return now, peak


@contextlib.contextmanager
def fresh_store(kind: str, pg: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / f'long-{uuid.uuid4().hex[:8]}.db'}"
        return
    import psycopg

    schema = f"loop_long_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{pg}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def run(kind: str, world: World, rounds: int, strategy: str, pg: str, extra: dict[str, Any]) -> pd.DataFrame:
    per_round = world.items_per_round
    cfg = parse_config({"program": {"rounds": rounds, "items_per_round": per_round, "strategy": strategy,
                                    # The digits default (15 for 250 items a round), scaled to the round's size.
                                    "budget_per_round": 15.0 * per_round / 250, **extra},
                        "tracking": {"uri": "none"}, "serve": {"url": "in_process"}})
    clock, collector, rows = StepClock(), GcClock(), []
    last = [time.perf_counter(), time.process_time()]

    def progress(round_: int, _: int) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        steps = clock.take()
        total = now - last[0]
        steps["other"] += total - sum(steps.values())
        rss, peak = rss_mb()
        rows.append({"round": round_, "arrived": (round_ + 1) * per_round, "seconds": total, "cpu": cpu - last[1],
                     **steps, **collector.take(), "rss_mb": rss, "peak_mb": peak})
        r = rows[-1]
        print(f"{kind:>10} round {round_:3d}  {r['arrived']:7d} items  {total:7.2f} s  cpu {r['cpu']:6.2f} s  "
              f"rss {rss:6.0f} MB  " + "  ".join(f"{s} {r[s]:.2f}" for s in STEPS)
              + f"  gc {r['gc']:.2f} ({r['gc_full']:.0f} full)", flush=True)
        last[:] = [time.perf_counter(), time.process_time()]

    with tempfile.TemporaryDirectory() as tmp, fresh_store(kind, pg, Path(tmp)) as url, LabelStore(url) as store, \
            instrumented(clock, store, world):
        cfg = cfg.replace(store_url=url)
        gc.callbacks.append(collector)
        try:
            result = P.run_program(cfg, store=store, world=world, progress=progress)
        finally:
            gc.callbacks.remove(collector)
    print(f"{kind:>10} final error rate {result.final_error_rate:.3f} (initial {result.initial_error_rate:.3f}), "
          f"errors removed {result.errors_removed}, model accuracy {result.model_accuracy:.3f}", flush=True)
    return pd.DataFrame(rows).set_index("round")


def window_ratio(frame: pd.DataFrame, rounds: int, column: str = "cpu") -> float | None:
    """Round ``rounds`` over round 5 read robustly: the median of the last five rounds over the
    median of rounds 3-7 (None when the program is too short for two windows apart).
    A single round moves with the machine (the early rounds by 0.3 s of 2 s between quiet runs);
    five rounds each side hold a trend of at most two rounds' growth, ~4% of the history."""
    if rounds < 12 or not {3, 7, rounds - 4, rounds} <= set(frame.index):
        return None
    early = frame.loc[3:7, column].median()
    late = frame.loc[rounds - 4:rounds, column].median()
    return float(late / early)


def summary(kind: str, frame: pd.DataFrame, rounds: int) -> str:
    """Rounds 5, 10, 25 and the last; each the median of it and its two neighbours (one round
    can be slowed by the machine's other jobs; a trend cannot hide in three rounds); and the
    five-round windows of :func:`window_ratio`, on which the target is judged when the program
    is long enough for them."""
    marks = list(dict.fromkeys(r for r in (1, 5, 10, 25, rounds) if r in frame.index))
    frame = frame.assign(without_audit=frame["seconds"] - frame["audit"])
    smooth = frame[["seconds", "cpu", "without_audit"]].rolling(3, center=True, min_periods=1).median()
    times = "  ".join(f"round {r}: {smooth.loc[r, 'seconds']:.2f} s ({smooth.loc[r, 'cpu']:.2f} s cpu, "
                      f"{smooth.loc[r, 'without_audit']:.2f} s without the audit)" for r in marks)
    base = 5 if 5 in frame.index else 1
    wall, cpu, rest = (smooth.loc[rounds, c] / smooth.loc[base, c] for c in ("seconds", "cpu", "without_audit"))
    windows = window_ratio(frame, rounds)
    judged = windows if windows is not None else max(wall, cpu)
    robust = (f"; rounds {rounds - 4}-{rounds} / rounds 3-7 (medians) = {windows:.2f} cpu, "
              f"{window_ratio(frame, rounds, 'seconds'):.2f} wall" if windows is not None else "")
    return (f"{kind}: {times}; round {rounds} / round {base} = {wall:.2f} wall, {cpu:.2f} cpu, {rest:.2f} wall "
            f"without the audit{robust} (target <= 1.5 on "
            f"{'the five-round cpu medians' if windows is not None else 'the larger of wall and cpu'}: "
            f"{'met' if judged <= 1.5 else 'not met'}); peak RSS {frame['peak_mb'].max():.0f} MB")


def median_of(runs: list[pd.DataFrame]) -> pd.DataFrame:
    """Each round's figures as the median over runs of the same program (the peaks: the maximum)."""
    if len(runs) == 1:
        return runs[0]
    stacked = pd.concat(runs)
    out = stacked.groupby(level=0).median()
    out["peak_mb"] = stacked["peak_mb"].groupby(level=0).max()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--stores", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"])
    parser.add_argument("--strategy", default="tiered")
    parser.add_argument("--pg", default=PG)
    parser.add_argument("--repeats", type=int, default=1,
                        help="run each store this many times; each round's figures are the runs' medians")
    parser.add_argument("--quick", action="store_true", help="2,000 items over 6 rounds, SQLite only")
    parser.add_argument("--audit-scope", choices=["all", "fresh"], default="fresh",
                        help="program.audit_scope (fresh: the audit's work follows the round's, not the history's)")
    args = parser.parse_args(argv)
    if args.quick:
        args.items, args.rounds, args.stores = 2000, 6, ["sqlite"]
    started = time.perf_counter()
    world = table_world(args.items, args.rounds, n_classes=args.classes)
    print(f"world: {args.items} items, {world.items_per_round} a round, {args.rounds} rounds, {args.classes} classes "
          f"({time.perf_counter() - started:.1f} s)", flush=True)
    if args.repeats < 1:
        parser.error(f"--repeats: expected at least 1, got {args.repeats}")
    frames = {}
    for kind in args.stores:
        runs = [run(kind, world, args.rounds, args.strategy, args.pg, {"audit_scope": args.audit_scope})
                for _ in range(args.repeats)]
        frames[kind] = median_of(runs)
    print()
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        for kind, frame in frames.items():
            print(f"== {kind}")
            print(frame.round(2).to_string())
    for kind, frame in frames.items():
        print(summary(kind, frame, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
