"""The program config: YAML validated into frozen dataclasses.

A config file has these sections (every key optional; defaults in brackets)::

    program:
      name: labelloop            # names the label-store stream and the MLflow runs
      dataset: digits            # digits | music_genre | a table of your own items:
                                 #   {path: items.parquet, id: item_id, label: label,
                                 #    features: [f0, f1], gold: gold, classes: [cat, dog]}
                                 #   (see TableDataset)
      annotations: null          # a table's answers: a CSV/Parquet long frame
                                 #   item_id, annotator_id, label[, seconds]
      rounds: 4                  # rounds after the seed round (>= 1)
      items_per_round: 250       # new items arriving per round (>= 10)
      budget_per_round: 15.0     # what the strategy may spend per round, in program.currency (>= 0)
      currency: cost units       # the unit of every cost figure (budget, program_cost, cost per
                                 #   error removed): a label shown in tables, reports and MLflow
                                 #   (param program.currency, tag labelloop.currency), e.g. EUR
      value_per_error_removed: null  # optional, >= 0, in currency: what one label error removed is
                                 #   worth; then roi = value_per_error_removed * errors_removed /
                                 #   program_cost (and roi_estimate from errors_removed_estimate)
      strategy: tiered           # random | least_confidence | cleanlab | triple_majority | tiered
      audit_rate: 0.03           # share of labelled items an expert audits each round, in [0, 1]
      audit_scope: all           # all | fresh: audit only the labels new or changed since the last audit
                                 #   (its cost follows the round's work; see experiments/program.py, step 6)
      calibration_items: 150     # gold items that fit the temperature (>= 20)
      holdout_items: 300         # gold items the model is evaluated on (digits; music_genre
                                 # uses its 300 test songs)
      annotator_model: one_coin  # how the posterior of the model and the annotators weighs each
                                 # annotator: one_coin (an accuracy fitted jointly with the model)
                                 # | dawid_skene (confusion matrices from the annotations alone);
                                 # see loop.issues
      deferred_accept_confidence: null  # tiered: an item the budget cannot pay a person for this
                                 # round takes the posterior's class when that is another class
                                 # with at least this probability, in (0, 1] (null: it keeps its
                                 # label); see loop.strategies.plan_round's deferred_accept
      max_fit_items: 10000       # at most this many items train each round's model (and get its
                                 # out-of-fold probabilities) and fit the posterior's annotators:
                                 # a uniform sample once more have arrived, so a round's cost
                                 # stops growing with the history (>= 100; null: every item)
      seed: 0
      drift_scenario: none       # simulated drift (digits): none | prior_shift | covariate_shift
                                 #   | new_subpopulation (see experiments.world)
      drift_onset_round: 3       # the first round whose arrivals drift (>= 1)
    crowd:
      tiers: {novice: 12, experienced: 6, expert: 3}   # or "replay" (music_genre's real crowd;
      experts: 3                                        #   experts are simulated)
    thresholds: {auto_accept_confidence: 0.9, ...}    # loop.routing.RoutingThresholds (default:
                                                      #   0.9, expert_margin 0.05, double-blind 0.99;
                                                      #   max_auto_accept_error: 0.02 bounds the
                                                      #   audited error of auto-accepted labels)
    gate: {max_ece: 0.15, ...}                        # loop.gate.QualityGate (default: max_ece 0.15,
                                                      #   max_recall_drop 0.25, min_accuracy_gain 0)
    tracking:
      uri: sqlite:///mlflow.db   # or "none": no tracking, models kept in memory
      experiment: labelloop
      registered_model: labelloop  # on a team's table, simulations (run, compare) register as
                                   #   <registered_model>-simulation; labelloop retrain registers here
    store:
      url: sqlite:///labelloop.db
    serve:
      url: in_process            # in_process (no Ray) | local (start Ray Serve here) | http://host:port
    compare:
      strategies: [random, least_confidence, cleanlab, triple_majority, tiered]
    model:
      estimator: null            # an import path (sklearn.ensemble.HistGradientBoostingClassifier)
                                 #   or package.module:factory; null: the built-in logistic regression
      params: {}                 # keyword arguments of the estimator or factory
      uri: null                  # score with a registered model instead: models:/name@champion
      allow_pickle: false        # load model flavours that unpickle (they run code when loaded)
    live:                        # labelloop serve: the program with people as its workforce
      stream: null               # the label-store stream items arrive on (null: program.name)
      sla_seconds: 86400         # a task not answered this long after it was made is escalated
      round_items: 100           # a round starts once this many items wait (and takes at most these)
      round_seconds: 3600        # ... or once the oldest waiting item has waited this long
      poll_seconds: 5            # how often the store is read while waiting
    drift:                       # drift alerts and targeted relabeling (see DriftConfig)
      enabled: false
      reference_rounds: 2        # rounds 0 .. reference_rounds - 1 are the reference window
      psi: 0.4                   # a feature's PSI above it drifts
      ks_alpha: 0.01             # KS of continuous features, Holm-corrected across them
      prediction_psi: 0.3        # PSI of the predicted classes' shares
      label_psi: 0.3             # PSI of the resolved labels' shares
      novelty_alpha: 0.001       # binomial test of the share of arrivals unlike the reference
      relabel_budget: 6.0        # cost units each alert may spend relabelling (>= 0)
      relabel_action: auto       # auto (by what drifted) | review | double_blind | expert
      queue: targeted            # targeted (the drifted region) | blanket (uniform: a baseline)
    experiment: {variants: [...]}  # labelloop experiment only: the variants compared and the sequential
                                 #   test (experiments/experiment.py documents every key; see
                                 #   configs/experiment.yaml)
    guidance:                    # confused pairs become guidance during a program (see GuidanceConfig)
      publish_round: null        # at the start of this round (1..rounds) the program drafts a guideline
                                 #   version from the confused pairs and publishes it (null: never;
                                 #   a published version is logged to MLflow either way)
      pairs: 2                   # sections for this many of the most confused pairs (1..50)
      per_class: 3               # boundary examples per class of a pair (1..50)
      clarity: 0.7               # simulation: share of an addressed pair's confusion a crowd member
                                 #   who follows it no longer makes, in [0, 1]
      adoption_half_life_days: 1.0  # simulation: median delay (days; a round is a day) before a
                                 #   crowd member follows it (exponential delays), > 0

A wrong key or value stops with one line naming it, e.g.
``program.rounds: expected an integer >= 1, got 'x'`` (:class:`ConfigError`).

Examples
--------
>>> cfg = parse_config({"program": {"rounds": 2, "strategy": "random"}})
>>> cfg.rounds, cfg.strategy.value, cfg.crowd.tiers["expert"]
(2, 'random', 3)
>>> parse_config({"program": {"rounds": "x"}})
Traceback (most recent call last):
...
experiments.config.ConfigError: program.rounds: expected an integer >= 1, got 'x'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import yaml

from loop.drift import DriftThresholds
from loop.exceptions import SchemaError
from loop.gate import QualityGate
from loop.issues import ANNOTATOR_MODELS
from loop.routing import RoutingThresholds
from loop.simulate import Tier
from loop.strategies import Strategy

__all__ = ["ConfigError", "config_error", "CrowdConfig", "Dataset", "DriftConfig", "DriftScenario", "GuidanceConfig", "LiveConfig", "ModelConfig", "ProgramConfig",
           "TableDataset", "TrackingConfig", "flatten",
           "load_config", "parse_config", "read_yaml", "IN_PROCESS", "LOCAL", "NO_TRACKING"]

IN_PROCESS = "in_process"
LOCAL = "local"
NO_TRACKING = "none"
REPLAY = "replay"
SECTIONS = ("program", "crowd", "thresholds", "gate", "tracking", "store", "serve", "compare", "model", "live",
            "drift", "guidance")


class ConfigError(SchemaError):
    """A config key or value is wrong; the message names it (``section.key: expected ..., got ...``)."""


class AuditScope(str, Enum):
    """What a round's audit draws from: every labelled item (``all``), or the labels new or
    changed since the last audit, the earlier audits' count carried forward (``fresh``)."""

    ALL = "all"
    FRESH = "fresh"

    def __str__(self) -> str:
        return self.value


class Dataset(str, Enum):
    DIGITS = "digits"
    MUSIC_GENRE = "music_genre"

    def __str__(self) -> str:
        return self.value


def config_error(path: str, expected: str, got: Any) -> ConfigError:
    """The one form of a config error: ``<path>: expected <form>, got <value>``."""
    text = repr(got)
    return ConfigError(f"{path}: expected {expected}, got {text if len(text) <= 60 else text[:57] + '...'}")


def _int(value: Any, path: str, low: int, high: int | None = None) -> int:
    ok = isinstance(value, Integral) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        raise config_error(path, f"an integer >= {low}" + ("" if high is None else f" and <= {high}"), value)
    return int(value)


def _real(value: Any, path: str, low: float, high: float | None = None) -> float:
    ok = isinstance(value, Real) and not isinstance(value, bool) and value == value and value >= low \
        and (high is None or value <= high) and abs(value) != float("inf")
    if not ok:
        raise config_error(path, f"a number >= {low}" + ("" if high is None else f" and <= {high}"), value)
    return float(value)


def _text(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise config_error(path, "a non-empty string", value)
    return value


def _check_currency(value: Any) -> str:
    # Shown in table headers and an MLflow tag: one short line.
    if not isinstance(value, str) or not value.strip() or len(value) > 40 or "\n" in value:
        raise config_error("program.currency", "a non-empty one-line string of at most 40 characters", value)
    return value


def _choice(enum: type[Enum], value: Any, path: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        raise config_error(path, f"one of {[e.value for e in enum]}", value) from None


@dataclass(frozen=True)
class CrowdConfig:
    """Who annotates: simulated tiers, or the dataset's real crowd replayed.

    Parameters
    ----------
    tiers : mapping of tier name -> count, or ``"replay"``
        Simulated annotators per tier (``novice``, ``experienced``, ``expert``); crowd work
        goes to the non-expert tiers, expert work to ``expert``. ``"replay"`` replays the
        dataset's real crowd (music_genre) and simulates ``experts`` experts.
    experts : int >= 1
        Simulated experts when replaying.
    """

    tiers: Mapping[str, int] | str = field(default_factory=lambda: {"novice": 12, "experienced": 6, "expert": 3})
    experts: int = 3

    def __post_init__(self) -> None:
        _int(self.experts, "crowd.experts", 1)
        if isinstance(self.tiers, str):
            if self.tiers != REPLAY:
                raise config_error("crowd.tiers", f"a mapping of tier -> count or {REPLAY!r}", self.tiers)
            return
        if not isinstance(self.tiers, Mapping):
            raise config_error("crowd.tiers", f"a mapping of tier -> count or {REPLAY!r}", self.tiers)
        counts = {}
        for name, count in self.tiers.items():
            tier = _choice(Tier, name, f"crowd.tiers.{name}").value
            counts[tier] = _int(count, f"crowd.tiers.{name}", 0)
        if counts.get(Tier.EXPERT.value, 0) < 1:
            raise config_error("crowd.tiers.expert", "an integer >= 1 (experts adjudicate and audit)", counts.get("expert", 0))
        if sum(v for k, v in counts.items() if k != Tier.EXPERT.value) < 3:
            raise config_error("crowd.tiers", "at least 3 non-expert annotators (triple annotation needs 3 distinct people)",
                       dict(self.tiers))
        object.__setattr__(self, "tiers", dict(counts))

    @property
    def replay(self) -> bool:
        return self.tiers == REPLAY


@dataclass(frozen=True)
class TableDataset:
    """A team's own items: one row an item in a CSV or Parquet file.

    Only the config's form is checked here; the file itself is read and checked (missing
    columns, duplicate ids, labels outside ``classes``, bad features) when a command loads it.

    Parameters
    ----------
    path : str
        ``.csv`` or ``.parquet``; a relative path is relative to the working directory.
    id : str, default="item_id"
        The column of unique item ids.
    label : str, default="label"
        The current label; empty means not labelled yet.
    features : tuple of str or None
        Numeric feature columns; None means every other numeric column.
    gold : str or None
        The known-true label where it is known (a simulation uses these items as its world).
    classes : tuple of str or None
        The classes in order; None means the sorted labels seen.
    """

    path: str
    id: str = "item_id"
    label: str = "label"
    features: tuple[str, ...] | None = None
    gold: str | None = None
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        _text(self.path, "program.dataset.path")
        if not str(self.path).lower().endswith((".csv", ".parquet", ".csv.gz", ".pq")):
            raise config_error("program.dataset.path", "a .csv or .parquet file", self.path)
        _text(self.id, "program.dataset.id")
        _text(self.label, "program.dataset.label")
        if self.gold is not None:
            _text(self.gold, "program.dataset.gold")
        for key in ("features", "classes"):
            value = getattr(self, key)
            if value is None:
                continue
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise config_error(f"program.dataset.{key}", "a list of names", value)
            names = tuple(str(v) if key == "classes" else _text(v, f"program.dataset.{key}[{i}]")
                          for i, v in enumerate(value))
            if not names or len(set(names)) != len(names):
                raise config_error(f"program.dataset.{key}", "a non-empty list of distinct names", list(value))
            set_(self, key, names)
        named = [self.id, self.label] + ([self.gold] if self.gold else [])
        if len(set(named)) != len(named):
            raise config_error("program.dataset", "distinct id, label and gold columns", named)
        if self.features and set(self.features) & set(named):
            raise config_error("program.dataset.features", "columns other than id, label and gold",
                               sorted(set(self.features) & set(named)))

    @property
    def value(self) -> str:
        """The dataset's name in stream names, runs and tables: the file's stem."""
        name = Path(self.path).name
        for suffix in (".csv.gz", ".parquet", ".csv", ".pq"):
            if name.lower().endswith(suffix):
                return name[: -len(suffix)] or "table"
        return name  # pragma: no cover - the path's suffix is checked above

    def __str__(self) -> str:
        return self.value

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "id": self.id, "label": self.label,
                "features": None if self.features is None else list(self.features), "gold": self.gold,
                "classes": None if self.classes is None else list(self.classes)}


_TABLE_KEYS = ("path", "id", "label", "features", "gold", "classes")


def _dataset(value: Any) -> Dataset | TableDataset:
    """``program.dataset``: a built-in world's name, or a table's mapping."""
    if isinstance(value, (Dataset, TableDataset)):
        return value
    if isinstance(value, Mapping):
        for key in value:
            if key not in _TABLE_KEYS:
                raise ConfigError(f"program.dataset.{key}: unknown key; expected one of {list(_TABLE_KEYS)}")
        if "path" not in value:
            raise config_error("program.dataset.path", "the table's file (a .csv or .parquet)", None)
        return TableDataset(**value)
    return _choice(Dataset, value, "program.dataset")


@dataclass(frozen=True)
class ModelConfig:
    """The model a program trains and scores with.

    Parameters
    ----------
    estimator : str or None
        An import path of a class (``sklearn.ensemble.HistGradientBoostingClassifier``) or of a
        factory (``package.module:factory``) giving an estimator with ``fit`` and
        ``predict_proba``; None is the built-in logistic regression.
    params : mapping
        Keyword arguments of the estimator or factory.
    uri : str or None
        A model already in the MLflow registry (``models:/name@champion``), any pyfunc whose
        predict returns class probabilities; it scores instead of a trained one.
    allow_pickle : bool, default=False
        Whether model flavours that unpickle (and so run code when loaded) may load.
    """

    estimator: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    uri: str | None = None
    allow_pickle: bool = False

    def __post_init__(self) -> None:
        if self.estimator is not None:
            _text(self.estimator, "model.estimator")
        if not isinstance(self.params, Mapping) or not all(isinstance(k, str) for k in self.params):
            raise config_error("model.params", "a mapping of keyword -> value", self.params)
        object.__setattr__(self, "params", dict(self.params))
        if self.uri is not None:
            _text(self.uri, "model.uri")
        if not isinstance(self.allow_pickle, bool):
            raise config_error("model.allow_pickle", "true or false", self.allow_pickle)

    def to_dict(self) -> dict[str, Any]:
        return {"estimator": self.estimator, "params": dict(self.params), "uri": self.uri,
                "allow_pickle": self.allow_pickle}


@dataclass(frozen=True)
class LiveConfig:
    """A live program (``labelloop serve``): items arrive in the store, people answer tasks.

    Parameters
    ----------
    stream : str or None
        The label-store stream the items arrive on; None: ``program.name``.
    sla_seconds : float > 0, default 86400
        A task still unanswered this long after it was made is escalated, and its round goes on
        without it.
    round_items : int >= 1, default 100
        A round starts once this many items wait, and takes at most this many (the oldest).
    round_seconds : float > 0, default 3600
        ... or once the oldest waiting item has waited this long.
    poll_seconds : float > 0, default 5
        How often the store is read while waiting for items or answers.
    """

    stream: str | None = None
    sla_seconds: float = 86_400.0
    round_items: int = 100
    round_seconds: float = 3_600.0
    poll_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.stream is not None:
            _text(self.stream, "live.stream")
        for key in ("sla_seconds", "round_seconds", "poll_seconds"):
            value = _real(getattr(self, key), f"live.{key}", 0.0)
            if value <= 0:
                raise config_error(f"live.{key}", "a number > 0", getattr(self, key))
            object.__setattr__(self, key, value)
        _int(self.round_items, "live.round_items", 1)


_LIVE_KEYS = ("stream", "sla_seconds", "round_items", "round_seconds", "poll_seconds")


class DriftScenario(str, Enum):
    """Simulated drift from ``program.drift_onset_round`` (:mod:`experiments.world`)."""

    NONE = "none"
    PRIOR_SHIFT = "prior_shift"
    COVARIATE_SHIFT = "covariate_shift"
    NEW_SUBPOPULATION = "new_subpopulation"

    def __str__(self) -> str:
        return self.value


DRIFT_ACTIONS = ("auto", "review", "double_blind", "expert")
DRIFT_QUEUES = ("targeted", "blanket")


@dataclass(frozen=True)
class DriftConfig:
    """Drift alerts: each round's arrivals against a reference window (:mod:`loop.drift`).

    Parameters
    ----------
    enabled : bool, default False
    reference_rounds : int >= 1, default 2
        Rounds ``0 .. reference_rounds - 1`` are the reference window; later rounds are checked.
    psi, ks_alpha, prediction_psi, label_psi, novelty_alpha : float
        The thresholds of :class:`loop.drift.DriftThresholds` (PSI > 0; alphas in (0, 1)).
    relabel_budget : float >= 0, default 6.0
        Cost units each alert may spend relabelling already-labelled items of the drifted
        region, on top of the round's budget (its cost is in the program's cost).
    relabel_action : str, default ``auto``
        How the queue is relabelled: ``review`` (one crowd label), ``double_blind`` (two crowd
        labels, an expert where they disagree), ``expert``, or ``auto``: per alert, by what drifted
        (:func:`experiments.drift_watch.choose_action`): ``expert`` when features or novelty
        drifted (the items look new: the crowd is least to be trusted there), ``double_blind``
        when only the class mix (predicted classes, labels) moved (the crowd is as good as before,
        and a single expert, wrong about as often as the labels, breaks as many as it fixes).
    queue : str, default ``targeted``
        ``targeted``: the drifted region, ranked; ``blanket``: as many items drawn uniformly
        from the labelled ones (the baseline of ``benchmarks/drift.py``).
    """

    enabled: bool = False
    reference_rounds: int = 2
    # The library's defaults, not copies of them (their measurements are in loop.drift).
    psi: float = DriftThresholds.psi
    ks_alpha: float = DriftThresholds.ks_alpha
    prediction_psi: float = DriftThresholds.prediction_psi
    label_psi: float = DriftThresholds.label_psi
    novelty_alpha: float = DriftThresholds.novelty_alpha
    relabel_budget: float = 6.0
    relabel_action: str = "auto"
    queue: str = "targeted"

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise config_error("drift.enabled", "true or false", self.enabled)
        _int(self.reference_rounds, "drift.reference_rounds", 1)
        for key in ("psi", "prediction_psi", "label_psi"):
            value = _real(getattr(self, key), f"drift.{key}", 0.0)
            if value <= 0:
                raise config_error(f"drift.{key}", "a number > 0", getattr(self, key))
            object.__setattr__(self, key, value)
        for key in ("ks_alpha", "novelty_alpha"):
            value = _real(getattr(self, key), f"drift.{key}", 0.0, 1.0)
            if not 0 < value < 1:
                raise config_error(f"drift.{key}", "a number in (0, 1)", getattr(self, key))
            object.__setattr__(self, key, value)
        object.__setattr__(self, "relabel_budget", _real(self.relabel_budget, "drift.relabel_budget", 0.0))
        if self.relabel_action not in DRIFT_ACTIONS:
            raise config_error("drift.relabel_action", f"one of {list(DRIFT_ACTIONS)}", self.relabel_action)
        if self.queue not in DRIFT_QUEUES:
            raise config_error("drift.queue", f"one of {list(DRIFT_QUEUES)}", self.queue)

    def thresholds(self) -> Any:
        """The :class:`loop.drift.DriftThresholds` of this config."""
        return DriftThresholds(psi=self.psi, ks_alpha=self.ks_alpha, prediction_psi=self.prediction_psi,
                               label_psi=self.label_psi, novelty_alpha=self.novelty_alpha)


_DRIFT_KEYS = tuple(f.name for f in dataclasses.fields(DriftConfig))


@dataclass(frozen=True)
class GuidanceConfig:
    """Confused pairs become guidance during a program (:mod:`experiments.guidance`).

    Parameters
    ----------
    publish_round : int or None, default None
        At the start of this round (1..``program.rounds``) the program drafts the next
        guideline version from the stream's confused pairs
        (:meth:`loop.store.LabelStore.draft_guideline_from_pairs`) and publishes it, as an admin
        would; at the end it logs the version's impact (``guideline_gain``,
        ``guideline_half_life_days``). None: the program publishes nothing (a version someone
        else published is still logged to the run once).
    pairs : int in 1..50, default 2
        Sections for this many of the most confused pairs.
    per_class : int in 1..50, default 3
        Boundary examples per class of a pair.
    clarity : float in [0, 1], default 0.7
        Simulation only: the share of an addressed pair's confusion (both ways) that a crowd
        member who follows the guideline no longer makes (:class:`loop.simulate.Guideline`).
    adoption_half_life_days : float > 0, default 1.0
        Simulation only: each crowd member starts following it after an exponential delay with
        this median (:func:`loop.simulate.draw_adoption_delays`; a round is a day). Experts'
        answers are the reference and are left as they are.
    """

    publish_round: int | None = None
    pairs: int = 2
    per_class: int = 3
    clarity: float = 0.7
    adoption_half_life_days: float = 1.0

    def __post_init__(self) -> None:
        if self.publish_round is not None:
            _int(self.publish_round, "guidance.publish_round", 1)
        for key in ("pairs", "per_class"):
            _int(getattr(self, key), f"guidance.{key}", 1, 50)
        object.__setattr__(self, "clarity", _real(self.clarity, "guidance.clarity", 0.0, 1.0))
        half = _real(self.adoption_half_life_days, "guidance.adoption_half_life_days", 0.0)
        if half <= 0:
            raise config_error("guidance.adoption_half_life_days", "a number > 0", self.adoption_half_life_days)
        object.__setattr__(self, "adoption_half_life_days", half)


_GUIDANCE_KEYS = ("publish_round", "pairs", "per_class", "clarity", "adoption_half_life_days")


@dataclass(frozen=True)
class TrackingConfig:
    """Where runs and models go. ``uri="none"`` tracks nothing and keeps models in memory."""

    uri: str = "sqlite:///mlflow.db"
    experiment: str = "labelloop"
    registered_model: str = "labelloop"

    def __post_init__(self) -> None:
        _text(self.uri, "tracking.uri")
        _text(self.experiment, "tracking.experiment")
        _text(self.registered_model, "tracking.registered_model")

    @property
    def enabled(self) -> bool:
        return self.uri != NO_TRACKING


@dataclass(frozen=True)
class ProgramConfig:
    """One program: a dataset, a crowd, a strategy, its budget, routing, gate and endpoints.

    See the module docstring for every field, its YAML key and default.
    """

    name: str = "labelloop"
    dataset: Dataset | TableDataset = Dataset.DIGITS
    annotations: str | None = None
    rounds: int = 4
    items_per_round: int = 250
    budget_per_round: float = 15.0
    strategy: Strategy = Strategy.TIERED
    audit_rate: float = 0.03
    audit_scope: AuditScope = AuditScope.ALL
    calibration_items: int = 150
    holdout_items: int = 300
    annotator_model: str = "one_coin"
    deferred_accept_confidence: float | None = None
    # The built-in datasets stay below it (digits has 1,797 items): their programs fit on all.
    max_fit_items: int | None = 10_000
    seed: int = 0
    # The unit is a label for people reading the figures: no cost is ever converted.
    currency: str = "cost units"
    value_per_error_removed: float | None = None
    crowd: CrowdConfig = field(default_factory=CrowdConfig)
    # From the calibration grid of benchmarks/program.py (digits, seed 100): among the settings
    # that keep every route in use, the one that removed the most errors at equal budget.
    thresholds: RoutingThresholds = field(default_factory=lambda: RoutingThresholds(
        auto_accept_confidence=0.9, expert_margin=0.05, double_blind_issue_score=0.99))
    # Sized for the default 300-item holdout (~30 items a class): a class's recall moves by about
    # 0.13 between two models by chance, the ECE of 300 items by several points.
    gate: QualityGate = field(default_factory=lambda: QualityGate(max_ece=0.15, max_recall_drop=0.25))
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    store_url: str = "sqlite:///labelloop.db"
    serve: str = IN_PROCESS
    strategies: tuple[Strategy, ...] = tuple(Strategy)
    model: ModelConfig = field(default_factory=ModelConfig)
    live: LiveConfig = field(default_factory=LiveConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    drift_scenario: DriftScenario = DriftScenario.NONE
    drift_onset_round: int = 3
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        _text(self.name, "program.name")
        set_(self, "dataset", _dataset(self.dataset))
        if self.annotations is not None:
            _text(self.annotations, "program.annotations")
            if not isinstance(self.dataset, TableDataset):
                raise config_error("program.annotations", "no value with a built-in dataset (only a table's "
                                   "answers are read from a file)", self.annotations)
        _int(self.rounds, "program.rounds", 1)
        _int(self.items_per_round, "program.items_per_round", 10)
        set_(self, "budget_per_round", _real(self.budget_per_round, "program.budget_per_round", 0.0))
        set_(self, "strategy", _choice(Strategy, self.strategy, "program.strategy"))
        set_(self, "audit_rate", _real(self.audit_rate, "program.audit_rate", 0.0, 1.0))
        set_(self, "audit_scope", _choice(AuditScope, self.audit_scope, "program.audit_scope"))
        _int(self.calibration_items, "program.calibration_items", 20)
        _int(self.holdout_items, "program.holdout_items", 20)
        if not isinstance(self.annotator_model, str) or self.annotator_model not in ANNOTATOR_MODELS:
            raise config_error("program.annotator_model", f"one of {list(ANNOTATOR_MODELS)}", self.annotator_model)
        if self.deferred_accept_confidence is not None:
            set_(self, "deferred_accept_confidence",
                 _real(self.deferred_accept_confidence, "program.deferred_accept_confidence", 0.0, 1.0))
            if self.deferred_accept_confidence == 0.0:
                raise config_error("program.deferred_accept_confidence", "a probability in (0, 1] or null", 0.0)
        if self.max_fit_items is not None:
            _int(self.max_fit_items, "program.max_fit_items", 100)
        _int(self.seed, "program.seed", 0)
        _check_currency(self.currency)
        if self.value_per_error_removed is not None:
            set_(self, "value_per_error_removed",
                 _real(self.value_per_error_removed, "program.value_per_error_removed", 0.0))
        for name, kind in (("crowd", CrowdConfig), ("thresholds", RoutingThresholds), ("gate", QualityGate),
                           ("tracking", TrackingConfig), ("model", ModelConfig), ("live", LiveConfig),
                           ("drift", DriftConfig)):
            if not isinstance(getattr(self, name), kind):
                raise config_error(name, f"a {kind.__name__}", getattr(self, name))
        _text(self.store_url, "store.url")
        serve = _text(self.serve, "serve.url")
        if serve not in (IN_PROCESS, LOCAL) and not serve.startswith(("http://", "https://")):
            raise config_error("serve.url", f"{IN_PROCESS!r}, {LOCAL!r} or an http(s):// URL", serve)
        if isinstance(self.strategies, (str, bytes)) or not hasattr(self.strategies, "__iter__"):
            raise config_error("compare.strategies", "a list of strategies", self.strategies)
        chosen = tuple(_choice(Strategy, s, f"compare.strategies[{i}]") for i, s in enumerate(self.strategies))
        if not chosen or len(set(chosen)) != len(chosen):
            raise config_error("compare.strategies", "a non-empty list of distinct strategies", list(self.strategies))
        set_(self, "strategies", chosen)
        self._check_drift_scenario()
        if not isinstance(self.guidance, GuidanceConfig):
            raise config_error("guidance", "a GuidanceConfig", self.guidance)
        if self.guidance.publish_round is not None and self.guidance.publish_round > self.rounds:
            raise config_error("guidance.publish_round", f"a round in 1..program.rounds ({self.rounds})",
                               self.guidance.publish_round)
        if self.dataset is Dataset.DIGITS and self.crowd.replay:
            raise config_error("crowd.tiers", "tier counts for digits (only music_genre has a real crowd to replay)", REPLAY)

    def _check_drift_scenario(self) -> None:
        object.__setattr__(self, "drift_scenario", _choice(DriftScenario, self.drift_scenario, "program.drift_scenario"))
        _int(self.drift_onset_round, "program.drift_onset_round", 1)
        if self.drift_scenario is not DriftScenario.NONE and self.dataset is not Dataset.DIGITS:
            raise config_error("program.drift_scenario", "'none' on this dataset (the simulated drift scenarios "
                               "are built on digits)", self.drift_scenario.value)
        if self.drift_scenario is not DriftScenario.NONE and self.drift_onset_round > self.rounds:
            raise config_error("program.drift_onset_round", f"a round in [1, program.rounds={self.rounds}]",
                               self.drift_onset_round)

    @property
    def simulation_model(self) -> str:
        """The registered model a simulated program publishes to (and a local Serve app serves).

        ``tracking.registered_model`` on a built-in world; on a team's table
        ``<registered_model>-simulation``: a simulation trains on the items with gold, the ones
        ``labelloop retrain`` judges models on, so its models must never become the team's
        champion.
        """
        name = self.tracking.registered_model
        return name if self.table is None else f"{name}-simulation"

    @property
    def table(self) -> TableDataset | None:
        """The team's own table, or None on a built-in world."""
        return self.dataset if isinstance(self.dataset, TableDataset) else None

    def replace(self, **changes: Any) -> ProgramConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The config as YAML sections; :func:`parse_config` reads it back."""
        return {
            "program": {"name": self.name,
                        "dataset": self.table.to_dict() if self.table else self.dataset.value,
                        "annotations": self.annotations, "rounds": self.rounds,
                        "items_per_round": self.items_per_round, "budget_per_round": self.budget_per_round,
                        "strategy": self.strategy.value, "audit_rate": self.audit_rate,
                        "audit_scope": self.audit_scope.value, "calibration_items": self.calibration_items,
                        "holdout_items": self.holdout_items, "annotator_model": self.annotator_model,
                        "deferred_accept_confidence": self.deferred_accept_confidence,
                        "max_fit_items": self.max_fit_items,
                        "seed": self.seed, "currency": self.currency,
                        "value_per_error_removed": self.value_per_error_removed,
                        "drift_scenario": self.drift_scenario.value,
                        "drift_onset_round": self.drift_onset_round},
            "crowd": {"tiers": self.crowd.tiers if self.crowd.replay else dict(self.crowd.tiers),
                      "experts": self.crowd.experts},
            "thresholds": self.thresholds.to_dict(),
            "gate": self.gate.to_dict(),
            "tracking": dataclasses.asdict(self.tracking),
            "store": {"url": self.store_url},
            "serve": {"url": self.serve},
            "compare": {"strategies": [s.value for s in self.strategies]},
            "model": self.model.to_dict(),
            "live": dataclasses.asdict(self.live),
            "drift": dataclasses.asdict(self.drift),
            "guidance": dataclasses.asdict(self.guidance),
        }


_PROGRAM_KEYS = ("name", "dataset", "annotations", "rounds", "items_per_round", "budget_per_round", "strategy", "audit_rate",
                 "audit_scope", "calibration_items", "holdout_items", "annotator_model", "deferred_accept_confidence",
                 "max_fit_items", "seed",
                 "currency", "value_per_error_removed", "drift_scenario", "drift_onset_round")


def _section(raw: Mapping[str, Any], name: str, keys: tuple[str, ...] | None) -> dict[str, Any]:
    value = raw.get(name, {})
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise config_error(name, "a mapping", value)
    if keys is not None:
        for key in value:
            if key not in keys:
                raise ConfigError(f"{name}.{key}: unknown key; expected one of {list(keys)}")
    return dict(value)


def parse_config(raw: Mapping[str, Any] | None, *, ignore: tuple[str, ...] = ()) -> ProgramConfig:
    """Validate a parsed YAML mapping into a :class:`ProgramConfig`.

    Parameters
    ----------
    raw : mapping or None
        Sections as in the module docstring; None or {} gives the defaults.
    ignore : tuple of str
        Extra top-level sections to accept without reading (e.g. ``("tune",)`` for a
        command that reads its own section).

    Raises
    ------
    ConfigError
        Naming the first wrong key or value.
    """
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise config_error("config", "a mapping of sections", raw)
    for key in raw:
        if key not in SECTIONS and key not in ignore:
            raise ConfigError(f"{key}: unknown section; expected one of {list(SECTIONS + tuple(ignore))}")
    program = _section(raw, "program", _PROGRAM_KEYS)
    crowd = _section(raw, "crowd", ("tiers", "experts"))
    thresholds = _section(raw, "thresholds", None)
    gate = _section(raw, "gate", None)
    tracking = _section(raw, "tracking", ("uri", "experiment", "registered_model"))
    store = _section(raw, "store", ("url",))
    serve = _section(raw, "serve", ("url",))
    compare = _section(raw, "compare", ("strategies",))
    model = _section(raw, "model", ("estimator", "params", "uri", "allow_pickle"))
    live = _section(raw, "live", _LIVE_KEYS)
    drift = _section(raw, "drift", _DRIFT_KEYS)
    kwargs: dict[str, Any] = dict(program)
    if "dataset" in program:
        kwargs["dataset"] = _dataset(program["dataset"])
    kwargs["model"] = ModelConfig(**model)
    kwargs["crowd"] = CrowdConfig(**crowd)
    kwargs["thresholds"] = _wrapped("thresholds", lambda: RoutingThresholds.from_dict(
        thresholds, base=ProgramConfig().thresholds))
    kwargs["gate"] = _wrapped("gate", lambda: QualityGate.from_dict({**ProgramConfig().gate.to_dict(), **gate}))
    kwargs["tracking"] = TrackingConfig(**tracking)
    kwargs["live"] = LiveConfig(**live)
    kwargs["drift"] = DriftConfig(**drift)
    kwargs["guidance"] = GuidanceConfig(**_section(raw, "guidance", _GUIDANCE_KEYS))
    if "url" in store:
        kwargs["store_url"] = store["url"]
    if "url" in serve:
        kwargs["serve"] = serve["url"]
    if "strategies" in compare:
        kwargs["strategies"] = compare["strategies"]
    return ProgramConfig(**kwargs)


def _wrapped(section: str, build: Any) -> Any:
    """Build a library object, re-raising its SchemaError with the config section named."""
    try:
        return build()
    except ConfigError:
        raise
    except SchemaError as exc:
        raise ConfigError(f"{section}: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"{section}: {exc}") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML file into a mapping (empty file: {}); a missing file or bad YAML raises ConfigError."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"config: cannot read {str(path)!r} ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config: {str(path)!r} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise config_error("config", "a mapping of sections", data)
    return data


def load_config(path: str | Path, *, ignore: tuple[str, ...] = ()) -> ProgramConfig:
    """Read and validate a program config file (see :func:`parse_config`)."""
    return parse_config(read_yaml(path), ignore=ignore)


def flatten(cfg: ProgramConfig) -> dict[str, str]:
    """The whole config as flat ``section.key`` -> text, for MLflow params.

    Examples
    --------
    >>> flatten(ProgramConfig())["program.rounds"]
    '4'
    """
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            out[prefix] = str(value)

    walk("", cfg.to_dict())
    return out
