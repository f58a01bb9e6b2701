"""No password leaves through what labelloop writes: MLflow params, tags and artifacts, the
Optuna storage, the terminal, and the Serve app's answers.

The tracking URI and the store URL carry ``user:s3cret@``; the tracking store the runs go to is
a SQLite file (an http URI with a password is only ever printed or written here, never asked).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from experiments.cli import main
from experiments.tune import TrialOutcome, TrialParams, TuneSettings, parse_tune_config, run_study

SECRET = "s3cret"
TRACKING = "http://user:s3cret@127.0.0.1:9/"
STORE = "postgresql://user:s3cret@127.0.0.1:5432/test"


def _toy(p: TrialParams) -> TrialOutcome:
    a = p.thresholds.auto_accept_confidence
    return TrialOutcome(cost=100 * a + 500 * p.audit_rate, error_rate=0.01 * (1 - a))


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return f"sqlite:///{tmp_path}/mlflow.db"


def _everything_logged(tracking_uri: str, run_ids: list[str], into: Path) -> str:
    """Every param, tag and artifact of the runs, as one text."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    texts = []
    for run_id in run_ids:
        run = client.get_run(run_id)
        texts += [f"{k}={v}" for k, v in {**run.data.params, **run.data.tags}.items()]
        folder = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(into / run_id),
                                                          tracking_uri=tracking_uri))
        texts += [path.read_text(errors="replace") for path in folder.rglob("*") if path.is_file()]
    return "\n".join(texts)


def test_tune_logs_no_password_in_params_tags_artifacts_or_its_storage(tmp_path, tracking):
    import optuna
    from mlflow import MlflowClient

    from experiments.config import flatten
    from experiments.tune import write_best_serve_config

    cfg = parse_tune_config({"tune": {"serve_config": str(tmp_path / "serve.yaml")},
                             "tracking": {"uri": TRACKING}, "store": {"url": STORE}})
    settings = TuneSettings(storage=f"sqlite:///{tmp_path}/optuna.db", study_name="secrets", trials=3, seed=0)
    result = run_study(_toy, settings, tracking_uri=tracking, params=flatten(cfg.program),
                       write_best=lambda best: write_best_serve_config(cfg, best))
    assert result.serve_config is not None
    # The file on disk keeps the password `serve deploy` needs; what MLflow holds does not.
    assert SECRET in Path(result.serve_config).read_text()
    children = MlflowClient(tracking).search_runs(
        [MlflowClient(tracking).get_run(result.parent_run_id).info.experiment_id])
    logged = _everything_logged(tracking, [result.parent_run_id, *(c.info.run_id for c in children)],
                                tmp_path / "downloaded")
    assert "tracking_uri: http://user:***@127.0.0.1:9/" in logged  # the serve config artifact, redacted
    assert "postgresql://user:***@127.0.0.1:5432/test" in logged   # the store URL param
    assert SECRET not in logged
    study = optuna.load_study(study_name="secrets", storage=settings.storage)
    assert SECRET not in repr(study.user_attrs)


def test_the_cli_prints_no_password(capsys, tmp_path):
    config = tmp_path / "program.yaml"
    config.write_text(f"tracking: {{uri: '{TRACKING}'}}\nserve: {{url: in_process}}\n"
                      f"store: {{url: 'sqlite:///{tmp_path}/labels.db'}}\n")
    assert main(["run", "--config", str(config)]) == 1  # the tracking server does not answer
    captured = capsys.readouterr()
    assert "user:***@127.0.0.1:9" in captured.err
    assert SECRET not in captured.out + captured.err


def test_the_ui_hint_shows_no_password():
    from rich.console import Console

    from experiments.cli import _print_ui_hint

    out = io.StringIO()
    _print_ui_hint(Console(file=out, width=200), TRACKING)
    assert "http://user:***@127.0.0.1:9/" in out.getvalue() and SECRET not in out.getvalue()


def test_a_run_writers_text_artifact_is_redacted_and_the_file_kept(tmp_path, tracking):
    from experiments.tracking import RunWriter

    writer = RunWriter(tracking)
    run_id = writer.start_run(writer.experiment_id("secrets"), "run", params={"tracking.uri": TRACKING})
    local = tmp_path / "notes.json"
    local.write_text(f'{{"uri": "{TRACKING}?token=abc&password={SECRET}"}}')
    writer.log_artifact(run_id, str(local))
    writer.finish(run_id)
    logged = _everything_logged(tracking, [run_id], tmp_path / "downloaded")
    assert SECRET not in logged and "token=***" in logged and "user:***@" in logged
    assert SECRET in local.read_text()
