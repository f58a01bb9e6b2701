"""Machine-readable results: summary.csv and rounds.csv hold what the programs measured."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from experiments import tracking as T
from experiments.compare import main as compare
from experiments.config import parse_config
from experiments.results import (ROUNDS_CSV, SUMMARY_COLUMNS, SUMMARY_CSV, OutputError, check_output_dir,
                                 estimated_figures, rounds_table, summary_table, write_results)

TINY = {"program": {"rounds": 2, "items_per_round": 60, "budget_per_round": 3.0, "calibration_items": 50,
                    "holdout_items": 100, "audit_rate": 0.2, "seed": 0, "currency": "EUR",
                    "value_per_error_removed": 4.0},
        "compare": {"strategies": ["random", "tiered"]},
        "tracking": {"uri": "none"}, "store": {"url": "sqlite://"}}


@pytest.fixture(scope="module")
def programs():
    """Two strategies on one world, every round audited."""
    return list(compare(parse_config(TINY)).results.values())


def test_the_files_hold_each_program_and_each_round(programs, tmp_path) -> None:
    written = write_results(tmp_path / "out", programs)
    assert written == [tmp_path / "out" / SUMMARY_CSV, tmp_path / "out" / ROUNDS_CSV]
    summary = pd.read_csv(written[0])
    rounds = pd.read_csv(written[1])

    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    assert summary["strategy"].tolist() == ["random", "tiered"]
    for row, result in zip(summary.itertuples(index=False), programs):
        assert row.final_error_rate == pytest.approx(result.final_error_rate)
        assert row.initial_error_rate == pytest.approx(result.initial_error_rate)
        assert row.program_cost == pytest.approx(result.program_cost) and row.currency == "EUR"
        assert result.initial_labels_cost > 0 and row.initial_labels_cost == pytest.approx(result.initial_labels_cost)
        assert "cost" not in summary.columns  # one cost figure, named for what it counts
        assert row.errors_removed == result.errors_removed and row.items == result.n_items
        assert row.promotions == result.promotions
        assert row.model_accuracy == pytest.approx(result.model_accuracy)
        assert row.cost_per_error_removed == pytest.approx(result.program_cost / result.errors_removed)
        assert row.cost_per_error_removed_estimate == \
            pytest.approx(result.program_cost / result.errors_removed_estimate)
        assert row.roi == pytest.approx(4.0 * result.errors_removed / result.program_cost)
        assert row.roi_estimate == pytest.approx(4.0 * result.errors_removed_estimate / result.program_cost)
        # The estimate is the last round's audit, whose interval contains it.
        last = result.rounds.loc[result.rounds.index.max()]
        assert row.final_error_rate_estimate == pytest.approx(last[T.AUDIT_ERROR_RATE])
        assert row.final_error_rate_estimate_ci_low <= row.final_error_rate_estimate \
            <= row.final_error_rate_estimate_ci_high == pytest.approx(last[T.AUDIT_CI_HIGH])

    # One row per strategy and round, every per-round metric under its MLflow key.
    assert list(rounds.columns[:2]) == ["strategy", "round"]
    assert len(rounds) == sum(len(r.rounds) for r in programs) == 2 * 3
    for result in programs:
        mine = rounds[rounds["strategy"] == result.strategy].set_index("round")
        assert mine.index.tolist() == [0, 1, 2]
        for metric in (T.TRUE_ERROR_RATE, T.AUDIT_ERROR_RATE, T.AUDIT_CI_LOW, T.AUDIT_CI_HIGH, T.PROGRAM_COST):
            np.testing.assert_allclose(mine[metric].to_numpy(), result.rounds[metric].to_numpy(), equal_nan=True)
        assert set(result.rounds.columns) <= set(mine.columns)


def test_key_columns_tell_programs_of_one_strategy_apart(programs) -> None:
    keys = {"trial": [7, 7], "world_seed": [0, 1]}
    summary = summary_table(programs, keys=keys)
    rounds = rounds_table(programs, keys=keys)
    assert list(summary.columns[:3]) == ["strategy", "trial", "world_seed"]
    assert list(rounds.columns[:4]) == ["strategy", "trial", "world_seed", "round"]
    assert rounds.groupby("world_seed").size().tolist() == [3, 3]
    with pytest.raises(ValueError, match="world_seed"):
        summary_table(programs, keys={"world_seed": [0]})


@dataclasses.dataclass
class TableOnly:
    """A program on a team's own table: costs and audits, no truth."""

    strategy: str
    rounds: pd.DataFrame
    initial_labels_cost: float
    program_cost: float


def test_a_program_without_truth_has_empty_true_figures_and_its_estimates(tmp_path) -> None:
    rounds = pd.DataFrame({T.PROGRAM_COST: [0.0, 10.0, 24.0], T.AUDIT_ERROR_RATE: [np.nan, 0.10, 0.05],
                           T.AUDIT_CI_LOW: [np.nan, 0.03, 0.01], T.AUDIT_CI_HIGH: [np.nan, 0.25, 0.2],
                           T.ERRORS_REMOVED_ESTIMATE: [0.0, 4.0, 6.0]}, index=pd.Index([0, 1, 2], name="round"))
    program = TableOnly("tiered", rounds, initial_labels_cost=100.0, program_cost=24.0)
    write_results(tmp_path, [program])
    row = pd.read_csv(tmp_path / SUMMARY_CSV).iloc[0]
    for truth in (T.FINAL_ERROR_RATE, T.INITIAL_ERROR_RATE, T.ERRORS_REMOVED, T.COST_PER_ERROR_REMOVED,
                  T.MODEL_ACCURACY, T.ROI, T.ROI_ESTIMATE):  # ROI: no value per error configured
        assert math.isnan(row[truth])
    assert (row[T.FINAL_ERROR_RATE_ESTIMATE], row[T.FINAL_ERROR_RATE_ESTIMATE_CI_HIGH]) == (0.05, 0.2)
    assert row[T.ERRORS_REMOVED_ESTIMATE] == 6 and row[T.COST_PER_ERROR_REMOVED_ESTIMATE] == pytest.approx(4.0)
    assert (tmp_path / SUMMARY_CSV).read_text().splitlines()[1].startswith("tiered,,,,0.05,")  # empty cells
    assert "true_error_rate" not in pd.read_csv(tmp_path / ROUNDS_CSV).columns


def test_an_unaudited_last_round_has_no_estimate() -> None:
    rounds = pd.DataFrame({T.AUDIT_ERROR_RATE: [0.1, np.nan], T.AUDIT_CI_HIGH: [0.3, np.nan]},
                          index=pd.Index([0, 1], name="round"))
    figures = estimated_figures(TableOnly("random", rounds, initial_labels_cost=1.0, program_cost=1.0))
    assert all(math.isnan(v) for v in figures.values())


def test_figures_a_program_reports_itself_are_taken_as_they_are(programs) -> None:
    @dataclasses.dataclass
    class Reporting(TableOnly):
        final_error_rate_estimate: float = 0.042
        errors_removed_estimate: float = 8.0
        cost_per_error_removed: float = 1.5

    result = programs[0]
    row = summary_table([Reporting("tiered", result.rounds, initial_labels_cost=6.0, program_cost=4.0)]).iloc[0]
    assert row[T.FINAL_ERROR_RATE_ESTIMATE] == 0.042 and row[T.ERRORS_REMOVED_ESTIMATE] == 8
    assert row[T.COST_PER_ERROR_REMOVED] == 1.5 and row[T.COST_PER_ERROR_REMOVED_ESTIMATE] == 0.5


def test_a_program_that_removed_no_error_has_no_cost_per_error(programs) -> None:
    result = dataclasses.replace(programs[0], errors_removed=0, errors_removed_estimate=0)
    row = summary_table([result]).iloc[0]
    assert math.isnan(row[T.COST_PER_ERROR_REMOVED]) and math.isnan(row[T.COST_PER_ERROR_REMOVED_ESTIMATE])
    assert row[T.ROI] == 0.0  # nothing removed is worth nothing; the ratio exists
    # Not logged either: MLflow draws NaN poorly.
    assert T.COST_PER_ERROR_REMOVED not in result.metrics() and T.ROI in result.metrics()
    assert T.ROI not in dataclasses.replace(result, value_per_error_removed=None).metrics()


def test_the_output_directory_is_checked_before_any_work(tmp_path, unwritable_dir) -> None:
    new = tmp_path / "a" / "b"
    assert check_output_dir(new) == new and not new.exists()  # created only when written
    file = tmp_path / "file.csv"
    file.write_text("x")
    for bad, why in ((file, "a file, not a directory"), (file / "sub", "is a file"),
                     (unwritable_dir, "cannot create it")):
        with pytest.raises(OutputError) as exc:
            check_output_dir(bad)
        message = str(exc.value)
        assert message.startswith("--output: expected a directory labelloop can write to")
        assert why in message and "\n" not in message


def test_the_public_api_is_what_all_says() -> None:
    import experiments.results as results

    assert sorted(results.__all__) == sorted(set(results.__all__))
    assert all(hasattr(results, name) for name in results.__all__)
