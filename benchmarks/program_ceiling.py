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

Run (music genre needs ../shared/data; skipped with a message otherwise)::

    .venv/bin/python benchmarks/program_ceiling.py --dataset music_genre --seeds 0 1 2
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
from experiments.world import build_world  # noqa: E402
from loop.columns import ITEM, LABEL_ISSUE_SCORE  # noqa: E402
from loop.datasets import shared_data_dir  # noqa: E402
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
        wrong = self._labels().reindex(ids).to_numpy() != self.world.truth.reindex(ids).to_numpy()
        # 0.999, not 1: the priority is max(risk, issue), so wrong labels come first.
        return out.assign(**{LABEL_ISSUE_SCORE: np.where(wrong, 0.999, 0.0)}), eligible

    program_module._Program._candidates = candidates
    try:
        yield
    finally:
        program_module._Program._candidates = original


def run(dataset: str, seeds: list[int], share: float, calibration_seed: int) -> pd.DataFrame:
    calibration = config(dataset, calibration_seed)
    budget = round(equal_budget(calibration, build_world(calibration), share), 2)
    rows = []
    for seed in seeds:
        cfg = config(dataset, seed).replace(budget_per_round=budget)
        world = build_world(cfg)
        random = program_module.run_program(cfg.replace(strategy=Strategy.RANDOM), world=world)
        rows.append({"seed": seed, "program": "random review", "errors_removed": random.errors_removed,
                     "cost": random.cost})
        with oracle_issue_scores():
            for name, thresholds in ORACLES.items():
                r = program_module.run_program(cfg.replace(strategy=Strategy.TIERED, thresholds=thresholds),
                                               world=world)
                rows.append({"seed": seed, "program": name, "errors_removed": r.errors_removed, "cost": r.cost})
    table = pd.DataFrame(rows)
    print(f"\n== {dataset}: budget {budget:.2f} per round (planned at {share:.0%} of triple annotation's cost)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    pooled = table.groupby("program", sort=False).agg(errors_removed=("errors_removed", "sum"), cost=("cost", "mean"))
    pooled["x_random"] = pooled["errors_removed"] / pooled.loc["random review", "errors_removed"]
    print("\npooled (errors removed summed over seeds, cost averaged; x_random = errors removed / random's):")
    print(pooled.to_string(float_format=lambda v: f"{v:.3g}"))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["digits", "music_genre"], default="music_genre")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
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
