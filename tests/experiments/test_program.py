"""The program end to end: in process (fast), with MLflow in a temp dir, and through the real Serve app."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from experiments import tracking as T
from experiments.config import parse_config
from experiments.program import InProcessScorer, run_program
from experiments.world import build_world
from loop.columns import ITEM, LABEL
from loop.store import LabelStore
from loop.strategies import TaskCosts

SMALL = {"program": {"rounds": 2, "items_per_round": 80, "budget_per_round": 5.0, "calibration_items": 60,
                     "holdout_items": 150, "audit_rate": 0.05},
         "tracking": {"uri": "none"}, "store": {"url": "sqlite://"}}


@pytest.fixture(scope="module")
def small_cfg():
    return parse_config(SMALL)


@pytest.fixture(scope="module")
def small_world(small_cfg):
    return build_world(small_cfg)


@pytest.fixture(scope="module")
def tiered_run(small_cfg, small_world):
    store = LabelStore("sqlite://")
    tracker = T.MemoryTracker()
    result = run_program(small_cfg, store=store, tracker=tracker, world=small_world)
    return result, store, tracker


def test_the_error_rate_falls_and_every_round_is_measured(tiered_run):
    result, _, tracker = tiered_run
    rounds = result.rounds
    assert list(rounds.index) == [0, 1, 2]
    assert result.final_error_rate < result.initial_error_rate
    assert rounds[T.TRUE_ERROR_RATE].iloc[-1] < rounds[T.TRUE_ERROR_RATE].iloc[0]
    assert result.errors_removed == result.errors_fixed - result.errors_introduced > 0
    history = tracker.history()
    for name in (T.TRUE_ERROR_RATE, T.AUDIT_ERROR_RATE, T.AUDIT_CI_LOW, T.AUDIT_CI_HIGH, T.MODEL_ACCURACY, T.MODEL_ECE,
                 T.COST, T.ANNOTATOR_HOURS, T.AUTO_ACCEPT_RATE, T.AUTO_ACCEPT_ERROR_RATE, T.ERRORS_FIXED,
                 T.CORRECTION_FREQUENCY, T.KRIPPENDORFF_ALPHA, T.RESOLUTION_HOURS, T.TOP_PAIR_SHARE):
        assert name in history.columns, name
        assert np.isfinite(history.loc[2, name]), name
    low, rate, high = history.loc[2, [T.AUDIT_CI_LOW, T.AUDIT_ERROR_RATE, T.AUDIT_CI_HIGH]]
    assert 0 <= low <= rate <= high <= 1
    assert {T.routed_table_path(1), T.routed_table_path(2), T.ROUNDS_CSV, T.GATE_CSV} <= set(tracker.tables)
    assert {T.ERROR_VS_COST_PNG, T.RELIABILITY_PNG, T.CONFUSION_PNG} <= set(tracker.figures)


def test_the_store_holds_the_program(tiered_run, small_world):
    result, store, _ = tiered_run
    annotations = store.annotations_frame(result.stream)
    assert len(annotations) == result.program_annotations + result.n_items
    assert annotations["cost"].sum() == pytest.approx(result.cost)
    labels = store.resolved_labels(result.stream)
    assert len(labels) == result.n_items
    truth = small_world.truth.reindex(labels[ITEM].astype(str)).to_numpy()
    assert (labels[LABEL].to_numpy() != truth).mean() == pytest.approx(result.final_error_rate)
    history = store.resolutions_frame(result.stream)
    assert history["supersedes"].notna().sum() > 0  # corrections supersede, nothing is overwritten
    # Initial labels are consensus resolutions; the program's corrections come by other methods too.
    assert "consensus" in set(history["method"]) and len(set(history["method"])) >= 2
    tasks = store.tasks_frame(result.stream)
    assert len(tasks) == len(annotations)
    assert set(tasks["status"]) == {"done"}  # every task the program created was answered and closed


def test_the_routed_table_explains_each_decision(tiered_run, small_world):
    _, _, tracker = tiered_run
    table = tracker.tables[T.routed_table_path(2)]
    assert {"item_id", "action", "route", "reason", "priority", "label_before", "label_after", "true_label"} <= \
        set(table.columns)
    assert (table["action"] != "keep").all() and table["reason"].str.len().gt(0).all()


def test_the_budget_is_kept_over_the_program(small_cfg, small_world):
    tracker = T.MemoryTracker()
    result = run_program(small_cfg.replace(strategy="cleanlab", audit_rate=0.0), tracker=tracker, world=small_world)
    # Planned within each round's budget, carry-over evening out the actual cost.
    spent = result.program_cost
    assert spent <= small_cfg.rounds * small_cfg.budget_per_round * 1.15
    assert spent >= small_cfg.rounds * small_cfg.budget_per_round * 0.7


def test_audits_beyond_their_planned_cost_come_out_of_the_budget(small_cfg, small_world):
    # The plan expects experts three times cheaper than they are: the audits overrun their plan.
    costs = TaskCosts(crowd=small_world.costs.crowd, expert=small_world.costs.expert / 3)
    world = dataclasses.replace(small_world, costs=costs)
    result = run_program(small_cfg.replace(strategy="random"), world=world)
    arrived = [(r + 1) * small_cfg.items_per_round for r in range(1, small_cfg.rounds + 1)]
    planned_audits = sum(int(np.ceil(small_cfg.audit_rate * n)) for n in arrived) * costs.expert
    # Within the plan up to the last review's spread in seconds (one crowd label).
    assert result.program_cost <= small_cfg.rounds * small_cfg.budget_per_round + planned_audits + \
        3 * small_world.costs.crowd


def test_a_program_is_reproducible(small_cfg, small_world):
    a = run_program(small_cfg.replace(strategy="random"), world=small_world)
    b = run_program(small_cfg.replace(strategy="random"), world=small_world)
    assert (a.final_error_rate, a.cost, a.errors_removed) == (b.final_error_rate, b.cost, b.errors_removed)


def test_training_labels_are_read_as_of_a_version(tiered_run):
    result, store, _ = tiered_run
    history = store.resolutions_frame(result.stream)
    first_round = int(history["resolution_id"].iloc[result.n_items // 3 - 1])
    early = store.resolved_labels(result.stream, as_of=first_round)
    assert len(early) < result.n_items
    assert early.equals(store.resolved_labels(result.stream, as_of=first_round))


def test_the_in_process_scorer_matches_the_model(small_world):
    from sklearn.linear_model import LogisticRegression

    from loop.calibration import CalibratedClassifier, TemperatureScaling

    x, y = small_world.x(small_world.stream[:200]), small_world.truth.iloc[:200].to_numpy()
    clf = LogisticRegression(max_iter=500).fit(x, y)
    model = CalibratedClassifier(clf, TemperatureScaling().fit(clf.predict_proba(x), y), n_classes=10)
    scores, probs = InProcessScorer(lambda: model).score(small_world.stream[:5], x[:5], y[:5])
    np.testing.assert_allclose(probs, model.predict_proba(x[:5]))
    assert scores[ITEM].tolist() == list(small_world.stream[:5])
    np.testing.assert_allclose(scores["label_issue_score"], 1 - probs[np.arange(5), y[:5]], atol=1e-9)


def test_the_in_process_port_routes_with_loop_routing(small_world):
    from sklearn.linear_model import LogisticRegression

    from loop.routing import RoutingThresholds, route, score_items

    ids = small_world.stream[:200]
    x, y = small_world.x(ids), small_world.truth.iloc[:200].to_numpy()
    model = LogisticRegression(max_iter=500).fit(x, y)
    issues = np.random.default_rng(0).random(200)
    thresholds = RoutingThresholds(double_blind_issue_score=0.8)
    got = InProcessScorer(lambda: model).route(ids, x, y, issues, thresholds)
    want = route(score_items(model.predict_proba(x), item_ids=ids, label_issue_scores=issues), thresholds)
    pd.testing.assert_frame_equal(got, want)


@pytest.fixture
def mlflow_cfg(request, tmp_path, small_cfg, mlflow_uri):
    """Tracking in the session's store, under an experiment and a model named after the test."""
    name = request.node.name[:60]
    return small_cfg.replace(tracking=small_cfg.tracking.__class__(uri=mlflow_uri, experiment=name,
                                                                   registered_model=name),
                             store_url=f"sqlite:///{tmp_path}/labels.db")


@pytest.mark.slow
def test_the_gate_refuses_a_model_that_is_not_better_and_the_alias_stays(mlflow_cfg, small_world):
    from mlflow import MlflowClient

    cfg = mlflow_cfg.replace(rounds=1, gate=mlflow_cfg.gate.__class__(min_accuracy_gain=0.5, max_ece=1.0))
    result = run_program(cfg, world=small_world)
    client = MlflowClient(tracking_uri=cfg.tracking.uri, registry_uri=cfg.tracking.uri)
    assert result.promotions == 0
    assert str(client.get_model_version_by_alias(cfg.tracking.registered_model, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(cfg.tracking.registered_model, "challenger").version) == "2"
    run = client.get_run(result.run_id)
    assert run.data.tags[T.TAG_GATE_REASON].startswith("refused: accuracy gain")
    assert run.data.metrics[T.PROMOTED] == 0.0


def _assert_tracked(uri: str, run_id: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    errors = client.get_metric_history(run_id, T.TRUE_ERROR_RATE)
    assert [m.step for m in errors] == [0, 1, 2]
    assert errors[-1].value < errors[0].value
    for name in (T.AUDIT_ERROR_RATE, T.MODEL_ACCURACY, T.MODEL_ECE, T.COST, T.ANNOTATOR_HOURS, T.AUTO_ACCEPT_RATE,
                 T.ERRORS_FIXED, T.CORRECTION_FREQUENCY, T.KRIPPENDORFF_ALPHA, T.RESOLUTION_HOURS):
        assert [m.step for m in client.get_metric_history(run_id, name)][-1] == 2, name
    assert run.data.params["program.rounds"] == "2"
    paths = {a.path for folder in ("plots", "rounds", "tables") for a in client.list_artifacts(run_id, folder)}
    assert {T.ERROR_VS_COST_PNG, T.RELIABILITY_PNG, T.CONFUSION_PNG, T.routed_table_path(1),
            T.routed_table_path(2), T.ROUNDS_CSV} <= paths


def _routed_table(uri: str, run_id: str, round_: int) -> pd.DataFrame:
    import mlflow

    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=T.routed_table_path(round_),
                                               tracking_uri=uri)
    return pd.read_csv(path, dtype={ITEM: str})


@pytest.mark.slow
def test_two_rounds_through_the_real_serve_app(ray_serve, mlflow_cfg, small_world, monkeypatch):
    """Scoring over HTTP from the Serve app loading the registry's champion; tracking in a temp dir."""
    from mlflow import MlflowClient

    from serve.client import ServeClient

    # Spy on the client: the tiered routing decisions must be the Router's answers.
    answers = []
    real_route = ServeClient.route

    def spy(self, *args, **kwargs):
        answer = real_route(self, *args, **kwargs)
        answers.append((kwargs.get("label_issue_scores"), answer))
        return answer

    monkeypatch.setattr(ServeClient, "route", spy)
    cfg = mlflow_cfg.replace(serve="local")
    result = run_program(cfg, world=small_world)
    assert result.final_error_rate < result.initial_error_rate
    _assert_tracked(cfg.tracking.uri, result.run_id)
    assert len(answers) == cfg.rounds  # one /v1/route call per round, with the program's issue scores
    for round_, (issues, answer) in enumerate(answers, start=1):
        assert issues is not None
        np.testing.assert_allclose(answer["label_issue_score"], issues)
        routed = _routed_table(cfg.tracking.uri, result.run_id, round_)
        sent = answer.set_index(ITEM).loc[routed[ITEM].astype(str)]
        assert routed["route"].tolist() == sent["route"].tolist()
        assert [r.removesuffix("; deferred: over budget") for r in routed["reason"]] == sent["reason"].tolist()
    # The app the program deployed on the session's Serve serves the program's champion.
    served = ServeClient(ray_serve.base_url).model()
    champion = MlflowClient(tracking_uri=cfg.tracking.uri).get_model_version_by_alias(cfg.tracking.registered_model,
                                                                                           "champion")
    assert str(served["version"]) == str(champion.version)
