"""The live program (people answer through the task API) runs the same drift check, without truth."""

from __future__ import annotations

import numpy as np
import pytest

from experiments import tracking as T
from experiments.config import parse_config
from experiments.drift_watch import DRIFT_ALERT
from loop.store import LabelStore

pytest.importorskip("fastapi")
pytest.importorskip("ray")  # serve.app imports it; no Ray starts here

from experiments.live import serve_program  # noqa: E402
from tests.experiments.test_live import (GOLD, ROUND_ITEMS, STREAM, _Bots, _Clock, _producer,  # noqa: E402
                                         _setup, _world)

ROUNDS = 3


# SQLite only: the live program on PostgreSQL is test_live's (both stores), and the drift alert's
# store writes are tests/store/test_alerts.py's (both stores); this one path costs a minute a store.
def test_a_live_program_alerts_on_a_new_look_and_people_relabel_the_queue(tmp_path) -> None:
    store_url = f"sqlite:///{tmp_path / 'labels.db'}"
    x, ids, truth, initial, crowd = _world()
    x = x.copy()
    last = slice(GOLD + ROUNDS * ROUND_ITEMS, GOLD + (ROUNDS + 1) * ROUND_ITEMS)
    x[last] = x[last].reshape(-1, 8, 8)[:, :, ::-1].reshape(-1, 64)  # the last round's digits arrive mirrored
    cfg = parse_config({
        "program": {"name": "live", "audit_rate": 0.1, "budget_per_round": 10.0, "seed": 0},
        "tracking": {"uri": "none"}, "store": {"url": store_url}, "gate": {"max_ece": 0.5},
        "live": {"stream": STREAM, "sla_seconds": 600, "round_items": ROUND_ITEMS, "round_seconds": 3600,
                 "poll_seconds": 30},
        "drift": {"enabled": True, "reference_rounds": 2, "relabel_budget": 3.0}})
    clock, tracker = _Clock(), T.MemoryTracker()
    with LabelStore(store_url) as store:
        _setup(store, crowd, x, ids, initial, truth)
        bots = _Bots(store, crowd, truth, seed=5)
        clock.on_wait = [_producer(store, x, ids, initial, ROUNDS + 1), bots.work]
        result = serve_program(cfg, store=store, tracker=tracker, max_rounds=ROUNDS, now=clock.now, sleep=clock.sleep)
        events = store.events_frame(stream=STREAM)
        tasks = store.tasks_frame(STREAM)
    alerts = events[events["action"] == DRIFT_ALERT]
    assert len(alerts) >= 1 and alerts["reason"].str.startswith(f"round {ROUNDS}: drift: ").any()
    report = alerts[alerts["reason"].str.startswith(f"round {ROUNDS}:")].iloc[0]["after"]
    queued = {r["item_id"] for r in report["relabel"]}
    assert queued and queued <= set(tasks.loc[tasks["kind"] == "expert", "item_id"].astype(str))
    rounds = result.rounds
    assert rounds.loc[ROUNDS, T.DRIFT_ALERTS] > 0 and rounds.loc[ROUNDS, T.DRIFT_RELABEL_ITEMS] == len(queued)
    # No truth anywhere: no true_ figure, in the rounds or in what was logged.
    assert not any(c.startswith("true_") for c in rounds.columns)
    assert not any(k.startswith("true_") for m in tracker.metrics for k in m)
    assert np.isnan(result.final_error_rate)
