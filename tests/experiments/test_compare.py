"""Strategy comparison: one parent run, one child per strategy with its whole config as params."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from experiments import comparison_report as R
from experiments import tracking as T
from experiments.compare import TABLE_COLUMNS, comparison_table, crown_winner, main
from experiments.config import parse_config
from experiments.program import ProgramResult
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
    # The winner runs first: left alone, champion would be the last strategy's model.
    cfg = parse_config({**TINY, "program": {**TINY["program"], "audit_rate": 0.2, "currency": "EUR",
                                            "value_per_error_removed": 3.0},
                        "compare": {"strategies": ["tiered", "random"]},
                        "tracking": {"uri": uri, "experiment": "cmp", "registered_model": "cmp-model"},
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
    # The contract with the runs view (labelloop report): these exact names on every strategy run.
    for child in children:
        assert {"final_error_rate", "final_error_rate_estimate", "program_cost", "cost_per_error_removed",
                "cost_per_error_removed_estimate", "errors_removed", "model_accuracy", "roi",
                "roi_estimate"} <= set(child.data.metrics), child.data.tags[T.TAG_STRATEGY]
        assert "cost" not in child.data.metrics and child.data.tags[T.TAG_CURRENCY] == "EUR"
        own = result.results[child.data.tags[T.TAG_STRATEGY]]
        # final figures are logged to 4 significant figures, as the runs table shows them
        assert child.data.metrics["cost_per_error_removed"] == R.round_figure(own.program_cost / own.errors_removed)
        assert child.data.metrics["roi"] == R.round_figure(3.0 * own.errors_removed / own.program_cost)
    # The parent: per-strategy sections, rounded to 4 significant figures; the description; the report.
    tiered = result.results["tiered"]
    assert parent.data.metrics["tiered/final_error_rate"] == float(f"{tiered.final_error_rate:.4g}")
    assert parent.data.metrics["tiered/program_cost"] == float(f"{tiered.program_cost:.4g}")
    assert not any("." in key.split("/")[0] for key in parent.data.metrics)
    note = parent.data.tags[T.TAG_DESCRIPTION]
    assert f"**Winner: {result.winner}**" in note and "program cost (EUR)" in note
    assert parent.data.tags[T.TAG_WINNER] == result.winner
    root = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {T.COMPARISON_CSV, T.REPORT_HTML, T.REPORT_PNG} <= root
    assert T.ERROR_VS_COST_PNG in {a.path for a in client.list_artifacts(result.parent_run_id, "plots")}
    import mlflow

    page = mlflow.artifacts.load_text(f"runs:/{result.parent_run_id}/{T.REPORT_HTML}")
    assert "<script" not in page.lower() and page.count("data:image/png;base64,") == 5
    # The registry: champion is the winner's champion, tagged; every version names its program.
    registry = MlflowClient(tracking_uri=uri, registry_uri=uri)
    champion = registry.get_model_version_by_alias("cmp-model", "champion")
    assert result.winner == "tiered"
    assert str(champion.version) == result.results["tiered"].champion_version
    assert str(champion.version) != result.results["random"].champion_version
    assert champion.tags[T.VERSION_WINNER] == "true"
    assert champion.tags[T.VERSION_STRATEGY] == result.winner
    assert champion.tags[T.VERSION_GATE_VERDICT] == T.VERDICT_PROMOTED
    versions = registry.search_model_versions("name = 'cmp-model'")
    assert len(versions) == 4  # two strategies: a seed model and one challenger each
    for version in versions:
        tags = version.tags
        assert tags[T.VERSION_STRATEGY] in ("random", "tiered") and tags[T.VERSION_ROUND] in ("0", "1")
        assert tags[T.VERSION_RUN_ID] == result.results[tags[T.VERSION_STRATEGY]].run_id
        assert tags[T.VERSION_GATE_VERDICT] in (T.VERDICT_PROMOTED, T.VERDICT_REFUSED)
        assert tags[T.VERSION_DATASET] == "digits"
        assert (T.VERSION_WINNER in tags) == (str(version.version) == str(champion.version))


def _result(strategy: str, *, program_cost: float, errors_removed: int, final_error_rate: float,
            errors_removed_estimate: int | None = None, value: float | None = None) -> ProgramResult:
    """A hand-built program: two rounds with audits, one gate decision a round."""
    rounds = pd.DataFrame({T.PROGRAM_COST: [0.0, program_cost / 2, program_cost],
                           T.TRUE_ERROR_RATE: [0.3, 0.2, final_error_rate],
                           T.AUDIT_ERROR_RATE: [np.nan, 0.25, final_error_rate + 0.01],
                           T.AUDIT_CI_LOW: [np.nan, 0.1, final_error_rate / 2],
                           T.AUDIT_CI_HIGH: [np.nan, 0.4, final_error_rate * 2]},
                          index=pd.Index([0, 1, 2], name="round"))
    gates = pd.DataFrame({"round": [0, 1, 2], "version": ["1", "2", "3"], "promoted": [True, False, True],
                          "reason": ["seed model: the first champion", "refused: accuracy gain -0.01 < 0",
                                     "promoted: every check passed"]})
    return ProgramResult(
        strategy=strategy, dataset="digits", stream=f"s-{strategy}", run_id=None, rounds=rounds, n_items=300,
        initial_error_rate=0.3, final_error_rate=final_error_rate, errors_removed=errors_removed, errors_fixed=0,
        errors_introduced=0, initial_labels_cost=100.0, program_cost=program_cost, program_annotations=100,
        annotator_hours=2.5, model_accuracy=0.9, model_ece=0.05, champion_version="3", promotions=1,
        final_error_rate_estimate=final_error_rate + 0.01, final_error_rate_estimate_ci_low=final_error_rate / 2,
        final_error_rate_estimate_ci_high=final_error_rate * 2 if strategy != "triple_majority" else np.nan,
        errors_removed_estimate=errors_removed if errors_removed_estimate is None else errors_removed_estimate,
        currency="EUR", value_per_error_removed=value, gates=gates)


@pytest.fixture
def hand_built():
    return {"random": _result("random", program_cost=60.0, errors_removed=12, final_error_rate=0.25, value=10.0),
            "cleanlab": _result("cleanlab", program_cost=50.0, errors_removed=25, final_error_rate=0.12, value=10.0),
            "tiered": _result("tiered", program_cost=40.0, errors_removed=20, final_error_rate=0.10, value=10.0),
            "triple_majority": _result("triple_majority", program_cost=80.0, errors_removed=0,
                                       final_error_rate=0.3, errors_removed_estimate=0, value=10.0)}


def test_the_winner_removes_the_most_errors_per_unit_of_cost(hand_built) -> None:
    table = comparison_table(hand_built)
    # Cost per error removed: random 5, cleanlab 2, tiered 2 (tie: tiered's lower error rate wins);
    # triple_majority removed none, so it cannot win.
    assert table[T.COST_PER_ERROR_REMOVED].tolist()[:3] == [5.0, 2.0, 2.0]
    assert math.isnan(table[T.COST_PER_ERROR_REMOVED].iloc[3])
    assert R.winner(table) == "tiered"
    saved = R.savings(table, "tiered")
    # What the baseline would pay for tiered's 20 errors at its own rate, minus tiered's 40.
    assert saved["random"] == 5.0 * 20 - 40 and saved["cleanlab"] == 2.0 * 20 - 40
    assert math.isnan(saved["triple_majority"]) and "tiered" not in saved
    assert table[T.ROI].tolist()[:3] == [10 * 12 / 60, 10 * 25 / 50, 10 * 20 / 40]
    nobody = comparison_table({"a": _result("a", program_cost=9.0, errors_removed=0, final_error_rate=0.3),
                               "b": _result("b", program_cost=9.0, errors_removed=-2, final_error_rate=0.3)})
    assert R.winner(nobody) is None and R.savings(nobody, None) == {}


def test_the_description_is_a_table_with_the_winner_and_its_savings(hand_built) -> None:
    table = comparison_table(hand_built)
    note = R.description(table, currency="EUR", value_per_error_removed=10.0, title="digits")
    lines = note.splitlines()
    header = next(line for line in lines if line.startswith("| strategy"))
    assert header == ("| strategy | final error rate (true) | final error rate (estimated, 95% interval) "
                      "| program cost (EUR) | errors removed | cost per error removed (EUR) | ROI | model accuracy |")
    # The estimate is shown with its interval (alone where the audit gave none).
    assert "| tiered (winner) | 10.00% | 11.00% (5.0-20.0%) | 40.0 | 20 | 2.00 | 5.00 | 0.900 |" in lines
    assert "| triple_majority | 30.00% | 31.00% | 80.0 | 0 | - | 0.00 | 0.900 |" in lines
    assert "**Winner: tiered**" in note and R.WINNER_RULE in note and R.SAVING_RULE in note
    assert "| random | 60.0 |" in lines and "| cleanlab | 0.0 |" in lines and "| triple_majority | - |" in lines
    # Without a value per error removed, no ROI column.
    assert "ROI" not in R.description(table, currency="EUR").split("\n\n")[0]


def test_the_report_is_one_self_contained_page(hand_built) -> None:
    table = comparison_table(hand_built)
    page = R.report_html(table, hand_built, currency="EUR", value_per_error_removed=10.0, title="digits <test>")
    for heading in ("Comparison", "Error rate against program cost", "Estimated error rate per round",
                    "Cost per error removed", "Annotator hours", "Gate decisions"):
        assert f">{heading}</h2>" in page, heading
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 5
    import base64

    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    lowered = page.lower()
    assert "<script" not in lowered and "src=\"http" not in lowered and "<link" not in lowered
    assert "digits &lt;test&gt;" in page  # text is escaped
    assert page.count('class="refused">refused<') == 4 and "refused: accuracy gain -0.01 &lt; 0" in page
    assert "tiered (winner)" in page and "program cost (EUR)" in page


def test_the_parent_run_gets_the_description_report_and_rounded_sections(hand_built) -> None:
    cfg = parse_config({**TINY, "program": {**TINY["program"], "currency": "EUR", "value_per_error_removed": 10.0},
                        "tracking": {"uri": "none"}})
    parent = T.MemoryTracker()
    from experiments.compare import _log_parent

    table = comparison_table(hand_built)
    _log_parent(parent, cfg, "digits", hand_built, table, R.winner(table))
    assert parent.tags[T.TAG_DESCRIPTION].startswith("### digits: 1 round of 60 items, budget 3 EUR per round")
    assert parent.tags[T.TAG_WINNER] == "tiered" and parent.tags[T.TAG_CURRENCY] == "EUR"
    assert "<!DOCTYPE html>" in parent.texts[T.REPORT_HTML] and T.REPORT_PNG in parent.figures
    (metrics,) = parent.metrics
    assert metrics["random/roi"] == 2.0 and metrics["tiered/program_cost"] == 40.0
    assert "triple_majority/cost_per_error_removed" not in metrics  # no error removed: nothing to chart
    assert all(key.split("/")[0] in hand_built for key in metrics if key != "step")


def test_the_champion_alias_goes_to_the_winner(hand_built) -> None:
    tracker = T.MemoryTracker(aliases={"champion": "9"})
    crown_winner(tracker, hand_built, "tiered")
    assert tracker.aliases["champion"] == "3" and tracker.version_tags == {"3": {T.VERSION_WINNER: "true"}}
    untouched = T.MemoryTracker(aliases={"champion": "9"})
    crown_winner(untouched, hand_built, None)
    assert untouched.aliases == {"champion": "9"} and untouched.version_tags == {}


def test_a_number_to_four_significant_figures() -> None:
    assert R.round_figure(139.49509838978676) == 139.5 and R.round_figure(0.0123456) == 0.01235
    assert math.isnan(R.round_figure(float("nan")))
