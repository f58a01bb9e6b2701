"""Column names shared by every frame labelloop reads or writes.

Annotations are one long frame: one row per (item, annotator) judgement::

    item_id  annotator_id  label
    7        ann-03        4

Code refers to these constants, never to the string literals.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ANNOTATOR",
    "ANNOTATION_COLUMNS",
    "CLASS_A",
    "CLASS_B",
    "COST",
    "ESTIMATED_COUNT",
    "ITEM",
    "LABEL",
    "PRIORITY",
    "REASON",
    "ROUTE",
    "SECONDS",
    "SHARE",
]

ITEM: Final = "item_id"
ANNOTATOR: Final = "annotator_id"
LABEL: Final = "label"
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
