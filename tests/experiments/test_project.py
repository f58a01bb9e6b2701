"""The MLflow project: its entry points, and conda.yaml listing what pyproject.toml lists."""

from __future__ import annotations

import tomllib
from pathlib import Path

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
    assert set(project._entry_points) == {"demo", "run", "compare", "tune"}
    for name in ("run", "compare", "tune"):
        entry = project.get_entry_point(name)
        command = entry.compute_command({"config": "configs/x.yaml"}, storage_dir=None)
        assert command.startswith(f"python -m experiments.cli {name} --config")
        default = entry.parameters["config"].default
        assert (ROOT / default).is_file(), f"the {name} entry point's default config {default} is missing"
    # Extra parameters reach the CLI as options.
    tune = project.get_entry_point("tune").compute_command({"trials": "3"}, storage_dir=None)
    assert tune.endswith("--trials 3")
