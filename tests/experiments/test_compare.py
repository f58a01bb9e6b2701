"""Strategy comparison: one parent run, one child per strategy with its whole config as params."""

from __future__ import annotations

import pytest

from experiments import tracking as T
from experiments.compare import TABLE_COLUMNS, main
from experiments.config import parse_config
from experiments.world import build_world

TINY = {"program": {"rounds": 1, "items_per_round": 60, "budget_per_round": 3.0, "calibration_items": 50,
                    "holdout_items": 100, "audit_rate": 0.0},
        "compare": {"strategies": ["random", "tiered"]}}


@pytest.fixture(scope="module")
def tiny_world():
    return build_world(parse_config(TINY))


def test_a_comparison_without_tracking_gives_the_table(tiny_world):
    cfg = parse_config({**TINY, "tracking": {"uri": "none"}, "store": {"url": "sqlite://"}})
    result = main(cfg, world=tiny_world)
    assert result.parent_run_id is None
    assert list(result.table.columns) == list(TABLE_COLUMNS)
    assert result.table["strategy"].tolist() == ["random", "tiered"]
    assert set(result.results) == {"random", "tiered"}
    # Same world: every strategy starts from the same initial labels.
    assert len({r.initial_error_rate for r in result.results.values()}) == 1


@pytest.mark.slow
def test_parent_and_child_runs_in_mlflow(tmp_path, tiny_world, mlflow_uri):
    from mlflow import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    uri = mlflow_uri
    cfg = parse_config({**TINY, "tracking": {"uri": uri, "experiment": "cmp", "registered_model": "cmp-model"},
                        "store": {"url": f"sqlite:///{tmp_path}/labels.db"}})
    result = main(cfg, world=tiny_world)
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags[T.TAG_ROLE] == T.ROLE_COMPARISON
    assert parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.{MLFLOW_PARENT_RUN_ID} = '{result.parent_run_id}'")
    assert sorted(c.data.tags[T.TAG_STRATEGY] for c in children) == ["random", "tiered"]
    for child in children:
        assert child.data.params["program.strategy"] == child.data.tags[T.TAG_STRATEGY]
        assert child.data.params["program.items_per_round"] == "60"
        assert T.TRUE_ERROR_RATE in child.data.metrics
    assert parent.data.metrics[T.strategy_metric("tiered", "final_error_rate")] == \
        pytest.approx(result.results["tiered"].final_error_rate)
    paths = {a.path for a in client.list_artifacts(result.parent_run_id)} | \
        {a.path for a in client.list_artifacts(result.parent_run_id, "plots")}
    assert {T.COMPARISON_CSV, T.ERROR_VS_COST_PNG} <= paths
