"""How many label errors paid work can remove at the program's budget, knowing which labels are wrong.

An upper bound for issue 4's "tiered removes >= 3x random's errors" on a dataset: the tiered
program runs with an *oracle* label-issue score (1 for every wrong current label, 0 for a right
one, read from the simulation's truth), so every review or expert label goes to a wrong label
first. Auto-accept is off: only paid work (and the audits every strategy gets) fixes labels.

- ``oracle expert``: every paid label is an expert's (the expert route for every item; wrong
  labels first);
- ``oracle review``: every paid label is one more crowd label, resolved as the tiered program
  resolves reviews (wrong labels first; an item is reviewed again while it stays wrong, up to
  the program's label cap).

Both run at the budget of :mod:`benchmarks.program` (same worlds, seeds and cost share), next
to the random and tiered programs of that benchmark. If even the oracles remove less than three
times what random review removes, no routing of paid work can meet the target; what is left
must come from labels that cost nothing (the model's).

On a replayed crowd (music genre) a second table asks what the crowd's data holds: the labels
of each stream item if it carried *every* real crowd answer (about 4.2 a song, where the
program's budget buys about 1.35 in all), resolved by majority vote and by the posterior of
those answers and a model learnt from their majority vote (out-of-fold; the tiered program's
resolution, :func:`loop.issues.label_posteriors`), and, for reference only, with a model learnt
from the gold labels, which no program has. Every count is against the same initial labels as
the programs'. It is not a strict bound (a program also buys expert labels, and the audits add
some), but a tiered program that removes 3x random's errors must beat most of these columns
with a third of their crowd labels.

Run (music genre needs ../shared/data; skipped with a message otherwise)::

    .venv/bin/python benchmarks/program_ceiling.py --dataset music_genre
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import experiments.program as program_module  # noqa: E402
from experiments.world import World, build_world  # noqa: E402
from loop.aggregate import MajorityVote  # noqa: E402
from loop.columns import ANNOTATOR, ITEM, LABEL, LABEL_ISSUE_SCORE  # noqa: E402
from loop.datasets import shared_data_dir  # noqa: E402
from loop.issues import label_posteriors  # noqa: E402
from loop.routing import RoutingThresholds  # noqa: E402
from loop.strategies import Strategy  # noqa: E402
from program import config, equal_budget  # noqa: E402

ORACLES = {
    # issue 0.999 < double-blind cut-off 1.0: no double-blind; every margin < 1: the expert route.
    "oracle expert": RoutingThresholds(double_blind_issue_score=1.0, expert_margin=1.0, auto_accept_confidence=1.0),
    "oracle review": RoutingThresholds(double_blind_issue_score=1.0, expert_margin=0.0, auto_accept_confidence=1.0),
}


@contextmanager
def oracle_issue_scores() -> Iterator[None]:
    """Replace the program's label-issue scores by the truth (a benchmark-only instrument)."""
    original = program_module._Program._candidates

    def candidates(self: program_module._Program, *args: Any, **kwargs: Any) -> tuple[pd.DataFrame, np.ndarray]:
        out, eligible = original(self, *args, **kwargs)
        ids = out[ITEM].astype(str)
        wrong = self._labels().reindex(ids).to_numpy() != self.dataset.truth.reindex(ids).to_numpy()
        # 0.999, not 1: the priority is max(risk, issue), so wrong labels come first.
        return out.assign(**{LABEL_ISSUE_SCORE: np.where(wrong, 0.999, 0.0)}), eligible

    program_module._Program._candidates = candidates
    try:
        yield
    finally:
        program_module._Program._candidates = original


def every_crowd_label(world: World) -> dict[str, float]:
    """Wrong labels among a replayed world's stream items if each carried every real crowd answer.

    Keys: ``labels_per_item``, ``initial_wrong`` (the programs' starting point), and the wrong
    labels of ``majority_vote``, ``posterior`` (those answers and an out-of-fold model learnt
    from their majority vote) and ``posterior_gold_model`` (the same with a model learnt from
    the truth: a reference no program can reach).
    """
    from sklearn.model_selection import cross_val_predict

    if world.workforce.replay is None:
        raise ValueError("world: expected a replayed crowd (music genre), got a simulated one")
    items = pd.Index(world.stream.astype(str))
    truth = world.truth.reindex(items).to_numpy(dtype=np.int64)
    answers = world.workforce.replay[[ITEM, ANNOTATOR, LABEL]].astype({ITEM: str, ANNOTATOR: str})
    answers = answers[answers[ITEM].isin(items)]
    initial = world.initial.astype({ITEM: str}).set_index(ITEM)[LABEL].reindex(items).to_numpy(dtype=np.int64)
    # Ties (two answers against two are common) drawn at random, not given to the first class.
    vote = MajorityVote(tie_break="random", random_state=0).fit(answers)
    majority = vote.labels_.reindex(items).to_numpy(dtype=np.int64)
    x = world.x(items)

    def wrong_posterior(training_labels: np.ndarray) -> int:
        probs = cross_val_predict(program_module._classifier(), x, training_labels, cv=5, method="predict_proba")
        posterior = label_posteriors(probs, annotations=answers, item_ids=items.to_numpy())
        return int((posterior.argmax(axis=1) != truth).sum())

    return {"labels_per_item": len(answers) / len(items), "initial_wrong": int((initial != truth).sum()),
            "majority_vote": int((majority != truth).sum()), "posterior": wrong_posterior(majority),
            "posterior_gold_model": wrong_posterior(truth)}


def run(dataset: str, seeds: list[int], share: float, calibration_seed: int) -> pd.DataFrame:
    calibration = config(dataset, calibration_seed)
    budget = round(equal_budget(calibration, build_world(calibration), share), 2)
    rows, crowd = [], []
    for seed in seeds:
        # Only paid work (and the audits) may fix labels here: no free relabelling of deferred items.
        cfg = config(dataset, seed).replace(budget_per_round=budget, deferred_accept_confidence=None)
        world = build_world(cfg)
        random = program_module.run_program(cfg.replace(strategy=Strategy.RANDOM), world=world)
        rows.append({"seed": seed, "program": "random review", "errors_removed": random.errors_removed,
                     "cost": random.total_cost})
        if world.workforce.replay is not None:
            crowd.append({"seed": seed, **every_crowd_label(world), "random_removed": random.errors_removed})
        with oracle_issue_scores():
            for name, thresholds in ORACLES.items():
                r = program_module.run_program(cfg.replace(strategy=Strategy.TIERED, thresholds=thresholds),
                                               world=world)
                rows.append({"seed": seed, "program": name, "errors_removed": r.errors_removed, "cost": r.total_cost})
    table = pd.DataFrame(rows)
    print(f"\n== {dataset}: budget {budget:.2f} per round (planned at {share:.0%} of triple annotation's cost)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    pooled = table.groupby("program", sort=False).agg(errors_removed=("errors_removed", "sum"), cost=("cost", "mean"))
    pooled["x_random"] = pooled["errors_removed"] / pooled.loc["random review", "errors_removed"]
    print("\npooled (errors removed summed over seeds, cost averaged; x_random = errors removed / random's):")
    print(pooled.to_string(float_format=lambda v: f"{v:.3g}"))
    if crowd:
        _print_crowd_table(pd.DataFrame(crowd))
    return table


def _print_crowd_table(crowd: pd.DataFrame) -> None:
    columns = ["majority_vote", "posterior", "posterior_gold_model"]
    removed = crowd[columns].rsub(crowd["initial_wrong"], axis=0)
    print("\nevery real crowd answer of each stream item (wrong labels per seed; the programs start from "
          "initial_wrong):")
    print(crowd.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    total_random = int(crowd["random_removed"].sum())
    print(f"\nerrors removed, summed over seeds, against random review's {total_random} "
          f"(3x random = {3 * total_random}):")
    for column in columns:
        total = int(removed[column].sum())
        print(f"  {column:<22} {total:>5}  {total / max(total_random, 1):.2f}x random")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["digits", "music_genre"], default="music_genre")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5],
                        help="evaluation worlds (default 0-5, as benchmarks/program.py)")
    parser.add_argument("--cost-share", type=float, default=0.5)
    parser.add_argument("--calibration-seed", type=int, default=100,
                        help="the world the budget is planned on, as in benchmarks/program.py")
    args = parser.parse_args(argv)
    if args.dataset == "music_genre" and shared_data_dir() is None:
        print("\n== music_genre: skipped, ../shared/data is not on this machine")
        return 0
    run(args.dataset, args.seeds, args.cost_share, args.calibration_seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
