"""Variant experiments with a sequential test: power, false positives, annotations used (issue 13 §2).

Targets:

- (a) a planted +5-point accuracy gain (a guideline version on the simulated crowd) is found,
  the variant declared the winner, with power >= 0.80;
- (b) with no effect, the false-positive rate (a winner declared, either way) is <= 0.05, with
  its 95% Clopper-Pearson interval;
- (c) under the planted gain, the mean annotations used are fewer than a fixed-sample
  two-proportion z-test needs for the same power (the power the sequential test reached, and
  0.80); the median is printed beside it.

How: the world of ``labelloop experiment`` on digits with a crowd of 12 experienced annotators
(3 experts); the control is today's guideline, the variant a guideline version that removes a
share of the confusion on the digit pairs the crowd confuses most, that share solved so that
the exact expected accuracy gain over the crowd and the items is 0.05 (printed: what was really
planted). Each task: an item drawn from the stream, an annotator drawn from the crowd, correct
with the probability that annotator's confusion matrix under the variant gives the item's class
(``loop.simulate.Variant.confusion``: the law :func:`loop.simulate.annotate_variant` draws
labels from), so thousands of experiments run as arrays. Tasks alternate between the arms
(randomisation by task); the test (``loop.sequential``: mSPRT, tau 0.05, min_effect 0.02,
min_samples 30) looks every ``LOOK`` tasks, up to ``max_annotations``, which is sized once
(printed) so that the power is above 0.80. A few experiments also run end to end through
:func:`experiments.experiment.main` (``--end-to-end N``), to show the runner decides like the
arrays.

The fixed-sample size per arm for power ``1 - beta`` at level alpha (two-sided) is
``(z_{1-alpha/2} + z_{1-beta})^2 (p_c q_c + p_v q_v) / (p_v - p_c)^2`` (scipy.stats.norm).

Run::

    .venv/bin/python benchmarks/experiment.py              # 1000 null + 1000 planted experiments
    .venv/bin/python benchmarks/experiment.py --quick      # 100 + 100 (the test's instrument check)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import beta, norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.config import parse_config  # noqa: E402
from experiments.world import build_world  # noqa: E402
from loop.sequential import confidence_sequence, difference, likelihood_ratio  # noqa: E402
from loop.simulate import Guideline, Variant  # noqa: E402

SEED = 0
ALPHA, MIN_EFFECT, TAU, MIN_SAMPLES = 0.05, 0.02, 0.05, 30
GAIN = 0.05
LOOK = 50                     # tasks per look (25 per arm)
MAX_ANNOTATIONS = 3000        # both arms; sized so the power is above 0.80 (see the printed table)
PAIRS = 12                    # the guideline clarifies the crowd's most confused digit pairs
POWER_TARGET, FPR_TARGET = 0.80, 0.05
WORLD = {"program": {"dataset": "digits", "seed": SEED},
         "crowd": {"tiers": {"experienced": 12, "expert": 3}}, "tracking": {"uri": "none"},
         "store": {"url": "sqlite://"}}  # the runner publishes the guideline version: in memory


def world():
    return build_world(parse_config(WORLD))


def confused_pairs(crowd, n: int) -> list[tuple[int, int]]:
    c = crowd.confusion.mean(axis=0)
    both = np.triu(c + c.T, 1)
    order = np.argsort(-both, axis=None)[:n]
    return [tuple(int(x) for x in np.unravel_index(i, both.shape)) for i in order]


def expected_accuracy(crowd, prior: np.ndarray, variant: Variant) -> float:
    """Mean over annotators (drawn uniformly) and classes (``prior``) of P(correct)."""
    return float((np.diagonal(variant.confusion(crowd), axis1=1, axis2=2) @ prior).mean())


def planted_variant(crowd, prior: np.ndarray, gain: float) -> tuple[Variant, float]:
    """The guideline variant whose expected gain is ``gain``: accuracy is linear in the share removed."""
    pairs = confused_pairs(crowd, PAIRS)
    base = expected_accuracy(crowd, prior, Variant("control"))
    full = expected_accuracy(crowd, prior, Variant("v2", guideline=Guideline("v2", {p: 1.0 for p in pairs})))
    share = gain / (full - base)
    if not 0 < share <= 1:
        raise SystemExit(f"the {PAIRS} most confused pairs cannot carry a {gain} gain (at most {full - base:.3f})")
    variant = Variant("v2", guideline=Guideline("v2", {p: share for p in pairs}))
    return variant, share


def simulate(crowd, truth: np.ndarray, arms: tuple[Variant, Variant], reps: int, max_annotations: int,
             rng: np.random.Generator) -> pd.DataFrame:
    """``reps`` experiments as arrays: per experiment, the decision and the annotations used."""
    per_arm = max_annotations // 2
    p = [np.diagonal(v.confusion(crowd), axis1=1, axis2=2) for v in arms]  # (m, k) each
    correct = []
    for table in p:
        who = rng.integers(0, table.shape[0], (reps, per_arm))
        what = truth[rng.integers(0, truth.size, (reps, per_arm))]
        correct.append(rng.random((reps, per_arm)) < table[who, what])
    return decisions(correct[0], correct[1])


def decisions(control: np.ndarray, variant: np.ndarray) -> pd.DataFrame:
    """The test of :class:`loop.sequential.SequentialComparison` on arrays: each row of
    ``control`` and ``variant`` (reps, per_arm) is one experiment's answers, right or wrong, in
    order; a look every ``LOOK`` tasks (half to each arm)."""
    correct = (control, variant)
    reps, per_arm = control.shape
    ns = np.arange(LOOK // 2, per_arm + 1, LOOK // 2)
    sc, sv = (np.cumsum(c, axis=1)[:, ns - 1] for c in correct)
    n = np.broadcast_to(ns, sc.shape).astype(float)
    theta, var = difference(sc, n, sv, n)
    ready = n >= MIN_SAMPLES
    raw_p = np.where(ready, np.minimum(1.0, 1.0 / likelihood_ratio(theta, var, tau=TAU)), 1.0)
    p_value = np.minimum.accumulate(raw_p, axis=1)
    low, high = confidence_sequence(theta, var, alpha=ALPHA, tau=TAU)
    low = np.maximum.accumulate(np.where(ready, np.maximum(low, -1), -1), axis=1)
    high = np.minimum.accumulate(np.where(ready, np.minimum(high, 1), 1), axis=1)
    win = ready & (p_value <= ALPHA)
    same = ready & (low > -MIN_EFFECT) & (high < MIN_EFFECT)
    stop = win | same
    first = np.where(stop.any(axis=1), stop.argmax(axis=1), ns.size - 1)
    rows = np.arange(reps)
    decided_win = win[rows, first]
    return pd.DataFrame({"winner": np.where(decided_win, np.where(theta[rows, first] > 0, "variant", "control"), ""),
                         "no_difference": same[rows, first] & ~decided_win,
                         "annotations": 2 * ns[first], "difference": theta[rows, first]})


def fixed_n_per_arm(p_c: float, p_v: float, power: float, alpha: float = ALPHA) -> int:
    z = norm.ppf(1 - alpha / 2) + norm.ppf(power)
    return int(np.ceil(z ** 2 * (p_c * (1 - p_c) + p_v * (1 - p_v)) / (p_v - p_c) ** 2))


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    a = (1 - level) / 2
    return (float(beta.ppf(a, k, n - k + 1)) if k else 0.0, float(beta.ppf(1 - a, k + 1, n - k)) if k < n else 1.0)


def end_to_end(reps: int, variant: Variant, planted_pairs: list[tuple[int, int]], share: float,
               classes: tuple[str, ...]) -> pd.DataFrame:
    """``reps`` planted experiments through experiments.experiment.main (same world and test)."""
    from experiments.experiment import parse_experiment_config, main

    pairs = [[classes[a], classes[b]] for a, b in planted_pairs]
    rows = []
    built = world()
    for seed in range(reps):
        cfg = parse_experiment_config({**WORLD, "experiment": {
            "alpha": ALPHA, "min_effect": MIN_EFFECT, "tau": TAU, "min_samples": MIN_SAMPLES, "look_every": LOOK,
            "max_annotations": MAX_ANNOTATIONS, "audit_rate": 0.0, "seed": seed,
            "variants": [{"name": "today"},
                         {"name": "v2", "guideline": {"version": "v2", "pairs": pairs, "effect": share}}]}})
        result = main(cfg, world=built)
        rows.append({"decision": result.decision, "annotations": result.annotations})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 experiments of each kind instead of 1000")
    parser.add_argument("--reps", type=int, default=None, help="experiments of each kind (default 1000)")
    parser.add_argument("--end-to-end", type=int, default=0, dest="end_to_end",
                        help="also run this many planted experiments through labelloop experiment's runner")
    args = parser.parse_args(argv)
    reps = args.reps or (100 if args.quick else 1000)
    started = time.perf_counter()
    w = world()
    crowd = w.workforce.crowd
    truth = w.truth.to_numpy()
    prior = np.bincount(truth, minlength=w.n_classes) / truth.size
    control = Variant("control")
    variant, share = planted_variant(crowd, prior, GAIN)
    p_c, p_v = expected_accuracy(crowd, prior, control), expected_accuracy(crowd, prior, variant)
    pairs = sorted(variant.guideline.fixes)
    print(f"digits, {len(crowd)} experienced annotators: control accuracy {p_c:.4f}; guideline v2 removes "
          f"{share:.1%} of the confusion on pairs {pairs}: accuracy {p_v:.4f}, planted gain {p_v - p_c:+.4f}")
    rng = np.random.default_rng(SEED)
    planted = simulate(crowd, truth, (control, variant), reps, MAX_ANNOTATIONS, rng)
    null = simulate(crowd, truth, (control, Variant("same")), reps, MAX_ANNOTATIONS, rng)
    power = float((planted["winner"] == "variant").mean())
    wrong_way = float((planted["winner"] == "control").mean())
    false_positives = int((null["winner"] != "").sum())
    fpr = false_positives / reps
    fpr_low, fpr_high = clopper_pearson(false_positives, reps)
    power_low, power_high = clopper_pearson(int((planted["winner"] == "variant").sum()), reps)
    fixed_same = 2 * fixed_n_per_arm(p_c, p_v, min(power, 0.999))
    fixed_80 = 2 * fixed_n_per_arm(p_c, p_v, POWER_TARGET)
    mean_used, median_used = float(planted["annotations"].mean()), float(planted["annotations"].median())
    rows = [
        ("(a) power, planted +5 points", f"{power:.3f} [{power_low:.3f}, {power_high:.3f}]", f">= {POWER_TARGET}",
         power >= POWER_TARGET),
        ("(b) false-positive rate, no effect", f"{fpr:.3f} [{fpr_low:.3f}, {fpr_high:.3f}]", f"<= {FPR_TARGET}",
         fpr <= FPR_TARGET),
        ("(c) mean annotations, planted", f"{mean_used:.0f} (median {median_used:.0f})",
         f"< fixed n at power {power:.3f}: {fixed_same}", mean_used < fixed_same),
    ]
    table = pd.DataFrame(rows, columns=["target", "figure", "wanted", "met"])
    info = pd.DataFrame([("    (not a target) fixed n at power 0.80", f"{mean_used:.0f}", f"{fixed_80}", "-")],
                        columns=table.columns)
    print(f"\n{reps} planted and {reps} null experiments, max {MAX_ANNOTATIONS} annotations, a look every {LOOK} "
          f"tasks; mSPRT tau {TAU}, alpha {ALPHA}, equivalence margin {MIN_EFFECT}")
    print(pd.concat([table, info], ignore_index=True).to_string(index=False))
    print(f"\nplanted: winner variant {power:.3f}, winner control {wrong_way:.3f}, no difference "
          f"{planted['no_difference'].mean():.3f}, inconclusive at the budget "
          f"{((planted['winner'] == '') & ~planted['no_difference']).mean():.3f}")
    print(f"null: no difference {null['no_difference'].mean():.3f}; mean annotations {null['annotations'].mean():.0f} "
          f"(median {null['annotations'].median():.0f})")
    print(f"ratio mean annotations / fixed n at the same power: {mean_used / fixed_same:.2f}")
    print("\nthe budget's trade-off (planted experiments; a new seed):")
    sweep = []
    for budget in (1500, 2000, 2500, 3000, 4000):
        arms = simulate(crowd, truth, (control, variant), reps, budget, np.random.default_rng(SEED + 1))
        got = float((arms["winner"] == "variant").mean())
        sweep.append({"max_annotations": budget, "power": got, "mean annotations": arms["annotations"].mean(),
                      "median": arms["annotations"].median(),
                      "fixed n, same power": 2 * fixed_n_per_arm(p_c, p_v, min(got, 0.999))})
    print(pd.DataFrame(sweep).to_string(index=False, float_format=lambda v: f"{v:.3f}" if v < 1 else f"{v:.0f}"))
    if args.end_to_end:
        e2e = end_to_end(args.end_to_end, variant, pairs, share, w.classes)
        print(f"\nend to end through experiments.experiment.main, {args.end_to_end} planted experiments: winner v2 "
              f"{(e2e['decision'] == 'winner: v2').mean():.2f}, mean annotations {e2e['annotations'].mean():.0f}")
    print(f"\n{time.perf_counter() - started:.1f} s; all targets {'met' if table['met'].all() else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
