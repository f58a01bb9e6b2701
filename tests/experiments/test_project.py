"""The MLflow project: its entry points, and conda.yaml listing what pyproject.toml lists."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _conda_pip() -> list[str]:
    env = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip = [d for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip) == 1, "conda.yaml must have one pip: section"
    return pip[0]["pip"]


def test_conda_env_lists_what_pyproject_lists() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert sorted(_conda_pip()) == sorted(project["dependencies"])
    python = [d for d in yaml.safe_load((ROOT / "conda.yaml").read_text())["dependencies"]
              if isinstance(d, str) and d.startswith("python")]
    assert python, "conda.yaml pins no python"


def test_mlproject_has_one_entry_point_per_program() -> None:
    from mlflow.projects import _project_spec

    project = _project_spec.load_project(str(ROOT))
    assert set(project._entry_points) == {"demo", "run", "compare", "tune", "retrain", "score", "experiment"}
    for name in ("run", "compare", "tune", "retrain", "score"):
        entry = project.get_entry_point(name)
        command = entry.compute_command({"config": "configs/x.yaml", "pool": "p.parquet", "out": "o.parquet"},
                                        storage_dir=None)
        assert command.startswith(f"python -m experiments.cli {name} --config")
        default = entry.parameters["config"].default
        assert (ROOT / default).is_file(), f"the {name} entry point's default config {default} is missing"
    # Extra parameters reach the CLI as options.
    tune = project.get_entry_point("tune").compute_command({"trials": "3"}, storage_dir=None)
    assert tune.endswith("--trials 3")
    score = project.get_entry_point("score").compute_command({"pool": "p.parquet", "out": "o.parquet"},
                                                             storage_dir=None)
    assert score.endswith("--pool p.parquet --out o.parquet")


@pytest.mark.slow
def test_mlflow_run_compare_logs_into_the_project_run(tmp_path) -> None:
    """`mlflow run . -e compare --env-manager local` on a tiny config: the entry point's run is
    the comparison's parent, with one nested run per strategy."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    # An experiment whose artifacts live in tmp (the default would be ./mlruns in the checkout).
    client.create_experiment("project", artifact_location=str(tmp_path / "artifacts"))
    config = tmp_path / "compare.yaml"
    config.write_text(
        "program: {rounds: 1, items_per_round: 100, calibration_items: 50, holdout_items: 100}\n"
        # The config names another store and experiment: under `mlflow run` the project run's win.
        f"tracking: {{uri: 'sqlite:///{tmp_path}/elsewhere.db', experiment: other, registered_model: proj}}\n"
        f"store: {{url: 'sqlite:///{tmp_path}/labelloop.db'}}\n"
        "serve: {url: in_process}\n"
        "compare: {strategies: [random, tiered]}\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    # What other tests (or the caller's own `mlflow run`) left in the environment must not leak
    # in: mlflow run refuses an experiment id beside --experiment-name.
    for leaked in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(leaked, None)
    out = subprocess.run([sys.executable, "-m", "mlflow", "run", ".", "-e", "compare", "--env-manager", "local",
                          "--experiment-name", "project", "-P", f"config={config}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    # The table's headers wrap at 80 columns; its strategy column and the first line after it do not.
    assert "tiered" in out.stdout and "Every strategy started from the same" in out.stdout
    runs = client.search_runs([client.get_experiment_by_name("project").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("mlflow.project.entryPoint") == "compare"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == ["random", "tiered"]
    assert all(r.info.status == "FINISHED" for r in [parent, *children])
    assert "final_error_rate" in children[0].data.metrics and "comparison.csv" in {
        a.path for a in client.list_artifacts(parent.info.run_id)}
    assert not (tmp_path / "elsewhere.db").exists()
