"""The one MLflow writer: MLflow's batch and length limits, nesting, no password in params or tags."""

from __future__ import annotations

import pytest

from experiments import tracking as T


class RecordingClient:
    """Stands in for MlflowClient.log_batch and keeps every batch."""

    def __init__(self) -> None:
        self.batches: list[dict[str, list]] = []

    def log_batch(self, run_id, metrics=(), params=(), tags=()) -> None:
        self.batches.append({"metrics": list(metrics), "params": list(params), "tags": list(tags)})


def test_batches_stay_within_mlflows_limits_and_lose_nothing() -> None:
    client = RecordingClient()
    writer = T.RunWriter("unused://", client=client)
    writer.log("run", params={f"p{i}": i for i in range(250)}, tags={f"t{i}": i for i in range(150)},
               metrics={f"m{i}": float(i) for i in range(1900)}, step=3)
    for batch in client.batches:
        assert len(batch["params"]) <= 100 and len(batch["tags"]) <= 100 and len(batch["metrics"]) <= 1000
        assert sum(map(len, batch.values())) <= 1000
    logged = {kind: [row.key for b in client.batches for row in b[kind]] for kind in ("params", "tags", "metrics")}
    assert logged["params"] == [f"p{i}" for i in range(250)]
    assert logged["tags"] == [f"t{i}" for i in range(150)]
    assert logged["metrics"] == [f"m{i}" for i in range(1900)]
    assert {row.step for b in client.batches for row in b["metrics"]} == {3}


def test_long_values_are_cut_to_mlflows_limits_and_long_keys_refused() -> None:
    client = RecordingClient()
    writer = T.RunWriter("unused://", client=client)
    writer.log("run", params={"p": "x" * 7000}, tags={"t": "y" * 9000})
    (batch,) = client.batches
    assert batch["params"][0].value == "x" * 6000
    assert batch["tags"][0].value == "y" * 8000
    with pytest.raises(ValueError, match="at most 250"):
        writer.log("run", params={"k" * 251: 1})


@pytest.mark.parametrize(("given", "shown"), [
    ("postgresql+psycopg://labelloop:s3cret@db:5432/labels", "postgresql+psycopg://labelloop:***@db:5432/labels"),
    ("postgresql://u:p@ss@db/labels", "postgresql://u:***@db/labels"),  # "@" in a plain-text password
    ("http://admin:pw@mlflow:5000/", "http://admin:***@mlflow:5000/"),
    ("['postgresql://a:b@h/x', 'postgresql://c:d@h/y']", "['postgresql://a:***@h/x', 'postgresql://c:***@h/y']"),
    ("postgresql://labelloop@db/labels", "postgresql://labelloop@db/labels"),  # no password
    ("sqlite:///optuna.db", "sqlite:///optuna.db"),
    ("http://mlflow:5000/api?user=a@b", "http://mlflow:5000/api?user=a@b"),  # a port, not a password
])
def test_url_passwords_are_hidden(given: str, shown: str) -> None:
    assert T.hide_passwords(given) == shown


def test_no_password_reaches_a_param_or_tag(mlflow_uri: str) -> None:
    from mlflow import MlflowClient

    url = "postgresql+psycopg://labelloop:s3cret@db:5432/labels"
    writer = T.RunWriter(mlflow_uri)
    experiment = writer.experiment_id("test-tracking-passwords")
    run_id = writer.start_run(experiment, "run", params={"store.url": url}, tags={T.TAG_OPTUNA_STORAGE: url})
    writer.log(run_id, params={"late": url}, tags={"late": url})
    writer.finish(run_id)
    run = MlflowClient(mlflow_uri).get_run(run_id)
    assert run.data.params["store.url"] == run.data.tags[T.TAG_OPTUNA_STORAGE] == \
        "postgresql+psycopg://labelloop:***@db:5432/labels"
    assert not any("s3cret" in v for v in [*run.data.params.values(), *run.data.tags.values()])


def test_a_run_nests_under_its_parent_and_finishes(mlflow_uri: str) -> None:
    from mlflow import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    writer = T.RunWriter(mlflow_uri)
    experiment = writer.experiment_id("test-tracking-nesting")
    parent = writer.start_run(experiment, "parent", params={f"p{i}": i for i in range(120)})
    child = writer.start_run(experiment, "child", parent_run_id=parent, tags={T.TAG_ROLE: T.ROLE_TUNE_TRIAL})
    writer.finish(child, failed=True)
    writer.finish(parent)
    client = MlflowClient(mlflow_uri)
    run = client.get_run(child)
    assert run.data.tags[MLFLOW_PARENT_RUN_ID] == parent and run.info.run_name == "child"
    assert run.info.status == "FAILED" and client.get_run(parent).info.status == "FINISHED"
    assert len(client.get_run(parent).data.params) == 120


def test_the_program_tracker_writes_through_the_writer(mlflow_uri: str) -> None:
    from mlflow import MlflowClient

    tracker = T.MlflowTracker(mlflow_uri, "test-tracking-program", "test-tracking-model")
    run_id = tracker.start("tiered", params={"store.url": "postgresql://u:s3cret@db/labels"},
                           tags={T.TAG_ROLE: T.ROLE_PROGRAM})
    try:
        tracker.log_metrics({T.PROGRAM_COST: 12.0, T.MODEL_ECE: float("nan")}, step=2)
    finally:
        tracker.finish()
    run = MlflowClient(mlflow_uri).get_run(run_id)
    assert run.data.params["store.url"] == "postgresql://u:***@db/labels"
    assert run.data.metrics == {T.PROGRAM_COST: 12.0}  # a NaN figure is left out
    assert run.data.tags[T.TAG_ROLE] == T.ROLE_PROGRAM and run.info.status == "FINISHED"


def test_a_text_artifact_and_version_tags_through_the_mlflow_tracker(mlflow_uri: str) -> None:
    import mlflow
    from mlflow import MlflowClient
    from sklearn.dummy import DummyClassifier

    tracker = T.MlflowTracker(mlflow_uri, "test-tracking-text", "test-tracking-text-model")
    run_id = tracker.start("comparison", params={}, tags={})
    try:
        tracker.log_text("<p>store postgresql://u:s3cret@db/labels</p>", T.REPORT_HTML)
        version = tracker.publish(DummyClassifier().fit([[0.0], [1.0]], [0, 1]), aliases=(T.ALIAS_CHAMPION,))
        tracker.tag_version(version, {T.VERSION_STRATEGY: "tiered", T.VERSION_ROUND: 2,
                                      "store": "postgresql://u:s3cret@db/labels"})
    finally:
        tracker.finish()
    text = mlflow.artifacts.load_text(f"runs:/{run_id}/{T.REPORT_HTML}")
    assert text == "<p>store postgresql://u:***@db/labels</p>"
    tags = MlflowClient(mlflow_uri, registry_uri=mlflow_uri).get_model_version("test-tracking-text-model",
                                                                               version).tags
    assert tags == {T.VERSION_STRATEGY: "tiered", T.VERSION_ROUND: "2", "store": "postgresql://u:***@db/labels"}


def test_the_memory_tracker_keeps_texts_and_version_tags() -> None:
    tracker = T.MemoryTracker()
    tracker.log_text("postgresql://u:s3cret@db/x", "a.html")
    tracker.tag_version("3", {T.VERSION_ROUND: 1})
    tracker.tag_version("3", {T.VERSION_WINNER: "true"})
    assert tracker.texts == {"a.html": "postgresql://u:***@db/x"}
    assert tracker.version_tags == {"3": {T.VERSION_ROUND: "1", T.VERSION_WINNER: "true"}}


def test_a_strategys_figure_on_the_parent_is_its_own_chart_section() -> None:
    # MLflow's chart view makes the prefix before the last "/" a section.
    assert T.strategy_metric("tiered", T.PROGRAM_COST) == "tiered/program_cost"
