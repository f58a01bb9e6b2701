"""Confused pairs become a draft guideline version (:meth:`LabelStore.draft_guideline_from_pairs`).

The store reads what :func:`loop.guidance.draft_sections` needs (current labels, the newest
stored predictions of those items, the annotations with rationales and flags) and stores the
draft through :meth:`LabelStore.add_guideline`; the drafting itself is pure and lives in
:mod:`loop.guidance`.

A drafted version's ``examples`` field is ``{"pairs": [[a, b], ...], "examples": {"a vs b":
{"a": [{"item_id": ..., "margin": ...}], "b": [...]}}}``: ``pairs`` are the confused pairs
the version addresses (its parent's and the new ones, most recent first); a parent's examples
in another form are kept under ``"parent_examples"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import numpy as np

from .._validation import check_int, fail
from ..columns import ITEM, LABEL
from ..exceptions import SchemaError
from ._columns import FLAGS, PROBS, RATIONALE
from ._records import GuidelineVersion, ResolutionMethod

if TYPE_CHECKING:
    from ..guidance import GuidanceDraft
    from .store import LabelStore

DEFAULT_PAIRS: Final = 3
# Labels people reached (not the model's own auto-accepted ones) may stand as examples.
TRUSTED_METHODS: Final = (ResolutionMethod.CONSENSUS.value, ResolutionMethod.ADJUDICATED.value,
                          ResolutionMethod.EXPERT.value)
PAIRS_KEY: Final = "pairs"
EXAMPLES_KEY: Final = "examples"


def published_guideline(store: LabelStore, stream: str) -> GuidelineVersion | None:
    """The stream's newest published guideline version, None when none is."""
    store.stream(stream)  # an unknown stream is an error, not "no guideline"
    try:
        return store.guideline(stream)
    except SchemaError:
        return None


def addressed_pairs(guideline: GuidelineVersion) -> list[tuple[str, str]]:
    """The confused pairs a version addresses (its examples' ``pairs``), newest first."""
    examples = guideline.examples
    raw = examples.get(PAIRS_KEY) if isinstance(examples, dict) else None
    if not isinstance(raw, list):
        return []
    return [(str(p[0]), str(p[1])) for p in raw if isinstance(p, (list, tuple)) and len(p) == 2]


def draft_from_confusions(store: LabelStore, stream: str, *, author: str, pairs: int = DEFAULT_PAIRS,
                          per_class: int = 3, actor: str | None = None) -> tuple[GuidelineVersion, GuidanceDraft]:
    # Imported here: loop.guidance needs cleanlab, which a store that never drafts need not load.
    from ..guidance import draft_sections, merge_guideline

    """Draft the next guideline version of ``stream`` from its most confused pairs.

    Parameters
    ----------
    store : LabelStore
    stream : str
    author : str
        Who drafts (the admin, or the program).
    pairs : int, default=3
        Sections for the ``pairs`` most confused class pairs.
    per_class : int, default=3
        Boundary examples per class of a pair.
    actor : str, optional
        Recorded on the event (default: ``author``).

    Returns
    -------
    (GuidelineVersion, GuidanceDraft)
        The stored draft (unpublished) and what it was made of.

    Raises
    ------
    SchemaError
        An unknown stream, a bad ``pairs``/``per_class``, fewer than two resolved items with a
        stored prediction, or no confused pair (nothing to draft).
    """
    pairs = check_int(pairs, "pairs", low=1, high=50)
    per_class = check_int(per_class, "per_class", low=1, high=50)
    s = store.stream(stream)
    resolved = store.resolved_labels(stream)
    predictions = store.latest_predictions(stream, resolved[ITEM].astype(str).tolist())
    if len(predictions) < 2:
        raise fail("stream", "a stream with resolved items that have stored predictions (labelloop score, or a "
                   "program run, stores them)", f"{stream!r} with {len(predictions)}")
    frame = resolved.assign(**{ITEM: resolved[ITEM].astype(str)}).merge(
        predictions[[ITEM, PROBS]].assign(**{ITEM: predictions[ITEM].astype(str)}), on=ITEM)
    probs = np.asarray(frame[PROBS].tolist(), dtype=np.float64)
    annotations = store.annotations_frame(stream, extras=(RATIONALE, FLAGS))
    draft = draft_sections(frame[LABEL].to_numpy(dtype=np.int64), probs, item_ids=frame[ITEM].to_numpy(dtype=object),
                           classes=list(s.classes), trusted=frame["method"].isin(TRUSTED_METHODS).to_numpy(),
                           annotations=annotations, pairs=pairs, per_class=per_class)
    if not draft.sections:
        raise fail("stream", "a stream whose labels and predictions disagree somewhere (a confused pair to draft "
                   "guidance for)", f"{stream!r} with no confused pair")
    parent = published_guideline(store, stream)
    text = merge_guideline(None if parent is None else parent.text, draft, title=f"{stream} guideline")
    examples = _merged_examples(None if parent is None else parent.examples, draft)
    names = ", ".join(f"{a}/{b}" for a, b in draft.sections)
    version = store.add_guideline(stream, text, author=author, examples=examples,
                                  parent_version=None if parent is None else parent.version, actor=actor or author,
                                  reason=f"drafted from the confused pairs {names}")
    return version, draft


def _merged_examples(parent: Any, draft: GuidanceDraft) -> dict[str, Any]:
    new = draft.examples_json()
    new_pairs = [[str(a), str(b)] for a, b in draft.sections]
    if isinstance(parent, dict) and isinstance(parent.get(PAIRS_KEY), list):
        old_pairs = [list(p) for p in parent[PAIRS_KEY]]
        pairs = new_pairs + [p for p in old_pairs if p not in new_pairs and p[::-1] not in new_pairs]
        old = parent.get(EXAMPLES_KEY) if isinstance(parent.get(EXAMPLES_KEY), dict) else {}
        out: dict[str, Any] = {PAIRS_KEY: pairs, EXAMPLES_KEY: {**old, **new}}
        if "parent_examples" in parent:
            out["parent_examples"] = parent["parent_examples"]
        return out
    out = {PAIRS_KEY: new_pairs, EXAMPLES_KEY: new}
    if parent is not None:
        out["parent_examples"] = parent
    return out


