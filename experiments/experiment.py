"""``labelloop experiment``: variants of the annotation process, compared with a sequential test.

An experiment randomises, within one stream, annotators or tasks to *variants*: a guideline
version, the model's suggestion shown or hidden, the number of worked examples shown, a
validation rule (double-blind for class pairs). The first variant is the control. Tasks arrive
in looks of ``look_every``; after each look every variant is measured and compared with the
control by :class:`loop.sequential.SequentialComparison` (an always-valid mSPRT: one may look
after every batch and stop as soon as it decides). A variant whose comparison has decided gets
no more tasks; the experiment ends when every comparison has declared a winner or "no
difference", or ``max_annotations`` answers are spent.

**Per variant and look**: ``accuracy`` of the tasks' labels against gold (the world's gold
items) with an always-valid interval; the truth-free companion ``audit_accuracy``: agreement
with an independent expert on a random ``audit_rate`` share of the tasks (with
``measure: audit`` the test runs on it, for a stream without gold); ``seconds_per_item``,
``agreement`` (Krippendorff's alpha over items answered at least twice in the variant),
``cost`` and ``annotations`` (answers, the double-blind rule's extra ones included); and
against the control: ``difference`` with its confidence-sequence bounds and ``p_value``.

**A live stream** (``experiment.stream``: a stream of the label store ``store.url``): the
variants are measured on the answers the stream already holds, replayed ``look_every`` at a
time in the order they were stored, so the test stops where it would have stopped live. An
answer's variant is what the store records with it: its ``guideline_version`` (a variant's
``guideline.version`` is then the store's published version number, whose text and examples
are logged; a variant without a guideline takes the answers without one) and whether a
``suggestion`` was shown; examples shown and validation rules are not recorded per answer, so
they are refused there. The reference is gold where the config's table has a gold column
(``measure: gold``), else each item's current expert or adjudicated resolution (``measure:
audit``, truth-free); answers on items without one are not counted. ``labelloop serve`` with
the same ``experiment:`` section randomises the crowd's tasks to the variants as it creates
them (:func:`live_arms`, :func:`assign_arms`; :class:`experiments.live.HumanWorkforce`);
``tables/assignments.csv`` records which answers were counted for which variant.

**Simulation** (without ``experiment.stream``): the world of ``program`` (digits, music genre or a team's
table with gold, :func:`experiments.world.build_world`); the items are its stream items, their
truth the gold; the crowd is the world's simulated non-expert crowd (a replayed real crowd
cannot be shown a variant: its twins answer), the audits its experts. The variants act through
:mod:`loop.simulate`'s :class:`~loop.simulate.Variant`: a guideline removes ``effect`` of the
confusion on its ``pairs``; the suggestion is the built-in model's label, trained on the
world's calibration and holdout gold (never on the experiment's items).

**Randomisation** is recorded: the parent run's ``tables/assignments.csv`` has every task's
look, variant, item, annotator, label and cost (and, with ``unit: annotator``,
``tables/annotator_variants.csv`` who was given which variant).

**Clustered answers.** With ``unit: annotator`` answers by the same person are correlated
(people differ in skill): each arm's variance is multiplied by its design effect
(:func:`loop.sequential.cluster_design_effect`, logged as ``design_effect``), so the test
needs as much more evidence as the people in an arm differ; with few annotators per variant
it can hardly decide at all, which is the honest answer. ``unit: task`` (the default) counts
answers as independent (design effect 1).

MLflow: a parent run (role ``experiment``) with one child run per variant (role
``experiment_variant``); per-look metrics with ``step`` = look; the decision as the parent's
tag ``labelloop.decision`` and its description; ``plots/differences.png`` (each variant's
difference from the control inside its confidence sequence, look by look); each guideline
version as JSON and Markdown
in the artifacts of the variant run that uses it. The guideline versions are also drafted and
published in the label store (``store.url``), on stream ``program.name`` (created with the
world's classes when missing; a rerun finds the same versions), and the variant run names the
store's version number (param ``guideline.store_version``).

Config (beside the program sections)::

    experiment:
      unit: task             # task | annotator: what is randomised to variants
      measure: gold          # gold | audit: what the sequential test compares
      alpha: 0.05            # family-wise level (Bonferroni over the variants against the control)
      min_effect: 0.02       # equivalence margin: "no difference" when the interval is within +-it
      tau: 0.05              # the effect size the mSPRT finds fastest
      max_annotations: 3000  # stop when this many answers are spent (the control's included)
      look_every: 100        # tasks per look
      min_samples: 30        # tasks per arm before a comparison may decide
      audit_rate: 0.1        # share of tasks an expert also answers (the truth-free accuracy)
      seed: 0
      stream: null           # a label-store stream: measure its stored answers instead of simulating
      variants:              # the first one is the control
        - {name: current}
        - name: v2
          guideline: {version: v2, text: "...", examples: {"3": [...]}, pairs: [["3", "5"]], effect: 0.5}
        - {name: suggested, suggestion: shown, anchoring: 0.3}
        - {name: examples, examples: 3}
        - {name: blind, rule: {double_blind: [["3", "5"]]}}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from loop.agreement import krippendorff_alpha
from loop.columns import ANNOTATOR, COST, ITEM, LABEL, SECONDS
from loop.sequential import CONTROL, Decision, SequentialComparison, cluster_design_effect, confidence_sequence
from loop.simulate import Guideline, SimulatedCrowd, Variant, annotate_variant

from . import tracking as T
from .config import ConfigError, ProgramConfig, _int, _real, _text, config_error, flatten, parse_config, read_yaml

__all__ = ["ExperimentConfig", "ExperimentResult", "ExperimentSettings", "GuidelineSpec", "LiveArm", "VariantSpec",
           "answer_variants", "assign_arms", "live_arms", "load_experiment_config", "main", "parse_experiment_config"]

SECTION = "experiment"
ROLE_EXPERIMENT = "experiment"
ROLE_VARIANT = "experiment_variant"
TAG_DECISION = "labelloop.decision"
TAG_VARIANT = "labelloop.variant"
DESCRIPTION = "mlflow.note.content"   # MLflow's run description
ASSIGNMENTS_CSV = "tables/assignments.csv"
ANNOTATOR_VARIANTS_CSV = "tables/annotator_variants.csv"
LOOKS_CSV = "tables/looks.csv"
VARIANTS_CSV = "tables/variants.csv"
DIFFERENCES_PNG = "plots/differences.png"
# Per-look metrics of a variant run (step = look).
ACCURACY = "accuracy"
ACCURACY_CS_LOW = "accuracy_cs_low"
ACCURACY_CS_HIGH = "accuracy_cs_high"
AUDIT_ACCURACY = "audit_accuracy"
AUDITED = "audited_tasks"
DESIGN_EFFECT = "design_effect"  # how much an arm's variance grows from its answers' clustering by annotator
TASKS = "tasks"
ANNOTATIONS = "annotations"
SECONDS_PER_ITEM = "seconds_per_item"
AGREEMENT = "agreement"
COST_METRIC = "cost"
DIFFERENCE = "difference"
DIFFERENCE_CS_LOW = "difference_cs_low"
DIFFERENCE_CS_HIGH = "difference_cs_high"
P_VALUE = "p_value"
VARIANT = "variant"
LOOK = "look"
CORRECT = "correct"
AUDIT_LABEL = "audit_label"


class Unit(str, Enum):
    TASK = "task"
    ANNOTATOR = "annotator"


class Measure(str, Enum):
    GOLD = "gold"
    AUDIT = "audit"


def _field(index: int, key: str) -> str:
    return f"{SECTION}.variants[{index}].{key}"


def _pairs(value: Any, path: str) -> tuple[tuple[str, str], ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        raise config_error(path, "a non-empty list of class pairs like [[\"3\", \"5\"]]", value)
    pairs = []
    for i, pair in enumerate(value):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, (list, tuple)) or len(pair) != 2 \
                or str(pair[0]) == str(pair[1]):
            raise config_error(f"{path}[{i}]", "a pair of two different class names", pair)
        pairs.append((str(pair[0]), str(pair[1])))
    return tuple(pairs)


@dataclass(frozen=True)
class GuidelineSpec:
    """A guideline version a variant uses: what annotators read, and (in simulation) its effect.

    ``pairs`` are the confused class pairs it addresses (class names); ``effect`` in [0, 1] the
    share of the confusion on them it removes in simulation (:class:`loop.simulate.Guideline`).
    """

    version: str
    text: str = ""
    examples: Mapping[str, Any] = field(default_factory=dict)
    pairs: tuple[tuple[str, str], ...] = ()
    effect: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "text": self.text, "examples": dict(self.examples),
                "pairs": [list(p) for p in self.pairs], "effect": self.effect}

    def markdown(self) -> str:
        lines = [f"# Guideline {self.version}", "", self.text or "(no text)", "", "## Confused pairs it addresses", ""]
        lines += [f"- {a} / {b}" for a, b in self.pairs] or ["(none)"]
        lines += ["", "## Examples per class", ""]
        lines += [f"- {name}: {json.dumps(shown)}" for name, shown in self.examples.items()] or ["(none)"]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class VariantSpec:
    """One variant as the config gives it (class names, not codes)."""

    name: str
    guideline: GuidelineSpec | None = None
    suggestion: bool = False
    anchoring: float = 0.3
    examples: int = 0
    double_blind: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        parts = []
        if self.guideline is not None:
            parts.append(f"guideline {self.guideline.version}")
        if self.suggestion:
            parts.append(f"suggestion shown (anchoring {self.anchoring:g})")
        if self.examples:
            parts.append(f"{self.examples} examples")
        if self.double_blind:
            parts.append("double-blind " + ", ".join(f"{a}/{b}" for a, b in self.double_blind))
        return "; ".join(parts) or "as today"

    def simulated(self, classes: tuple[str, ...], index: int) -> Variant:
        """The :class:`loop.simulate.Variant` of this spec on ``classes``."""
        codes = {name: code for code, name in enumerate(classes)}

        def code_pairs(pairs: tuple[tuple[str, str], ...], key: str) -> list[tuple[int, int]]:
            out = []
            for i, pair in enumerate(pairs):
                unknown = [c for c in pair if c not in codes]
                if unknown:
                    raise config_error(f"{_field(index, key)}[{i}]", f"class names of the dataset {list(classes)}",
                                       unknown[0])
                out.append((codes[pair[0]], codes[pair[1]]))
            return out

        guideline = None
        if self.guideline is not None:
            pairs = code_pairs(self.guideline.pairs, "guideline.pairs")
            guideline = Guideline(self.guideline.version, {p: self.guideline.effect for p in pairs})
        return Variant(self.name, guideline=guideline, suggestion=self.suggestion, anchoring=self.anchoring,
                       examples=self.examples, double_blind=tuple(code_pairs(self.double_blind, "rule.double_blind")))


_VARIANT_KEYS = ("name", "guideline", "suggestion", "anchoring", "examples", "rule")
_GUIDELINE_KEYS = ("version", "text", "examples", "pairs", "effect")


def _variant(raw: Any, index: int) -> VariantSpec:
    if not isinstance(raw, Mapping):
        raise config_error(f"{SECTION}.variants[{index}]", "a mapping with a name", raw)
    for key in raw:
        if key not in _VARIANT_KEYS:
            raise ConfigError(f"{_field(index, key)}: unknown key; expected one of {list(_VARIANT_KEYS)}")
    name = _text(raw.get("name"), _field(index, "name"))
    if name == CONTROL:
        raise config_error(_field(index, "name"), f"a name other than {CONTROL!r} (the first variant is the control)",
                           name)
    guideline = None
    if raw.get("guideline") is not None:
        g = raw["guideline"]
        if not isinstance(g, Mapping):
            raise config_error(_field(index, "guideline"), "a mapping with a version", g)
        for key in g:
            if key not in _GUIDELINE_KEYS:
                raise ConfigError(f"{_field(index, 'guideline')}.{key}: unknown key; expected one of "
                                  f"{list(_GUIDELINE_KEYS)}")
        examples = g.get("examples") or {}
        if not isinstance(examples, Mapping):
            raise config_error(_field(index, "guideline.examples"), "a mapping of class name -> examples", examples)
        text = g.get("text") or ""
        if not isinstance(text, str):
            raise config_error(_field(index, "guideline.text"), "a string", text)
        guideline = GuidelineSpec(
            version=_text(str(g["version"]) if g.get("version") is not None else None, _field(index, "guideline.version")),
            text=text, examples={str(k): v for k, v in examples.items()},
            pairs=() if g.get("pairs") is None else _pairs(g["pairs"], _field(index, "guideline.pairs")),
            effect=_real(g.get("effect", 0.5), _field(index, "guideline.effect"), 0.0, 1.0))
    suggestion = raw.get("suggestion", "hidden")
    if suggestion not in ("shown", "hidden"):
        raise config_error(_field(index, "suggestion"), "one of ['shown', 'hidden']", suggestion)
    rule = raw.get("rule") or {}
    if not isinstance(rule, Mapping) or set(rule) - {"double_blind"}:
        raise config_error(_field(index, "rule"), "a mapping {double_blind: [[class, class], ...]}", rule)
    blind = _pairs(rule["double_blind"], _field(index, "rule.double_blind")) if "double_blind" in rule else ()
    return VariantSpec(name=name, guideline=guideline, suggestion=suggestion == "shown",
                       anchoring=_real(raw.get("anchoring", 0.3), _field(index, "anchoring"), 0.0, 1.0),
                       examples=_int(raw.get("examples", 0), _field(index, "examples"), 0, 100),
                       double_blind=blind)


@dataclass(frozen=True)
class ExperimentSettings:
    """The ``experiment:`` section (see the module docstring for every key and default)."""

    variants: tuple[VariantSpec, ...]
    unit: Unit = Unit.TASK
    measure: Measure = Measure.GOLD
    alpha: float = 0.05
    min_effect: float = 0.02
    tau: float = 0.05
    max_annotations: int = 3000
    look_every: int = 100
    min_samples: int = 30
    audit_rate: float = 0.1
    seed: int = 0
    stream: str | None = None

    @classmethod
    def from_dict(cls, raw: Any) -> ExperimentSettings:
        if not isinstance(raw, Mapping):
            raise config_error(SECTION, "a mapping with a list of variants", raw)
        keys = [f.name for f in dataclasses.fields(cls)]
        for key in raw:
            if key not in keys:
                raise ConfigError(f"{SECTION}.{key}: unknown key; expected one of {keys}")
        variants = raw.get("variants")
        if isinstance(variants, (str, bytes)) or not isinstance(variants, (list, tuple)) or len(variants) < 2:
            raise config_error(f"{SECTION}.variants", "a list of at least 2 variants (the first is the control)",
                               variants)
        specs = tuple(_variant(v, i) for i, v in enumerate(variants))
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise config_error(f"{SECTION}.variants", "distinct variant names", names)
        # A version may serve several variants (shown with and without the suggestion, say),
        # but it is one text: the same version twice with different contents is refused.
        guidelines: dict[str, GuidelineSpec] = {}
        for spec in specs:
            if spec.guideline is not None and guidelines.setdefault(spec.guideline.version, spec.guideline) \
                    != spec.guideline:
                raise config_error(f"{SECTION}.variants", "one text, examples, pairs and effect per guideline version",
                                   f"two different guidelines named {spec.guideline.version!r}")

        def choice(enum: type[Enum], key: str) -> Any:
            try:
                return enum(raw.get(key, getattr(cls, key).value))
            except ValueError:
                raise config_error(f"{SECTION}.{key}", f"one of {[e.value for e in enum]}", raw.get(key)) from None

        alpha = _real(raw.get("alpha", 0.05), f"{SECTION}.alpha", 0.0, 0.5)
        if alpha == 0:
            raise config_error(f"{SECTION}.alpha", "a number > 0 and <= 0.5", raw.get("alpha"))
        tau = _real(raw.get("tau", 0.05), f"{SECTION}.tau", 0.0, 1.0)
        if tau == 0:
            raise config_error(f"{SECTION}.tau", "a number > 0 and <= 1", raw.get("tau"))
        look_every = _int(raw.get("look_every", 100), f"{SECTION}.look_every", len(specs))
        return cls(variants=specs, unit=choice(Unit, "unit"), measure=choice(Measure, "measure"), alpha=alpha,
                   min_effect=_real(raw.get("min_effect", 0.02), f"{SECTION}.min_effect", 0.0, 1.0), tau=tau,
                   max_annotations=_int(raw.get("max_annotations", 3000), f"{SECTION}.max_annotations", look_every),
                   look_every=look_every,
                   min_samples=_int(raw.get("min_samples", 30), f"{SECTION}.min_samples", 1),
                   audit_rate=_real(raw.get("audit_rate", 0.1), f"{SECTION}.audit_rate", 0.0, 1.0),
                   seed=_int(raw.get("seed", 0), f"{SECTION}.seed", 0),
                   stream=None if raw.get("stream") is None else _text(raw["stream"], f"{SECTION}.stream"))

    def to_params(self) -> dict[str, str]:
        params = {f"{SECTION}.{f.name}": str(getattr(self, f.name).value if isinstance(getattr(self, f.name), Enum)
                                             else getattr(self, f.name))
                  for f in dataclasses.fields(self) if f.name != "variants"}
        for i, spec in enumerate(self.variants):
            params[f"{SECTION}.variants.{i}"] = f"{spec.name}: {spec.describe()}"
        return params


@dataclass(frozen=True)
class ExperimentConfig:
    """An experiment config file: the program sections (world, crowd, tracking) and ``experiment:``."""

    program: ProgramConfig
    experiment: ExperimentSettings


def parse_experiment_config(raw: Mapping[str, Any] | None) -> ExperimentConfig:
    """Validate a parsed YAML mapping: the program sections and an ``experiment:`` section.

    Raises
    ------
    ConfigError
        Naming the first wrong key or value (``experiment.alpha: expected a number >= 0.0 ...``).

    Examples
    --------
    >>> cfg = parse_experiment_config({"experiment": {"variants": [{"name": "a"}, {"name": "b", "examples": 3}]}})
    >>> cfg.experiment.variants[1].examples, cfg.experiment.unit.value
    (3, 'task')
    """
    program = parse_config(raw, ignore=(SECTION,))
    if not raw or raw.get(SECTION) is None:
        raise config_error(SECTION, "a section with a list of variants (see configs/experiment.yaml)", None)
    return ExperimentConfig(program=program, experiment=ExperimentSettings.from_dict(raw[SECTION]))


def load_experiment_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment config file (see :func:`parse_experiment_config`)."""
    return parse_experiment_config(read_yaml(path))


# --- the run --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExperimentResult:
    """What an experiment found.

    Attributes
    ----------
    decision : str
        ``winner: <name>``, ``no_difference`` or ``inconclusive`` (the budget ran out first).
    variants : DataFrame
        One row per variant (the control first): its final figures and decision.
    looks : DataFrame
        One row per variant and look: the per-look metrics.
    assignments : DataFrame
        Every task: look, variant, item, annotator, label, correct, seconds, cost, answers.
    annotations : int
        Answers used in all.
    stopped_early : bool
        The test decided before ``max_annotations``.
    parent_run_id : str or None
    run_ids : dict of variant -> run id (None in memory)
    """

    decision: str
    variants: pd.DataFrame
    looks: pd.DataFrame
    assignments: pd.DataFrame
    annotations: int
    stopped_early: bool
    parent_run_id: str | None = None
    run_ids: dict[str, str | None] = field(default_factory=dict)
    trackers: dict[str, Any] = field(default_factory=dict)


def main(cfg: ExperimentConfig, *, world: Any = None, tracker_factory: Callable[[], Any] | None = None,
         progress: Callable[[int, int], None] | None = None) -> ExperimentResult:
    """Run the experiment of ``cfg`` (in simulation, or on a live stream's stored answers with
    ``experiment.stream``) and log it (see the module docstring).

    Parameters
    ----------
    cfg : ExperimentConfig
    world : World, optional
        Default ``build_world(cfg.program)`` (simulation only).
    tracker_factory : callable () -> Tracker, optional
        A new tracker per run (parent, then one per variant); default from ``cfg.program.tracking``.
    progress : callable (annotations used, max annotations) -> None, optional

    Returns
    -------
    ExperimentResult
    """
    from .program import make_tracker
    from .world import build_world

    settings = cfg.experiment
    factory = tracker_factory or (lambda: make_tracker(cfg.program))
    if settings.stream is not None:
        return _live(cfg, factory)
    world = world if world is not None else build_world(cfg.program)
    variants = [spec.simulated(world.classes, i) for i, spec in enumerate(settings.variants)]
    crowd = world.workforce.crowd
    if settings.look_every > len(world.truth):
        raise config_error(f"{SECTION}.look_every", f"at most the {len(world.truth)} stream items of the world",
                           settings.look_every)
    if settings.unit is Unit.ANNOTATOR and len(crowd) < 2 * len(variants):
        raise config_error(f"{SECTION}.unit", f"'task' with {len(crowd)} crowd annotators for {len(variants)} "
                           "variants (unit annotator needs at least 2 annotators per variant)", settings.unit.value)
    # Before the simulation: a store that refuses stops the command before any work.
    published = _publish_guidelines(cfg, world)
    suggestions = _suggestions(cfg.program, world) if any(v.suggestion for v in variants) else None
    history, assignments, annotator_variants, test = _simulate(settings, variants, world, crowd, suggestions,
                                                               progress)
    looks = pd.DataFrame(history)
    decision = _overall(test, settings)
    summary = _summary(looks, settings, test)
    used = int(assignments["answers"].sum())
    result = ExperimentResult(decision=decision, variants=summary, looks=looks, assignments=assignments,
                              annotations=used, stopped_early=test.done)
    return _log(cfg, world.dataset, result, annotator_variants, factory, published)


AUTHOR = "labelloop experiment"


def _publish_guidelines(cfg: ExperimentConfig, world: Any) -> dict[str, dict[str, Any]]:
    """Each variant's guideline version, drafted and published in the label store on stream
    ``program.name`` (idempotent: a rerun finds the same version), by variant name."""
    specs = [s for s in cfg.experiment.variants if s.guideline is not None]
    if not specs:
        return {}
    from loop.store import LabelStore

    stream = cfg.program.name
    out = {}
    with LabelStore(cfg.program.store_url) as store:
        store.create_stream(stream, list(world.classes), actor=AUTHOR)
        for spec in specs:
            g = spec.guideline
            examples = {"name": g.version, "examples": dict(g.examples), "pairs": [list(p) for p in g.pairs]}
            draft = store.add_guideline(stream, g.text or f"Guideline {g.version}", author=AUTHOR, examples=examples,
                                        actor=AUTHOR)
            version = store.publish_guideline(stream, draft.version, actor=AUTHOR)
            out[spec.name] = {"stream": stream, "version": version.version,
                              "published_at": str(version.published_at)}
    return out


def _suggestions(program: ProgramConfig, world: Any) -> pd.Series:
    """The built-in model's label of each stream item, trained on the world's gold sets only."""
    from .models import make_estimator

    gold = pd.concat([world.calibration, world.holdout])
    model = make_estimator(program.model).fit(world.x(gold.index), gold.to_numpy())
    predicted = np.asarray(model.predict(world.x(world.truth.index)), dtype=np.int64)
    return pd.Series(predicted, index=world.truth.index)


def _simulate(settings: ExperimentSettings, variants: list[Variant], world: Any, crowd: SimulatedCrowd,
              suggestions: pd.Series | None, progress: Callable[[int, int], None] | None):
    rng = np.random.default_rng([settings.seed, 13])
    names = [v.name for v in variants]
    test = SequentialComparison(names[1:], alpha=settings.alpha, min_effect=settings.min_effect, tau=settings.tau,
                                min_samples=settings.min_samples)
    truth = world.truth
    people = crowd.ids.to_numpy()
    annotator_variants = None
    if settings.unit is Unit.ANNOTATOR:
        # A balanced random split of the crowd: annotator j gets variant order[j] % k.
        slots = rng.permutation(len(people)) % len(names)
        annotator_variants = pd.DataFrame({ANNOTATOR: people, VARIANT: [names[s] for s in slots]})
    shown = {v.name: v for v in variants}
    experts = world.workforce.experts
    frames: list[pd.DataFrame] = []
    history: list[dict[str, Any]] = []
    used, look = 0, 0
    while used < settings.max_annotations and not test.done:
        look += 1
        # A decided variant gets no more tasks (its comparison has stopped); the control and the
        # open variants share the look in balanced blocks (+-1 task), in random order.
        active = [0] + [i for i, name in enumerate(names) if i and name not in test.decided_]
        arms = np.asarray(active)[rng.permutation(np.arange(settings.look_every) % len(active))]
        # Distinct items within a look; across looks an item comes back (agreement needs repeats).
        items = rng.choice(truth.index.to_numpy(), settings.look_every, replace=False)
        for code, name in enumerate(names):
            chosen = items[arms == code]
            if chosen.size == 0:
                continue
            pool = people if annotator_variants is None else \
                annotator_variants.loc[annotator_variants[VARIANT] == name, ANNOTATOR].to_numpy()
            assignment = pd.DataFrame({ITEM: chosen, ANNOTATOR: pool[rng.integers(0, pool.size, chosen.size)]})
            tasks, _ = annotate_variant(crowd, assignment, truth, shown[name], suggestions=suggestions, rng=rng)
            tasks[VARIANT] = name
            tasks[LOOK] = look
            tasks[CORRECT] = tasks[LABEL].to_numpy() == truth.reindex(tasks[ITEM]).to_numpy()
            audited = rng.random(len(tasks)) < settings.audit_rate
            tasks[AUDIT_LABEL] = np.nan
            if audited.any():
                # An expert who is not the task's annotator; their answer is the truth-free reference.
                ask = tasks.loc[audited, [ITEM, ANNOTATOR]]
                answers = experts.annotate(experts.assign(ask[ITEM].to_numpy(), 1, rng=rng), truth, rng=rng)
                tasks.loc[audited, AUDIT_LABEL] = answers[LABEL].to_numpy()
            frames.append(tasks)
        done = pd.concat(frames, ignore_index=True)
        used = int(done["answers"].sum())
        history += _look(done, test, settings, names, look, used)
        if progress is not None:
            progress(min(used, settings.max_annotations), settings.max_annotations)
    assignments = pd.concat(frames, ignore_index=True)[[LOOK, VARIANT, ITEM, ANNOTATOR, LABEL, CORRECT, AUDIT_LABEL,
                                                        SECONDS, COST, "answers"]]
    return history, assignments, annotator_variants, test


def _outcomes(done: pd.DataFrame, settings: ExperimentSettings) -> pd.DataFrame:
    """Each counted answer's annotator and whether it succeeded: against gold, or agreeing with the audit."""
    if settings.measure is Measure.GOLD:
        return pd.DataFrame({ANNOTATOR: done[ANNOTATOR].to_numpy(), "success": done[CORRECT].to_numpy(dtype=bool)})
    audited = done[done[AUDIT_LABEL].notna()]
    return pd.DataFrame({ANNOTATOR: audited[ANNOTATOR].to_numpy(),
                         "success": audited[LABEL].to_numpy() == audited[AUDIT_LABEL].to_numpy()})


def _arm(done: pd.DataFrame, settings: ExperimentSettings) -> tuple[int, int, float]:
    """(successes, trials, design effect) the test compares. With ``unit: annotator`` the
    answers are clustered by annotator (:func:`loop.sequential.cluster_design_effect`); with
    ``unit: task`` they count as independent (1)."""
    outcomes = _outcomes(done, settings)
    successes, trials = int(outcomes["success"].sum()), len(outcomes)
    if settings.unit is not Unit.ANNOTATOR or not trials:
        return successes, trials, 1.0
    per = outcomes.groupby(ANNOTATOR, sort=False)["success"].agg(["sum", "size"])
    return successes, trials, cluster_design_effect(per["sum"].to_numpy(), per["size"].to_numpy())


def _look(done: pd.DataFrame, test: SequentialComparison, settings: ExperimentSettings, names: list[str],
          look: int, used: int) -> list[dict[str, Any]]:
    by = {name: done[done[VARIANT] == name] for name in names}
    arms = {name: _arm(frame, settings) for name, frame in by.items()}
    counts = {name: arm[:2] for name, arm in arms.items()}
    results = test.update(control=counts[names[0]], variants={n: counts[n] for n in names[1:]},
                          design_effects={CONTROL: arms[names[0]][2], **{n: arms[n][2] for n in names[1:]}})
    rows = []
    for name in names:
        frame = by[name]
        s, n = counts[name]
        row: dict[str, Any] = {LOOK: look, VARIANT: name, "annotations_total": used, TASKS: len(frame),
                               ANNOTATIONS: int(frame["answers"].sum()),
                               ACCURACY: float(frame[CORRECT].mean()) if len(frame) else np.nan,
                               SECONDS_PER_ITEM: float(frame[SECONDS].mean()) if len(frame) else np.nan,
                               COST_METRIC: float(frame[COST].sum()),
                               AGREEMENT: _agreement(frame), AUDITED: int(frame[AUDIT_LABEL].notna().sum())}
        audited = frame[frame[AUDIT_LABEL].notna()]
        row[AUDIT_ACCURACY] = float((audited[LABEL] == audited[AUDIT_LABEL]).mean()) if len(audited) else np.nan
        row[DESIGN_EFFECT] = arms[name][2]
        if n:
            rate = s / n
            q = (s + 0.5) / (n + 1)
            low, high = confidence_sequence(rate, arms[name][2] * q * (1 - q) / n, alpha=test.alpha_per_comparison,
                                            tau=settings.tau)
            row[ACCURACY_CS_LOW], row[ACCURACY_CS_HIGH] = max(float(low), 0.0), min(float(high), 1.0)
        if name in results:
            r = results[name]
            decided = test.decided_.get(name, r)
            row.update({DIFFERENCE: r.difference, DIFFERENCE_CS_LOW: r.ci_low, DIFFERENCE_CS_HIGH: r.ci_high,
                        P_VALUE: r.p_value, "decision": decided.decision.value, "winner": decided.winner})
        rows.append(row)
    return rows


def _agreement(frame: pd.DataFrame) -> float:
    """Krippendorff's alpha over the variant's items answered by at least two of its tasks."""
    answers = frame[[ITEM, ANNOTATOR, LABEL]].drop_duplicates([ITEM, ANNOTATOR])
    pairable = answers[answers.groupby(ITEM)[ITEM].transform("size") >= 2]
    if pairable[ITEM].nunique() < 2 or pairable[LABEL].nunique() < 2:
        return float("nan")  # alpha is 0/0: no disagreement is possible to measure
    return float(krippendorff_alpha(pairable))


def _overall(test: SequentialComparison, settings: ExperimentSettings) -> str:
    """One verdict: the best variant that beat the control; the control when it beat every
    variant; no_difference when every comparison found none; else inconclusive."""
    decided = test.decided_
    beaten = [d for d in decided.values() if d.winner not in (None, CONTROL)]
    if beaten:
        # The largest difference now, not at the look that decided (that one was noisier).
        return f"winner: {max(beaten, key=lambda d: test.looks_[d.variant].difference).variant}"
    if not test.done:
        return "inconclusive"
    if all(d.winner == CONTROL for d in decided.values()):
        return f"winner: {settings.variants[0].name} (the control)"
    return Decision.NO_DIFFERENCE.value


def _summary(looks: pd.DataFrame, settings: ExperimentSettings, test: SequentialComparison) -> pd.DataFrame:
    last = looks[looks[LOOK] == looks[LOOK].max()].set_index(VARIANT)
    rows = []
    for i, spec in enumerate(settings.variants):
        row = last.loc[spec.name]
        decided = test.decided_.get(spec.name)
        rows.append({VARIANT: spec.name, "what": spec.describe(), TASKS: int(row[TASKS]),
                     ANNOTATIONS: int(row[ANNOTATIONS]), ACCURACY: row[ACCURACY],
                     ACCURACY_CS_LOW: row.get(ACCURACY_CS_LOW), ACCURACY_CS_HIGH: row.get(ACCURACY_CS_HIGH),
                     AUDIT_ACCURACY: row[AUDIT_ACCURACY], SECONDS_PER_ITEM: row[SECONDS_PER_ITEM],
                     AGREEMENT: row[AGREEMENT], COST_METRIC: row[COST_METRIC], DESIGN_EFFECT: row[DESIGN_EFFECT],
                     DIFFERENCE: row.get(DIFFERENCE, np.nan) if i else np.nan,
                     DIFFERENCE_CS_LOW: row.get(DIFFERENCE_CS_LOW, np.nan) if i else np.nan,
                     DIFFERENCE_CS_HIGH: row.get(DIFFERENCE_CS_HIGH, np.nan) if i else np.nan,
                     P_VALUE: row.get(P_VALUE, np.nan) if i else np.nan,
                     "decision": "control" if i == 0 else (decided.decision.value if decided else "continue"),
                     "winner": None if i == 0 or decided is None else decided.winner})
    return pd.DataFrame(rows)


# --- a live stream: the store's answers -----------------------------------------------------------

_REFERENCE_METHODS = ("expert", "adjudicated")  # resolutions that count as a truth-free reference


def _live(cfg: ExperimentConfig, factory: Callable[[], Any]) -> ExperimentResult:
    """Measure the variants on the answers a live stream already holds, in the order they came.

    A variant is what the store records with each answer: its ``guideline_version`` (a variant's
    ``guideline.version`` is the store's published version number; none: answers without one)
    and whether a ``suggestion`` was shown. The looks replay the answers ``look_every`` at a
    time, as they arrived, so the test stops where it would have stopped live. The reference
    is gold where the config's table has it (``measure: gold``), else the items' current
    expert or adjudicated resolution (``measure: audit``: truth-free).
    """
    from loop.store import LabelStore

    settings = cfg.experiment
    stream = settings.stream
    with LabelStore(cfg.program.store_url) as store:
        classes = tuple(store.stream(stream).classes)
        guidelines, versions = _store_guidelines(store, stream, settings)
        answers = store.annotations_frame(stream, extras=("suggestion",))
        resolved = store.resolved_labels(stream)
    gold = _table_gold(cfg, classes)
    if settings.measure is Measure.GOLD and gold is None:
        raise config_error(f"{SECTION}.measure", "'audit' on a stream without gold (program.dataset: a table with a "
                           "gold column gives gold)", settings.measure.value)
    expert = resolved[resolved["method"].astype(str).isin(_REFERENCE_METHODS)].set_index(ITEM)[LABEL]
    answers = answers.sort_values("annotation_id", kind="stable").reset_index(drop=True)
    answers[VARIANT] = answer_variants(answers, settings.variants, versions)
    answers = answers[answers[VARIANT].notna()]
    reference = gold if settings.measure is Measure.GOLD else expert
    answers = answers[answers[ITEM].isin(reference.index)].reset_index(drop=True)
    if answers.empty:
        raise config_error(f"{SECTION}.stream", f"a stream with answers of the variants on items with a "
                           f"{'gold' if settings.measure is Measure.GOLD else 'expert or adjudicated'} label", stream)
    truth = gold.reindex(answers[ITEM]).to_numpy() if gold is not None else np.full(len(answers), np.nan)
    tasks = pd.DataFrame({ITEM: answers[ITEM].to_numpy(), ANNOTATOR: answers[ANNOTATOR].to_numpy(),
                          LABEL: answers[LABEL].to_numpy(), SECONDS: answers[SECONDS].astype(float).to_numpy(),
                          COST: answers[COST].astype(float).to_numpy(), "answers": 1, VARIANT: answers[VARIANT],
                          # Without gold, right-or-wrong is unknown (NaN), not wrong: accuracy is NaN.
                          CORRECT: np.where(np.isnan(truth), np.nan, answers[LABEL].to_numpy() == truth),
                          AUDIT_LABEL: expert.reindex(answers[ITEM]).to_numpy(dtype=float)})
    names = [spec.name for spec in settings.variants]
    test = SequentialComparison(names[1:], alpha=settings.alpha, min_effect=settings.min_effect, tau=settings.tau,
                                min_samples=settings.min_samples)
    history: list[dict[str, Any]] = []
    stops = list(range(settings.look_every, len(tasks), settings.look_every)) + [len(tasks)]
    tasks[LOOK] = np.arange(len(tasks)) // settings.look_every + 1
    for look, stop in enumerate(stops, start=1):
        history += _look(tasks.iloc[:stop], test, settings, names, look, stop)
        if test.done:
            tasks = tasks.iloc[:stop]
            break
    looks = pd.DataFrame(history)
    result = ExperimentResult(decision=_overall(test, settings), variants=_summary(looks, settings, test), looks=looks,
                              assignments=tasks[[LOOK, VARIANT, ITEM, ANNOTATOR, LABEL, CORRECT, AUDIT_LABEL, SECONDS,
                                                 COST, "answers"]],
                              annotations=len(tasks), stopped_early=test.done)
    published = {name: {"stream": stream, "version": int(v)} for name, v in versions.items() if v is not None}
    return _log(cfg, stream, result, None, factory, published, guidelines)


def answer_variants(answers: pd.DataFrame, variants: tuple[VariantSpec, ...],
                    versions: Mapping[str, int | None]) -> np.ndarray:
    """Each stored answer's variant name (None: it matches none), from what the store recorded
    with it: its ``guideline_version`` (``versions``: each variant's published version number,
    None for answers without one) and whether a ``suggestion`` was shown."""
    shown = answers["suggestion"].notna().to_numpy()
    version = pd.to_numeric(answers["guideline_version"], errors="coerce").to_numpy(dtype=float)
    which = np.full(len(answers), None, dtype=object)
    for spec in variants:
        want = versions.get(spec.name)
        same = np.isnan(version) if want is None else version == want
        which[same & (shown == spec.suggestion)] = spec.name
    return which


def _store_guidelines(store: Any, stream: str, settings: ExperimentSettings):
    """The published guideline version of each variant (by name), as specs to log, and its number."""
    from loop.exceptions import SchemaError

    specs, versions = {}, {}
    signatures = set()
    for i, spec in enumerate(settings.variants):
        if spec.examples or spec.double_blind:
            key = "examples" if spec.examples else "rule"
            raise config_error(_field(i, key), "no value on a live stream (the store records each answer's "
                               "guideline version and suggestion, not examples shown or a validation rule)",
                               spec.examples or "double_blind")
        number = None
        if spec.guideline is not None:
            text = spec.guideline.version.removeprefix("v")
            try:
                number = int(text)
                g = store.guideline(stream, number)
                if g.published_at is None:
                    raise SchemaError("not published")
            except (ValueError, SchemaError):
                raise config_error(_field(i, "guideline.version"), f"a published guideline version number of "
                                   f"stream {stream!r}", spec.guideline.version) from None
            # Examples as this command publishes them ({"examples": {...}, ...}), else as stored.
            stored = g.examples if isinstance(g.examples, Mapping) else {"examples": g.examples}
            shown = stored.get("examples", stored)
            specs[spec.name] = GuidelineSpec(version=f"v{number}", text=g.text,
                                             examples=dict(shown) if isinstance(shown, Mapping) else
                                             {"all": shown} if shown is not None else {},
                                             pairs=spec.guideline.pairs)
        versions[spec.name] = number
        signature = (number, spec.suggestion)
        if signature in signatures:
            raise config_error(_field(i, "name"), "variants that differ in guideline version or suggestion on a "
                               "live stream", spec.name)
        signatures.add(signature)
    return specs, versions


# --- a live stream: randomising the tasks as they are created ---------------------------------------


@dataclass(frozen=True)
class LiveArm:
    """A variant as the task service hands it out: the guideline version its tasks show (the
    store's published version number; None: the newest published, as any task) and whether
    they show the model's suggestion (a task without it is blind: no suggestion, no examples)."""

    name: str
    guideline_version: int | None
    suggestion: bool

    def describe(self) -> str:
        shown = "suggestion shown" if self.suggestion else "suggestion hidden"
        return f"guideline v{self.guideline_version}, {shown}" if self.guideline_version else shown


def live_arms(settings: ExperimentSettings, store: Any, stream: str) -> tuple[LiveArm, ...]:
    """The variants of ``settings`` as arms that ``labelloop serve`` randomises new tasks to.

    Checked against the store before any task is made, so that every answer can be told apart
    by what the store records with it (what :func:`main` then measures on ``experiment.stream``):
    guideline versions must be published ones; examples shown and validation rules are refused
    (not recorded per answer); two arms may not look alike; and once the stream has a published
    guideline every arm names its version (a task naming none shows the newest published, so an
    arm without one could not be told from the arm that names it). ``unit: annotator`` is
    refused: tasks are randomised as they are created, before anyone claims them.
    """
    from loop.exceptions import SchemaError

    if settings.unit is Unit.ANNOTATOR:
        raise config_error(f"{SECTION}.unit", "'task' on a live stream (tasks are randomised when they are created, "
                           "before an annotator claims one)", settings.unit.value)
    _, versions = _store_guidelines(store, stream, settings)
    try:
        published = store.guideline(stream).version
    except SchemaError:  # none published yet
        published = None
    for i, spec in enumerate(settings.variants):
        if published is not None and versions[spec.name] is None:
            raise config_error(_field(i, "guideline.version"), f"a published version number (stream {stream!r} "
                               f"shows version {published} to tasks that name none)", None)
    return tuple(LiveArm(spec.name, versions[spec.name], spec.suggestion) for spec in settings.variants)


def assign_arms(keys: Any, n_arms: int, seed: int) -> np.ndarray:
    """Each task's arm (0..n_arms-1), uniform, from its idempotency key and the seed alone.

    A hash rather than a random generator's draws: a task retried, or created by another
    replica, gets the same arm, and nothing needs to be remembered between calls.

    >>> assign_arms(["a", "b", "a"], 2, seed=0).tolist() == assign_arms(["a", "b", "a"], 2, seed=0).tolist()
    True
    """
    if isinstance(n_arms, bool) or not isinstance(n_arms, int) or n_arms < 1:
        raise ValueError(f"n_arms: expected an integer >= 1, got {n_arms!r}")
    digests = (hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest() for key in keys)
    return np.fromiter((int.from_bytes(d, "big") % n_arms for d in digests), dtype=np.int64)


def _table_gold(cfg: ExperimentConfig, classes: tuple[str, ...]) -> pd.Series | None:
    """Gold class codes by item id from the config's table, when it has a gold column."""
    table = cfg.program.table
    if table is None or table.gold is None:
        return None
    from .table import load_table

    loaded = load_table(table)
    gold = loaded.known_gold
    if tuple(loaded.classes) != classes:
        raise config_error("program.dataset.classes", f"the stream's classes {list(classes)}", list(loaded.classes))
    return pd.Series(gold.to_numpy(dtype=float), index=gold.index.astype(str))



_PER_LOOK = (ACCURACY, ACCURACY_CS_LOW, ACCURACY_CS_HIGH, AUDIT_ACCURACY, AUDITED, DESIGN_EFFECT, TASKS,
             ANNOTATIONS, SECONDS_PER_ITEM, AGREEMENT, COST_METRIC, DIFFERENCE, DIFFERENCE_CS_LOW, DIFFERENCE_CS_HIGH, P_VALUE)


def _log(cfg: ExperimentConfig, dataset: str, result: ExperimentResult, annotator_variants: pd.DataFrame | None,
         factory: Callable[[], Any], published: Mapping[str, Mapping[str, Any]],
         guidelines: Mapping[str, GuidelineSpec] | None = None) -> ExperimentResult:
    settings = cfg.experiment
    params = {**flatten(cfg.program), **settings.to_params()}
    description = _description(result, settings)
    parent = factory()
    parent_id = parent.start(f"experiment-{dataset}", params=params,
                             tags={T.TAG_ROLE: ROLE_EXPERIMENT, T.TAG_DATASET: dataset,
                                   TAG_DECISION: result.decision, DESCRIPTION: description})
    trackers: dict[str, Any] = {"parent": parent}
    run_ids: dict[str, str | None] = {}
    try:
        parent.log_table(result.assignments, ASSIGNMENTS_CSV)
        parent.log_table(result.looks, LOOKS_CSV)
        parent.log_table(result.variants, VARIANTS_CSV)
        if annotator_variants is not None:
            parent.log_table(annotator_variants, ANNOTATOR_VARIANTS_CSV)
        parent.log_metrics({ANNOTATIONS: result.annotations, "stopped_early": float(result.stopped_early)})
        parent.log_figure(plot_differences(result.looks, settings), DIFFERENCES_PNG)
        for spec, row in zip(settings.variants, result.variants.itertuples(index=False), strict=True):
            child = factory()
            stored = published.get(spec.name)
            own = {"variant": spec.name, "variant.what": spec.describe()}
            if stored is not None:  # the store's number of the version this run used
                own["guideline.store_version"] = f"{stored['stream']} v{stored['version']}"
            run_ids[spec.name] = child.start(spec.name, params={**params, **own},
                                             tags={T.TAG_ROLE: ROLE_VARIANT, TAG_VARIANT: spec.name,
                                                   T.TAG_DATASET: dataset,
                                                   TAG_DECISION: f"{row.decision}" + (
                                                       f": {row.winner}" if isinstance(row.winner, str) else ""),
                                                   DESCRIPTION: f"{spec.name}: {spec.describe()}. {description}"})
            trackers[spec.name] = child
            try:
                own = result.looks[result.looks[VARIANT] == spec.name]
                for r in own.itertuples(index=False):
                    values = {m: float(getattr(r, m)) for m in _PER_LOOK if hasattr(r, m)}
                    child.log_metrics({m: v for m, v in values.items() if np.isfinite(v)}, step=int(r.look))
                guideline = (guidelines or {}).get(spec.name, spec.guideline)
                if guideline is not None:
                    stored = published.get(spec.name)
                    _log_text(child, json.dumps({**guideline.to_dict(), "store": stored}, indent=2),
                              f"guideline/{guideline.version}.json")
                    _log_text(child, guideline.markdown(), f"guideline/{guideline.version}.md")
            except BaseException:
                child.finish(failed=True)
                raise
            child.finish()
    except BaseException:
        parent.finish(failed=True)
        raise
    parent.finish()
    return dataclasses.replace(result, parent_run_id=parent_id, run_ids=run_ids, trackers=trackers)


def plot_differences(looks: pd.DataFrame, settings: ExperimentSettings):
    """Each variant's accuracy difference from the control, look by look, inside its
    always-valid confidence sequence; the equivalence margin dashed."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5, 4.0), dpi=100)
    ax = figure.add_subplot()
    for spec in settings.variants[1:]:
        own = looks[looks[VARIANT] == spec.name]
        line, = ax.plot(own["annotations_total"], own[DIFFERENCE], label=spec.name)
        ax.fill_between(own["annotations_total"], own[DIFFERENCE_CS_LOW], own[DIFFERENCE_CS_HIGH],
                        color=line.get_color(), alpha=0.15)
    ax.axhline(0.0, color="black", linewidth=0.8)
    for edge in (-settings.min_effect, settings.min_effect):
        ax.axhline(edge, color="grey", linewidth=0.8, linestyle="--")
    ax.set_ylim(-0.3, 0.3)
    ax.set_xlabel("annotations used")
    ax.set_ylabel(f"accuracy - {settings.variants[0].name}'s")
    ax.set_title("variants against the control (always-valid intervals)")
    ax.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    return figure


def _log_text(tracker: Any, text: str, path: str) -> None:
    """A text artifact: a file in MLflow; in a MemoryTracker, a one-row table under ``path``."""
    if isinstance(tracker, T.MlflowTracker):
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(path).name
            local.write_text(text)
            tracker.writer.log_artifact(tracker.run_id, str(local), folder=str(Path(path).parent))
    else:
        tracker.log_table(pd.DataFrame({"text": [text]}), path)


def _description(result: ExperimentResult, settings: ExperimentSettings) -> str:
    how = "stopped early" if result.stopped_early else f"ran to max_annotations {settings.max_annotations}"
    return (f"Decision: {result.decision} after {result.annotations} annotations ({how}); always-valid mSPRT, "
            f"alpha {settings.alpha:g} (Bonferroni over {len(settings.variants) - 1} variant(s)), equivalence margin "
            f"{settings.min_effect:g}, measured against {settings.measure.value}.")
