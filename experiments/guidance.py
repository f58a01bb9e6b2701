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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

from loop._validation import fail
from loop.columns import ANNOTATOR, ITEM, LABEL
from loop.exceptions import SchemaError
from loop.guidance import Propagation, propagation
from loop.resolution import METHOD_ADJUDICATED, METHOD_CONSENSUS, METHOD_EXPERT
from loop.simulate import Guideline
from loop.store import EXPERT_TIER, GuidelineVersion, LabelStore, addressed_pairs, published_guideline

from . import tracking as T

__all__ = ["REFERENCE", "Impact", "ProgramGuidance", "addressed_pairs", "guideline_impact", "log_guideline_version",
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
                     reference: pd.Series | None = None, reference_name: str = REFERENCE,
                     annotations: pd.DataFrame | None = None, published_at: Any = None) -> Impact:
    """How the crowd's accuracy on a published version's pairs moved after its publication.

    The crowd's answers (annotators below the expert tier) on items whose reference label is
    one of a pair are graded against ``reference``: by default the stream's expert and
    adjudicated resolutions (no truth needed; they over-represent hard items, alike before and
    after publication). See :func:`loop.guidance.propagation` for the windows, the gain and the
    half-life. ``annotations`` (default: the stream's) are the answers to grade, and
    ``published_at`` (default: the version's) the publication time in their clock (a
    simulation's answers carry simulated time).

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
    if annotations is None:
        annotations = store.annotations_frame(stream)
    crowd = {a.name for a in store.annotators() if a.tier < EXPERT_TIER}
    annotations = annotations[annotations[ANNOTATOR].isin(crowd)]
    if reference is None:
        resolved = store.resolved_labels(stream)
        resolved = resolved[resolved["method"].isin(REFERENCE_METHODS)]
        reference = pd.Series(resolved[LABEL].to_numpy(dtype=np.int64), index=resolved[ITEM].astype(str).to_numpy())
    rng = np.random.default_rng(seed)
    when = g.published_at if published_at is None else published_at
    results = [propagation(annotations, reference, when, (s.classes.index(a), s.classes.index(b)),
                           window=window, reference=reference_name, n_boot=n_boot, rng=rng) for a, b in chosen]
    return Impact(version=g.version, published_at=when, pairs=[tuple(p) for p in chosen], results=results)


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


# --- a program's guidelines --------------------------------------------------------------------

PROGRAM_AUTHOR: Final = "labelloop program"
# The program grades the crowd against people-made resolutions: in a simulation the crowd never
# labels gold items, and expert and adjudicated items are picked for disagreement (there, half
# of two disagreeing answers are wrong whatever the guideline), so consensus counts too.
PROGRAM_REFERENCE_METHODS: Final = (METHOD_CONSENSUS, METHOD_ADJUDICATED, METHOD_EXPERT)
PROGRAM_REFERENCE: Final = "resolved labels (consensus, adjudicated, expert)"
PROGRAM_BOOT: Final = 200


class ProgramGuidance:
    """A program's guidelines (:class:`experiments.config.GuidanceConfig`), called by the round
    loop at two points: :meth:`before_work` (each round, once its items are scored and its plan
    made, before anyone answers) and :meth:`finish`.

    - Each published version the round's tasks show is logged to the run once
      (:func:`log_guideline_version`), whoever published it.
    - In ``publish_round``, the program drafts the next version from the confused pairs and
      publishes it (author ``labelloop program``), at the round's start in the program's clock;
      a simulated workforce starts following it (``follow_guideline``: each crowd member after
      an exponential delay); people see it in their task previews.
    - At the end, for a version published during the run, the crowd's accuracy on its pairs is
      measured before and after (:func:`guideline_impact` with the answers the program asked
      for, not the labels items came with): ``guideline_gain`` and ``guideline_half_life_days``
      with their 95% intervals, graded against the resolved labels people made (truth-free),
      their windows in ``tables/guideline_impact.csv``; and in a simulation the same graded
      against the truth (``true_guideline_gain``, ``true_guideline_half_life_days``). The
      metrics are the most confused addressed pair's; the table has every pair.
    """

    def __init__(self, cfg: Any, *, store: LabelStore, stream: str, tracker: T.Tracker, workforce: Any,
                 truth: pd.Series | None, clock: Callable[[int, pd.Timedelta], pd.Timestamp],
                 work_offset: pd.Timedelta, seed: int) -> None:
        self.cfg, self.store, self.stream, self.tracker = cfg, store, stream, tracker
        self.workforce, self.truth, self.clock, self.work_offset = workforce, truth, clock, work_offset
        self.seed = seed
        self.logged: list[int] = []
        self.started = pd.Timestamp.now(tz="UTC")
        self.published: GuidelineVersion | None = None  # the version this program published
        self.published_at: pd.Timestamp | None = None   # when, in the program's clock
        self.pairs: list[tuple[str, str]] = []

    def before_work(self, round_: int) -> None:
        if self.cfg.publish_round == round_:
            self._publish(round_)
        current = published_guideline(self.store, self.stream)
        if current is not None:
            log_guideline_version(self.tracker, current, self.logged)

    def _publish(self, round_: int) -> None:
        try:
            draft, made = self.store.draft_guideline_from_pairs(self.stream, author=PROGRAM_AUTHOR, pairs=self.cfg.pairs,
                                                                per_class=self.cfg.per_class)
        except SchemaError as exc:  # nothing confused yet: the program goes on without guidance
            self.tracker.set_tags({T.TAG_GUIDANCE: f"round {round_}: no guideline drafted ({exc})"})
            return
        self.published = self.store.publish_guideline(self.stream, draft.version, actor=PROGRAM_AUTHOR)
        self.published_at = self.clock(round_, pd.Timedelta(0))
        self.pairs = list(made.sections)
        self.tracker.set_tags({T.TAG_GUIDANCE: f"round {round_}: published version {draft.version} for "
                                               + ", ".join(f"{a}/{b}" for a, b in self.pairs)})
        follow = getattr(self.workforce, "follow_guideline", None)
        if follow is None:  # people: they see it in their task previews
            return
        classes = list(self.store.stream(self.stream).classes)
        fixes = {(classes.index(a), classes.index(b)): self.cfg.clarity for a, b in self.pairs}
        published_at = self.published_at

        def since(r: int) -> float:
            return (self.clock(r, self.work_offset) - published_at) / pd.Timedelta(days=1)

        follow(Guideline(f"v{draft.version}", fixes), half_life_days=self.cfg.adoption_half_life_days, since=since,
               rng=np.random.default_rng([self.seed, 41]))

    def finish(self, step: int) -> None:
        version, published_at, pairs = self._measured()
        if version is None:
            return
        annotations = self.store.annotations_frame(self.stream)
        # An item's first label came with it, before any task showed a guideline.
        asked = annotations[annotations[ITEM].duplicated()]
        resolved = self.store.resolved_labels(self.stream)
        resolved = resolved[resolved["method"].isin(PROGRAM_REFERENCE_METHODS)]
        reference = pd.Series(resolved[LABEL].to_numpy(dtype=np.int64), index=resolved[ITEM].astype(str).to_numpy())
        try:
            impact = guideline_impact(self.store, self.stream, version.version, pairs=pairs, n_boot=PROGRAM_BOOT,
                                      seed=self.seed, reference=reference, reference_name=PROGRAM_REFERENCE,
                                      annotations=asked, published_at=published_at)
        except SchemaError as exc:
            self.tracker.set_tags({T.TAG_GUIDELINE_IMPACT: f"version {version.version}: not measured ({exc})"})
            return
        self.tracker.log_table(impact.table(), T.GUIDELINE_IMPACT_CSV)
        self.tracker.set_tags({T.TAG_GUIDELINE_IMPACT: f"version {version.version} on {pairs[0][0]}/{pairs[0][1]}, "
                                                       f"graded against {PROGRAM_REFERENCE}"})
        metrics = impact.results[0].metrics()
        if self.truth is not None:
            truth = pd.Series(np.asarray(self.truth, dtype=np.int64), index=self.truth.index.astype(str))
            try:
                true = guideline_impact(self.store, self.stream, version.version, pairs=pairs[:1], n_boot=0,
                                        reference=truth, reference_name="truth", annotations=asked,
                                        published_at=published_at)
                metrics[T.TRUE_GUIDELINE_GAIN] = true.results[0].gain
                metrics[T.TRUE_GUIDELINE_HALF_LIFE_DAYS] = true.results[0].half_life
            except SchemaError:
                pass
        self.tracker.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)}, step=step)

    def _measured(self) -> tuple[GuidelineVersion | None, Any, list[tuple[str, str]] | None]:
        """The version published during the run, when, and its pairs (the program's own, else
        the newest an admin published while it ran)."""
        if self.published is not None:
            return self.published, self.published_at, self.pairs
        current = published_guideline(self.store, self.stream)
        if current is None or current.published_at is None or pd.Timestamp(current.published_at) < self.started:
            return None, None, None
        pairs = addressed_pairs(current)
        return (current, current.published_at, pairs) if pairs else (None, None, None)
