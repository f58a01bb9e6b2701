"""The program with people as its workforce (experiments.live): scripted annotators answer
tasks from a simulated crowd; the truth stays in this test, where it checks the estimates."""

from __future__ import annotations

import contextlib
import time

import numpy as np
import pandas as pd
import pytest

from experiments import tracking as T
from experiments.config import ConfigError, parse_config
from experiments.live import CURRENT_LABEL, HumanWorkforce, RoundSchedule, StoreDataset, serve_program
from experiments.ports import Request
from loop.columns import ANNOTATOR, ITEM, LABEL, SECONDS
from loop.exceptions import LoopError
from loop.simulate import make_crowd
from loop.store import PAYLOAD, TASK_ID, LabelStore

pytest.importorskip("fastapi")
pytest.importorskip("ray")  # serve.app imports it; no Ray starts here

from serve.app import api  # noqa: E402
from serve.auth import Services, get_services  # noqa: E402
from tests.serve.asgi_client import AsgiClient  # noqa: E402

STREAM = "digits-live"
CLASSES = [str(d) for d in range(10)]
GOLD, ROUND_ITEMS, ROUNDS = 60, 60, 3
TIER_CODES = {"novice": 1, "experienced": 2, "expert": 3}


class _Clock:
    """Seconds that pass only when somebody waits; waiting lets the world move (``on_wait``)."""

    def __init__(self) -> None:
        # From now: the task API stamps and escalates by the wall clock, so due dates must be real ones.
        self.t = time.time()
        self.on_wait: list = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(seconds, 1.0)
        for step in self.on_wait:
            step()


class _Bots:
    """Scripted annotators, one per simulated crowd member, each with its own bearer token (issued
    by an admin over HTTP): a bot asks the task API for its next task (``GET /v1/tasks/next``: its
    tier, an item it has not labelled), answers it from its confusion matrix (``POST
    /v1/tasks/{id}/annotations``, the class by name) and goes on until nothing is left or
    ``limit`` answers are in. The app is the Serve app's own FastAPI object, called in process on
    the real store (no Ray). ``sent`` keeps every answer the API took."""

    def __init__(self, store: LabelStore, crowd, truth: pd.Series, *, seed: int, limit: int | None = None) -> None:
        self.crowd, self.truth, self.limit = crowd, truth, limit
        self.rng = np.random.default_rng(seed)
        self.http = AsgiClient(api)
        self.services = Services(store, auth="token", task_sla_hours=2.0)
        with self._app():
            admin = {"Authorization": f"Bearer {store.issue_token('ops', 'admin')}"}
            self.tokens = {}
            for name in crowd.ids:
                issued = self.http.post(f"/v1/annotators/{name}/tokens", headers=admin)
                assert issued.status_code == 201, issued.text
                self.tokens[name] = issued.json()["token"]
        self.sent: list[dict] = []

    @contextlib.contextmanager
    def _app(self):
        api.dependency_overrides[get_services] = lambda: self.services  # Serve's Router gives its store
        try:
            yield
        finally:
            api.dependency_overrides.pop(get_services, None)

    def work(self) -> None:
        with self._app():
            busy = list(self.tokens)
            while busy:
                if self.limit is not None and len(self.sent) >= self.limit:
                    return
                who = busy.pop(int(self.rng.integers(len(busy))))
                auth = {"Authorization": f"Bearer {self.tokens[who]}"}
                got = self.http.get(f"/v1/tasks/next?stream={STREAM}", headers=auth)
                if got.status_code == 204:
                    continue
                assert got.status_code == 200, got.text
                task = got.json()["task"]
                answer = self.crowd.annotate(pd.DataFrame({ITEM: [task["item_id"]], ANNOTATOR: [who]}), self.truth,
                                             rng=self.rng).iloc[0]
                label = task["classes"][int(answer[LABEL])]
                stored = self.http.post(f"/v1/tasks/{task['task_id']}/annotations", json={
                    "label": label, "seconds": float(answer[SECONDS])},
                    headers={**auth, "Idempotency-Key": f"bot-{task['task_id']}"})
                assert stored.status_code == 201, stored.text
                self.sent.append({TASK_ID: task["task_id"], ITEM: task["item_id"], ANNOTATOR: who,
                                  LABEL: int(answer[LABEL]), "blind": task["blind"],
                                  "suggestion": task["suggestion"]})
                busy.append(who)


def _world(seed: int = 0):
    """Digits: gold items, then the stream in batches, each item labelled by one novice."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))[:GOLD + (ROUNDS + 1) * ROUND_ITEMS]
    ids = np.array([f"d{i:04d}" for i in order], dtype=object)
    truth = pd.Series(y[order], index=ids)
    crowd = make_crowd({"novice": 5, "experienced": 2, "expert": 3}, 10, rng=seed)
    novices = crowd.ids[[t.value == "novice" for t in crowd.tiers]]
    who = np.random.default_rng(seed + 1).choice(novices, size=len(ids))
    initial = crowd.annotate(pd.DataFrame({ITEM: ids, ANNOTATOR: who}), truth, rng=seed + 2)[LABEL].to_numpy()
    return x[order] / 16.0, ids, truth, initial, crowd


def _items(x, ids, labels):
    return pd.DataFrame({ITEM: ids, PAYLOAD: [{"features": f.tolist(), LABEL: CLASSES[int(c)]}
                                             for f, c in zip(x, labels)], "source": "producer"})


def _producer(store: LabelStore, x, ids, initial, rounds: int):
    """What the producer does each time the service waits: post the next round's items (``rounds`` in all)."""
    batches = [slice(GOLD + r * ROUND_ITEMS, GOLD + (r + 1) * ROUND_ITEMS) for r in range(rounds)]

    def produce() -> None:
        if batches:
            part = batches.pop(0)
            store.add_items(STREAM, _items(x[part], ids[part], initial[part]))

    return produce


def _setup(store: LabelStore, crowd, x, ids, initial, truth) -> None:
    store.create_stream(STREAM, CLASSES)
    for a in crowd.annotators:
        store.add_annotator(a.annotator_id, tier=TIER_CODES[a.tier.value], hourly_rate=a.cost_per_hour,
                            streams=[STREAM])
    gold = slice(0, GOLD)
    store.add_items(STREAM, _items(x[gold], ids[gold], truth.to_numpy()[gold]))
    store.add_resolutions(STREAM, pd.DataFrame({ITEM: ids[gold], LABEL: truth.to_numpy()[gold], "method": "expert",
                                                "reason": "gold"}))


def test_three_rounds_with_people_lower_the_estimated_error(tmp_path, store_url) -> None:
    x, ids, truth, initial, crowd = _world()
    url = store_url
    cfg = parse_config({
        "program": {"name": "live", "audit_rate": 0.25, "budget_per_round": 25.0, "seed": 0},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "live"},
        "store": {"url": url},
        "gate": {"max_ece": 0.5},
        "live": {"stream": STREAM, "sla_seconds": 600, "round_items": ROUND_ITEMS, "round_seconds": 3600,
                 "poll_seconds": 30}})
    clock = _Clock()
    with LabelStore(url) as store:
        _setup(store, crowd, x, ids, initial, truth)
        bots = _Bots(store, crowd, truth, seed=5)
        clock.on_wait = [_producer(store, x, ids, initial, ROUNDS + 1), bots.work]
        result = serve_program(cfg, store=store, max_rounds=ROUNDS, now=clock.now, sleep=clock.sleep)
        annotations = store.annotations_frame(STREAM, extras=("idempotency_key", "suggestion"))
        kinds = store.tasks_frame(STREAM).set_index("task_id")["kind"]

    rounds = result.rounds
    # Estimated figures only: nothing that needs the truth was computed.
    assert not any(c.startswith("true_") or c in ("errors_fixed", "errors_removed") for c in rounds.columns)
    assert np.isnan(result.final_error_rate)
    est = rounds[T.AUDIT_ERROR_RATE]
    assert est.loc[ROUNDS] < est.loc[1], est
    # The truth, kept here only: the labels did get better.
    arrived = ids[GOLD:]
    with LabelStore(url) as store:
        current = store.resolved_labels(STREAM).set_index(ITEM)[LABEL].reindex(arrived)
    true_now = float((current.to_numpy() != truth.reindex(arrived).to_numpy()).mean())
    true_initial = float((initial[GOLD:] != truth.reindex(arrived).to_numpy()).mean())
    assert true_now < true_initial
    # No annotation lost or duplicated: the store's people answers are exactly what the bots sent.
    people = annotations[annotations[ANNOTATOR] != CURRENT_LABEL]
    sent = pd.DataFrame(bots.sent)
    assert len(people) == len(sent) and not people[TASK_ID].duplicated().any()
    assert set(zip(people[TASK_ID].astype(int), people[LABEL])) == set(zip(sent[TASK_ID], sent[LABEL]))
    # People saw the champion's suggestion on open tasks, none on blind ones.
    kind = kinds.reindex(people[TASK_ID].astype(int)).to_numpy()
    assert people["suggestion"][kind == "label"].notna().all() and (kind == "label").any()
    assert people["suggestion"][np.isin(kind, ["double_blind", "audit"])].isna().all()
    assert all((s["suggestion"] is None) == s["blind"] for s in bots.sent)
    # Retraining, the gate and the rounds are in MLflow.
    from mlflow import MlflowClient

    client = MlflowClient(cfg.tracking.uri)
    runs = client.search_runs([client.get_experiment_by_name("live").experiment_id])
    round_runs = {r.data.tags.get(T.TAG_ROUND): r for r in runs if r.data.tags.get(T.TAG_ROLE) == T.ROLE_ROUND}
    assert set(round_runs) == {str(r) for r in range(ROUNDS + 1)}
    for r in range(1, ROUNDS + 1):
        tags = round_runs[str(r)].data.tags
        assert tags[T.TAG_GATE_VERDICT] in (T.VERDICT_PROMOTED, T.VERDICT_REFUSED) and tags[T.TAG_GATE_REASON]
        assert T.AUDIT_ERROR_RATE in round_runs[str(r)].data.metrics
    parent = client.get_run(result.run_id)
    assert [m.step for m in client.get_metric_history(result.run_id, T.CHALLENGER_ACCURACY)] == list(range(ROUNDS + 1))
    assert "true_error_rate" not in parent.data.metrics
    versions = client.search_model_versions(f"name='{cfg.simulation_model}'")
    assert len(versions) == ROUNDS + 1  # the seed model and one challenger a round
    print({"audit_error_rate": est.round(3).tolist(), "audited": rounds[T.AUDIT_N].tolist(),
           "confirmed": rounds[T.ERRORS_FIXED_CONFIRMED].tolist(), "accuracy": rounds[T.CHALLENGER_ACCURACY].tolist(),
           "true_initial": round(true_initial, 3), "true_final": round(true_now, 3), "answers": len(sent),
           "promotions": result.promotions, "cost": round(result.program_cost, 1)})


def test_a_restarted_service_takes_up_its_items_without_recording_them_twice(tmp_path) -> None:
    x, ids, truth, initial, crowd = _world()
    url = f"sqlite:///{tmp_path / 'labels.db'}"
    # MLflow's registry: the second session's models are new versions (the store's predictions
    # are named by the champion's version).
    cfg = parse_config({"program": {"name": "live", "audit_rate": 0.25, "budget_per_round": 25.0},
                        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "restart"},
                        "store": {"url": url}, "gate": {"max_ece": 0.5},
                        "live": {"stream": STREAM, "sla_seconds": 600, "round_items": ROUND_ITEMS,
                                 "poll_seconds": 30}})
    clock = _Clock()
    with LabelStore(url) as store:
        _setup(store, crowd, x, ids, initial, truth)
        bots = _Bots(store, crowd, truth, seed=5)
        clock.on_wait = [_producer(store, x, ids, initial, ROUNDS + 1), bots.work]
        first = serve_program(cfg, store=store, max_rounds=1, now=clock.now, sleep=clock.sleep)
        gold = len(StoreDataset(store, STREAM, round_items=ROUND_ITEMS, seed=0).holdout)
        second = serve_program(cfg, store=store, max_rounds=1, now=clock.now, sleep=clock.sleep)
        annotations = store.annotations_frame(STREAM)
        assert len(StoreDataset(store, STREAM, round_items=ROUND_ITEMS, seed=0).holdout) == gold
    assert first.n_items == 2 * ROUND_ITEMS and second.n_items == 4 * ROUND_ITEMS
    assert second.rounds.loc[0, T.N_ITEMS] == 3 * ROUND_ITEMS  # the earlier items and the next batch
    own = annotations[annotations[ANNOTATOR] == CURRENT_LABEL]
    assert len(own) == 4 * ROUND_ITEMS and not own[ITEM].duplicated().any()
    assert len(annotations) - len(own) == len(bots.sent)


def test_unanswered_tasks_are_escalated_at_their_sla_and_never_answered_for(tmp_path) -> None:
    x, ids, truth, initial, crowd = _world()
    clock = _Clock()
    with LabelStore(f"sqlite:///{tmp_path / 'labels.db'}") as store:
        _setup(store, crowd, x, ids, initial, truth)
        store.add_items(STREAM, _items(x[GOLD:GOLD + 10], ids[GOLD:GOLD + 10], initial[GOLD:GOLD + 10]))
        bots = _Bots(store, crowd, truth, seed=1, limit=7)
        clock.on_wait = [bots.work]
        people = HumanWorkforce(store, STREAM, sla_seconds=100, poll_seconds=10, now=clock.now, sleep=clock.sleep)
        ticket = people.submit(Request(ids[GOLD:GOLD + 10], labels_per_item=2, kind="double_blind", round=1),
                               rng=np.random.default_rng(0))
        start = clock.now()
        answers = people.collect(ticket)
        tasks = store.tasks_frame(STREAM)
    assert 100 <= clock.now() - start <= 100 + 10
    assert len(answers) == len(bots.sent) == 7
    assert set(answers[TASK_ID]) == {s[TASK_ID] for s in bots.sent}
    late = tasks[~tasks["task_id"].isin(answers[TASK_ID])]
    assert len(late) == 13 and set(late["task_id"]) == set(people.escalated)
    assert (late["status"] == "cancelled").all() and late["escalated_at"].notna().all()
    assert tasks.loc[tasks["task_id"].isin(answers[TASK_ID]), "escalated_at"].isna().all()
    assert (tasks["kind"] == "double_blind").all() and tasks["blind"].all() and (tasks["round"] == 1).all()
    # Two answers per item, from two different people.
    assert not answers.duplicated([ITEM, ANNOTATOR]).any()


def test_a_round_waits_for_enough_items_or_the_oldest_waiting_long_enough(tmp_path) -> None:
    x, ids, truth, initial, crowd = _world()
    clock = _Clock()
    with LabelStore(f"sqlite:///{tmp_path / 'labels.db'}") as store:
        _setup(store, crowd, x, ids, initial, truth)
        data = StoreDataset(store, STREAM, round_items=5, seed=0)
        assert len(data.calibration) + len(data.holdout) == GOLD and data.truth is None
        store.add_items(STREAM, _items(x[GOLD:GOLD + 2], ids[GOLD:GOLD + 2], initial[GOLD:GOLD + 2]))
        schedule = RoundSchedule(data, round_items=5, round_seconds=300, poll_seconds=60, now=clock.now,
                                 sleep=clock.sleep, max_rounds=1)
        start = clock.now()
        assert schedule(0)  # two items, the oldest waited 300 s
        assert 300 <= clock.now() - start < 400
        assert list(data.arrivals(0)) == list(ids[GOLD:GOLD + 2])
        assert not schedule(2)  # past max_rounds
        assert data.x(ids[:3]).shape == (3, 64)
        assert data.initial[ANNOTATOR].eq(CURRENT_LABEL).all()


def test_a_stream_without_gold_says_so(tmp_path) -> None:
    with LabelStore(f"sqlite:///{tmp_path / 'labels.db'}") as store:
        store.create_stream(STREAM, CLASSES)
        with pytest.raises(LoopError, match="at least 20 gold items"):
            StoreDataset(store, STREAM, round_items=5, seed=0)


@pytest.mark.parametrize(("live", "message"), [
    ({"round_items": 0}, "live.round_items: expected an integer >= 1, got 0"),
    ({"sla_seconds": -1}, "live.sla_seconds: expected a number >= 0.0, got -1"),
    ({"poll_seconds": 0}, "live.poll_seconds: expected a number > 0, got 0"),
    ({"sla": 5}, "live.sla: unknown key"),
])
def test_the_live_section_is_validated_naming_the_key(live, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_config({"live": live})


def test_labelloop_serve_ingests_a_table_and_runs_rounds_nobody_answers(tmp_path, capsys) -> None:
    """`labelloop serve --items` for a team without an HTTP producer (columns as the config's
    table names them): the table's gold becomes
    the gold, its other items arrive; with nobody answering, every task runs past its SLA, is
    escalated, and the round goes on without inventing an answer."""
    from experiments.cli import main

    x, ids, truth, initial, _ = _world()
    n = GOLD + 2 * 20
    table = pd.DataFrame(x[:n], columns=[f"f{j}" for j in range(x.shape[1])])
    table.insert(0, "item_id", ids[:n])
    table["label"] = initial[:n]
    table["gold"] = pd.array([int(t) if i < GOLD else None for i, t in enumerate(truth.to_numpy()[:n])],
                             dtype="Int64")
    table.to_csv(tmp_path / "items.csv", index=False)
    url = f"sqlite:///{tmp_path / 'labels.db'}"
    (tmp_path / "serve.yaml").write_text(
        f"program: {{name: team, audit_rate: 0.1, budget_per_round: 5.0, dataset: {{path: unused.csv, gold: gold}}}}\n"
        f"gate: {{max_ece: 0.5}}\n"
        f"tracking: {{uri: none}}\nstore: {{url: '{url}'}}\n"
        f"live: {{round_items: 20, round_seconds: 60, sla_seconds: 0.2, poll_seconds: 0.05}}\n")
    code = main(["serve", "--config", str(tmp_path / "serve.yaml"), "--items", str(tmp_path / "items.csv"),
                 "--rounds", "1", "--in-process"])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, captured.err
    assert "round 1 done" in out
    with LabelStore(url) as store:
        tasks = store.tasks_frame("team")
        people = store.annotations_frame("team")
    asked = tasks[tasks[ANNOTATOR].isna() | (tasks[ANNOTATOR] != CURRENT_LABEL)]
    assert len(asked) and (asked["status"] == "cancelled").all()
    assert (people[ANNOTATOR] == CURRENT_LABEL).all() and len(people) == 40  # only the items' own labels


def test_labelloop_serve_refuses_an_experiment_on_another_stream(tmp_path, capsys) -> None:
    from experiments.cli import main

    (tmp_path / "serve.yaml").write_text(
        "program: {name: team}\ntracking: {uri: none}\n"
        f"store: {{url: 'sqlite:///{tmp_path / 'labels.db'}'}}\n"
        "experiment: {stream: other, variants: [{name: a, suggestion: shown}, {name: b}]}\n")
    assert main(["serve", "--config", str(tmp_path / "serve.yaml"), "--rounds", "1", "--in-process"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "experiment.stream: expected the served stream 'team'" in err
    assert not (tmp_path / "labels.db").exists()  # refused before any work


def test_a_live_program_logs_each_published_guideline_version_once_to_mlflow(tmp_path) -> None:
    """An admin's version before the service starts and a version drafted from the confused pairs
    and published mid-run both reach the run's artifacts, each once (markdown and JSON), with
    the tag naming them; the run says whether the mid-run version's impact could be measured."""
    import json

    import mlflow

    x, ids, truth, initial, crowd = _world()
    url, uri = f"sqlite:///{tmp_path / 'labels.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = parse_config({"program": {"name": "live", "audit_rate": 0.25, "budget_per_round": 25.0},
                        "tracking": {"uri": uri, "experiment": "guided"}, "store": {"url": url},
                        "gate": {"max_ece": 0.5},
                        "live": {"stream": STREAM, "sla_seconds": 600, "round_items": ROUND_ITEMS, "poll_seconds": 30}})
    clock = _Clock()
    with LabelStore(url) as store:
        _setup(store, crowd, x, ids, initial, truth)
        store.publish_guideline(STREAM, store.add_guideline(STREAM, "# Digits\nRead the whole stroke.",
                                                            author="lead").version)
        bots = _Bots(store, crowd, truth, seed=5)
        drafted = []

        def admin() -> None:  # once people answer round 1, the admin drafts from the confusions and publishes
            if bots.sent and not drafted:
                g, _ = store.draft_guideline_from_pairs(STREAM, author="ops", pairs=1)
                drafted.append(store.publish_guideline(STREAM, g.version, actor="ops"))

        clock.on_wait = [_producer(store, x, ids, initial, 3), bots.work, admin]
        result = serve_program(cfg, store=store, max_rounds=2, now=clock.now, sleep=clock.sleep)
        v2 = drafted[0]
    client = mlflow.MlflowClient(uri)
    run = client.get_run(result.run_id)
    assert run.data.tags[T.TAG_GUIDELINE_VERSION] == "1,2"
    listed = sorted(f.path for f in client.list_artifacts(result.run_id, "guidelines"))
    assert listed == ["guidelines/v1.json", "guidelines/v1.md", "guidelines/v2.json", "guidelines/v2.md"]
    local = client.download_artifacts(result.run_id, "guidelines", str(tmp_path / "artifacts"))
    assert (tmp_path / "artifacts" / "guidelines" / "v2.md").read_text() == v2.text
    meta = json.loads((tmp_path / "artifacts" / "guidelines" / "v2.json").read_text())
    assert meta["version"] == 2 and meta["parent_version"] == 1 and meta["pairs"] == v2.examples["pairs"]
    assert local.endswith("guidelines")
    assert run.data.tags[T.TAG_GUIDELINE_IMPACT].startswith("version 2")
