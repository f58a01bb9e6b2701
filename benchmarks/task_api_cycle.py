"""The task API's per-request CPU in process: ``GET /v1/tasks/next`` and ``POST
/v1/tasks/{id}/annotations`` through the app's FastAPI object (``serve.app.api``, as
``tests/serve/test_tasks.py`` calls it), store calls run inline, on a fresh PostgreSQL schema with
3,000 open tasks (``tasks.one_annotator_store``); the token is looked up on every request
(people who think outlast the 5 s token cache). Prints the CPU and wall per cycle; with
``--profile N``, cProfile's N costliest of the project's functions. Run::

    .venv/bin/python benchmarks/task_api_cycle.py --cycles 100 [--profile 40]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks import one_annotator_store  # noqa: E402 - benchmarks/tasks.py

from serve.app import api  # noqa: E402
from serve.auth import Services, get_services  # noqa: E402
from tests.serve.asgi_client import AsgiClient  # noqa: E402


class _Inline(Services):
    """Store calls in the caller's thread, so that the profile sees them."""

    async def run(self, fn, *args, **kwargs):
        return fn(*args, **kwargs)


def app_cycles(cycles: int, *, profile: int = 0) -> tuple[float, float]:
    """CPU and wall milliseconds per next-and-answer cycle through the app."""
    with one_annotator_store(3000) as (store, token):
        services = _Inline(store, auth="token", task_sla_hours=2.0)
        api.dependency_overrides[get_services] = lambda: services
        client = AsgiClient(api)
        auth = {"Authorization": f"Bearer {token}"}

        def cycle(i: int) -> None:
            r = client.get("/v1/tasks/next?stream=bench", headers=auth)
            if r.status_code != 200:
                raise RuntimeError(r.text)
            task_id = r.json()["task"]["task_id"]
            r = client.post(f"/v1/tasks/{task_id}/annotations", headers={**auth, "Idempotency-Key": f"k{i}"},
                            json={"label": "pos", "seconds": 3.0})
            if r.status_code != 201:
                raise RuntimeError(r.text)
            services.tokens.clear()  # people who think: each request looks its token up

        for i in range(5):  # warm: caches, prepared statements
            cycle(-1 - i)
        profiler = cProfile.Profile(time.process_time) if profile else None
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        for i in range(cycles):
            cycle(i)
        if profiler:
            profiler.disable()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        api.dependency_overrides.pop(get_services, None)
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats("(loop|serve)/", profile)
    return cpu / cycles * 1000, wall / cycles * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    args = parser.parse_args()
    if args.cycles < 1:
        parser.error(f"--cycles must be >= 1. Got {args.cycles} instead.")
    cpu, wall = app_cycles(args.cycles, profile=args.profile)
    print(f"{args.cycles} cycles through the app: {cpu:.1f} ms CPU, {wall:.1f} ms wall per cycle")


if __name__ == "__main__":
    main()
