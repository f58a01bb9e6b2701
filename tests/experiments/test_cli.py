"""The labelloop command: a wrong argument or config value is one line and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from experiments.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def _one_line_error(capsys, argv: list[str]) -> str:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    return lines[0]


@pytest.mark.parametrize(("argv", "named"), [
    (["tune", "--config", "configs/tune.yaml", "--trials", "x"], "--trials"),
    (["tune", "--config", "configs/tune.yaml", "--trials", "0"], "--trials"),
    (["tune"], "--config"),
    (["run", "--config"], "--config"),
    (["compare", "--config", "c.yaml", "--rounds", "3"], "--rounds"),
    (["demolish"], "invalid choice: 'demolish'"),
])
def test_a_wrong_argument_is_one_line_naming_it(capsys, argv, named) -> None:
    line = _one_line_error(capsys, argv)
    assert line.startswith("labelloop") and named in line


@pytest.mark.parametrize(("command", "text", "named"), [
    ("tune", "tune:\n  trials: 0\n", "tune.trials: expected an integer >= 1, got 0"),
    ("tune", "tune:\n  search_space:\n    expert_margin: [0.5, 0.1]\n", "tune.search_space.expert_margin"),
    ("tune", "tune:\n  trails: 3\n", "tune.trails: unknown key"),
    ("tune", "program:\n  strategy: psychic\n", "program.strategy"),
    ("run", "program:\n  rounds: x\n", "program.rounds: expected an integer >= 1, got 'x'"),
    ("run", "program:\n  bogus: 1\n", "program.bogus: unknown key"),
    ("run", "tuning:\n  trials: 3\n", "tuning: unknown section"),
    ("compare", "compare:\n  strategies: [random, astrology]\n", "compare.strategies[1]"),
    ("compare", "program: [1, 2\n", "not valid YAML"),
])
def test_a_wrong_config_value_is_one_line_naming_it(capsys, tmp_path, command, text, named) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    line = _one_line_error(capsys, [command, "--config", str(path)])
    assert line.startswith(f"labelloop {command}: error: ") and named in line


def test_a_missing_config_file_is_one_line(capsys, tmp_path) -> None:
    line = _one_line_error(capsys, ["tune", "--config", str(tmp_path / "nope.yaml")])
    assert "cannot read" in line and "nope.yaml" in line


def test_the_installed_command_exits_2_without_a_traceback(tmp_path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("program:\n  rounds: 0\n")
    out = subprocess.run([sys.executable, "-m", "experiments.cli", "run", "--config", str(path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == "labelloop run: error: program.rounds: expected an integer >= 1, got 0"


@pytest.mark.parametrize("argv", [["tour", "--seed", "4"], ["demo", "--library-only", "--seed", "4"]])
def test_the_library_demo_stays_reachable(monkeypatch, argv) -> None:
    # The library demo itself is tested in test_demo.py; here: both commands reach it, without Ray.
    import experiments.demo

    seen = []
    monkeypatch.setattr(experiments.demo, "main", lambda cfg: seen.append(cfg))
    assert main(argv) == 0
    assert seen == [experiments.demo.DemoConfig(seed=4)]


def test_every_example_config_loads() -> None:
    from experiments.config import load_config
    from experiments.tune import load_tune_config

    assert load_config(ROOT / "configs/program.yaml", ignore=("tune",)).strategy.value == "tiered"
    assert len(load_config(ROOT / "configs/compare.yaml").strategies) == 5
    cfg = load_tune_config(ROOT / "configs/tune.yaml")
    assert cfg.tune.target_error_rate == 0.02 and cfg.with_trials(3).tune.trials == 3


def test_compare_prints_program_cost_in_its_currency_and_the_roi(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "300")  # rich wraps at 80 columns off a terminal
    path = tmp_path / "compare.yaml"
    path.write_text("program: {rounds: 1, items_per_round: 60, calibration_items: 50, holdout_items: 100,\n"
                    "          budget_per_round: 3.0, currency: EUR, value_per_error_removed: 2.5}\n"
                    "compare: {strategies: [random, tiered]}\n"
                    "tracking: {uri: none}\nstore: {url: 'sqlite://'}\nserve: {url: in_process}\n")
    assert main(["compare", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    for shown in ("budget 3 EUR per round", "program cost", "(EUR)", "cost per error", "ROI", "(winner)",
                  "The winner is the strategy that removes the most errors per unit of cost"):
        assert shown in out, shown


@pytest.mark.parametrize("command", ["run", "compare", "tune"])
def test_a_bad_output_directory_is_one_line_before_any_work(capsys, tmp_path, monkeypatch, command) -> None:
    import experiments.compare
    import experiments.program
    import experiments.tune

    for module in (experiments.program, experiments.compare, experiments.tune):  # nothing may run
        monkeypatch.setattr(module, "main", lambda *a, **k: pytest.fail("ran despite a bad --output"))
    taken = tmp_path / "results"
    taken.write_text("not a directory")
    config = ROOT / f"configs/{'program' if command == 'run' else command}.yaml"
    line = _one_line_error(capsys, [command, "--config", str(config), "--output", str(taken)])
    assert line.startswith(f"labelloop {command}: error: argument --output: ")
    assert str(taken) in line and "a file, not a directory" in line


def test_an_output_directory_that_cannot_be_written_is_one_line(capsys, unwritable_dir) -> None:
    line = _one_line_error(capsys, ["run", "--config", str(ROOT / "configs/program.yaml"),
                                    "--output", str(unwritable_dir)])
    assert line.startswith("labelloop run: error: argument --output: ") and "cannot create it" in line


def test_run_prints_the_program_table_and_writes_its_results_for_scripts(capsys, tmp_path, monkeypatch) -> None:
    # One program run checks both what a person reads and what a script reads (a run takes seconds).
    import pandas as pd

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "program.yaml"
    path.write_text("program: {rounds: 1, items_per_round: 100, calibration_items: 50, holdout_items: 100}\n"
                    "tracking: {uri: none}\nstore: {url: 'sqlite://'}\nserve: {url: in_process}\n")
    assert main(["run", "--config", str(path), "--output", "out/run"]) == 0
    out = capsys.readouterr().out
    assert "tiered on digits" in out and "final error" in out and "mlflow ui" not in out
    assert "program cost (cost units)" in out and "cost per error removed" in out and "ROI" not in out
    assert "out/run/summary.csv" in out
    summary = pd.read_csv(tmp_path / "out/run/summary.csv")
    rounds = pd.read_csv(tmp_path / "out/run/rounds.csv")
    assert summary["strategy"].tolist() == ["tiered"]
    assert rounds["round"].tolist() == [0, 1] and "true_error_rate" in rounds.columns
    assert summary["final_error_rate"].iloc[0] == pytest.approx(rounds["true_error_rate"].iloc[-1])
