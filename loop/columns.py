"""Column names shared by every frame labelloop reads or writes.

Annotations are one long frame: one row per (item, annotator) judgement::

    item_id  annotator_id  label
    7        ann-03        4

Code refers to these constants, never to the string literals.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ACCURACY",
    "AGREEMENT",
    "ANNOTATION_COLUMNS",
    "ANNOTATOR",
    "ANNOTATOR_A",
    "ANNOTATOR_B",
    "BIN_LOWER",
    "BIN_UPPER",
    "CLASS_A",
    "CLASS_B",
    "CONFIDENCE",
    "COST",
    "COUNT",
    "ENTROPY",
    "ESTIMATED_COUNT",
    "GAP",
    "ITEM",
    "KAPPA",
    "LABEL",
    "LABEL_ISSUE_SCORE",
    "MARGIN",
    "MEAN_CONFIDENCE",
    "N_AGREEING",
    "N_CORRECT",
    "N_ITEMS",
    "N_LABELS",
    "NO_LABEL",
    "N_PAIRS",
    "PREDICTED",
    "PRIORITY",
    "REASON",
    "ROUTE",
    "RUNNER_UP",
    "SCORE_COLUMNS",
    "SECONDS",
    "SHARE",
    "SPECIFIC_AGREEMENT",
]

ITEM: Final = "item_id"
ANNOTATOR: Final = "annotator_id"
LABEL: Final = "label"
NO_LABEL: Final = -1  # the label code of an item without a current label
ANNOTATION_COLUMNS: Final = (ITEM, ANNOTATOR, LABEL)

# Optional columns of the annotations frame written by the simulator and the store.
SECONDS: Final = "seconds"
COST: Final = "cost"

# Routing decisions.
ROUTE: Final = "route"
REASON: Final = "reason"
PRIORITY: Final = "priority"

# Confused class pairs.
CLASS_A: Final = "class_a"
CLASS_B: Final = "class_b"
ESTIMATED_COUNT: Final = "estimated_count"
SHARE: Final = "share"

# Per-item scores the router reads (built by loop.routing.score_items).
PREDICTED: Final = "predicted"
RUNNER_UP: Final = "runner_up"
CONFIDENCE: Final = "confidence"
MARGIN: Final = "margin"  # the gap p1 - p2 between the two most probable classes
ENTROPY: Final = "entropy"
LABEL_ISSUE_SCORE: Final = "label_issue_score"  # higher = the current label is more likely wrong
SCORE_COLUMNS: Final = (ITEM, PREDICTED, RUNNER_UP, CONFIDENCE, MARGIN, ENTROPY, LABEL_ISSUE_SCORE)

# Reliability table (loop.calibration.reliability_table).
BIN_LOWER: Final = "bin_lower"
BIN_UPPER: Final = "bin_upper"
COUNT: Final = "count"
MEAN_CONFIDENCE: Final = "mean_confidence"
ACCURACY: Final = "accuracy"
GAP: Final = "gap"

# Agreement (loop.agreement): pairwise kappa, per-class agreement, accuracy against gold.
ANNOTATOR_A: Final = "annotator_a"
ANNOTATOR_B: Final = "annotator_b"
N_ITEMS: Final = "n_items"
AGREEMENT: Final = "agreement"  # observed share of agreeing labels, not chance-corrected
KAPPA: Final = "kappa"
N_LABELS: Final = "n_labels"
N_PAIRS: Final = "n_pairs"
N_AGREEING: Final = "n_agreeing"
SPECIFIC_AGREEMENT: Final = "specific_agreement"
N_CORRECT: Final = "n_correct"
