"""A guideline's impact, and guidelines in MLflow (what ``labelloop guidelines`` and the programs call).

- Drafting is the store's (:meth:`loop.store.LabelStore.draft_guideline_from_pairs`): it reads a
  stream's current labels, the newest stored predictions of those items, and the annotations
  with their rationales and flags; drafts a section per top confused pair
  (:func:`loop.guidance.draft_sections`); and stores a *draft* guideline version: parent = the
  newest published version, text = its text with the new sections
  (:func:`loop.guidance.merge_guideline`), examples = its examples with the new ones, author and
  a ``guideline.drafted`` event naming the pairs. An admin reviews the draft's text and
  publishes it (``labelloop guidelines publish``, ``POST
  /v1/streams/{stream}/guidelines/{version}/publish``); only then do tasks show it.
- :func:`guideline_impact` grades the crowd's answers on the pairs a published version
  addresses against expert and adjudicated resolutions (truth-free) and measures the gain and
  the half-life of the rise (:func:`loop.guidance.propagation`).
- :func:`log_guideline_version` logs a version to a run: ``guidelines/v<N>.md`` (the text)
  and ``guidelines/v<N>.json`` (version, parent, author, dates, the pairs it addresses and
  its examples), and the tag ``guideline_version``.

A drafted version's ``examples`` field names the pairs it addresses (:mod:`loop.store._guidance`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

from loop._validation import fail
from loop.columns import ANNOTATOR, ITEM, LABEL
from loop.guidance import Propagation, propagation
from loop.resolution import METHOD_ADJUDICATED, METHOD_EXPERT
from loop.store import EXPERT_TIER, GuidelineVersion, LabelStore
from loop.store._guidance import addressed_pairs, published_guideline

from . import tracking as T

__all__ = ["REFERENCE", "Impact", "addressed_pairs", "guideline_impact", "log_guideline_version",
           "published_guideline"]

REFERENCE_METHODS: Final = (METHOD_EXPERT, METHOD_ADJUDICATED)
REFERENCE: Final = "expert and adjudicated resolutions"


@dataclass(frozen=True)
class Impact:
    """A published version's effect on the crowd's accuracy, per pair it addresses."""

    version: int
    published_at: Any
    pairs: list[tuple[str, str]]
    results: list[Propagation]

    def table(self) -> pd.DataFrame:
        """Every pair's windows, with ``class_a, class_b`` first."""
        frames = [r.windows.assign(class_a=a, class_b=b) for (a, b), r in zip(self.pairs, self.results)]
        out = pd.concat(frames, ignore_index=True)
        return out[["class_a", "class_b", *[c for c in out.columns if c not in ("class_a", "class_b")]]]

    def summary(self) -> pd.DataFrame:
        """One row per pair: baseline, gain and half-life with their intervals."""
        rows = []
        for (a, b), r in zip(self.pairs, self.results):
            rows.append({"class_a": a, "class_b": b, "answers_before": r.n_before, "answers_after": r.n_after,
                         "baseline": r.baseline, "gain": r.gain, "gain_ci_low": r.gain_ci[0],
                         "gain_ci_high": r.gain_ci[1], f"half_life_{r.unit}": r.half_life,
                         f"half_life_{r.unit}_ci_low": r.half_life_ci[0],
                         f"half_life_{r.unit}_ci_high": r.half_life_ci[1], "reference": r.reference})
        return pd.DataFrame(rows)


def guideline_impact(store: LabelStore, stream: str, version: int, *, pairs: Sequence[tuple[str, str]] | None = None,
                     window: str | int = "1D", n_boot: int = 200, seed: int = 0,
                     reference: pd.Series | None = None, reference_name: str = REFERENCE) -> Impact:
    """How the crowd's accuracy on a published version's pairs moved after its publication.

    The crowd's answers (annotators below the expert tier) on items whose reference label is
    one of a pair are graded against ``reference``: by default the stream's expert and
    adjudicated resolutions (no truth needed; they over-represent hard items, alike before and
    after publication). See :func:`loop.guidance.propagation` for the windows, the gain and the
    half-life.

    Raises
    ------
    SchemaError
        An unknown stream or version, an unpublished version, a version that names no pair (pass
        ``pairs``), a class not of the stream, or no graded answer before or after publication.
    """
    s = store.stream(stream)
    g = store.guideline(stream, version)
    if g.published_at is None:
        raise fail("version", "a published guideline version (impact is measured from publication)",
                   f"draft version {version}")
    chosen = list(pairs) if pairs is not None else addressed_pairs(g)
    if not chosen:
        raise fail("pairs", f"the class pairs version {version} addresses (it was not drafted from confusions; "
                   "name them, e.g. --pair cat,dog)", "none")
    for pair in chosen:
        for name in pair:
            if name not in s.classes:
                raise fail("pairs", f"class names of stream {stream!r} {list(s.classes)}", repr(name))
    annotations = store.annotations_frame(stream)
    crowd = {a.name for a in store.annotators() if a.tier < EXPERT_TIER}
    annotations = annotations[annotations[ANNOTATOR].isin(crowd)]
    if reference is None:
        resolved = store.resolved_labels(stream)
        resolved = resolved[resolved["method"].isin(REFERENCE_METHODS)]
        reference = pd.Series(resolved[LABEL].to_numpy(dtype=np.int64), index=resolved[ITEM].astype(str).to_numpy())
    rng = np.random.default_rng(seed)
    results = [propagation(annotations, reference, g.published_at, (s.classes.index(a), s.classes.index(b)),
                           window=window, reference=reference_name, n_boot=n_boot, rng=rng) for a, b in chosen]
    return Impact(version=g.version, published_at=g.published_at, pairs=[tuple(p) for p in chosen], results=results)


def log_guideline_version(tracker: T.Tracker, guideline: GuidelineVersion, logged: list[int]) -> bool:
    """Log a published version to the tracker's run once: its text (markdown) and a JSON of its
    metadata, addressed pairs and examples, and the tag ``guideline_version`` (every version the
    run used, comma-separated). ``logged`` holds the versions this run logged already (it is
    appended to). Returns whether it logged now."""
    if guideline.version in logged:
        return False
    logged.append(guideline.version)
    tracker.log_text(guideline.text, T.GUIDELINE_MD.format(version=guideline.version))
    meta = {"stream": guideline.stream, "version": guideline.version, "parent_version": guideline.parent_version,
            "author": guideline.author, "created_at": _iso(guideline.created_at),
            "published_at": _iso(guideline.published_at),
            "pairs": [list(p) for p in addressed_pairs(guideline)], "examples": guideline.examples}
    tracker.log_text(json.dumps(meta, indent=2, default=str), T.GUIDELINE_JSON.format(version=guideline.version))
    tracker.set_tags({T.TAG_GUIDELINE_VERSION: ",".join(str(v) for v in logged)})
    return True


def _iso(value: Any) -> str | None:
    return None if value is None else pd.Timestamp(value).isoformat()
