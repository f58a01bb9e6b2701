"""Simulated crowds against real ones: how near :func:`loop.simulate.crowd_like` comes.

For each real crowd in ``../shared/data`` (music genre, RTE, weather; skipped with a message
when absent), :func:`fit_crowd_profile` measures it against gold and :func:`crowd_like`
builds a simulated twin for each annotator; the twins then label the real crowd's own
(item, annotator) pairs, with item difficulty drawn from the profile. Compared, each over
``SIMULATIONS`` simulated crowds (mean and standard deviation): the mean and standard
deviation of annotator accuracy against gold, Krippendorff's alpha and percent agreement.

Ablations show what each part of the model is for: ``-items`` without item difficulty,
``-bias`` without the workers' own class offsets, ``-spam`` without spammers (every
annotator a worker). Then the time to simulate 200,000 items x 3 labels from a 50-annotator
crowd of 10 classes (assign + annotate, with item difficulty and a guideline).

Targets (the test in tests/loop/test_simulate.py holds the full model to them, averaged over
4 simulations): accuracy mean and standard deviation within 0.03, alpha within 0.04.

Run: ``.venv/bin/python benchmarks/simulate.py`` (about 20 seconds on 2 cores).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loop.agreement import annotator_accuracy, krippendorff_alpha, percent_agreement  # noqa: E402
from loop.columns import ACCURACY, ITEM  # noqa: E402
from loop.datasets import load_crowd, shared_data_dir  # noqa: E402
from loop.simulate import (  # noqa: E402
    CrowdProfile,
    Guideline,
    Tier,
    crowd_like,
    draw_item_difficulty,
    fit_crowd_profile,
    make_crowd,
)

SEED = 0
SIMULATIONS = 10
CROWDS = ("music_genre", "rte", "weather")
STATISTICS = ("acc_mean", "acc_std", "alpha", "agreement")
TOLERANCE = {"acc_mean": 0.03, "acc_std": 0.03, "alpha": 0.04}
SCALE = (200_000, 3, 50, 10)  # items, labels per item, annotators, classes


def statistics(annotations: pd.DataFrame, gold: pd.Series) -> dict[str, float]:
    accuracy = annotator_accuracy(annotations, gold)[ACCURACY].dropna()
    return {"acc_mean": accuracy.mean(), "acc_std": accuracy.std(),
            "alpha": krippendorff_alpha(annotations), "agreement": percent_agreement(annotations)}


def ablations(profile: CrowdProfile) -> dict[str, CrowdProfile]:
    no_spam = pd.Series(0.0, index=profile.spammer_probability.index)
    return {
        "full": profile,
        "-items": dataclasses.replace(profile, item_difficulty_std=0.0),
        "-bias": dataclasses.replace(profile, class_bias_std=0.0),
        "-spam": dataclasses.replace(profile, spammer_share=0.0, spammer_probability=no_spam),
    }


def simulate(profile: CrowdProfile, real: pd.DataFrame, gold: pd.Series, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for _ in range(SIMULATIONS):
        twins = crowd_like(profile, rng=rng)
        difficulty = draw_item_difficulty(gold.index, profile.item_difficulty_std, rng=rng)
        rows.append(statistics(twins.annotate(real, gold, difficulty=difficulty, rng=rng), gold))
    return pd.DataFrame(rows)


def calibration() -> bool:
    if shared_data_dir() is None:
        print("skipped: the real crowds in ../shared/data are not on this machine")
        return True
    met = True
    for name in CROWDS:
        dataset = load_crowd(name)
        real = dataset.annotations[dataset.annotations[ITEM].isin(dataset.gold.index)]
        started = time.perf_counter()
        profile = fit_crowd_profile(real, dataset.gold, n_classes=dataset.n_classes)
        fit_seconds = time.perf_counter() - started
        target = statistics(real, dataset.gold)
        print(f"\n{name}: {real[ITEM].nunique()} items, {len(real)} labels; fit {fit_seconds:.2f} s; "
              f"spammers {profile.spammer_share:.3f}, item difficulty sd {profile.item_difficulty_std:.2f}, "
              f"class bias sd {profile.class_bias_std:.2f}")
        print(f"  {'':8}" + "".join(f"{s:>18}" for s in STATISTICS))
        print(f"  {'real':8}" + "".join(f"{target[s]:>18.3f}" for s in STATISTICS))
        for label, variant in ablations(profile).items():
            sims = simulate(variant, real, dataset.gold, np.random.default_rng(SEED))
            cells = "".join(f"{sims[s].mean():>10.3f} ± {sims[s].std():.3f}" for s in STATISTICS)
            print(f"  {label:8}{cells}")
            if label == "full":
                for key, tolerance in TOLERANCE.items():
                    gap = abs(sims[key].mean() - target[key])
                    ok = gap <= tolerance
                    met &= ok
                    print(f"    {key}: |sim - real| = {gap:.3f} (target <= {tolerance}) {'met' if ok else 'MISSED'}")
    return met


def scale() -> None:
    n_items, per_item, n_annotators, k = SCALE
    rng = np.random.default_rng(SEED)
    crowd = make_crowd({Tier.NOVICE: n_annotators - 10, Tier.EXPERIENCED: 8, Tier.EXPERT: 2}, k, rng=rng)
    truth = pd.Series(rng.integers(0, k, n_items))
    difficulty = draw_item_difficulty(truth.index, 1.0, rng=rng)
    started = time.perf_counter()
    assignment = crowd.assign(truth.index, per_item, rng=rng)
    assigned = time.perf_counter() - started
    crowd.annotate(assignment, truth, difficulty=difficulty, guideline=Guideline("v2", {(3, 5): 0.5}), rng=rng)
    total = time.perf_counter() - started
    print(f"\nscale: {n_items:,} items x {per_item} labels, {n_annotators} annotators, {k} classes: "
          f"assign {assigned:.2f} s, annotate {total - assigned:.2f} s, total {total:.2f} s")


if __name__ == "__main__":
    all_met = calibration()
    scale()
    print("\nall calibration targets met" if all_met else "\nsome calibration targets MISSED")
