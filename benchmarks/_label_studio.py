"""A real Label Studio for tests and benchmarks: installed once, started on 127.0.0.1, measured.

:func:`label_studio_python` finds (or, with ``install=True``, builds) the cached venv of
``scripts/install_label_studio.sh``. :class:`LabelStudioServer` starts ``label-studio`` from it
on a free port with a data directory of its own, on SQLite or on PostgreSQL (Label Studio's
``DJANGO_DB=default`` with ``POSTGRE_*``), and creates users with known API tokens.

Tokens: Label Studio 1.23 turns legacy API tokens off for new organisations; this throwaway
server turns them on (``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true``) so that each user can be
created with a known token in one step. labelloop's client also speaks the current flow
(personal access tokens traded at ``/api/token/refresh/``). ``SSRF_PROTECTION_ENABLED=false``
and ``ML_BLOCK_LOCAL_IP=false`` let the server call webhooks and an ML backend on 127.0.0.1.

:func:`label_studio_throughput` is the Label Studio half of the task-API load benchmark:
``clients`` annotators, each its own user, loop over ``GET /api/projects/{id}/next/`` and
``POST /api/tasks/{id}/annotations/`` for ``seconds``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
INSTALLER = ROOT / "scripts" / "install_label_studio.sh"
VERSION = "1.23.2"
ADMIN = "admin@labelloop.test"
PASSWORD = "labelloop-test-password"
LABEL_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="label" toName="text" choice="single">
    <Choice value="neg"/><Choice value="neu"/><Choice value="pos"/>
  </Choices>
  <TextArea name="reason" toName="text" editable="false" placeholder="labelloop's reason"/>
</View>"""


def cache_dir() -> Path:
    return Path(os.environ.get("LABELLOOP_CACHE") or Path.home() / ".cache" / "labelloop")


def label_studio_python(*, install: bool = False) -> Path | None:
    """The Python of the cached Label Studio venv; None when it is not built and ``install``
    is False. Building takes a few minutes (about 1.5 here, 5 on a cold pip cache)."""
    python = cache_dir() / f"label-studio-{VERSION}" / "bin" / "python"
    if (python.parent.parent / ".installed").exists():
        return python
    if not install:
        return None
    start = time.monotonic()
    out = subprocess.run(["bash", str(INSTALLER)], check=True, capture_output=True, text=True,
                         env={**os.environ, "LABEL_STUDIO_VERSION": VERSION})
    print(f"label-studio {VERSION} installed in {time.monotonic() - start:.0f} s", file=sys.stderr)
    return Path(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_CREATE_USERS = """
import json, os, sys
import django
import label_studio
sys.path.insert(0, os.path.dirname(label_studio.__file__))  # as label_studio.server does
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "label_studio.core.settings.label_studio")
django.setup()
from organizations.models import Organization
from rest_framework.authtoken.models import Token
from users.models import User
org = Organization.objects.first()
for email, token in json.loads(sys.argv[1]):
    user = User.objects.filter(email=email).first()
    if user is None:
        user = User.objects.create_user(email=email, password=sys.argv[2])
    org.add_user(user)
    user.active_organization = org
    user.save(update_fields=["active_organization"])
    Token.objects.filter(user=user).delete()
    Token.objects.create(user=user, key=token)
print(json.dumps({e: User.objects.get(email=e).id for e, _ in json.loads(sys.argv[1])}))
"""


@dataclass
class LabelStudioServer:
    """A running Label Studio (stop it with :meth:`stop`, or use it as a context manager)."""

    python: Path
    url: str
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen
    tokens: dict[str, str] = field(default_factory=dict)   # email -> legacy API token
    user_ids: dict[str, int] = field(default_factory=dict)
    started_in: float = 0.0
    owns_data_dir: bool = False  # a temp dir made by start(): removed by stop()

    @classmethod
    def start(cls, python: Path, *, data_dir: Path | None = None, postgres: dict[str, str] | None = None,
              timeout: float = 240.0) -> LabelStudioServer:
        """Start Label Studio; ``postgres`` (``POSTGRE_HOST, _PORT, _NAME, _USER, _PASSWORD``)
        puts its database on PostgreSQL instead of SQLite."""
        owns = data_dir is None
        data_dir = Path(data_dir or tempfile.mkdtemp(prefix="labelstudio-"))
        port = free_port()
        token = "labelloop-admin-" + os.urandom(8).hex()
        env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir), "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
               "SSRF_PROTECTION_ENABLED": "false", "ML_BLOCK_LOCAL_IP": "false", "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "false",
               "LOG_LEVEL": "WARNING", "DEBUG": "false", "PYTHONUNBUFFERED": "1"}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        if postgres:
            env.update({"DJANGO_DB": "default", **postgres})
        log = open(data_dir / "server.log", "w")
        started = time.monotonic()
        process = subprocess.Popen(
            [str(python), "-m", "label_studio.server", "start", "--no-browser", "--host", f"http://127.0.0.1:{port}",
             "--internal-host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir), "--username", ADMIN,
             "--password", PASSWORD, "--user-token", token, "--enable-legacy-api-token"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        server = cls(python=python, url=f"http://127.0.0.1:{port}", data_dir=data_dir, env=env, process=process,
                     tokens={ADMIN: token}, owns_data_dir=owns)
        server._wait(timeout)
        server.started_in = time.monotonic() - started
        server.user_ids = {e: i for i, e in server.client(ADMIN).users().items()}
        return server

    def _wait(self, timeout: float) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Label Studio exited ({self.process.returncode}); log:\n{self.log()[-3000:]}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(1.0)
        log = self.log()[-3000:]
        self.stop()
        raise RuntimeError(f"Label Studio did not answer /health in {timeout:.0f} s; log:\n{log}")

    def log(self) -> str:
        path = self.data_dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def add_users(self, emails: list[str]) -> dict[str, str]:
        """Create users (members of the organisation) with known tokens; email -> token."""
        pairs = [(e, "labelloop-" + os.urandom(10).hex()) for e in emails]
        out = subprocess.run([str(self.python), "-c", _CREATE_USERS, json.dumps(pairs), PASSWORD], env=self.env,
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"Creating Label Studio users failed:\n{out.stderr[-3000:]}")
        self.user_ids.update(json.loads(out.stdout.strip().splitlines()[-1]))
        self.tokens.update(pairs)
        return dict(pairs)

    def client(self, email: str = ADMIN):
        from serve.labelstudio_api import HttpTransport, LabelStudioClient

        return LabelStudioClient(HttpTransport(self.url, self.tokens[email]))

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(5)
        if self.owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LabelStudioServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@dataclass(frozen=True)
class Throughput:
    """One load run against Label Studio's own next-task and annotation API."""

    clients: int
    seconds: float
    answers: int
    answers_per_s: float
    p50_ms: float            # one next-task + submit cycle
    p99_ms: float
    next_p50_ms: float       # the next-task call alone
    next_p99_ms: float
    errors: int
    lost: int                # answers acknowledged but missing from the project afterwards
    duplicated: int          # tasks answered by one user twice (next/ gave a task again)
    over_answered: int       # answers beyond a task's overlap (next/ gave one task to two people at once)
    database: str
    error_kinds: tuple[tuple[str, int], ...] = ()   # (exception and message, count), most frequent first


def label_studio_throughput(server: LabelStudioServer, *, clients: int = 32, seconds: float = 60.0,
                            tasks: int = 5000, overlap: int = 1) -> Throughput:
    """``clients`` annotators (each a Label Studio user) loop over next task + submit an
    answer for ``seconds``, on a fresh project of ``tasks`` tasks (each wanted ``overlap``
    times). Latency is one cycle (both calls); lost and duplicated are checked afterwards
    against the project's export."""
    emails = [f"bench{k}@labelloop.test" for k in range(clients)]
    missing = [e for e in emails if e not in server.tokens]
    if missing:
        server.add_users(missing)
    admin = server.client()
    project = admin.create_project(f"bench-{os.urandom(3).hex()}", LABEL_CONFIG, maximum_annotations=overlap,
                                   sampling="Sequential sampling")
    for start in range(0, tasks, 1000):
        admin.import_tasks(project, [{"data": {"text": f"item {k}", "item_id": f"b{k}"}}
                                     for k in range(start, min(tasks, start + 1000))])
    result = [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["pos"]}}]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    next_latencies: list[list[float]] = [[] for _ in range(clients)]
    acked: list[list[int]] = [[] for _ in range(clients)]
    errors = Counter()
    stop_at = [0.0]
    barrier = threading.Barrier(clients + 1)

    def annotator(k: int) -> None:
        me = server.client(emails[k])
        barrier.wait()
        while time.monotonic() < stop_at[0]:
            t0 = time.perf_counter()
            try:
                task = me.next_task(project)
                next_latencies[k].append(time.perf_counter() - t0)
                if task is None:
                    break
                answer = me.annotate(int(task["id"]), result, lead_time=1.0)
            except Exception as exc:  # counted, the run goes on
                errors[f"{type(exc).__name__}: {str(exc)[:200]}"] += 1
                continue
            latencies[k].append(time.perf_counter() - t0)
            acked[k].append(int(answer["id"]))

    threads = [threading.Thread(target=annotator, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.monotonic() + seconds
    barrier.wait()
    began = time.monotonic()
    for t in threads:
        t.join(seconds + 120)
    elapsed = time.monotonic() - began
    export = admin.export(project)
    stored = {a["id"]: (t["id"], a["completed_by"]) for t in export for a in t.get("annotations", [])}
    sent = [i for ids in acked for i in ids]
    per_user_task = Counter(stored.values())
    per_task = Counter(task for task, _ in stored.values())
    lat = np.array([x for xs in latencies for x in xs]) * 1000
    nxt = np.array([x for xs in next_latencies for x in xs]) * 1000
    return Throughput(clients=clients, seconds=elapsed, answers=len(sent), answers_per_s=len(sent) / elapsed,
                      p50_ms=float(np.percentile(lat, 50)) if len(lat) else float("nan"),
                      p99_ms=float(np.percentile(lat, 99)) if len(lat) else float("nan"),
                      next_p50_ms=float(np.percentile(nxt, 50)) if len(nxt) else float("nan"),
                      next_p99_ms=float(np.percentile(nxt, 99)) if len(nxt) else float("nan"),
                      errors=sum(errors.values()), lost=len(set(sent) - set(stored)),
                      duplicated=sum(n - 1 for n in per_user_task.values() if n > 1),
                      over_answered=sum(n - overlap for n in per_task.values() if n > overlap),
                      database="postgresql" if server.env.get("DJANGO_DB") == "default" else "sqlite",
                      error_kinds=tuple(errors.most_common()))


def fresh_postgres(admin_url: str, name: str) -> dict[str, str]:
    """An empty PostgreSQL database ``name`` (dropped first if it exists) as Label Studio's
    ``POSTGRE_*`` settings; ``admin_url`` is a database on the same server to connect to."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(admin_url)
    with psycopg.connect(admin_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return {"POSTGRE_HOST": url.host or "127.0.0.1", "POSTGRE_PORT": str(url.port or 5432),
            "POSTGRE_USER": url.username or "postgres", "POSTGRE_PASSWORD": url.password or "", "POSTGRE_NAME": name}


def main() -> None:
    """``python benchmarks/_label_studio.py [clients] [seconds] [--postgres]``: one run, printed.
    ``--postgres`` puts Label Studio on a fresh database ``labelstudio_bench`` of the server at
    ``$LS_BENCH_PG_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``)."""
    sys.path.insert(0, str(ROOT))
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    clients = int(args[0]) if args else 32
    seconds = float(args[1]) if len(args) > 1 else 60.0
    postgres = None
    if "--postgres" in sys.argv:
        postgres = fresh_postgres(os.environ.get("LS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
                                  "labelstudio_bench")
    python = label_studio_python(install=True)
    data = Path(tempfile.mkdtemp(prefix="labelstudio-bench-"))
    try:
        with LabelStudioServer.start(python, data_dir=data, postgres=postgres) as server:
            print(f"Label Studio up in {server.started_in:.0f} s ({server.url})", flush=True)
            print(label_studio_throughput(server, clients=clients, seconds=seconds), flush=True)
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
