"""Krippendorff's alpha: :func:`loop.agreement.krippendorff_alpha` against the ``krippendorff``
package, the same value and how much faster, measured in the same run.

What is timed, per case (best of ``REPEATS`` runs, the methods interleaved so that load on
the machine hits all alike). The table shows CPU time of this process (``time.process_time``:
every step here runs on one thread, and other jobs on a shared machine do not inflate it);
the summary lines give the wall-clock ratios too.

- ``labelloop``: ``krippendorff_alpha(frame)`` from the long frame, validation included;
- ``kripp``: ``krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal")``
  on a prebuilt annotators x items matrix (NaN where a label is missing): the package's own
  input, so the stricter comparison, and the one the target is set on;
- ``pivot``: building that matrix from the long frame (``DataFrame.pivot``), which a caller
  holding the long frame pays before the package can run; reported apart.

``ratio`` is kripp / labelloop; ``ratio+pivot`` is (pivot + kripp) / labelloop.

Cases: the real crowds in ``../shared/data`` (skipped, with a message, when absent) and
random crowds: 5 classes, each item labelled by 3 to 5 annotators drawn from a pool, 10 % of
those labels then dropped (so some items have 1 or 2 labels), each label right with
probability 0.7. The package's work grows with the pool (its matrix is annotators x items),
labelloop's does not, so the 200,000-item case is run with pools of 20, 50 and 200.

Targets: equal to 1e-9 on every case; at least 5x faster (``ratio``) at 200,000 items.

Run: ``.venv/bin/python benchmarks/agreement.py`` (about half a minute on 2 cores).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import krippendorff  # GPL: used here as the reference only, never by loop/
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loop.agreement import krippendorff_alpha  # noqa: E402
from loop.columns import ANNOTATOR, ITEM, LABEL  # noqa: E402
from loop.datasets import CROWDS, load_crowd, shared_data_dir  # noqa: E402

SEED = 0
REPEATS = 5
N_CLASSES = 5
LABELS_PER_ITEM = (3, 5)
DROPPED = 0.10
LABEL_ACCURACY = 0.7
RANDOM_CASES = ((10_000, 50), (200_000, 20), (200_000, 50), (200_000, 200))  # (items, pool)
TARGET_ITEMS = 200_000
TARGET_RATIO = 5.0
TARGET_DIFF = 1e-9


@dataclass(frozen=True)
class Timing:
    """Best CPU and best wall-clock seconds of one step."""

    cpu: float
    wall: float


@dataclass(frozen=True)
class Row:
    """One case: sizes, both values and the three timings."""

    case: str
    target: bool
    n_items: int
    n_labels: int
    n_annotators: int
    alpha: float
    reference: float
    ours: Timing
    kripp: Timing
    pivot: Timing

    @property
    def diff(self) -> float:
        return abs(self.alpha - self.reference)

    def ratio(self, clock: str = "cpu") -> float:
        return getattr(self.kripp, clock) / getattr(self.ours, clock)

    def ratio_with_pivot(self, clock: str = "cpu") -> float:
        return (getattr(self.pivot, clock) + getattr(self.kripp, clock)) / getattr(self.ours, clock)


def random_crowd(n_items: int, pool: int, rng: np.random.Generator) -> pd.DataFrame:
    """A long frame: 3-5 distinct annotators of ``pool`` per item, 10 % of labels dropped."""
    low, high = LABELS_PER_ITEM
    per_item = rng.integers(low, high + 1, n_items)
    items = np.repeat(np.arange(n_items), per_item)
    # The first per_item[u] annotators of a random permutation of the pool, for each item.
    chosen = np.argsort(rng.random((n_items, pool)), axis=1)[:, :high]
    position = np.arange(items.size) - np.repeat(np.cumsum(per_item) - per_item, per_item)
    annotators = chosen[items, position]
    truth = rng.integers(0, N_CLASSES, n_items)
    right = rng.random(items.size) < LABEL_ACCURACY
    labels = np.where(right, truth[items], rng.integers(0, N_CLASSES, items.size))
    keep = rng.random(items.size) >= DROPPED
    return pd.DataFrame({ITEM: items[keep], ANNOTATOR: annotators[keep], LABEL: labels[keep]})


def reliability_matrix(frame: pd.DataFrame) -> np.ndarray:
    """The package's input: annotators x items, NaN where an annotator did not label an item."""
    return frame.pivot(index=ANNOTATOR, columns=ITEM, values=LABEL).to_numpy(dtype=np.float64)


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def _best(runs: list[tuple[float, float]]) -> Timing:
    return Timing(cpu=min(r[0] for r in runs), wall=min(r[1] for r in runs))


def measure(case: str, frame: pd.DataFrame, *, target: bool = False) -> Row:
    """Both values and the best-of-``REPEATS`` timings of one frame."""
    matrix = reliability_matrix(frame)
    alpha = krippendorff_alpha(frame)
    reference = float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal"))
    ours, theirs, pivot = [], [], []
    for _ in range(REPEATS):
        ours.append(_timed(lambda: krippendorff_alpha(frame)))
        theirs.append(_timed(lambda: krippendorff.alpha(reliability_data=matrix,
                                                        level_of_measurement="nominal")))
        pivot.append(_timed(lambda: reliability_matrix(frame)))
    return Row(case=case, target=target, n_items=frame[ITEM].nunique(), n_labels=len(frame),
               n_annotators=frame[ANNOTATOR].nunique(), alpha=alpha, reference=reference,
               ours=_best(ours), kripp=_best(theirs), pivot=_best(pivot))


def real_crowds() -> list[Row]:
    if shared_data_dir() is None:
        print("skipping the real crowds: ../shared/data is not on this machine "
              "(set LABELLOOP_SHARED_DATA to its path)")
        return []
    return [measure(name, load_crowd(name).annotations) for name in CROWDS]


def random_crowds(rng: np.random.Generator) -> list[Row]:
    return [measure(f"random {n_items:,} pool {pool}", random_crowd(n_items, pool, rng),
                    target=n_items >= TARGET_ITEMS)
            for n_items, pool in RANDOM_CASES]


def print_table(rows: list[Row]) -> None:
    header = (f"{'case':<26}{'items':>9}{'labels':>9}{'annot.':>7}{'alpha':>9}{'|diff|':>10}"
              f"{'labelloop ms':>14}{'kripp ms':>10}{'pivot ms':>10}{'ratio':>8}{'ratio+pivot':>13}")
    print("CPU time, best of", REPEATS)
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r.case:<26}{r.n_items:>9,}{r.n_labels:>9,}{r.n_annotators:>7}{r.alpha:>9.4f}"
              f"{r.diff:>10.1e}{r.ours.cpu * 1e3:>14.1f}{r.kripp.cpu * 1e3:>10.1f}"
              f"{r.pivot.cpu * 1e3:>10.1f}{r.ratio():>7.1f}x{r.ratio_with_pivot():>12.1f}x")


def main() -> list[Row]:
    rng = np.random.default_rng(SEED)
    rows = real_crowds() + random_crowds(rng)
    print_table(rows)
    worst = max(r.diff for r in rows)
    print(f"\nmax |alpha - krippendorff.alpha| over all cases: {worst:.2e} "
          f"(target <= {TARGET_DIFF:g}: {'met' if worst <= TARGET_DIFF else 'MISSED'})")
    for r in (r for r in rows if r.target):
        verdict = "met" if r.ratio() >= TARGET_RATIO else "MISSED"
        print(f"{r.case}: {r.ratio():.1f}x faster than krippendorff.alpha on a prebuilt matrix "
              f"({r.ratio('wall'):.1f}x wall clock), {r.ratio_with_pivot():.1f}x counting the pivot "
              f"({r.ratio_with_pivot('wall'):.1f}x wall); target >= {TARGET_RATIO:g}x: {verdict}")
    return rows


if __name__ == "__main__":
    main()
