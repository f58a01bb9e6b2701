"""The program end to end: in process (fast), with MLflow in a temp dir, and through the real Serve app."""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from experiments import tracking as T
from experiments.config import ProgramConfig, parse_config
from experiments.measure import Measures
from experiments.comparison_report import round_figure
from experiments.program import InProcessScorer, ProgramResult, _Program, run_program
from experiments.world import TIER_CODES, build_world
from loop.columns import ITEM, LABEL, REASON, ROUTE
from loop.store import LabelStore
from loop.strategies import ACTION, PLANNED_COST, TaskCosts

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
                 T.PROGRAM_COST, T.ANNOTATOR_HOURS, T.AUTO_ACCEPT_RATE, T.AUTO_ACCEPT_ERROR_RATE, T.ERRORS_FIXED,
                 T.CORRECTION_FREQUENCY, T.KRIPPENDORFF_ALPHA, T.RESOLUTION_HOURS, T.TOP_PAIR_SHARE):
        assert name in history.columns, name
        assert np.isfinite(history.loc[2, name]), name
    low, rate, high = history.loc[2, [T.AUDIT_CI_LOW, T.AUDIT_ERROR_RATE, T.AUDIT_CI_HIGH]]
    assert 0 <= low <= rate <= high <= 1
    assert {T.routed_table_path(1), T.routed_table_path(2), T.ROUNDS_CSV, T.GATE_CSV} <= set(tracker.tables)
    assert {T.ERROR_VS_COST_PNG, T.RELIABILITY_PNG, T.CONFUSION_PNG} <= set(tracker.figures)


def test_a_run_logs_its_cost_per_error_removed_and_names_its_unit(tiered_run):
    result, _, tracker = tiered_run
    final = tracker.metrics[-1]
    assert final["step"] == 2 and T.INITIAL_LABELS_COST in final and "cost" not in final
    # logged to 4 significant figures: what the runs table shows is readable at a glance
    assert final[T.COST_PER_ERROR_REMOVED] == round_figure(result.program_cost / result.errors_removed)
    assert final[T.FINAL_ERROR_RATE] == round_figure(result.final_error_rate)
    assert final[T.COST_PER_ERROR_REMOVED_ESTIMATE] == \
        round_figure(result.program_cost / result.errors_removed_estimate)
    assert T.ROI not in final and T.ROI_ESTIMATE not in final  # no value per error configured
    assert tracker.tags[T.TAG_CURRENCY] == "cost units" and tracker.params["program.currency"] == "cost units"
    assert set(tracker.version_tags) == {str(v) for v in range(1, 4)}  # the seed model and two challengers
    assert tracker.version_tags["1"][T.VERSION_GATE_VERDICT] == T.VERDICT_PROMOTED


def test_the_store_holds_the_program(tiered_run, small_world):
    result, store, _ = tiered_run
    annotations = store.annotations_frame(result.stream)
    assert len(annotations) == result.program_annotations + result.n_items
    assert annotations["cost"].sum() == pytest.approx(result.initial_labels_cost + result.program_cost)
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


def test_answers_link_to_their_tasks_at_their_annotators_tier(tiered_run, small_world):
    result, store, _ = tiered_run
    annotations = store.annotations_frame(result.stream)
    tasks = store.tasks_frame(result.stream).set_index("task_id")
    linked = tasks.reindex(annotations["task_id"].astype(int))
    assert annotations["task_id"].notna().all() and annotations["task_id"].is_unique
    assert (linked[ITEM].to_numpy() == annotations[ITEM].to_numpy()).all()
    assert (linked["annotator_id"].to_numpy() == annotations["annotator_id"].to_numpy()).all()
    # Each task is stored at its annotator's tier (an experienced annotator's too, initial labels too).
    people = small_world.workforce.annotators.set_index("annotator_id")["tier"].map(TIER_CODES)
    assert (tasks["tier"].to_numpy() == people.reindex(tasks["annotator_id"]).to_numpy()).all()
    assert TIER_CODES["experienced"] in set(tasks["tier"])


def test_the_routed_table_explains_each_decision(tiered_run, small_world):
    _, _, tracker = tiered_run
    table = tracker.tables[T.routed_table_path(2)]
    assert {"item_id", "action", "route", "reason", "priority", "label_before", "label_after", "true_label"} <= \
        set(table.columns)
    assert (table["action"] != "keep").all() and table["reason"].str.len().gt(0).all()


def test_the_routed_table_gives_each_items_own_labels_and_truth(tiered_run, small_world):
    _, _, tracker = tiered_run
    truth = small_world.truth
    for round_ in (1, 2):
        table = tracker.tables[T.routed_table_path(round_)]
        expected = truth.reindex(table[ITEM].astype(str)).to_numpy()
        assert len(table) and (table["true_label"].to_numpy() == expected).all()


def test_the_routed_table_reads_labels_by_arrival_position_as_by_id():
    # The labels in arrival order (the truth aligned with them) are read by position; in another
    # order, by id: the same table either way.
    ids = ["a", "b", "c", "d"]
    dataset = SimpleNamespace(truth=pd.Series([0, 1, 2, 0], index=ids),
                              initial=pd.DataFrame({ITEM: ids, LABEL: [0, 0, 2, 1]}))
    measures = Measures(dataset)
    measures._aligned(pd.Index(ids, dtype=object))
    plan = pd.DataFrame({ITEM: ["c", "a", "d"], ACTION: ["review", "auto_accept", "keep"], ROUTE: ["crowd", "auto", ""],
                         REASON: ["doubt", "sure", ""], "priority": [0.9, 0.2, 0.1], PLANNED_COST: [1.0, 0.0, 0.0]})
    candidates = pd.DataFrame({ITEM: ["c", "a", "d"], "confidence": [0.4, 0.95, 0.99]})
    before = pd.Series([0, 0, 2, 1], index=pd.Index(ids, dtype=object))
    after = pd.Series([0, 1, 2, 1], index=pd.Index(ids, dtype=object))
    by_position = measures.routed_table(plan, candidates, before, after)
    by_id = measures.routed_table(plan, candidates, before.iloc[::-1], after.iloc[::-1])
    pd.testing.assert_frame_equal(by_position, by_id, check_exact=True)
    # The program hands the plan's arrival positions over (its plan is in the candidates' order).
    given = measures.routed_table(plan, candidates, before, after, np.array([2, 0, 3]))
    pd.testing.assert_frame_equal(given, by_id, check_exact=True)
    assert by_position[ITEM].tolist() == ["c", "a"]
    assert by_position["label_before"].tolist() == [2, 0] and by_position["label_after"].tolist() == [2, 0]
    assert by_position["true_label"].tolist() == [2, 0]


def test_each_items_first_label_is_kept_for_the_rows_read_so_far():
    # The program's cost counts every label but each item's first; the rows seen are kept and
    # only the new ones checked, all again when an earlier row changed (one committed late).
    from loop.store import ANNOTATION_ID

    rng = np.random.default_rng(4)
    measures = Measures(SimpleNamespace(truth=None, initial=None))
    ids = rng.integers(0, 30, size=200).astype(str)
    frame = pd.DataFrame({ANNOTATION_ID: np.arange(200), ITEM: ids})
    for end in (0, 1, 50, 50, 120, 200):
        got = measures._first_labels(frame.iloc[:end])
        assert np.array_equal(got, (~frame[ITEM].iloc[:end].duplicated()).to_numpy()), end
    late = pd.concat([frame.iloc[:10], pd.DataFrame({ANNOTATION_ID: [999], ITEM: [ids[15]]}), frame.iloc[10:]])
    assert np.array_equal(measures._first_labels(late), (~late[ITEM].duplicated()).to_numpy())
    assert np.array_equal(measures._first_labels(late.drop(columns=ANNOTATION_ID)), (~late[ITEM].duplicated()).to_numpy())


def test_the_training_items_are_scored_out_of_fold_as_a_full_scoring_would():
    # Only the training items' rows are scored again (the signals are row by row); a frame in
    # another form (another scorer's) is scored again whole, as before.
    from loop.routing import score_items

    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(4), size=12)
    ids = np.array([f"i{k}" for k in range(12)], dtype=object)
    program = _Program.__new__(_Program)
    program._arrived, program._arrival_pos = ids, {i: k for k, i in enumerate(ids)}
    program.out_of_fold = pd.DataFrame(rng.dirichlet(np.ones(4), size=3), index=["i7", "i2", "i9"])
    scores = score_items(probs, item_ids=ids)
    got, got_probs = program._out_of_sample(ids, scores, probs)
    want_probs = probs.copy()
    want_probs[[7, 2, 9]] = program.out_of_fold.to_numpy()
    assert np.array_equal(got_probs, want_probs)
    pd.testing.assert_frame_equal(got, score_items(want_probs, item_ids=ids), check_exact=True)
    other = scores.astype({"confidence": np.float32})
    pd.testing.assert_frame_equal(program._out_of_sample(ids, other, probs)[0], score_items(want_probs, item_ids=ids),
                                  check_exact=True)


def test_the_labels_in_arrival_order_follow_the_newest_resolutions():
    # Kept by arrival position from the resolutions read since the last call; the same as the
    # store's labels looked up by id, corrections and new items included. A resolution of an
    # item that has not arrived (a live stream's gold) sends it back to the lookup by id.
    frames = []

    def labels():
        heads = pd.concat(frames, ignore_index=True).drop_duplicates(ITEM, keep="last").set_index(ITEM)[LABEL]
        return heads[heads.index.isin(list(program._arrival_pos))]

    program = SimpleNamespace(history=SimpleNamespace(resolutions=lambda: pd.concat(frames, ignore_index=True)),
                              _label_at=np.zeros(0), _label_rows=0, _labels=labels,
                              _arrival_pos={"b": 0, "a": 1, "c": 2})
    program._positions = lambda ids, **kwargs: _Program._positions(program, ids, **kwargs)

    def check(order):
        got = _Program._labels_arrived(program, pd.Index(order, dtype=object))
        pd.testing.assert_series_equal(got, labels().reindex(pd.Index(order, dtype=object)), check_exact=True)
        return got.tolist()

    frames.append(pd.DataFrame({ITEM: ["a", "b", "c"], LABEL: [0, 1, 2]}))
    assert check(["b", "a", "c"]) == [1, 0, 2]
    frames.append(pd.DataFrame({ITEM: ["b", "d", "b"], LABEL: [2, 1, 0]}))
    program._arrival_pos["d"] = 3
    assert check(["b", "a", "c", "d"]) == [0, 0, 2, 1] and program._label_at is not None
    frames.append(pd.DataFrame({ITEM: ["gold", "a"], LABEL: [1, 2]}))
    assert check(["b", "a", "c", "d"]) == [0, 2, 2, 1] and program._label_at is None


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
    assert (a.final_error_rate, a.program_cost, a.errors_removed) == (b.final_error_rate, b.program_cost,
                                                                      b.errors_removed)


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
    got = InProcessScorer(lambda: model).route(ids, model.predict_proba(x), issues, thresholds)
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
    # Each registered version names its program, round and the gate's verdict.
    name = cfg.tracking.registered_model
    tags = {v: client.get_model_version(name, v).tags for v in ("1", "2")}
    common = {T.VERSION_STRATEGY: "tiered", T.VERSION_RUN_ID: result.run_id, T.VERSION_DATASET: "digits"}
    assert tags["1"] == {**common, T.VERSION_ROUND: "0", T.VERSION_GATE_VERDICT: T.VERDICT_PROMOTED}
    assert tags["2"] == {**common, T.VERSION_ROUND: "1", T.VERSION_GATE_VERDICT: T.VERDICT_REFUSED}
    assert result.gates["promoted"].tolist() == [True, False]


def _assert_tracked(uri: str, run_id: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    errors = client.get_metric_history(run_id, T.TRUE_ERROR_RATE)
    assert [m.step for m in errors] == [0, 1, 2]
    assert errors[-1].value < errors[0].value
    for name in (T.AUDIT_ERROR_RATE, T.MODEL_ACCURACY, T.MODEL_ECE, T.PROGRAM_COST, T.ANNOTATOR_HOURS,
                 T.AUTO_ACCEPT_RATE, T.ERRORS_FIXED, T.CORRECTION_FREQUENCY, T.KRIPPENDORFF_ALPHA,
                 T.RESOLUTION_HOURS):
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


@dataclass
class _Call:
    """One POST the program's Serve client sent."""

    path: str
    item_ids: list[str]
    has_labels: bool
    return_probabilities: bool | None
    has_issue_scores: bool
    has_features: bool
    probabilities: np.ndarray | None  # (n, k): sent to /v1/route, or answered by /v1/score
    model: dict | None  # the answer's model; None when no model ran


def _probabilities(sent: dict, answer: dict) -> np.ndarray | None:
    from serve.payload import decode_b64_array

    if "probabilities_b64" in sent:
        return decode_b64_array(sent["probabilities_b64"], sent["shape"], "float64", field="probabilities_b64")
    encoded = answer.get("arrays", {}).get("probabilities")
    return None if encoded is None else decode_b64_array(encoded["b64"], encoded["shape"], encoded["dtype"],
                                                         field="probabilities")


@dataclass
class _ServedRun:
    cfg: ProgramConfig
    result: ProgramResult
    routed: list[tuple[np.ndarray, pd.DataFrame]]  # /v1/route: the issue scores sent, the answer
    posts: list[_Call]
    warnings: list[warnings.WarningMessage]


@pytest.fixture(scope="module")
def served_run(ray_serve, small_cfg, small_world, mlflow_uri, tmp_path_factory) -> _ServedRun:
    """Two rounds of the tiered program through the real Serve app it deploys on the session's
    Ray (``serve: local``), with spies on its HTTP client; tracking in the session's store."""
    from serve.client import ServeClient

    name = "served-run"
    cfg = small_cfg.replace(serve="local", tracking=small_cfg.tracking.__class__(
        uri=mlflow_uri, experiment=name, registered_model=name),
        store_url=f"sqlite:///{tmp_path_factory.mktemp('served')}/labels.db")
    routed, posts = [], []
    real_route, real_request = ServeClient.route, ServeClient._request

    def route_spy(self, *args, **kwargs):
        answer = real_route(self, *args, **kwargs)
        routed.append((kwargs.get("label_issue_scores"), answer))
        return answer

    def request_spy(self, method, path, *, body=None, **kwargs):
        answer = real_request(self, method, path, body=body, **kwargs)
        if method == "POST" and body is not None and path != "/v1/reload":  # reload's body is {}
            sent = json.loads(body)
            posts.append(_Call(path, [str(i) for i in sent["item_ids"]], "labels" in sent,
                               sent.get("return_probabilities"),
                               "label_issue_scores" in sent or "label_issue_scores_b64" in sent,
                               "features" in sent or "features_b64" in sent, _probabilities(sent, answer),
                               answer["model"]))
        return answer

    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        patch.setattr(ServeClient, "route", route_spy)
        patch.setattr(ServeClient, "_request", request_spy)
        result = run_program(cfg, world=small_world)
    return _ServedRun(cfg, result, routed, posts, list(caught))


@pytest.mark.slow
def test_two_rounds_through_the_real_serve_app(served_run, ray_serve):
    """Scoring over HTTP from the Serve app loading the registry's champion; tracking in a temp dir."""
    from mlflow import MlflowClient

    from serve.client import ServeClient

    cfg, result = served_run.cfg, served_run.result
    assert result.final_error_rate < result.initial_error_rate
    _assert_tracked(cfg.tracking.uri, result.run_id)
    # The tiered routing decisions are the Router's answers: one /v1/route call per round,
    # with the program's issue scores.
    assert len(served_run.routed) == cfg.rounds
    for round_, (issues, answer) in enumerate(served_run.routed, start=1):
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


@pytest.mark.slow
def test_a_round_scores_each_item_in_one_request_and_routes_only_the_candidates(served_run, small_world):
    cfg = served_run.cfg
    posts = [c for c in served_run.posts if c.path in ("/v1/score", "/v1/route")]
    assert [c.path for c in posts] == ["/v1/score", "/v1/route"] * cfg.rounds
    scored, routed = posts[0::2], posts[1::2]
    for round_, (score, route_) in enumerate(zip(scored, routed), start=1):
        arrived = small_world.stream[:(round_ + 1) * cfg.items_per_round]
        # Every item that arrived so far, once, with no labels: the program scores the labels
        # itself, with the annotators' evidence.
        assert score.item_ids == list(arrived)
        assert not score.has_labels and score.return_probabilities is True
        # Then the Router gets the candidates, their probabilities from the scoring answer, the
        # program's scores and the current labels (for the reasons); no features, so no model
        # runs for it: the answer names none (an answer from the Scorer names the model version
        # it ran).
        assert set(route_.item_ids) <= set(arrived) and len(set(route_.item_ids)) == len(route_.item_ids)
        assert route_.has_issue_scores and route_.has_labels and route_.return_probabilities is False
        assert not route_.has_features and route_.model is None
        assert score.model is not None and score.model["name"] == cfg.tracking.registered_model
        # The probabilities sent are what tiered decides on: the posterior of the model and the
        # annotators (test_the_champions_training_items_are_judged_out_of_fold checks its
        # prior), not the scoring answer's rows.
        rows = pd.Index(score.item_ids).get_indexer(route_.item_ids)
        np.testing.assert_allclose(route_.probabilities.sum(axis=1), 1.0)
        assert not np.allclose(route_.probabilities, score.probabilities[rows])
    # Items an expert labelled (audits) are candidates no more.
    assert len(routed[-1].item_ids) < len(scored[-1].item_ids)


@pytest.mark.slow
def test_the_app_the_program_deploys_routes_with_the_programs_thresholds(served_run, ray_serve):
    from loop.routing import RoutingThresholds
    from serve.client import ServeClient

    thresholds = served_run.cfg.thresholds
    assert thresholds != RoutingThresholds()  # the Router's defaults would not pass for them
    got = ServeClient(ray_serve.base_url).thresholds()["thresholds"]
    assert RoutingThresholds.from_dict(got) == thresholds
    assert not [w for w in served_run.warnings if "Router's thresholds" in str(w.message)]


@pytest.mark.slow
def test_an_app_with_other_thresholds_gets_a_warning_naming_both(served_run, ray_serve, small_world):
    """Someone else's app (a URL): the program routes with its Router and says how they differ."""
    import dataclasses

    from experiments.program import HttpScorer
    from loop.routing import RoutingThresholds
    from serve.client import ServeClient

    theirs = RoutingThresholds.from_dict(ServeClient(ray_serve.base_url).thresholds()["thresholds"])
    ours = dataclasses.replace(theirs, auto_accept_confidence=0.95 if theirs.auto_accept_confidence != 0.95 else 0.96)
    ids = small_world.stream[:20]
    probs = np.full((20, small_world.n_classes), 1 / small_world.n_classes)
    with HttpScorer(ray_serve.base_url) as scorer, pytest.warns(UserWarning) as caught:
        routed = scorer.route(ids, probs, np.full(20, 0.5), ours)
    message = str(caught[0].message)
    assert ray_serve.base_url in message
    assert (f"auto_accept_confidence {theirs.auto_accept_confidence!r} (Router) vs "
            f"{ours.auto_accept_confidence!r} (program)") in message
    assert "expert_margin" not in message  # only what differs
    assert routed[ITEM].tolist() == list(ids)


class _CountingScorer:
    """The in-process scorer, counting the items each call carries."""

    def __init__(self, inner: InProcessScorer) -> None:
        self.inner, self.calls = inner, []

    def reload(self) -> None:
        self.inner.reload()

    def score(self, item_ids, features, labels=None):
        self.calls.append(("score", list(item_ids), labels is not None))
        return self.inner.score(item_ids, features, labels)

    def route(self, item_ids, probabilities, label_issue_scores, thresholds, labels=None):
        self.calls.append(("route", list(item_ids), False))
        return self.inner.route(item_ids, probabilities, label_issue_scores, thresholds, labels=labels)


@pytest.mark.parametrize("strategy", ["cleanlab", "tiered"])
def test_the_scorer_port_scores_each_arrived_item_once_per_round(small_cfg, small_world, strategy):
    tracker = T.MemoryTracker()
    scorer = _CountingScorer(InProcessScorer(lambda: tracker.load_model(T.ALIAS_CHAMPION)))
    cfg = small_cfg.replace(strategy=strategy)
    run_program(cfg, world=small_world, tracker=tracker, scorer=scorer)
    scored = [ids for kind, ids, _ in scorer.calls if kind == "score"]
    routed = [ids for kind, ids, _ in scorer.calls if kind == "route"]
    assert scored == [list(small_world.stream[:(r + 1) * cfg.items_per_round]) for r in range(1, cfg.rounds + 1)]
    assert not any(labelled for kind, _, labelled in scorer.calls if kind == "score")
    if strategy == "tiered":  # only the tiered strategy asks the Router, for its candidates
        assert len(routed) == cfg.rounds and all(set(r) <= set(s) for r, s in zip(routed, scored))
    else:
        assert routed == []


def test_serving_over_http_needs_tracking(small_cfg, small_world):
    from experiments.config import ConfigError

    with pytest.raises(ConfigError, match="serve.url: expected 'in_process' when tracking.uri is 'none'"):
        run_program(small_cfg.replace(serve="http://127.0.0.1:9"), world=small_world)


class _RecordingScorer(_CountingScorer):
    """Also keeps the probabilities of the last scoring answer."""

    def score(self, item_ids, features, labels=None):
        scores, probs = super().score(item_ids, features, labels)
        self.scored = pd.DataFrame(probs, index=pd.Index(list(item_ids)))
        return scores, probs


def test_the_champions_training_items_are_judged_out_of_fold(small_cfg, small_world, monkeypatch):
    import experiments.program as program

    seen = []  # the model probabilities the evidence of each round starts from

    def spy(pred_probs, *, annotations, item_ids=None, annotator_model="one_coin", **fit):
        # The program hands every arrived item in arrival order and its annotations by row
        # position (no item ids): those rows are the scored items.
        ids = list(item_ids) if item_ids is not None else None
        seen.append((np.asarray(pred_probs), ids))
        return real(pred_probs, annotations=annotations, item_ids=item_ids, annotator_model=annotator_model, **fit)

    real = program.label_posteriors
    monkeypatch.setattr(program, "label_posteriors", spy)
    tracker = T.MemoryTracker()
    scorer = _RecordingScorer(InProcessScorer(lambda: tracker.load_model(T.ALIAS_CHAMPION)))
    cfg = small_cfg.replace(strategy="tiered", rounds=2)
    run_program(cfg, world=small_world, tracker=tracker, scorer=scorer)
    scored = list(scorer.scored.index)
    last = next(pd.DataFrame(probs, index=pd.Index(scored)) for probs, ids in reversed(seen)
                if ids == scored or (ids is None and len(probs) == len(scored)))
    unseen = np.isin(last.index, small_world.stream[cfg.rounds * cfg.items_per_round:])
    assert unseen.any() and (~unseen).any()
    # Items the champion never saw: the scoring answer as it was.
    np.testing.assert_array_equal(last[unseen].to_numpy(), scorer.scored[unseen].to_numpy())
    # Items it was trained on: other probabilities (rows still sum to 1), and less sure of the
    # labels it learnt (the initial crowd labels of the seed round), which is why they are used.
    trained = ~unseen
    np.testing.assert_allclose(last[trained].sum(axis=1), 1.0)
    learnt = small_world.initial.set_index("item_id")["label"].reindex(last.index[trained]).to_numpy()
    rows = np.arange(int(trained.sum()))
    out_of_fold = last[trained].to_numpy()[rows, learnt]
    fitted = scorer.scored[trained].to_numpy()[rows, learnt]
    assert out_of_fold.mean() < fitted.mean()


@pytest.mark.parametrize("annotator_model", ["one_coin", "dawid_skene"])
def test_the_configured_annotator_model_weighs_the_evidence(small_cfg, small_world, monkeypatch, annotator_model):
    import experiments.program as program

    used = []

    def spy(pred_probs, *, annotations, item_ids=None, annotator_model="one_coin", **fit):
        used.append(annotator_model)
        return real(pred_probs, annotations=annotations, item_ids=item_ids, annotator_model=annotator_model, **fit)

    real = program.label_posteriors
    monkeypatch.setattr(program, "label_posteriors", spy)
    cfg = small_cfg.replace(strategy="tiered", rounds=2, annotator_model=annotator_model)
    result = run_program(cfg, world=small_world, tracker=T.MemoryTracker())
    # One fit a round for the plan, and one more where reviewed items are settled.
    assert len(used) >= cfg.rounds and set(used) == {annotator_model}
    assert result.errors_removed > 0


def test_a_long_program_fits_on_a_bounded_sample(small_cfg, small_world, monkeypatch):
    # 240 items arrive; at most 100 train each model (and get its out-of-fold probabilities) and
    # fit the posterior's annotators, so a round's cost stops growing with the history.
    import sklearn.model_selection

    import experiments.program as program

    trained, fitted = [], []
    real_cv, real_posteriors = sklearn.model_selection.cross_val_predict, program.label_posteriors

    def cv_spy(estimator, x, y, **kwargs):
        trained.append(len(x))
        return real_cv(estimator, x, y, **kwargs)

    def posterior_spy(pred_probs, **kwargs):
        fitted.append(kwargs["fit_rows"])
        return real_posteriors(pred_probs, **kwargs)

    monkeypatch.setattr(sklearn.model_selection, "cross_val_predict", cv_spy)
    monkeypatch.setattr(program, "label_posteriors", posterior_spy)
    result = run_program(small_cfg.replace(strategy="tiered", max_fit_items=100), world=small_world)
    assert trained == [80, 100, 100] and set(fitted) == {100}
    assert result.final_error_rate < result.initial_error_rate


def test_the_store_holds_the_champions_predictions_to_pre_annotate_with(tiered_run):
    result, store, _ = tiered_run
    # Every item has the champion's prediction; the routed ones carry the route's reason.
    items = store.annotations_frame(result.stream)[ITEM].unique()
    known = store.item_data(result.stream, items)
    assert set(known) == set(items) and all(v["prediction"] is not None for v in known.values())
    reasons = [v["prediction"][2] for v in known.values()]
    assert any(reasons)
    store.add_tasks(result.stream, [{ITEM: items[0], "idempotency_key": "label-studio-check"}])
    prediction = store.export_label_studio(result.stream)[-1]["predictions"][0]
    assert prediction["model_version"].startswith(f"{result.stream}@") and 0 < prediction["score"] <= 1


def test_a_new_champion_predicts_again_only_the_items_people_get_tasks_for(small_cfg, small_world, monkeypatch):
    # Under tiered the plan auto-accepts most settled items again every round: a promotion that
    # predicted them all again rewrote most of the history (~80,000 rows at 10^5 items). An
    # auto-accept that changes a label is predicted again: no person set that label.
    from experiments import program
    from loop.resolution import METHOD_AUTO
    from loop.strategies import ACTION, Action

    written, plans, relabelled = [], [], []
    real_write, real_plan = LabelStore.add_predictions, program.plan_round
    real_resolve = LabelStore.add_resolutions

    def write(self, stream, model_version, predictions, **kwargs):
        written.append(set(pd.DataFrame(predictions)[ITEM].astype(str)))
        relabelled.append(set())
        return real_write(self, stream, model_version, predictions, **kwargs)

    def resolve(self, stream, resolutions, **kwargs):
        frame = pd.DataFrame(resolutions)
        if "method" in frame and relabelled:
            relabelled[-1] |= set(frame.loc[frame["method"] == METHOD_AUTO, ITEM].astype(str))
        return real_resolve(self, stream, resolutions, **kwargs)

    def plan(*args, **kwargs):
        plans.append(real_plan(*args, **kwargs))
        return plans[-1]

    monkeypatch.setattr(LabelStore, "add_predictions", write)
    monkeypatch.setattr(LabelStore, "add_resolutions", resolve)
    monkeypatch.setattr(program, "plan_round", plan)
    result = run_program(small_cfg.replace(strategy="tiered"), world=small_world)
    assert len(written) == len(plans) == 2 and result.promotions == 2  # a new champion each round
    seen, auto_again, relabels = set(), 0, 0
    for round_plan, rows, changed in zip(plans, written, relabelled):
        action = round_plan.assign(**{ITEM: round_plan[ITEM].astype(str)}).set_index(ITEM)[ACTION]
        tasks = set(action.index[~action.isin([Action.KEEP.value, Action.AUTO_ACCEPT.value])])
        assert rows & seen <= tasks | changed  # predicted again: the items people get tasks for
        assert changed <= rows  # and every label an auto-accept changed, with its route and reason
        auto_again += len(set(action.index[action == Action.AUTO_ACCEPT.value]) & seen - changed)
        relabels += len(changed & seen)
        seen |= rows
    assert auto_again > 0 and relabels > 0  # items predicted before: auto-accepted again, some relabelled


def _hours_by_id(frame: pd.DataFrame) -> float:
    """The figure by item id, as a reader would compute it: over the items whose labels
    disagree, the median of first to last label, in hours."""
    from loop.store import CREATED_AT

    stamps = pd.to_datetime(frame[CREATED_AT], utc=True)
    by = frame.assign(at=stamps).groupby(frame[ITEM].astype(str))
    spans = (by["at"].max() - by["at"].min())[by[LABEL].nunique() > 1]
    return float(spans.dt.total_seconds().median() / 3600) if len(spans) else float("nan")


def test_the_rounds_resolution_hours_are_those_of_the_items_it_acted_on(tiered_run):
    # The program selects the acted-on items' labels by arrival position and reduces them in
    # arrays; the figure is the median, over those items whose labels disagree, of first to last.
    from loop.strategies import ACTION, Action

    result, store, tracker = tiered_run
    last = result.rounds.index[-1]
    routed = tracker.tables[T.routed_table_path(last)]
    acted = set(routed.loc[routed[ACTION] != Action.KEEP.value, ITEM].astype(str))
    annotations = store.annotations_frame(result.stream)
    expected = _hours_by_id(annotations[annotations[ITEM].astype(str).isin(acted)])
    assert np.isfinite(expected)
    assert result.rounds[T.RESOLUTION_HOURS].loc[last] == pytest.approx(expected, rel=1e-12)


def test_the_resolution_hours_take_an_item_not_arrived_by_its_id():
    # A live stream's plan may act on an item before it arrives (its gold): its labels are
    # found by id, each such item a group of its own beside the arrived ones.
    from loop.columns import ANNOTATOR
    from loop.store import CREATED_AT
    from loop.store import ANNOTATION_ID
    from loop.strategies import ACTION, Action

    program = _Program.__new__(_Program)
    program._arrived = np.array(["a", "b"], dtype=object)
    program._arrival_pos = {"a": 0, "b": 1}
    program._row_ids = program._row_pos = program._row_who = np.zeros(0, dtype=np.int64)
    program._who, program._who_names = {}, []
    day = pd.Timestamp("2026-01-01", tz="UTC")
    annotations = pd.DataFrame({
        ANNOTATION_ID: np.arange(7), ITEM: ["a", "x", "a", "b", "x", "b", "y"], ANNOTATOR: list("pqrpqrp"),
        LABEL: [0, 1, 2, 1, 0, 2, 1],
        CREATED_AT: [day + pd.Timedelta(hours=h) for h in (0, 1, 3, 4, 9, 10, 11)]})
    plan = pd.DataFrame({ITEM: ["a", "b", "x", "y"], ACTION: [Action.REVIEW.value, Action.KEEP.value,
                                                              Action.EXPERT.value, Action.REVIEW.value]})
    got = program._resolution_hours(annotations, plan)
    assert got == _hours_by_id(annotations[annotations[ITEM].isin(["a", "x", "y"])]) == 5.5  # a: 3 h, x: 8 h
    arrived_only = plan[plan[ITEM] != "x"]
    assert program._resolution_hours(annotations, arrived_only) == 3.0


def test_the_auto_accepts_that_keep_a_label_are_not_resolved_again(small_cfg, small_world, monkeypatch):
    # Under tiered the plan auto-accepts most settled items again every round, each to the label
    # it has: resolving them cost the history every round (~76,000 at 10^5) and wrote nothing.
    from experiments import program
    from loop.strategies import ACTION, Action

    plans, resolved = [], []
    real_plan, real_resolve = program.plan_round, program.resolve_actions

    def plan(candidates, *args, **kwargs):
        plans.append((candidates, real_plan(candidates, *args, **kwargs)))
        return plans[-1][1]

    def resolve(plan_, *args, **kwargs):
        resolved.append(set(plan_.loc[plan_[ACTION] != Action.KEEP.value, ITEM].astype(str)))
        return real_resolve(plan_, *args, **kwargs)

    monkeypatch.setattr(program, "plan_round", plan)
    monkeypatch.setattr(program, "resolve_actions", resolve)
    run_program(small_cfg.replace(strategy="tiered"), world=small_world)
    assert len(plans) == len(resolved) == 2
    kept_again = 0
    for (candidates, round_plan), ids in zip(plans, resolved):
        auto = (round_plan[ACTION] == Action.AUTO_ACCEPT.value).to_numpy()
        keeps = auto & (candidates["predicted"].to_numpy() == candidates["label"].to_numpy())
        acted = round_plan[ACTION].to_numpy() != Action.KEEP.value
        assert ids == set(round_plan.loc[acted & ~keeps, ITEM].astype(str))
        kept_again += int(keeps.sum())
    assert kept_again > 0
