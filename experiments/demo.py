"""The library end to end on scikit-learn's digits, with a simulated crowd.

1. A crowd of novices labels every item once; a third of the items get two more labels.
2. Dawid-Skene aggregates the labels and estimates each annotator's skill.
3. A model trained on the aggregated labels gives out-of-fold probabilities; temperature
   scaling, fitted on a small expert-checked slice, calibrates them.
4. Label issues are scored from the model and the annotators together.
5. Every item is routed (auto-accept, review, expert, double-blind) with a reason.

The truth is known in simulation, so the report says how many wrong labels each step found.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_digits
from sklearn.model_selection import cross_val_predict

from loop.aggregate import DawidSkene
from loop.agreement import krippendorff_alpha
from loop.calibration import TemperatureScaling, expected_calibration_error
from loop.columns import COST, ITEM, PRIORITY, REASON, ROUTE
from loop.issues import confused_pairs, find_label_issues, label_quality_scores
from loop.routing import Route, RoutingThresholds, route, score_items
from loop.simulate import Tier, confusability_from_probs, make_crowd

from .models import make_estimator


@dataclass(frozen=True)
class DemoConfig:
    """Knobs of the demo; defaults finish in seconds on 2 cores."""

    seed: int = 0
    extra_label_share: float = 0.33
    calibration_items: int = 200
    thresholds: RoutingThresholds = RoutingThresholds(
        auto_accept_confidence=0.97, expert_margin=0.15, double_blind_issue_score=0.7,
        guideline_refs={(1, 7): "guideline v1 §4", (3, 8): "guideline v1 §2", (4, 9): "guideline v1 §3"},
    )


@dataclass(frozen=True)
class DemoResult:
    """What the demo found; every count is against the simulation's truth."""

    n_items: int
    label_error_rate: float
    crowd_cost: float
    alpha: float
    ece_before: float
    ece_after: float
    temperature: float
    issues_flagged: int
    issues_true: int
    errors_total: int
    routes: pd.DataFrame
    decisions: pd.DataFrame
    pairs: pd.DataFrame


def _model():
    return make_estimator()


def main(cfg: DemoConfig = DemoConfig(), console: Console | None = None) -> DemoResult:
    """Run the demo and print what it found."""
    console = console or Console()
    rng = np.random.default_rng(cfg.seed)
    x, y = load_digits(return_X_y=True)
    order = rng.permutation(len(y))
    calib, pool = order[: cfg.calibration_items], order[cfg.calibration_items:]
    truth = pd.Series(y[pool], index=pool)

    with console.status("simulating a crowd of annotators"):
        # Errors land on the digit pairs a model really confuses.
        confusability = confusability_from_probs(cross_val_predict(_model(), x, y, cv=5, method="predict_proba"), y)
        crowd = make_crowd({Tier.NOVICE: 12, Tier.EXPERIENCED: 6, Tier.EXPERT: 2}, 10,
                           confusability=confusability, rng=rng)
        first = crowd.ask(truth, tier=Tier.NOVICE, rng=rng)
        extra_items = rng.choice(pool, size=int(cfg.extra_label_share * len(pool)), replace=False)
        more = crowd.ask(truth[extra_items], labels_per_item=2, exclude=first, rng=rng)
        annotations = pd.concat([first, more], ignore_index=True)

    with console.status("aggregating with Dawid-Skene"):
        ds = DawidSkene().fit(annotations)
        labels = ds.labels_.reindex(pool).to_numpy()
        alpha = krippendorff_alpha(annotations[annotations[ITEM].isin(extra_items)])

    with console.status("training, calibrating, scoring label issues and routing"):
        oof = cross_val_predict(_model(), x[pool], labels, cv=5, method="predict_proba")
        # Temperature is fitted on expert-checked items the model never trained on.
        held_out = _model().fit(x[pool], labels).predict_proba(x[calib])
        scaler = TemperatureScaling().fit(held_out, y[calib])
        calibrated = scaler.transform(oof)
        quality = label_quality_scores(labels, calibrated, annotations=annotations, item_ids=pool)
        flagged = find_label_issues(labels, calibrated, annotations=annotations, item_ids=pool)
        scores = score_items(calibrated, item_ids=pool, label_issue_scores=1 - quality)
        decisions = route(scores, cfg.thresholds)
        pairs = confused_pairs(labels, calibrated)

    wrong = labels != y[pool]
    routes = (
        pd.DataFrame({ROUTE: decisions[ROUTE].to_numpy(), "wrong": wrong})
        .groupby(ROUTE)["wrong"].agg(items="size", wrong_labels="sum")
        .reindex([r.value for r in Route], fill_value=0)
    )
    result = DemoResult(
        n_items=len(pool), label_error_rate=float(wrong.mean()), crowd_cost=float(annotations[COST].sum()),
        alpha=alpha, ece_before=expected_calibration_error(oof, y[pool]),
        ece_after=expected_calibration_error(calibrated, y[pool]), temperature=scaler.temperature_,
        issues_flagged=int(flagged.sum()), issues_true=int((flagged & wrong).sum()), errors_total=int(wrong.sum()),
        routes=routes, decisions=decisions.assign(wrong=wrong), pairs=pairs,
    )
    _report(result, console)
    return result


def _report(r: DemoResult, console: Console) -> None:
    console.print(f"[bold]labelloop demo[/] · digits, {r.n_items} items, simulated crowd "
                  f"(cost {r.crowd_cost:.0f}), Krippendorff's alpha {r.alpha:.2f}")
    facts = Table(show_header=False, box=None, pad_edge=False)
    facts.add_row("labels wrong after Dawid-Skene", f"{r.errors_total} ({r.label_error_rate:.1%})")
    facts.add_row("label issues flagged", f"{r.issues_flagged}, of which really wrong {r.issues_true} "
                  f"(recall {r.issues_true / max(r.errors_total, 1):.0%})")
    facts.add_row("calibration error (ECE)", f"{r.ece_before:.3f} -> {r.ece_after:.3f} (temperature {r.temperature:.2f})")
    top = r.pairs.head(3)
    facts.add_row("most confused pairs", ", ".join(f"{a}<->{b} ({c:.0f})" for a, b, c in top.iloc[:, :3].itertuples(index=False)))
    console.print(facts)

    table = Table(title="routes", title_justify="left")
    for col in ("route", "items", "wrong labels", "share wrong"):
        table.add_column(col, justify="left" if col == "route" else "right")
    for name, row in r.routes.iterrows():
        share = row["wrong_labels"] / row["items"] if row["items"] else 0.0
        table.add_row(str(name), str(row["items"]), str(row["wrong_labels"]), f"{share:.1%}")
    console.print(table)

    sent = r.routes.drop(index=Route.AUTO_ACCEPT.value)["wrong_labels"].sum()
    console.print(f"{sent} of {r.errors_total} wrong labels go to a person; "
                  f"{int(r.routes.loc[Route.AUTO_ACCEPT.value, 'wrong_labels'])} slip through auto-accept.")
    sample = r.decisions.sort_values(PRIORITY, ascending=False).head(5)
    reasons = Table(title="highest-priority decisions", title_justify="left")
    for col in ("item", "route", "reason", "label wrong?"):
        reasons.add_column(col)
    for row in sample.itertuples(index=False):
        reasons.add_row(str(getattr(row, ITEM)), str(getattr(row, ROUTE)), getattr(row, REASON), "yes" if row.wrong else "no")
    console.print(reasons)
