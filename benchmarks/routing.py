"""Routing speed: :func:`loop.routing.score_items` and :func:`loop.routing.route` at scale.

Routing runs inside the server's batch handler and inside every simulator and tuner step, so
it must stay vectorised: the target (issue 2) is 100,000 items routed, reasons included, in
well under a second on 2 cores. Run::

    .venv/bin/python benchmarks/routing.py

Items are 10-class Dirichlet(0.3) probabilities with label-issue scores for 70% of them; the
thresholds use every feature (a risk weight, an always-human class, a guideline reference),
so every rule and every kind of reason is built. Times are the best of ``REPEATS`` runs.
"""

from __future__ import annotations

import time

import numpy as np

from loop.columns import ROUTE
from loop.routing import RoutingThresholds, route, score_items

SIZES = (10_000, 100_000, 1_000_000)
REPEATS = 3
TARGET_SECONDS = 1.0  # at 100,000 items


def _best_time(fn, repeats: int = REPEATS) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    rng = np.random.default_rng(0)
    thresholds = RoutingThresholds(auto_accept_confidence=0.9, expert_margin=0.1,
                                   double_blind_issue_score=0.9, class_risk_weights={3: 2.0},
                                   always_human={7}, guideline_refs={(3, 5): "guideline v3 §2"})
    print(f"{'items':>10} {'score_items s':>14} {'route s':>9} {'items/s':>12}  routes")
    for n in SIZES:
        probs = rng.dirichlet(np.full(10, 0.3), size=n)
        issues = np.where(rng.random(n) < 0.3, np.nan, rng.random(n))
        t_score, scores = _best_time(lambda: score_items(probs, label_issue_scores=issues))
        t_route, decisions = _best_time(lambda: route(scores, thresholds))
        counts = decisions[ROUTE].value_counts().to_dict()
        print(f"{n:>10,} {t_score:>14.3f} {t_route:>9.3f} {n / t_route:>12,.0f}  {counts}")
        if n == 100_000:
            verdict = "met" if t_route < TARGET_SECONDS else "MISSED"
            at_100k = f"target: route 100,000 items < {TARGET_SECONDS:.1f} s: {t_route:.3f} s ({verdict})"
    print(at_100k)


if __name__ == "__main__":
    main()
