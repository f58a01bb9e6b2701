"""Guideline propagation speed: does ``loop.guidance.propagation`` recover a planted adoption
speed, and does its interval cover it? (issue 13 §2)

Targets:

- the half-life estimate's median relative error within 25% at every planted speed;
- the 95% bootstrap interval of the half-life covers the planted one in at least 85% of worlds
  (the bootstrap over annotators is approximate with 30 of them), and that of the gain the
  planted gain likewise.

How: a simulated crowd (:func:`loop.simulate.make_crowd`, 30 novices, 2 classes) labels 80
items a day for 4 days before a guideline is published and 10 days after; the guideline removes
90% of the pair's confusion (:class:`loop.simulate.Guideline`) for whoever follows it, and each
annotator follows it after an exponential delay with the planted median
(:func:`loop.simulate.draw_adoption_delays`). A day's work is half a day after its start. The
"planted" half-life is that median; the planted gain is the accuracy of everyone following it
minus the accuracy of nobody (both from the crowd's confusion matrices). 30 worlds (seeds) per
speed.

30 delays are a sample: their own median spreads about 0.23 of the planted one around it, so
``rel_error_vs_drawn`` also compares each estimate with the median of the delays its world drew.

The peer is the naive reading of the windows: the first day after publication whose accuracy
reaches the baseline plus half of (last day's accuracy minus the baseline), in days (its
midpoint); the ratio is the peer's median absolute error over ours.

Run::

    .venv/bin/python benchmarks/guidance.py                 # speeds 0.5, 1, 2, 4 days; 30 seeds
    .venv/bin/python benchmarks/guidance.py --seeds 10
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loop.guidance import propagation  # noqa: E402
from loop.simulate import Guideline, Tier, draw_adoption_delays, make_crowd  # noqa: E402

DAYS_BEFORE, DAYS_AFTER, PER_DAY, CROWD = 4, 10, 80, 30
T0 = pd.Timestamp("2026-01-05", tz="UTC")


def world(half_life: float, seed: int) -> tuple[pd.DataFrame, pd.Series, float, float]:
    crowd = make_crowd({Tier.NOVICE: CROWD}, 2, rng=seed)
    guideline = Guideline("v2", {(0, 1): 0.9})
    delays = draw_adoption_delays(crowd.ids, half_life, rng=seed + 1)
    rng = np.random.default_rng(seed + 2)
    frames, truth = [], {}
    for day in range(-DAYS_BEFORE, DAYS_AFTER):
        items = [f"d{day}-{j}" for j in range(PER_DAY)]
        y = pd.Series(rng.integers(0, 2, PER_DAY), index=items)
        truth.update(y.to_dict())
        at = day + 0.5
        adopters = delays.index[delays.to_numpy() <= at] if day >= 0 else []
        answers = crowd.ask(y, guideline=guideline, adopters=adopters, rng=rng)
        frames.append(answers.assign(created_at=T0 + pd.Timedelta(days=at)))
    accuracy = np.diagonal(crowd.confusion, axis1=1, axis2=2).mean()
    followed = np.diagonal(guideline.apply(crowd.confusion), axis1=1, axis2=2).mean()
    return pd.concat(frames, ignore_index=True), pd.Series(truth), float(followed - accuracy), float(delays.median())


def naive_half_life(windows: pd.DataFrame) -> float:
    before = windows[windows["phase"] == "before"]
    after = windows[windows["phase"] == "after"].sort_values("window")
    base = before["correct"].sum() / before["answers"].sum()
    target = base + (after["accuracy"].iloc[-1] - base) / 2
    reached = after[after["accuracy"] >= target]
    return float(reached["since_publication"].iloc[0]) if len(reached) else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--boot", type=int, default=100)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = []
    for half_life in (0.5, 1.0, 2.0, 4.0):
        for seed in range(args.seeds):
            ann, truth, gain, drawn = world(half_life, 1000 * seed + 7)
            result = propagation(ann, truth, T0, (0, 1), n_boot=args.boot, rng=seed)
            rows.append({"planted": half_life, "seed": seed, "estimate": result.half_life, "drawn": drawn,
                         "naive": naive_half_life(result.windows),
                         "covered": result.half_life_ci[0] <= half_life <= result.half_life_ci[1],
                         "gain": gain, "gain_estimate": result.gain,
                         "gain_covered": result.gain_ci[0] <= gain <= result.gain_ci[1]})
    frame = pd.DataFrame(rows)
    frame["error"] = (frame["estimate"] - frame["planted"]).abs()
    frame["naive_error"] = (frame["naive"] - frame["planted"]).abs()
    frame["drawn_error"] = (frame["estimate"] - frame["drawn"]).abs() / frame["drawn"]
    table = frame.groupby("planted").agg(
        median_estimate=("estimate", "median"), median_rel_error=("error", "median"),
        rel_error_vs_drawn=("drawn_error", "median"),
        naive_median=("naive", "median"), naive_abs_error=("naive_error", "median"),
        coverage=("covered", "mean"), gain=("gain", "mean"), gain_estimate=("gain_estimate", "median"),
        gain_coverage=("gain_covered", "mean"))
    table["median_rel_error"] = table["median_rel_error"] / table.index
    table["ratio"] = (frame.groupby("planted")["naive_error"].median()
                      / frame.groupby("planted")["error"].median())
    table["met"] = (table["median_rel_error"] <= 0.25) & (table["coverage"] >= 0.85) & (table["gain_coverage"] >= 0.85)
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        print(f"guideline propagation: {CROWD} annotators, {PER_DAY} answers a day, {DAYS_BEFORE} days before and "
              f"{DAYS_AFTER} after publication, {args.seeds} seeds a speed, {args.boot} bootstrap resamples")
        print(table.reset_index().to_string(index=False))
    print(f"targets met: {int(table['met'].sum())}/{len(table)} (median relative error <= 0.25, half-life and gain "
          f"interval coverage >= 0.85); ratio = naive median abs error / ours; {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
