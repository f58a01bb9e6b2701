"""README.md's "Team setup" and "Annotation team", run as written on this machine.

The commands are the README's own code blocks, read from README.md and run with bash: fresh
PostgreSQL databases, ``labelloop db upgrade``, ``mlflow server`` on PostgreSQL, a Ray head
started by ``ray start --head`` as its own process, the Serve config written by the README's
Python, ``serve deploy`` and ``serve status``, the first admin token from ``labelloop tokens
issue``, then the curl commands of the annotation team. Only what a single test machine must
differ in is replaced, and each replacement must find its text (so a README edit that the test
does not follow fails here, naming it): host names become 127.0.0.1, ports free ones, database
names unique ones, the artifact bucket a temp directory; ``ray start`` also gets this machine's
CPUs, a small object store, a short temp dir and ports of its own for every Ray server, since
other Rays may run beside it.

Then a scripted team works against the deployed app: a client ingests digits over
``POST /v1/items``, an admin posts their tasks, and three annotator bots (threads, each with its
own token, one an expert of tier 3) answer through ``GET /v1/tasks/next`` and
``POST /v1/tasks/{id}/annotations`` from a noisy simulated truth until no task is left. The store
holds exactly the answers the app acknowledged, ``/metrics`` counts them, and ``/review`` is served.

Last, "The service with people": ``labelloop serve --config team.yaml --rounds 2`` (team.yaml
as the README shows it, pointed at the app, the MLflow server and the store) plans each round's
tasks, the same bots answer them while it waits, and each round is a nested MLflow run on the
server with the gate's verdict, counting exactly the answers the bots were acknowledged.

Teardown kills the process groups this test started (never ``ray stop``: it stops every Ray on
the machine, other people's included) and drops the databases.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import requests

pytest.importorskip("ray")
pytest.importorskip("mlflow")
psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
IN_CI = os.environ.get("CI", "").lower() == "true"
PG_URLS = ([os.environ["LABELLOOP_TEST_PG_URL"]] if os.environ.get("LABELLOOP_TEST_PG_URL") else
           ["postgresql://postgres@127.0.0.1:5432/test", "postgresql://root@127.0.0.1:5432/test"])
MODEL = "labelloop"  # the README's app model_name and team.yaml's tracking.registered_model
STREAM = "digits"
CLASSES = [str(d) for d in range(10)]
# The scripted team: name, tier (3: an expert, README "Annotation team"), how often the bot's
# answer is the truth, hourly rate.
TEAM = (("ada", 1, 0.9, 20.0), ("bo", 1, 0.75, 20.0), ("cy", 3, 0.97, 60.0))
ITEMS = 40
START_TIMEOUT_S = 240.0


# ----------------------------------------------------------------------------- the README's text

def readme_section(title: str) -> str:
    """The text of ``## title`` up to the next ``## `` heading."""
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def shell_blocks(section: str) -> list[str]:
    """The indented code blocks of a section (markdown's four spaces, list items' seven), dedented."""
    blocks: list[str] = []
    current: list[str] = []
    previous_indent = 0
    for line in section.splitlines() + [""]:
        indent = len(line) - len(line.lstrip(" "))
        if line.strip() and (current or indent >= previous_indent + 4):
            if not current and indent < 4:
                previous_indent = indent
                continue
            if current and indent < len(current[0]) - len(current[0].lstrip(" ")):
                blocks.append(textwrap.dedent("\n".join(current)).strip("\n"))
                current = []
                previous_indent = indent
                continue
            current.append(line)
        elif not line.strip():
            if current:
                current.append("")
        else:
            if current:
                blocks.append(textwrap.dedent("\n".join(current)).strip("\n"))
                current = []
            previous_indent = indent
    if current:
        blocks.append(textwrap.dedent("\n".join(current)).strip("\n"))
    return blocks


def python_blocks(section: str) -> list[str]:
    """The fenced ```python blocks of a section, dedented."""
    return [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)^\s*```", section, flags=re.S | re.M)]


def block_with(blocks: list[str], text: str) -> str:
    """The one block that contains ``text``."""
    found = [b for b in blocks if text in b]
    assert len(found) == 1, f"expected one README block with {text!r}, found {len(found)}"
    return found[0]


def here(block: str, replacements: dict[str, str]) -> str:
    """``block`` with each README value replaced by this machine's; every value must occur."""
    for old, new in replacements.items():
        assert old in block, f"the README block no longer has {old!r}:\n{block}"
        block = block.replace(old, new)
    return block


def commands(block: str) -> list[str]:
    """A shell block's commands, one a line (continuations joined, trailing comments dropped)."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = [re.sub(r"\s+#\s.*$", "", line).strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


# ----------------------------------------------------------------------------- processes

def _run(cmd: str, env: dict[str, str], cwd: Path, timeout: float = 180.0) -> str:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", cmd], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd}\nexit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _spawn(cmd: str, env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(["bash", "-c", cmd], env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _kill_group(leader: subprocess.Popen) -> None:
    """SIGTERM the process group this test started (``leader`` is its first process), then
    SIGKILL what is left of it."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(leader.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            leader.poll()  # reap the leader: a zombie still counts as a member of its group
            try:
                os.killpg(leader.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def _pids_under(temp_dir: Path) -> list[int]:
    """Processes whose command line names ``temp_dir`` (Ray's, when one left its group)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if str(temp_dir).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _wait_for(url: str, *, ok=(200,), timeout_s: float = START_TIMEOUT_S, proc: subprocess.Popen | None = None,
              log: Path | None = None) -> requests.Response:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{url}: the server exited ({proc.returncode}):\n"
                                 f"{log.read_text()[-3000:] if log else ''}")
        try:
            answer = requests.get(url, timeout=5)
            if answer.status_code in ok:
                return answer
            last = f"HTTP {answer.status_code}: {answer.text[:200]}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer {ok} within {timeout_s:g} s (last: {last})"
                         + (f"\n{log.read_text()[-3000:]}" if log and log.exists() else ""))


def _pg_base() -> str:
    errors = []
    for url in PG_URLS:
        try:
            with psycopg.connect(url.replace("+psycopg", ""), connect_timeout=3):
                return url
        except psycopg.Error as exc:
            errors.append(f"{url}: {str(exc).strip().splitlines()[0]}")
    reason = f"PostgreSQL is unreachable ({'; '.join(errors)})"
    if IN_CI:
        pytest.fail(reason + "; CI=true, so the team setup must run")
    pytest.skip(reason)


# ----------------------------------------------------------------------------- the setup

@dataclass
class Team:
    """The running team setup: where everything is, and the tokens."""

    work: Path
    env: dict[str, str]
    pg_user: str
    pg_hostport: str
    store_url: str
    tracking_uri: str
    app: str
    dashboard: str
    admin: str = ""
    tokens: dict[str, str] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def h(self, who: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin if who == 'admin' else self.tokens[who]}"}

    def post(self, path: str, body=None, who: str = "admin", **kw) -> requests.Response:
        # A POST without a body still says JSON, as the README's curl does (else 415).
        return requests.post(self.app + path, json={} if body is None else body, headers={**self.h(who), **kw.pop("headers", {})},
                             timeout=60, **kw)

    def get(self, path: str, who: str = "admin", **kw) -> requests.Response:
        return requests.get(self.app + path, headers=self.h(who), timeout=60, **kw)


def _shim_bin(work: Path) -> Path:
    """``labelloop`` on PATH as a user has it, for this checkout (the venv's ``bin`` follows it)."""
    bin_dir = work / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "labelloop"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m experiments.cli "$@"\n')
    shim.chmod(0o755)
    return bin_dir


def _haproxy_env() -> tuple[dict[str, str], Path | None]:
    """What ``serve.local`` sets for a local Ray's HAProxy (private files, stats and metrics on
    127.0.0.1, on ports no other Ray here uses), as variables for the ``ray start`` process."""
    from serve.local import confine_haproxy, quiet_port

    saved = dict(os.environ)
    try:
        for name in list(os.environ):
            if name.startswith("RAY_SERVE_HAPROXY_"):
                del os.environ[name]
        stats = quiet_port()
        os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] = str(stats)
        os.environ["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(quiet_port(exclude=[stats]))
        folder = confine_haproxy()
        chosen = {k: v for k, v in os.environ.items() if k.startswith("RAY_SERVE_HAPROXY_")}
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return chosen, folder


_PUBLISH = """
import sys
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits
from loop.calibration import CalibratedClassifier, TemperatureScaling
from serve.registry import publish_model

x, y = load_digits(return_X_y=True)
with threadpool_limits(1):
    clf = LogisticRegression(C=0.01, max_iter=2000).fit(x[:900], y[:900])
model = CalibratedClassifier(clf, TemperatureScaling().fit(clf.predict_proba(x[900:1300]), y[900:1300]),
                             n_classes=10)
print(publish_model(model, model_name=sys.argv[1], tracking_uri=sys.argv[2]))
"""


@pytest.fixture(scope="module")
def team(tmp_path_factory) -> Iterator[Team]:
    """The README's team setup, running: PostgreSQL, MLflow server, Ray head, the Serve app."""
    import ray

    from serve.local import quiet_port, shutdown_local

    # The team's machine runs one Ray, its own. The test session's Ray (the ray_serve fixture
    # of the Serve tests before this module) has an HAProxy that took this setup's app port in
    # the full suite and answered for it; no test after this module needs it.
    if ray.is_initialized():
        shutdown_local()

    base = _pg_base()
    pg_user, pg_hostport = re.match(r"postgresql(?:\+psycopg)?://([^@/]+)@([^/]+)/", base).groups()
    tag = uuid.uuid4().hex[:10]
    databases = {"mlflow": f"ll_team_{tag}_mlflow", "labelloop": f"ll_team_{tag}_labels",
                 "optuna": f"ll_team_{tag}_optuna"}
    work = tmp_path_factory.mktemp("team")
    bin_dir = _shim_bin(work)
    ray_tmp = Path(tempfile.mkdtemp(prefix="rayteam", dir="/tmp"))  # Ray's socket paths must stay short
    haproxy_vars, haproxy_dir = _haproxy_env()
    home = work / "home"  # Ray keeps its token in ~/.ray: this test's own, not the user's
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "PYTHONUNBUFFERED": "1"}
    env.pop("LABELLOOP_STORE_URL", None)
    # A new user's shell holds no MLflow run context; what other tests in this process left
    # behind (an experiment id of another tracking store) must not leak into the README's commands.
    for leaked in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(leaked, None)
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(name, None)
    ports: list[int] = []

    def port() -> int:
        ports.append(quiet_port(exclude=ports))
        return ports[-1]

    mlflow_port, gcs_port, dashboard_port, app_port = port(), port(), port(), port()
    store_url = f"postgresql://{pg_user}@{pg_hostport}/{databases['labelloop']}"
    t = Team(work=work, env=env, pg_user=pg_user, pg_hostport=pg_hostport, store_url=store_url,
             tracking_uri=f"http://127.0.0.1:{mlflow_port}", app=f"http://127.0.0.1:{app_port}",
             dashboard=f"http://127.0.0.1:{dashboard_port}")
    setup = readme_section("Team setup")
    blocks = shell_blocks(setup)
    groups: list[subprocess.Popen] = []
    created: list[str] = []
    try:
        # 1. PostgreSQL: the three databases.
        for cmd in commands(here(block_with(blocks, "createdb"), {
                "-h db -U postgres": f"-h {pg_hostport.split(':')[0]} -p {pg_hostport.split(':')[1]} -U {pg_user}",
                " mlflow\n": f" {databases['mlflow']}\n", " labelloop\n": f" {databases['labelloop']}\n",
                " optuna": f" {databases['optuna']}"})):
            _run(cmd, env, work)
            created.append(cmd.split()[-1])
        assert sorted(created) == sorted(databases.values())
        # 2. The MLflow tracking server on PostgreSQL, artifacts in a directory.
        (work / "artifacts").mkdir()
        mlflow_cmd = here(block_with(blocks, "mlflow server"), {
            f"mlflow@db:5432/mlflow": f"{pg_user}@{pg_hostport}/{databases['mlflow']}",
            "s3://your-bucket/mlflow": str(work / "artifacts"),
            "--host 0.0.0.0 --port 5000 --workers 4": f"--host 127.0.0.1 --port {mlflow_port} --workers 1"})
        t.logs["mlflow"] = work / "mlflow.log"
        mlflow_server = _spawn(" ".join(commands(mlflow_cmd)), env, work, t.logs["mlflow"])
        groups.append(mlflow_server)
        # 3. The label store.
        upgrade = re.search(r"`(labelloop db upgrade --url [^`]+)`", setup).group(1)
        print(_run(here(upgrade, {"labelloop@db:5432/labelloop": f"{pg_user}@{pg_hostport}/{databases['labelloop']}"}),
                   env, work))
        # 4. The Ray head, its own process; the Serve config; serve deploy.
        ray_block = commands(here(block_with(blocks, "ray start --head"), {
            "--port 6379 --dashboard-host 0.0.0.0": f"--port {gcs_port} --dashboard-host 127.0.0.1",
            "http://head:8265": t.dashboard}))
        exports = [c for c in ray_block if c.startswith("export ")]
        assert any("RAY_SERVE_ENABLE_HA_PROXY=1" in c for c in exports) and \
            any("RAY_AUTH_MODE=token" in c for c in exports), "the README's Ray variables, before `ray start`"
        head = next(c for c in ray_block if c.startswith("ray start --head"))
        isolation = (f" --num-cpus 2 --object-store-memory {256 * 1024 ** 2} --temp-dir {ray_tmp}"
                     f" --dashboard-port {dashboard_port} --node-manager-port {port()}"
                     f" --object-manager-port {port()} --ray-client-server-port {port()}"
                     f" --dashboard-agent-listen-port {port()} --dashboard-agent-grpc-port {port()}"
                     f" --runtime-env-agent-port {port()} --metrics-export-port {port()}")
        prelude = "; ".join(exports + [f"export {k}={shlex.quote(v)}" for k, v in haproxy_vars.items()])
        for cmd in ray_block:
            if cmd.startswith("ray get-auth-token"):  # into this test's $HOME/.ray, not the user's
                _run(f"{prelude}; {cmd}", env, work)
        assert (home / ".ray" / "auth_token").exists()
        t.logs["ray"] = work / "ray-start.log"
        ray_start = _spawn(f"{prelude}; {head}{isolation}", env, work, t.logs["ray"])
        groups.append(ray_start)
        assert ray_start.wait(timeout=START_TIMEOUT_S) == 0, t.logs["ray"].read_text()[-3000:]
        env["RAY_ADDRESS"] = f"127.0.0.1:{gcs_port}"
        _wait_for(f"{t.tracking_uri}/health", proc=mlflow_server, log=t.logs["mlflow"])
        print(_run(f"python -c {shlex.quote(_PUBLISH)} {MODEL} {t.tracking_uri}", env, work))
        config = here(python_blocks(setup)[0], {
            f'"model_name": "{MODEL}"': f'"model_name": "{MODEL}"',  # kept: team.yaml's registered_model
            "http://mlflow:5000": t.tracking_uri,
            "postgresql://labelloop@db:5432/labelloop": store_url,
            'host="0.0.0.0", port=8000': f'host="127.0.0.1", port={app_port}'})
        _run(f"python -c {shlex.quote(config)}", env, work)
        for cmd in ray_block:
            if cmd.startswith("serve "):
                print(_run(f"{prelude}; {cmd}", env, work))
        health = _wait_for(f"{t.app}/v1/health").json()
        if health["model"]["name"] != MODEL:  # another app answers on this port: say whose
            listeners = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
            raise AssertionError(f"port {app_port} answers for {health}:\n"
                                 + "\n".join(x for x in listeners.splitlines() if f":{app_port} " in x))
        # The first admin token, as "Annotation team" issues it.
        team_blocks = shell_blocks(readme_section("Annotation team"))
        issue = re.search(r"\$\((labelloop tokens issue [^)]+)\)", block_with(team_blocks, "labelloop tokens issue"))
        t.admin = _run(here(issue.group(1), {"postgresql://labelloop@db:5432/labelloop": store_url}), env, work).strip()
        assert re.fullmatch(r"ll_\S+", t.admin), t.admin
        yield t
    finally:
        for leader in reversed(groups):
            _kill_group(leader)
        for pid in _pids_under(ray_tmp):  # a Ray process that left the group (none expected)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(ray_tmp, ignore_errors=True)
        if haproxy_dir is not None:
            shutil.rmtree(haproxy_dir, ignore_errors=True)
        with psycopg.connect(base.replace("+psycopg", ""), autocommit=True) as conn:
            for name in databases.values():
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ----------------------------------------------------------------------------- the tests

def test_the_readme_annotation_team_commands_run_as_written(team: Team) -> None:
    """The "Annotation team" curl commands, in bash against the deployed app: a stream, an
    annotator and their token, a guideline published, an item ingested and its task answered."""
    blocks = shell_blocks(readme_section("Annotation team"))
    script = "\n".join(here(b, {"http://head:8000": team.app,
                                "postgresql://labelloop@db:5432/labelloop": team.store_url})
                       if "export APP" in b else b
                       for b in blocks)
    out = _run(script.replace("curl -s", "curl --fail-with-body -sS"), team.env, team.work)
    answers, decoder, rest = [], json.JSONDecoder(), out.strip()
    while rest:
        doc, end = decoder.raw_decode(rest)
        answers.append(doc)
        rest = rest[end:].strip()
    assert not [a for a in answers if "error" in a], answers
    assert len(answers) == sum(line.startswith("curl") for line in script.splitlines())  # one JSON per curl
    done = team.get("/v1/tasks", params={"stream": "reviews"}).json()["tasks"]
    assert [(t["item_id"], t["status"], t["annotator"]) for t in done] == [("r1", "done", "ann")]
    guideline = team.get("/v1/streams/reviews/guidelines/1").json()["guideline"]
    assert guideline["published_at"] is not None and "## neg vs pos" in guideline["text"]
    from loop.store import LabelStore

    with LabelStore(team.store_url) as store:
        stored = store.annotations_frame("reviews", extras=("rationale",))
    assert stored[["item_id", "annotator_id", "label", "rationale"]].values.tolist() == [["r1", "ann", 0, "sarcasm"]]


@dataclass
class Bot:
    """An annotator working through the task API with its own token, answering from a noisy truth."""

    name: str
    token: str
    accuracy: float
    seed: int
    acknowledged: list[tuple[int, str, str, int]] = field(default_factory=list)  # task, item, label, annotation
    errors: list[str] = field(default_factory=list)

    def work(self, app: str, truth: dict[str, int], stop: threading.Event, *, until_empty: bool,
             stream: str = STREAM) -> None:
        rng = np.random.default_rng(self.seed)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.token}"
        try:
            while not stop.is_set():
                nxt = session.get(f"{app}/v1/tasks/next", params={"stream": stream}, timeout=60)
                if nxt.status_code == 204:
                    if until_empty:
                        return
                    time.sleep(0.5)
                    continue
                nxt.raise_for_status()
                task = nxt.json()["task"]
                true = truth[task["item_id"]]
                label = true if rng.random() < self.accuracy else int(rng.choice([c for c in range(10) if c != true]))
                body = {"label": CLASSES[label], "seconds": float(rng.uniform(3, 20))}
                key = {"Idempotency-Key": f"{self.name}-{task['task_id']}"}
                url = f"{app}/v1/tasks/{task['task_id']}/annotations"
                answer = session.post(url, json=body, headers=key, timeout=60)
                assert answer.status_code == 201, answer.text
                stored = answer.json()["annotation"]
                if rng.random() < 0.2:  # a client retry: the stored answer again, nothing new
                    again = session.post(url, json=body, headers=key, timeout=60)
                    assert again.status_code == 200 and again.json()["annotation"]["annotation_id"] == \
                        stored["annotation_id"], again.text
                self.acknowledged.append((task["task_id"], task["item_id"], stored["label"], stored["annotation_id"]))
        except Exception as exc:  # reported by the test, with the bot's name
            self.errors.append(f"{self.name}: {exc!r}")


def _hire(team: Team) -> list[Bot]:
    """The digits stream, its team and their tokens, a published guideline, as an admin over HTTP
    (the README's requests, for a second stream)."""
    made = team.post("/v1/streams", {"name": STREAM, "classes": CLASSES, "owner": "lead"})
    assert made.status_code == 201, made.text
    bots = []
    for k, (name, tier, accuracy, rate) in enumerate(TEAM):
        added = team.post("/v1/annotators", {"name": name, "tier": tier, "streams": [STREAM],
                                             "email": f"{name}@example.com", "hourly_rate": rate})
        assert added.status_code == 201 and added.json()["annotator"]["tier"] == tier, added.text
        token = team.post(f"/v1/annotators/{name}/tokens")
        assert token.status_code == 201, token.text
        bots.append(Bot(name, token.json()["token"], accuracy, seed=k))
    draft = team.post(f"/v1/streams/{STREAM}/guidelines", {"text": "# Digits\nThe digit written.\n\n## 1 vs 7\n"
                                                                    "A 7 has a bar on top."})
    assert draft.status_code == 201, draft.text
    version = draft.json()["guideline"]["version"]
    assert team.post(f"/v1/streams/{STREAM}/guidelines/{version}/publish").status_code == 200
    client = team.post("/v1/tokens", {"name": "scorer", "role": "client"})
    assert client.status_code == 201, client.text
    team.tokens["client"] = client.json()["token"]
    return bots


def _answers_in_store(team: Team, stream: str = STREAM) -> list[tuple[int, str, str, int]]:
    """The answers people gave on ``stream`` (not the labels items arrived with)."""
    from experiments.live import CURRENT_LABEL
    from loop.store import LabelStore

    with LabelStore(team.store_url) as store:
        frame = store.annotations_frame(stream)
    return sorted((int(r.task_id), r.item_id, CLASSES[int(r.label)], int(r.annotation_id))
                  for r in frame.itertuples(index=False) if r.annotator_id != CURRENT_LABEL)


@pytest.fixture(scope="module")
def crew(team: Team) -> list[Bot]:
    return _hire(team)


def test_a_scripted_team_answers_every_task_and_the_store_holds_each_answer_once(team: Team, crew) -> None:
    from sklearn.datasets import load_digits

    bots = [Bot(b.name, b.token, b.accuracy, b.seed) for b in crew]
    x, y = load_digits(return_X_y=True)
    ids = [f"d{k}" for k in range(ITEMS)]
    truth = dict(zip(ids, y[1300:1300 + ITEMS].tolist()))
    items = [{"item_id": i, "features": row.tolist(), "payload": {"text": f"digit image {i}"}}
             for i, row in zip(ids, x[1300:1300 + ITEMS])]
    team.tokens["ada"] = bots[0].token
    assert team.post("/v1/items", {"stream": STREAM, "items": items[:1]}, who="ada").status_code == 403
    ingested = team.post("/v1/items", {"stream": STREAM, "items": items}, who="client")
    assert ingested.status_code == 200, ingested.text
    routes = {a["item_id"]: a["route"] for a in ingested.json()["items"]}
    assert {a["model_version"] for a in ingested.json()["items"]} == {f"{MODEL}/1"}
    # The round driver's plan, by hand: an expert task (tier 3) where the route says expert, else
    # a label task. (Not both: nobody gets an item they labelled, and cy is the only expert.)
    specs = [{"item_id": i, "kind": "expert", "tier": 3, "round": 1} if routes[i] == "expert" else
             {"item_id": i, "round": 1} for i in ids]
    assert "expert" in routes.values()
    made = team.post(f"/v1/streams/{STREAM}/tasks", {"tasks": specs})
    assert made.status_code == 201 and made.json()["inserted"] == len(specs), made.text
    stop = threading.Event()
    threads = [threading.Thread(target=b.work, args=(team.app, truth, stop), kwargs={"until_empty": True})
               for b in bots]
    started = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    stop.set()
    elapsed = time.monotonic() - started
    assert not [e for b in bots for e in b.errors], [e for b in bots for e in b.errors]
    acknowledged = sorted(a for b in bots for a in b.acknowledged)
    assert len(acknowledged) == len(specs)  # one answer a task: every task answered
    left = team.get("/v1/tasks", params={"stream": STREAM}).json()["tasks"]
    assert {t["status"] for t in left} == {"done"} and len(left) == len(specs)
    assert _answers_in_store(team) == acknowledged  # none lost, none stored twice
    expert_tasks = {t for t, spec in zip(made.json()["task_ids"], specs) if spec.get("kind") == "expert"}
    assert {b.name for b in bots for a in b.acknowledged if a[0] in expert_tasks} <= {"cy"}  # experts only
    metrics = team.get("/metrics", who="client")
    assert metrics.status_code == 200
    answered = re.search(r'labelloop_answers_per_minute\{stream="digits"\} (\S+)', metrics.text)
    assert answered is not None, metrics.text
    if elapsed < 50:  # all of them within the last minute
        assert float(answered.group(1)) == len(acknowledged)
    assert not re.search(r'labelloop_queue_depth\{stream="digits"[^}]*\} [1-9]', metrics.text)


def test_the_review_page_is_served_by_the_deployed_app(team: Team) -> None:
    assert "`$APP/review`" in readme_section("Annotation team")
    page = requests.get(f"{team.app}/review", timeout=30)  # no token: the page holds no data
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/v1/tasks/next" in page.text and "script-src 'sha256-" in page.headers["content-security-policy"]


LIVE_STREAM = "labelloop"  # team.yaml's live.stream
GOLD_ITEMS, ROUND_ITEMS, ROUNDS = 40, 30, 2


def _items_csv(path: Path) -> dict[str, int]:
    """Digits as a team's table ("Your own data"): features, the label each item arrives with (a
    quarter of them wrong), and gold on the first GOLD_ITEMS; returns the truth by item id."""
    import pandas as pd
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    n = GOLD_ITEMS + (ROUNDS + 1) * ROUND_ITEMS
    rng = np.random.default_rng(7)
    x, y = x[1400:1400 + n], y[1400:1400 + n]
    labels = np.where(rng.random(n) < 0.25, (y + rng.integers(1, 10, n)) % 10, y)
    frame = pd.DataFrame(x, columns=[f"f{j}" for j in range(x.shape[1])])
    frame.insert(0, "item_id", [f"i{k}" for k in range(n)])
    frame.insert(1, "label", labels)
    frame.insert(2, "gold", pd.array([int(v) if k < GOLD_ITEMS else None for k, v in enumerate(y)], dtype="Int64"))
    frame.to_csv(path, index=False)
    return dict(zip(frame["item_id"], y.tolist()))


def test_the_service_with_people_runs_its_rounds_on_the_teams_answers(team: Team, crew) -> None:
    """README's "The service with people": team.yaml against the deployed app, the MLflow server
    and the store; `labelloop serve` plans each round's tasks, the bots answer them, and every
    round is an MLflow run with the gate's verdict."""
    from mlflow.tracking import MlflowClient

    from experiments import tracking as T

    section = readme_section("Team setup")
    service = section[section.index("### The service with people"):]
    blocks = shell_blocks(service)
    yaml_text = here(block_with(blocks, "live: {"), {
        "http://mlflow:5000": team.tracking_uri, "postgresql://labelloop@db:5432/labelloop": team.store_url,
        "http://head:8000": team.app,
        # Minutes, not a day: a task nobody can take (an expert's audit of an item they labelled)
        # is escalated after sla_seconds, and the round goes on.
        "sla_seconds: 86400, round_items: 100, round_seconds: 3600, poll_seconds: 5":
            f"sla_seconds: 45, round_items: {ROUND_ITEMS}, round_seconds: 5, poll_seconds: 1"})
    (team.work / "team.yaml").write_text(yaml_text + "\n")
    truth = _items_csv(team.work / "items.csv")
    # The stream and its people first, as an admin over HTTP.
    made = team.post("/v1/streams", {"name": LIVE_STREAM, "classes": CLASSES, "owner": "lead"})
    assert made.status_code == 201, made.text
    for bot in crew:
        moved = requests.patch(f"{team.app}/v1/annotators/{bot.name}", json={"streams": [LIVE_STREAM]},
                               headers=team.h(), timeout=30)
        assert moved.status_code == 200 and LIVE_STREAM in moved.json()["annotator"]["streams"], moved.text
    bots = [Bot(b.name, b.token, b.accuracy, b.seed + 10) for b in crew]
    stop = threading.Event()
    threads = [threading.Thread(target=b.work, args=(team.app, truth, stop),
                                kwargs={"until_empty": False, "stream": LIVE_STREAM}) for b in bots]
    for th in threads:
        th.start()
    run = commands(here(block_with(blocks, "labelloop serve"), {
        "postgresql://labelloop@db:5432/labelloop": team.store_url}))
    token = next(c for c in run if c.startswith("export LABELLOOP_TOKEN"))
    serve_cmd = next(c for c in run if c.startswith("labelloop serve"))
    started = time.monotonic()
    try:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", f"{token}; {serve_cmd} --rounds {ROUNDS}"],
                              env=team.env, cwd=team.work, capture_output=True, text=True, timeout=900,
                              start_new_session=True)
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=120)
    print(f"labelloop serve: {time.monotonic() - started:.0f} s\n{done.stdout[-4000:]}")
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
    assert not [e for b in bots for e in b.errors], [e for b in bots for e in b.errors]
    acknowledged = sorted(a for b in bots for a in b.acknowledged)
    assert acknowledged, "the service made no task the team could answer"
    assert _answers_in_store(team, LIVE_STREAM) == acknowledged  # what the team gave, once each
    from loop.store import LabelStore

    with LabelStore(team.store_url) as store:
        tasks = store.tasks_frame(LIVE_STREAM)
    # Nothing left open: each task answered by the team, or escalated and cancelled at its SLA.
    assert set(tasks["status"]) <= {"done", "cancelled"}, tasks["status"].value_counts()
    from experiments.live import CURRENT_LABEL

    people = tasks[tasks["annotator_id"] != CURRENT_LABEL]  # not the labels items arrived with
    print(people.groupby(["round", "kind", "status"]).size().to_string())
    assert set(people.loc[people["status"] == "done", "task_id"]) == {a[0] for a in acknowledged}
    # Every round is a nested MLflow run on the server, with the gate's verdict.
    client = MlflowClient(team.tracking_uri, registry_uri=team.tracking_uri)  # not the process-wide registry an earlier test set
    experiment = client.get_experiment_by_name("labelloop-serve")
    rounds = client.search_runs([experiment.experiment_id], f"tags.`{T.TAG_ROLE}` = '{T.ROLE_ROUND}'")
    by_round = {int(r.data.tags[T.TAG_ROUND]): r for r in rounds}
    assert set(range(1, ROUNDS + 1)) <= set(by_round), sorted(by_round)
    # The answers drove the rounds: the last one counts the items' initial labels and every answer.
    last = by_round[ROUNDS].data.metrics
    assert last[T.ANNOTATIONS] == (ROUNDS + 1) * ROUND_ITEMS + len(acknowledged), last
    assert last[T.PROGRAM_COST] > 0
    for r in range(1, ROUNDS + 1):
        tags = by_round[r].data.tags
        assert tags[T.TAG_GATE_VERDICT] in (T.VERDICT_PROMOTED, T.VERDICT_REFUSED)
        assert T.TAG_GATE_REASON in tags
        assert by_round[r].info.status == "FINISHED"
    # The app serves the champion the program left (it reloaded after each promotion).
    champion = client.get_model_version_by_alias(MODEL, T.ALIAS_CHAMPION).version
    served = team.get("/v1/model").json()
    assert str(served["version"]) == str(champion), served
    assert int(champion) >= 2  # the seed round's model replaced the one published by hand
