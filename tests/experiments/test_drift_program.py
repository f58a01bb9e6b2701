"""Drift in the program: the simulated scenarios, the alert in the store and MLflow, the relabel queue."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments import tracking as T
from experiments.config import ConfigError, DriftConfig, parse_config
from experiments.drift_watch import DRIFT_ALERT, DriftWatch, choose_action
from experiments.program import run_program
from experiments.world import TIER_CODES, build_world
from loop.columns import ITEM, LABEL, LABEL_ISSUE_SCORE, RUNNER_UP
from loop.drift import PREDICTED, DriftFinding, DriftReport
from loop.store import LabelStore
from loop.strategies import Action, TaskCosts
from tests.store.conftest import pg_server, pg_url, store_url  # noqa: F401 - fixtures

SIZES = {"rounds": 4, "items_per_round": 100, "budget_per_round": 5.0, "calibration_items": 60,
         "holdout_items": 150, "audit_rate": 0.03, "drift_onset_round": 3, "seed": 1}


def _cfg(scenario: str = "none", **drift):
    return parse_config({"program": {**SIZES, "drift_scenario": scenario},
                         "tracking": {"uri": "none"}, "store": {"url": "sqlite://"},
                         "drift": {"enabled": True, "reference_rounds": 3, **drift}})


@pytest.fixture(scope="module")
def subpopulation_world():
    return build_world(_cfg("new_subpopulation"))


@pytest.fixture(scope="module")
def targeted(subpopulation_world):
    """The default (targeted) queue on the new subpopulation, run once for the tests that only read it."""
    return run_program(_cfg("new_subpopulation"), world=subpopulation_world)


def test_a_new_subpopulation_alerts_in_the_store_and_mlflow_and_is_relabelled(store_url, subpopulation_world):
    cfg = _cfg("new_subpopulation")
    tracker = T.MemoryTracker()
    with LabelStore(store_url) as store:
        result = run_program(cfg, store=store, tracker=tracker, world=subpopulation_world)
        events = store.events_frame(stream=result.stream)
        tasks = store.tasks_frame(result.stream)
        alerts = events[events["action"] == DRIFT_ALERT]
        predictions = store.latest_predictions(result.stream, [r["item_id"] for r in alerts.iloc[-1]["after"]["relabel"]])
    # What people open (Label Studio's pre-annotations) says where the last queue went, and why.
    assert (predictions["route"] == "expert").all() and predictions["reason"].str.startswith("drift relabel: ").all()
    alerts = events[events["action"] == DRIFT_ALERT]
    # Rounds 0-2 are the reference; the drift starts in round 3 and is caught there.
    assert len(alerts) == 2 and set(alerts["entity"]) == {"stream"}
    first = alerts.iloc[0]
    assert first["reason"].startswith("round 3: drift: ") and "items to relabel by expert (auto: " in first["reason"]
    report = first["after"]
    # drift.relabel_action auto (the default): the new variant looks new, so experts, and why.
    assert report["relabel_setting"] == "auto" and report["relabel_action"] == "expert"
    assert {d["kind"] for d in report["drifted"]} & {"feature", "ks", "novelty"}
    assert report["relabel_action_why"].startswith("auto: the items look new")
    assert report["round"] == 3 and report["drifted"], report
    assert {d["kind"] for d in report["drifted"]} & {"feature", "prediction", "label", "novelty"}
    assert all(d["value"] > d["threshold"] if d["statistic"] == "psi" else d["value"] < d["threshold"]
               for d in report["drifted"])
    queued = [r["item_id"] for r in report["relabel"]]
    assert 0 < len(queued) <= int(6.0 // 0.3)  # the budget over an expert label's planned cost
    assert all(r["reason"].startswith("drift relabel: ") and r["reason"].endswith(
        f"; relabel by expert ({report['relabel_action_why']})") for r in report["relabel"])
    # The queue went to experts as tasks, and each item's route table says why.
    expert_items = set(tasks.loc[tasks["tier"] == TIER_CODES["expert"], ITEM].astype(str))
    assert set(queued) <= expert_items
    routed = tracker.tables[T.routed_table_path(3)]
    why = routed.set_index(ITEM).loc[queued, "reason"]
    assert why.str.startswith("drift relabel: ").all()
    # MLflow: per-round figures, the report and the queue as artifacts, the summary as a tag.
    rounds = result.rounds
    assert rounds.loc[[1, 2], T.DRIFT_ALERTS].isna().all()
    assert (rounds.loc[[3, 4], T.DRIFT_ALERTS] > 0).all()
    assert (rounds.loc[[3, 4], T.DRIFT_RELABEL_ITEMS] > 0).all() and (rounds.loc[[3, 4], T.DRIFT_RELABEL_COST] > 0).all()
    logged = set().union(*(m.keys() for m in tracker.metrics))
    assert {T.DRIFT_PSI_MAX, T.DRIFT_ALERTS, T.DRIFT_RELABEL_COST, T.TRUE_DRIFT_ERRORS_REMOVED} <= logged
    assert set(tracker.tables[T.drift_report_path(3)]["kind"]) == {d["kind"] for d in report["drifted"]}
    assert tracker.tables[T.drift_queue_path(3)][ITEM].astype(str).tolist() == queued
    assert tracker.tags[T.TAG_DRIFT].startswith("round 4: drift: ") and "to relabel by expert (auto: " in tracker.tags[T.TAG_DRIFT]
    # The relabelling removed errors the crowd made on the new variant (simulation truth).
    assert rounds.loc[[3, 4], T.TRUE_DRIFT_ERRORS_REMOVED].sum() > 0


def test_without_drift_no_alert_and_without_the_section_no_drift_figures():
    cfg = _cfg("none")
    world = build_world(cfg)
    with LabelStore("sqlite://") as store:
        result = run_program(cfg, store=store, world=world)
        assert (store.events_frame(stream=result.stream)["action"] != DRIFT_ALERT).all()
    assert (result.rounds[T.DRIFT_ALERTS].dropna() == 0).all() and result.rounds[T.DRIFT_ALERTS].notna().sum() == 2
    off = run_program(cfg.replace(drift=DriftConfig()), world=world)
    assert T.DRIFT_ALERTS not in off.rounds.columns
    # The drift check changes nothing when it raises no alert.
    assert off.final_error_rate == result.final_error_rate and off.program_cost == pytest.approx(result.program_cost)


def test_the_relabel_cost_is_outside_the_rounds_budget(subpopulation_world, targeted):
    budget = targeted.rounds[T.BUDGET]
    plain = run_program(_cfg("new_subpopulation").replace(drift=DriftConfig()), world=subpopulation_world)
    # The relabel queue does not eat the next round's budget; its cost is in the program's.
    assert budget.loc[4] == pytest.approx(plain.rounds[T.BUDGET].loc[4], rel=0.35)
    relabel = targeted.rounds[T.DRIFT_RELABEL_COST].fillna(0).sum()
    assert relabel > 0 and targeted.program_cost > relabel


def test_the_blanket_queue_draws_from_the_same_items_at_the_same_budget(subpopulation_world, targeted):
    blanket = run_program(_cfg("new_subpopulation", queue="blanket"), world=subpopulation_world)
    b, t = blanket.rounds.loc[[3, 4]], targeted.rounds.loc[[3, 4]]
    assert (b[T.DRIFT_RELABEL_ITEMS] == t[T.DRIFT_RELABEL_ITEMS]).all()
    assert t[T.TRUE_DRIFT_ERRORS_REMOVED].sum() > b[T.TRUE_DRIFT_ERRORS_REMOVED].sum()


@pytest.mark.parametrize("scenario", ["prior_shift", "covariate_shift", "new_subpopulation"])
def test_the_scenarios_drift_from_the_onset_round_only(scenario):
    cfg = _cfg(scenario)
    plain, drifted = build_world(_cfg("none")), build_world(cfg)
    onset = cfg.drift_onset_round * cfg.items_per_round
    # Before the onset: the same items, features and initial labels as without drift.
    assert list(drifted.stream[:onset]) == list(plain.stream[:onset])
    early = drifted.stream[:onset]
    assert np.array_equal(drifted.x(early), plain.x(early))
    after = drifted.stream[onset:]
    truth, initial = drifted.truth.loc[after], drifted.initial.set_index(ITEM)[LABEL].loc[after]
    before_truth = plain.truth.loc[plain.stream[onset:]]
    if scenario == "prior_shift":
        moved = (truth.value_counts(normalize=True) - before_truth.value_counts(normalize=True)).abs().sum()
        assert moved > 0.3
        assert drifted.workforce.confused is None
    else:
        confused = drifted.workforce.confused
        assert confused is not None and confused.index.isin(after).all() and len(confused) > 0
        changed = ~np.all(drifted.x(confused.index) == plain.features.loc[confused.index].to_numpy(), axis=1)
        assert changed.mean() > 0.9  # their features moved
        wrong_drifted = (initial.loc[confused.index] != truth.loc[confused.index]).mean()
        others = after[~pd.Index(after).isin(confused.index)]
        assert wrong_drifted > (initial.loc[others] != truth.loc[others]).mean() + 0.2  # the crowd confuses them


@pytest.mark.parametrize(("raw", "message"), [
    ({"drift": {"psi": 0}}, "drift.psi: expected a number > 0, got 0"),
    ({"drift": {"ks_alpha": 1}}, "drift.ks_alpha: expected a number in (0, 1), got 1"),
    ({"drift": {"relabel_budget": -1}}, "drift.relabel_budget: expected a number >= 0.0, got -1"),
    ({"drift": {"relabel_action": "triple"}}, "drift.relabel_action: expected one of"),
    ({"drift": {"queue": "all"}}, "drift.queue: expected one of ['targeted', 'blanket'], got 'all'"),
    ({"drift": {"enabled": "yes"}}, "drift.enabled: expected true or false, got 'yes'"),
    ({"drift": {"reference_rounds": 0}}, "drift.reference_rounds: expected an integer >= 1, got 0"),
    ({"drift": {"windows": 3}}, "drift.windows: unknown key"),
    ({"drift": {"relabel_action": "triple"}},
     "drift.relabel_action: expected one of ['auto', 'review', 'double_blind', 'expert'], got 'triple'"),
    ({"program": {"drift_scenario": "tsunami"}}, "program.drift_scenario: expected one of"),
    ({"program": {"drift_scenario": "prior_shift", "rounds": 2, "drift_onset_round": 3}},
     "program.drift_onset_round: expected a round in [1, program.rounds=2], got 3"),
    ({"program": {"drift_scenario": "prior_shift", "dataset": "music_genre"}, "crowd": {"tiers": "replay"}},
     "program.drift_scenario: expected 'none' on this dataset"),
])
def test_a_wrong_drift_key_is_named_in_one_line(raw, message):
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_the_drift_section_round_trips():
    cfg = parse_config({"program": {"drift_scenario": "covariate_shift", "drift_onset_round": 2},
                        "drift": {"enabled": True, "psi": 0.5, "queue": "blanket"}})
    assert parse_config(cfg.to_dict()) == cfg
    assert cfg.drift.thresholds().psi == 0.5


def _report(*kinds: str) -> DriftReport:
    findings = tuple(DriftFinding(k, f"{k} view", "psi", 1.0, 0.3, True, ("2",)) for k in kinds)
    return DriftReport(findings + (DriftFinding("feature", "feature 0", "psi", 0.1, 0.4, False),), 300, 100)


@pytest.mark.parametrize("kinds, action", [
    (("prediction",), Action.DOUBLE_BLIND), (("label",), Action.DOUBLE_BLIND),
    (("prediction", "label"), Action.DOUBLE_BLIND),
    (("prediction", "feature"), Action.EXPERT), (("ks",), Action.EXPERT), (("label", "novelty"), Action.EXPERT),
])
def test_auto_relabels_double_blind_where_only_the_class_mix_moved_and_experts_where_items_look_new(kinds, action):
    chosen, why = choose_action(_report(*kinds), "auto")
    assert chosen is action and why.startswith("auto: ")
    assert ("only the class mix moved" if action is Action.DOUBLE_BLIND else "the items look new") in why
    # An explicit action is kept whatever drifted.
    for setting in ("expert", "double_blind", "review"):
        assert choose_action(_report(*kinds), setting)[0] is Action(setting)


def test_the_default_relabel_action_is_auto_and_every_explicit_one_parses():
    assert DriftConfig().relabel_action == "auto" and parse_config({}).drift.relabel_action == "auto"
    for setting in ("auto", "review", "double_blind", "expert"):
        assert parse_config({"drift": {"relabel_action": setting}}).drift.relabel_action == setting


def _check_round_3(tracker, n_ref, **arrays):
    """A three-class stream's drift watch, its reference the first ``n_ref`` arrivals, checked
    at round 3: the watch, the report, the queue and the store's events."""
    with LabelStore("sqlite://") as store:
        store.create_stream("s", ("a", "b", "c"))
        watch = DriftWatch(DriftConfig(enabled=True, reference_rounds=3), n_classes=3, store=store, stream="s",
                           tracker=tracker, seed=1)
        watch.set_reference(n_ref)
        report, queue = watch.check(3, **arrays)
        return watch, report, queue, store.events_frame(stream="s")


def test_a_class_mix_alert_is_queued_double_blind_and_the_event_and_tag_say_why():
    """The drift check on arrivals that look like the reference's but whose predicted classes
    and labels moved: auto routes its queue double-blind, sized by double-blind's cost."""
    rng = np.random.default_rng(3)
    n_ref, n_cur = 300, 100
    x = rng.normal(size=(n_ref + n_cur, 4))
    classes = np.r_[rng.integers(0, 3, n_ref), np.where(rng.random(n_cur) < 0.7, 2, rng.integers(0, 3, n_cur))]
    pool = pd.DataFrame({ITEM: [f"i{i}" for i in range(n_ref)], LABEL: classes[:n_ref], PREDICTED: classes[:n_ref],
                         RUNNER_UP: (classes[:n_ref] + 1) % 3, LABEL_ISSUE_SCORE: rng.random(n_ref),
                         "position": np.arange(n_ref)})
    costs = TaskCosts(crowd=0.1, expert=0.3)
    tracker = T.MemoryTracker()
    watch, report, queue, events = _check_round_3(tracker, n_ref, x=x, predicted=classes, labels=classes,
                                                  current=np.arange(n_ref, n_ref + n_cur), pool=pool, costs=costs)
    assert {f.kind for f in report.drifted} and {f.kind for f in report.drifted} <= {"prediction", "label"}
    assert watch.action is Action.DOUBLE_BLIND
    assert 0 < len(queue) <= int(6.0 / costs.planned(Action.DOUBLE_BLIND) + 1e-9)
    assert queue["reason"].str.contains("; relabel by double_blind (auto: only the class mix moved", regex=False).all()
    after = events.loc[events["action"] == DRIFT_ALERT, "after"].iloc[0]
    assert after["relabel_action"] == "double_blind" and after["relabel_setting"] == "auto"
    assert "to relabel by double_blind (auto: only the class mix moved" in tracker.tags[T.TAG_DRIFT]


@pytest.mark.parametrize("look_new", [False, True])
def test_a_class_mix_alert_reestimates_the_prior_and_queues_the_labels_it_overturns(look_new):
    """Only the class mix moved: the prior of the arrivals since the reference is re-estimated
    from the model's probabilities, and an item of those arrivals whose label the corrected
    posterior overturns is queued; the same posterior on a reference item is left alone (it
    arrived under the old prior). Where the items look new too, the class mix may have moved
    with them (not a prior shift): no estimate."""
    rng = np.random.default_rng(4)
    n_ref, n_cur = 300, 100
    x = rng.normal(size=(n_ref + n_cur, 4))
    x[n_ref:] += 6.0 if look_new else 0.0
    classes = np.r_[rng.integers(0, 3, n_ref), np.where(rng.random(n_cur) < 0.7, 2, rng.integers(0, 2, n_cur))]
    probs = np.full((n_ref + n_cur, 3), 0.02)  # a model about as sure as it is right
    probs[np.arange(n_ref + n_cur), classes] = 0.96
    tipped = np.array([0.5, 0.05, 0.45])  # labelled 0; 2 under a prior where 2 rose
    posterior = probs.copy()
    posterior[[5, n_ref + 5]] = tipped
    labels = classes.copy()
    labels[[5, n_ref + 5]] = 0
    pool = pd.DataFrame({ITEM: [f"i{i}" for i in range(n_ref + n_cur)], LABEL: labels, PREDICTED: probs.argmax(axis=1),
                         RUNNER_UP: (classes + 1) % 3, LABEL_ISSUE_SCORE: 1 - posterior[np.arange(n_ref + n_cur), labels],
                         "position": np.arange(n_ref + n_cur)})
    tracker = T.MemoryTracker()
    watch, _, queue, events = _check_round_3(tracker, n_ref, x=x, predicted=probs.argmax(axis=1), labels=labels,
                                             current=np.arange(n_ref, n_ref + n_cur), pool=pool,
                                             costs=TaskCosts(crowd=0.1, expert=0.3), probs=probs, posterior=posterior)
    after = events.loc[events["action"] == DRIFT_ALERT, "after"].iloc[0]
    if look_new:
        assert watch.prior is None and after["prior"] is None and not queue["reason"].str.contains("decides").any()
        return
    assert watch.prior is not None and watch.prior.prior_[2] > 0.55 > watch.prior.reference_prior_[2]
    flipped = queue.loc[queue[ITEM] == f"i{n_ref + 5}", "reason"]
    assert len(flipped) == 1 and "the re-estimated class prior decides 2, not its label 0" in flipped.iloc[0]
    assert not queue["reason"].str.contains("decides").drop(flipped.index).any()  # i5 is a reference item
    assert after["prior"]["estimated"][2] == pytest.approx(watch.prior.prior_[2])
    assert "re-estimated prior class 2" in tracker.tags[T.TAG_DRIFT]

