"""Task API load: concurrent annotators fetching their next task and answering it, labelloop's
task API against Label Studio's own API, in the same run.

Both servers get the same work on this machine: ``--clients`` annotator clients (threads, one
HTTP session and one token each) loop for ``--seconds``: fetch the next task, answer it. For
labelloop that is ``GET /v1/tasks/next`` and ``POST /v1/tasks/{id}/annotations`` (with an
Idempotency-Key) on the Serve app (:func:`serve.local.start_local`) over a PostgreSQL label
store; for Label Studio ``GET /api/projects/{id}/next/`` and ``POST /api/tasks/{id}/annotations/``
on a real Label Studio (its own venv, built once by ``scripts/install_label_studio.sh``; started
by ``benchmarks/_label_studio.py``), also on PostgreSQL, with Label Studio's own web server.

Reported per server: answers per second, p50 and p99 latency of ``next`` and of the answer,
and the check that matters more than speed: every answer the server acknowledged is stored
exactly once, and no task went to two people (lost and duplicated counts, read back from the
server's own store after the run). Run::

    .venv/bin/python benchmarks/tasks.py                    # 60 s per server, 32 clients
    .venv/bin/python benchmarks/tasks.py --seconds 10       # quicker, noisier
    .venv/bin/python benchmarks/tasks.py --only labelloop --think 0,3,sim   # also with think time
    .venv/bin/python benchmarks/tasks.py --in-process 300   # one cycle's CPU and queries, no HTTP

The saturated closed loop (no think time, the default) is the throughput comparison; its
``next`` latency is 32 / throughput by Little's law. ``--think`` keeps the 32 clients but each
pauses between a task and its answer (log-normal, the simulated crowd's median and spread), as
people do: the latency of ``next`` under a realistic load. Each labelloop run also prints the
CPU per answer of its processes (clients, proxy, app replicas, Ray, PostgreSQL backends).

Targets (issue 12): labelloop's answers/s >= 3x Label Studio's, p99 of ``next`` < 100 ms, 0 lost
or duplicated.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_RATIO = 3.0
TARGET_NEXT_P99_MS = 100.0
PG_URL = os.environ.get("LABELLOOP_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass
class Load:
    """What the clients saw: latencies in seconds, and the acknowledged answers."""

    next_latency: list[float] = field(default_factory=list)
    answer_latency: list[float] = field(default_factory=list)
    cycle_latency: list[float] = field(default_factory=list)  # next + answer (think time excluded)
    acknowledged: list[tuple[int, str]] = field(default_factory=list)  # (task id, annotator)
    empty: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Result:
    server: str
    clients: int
    seconds: float
    answers: int
    answers_per_s: float
    next_p50_ms: float
    next_p99_ms: float
    cycle_p50_ms: float   # next + answer
    cycle_p99_ms: float
    lost: int
    duplicated: int
    errors: int
    think_median_s: float = 0.0     # 0: a closed loop without think time (saturation)
    answer_p50_ms: float = float("nan")
    answer_p99_ms: float = float("nan")
    cpu_ms_per_answer: dict[str, float] = field(default_factory=dict)  # process group -> CPU ms per answer


def run_clients(n_clients: int, seconds: float,
                make_client: Callable[[int, threading.Event], Callable[[Load], None]],
                warm: Callable[[int], None] | None = None) -> Load:
    """Run ``n_clients`` threads, each calling its ``step(load)`` until ``seconds`` pass; merge
    what they saw. A client's step fetches one task and answers it; it gets the run's ``stop``
    event so that a think time ends with the run. ``warm(i)``, when given, runs in every thread
    at once before the clock starts (not measured)."""
    loads = [Load() for _ in range(n_clients)]
    stop = threading.Event()
    steps = [make_client(i, stop) for i in range(n_clients)]
    start = threading.Barrier(n_clients + 1)

    def work(i: int) -> None:
        if warm is not None:
            try:
                warm(i)
            except Exception as exc:  # noqa: BLE001 - counted and shown
                loads[i].errors.append(f"warm-up {type(exc).__name__}: {exc}"[:200])
        start.wait()
        while not stop.is_set():
            try:
                steps[i](loads[i])
            except Exception as exc:  # noqa: BLE001 - counted and shown, a load test must not die quietly
                loads[i].errors.append(f"{type(exc).__name__}: {exc}"[:200])
                time.sleep(0.05)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(n_clients)]
    for t in threads:
        t.start()
    start.wait()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    merged = Load()
    for load in loads:
        merged.next_latency += load.next_latency
        merged.answer_latency += load.answer_latency
        merged.cycle_latency += load.cycle_latency
        merged.acknowledged += load.acknowledged
        merged.empty += load.empty
        merged.errors += load.errors
    return merged


def summarise(server: str, n_clients: int, seconds: float, load: Load, stored: dict[int, list[str]], *,
              think_median_s: float = 0.0, cpu_ms_per_answer: dict[str, float] | None = None) -> Result:
    """``stored``: task id -> annotators of the answers the server's store holds for it."""
    acked = {}
    for task_id, who in load.acknowledged:
        acked.setdefault(task_id, set()).add(who)
    lost = sum(1 for task_id, people in acked.items() for p in people if p not in stored.get(task_id, []))
    duplicated = sum(max(0, len(people) - 1) for people in stored.values())

    def pct(values: list[float], q: float) -> float:
        return float(np.percentile(values, q) * 1000) if values else float("nan")

    return Result(server=server, clients=n_clients, seconds=seconds, answers=len(load.acknowledged),
                  answers_per_s=len(load.acknowledged) / seconds,
                  next_p50_ms=pct(load.next_latency, 50), next_p99_ms=pct(load.next_latency, 99),
                  cycle_p50_ms=pct(load.cycle_latency, 50), cycle_p99_ms=pct(load.cycle_latency, 99),
                  lost=lost, duplicated=duplicated, errors=len(load.errors), think_median_s=think_median_s,
                  answer_p50_ms=pct(load.answer_latency, 50), answer_p99_ms=pct(load.answer_latency, 99),
                  cpu_ms_per_answer=cpu_ms_per_answer or {})


# --------------------------------------------------------------------------- think time

def think_times(median_s: float, sigma: float, rng: np.random.Generator) -> Callable[[], float]:
    """Seconds an annotator spends on a task: log-normal, ``median_s * exp(sigma * z)`` with
    ``z`` standard normal, as the simulated crowd's seconds per item
    (:meth:`loop.simulate.Crowd.annotate`); 0 with ``median_s`` 0 (a closed loop)."""
    if median_s == 0:
        return lambda: 0.0
    return lambda: float(median_s * np.exp(sigma * rng.standard_normal()))


def simulated_think() -> tuple[float, float]:
    """The simulated annotator's default median seconds per item and its log-scale spread."""
    from loop.simulate import Annotator

    fields = Annotator.__dataclass_fields__
    return float(fields["seconds_median"].default), float(fields["seconds_sigma"].default)


# --------------------------------------------------------------------------- CPU by process

def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds: user + system) of a live process, from /proc (Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def cpu_by_group(pg_application: str) -> dict[str, float]:
    """CPU seconds so far of the processes of a run, by group: ``clients`` (this process: the
    client threads), ``proxy`` (Serve's HTTP proxy), ``app`` (the Router replicas), ``ray``
    (Ray's other processes: this process's other descendants), ``postgres`` (the backends of
    connections named ``pg_application``). Other work on the machine is in none of them.
    ``ray`` holds raylet, the GCS, the dashboard, the Serve controller and the Scorer replica."""
    import psycopg

    stats = {int(d): st for d in os.listdir("/proc") if d.isdigit() and (st := _proc_stat(int(d))) is not None}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    me = os.getpid()
    out = {"clients": stats[me][1], "proxy": 0.0, "app": 0.0, "ray": 0.0, "postgres": 0.0}
    todo = list(children.get(me, []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        cmd = _cmdline(pid)
        # The ingress: Serve's HAProxy (and its manager actor) where the app runs one, else
        # the ProxyActor; both are counted as the proxy.
        proxy = any(name in cmd for name in ("ProxyActor", "HAProxyManager", "haproxy"))
        group = "proxy" if proxy else "app" if "ServeReplica" in cmd and "Router" in cmd else "ray"
        out[group] += stats[pid][1]
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        backends = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                                               (pg_application,))]
    out["postgres"] = sum(stats[pid][1] for pid in backends if pid in stats)
    return out


# --------------------------------------------------------------------------- labelloop

def labelloop_load(n_clients: int, seconds: float, n_tasks: int, work_dir: Path, router_replicas: int = 2,
                   think: tuple[float, float] = (0.0, 0.0), seed: int = 0) -> Result:
    """The task API on the local Serve app over a fresh PostgreSQL schema, with
    ``router_replicas`` Router replicas (one process each: the store calls of one replica share
    its GIL, so two use both cores of a small machine). ``think``: (median seconds, log-scale
    spread) of each client's pause between receiving a task and answering it (:func:`think_times`)."""
    import psycopg

    from loop.store import LabelStore
    from serve.local import shutdown_local, start_local

    schema = f"bench_tasks_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    # The app's connections carry the schema's name, so that their backends' CPU can be found.
    store_url = f"{PG_URL}?options=-csearch_path%3D{schema}&application_name={schema}"
    try:
        classes = ["neg", "pos"]
        with LabelStore(store_url) as store:
            store.create_stream("bench", classes, owner="lead")
            tokens = []
            for i in range(n_clients):
                name = f"annotator-{i:02d}"
                store.add_annotator(name, streams=["bench"])
                tokens.append(store.issue_token(name, "annotator", annotator=name))
            items = [{"item_id": f"e{j}"} for j in range(n_tasks)]
            store.add_items("bench", items)
            store.add_tasks("bench", [{"item_id": f"e{j}"} for j in range(n_tasks)])
        url = start_local({"model_name": "tasks-bench", "tracking_uri": f"sqlite:///{work_dir / 'mlflow.db'}",
                           "store_url": store_url, "auth": "token", "router_replicas": router_replicas},
                          ray_temp_dir=tempfile.mkdtemp(prefix="ray", dir=os.environ.get("LABELLOOP_RAY_TMP", "/tmp")))

        def make_client(i: int, stop: threading.Event):
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {tokens[i]}"
            who = f"annotator-{i:02d}"
            rng = np.random.default_rng([seed, i])
            pause = think_times(think[0], think[1], rng)
            # With think time, each client starts at a uniform offset within one median think
            # time, as people who are mid-task when the measurement starts; otherwise all 32
            # would ask at the same instant, a burst no steady state has.
            offset = [float(rng.uniform(0, think[0]))]

            def step(load: Load) -> None:
                if offset:
                    if stop.wait(offset.pop()):
                        return
                t0 = time.perf_counter()
                r = session.get(f"{url}/v1/tasks/next", params={"stream": "bench"}, timeout=30)
                next_s = time.perf_counter() - t0
                load.next_latency.append(next_s)
                if r.status_code == 204:
                    load.empty += 1
                    time.sleep(0.01)
                    return
                r.raise_for_status()
                task = r.json()["task"]
                seconds_spent = pause()
                if seconds_spent and stop.wait(seconds_spent):
                    return  # the run ended while they worked on it: not answered, not counted
                t1 = time.perf_counter()
                r = session.post(f"{url}/v1/tasks/{task['task_id']}/annotations",
                                 json={"label": classes[task["task_id"] % 2], "seconds": max(seconds_spent, 3.0)},
                                 headers={"Idempotency-Key": f"bench-{task['task_id']}-{who}"}, timeout=30)
                answer_s = time.perf_counter() - t1
                load.answer_latency.append(answer_s)
                load.cycle_latency.append(next_s + answer_s)
                r.raise_for_status()
                load.acknowledged.append((int(task["task_id"]), who))
            return step

        def warm(i: int) -> None:
            # Each client's token checked and the replicas' connection pools opened, as in a
            # service that has been up: one concurrent read per client (its own task list).
            requests.get(f"{url}/v1/tasks", params={"status": "assigned"}, timeout=60,
                         headers={"Authorization": f"Bearer {tokens[i]}"}).raise_for_status()

        cpu_before = cpu_by_group(schema)
        load = run_clients(n_clients, seconds, make_client, warm=warm if think[0] > 0 else None)
        cpu_after = cpu_by_group(schema)
        with LabelStore(store_url) as store:
            frame = store.annotations_frame("bench")
        stored: dict[int, list[str]] = {}
        for task_id, who in zip(frame["task_id"].tolist(), frame["annotator_id"].tolist()):
            stored.setdefault(int(task_id), []).append(who)
        shutdown_local()
        answers = max(len(load.acknowledged), 1)
        cpu = {k: (cpu_after[k] - cpu_before.get(k, 0.0)) * 1000 / answers for k in cpu_after}
        return summarise("labelloop", n_clients, seconds, load, stored, think_median_s=think[0], cpu_ms_per_answer=cpu)
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


# --------------------------------------------------------------------------- in process

@dataclass(frozen=True)
class InProcess:
    """One thread's cycles straight on the store (no HTTP): what a cycle costs the app's process."""

    cycles: int
    cpu_ms: float          # process CPU time per cycle
    wall_ms: float
    queries: float         # SQL statements per cycle sent through SQLAlchemy (the bulk writer's raw
    checkouts: float       # cursor is not seen); connections checked out of the pool per cycle


@contextlib.contextmanager
def one_annotator_store(n_tasks: int) -> Iterator[tuple[Any, str]]:
    """A store on a fresh PostgreSQL schema (dropped after) with stream ``bench``, annotator
    ``annotator-00`` on it and ``n_tasks`` open tasks: (store, the annotator's token)."""
    import psycopg

    from loop.store import LabelStore

    schema = f"bench_tasks_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        with LabelStore(f"{PG_URL}?options=-csearch_path%3D{schema}") as store:
            store.create_stream("bench", ["neg", "pos"], owner="lead")
            store.add_annotator("annotator-00", streams=["bench"])
            token = store.issue_token("annotator-00", "annotator")
            store.add_items("bench", [{"item_id": f"e{j}"} for j in range(n_tasks)])
            store.add_tasks("bench", [{"item_id": f"e{j}"} for j in range(n_tasks)])
            yield store, token
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def in_process_cycles(cycles: int, n_tasks: int, *, profile: int = 0) -> InProcess:
    """``cycles`` cycles of what the task API runs for one annotator, on a fresh PostgreSQL schema:
    the token check, the next task with its preview, the token check, the answer (the calls of
    ``serve.tasks.next_task`` and ``serve.tasks.answer``). With ``profile``, print cProfile's
    ``profile`` costliest functions (cumulative)."""
    import cProfile
    import pstats

    import sqlalchemy as sa

    try:
        from serve.auth import TokenCache
    except ImportError:  # a commit before it (a before/after comparison)
        TokenCache = None  # noqa: N806

    with one_annotator_store(n_tasks) as (store, token):
        counts = {"queries": 0, "checkouts": 0}
        engine = store._engine  # noqa: SLF001 - a benchmark counts what the store sends

        tokens = None if TokenCache is None else TokenCache()

        def one_cycle(i: int) -> None:
            principal = _authenticate(store, tokens, token)
            preview = _next_preview(store, principal.annotator)
            principal = _authenticate(store, tokens, token)
            store.answer_task(preview.task.id, principal.annotator, "pos", seconds=3.0,
                              idempotency_key=f"bench-{i}", source="api", actor=principal.name)

        for i in range(5):  # warm: caches, prepared statements, the staging table
            one_cycle(-1 - i)
        sa.event.listen(engine, "before_cursor_execute", lambda *a: counts.__setitem__("queries", counts["queries"] + 1))
        sa.event.listen(engine.pool, "checkout", lambda *a: counts.__setitem__("checkouts", counts["checkouts"] + 1))
        profiler = cProfile.Profile(time.process_time) if profile else None  # CPU, not waits
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        for i in range(cycles):
            one_cycle(i)
        if profiler:
            profiler.disable()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        if profiler:
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(profile)
    return InProcess(cycles=cycles, cpu_ms=cpu / cycles * 1000, wall_ms=wall / cycles * 1000,
                     queries=counts["queries"] / cycles, checkouts=counts["checkouts"] / cycles)


def _authenticate(store, tokens, token: str):
    """As a Router replica checks a token: through its token cache (serve.auth.TokenCache;
    without one, at a commit before it, every time)."""
    if tokens is None:
        return store.authenticate(token)
    principal = tokens.get(token)
    if principal is None:
        principal = store.authenticate(token)
        tokens.put(token, principal)
    return principal


def _next_preview(store, annotator: str):
    if not hasattr(store, "next_task_preview"):  # a commit before it: what its task API called
        return store.task_preview(store.next_task(annotator, stream="bench", actor=annotator).id)
    return store.next_task_preview(annotator, stream="bench", actor=annotator)


# --------------------------------------------------------------------------- Label Studio

def label_studio_load(n_clients: int, seconds: float, n_tasks: int, work_dir: Path) -> Result:
    """Label Studio's own API doing the same work, on a fresh PostgreSQL database of the same
    server (:func:`_label_studio.label_studio_throughput`)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _label_studio import LabelStudioServer, fresh_postgres, label_studio_python, label_studio_throughput

    python = label_studio_python(install=True)
    postgres = fresh_postgres(PG_URL, "labelstudio_tasks_bench")
    data_dir = work_dir / "label-studio"
    data_dir.mkdir(parents=True, exist_ok=True)  # the server writes its log there before it starts
    with LabelStudioServer.start(python, data_dir=data_dir, postgres=postgres) as server:
        print(f"  Label Studio {server.url} up in {server.started_in:.0f} s", flush=True)
        t = label_studio_throughput(server, clients=n_clients, seconds=seconds, tasks=min(n_tasks, 5000))
    for kind, n in t.error_kinds:
        print(f"  Label Studio error x{n}: {kind}", flush=True)
    return Result(server="label_studio", clients=n_clients, seconds=t.seconds, answers=t.answers,
                  answers_per_s=t.answers_per_s, next_p50_ms=t.next_p50_ms, next_p99_ms=t.next_p99_ms,
                  cycle_p50_ms=t.p50_ms, cycle_p99_ms=t.p99_ms, lost=t.lost,
                  duplicated=t.duplicated + t.over_answered, errors=t.errors)


def _cpu_table(results: list[Result]) -> str:
    groups = ["clients", "proxy", "app", "ray", "postgres"]
    rows = [f"{'CPU ms per answer':<22} " + " ".join(f"{g:>9}" for g in groups) + f" {'total':>9}"]
    for r in results:
        if r.cpu_ms_per_answer:
            label = f"{r.server}, think {r.think_median_s:g} s"
            rows.append(f"{label:<22} " + " ".join(f"{r.cpu_ms_per_answer.get(g, 0.0):>9.1f}" for g in groups)
                        + f" {sum(r.cpu_ms_per_answer.values()):>9.1f}")
    return "\n".join(rows)


def _table(results: list[Result]) -> str:
    head = (f"{'server':<13} {'think':>6} {'clients':>7} {'answers':>8} {'answers/s':>10} {'next p50':>9} "
            f"{'next p99':>9} {'answer p99':>10} {'cycle p50':>10} {'cycle p99':>10} {'lost':>5} {'dup':>4} "
            f"{'errors':>6}")
    rows = [head] + [f"{r.server:<13} {r.think_median_s:>5g}s {r.clients:>7} {r.answers:>8} {r.answers_per_s:>10.1f} "
                     f"{r.next_p50_ms:>7.1f}ms {r.next_p99_ms:>7.1f}ms {r.answer_p99_ms:>8.1f}ms "
                     f"{r.cycle_p50_ms:>8.1f}ms {r.cycle_p99_ms:>8.1f}ms {r.lost:>5} {r.duplicated:>4} {r.errors:>6}"
                     for r in results]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--tasks", type=int, default=40_000,
                        help="tasks labelloop starts with (Label Studio: at most 5,000; it answers far fewer)")
    parser.add_argument("--only", choices=["labelloop", "label_studio"], default=None)
    parser.add_argument("--router-replicas", type=int, default=2, help="labelloop's Router replicas")
    parser.add_argument("--think", default="0", metavar="MEDIAN_S",
                        help="labelloop: each client's think time between a task and its answer, log-normal with "
                             "this median (seconds; 'sim': the simulated crowd's, 15 s) and --think-sigma; "
                             "0: the saturated closed loop. A comma list runs each in turn")
    parser.add_argument("--think-sigma", type=float, default=None,
                        help="log-scale spread of think times (default: the simulated crowd's, 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--in-process", type=int, default=0, metavar="CYCLES",
                        help="instead: CYCLES cycles on the store in one thread (CPU, queries per cycle)")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="with --in-process: cProfile's top N")
    args = parser.parse_args(argv)
    if args.in_process:
        print(f"load: {os.getloadavg()[0]:.2f} (1-min average) on {os.cpu_count()} cores", flush=True)
        r = in_process_cycles(args.in_process, min(args.tasks, 3000), profile=args.profile)
        print(f"in process, PostgreSQL, {r.cycles} cycles: {r.cpu_ms:.1f} ms CPU, {r.wall_ms:.1f} ms wall, "
              f"{r.queries:.1f} queries, {r.checkouts:.1f} pool checkouts per cycle")
        return 0
    print(f"load: {os.getloadavg()[0]:.2f} (1-min average) on {os.cpu_count()} cores", flush=True)
    sim_median, sim_sigma = simulated_think()
    sigma = sim_sigma if args.think_sigma is None else args.think_sigma
    try:
        thinks = [sim_median if v.strip() == "sim" else float(v) for v in args.think.split(",")]
    except ValueError:
        parser.error(f"--think must be seconds >= 0 or 'sim', comma-separated. Got {args.think!r} instead.")
    if not all(np.isfinite(t) and t >= 0 for t in thinks) or not (np.isfinite(sigma) and sigma >= 0):
        parser.error(f"--think and --think-sigma must be finite and >= 0. Got {args.think!r}, {sigma!r} instead.")
    results = []
    with tempfile.TemporaryDirectory(prefix="tasks-bench-") as tmp:
        for name, run in (("labelloop", labelloop_load), ("label_studio", label_studio_load)):
            if args.only and args.only != name:
                continue
            modes = [0.0] if name == "label_studio" else thinks
            for median in modes:
                print(f"{name}: {args.clients} clients for {args.seconds:.0f} s, think time median {median:g} s "
                      f"(load {os.getloadavg()[0]:.2f}) ...", flush=True)
                extra = {"router_replicas": args.router_replicas, "think": (median, sigma), "seed": args.seed} \
                    if name == "labelloop" else {}
                results.append(run(args.clients, args.seconds, args.tasks, Path(tmp), **extra))
                print(_table(results[-1:]), flush=True)  # kept even if the next server fails
    print(f"load: {os.getloadavg()[0]:.2f} (1-min average) at the end")
    print(_table(results))
    print(_cpu_table(results))
    for ours in (r for r in results if r.server == "labelloop"):
        mode = "saturated closed loop" if ours.think_median_s == 0 else f"think time median {ours.think_median_s:g} s"
        print(f"{mode}: next p99 {ours.next_p99_ms:.1f} ms (target < {TARGET_NEXT_P99_MS:.0f}): "
              f"{'met' if ours.next_p99_ms < TARGET_NEXT_P99_MS else 'missed'}; lost {ours.lost}, duplicated "
              f"{ours.duplicated}: {'met' if ours.lost == ours.duplicated == 0 else 'missed'}")
    ours = next((r for r in results if r.server == "labelloop" and r.think_median_s == 0), None)
    peer = next((r for r in results if r.server == "label_studio"), None)
    if ours is not None and peer is not None:
        ratio = ours.answers_per_s / peer.answers_per_s if peer.answers_per_s else float("inf")
        print(f"answers/s ratio labelloop / Label Studio: {ratio:.2f}x (target >= {TARGET_RATIO:.0f}x): "
              f"{'met' if ratio >= TARGET_RATIO else 'missed'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
