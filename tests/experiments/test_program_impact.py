"""The program logs every round's annotator impact (experiments.impact): a per-annotator table
as an artifact and two aggregates as metrics, consistent with the store's own reading."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments import tracking as T
from experiments.config import parse_config
from experiments.impact import resolver_skills
from experiments.program import run_program
from experiments.world import build_world
from loop.columns import ANNOTATOR, ITEM, LABEL
from loop.impact import IMPACT_COLUMNS
from loop.store import LabelStore

SMALL = {"program": {"rounds": 2, "items_per_round": 80, "budget_per_round": 5.0, "calibration_items": 60,
                     "holdout_items": 150, "audit_rate": 0.05},
         "tracking": {"uri": "none"}, "store": {"url": "sqlite://"}}


@pytest.fixture(scope="module")
def run():
    cfg = parse_config(SMALL)
    world = build_world(cfg)
    store, tracker = LabelStore("sqlite://"), T.MemoryTracker()
    result = run_program(cfg, store=store, tracker=tracker, world=world)
    return cfg, world, store, tracker, result


def test_every_round_logs_its_impact_table_and_aggregates(run):
    cfg, _, _, tracker, _ = run
    history = tracker.history()
    for r in range(cfg.rounds + 1):
        table = tracker.tables[T.impact_table_path(r)]
        assert list(table.columns) == [*IMPACT_COLUMNS, "true_errors_fixed"]  # a simulation knows the truth
        assert (table["round"] == r).all() and table["annotator_id"].is_unique
        assert table["share_of_error_reduction"].sum() <= 1 + 1e-9
        assert (table["confirmed"] + table["overturned"] + table["pending"] <= table["answers"]).all()
        assert history.loc[r, T.ANNOTATORS_WITH_CONFIRMED_FIXES] == (table["errors_fixed_model_right"] > 0).sum()
        top = table["share_of_error_reduction"].max() if len(table) else 0.0
        assert history.loc[r, T.TOP_ANNOTATOR_SHARE] == pytest.approx(top)
        assert table["skill"].between(0, 1).all()  # every annotator who answered has the resolver's estimate
    # No per-annotator metric names: they would not scale.
    assert not any(any(name in key for name in ("annotator_id", "share_of_error_reduction"))
                   for key in history.columns)
    later = pd.concat([tracker.tables[T.impact_table_path(r)] for r in range(1, cfg.rounds + 1)])
    assert later["errors_fixed"].sum() > 0 and later["answers"].sum() > 0
    assert (later["true_errors_fixed"] <= later["errors_fixed"]).all()


def test_the_rounds_are_closed_in_the_store_with_the_resolvers_skills(run):
    cfg, _, store, _, result = run
    events = store.events_frame(stream=result.stream)
    closed = events[events["action"] == "round.closed"]
    assert closed["entity_id"].tolist() == list(range(cfg.rounds + 1))
    last = closed.iloc[-1]["after"]["skills"]
    # Fitted on every label of the items the round touched (what the round's read holds).
    touched = store.impact_inputs(result.stream, rounds=[cfg.rounds]).answers
    assert set(last) == set(touched["annotator_id"])
    assert last == pytest.approx(resolver_skills(touched, cfg.annotator_model, fit_items=cfg.max_fit_items,
                                                 random_state=[cfg.seed, 31]))
    # The store reads the same answers per round as the program logged.
    table = store.annotator_impact(result.stream)
    for r in range(cfg.rounds + 1):
        logged = run[3].tables[T.impact_table_path(r)].set_index(ANNOTATOR)["answers"]
        assert table[table["round"] == r].set_index(ANNOTATOR)["answers"].equals(logged)


def test_resolver_skills_rank_a_careless_annotator_below_careful_ones():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 300)
    rows = []
    for name, accuracy in (("good", 0.95), ("fair", 0.7), ("poor", 0.4), ("x", 0.8), ("y", 0.8)):
        right = rng.random(300) < accuracy
        labels = np.where(right, truth, (truth + rng.integers(1, 3, 300)) % 3)
        rows.append(pd.DataFrame({ITEM: np.arange(300), ANNOTATOR: name, LABEL: labels}))
    skills = resolver_skills(pd.concat(rows, ignore_index=True))
    assert skills["good"] > skills["fair"] > skills["poor"]
    assert resolver_skills(pd.DataFrame({ITEM: [1], ANNOTATOR: ["u"], LABEL: [0]})) == {}


@pytest.mark.slow
def test_mlflow_holds_the_impact_tables_and_the_aggregates(tmp_path, mlflow_uri):
    import mlflow
    from mlflow import MlflowClient

    base = parse_config(SMALL)
    cfg = base.replace(rounds=1, tracking=base.tracking.__class__(uri=mlflow_uri, experiment="impact-mlflow",
                                                                  registered_model="impact-mlflow"),
                       store_url=f"sqlite:///{tmp_path}/labels.db")
    result = run_program(cfg, world=build_world(cfg))
    client = MlflowClient(tracking_uri=mlflow_uri)
    paths = {a.path for a in client.list_artifacts(result.run_id, "impact")}
    assert paths == {T.impact_table_path(0), T.impact_table_path(1)}
    table = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=result.run_id, tracking_uri=mlflow_uri,
                                                            artifact_path=T.impact_table_path(1)))
    assert list(table.columns) == [*IMPACT_COLUMNS, "true_errors_fixed"] and table["answers"].sum() > 0
    history = client.get_metric_history(result.run_id, T.TOP_ANNOTATOR_SHARE)
    assert [m.step for m in history] == [0, 1]
    assert history[-1].value == pytest.approx(table["share_of_error_reduction"].max())
