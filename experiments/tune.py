"""``labelloop tune``: search routing thresholds for the cheapest program that meets a target error rate.

The search
----------
Four numbers are tuned: the Router's ``auto_accept_confidence``, ``expert_margin`` and
``double_blind_issue_score`` (:class:`loop.routing.RoutingThresholds`; the other threshold
fields, risk weights, always-human classes and guideline references, stay as the program
config sets them) and the program's ``audit_rate``. Each trial runs the whole program on the
simulator with those values (the in-process scorer, no Ray, no tracking of its own) in each of
``tune.worlds`` simulated worlds (seeds ``program.seed``, ``program.seed + 1``, ...: other
items, initial labels and annotators) and reads two numbers off the results: the mean
annotation ``cost`` and the mean ``error_rate`` of the final labels, as ``tune.objective``
measures it (:func:`measure`): ``simulator``, the true rate (known in simulation);
``estimated``, the upper end of the last audit's 95% interval, never reading the truth, so the
same study runs where only audits say how good the labels are. On one world the objective is
noisy and the "best" values partly luck: the baseline trial of ``configs/tune.yaml`` costs 138
and ends 1.5% wrong with seed 0, 210 and 2.0% with seed 1.

Constraint handling
-------------------
The objective is the cost, minimised; the target error rate is an Optuna constraint, not a
penalty. Each trial calls ``trial.set_constraint("error_rate_excess", error_rate - target)``
(Optuna 5's replacement of the samplers' ``constraints_func``); a trial is feasible when the
excess is <= 0. The TPE sampler then models feasible trials by cost and ranks infeasible ones
by how far they miss, and ``study.best_trial`` is the cheapest *feasible* trial. A penalty
(``cost + weight * excess``) would need a weight in money per error-rate point and could
prefer a cheap trial that misses the target; the constraint never does. The constraint is on
the mean over the worlds: one world of a feasible trial may miss the target (its nested run's
``final_error_rate_max`` says by how much). When no trial meets the target, no Serve config
is written and the result says by how much the closest trial missed.

Storage and resuming
--------------------
The study lives at an RDB storage URL (``sqlite:///optuna.db`` beside ``sqlite:///mlflow.db``
by default; PostgreSQL for a team) and is loaded if it exists, so an interrupted study
resumes: ``trials`` is the number of *completed* trials the study should reach, and a rerun of
the same command runs only the missing ones. Several processes may run one study together
(same storage and study name): each counts the trials the others are running as taken and
stops once the study has ``trials`` trials complete or running (Optuna's
``MaxTrialsCallback``, checked after each trial). Two sessions that start a trial at the same
instant may still both find one trial left: each trial first counts the trials taken with a
lower number, and the one beyond ``trials`` ends at once as PRUNED (user attribute
``surplus``), without a program or an MLflow run, and stops its session. Trials left RUNNING
by a killed process are failed by the storage's heartbeat (after 90 s) and retried once; the
next session marks their MLflow runs KILLED. A failed baseline trial is queued again.

Tracking
--------
One parent MLflow run per study (reopened when the study resumes, or the project run under
``mlflow run``), one nested run per trial with the trial's values as params and, as metrics,
its mean cost and error rate, their min, max and std over the worlds, and the program's
metrics averaged over the worlds. The parent holds the tune settings and the program config
as params and, at the end, the best trial's figures, the trials table and the Serve config.
Both carry the objective (tag ``labelloop.tune_objective``); under ``estimated`` the
constrained value is logged as ``final_error_rate_bound``, never as ``final_error_rate``.
Every name is a constant of :mod:`experiments.tracking`. With ``output``, :func:`main` also
writes the best trial's programs and the trials table as CSV (:mod:`experiments.results`).

Examples
--------
``labelloop tune --config configs/tune.yaml`` is :func:`main`; :func:`run_study` searches any
function of the thresholds (see its example).
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import pandas as pd

from experiments import tracking as T
from experiments.config import ConfigError, ProgramConfig, config_error, parse_config, read_yaml
from loop.routing import RoutingThresholds

__all__ = [
    "Evaluate",
    "Objective",
    "ParamRange",
    "SearchSpace",
    "StudyResult",
    "TrialOutcome",
    "TrialParams",
    "TuneConfig",
    "TuneSettings",
    "best_params",
    "load_tune_config",
    "main",
    "measure",
    "open_study",
    "parse_tune_config",
    "program_objective",
    "run_study",
    "trial_program",
    "world_seeds",
    "write_best_serve_config",
]

# Optuna parameter names, also the trial runs' MLflow params (named in experiments.tracking).
THRESHOLD_PARAMS = T.TUNED_THRESHOLDS
AUDIT_RATE = T.TUNED_AUDIT_RATE
TUNED_PARAMS = (*THRESHOLD_PARAMS, AUDIT_RATE)
CONSTRAINT = T.TUNE_ERROR_RATE_EXCESS

# Trial user attributes and study user attributes (read back when the study resumes).
ATTR_COST = "cost"
ATTR_ERROR_RATE = "error_rate"
ATTR_RUN_ID = "mlflow_run_id"
ATTR_BASELINE = "baseline"
ATTR_PARENT_RUN_ID = "mlflow_parent_run_id"
ATTR_TRACKING_URI = "mlflow_tracking_uri"
ATTR_WORLDS = "worlds"
ATTR_OBJECTIVE = "objective"
ATTR_SURPLUS = "surplus"  # a trial one too many, pruned as it started (see "Storage and resuming")

# Heartbeat of the RDB storage: a trial whose process died is failed after the grace period
# and retried once, so killing `labelloop tune` loses at most one trial's work.
HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 90


def _bad(field_name: str, expected: str, got: Any) -> ConfigError:
    return config_error(f"tune.{field_name}", expected, got)


def _unit_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= 1:
        raise _bad(name, "a number in [0, 1]", value)
    return float(value)


@dataclass(frozen=True)
class ParamRange:
    """A closed interval ``[low, high]`` of a tuned value; ``low == high`` fixes the value.

    Parameters
    ----------
    low, high : float in [0, 1]
        The bounds, ``low <= high``.
    name : str
        The field it belongs to, for error messages (``search_space.expert_margin``).
    """

    low: float
    high: float
    name: str = "range"

    def __post_init__(self) -> None:
        low = _unit_float(self.low, f"{self.name}[0]")
        high = _unit_float(self.high, f"{self.name}[1]")
        if low > high:
            raise _bad(self.name, "[low, high] with low <= high", [self.low, self.high])
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @classmethod
    def parse(cls, value: Any, name: str) -> ParamRange:
        """Read ``[low, high]`` (a YAML list) or a single number (a fixed value)."""
        if isinstance(value, ParamRange):
            return cls(value.low, value.high, name)
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return cls(value[0], value[1], name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cls(value, value, name)
        raise _bad(name, "[low, high] or a single number", value)


def _default_range(name: str, low: float, high: float) -> Callable[[], ParamRange]:
    return lambda: ParamRange(low, high, f"search_space.{name}")


@dataclass(frozen=True)
class SearchSpace:
    """Where each tuned value is searched (uniformly, between its bounds).

    ``auto_accept_confidence`` must stay > 0 (``RoutingThresholds`` refuses 0).
    """

    auto_accept_confidence: ParamRange = field(default_factory=_default_range("auto_accept_confidence", 0.80, 0.999))
    expert_margin: ParamRange = field(default_factory=_default_range("expert_margin", 0.0, 0.40))
    double_blind_issue_score: ParamRange = field(default_factory=_default_range("double_blind_issue_score", 0.50, 0.99))
    audit_rate: ParamRange = field(default_factory=_default_range("audit_rate", 0.0, 0.10))

    def __post_init__(self) -> None:
        for name in TUNED_PARAMS:
            object.__setattr__(self, name, ParamRange.parse(getattr(self, name), f"search_space.{name}"))
        if self.auto_accept_confidence.low <= 0:
            raise _bad("search_space.auto_accept_confidence", "a range above 0",
                       [self.auto_accept_confidence.low, self.auto_accept_confidence.high])

    @classmethod
    def from_dict(cls, config: Mapping[str, Any] | None) -> SearchSpace:
        """Build from ``{name: [low, high] | value}``; unknown names are refused."""
        config = {} if config is None else config
        if not isinstance(config, Mapping):
            raise _bad("search_space", "a mapping of tuned value -> [low, high]", config)
        unknown = sorted(map(str, set(config) - set(TUNED_PARAMS)))
        if unknown:
            raise _bad(f"search_space.{unknown[0]}", f"one of {list(TUNED_PARAMS)}", unknown[0])
        return cls(**{k: ParamRange.parse(v, f"search_space.{k}") for k, v in config.items()})

    def to_dict(self) -> dict[str, list[float]]:
        return {name: [getattr(self, name).low, getattr(self, name).high] for name in TUNED_PARAMS}

    def suggest(self, trial: Any) -> dict[str, float]:
        """Ask an Optuna trial for one value of each tuned parameter (fixed ranges are not asked)."""
        values = {}
        for name in TUNED_PARAMS:
            r = getattr(self, name)
            values[name] = r.low if r.low == r.high else trial.suggest_float(name, r.low, r.high)
        return values


class Objective(str, Enum):
    """What a trial's constrained error rate is (``tune.objective``; see :func:`measure`).

    ``simulator``: the true error rate of the final labels, known only in simulation.
    ``estimated``: the audits' upper 95% bound on it, read off the program's rounds as a team
    without truth would (1 when the last round had no audit): the trial never reads the truth.
    """

    SIMULATOR = "simulator"
    ESTIMATED = "estimated"

    def __str__(self) -> str:
        return self.value

    @property
    def error_rate_names(self) -> tuple[str, str, str, str]:
        """MLflow names of the constrained value: mean, min, max and std over the worlds."""
        if self is Objective.SIMULATOR:
            return T.TUNE_ERROR_RATE, T.TUNE_ERROR_RATE_MIN, T.TUNE_ERROR_RATE_MAX, T.TUNE_ERROR_RATE_STD
        return T.TUNE_ERROR_RATE_BOUND, T.TUNE_ERROR_RATE_BOUND_MIN, T.TUNE_ERROR_RATE_BOUND_MAX, \
            T.TUNE_ERROR_RATE_BOUND_STD

    @property
    def best_error_rate_name(self) -> str:
        """MLflow name of the best trial's constrained value on the study's parent run."""
        return T.TUNE_BEST_ERROR_RATE if self is Objective.SIMULATOR else T.TUNE_BEST_ERROR_RATE_BOUND


@dataclass(frozen=True)
class TuneSettings:
    """How ``labelloop tune`` searches (the ``tune:`` section of a tune config).

    Parameters
    ----------
    trials : int >= 1, default=20
        Completed trials the study should reach; a resumed study runs only the missing ones,
        and sessions sharing the storage stop once the study has this many trials complete or
        running.
    worlds : int >= 1, default=3
        Simulated worlds each trial runs the program on (world ``i`` seeded with
        ``program.seed + i``): the cost and error rate of a trial are means over them, so the
        best values are less the luck of one world. Each world costs one program run a trial.
        A study keeps the number it started with (its means would not compare otherwise).
    target_error_rate : float in [0, 1], default=0.02
        Largest acceptable error rate of the final labels (as ``objective`` measures it).
    objective : {"simulator", "estimated"}, default="simulator"
        What the target constrains (:class:`Objective`): the true final error rate, or the
        audits' upper 95% bound on it (the same study where only audits say how good the labels
        are). A study keeps the objective it started with.
    storage : str, default="sqlite:///optuna.db"
        Optuna RDB storage URL: SQLite or PostgreSQL (``postgresql://`` uses psycopg 3, as the
        label store does).
    study_name : str, default="labelloop-tune"
        The study to create or resume in ``storage``.
    serve_config : str, default="serve_config.yaml"
        Where the best thresholds are written as a Serve config.
    seed : int, default=0
        Seed of the TPE sampler (offset by the number of trials already in the study, so a
        resumed study does not replay its first random trials).
    search_space : SearchSpace
        Where each tuned value is searched.
    """

    trials: int = 20
    worlds: int = 3
    target_error_rate: float = 0.02
    objective: Objective = Objective.SIMULATOR
    storage: str = "sqlite:///optuna.db"
    study_name: str = "labelloop-tune"
    serve_config: str = "serve_config.yaml"
    seed: int = 0
    search_space: SearchSpace = field(default_factory=SearchSpace)

    def __post_init__(self) -> None:
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise _bad("trials", "an integer >= 1", self.trials)
        if isinstance(self.worlds, bool) or not isinstance(self.worlds, int) or self.worlds < 1:
            raise _bad("worlds", "an integer >= 1", self.worlds)
        object.__setattr__(self, "target_error_rate", _unit_float(self.target_error_rate, "target_error_rate"))
        try:
            object.__setattr__(self, "objective", Objective(self.objective))
        except ValueError:
            raise _bad("objective", f"one of {[o.value for o in Objective]}", self.objective) from None
        for name in ("storage", "study_name", "serve_config"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise _bad(name, "a non-empty string", value)
        from loop.store import normalize_url

        try:
            normalize_url(self.storage)
        except ValueError:
            raise _bad("storage", "a database URL such as sqlite:///optuna.db or postgresql://user@host/db",
                       self.storage) from None
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise _bad("seed", "an integer >= 0", self.seed)
        if isinstance(self.search_space, Mapping):
            object.__setattr__(self, "search_space", SearchSpace.from_dict(self.search_space))
        elif not isinstance(self.search_space, SearchSpace):
            raise _bad("search_space", "a mapping of tuned value -> [low, high]", self.search_space)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any] | None) -> TuneSettings:
        """Build from the ``tune:`` mapping of a YAML file; unknown keys are refused."""
        config = {} if config is None else config
        if not isinstance(config, Mapping):
            raise ConfigError(f"tune: expected a mapping of settings, got {config!r}")
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(map(str, set(config) - set(valid)))
        if unknown:
            raise ConfigError(f"tune.{unknown[0]}: unknown key; expected one of {valid}")
        return cls(**config)

    def to_params(self) -> dict[str, Any]:
        """Flat MLflow params (``tune.trials`` is left out: it changes when a study is extended)."""
        params = {f"tune.{f.name}": str(getattr(self, f.name)) for f in dataclasses.fields(self)
                  if f.name not in ("trials", "search_space")}
        for name, (low, high) in self.search_space.to_dict().items():
            params[f"tune.search_space.{name}"] = f"[{low}, {high}]"
        return params


@dataclass(frozen=True)
class TuneConfig:
    """A tune config file: the program config the trials run, and the ``tune:`` section."""

    program: ProgramConfig = field(default_factory=ProgramConfig)
    tune: TuneSettings = field(default_factory=TuneSettings)

    def with_trials(self, trials: int) -> TuneConfig:
        """A copy whose study should reach ``trials`` completed trials."""
        return dataclasses.replace(self, tune=dataclasses.replace(self.tune, trials=trials))


def parse_tune_config(raw: Mapping[str, Any] | None) -> TuneConfig:
    """Validate a parsed YAML mapping: the program sections and a ``tune:`` section.

    Raises
    ------
    ConfigError
        Naming the first wrong key or value (``tune.trials: expected an integer >= 1, got 0``).

    Examples
    --------
    >>> parse_tune_config({"program": {"rounds": 2}, "tune": {"trials": 5}}).tune.trials
    5
    """
    program = parse_config(raw, ignore=("tune",))
    return TuneConfig(program=program, tune=TuneSettings.from_dict((raw or {}).get("tune")))


def load_tune_config(path: str | Path) -> TuneConfig:
    """Read and validate a tune config file (see :func:`parse_tune_config`)."""
    return parse_tune_config(read_yaml(path))


@dataclass(frozen=True)
class TrialParams:
    """The values one trial runs the program with."""

    thresholds: RoutingThresholds
    audit_rate: float

    def to_dict(self) -> dict[str, float]:
        values = {name: getattr(self.thresholds, name) for name in THRESHOLD_PARAMS}
        values[AUDIT_RATE] = self.audit_rate
        return values


@dataclass(frozen=True)
class TrialOutcome:
    """What one trial measured: the objective, the constrained value and any other metrics.

    Parameters
    ----------
    cost : float >= 0
        Annotation cost of the program (the objective, minimised).
    error_rate : float in [0, 1]
        Error rate of the final labels, true or estimated (the constrained value; see :class:`Objective`).
    metrics : mapping of str -> float, default={}
        Other figures to log on the trial's MLflow run (names as in :mod:`experiments.tracking`).
    """

    cost: float
    error_rate: float
    metrics: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("cost", "error_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"TrialOutcome.{name}: expected a finite number >= 0, got {value!r}")
        object.__setattr__(self, "cost", float(self.cost))
        object.__setattr__(self, "error_rate", float(self.error_rate))

    @classmethod
    def mean(cls, outcomes: Sequence[TrialOutcome], *,
             objective: Objective = Objective.SIMULATOR) -> TrialOutcome:
        """One trial measured on several worlds: the means, and how far the worlds spread.

        Cost and error rate are the means over ``outcomes`` (the objective and the constrained
        value); the metrics are the mean of each metric every outcome has, plus the min, max
        and population std of cost and error rate over the worlds
        (``experiments.tracking.TUNE_COST_MIN`` ...; the error rate's under the names of
        ``objective``, :attr:`Objective.error_rate_names`).

        Examples
        --------
        >>> m = TrialOutcome.mean([TrialOutcome(cost=10, error_rate=0.01), TrialOutcome(cost=30, error_rate=0.03)])
        >>> m.cost, round(m.error_rate, 6), m.metrics["objective_cost_max"], m.metrics["objective_cost_std"]
        (20.0, 0.02, 30.0, 10.0)
        """
        if not outcomes:
            raise ValueError("outcomes: expected at least one TrialOutcome, got none")
        costs = [o.cost for o in outcomes]
        errors = [o.error_rate for o in outcomes]
        shared = set.intersection(*(set(o.metrics) for o in outcomes))
        metrics = {name: statistics.fmean(float(o.metrics[name]) for o in outcomes) for name in sorted(shared)}
        for values, low, high, std in ((costs, T.TUNE_COST_MIN, T.TUNE_COST_MAX, T.TUNE_COST_STD),
                                       (errors, *Objective(objective).error_rate_names[1:])):
            metrics |= {low: min(values), high: max(values), std: statistics.pstdev(values)}
        return cls(cost=statistics.fmean(costs), error_rate=statistics.fmean(errors), metrics=metrics)


Evaluate = Callable[[TrialParams], TrialOutcome]
"""One trial: run the program with these values on the simulator and measure it."""


@dataclass(frozen=True)
class StudyResult:
    """Where a study stands after a session.

    Attributes
    ----------
    study_name, storage : str
        The Optuna study and its storage URL.
    trials : DataFrame
        One row per trial of the whole study: ``number, state, program_cost, error_rate,
        feasible, mlflow_run_id`` and one column per tuned value (``program_cost`` is the mean over
        the worlds of the programs' cost beyond the initial labels, as every run names it).
    best : TrialParams or None
        Values of the cheapest feasible trial; None when no trial meets the target.
    best_number : int or None
        Its trial number.
    best_cost, best_error_rate : float
        Its figures (NaN when there is none); the error rate as ``objective`` measures it.
    closest_excess : float
        The smallest ``error_rate - target`` of any completed trial (<= 0 when one is feasible).
    n_new : int
        Trials run in this session.
    parent_run_id : str or None
        The parent MLflow run (None when tracking was off).
    serve_config : Path or None
        The Serve config the best values were written to (None when none was written).
    objective : Objective
        What ``error_rate`` and ``best_error_rate`` are (``tune.objective``).
    """

    study_name: str
    storage: str
    trials: pd.DataFrame
    best: TrialParams | None
    best_number: int | None
    best_cost: float
    best_error_rate: float
    closest_excess: float
    n_new: int
    parent_run_id: str | None
    serve_config: Path | None = None
    objective: Objective = Objective.SIMULATOR

    @property
    def n_complete(self) -> int:
        return int((self.trials["state"] == "COMPLETE").sum()) if len(self.trials) else 0

    @property
    def n_feasible(self) -> int:
        return int(self.trials["feasible"].fillna(False).astype(bool).sum()) if len(self.trials) else 0


def open_study(settings: TuneSettings, *, heartbeat: bool = True) -> Any:
    """Create the study in ``settings.storage`` or load it if it exists.

    Returns
    -------
    optuna.Study
        A minimising single-objective study with a seeded TPE sampler.
    """
    import optuna

    from loop.store import normalize_url

    # The label store's rule: postgresql:// means psycopg 3, the driver labelloop ships with.
    url = normalize_url(settings.storage)
    # An in-memory SQLite database lives in one connection; the heartbeat thread would open another.
    in_memory = url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")
    with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            url.render_as_string(hide_password=False),
            **(dict(heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
               if heartbeat and not in_memory else {}),
        )
    # Peek at the study size first so the sampler's seed moves on with the study.
    existing = 0
    try:
        existing = len(optuna.load_study(study_name=settings.study_name, storage=storage).trials)
    except KeyError:
        pass
    sampler = optuna.samplers.TPESampler(seed=settings.seed + existing)
    return optuna.create_study(storage=storage, study_name=settings.study_name, direction="minimize",
                               sampler=sampler, load_if_exists=True)


def best_params(study: Any, base: RoutingThresholds) -> TrialParams | None:
    """The values of the cheapest feasible trial of ``study`` on top of ``base``; None if none."""
    try:
        trial = study.best_trial
    except ValueError:  # no completed trial, or none feasible
        return None
    if any(v > 0 for v in trial.constraints.values()):
        return None
    return _params_of(trial.params, base, trial.user_attrs)


def _params_of(values: Mapping[str, float], base: RoutingThresholds, attrs: Mapping[str, Any]) -> TrialParams:
    # Fixed ranges are not asked of Optuna; the trial keeps them in its user attrs.
    merged = {**{k: attrs[k] for k in TUNED_PARAMS if k in attrs}, **values}
    thresholds = dataclasses.replace(base, **{k: merged[k] for k in THRESHOLD_PARAMS})
    return TrialParams(thresholds=thresholds, audit_rate=float(merged[AUDIT_RATE]))


class _Tracker:
    """The tuner's MLflow runs: a study's parent, a nested run per trial (all through the one writer)."""

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        # Under `mlflow run`, the project run is the parent and its store is the tracking store.
        self.project_run_id = os.environ.get("MLFLOW_RUN_ID") or None
        if self.project_run_id:
            tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", tracking_uri)
        self.tracking_uri = tracking_uri
        self.writer = T.RunWriter(tracking_uri)
        self.client = self.writer.client
        if self.project_run_id:
            self.experiment_id = self.client.get_run(self.project_run_id).info.experiment_id
        else:
            self.experiment_id = self.writer.experiment_id(experiment)
        self.parent_run_id: str | None = None

    def open_parent(self, study: Any, settings: TuneSettings, params: Mapping[str, Any]) -> str:
        from mlflow.exceptions import MlflowException

        # The writer hides the storage URL's password, as it does for every param and tag.
        tags = {T.TAG_ROLE: T.ROLE_TUNE, T.TAG_STUDY: settings.study_name,
                T.TAG_OPTUNA_STORAGE: settings.storage, T.TAG_TUNE_OBJECTIVE: settings.objective.value}
        candidate = self.project_run_id or self._previous_parent(study)
        if candidate is not None:
            try:
                self.writer.log(candidate, params=params, tags=tags)
                if candidate != self.project_run_id:
                    self.writer.reopen(candidate)
                self.parent_run_id = candidate
            except MlflowException:  # the settings changed (params are immutable): start afresh
                candidate = None
        if candidate is None:
            self.parent_run_id = self.writer.start_run(self.experiment_id, f"tune {settings.study_name}",
                                                       params=params, tags=tags)
        study.set_user_attr(ATTR_PARENT_RUN_ID, self.parent_run_id)
        # Kept to recognise the store when the study resumes; the storage is no place for a password.
        study.set_user_attr(ATTR_TRACKING_URI, T.hide_passwords(self.tracking_uri))
        return self.parent_run_id

    def _previous_parent(self, study: Any) -> str | None:
        from mlflow.exceptions import MlflowException

        run_id = study.user_attrs.get(ATTR_PARENT_RUN_ID)
        if not run_id or study.user_attrs.get(ATTR_TRACKING_URI) not in (T.hide_passwords(self.tracking_uri),
                                                                          self.tracking_uri):
            return None
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return None
        if run.info.lifecycle_stage != "active" or run.info.experiment_id != self.experiment_id:
            return None
        return run_id

    def start_trial(self, number: int, values: Mapping[str, float], settings: TuneSettings) -> str:
        return self.writer.start_run(
            self.experiment_id, f"trial {number}", parent_run_id=self.parent_run_id,
            params={T.TRIAL_NUMBER: number, **values},
            tags={T.TAG_ROLE: T.ROLE_TUNE_TRIAL, T.TAG_STUDY: settings.study_name, T.TAG_TRIAL: str(number),
                  T.TAG_TUNE_OBJECTIVE: settings.objective.value})

    def end_trial(self, run_id: str, metrics: Mapping[str, float] | None, *, failed: bool = False) -> None:
        if metrics:
            self.writer.log(run_id, metrics=metrics)
        self.writer.finish(run_id, failed=failed)

    def close_parent(self, result: StudyResult, serve_config: Path | None, *, failed: bool = False) -> None:
        if self.parent_run_id is None:
            return
        metrics = {T.TUNE_TRIALS_COMPLETE: result.n_complete, T.TUNE_TRIALS_FEASIBLE: result.n_feasible}
        if result.best is not None:
            metrics |= {T.TUNE_BEST_COST: result.best_cost,
                        result.objective.best_error_rate_name: result.best_error_rate}
            metrics |= {T.tune_best_value(k): v for k, v in result.best.to_dict().items()}
        self.writer.log(self.parent_run_id, metrics=metrics)
        self.writer.log_table(self.parent_run_id, result.trials, T.TRIALS_CSV)
        if serve_config is not None:
            self.writer.log_artifact(self.parent_run_id, str(serve_config))
        self._close_orphans(result.trials)
        if self.parent_run_id != self.project_run_id:  # `mlflow run` ends its own run
            self.writer.finish(self.parent_run_id, failed=failed)

    def _close_orphans(self, trials: pd.DataFrame) -> None:
        """Mark KILLED the runs of trials whose process died (the heartbeat failed them)."""
        from mlflow.exceptions import MlflowException

        for run_id in trials.loc[(trials["state"] == "FAIL") & trials["mlflow_run_id"].notna(), "mlflow_run_id"]:
            try:
                if self.client.get_run(run_id).info.status == "RUNNING":
                    self.writer.finish(run_id, status="KILLED")
            except MlflowException:  # a run of another tracking store, or deleted
                continue


def run_study(evaluate: Evaluate, settings: TuneSettings, *, base_thresholds: RoutingThresholds | None = None,
              base_audit_rate: float = 0.0, tracking_uri: str | None = None,
              experiment: str = "labelloop-tune", params: Mapping[str, Any] | None = None,
              write_best: Callable[[TrialParams], Path] | None = None,
              on_trial: Callable[[int, int, TrialOutcome], None] | None = None,
              heartbeat: bool = True) -> StudyResult:
    """Run (or resume) the study until it has ``settings.trials`` completed trials.

    Other sessions may run the same study at the same time (several ``labelloop tune``
    processes on one RDB storage): this session runs at most the trials missing when it
    starts, counting those other sessions are running as taken, and stops once the study has
    ``settings.trials`` trials complete or running. Trials of a killed process count as
    running until the storage's heartbeat fails them (``GRACE_SECONDS``); they are retried.

    Parameters
    ----------
    evaluate : callable TrialParams -> TrialOutcome
        One trial: run the program with these values and measure cost and final error rate.
        An exception stops the session (the trial is marked failed; a rerun resumes).
    settings : TuneSettings
        Trials, target, storage, search space, seed.
    base_thresholds : RoutingThresholds, optional
        The thresholds whose three numeric cut-offs the tuned values replace (risk weights,
        always-human classes and guideline references are kept). Default
        ``RoutingThresholds()``. On a new study the first trial runs these values and
        ``base_audit_rate`` (clipped into the search space): the baseline (queued again by the
        next session if it failed).
    base_audit_rate : float, default=0.0
        The configured audit rate, the baseline's fourth value.
    tracking_uri : str, optional
        MLflow tracking URI of the parent and trial runs; None turns tracking off.
    experiment : str, default="labelloop-tune"
        MLflow experiment of the runs (under ``mlflow run``, the project run's experiment).
    params : mapping, optional
        Extra params of the parent run (the program config, flattened).
    write_best : callable TrialParams -> Path, optional
        Writes the best values somewhere (a Serve config) when a trial meets the target; the
        file is logged on the parent run.
    on_trial : callable (done, total, outcome) -> None, optional
        Called after each completed trial of this session (for a progress bar); ``total`` is
        the most this session will run.
    heartbeat : bool, default=True
        Whether the storage keeps a heartbeat (fails and retries trials of dead processes).

    Returns
    -------
    StudyResult

    Examples
    --------
    >>> def evaluate(p):
    ...     a = p.thresholds.auto_accept_confidence
    ...     return TrialOutcome(cost=100 * (1 - a) ** -0.5, error_rate=0.3 * (1 - a))
    >>> res = run_study(evaluate, TuneSettings(trials=8, storage="sqlite://"))
    >>> res.n_complete, bool(res.best_error_rate <= 0.02)
    (8, True)
    """
    base = base_thresholds if base_thresholds is not None else RoutingThresholds()
    import optuna

    study = open_study(settings, heartbeat=heartbeat)
    _check_kept(study, settings)
    # Trials other sessions are running count as taken, or parallel sessions would overshoot.
    to_run = max(0, settings.trials - _n_taken(study))
    if to_run and not _has_baseline(study):
        study.enqueue_trial(_clip_to_space(base, base_audit_rate, settings), user_attrs={ATTR_BASELINE: True})
    tracker = _Tracker(tracking_uri, experiment) if tracking_uri is not None else None
    if tracker is not None:
        tracker.open_parent(study, settings, {**settings.to_params(), **(params or {})})
    n_done = 0

    def objective(trial: Any) -> float:
        nonlocal n_done
        if _surplus(study, trial.number, settings.trials):
            trial.set_user_attr(ATTR_SURPLUS, True)
            study.stop()
            raise optuna.TrialPruned(f"the study had its {settings.trials} trials when trial {trial.number} started")
        values = settings.search_space.suggest(trial)
        for name, value in values.items():  # fixed values too, so every trial shows all four
            trial.set_user_attr(name, value)
        run_id = tracker.start_trial(trial.number, values, settings) if tracker else None
        if run_id:
            trial.set_user_attr(ATTR_RUN_ID, run_id)
        try:
            outcome = evaluate(_params_of(values, base, {}))
        except BaseException:
            if run_id:
                tracker.end_trial(run_id, None, failed=True)
            raise
        excess = outcome.error_rate - settings.target_error_rate
        trial.set_constraint(CONSTRAINT, excess)
        trial.set_user_attr(ATTR_COST, outcome.cost)
        trial.set_user_attr(ATTR_ERROR_RATE, outcome.error_rate)
        if run_id:
            tracker.end_trial(run_id, {
                **{k: float(v) for k, v in outcome.metrics.items()},
                T.TUNE_COST: outcome.cost, settings.objective.error_rate_names[0]: outcome.error_rate,
                T.TUNE_ERROR_RATE_EXCESS: excess, T.TUNE_FEASIBLE: float(excess <= 0)})
        n_done += 1
        if on_trial:
            on_trial(n_done, to_run, outcome)
        return outcome.cost

    # Checked after each trial: a session stops early when others took the remaining trials.
    stop_when_taken = optuna.study.MaxTrialsCallback(settings.trials, states=_taken_states())
    try:
        if to_run:
            study.optimize(objective, n_trials=to_run, callbacks=[stop_when_taken])
        result = _result(study, settings, base, n_new=n_done,
                         parent_run_id=tracker.parent_run_id if tracker else None)
        if result.best is not None and write_best is not None:
            result = dataclasses.replace(result, serve_config=Path(write_best(result.best)))
    except BaseException:
        if tracker is not None:
            tracker.close_parent(_result(study, settings, base, n_new=0, parent_run_id=tracker.parent_run_id),
                                 None, failed=True)
        raise
    if tracker is not None:
        tracker.close_parent(result, result.serve_config)
    return result


def _check_kept(study: Any, settings: TuneSettings) -> None:
    """Refuse to mix trials measured differently in one study: on different numbers of worlds
    (their means are not comparable) or against another objective (a true rate and an audit
    bound are not one constraint). A study records both at its first session; one from before
    ``tune.objective`` existed was tuned on the simulator."""
    older = Objective.SIMULATOR.value if study.trials else None
    for attr, name, value, default in ((ATTR_WORLDS, "worlds", settings.worlds, None),
                                       (ATTR_OBJECTIVE, "objective", settings.objective.value, older)):
        ran_on = study.user_attrs.get(attr, default)
        if ran_on is None:
            study.set_user_attr(attr, value)
        elif ran_on != value:
            raise _bad(name, f"{ran_on}, the {name} of study {settings.study_name!r} (another study_name starts "
                             "a new study)", value)
        elif attr not in study.user_attrs:
            study.set_user_attr(attr, value)


def _has_baseline(study: Any) -> bool:
    """Whether the baseline trial is done, queued or running (a failed one is queued again)."""
    import optuna

    live = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING)
    return any(t.user_attrs.get(ATTR_BASELINE) for t in study.get_trials(deepcopy=False, states=live))


def _taken_states() -> tuple[Any, ...]:
    """The trials that count towards ``tune.trials``: done, or being run by some session.

    Failed trials do not (the study runs them again); waiting ones (the baseline, a retried
    trial) are the next trial some session starts.
    """
    import optuna

    return optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING


def _n_taken(study: Any) -> int:
    return len(study.get_trials(deepcopy=False, states=_taken_states()))


def _surplus(study: Any, number: int, trials: int) -> bool:
    """Whether trial ``number`` is one too many: the trials taken with lower numbers (trial
    numbers grow with the order in which sessions ask the storage for them) already make
    ``trials``. Of two sessions racing for the last trial, exactly the later one finds this."""
    taken = study.get_trials(deepcopy=False, states=_taken_states())
    return sum(t.number < number for t in taken) >= trials


def _clip_to_space(base: RoutingThresholds, audit_rate: float, settings: TuneSettings) -> dict[str, float]:
    values = {**{k: getattr(base, k) for k in THRESHOLD_PARAMS}, AUDIT_RATE: audit_rate}
    space = settings.search_space
    return {k: min(max(v, getattr(space, k).low), getattr(space, k).high) for k, v in values.items()
            if getattr(space, k).low < getattr(space, k).high}


def _result(study: Any, settings: TuneSettings, base: RoutingThresholds, *, n_new: int,
            parent_run_id: str | None) -> StudyResult:
    rows = []
    for t in study.get_trials(deepcopy=False):
        excess = t.constraints.get(CONSTRAINT)
        rows.append({
            "number": t.number, "state": t.state.name,
            **{k: t.params.get(k, t.user_attrs.get(k)) for k in TUNED_PARAMS},
            T.PROGRAM_COST: t.user_attrs.get(ATTR_COST), "error_rate": t.user_attrs.get(ATTR_ERROR_RATE),
            "feasible": None if excess is None else bool(excess <= 0),
            "mlflow_run_id": t.user_attrs.get(ATTR_RUN_ID),
        })
    columns = ["number", "state", *TUNED_PARAMS, T.PROGRAM_COST, "error_rate", "feasible", "mlflow_run_id"]
    trials = pd.DataFrame(rows, columns=columns)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    excesses = [t.constraints.get(CONSTRAINT, math.inf) for t in complete]
    best = best_params(study, base)
    best_trial = study.best_trial if best is not None else None
    return StudyResult(
        study_name=settings.study_name, storage=settings.storage, trials=trials, best=best,
        best_number=best_trial.number if best_trial else None,
        best_cost=float(best_trial.user_attrs[ATTR_COST]) if best_trial else math.nan,
        best_error_rate=float(best_trial.user_attrs[ATTR_ERROR_RATE]) if best_trial else math.nan,
        closest_excess=min(excesses) if excesses else math.nan,
        n_new=n_new, parent_run_id=parent_run_id, objective=settings.objective,
    )


# --- the program as the objective ------------------------------------------------------------------


def trial_program(program: ProgramConfig) -> ProgramConfig:
    """The program a trial runs: ``program`` with the tiered strategy, in process, untracked.

    Trials run the simulator in this process (no Ray, no HTTP: the in-process scorer runs
    the same ``loop`` code as the Serve app), keep their label store in memory and track in
    memory; the tuner logs each trial as a nested MLflow run itself. Only the ``tiered``
    strategy reads the routing thresholds, so trials run it whatever ``program.strategy`` says.
    """
    from experiments.config import IN_PROCESS, NO_TRACKING, TrackingConfig
    from loop.strategies import Strategy

    return program.replace(strategy=Strategy.TIERED, serve=IN_PROCESS, store_url="sqlite://",
                           tracking=TrackingConfig(uri=NO_TRACKING, experiment=program.tracking.experiment,
                                                   registered_model=program.tracking.registered_model))


def world_seeds(program: ProgramConfig, worlds: int) -> tuple[int, ...]:
    """Seeds of the worlds a trial runs on: ``program.seed``, ``program.seed + 1``, ...

    Examples
    --------
    >>> world_seeds(ProgramConfig(seed=5), 3)
    (5, 6, 7)
    """
    if isinstance(worlds, bool) or not isinstance(worlds, int) or worlds < 1:
        raise ValueError(f"worlds: expected an integer >= 1, got {worlds!r}")
    return tuple(range(program.seed, program.seed + worlds))


def measure(result: Any, objective: Objective = Objective.SIMULATOR) -> TrialOutcome:
    """What a trial reads off one program run: its cost and the error rate ``objective`` constrains.

    The cost is the program's cost beyond the initial labels (strategy work and audits), known
    with or without truth. The error rate:

    ``simulator``
        The true error rate of the final labels; the metrics are the program's final figures
        (:meth:`experiments.program.ProgramResult.metrics`).
    ``estimated``
        The upper bound of the last round's audit estimate (Wilson, 95%) on the error rate of
        the labels, or 1 when that round had no audit (nothing audited bounds nothing). The
        upper bound, not the estimate itself: the tuner minimises cost, and the audit rate is
        one of its values, so against the point estimate it would find that a handful of
        audited items showing no error is the cheapest "feasible" program. Against the bound a
        smaller audit must show a lower error rate to pass. The metrics are the cost and
        :func:`experiments.results.estimated_figures`; nothing here reads the truth.

    Parameters
    ----------
    result : experiments.program.ProgramResult
    objective : Objective or str, default="simulator"

    Returns
    -------
    TrialOutcome
    """
    from experiments.results import estimated_figures

    objective = Objective(objective)
    if objective is Objective.SIMULATOR:
        return TrialOutcome(cost=result.program_cost, error_rate=result.final_error_rate, metrics=result.metrics())
    estimated = estimated_figures(result)
    bound = estimated[T.FINAL_ERROR_RATE_ESTIMATE_CI_HIGH]
    # A figure one world lacks would drop out of the mean over worlds anyway; NaN is not logged.
    metrics = {T.INITIAL_LABELS_COST: result.initial_labels_cost, T.PROGRAM_COST: result.program_cost,
               T.ANNOTATOR_HOURS: result.annotator_hours,
               **{name: value for name, value in estimated.items() if math.isfinite(value)}}
    return TrialOutcome(cost=result.program_cost, error_rate=1.0 if math.isnan(bound) else bound, metrics=metrics)


def program_objective(program: ProgramConfig, *, worlds: int = 1, built: Sequence[Any] | None = None,
                      objective: Objective = Objective.SIMULATOR,
                      keep: Callable[[TrialParams, list[Any]], None] | None = None) -> Evaluate:
    """One trial = one run of ``program`` (see :func:`trial_program`) per world, with the trial's values.

    Parameters
    ----------
    program : ProgramConfig
    worlds : int >= 1, default=1
        Simulated worlds a trial runs on, seeded :func:`world_seeds` (the program of world
        ``i`` runs with that seed too). A world depends on the program's dataset, crowd, sizes
        and seed, never on a trial's values, so each is built at its first use and shared by
        every later trial: trials differ only by their values.
    built : sequence of experiments.world.World, optional
        The worlds already built (``build_world(trial_program(program).replace(seed=s))`` for
        each seed), e.g. shared by several studies.
    objective : Objective or str, default="simulator"
        What a trial's error rate is (:func:`measure`).
    keep : callable (TrialParams, list of ProgramResult) -> None, optional
        Given each trial's programs, one per world (e.g. to write the best trial's rounds).

    Returns
    -------
    callable TrialParams -> TrialOutcome
        :meth:`TrialOutcome.mean` over the worlds of :func:`measure` of each world's program.
    """
    from experiments.program import run_program
    from experiments.tracking import MemoryTracker
    from experiments.world import build_world

    bases = [trial_program(program).replace(seed=seed) for seed in world_seeds(program, worlds)]
    if built is not None and len(built) != len(bases):
        raise ValueError(f"built: expected {len(bases)} worlds (one per seed), got {len(built)}")
    cache: list[Any] = list(built) if built is not None else [None] * len(bases)

    objective = Objective(objective)

    def evaluate(params: TrialParams) -> TrialOutcome:
        results = []
        for i, base in enumerate(bases):
            if cache[i] is None:  # built at the first trial: a finished study needs none
                cache[i] = build_world(base)
            results.append(run_program(base.replace(thresholds=params.thresholds, audit_rate=params.audit_rate),
                                       world=cache[i], tracker=MemoryTracker()))
        if keep is not None:
            keep(params, results)
        return TrialOutcome.mean([measure(r, objective) for r in results], objective=objective)

    return evaluate


def write_best_serve_config(cfg: TuneConfig, best: TrialParams) -> Path:
    """Write ``best.thresholds`` as a Serve config of the program's model (``cfg.tune.serve_config``).

    The app serves ``models:/<tracking.registered_model>@champion`` from ``tracking.uri``;
    the Router starts with the tuned thresholds (``serve deploy <file>`` or
    ``serve run <file>``).
    """
    from serve.args import AppArgs
    from serve.config import write_serve_config
    from serve.local import absolute_sqlite_uri

    from experiments.models import trusted_modules

    tracking, model = cfg.program.tracking, cfg.program.model
    # A relative SQLite path would resolve against wherever `serve deploy` runs: pin it. The
    # model config's trust travels with it: a deployed gradient-boosting champion must load.
    # The deployed app checks bearer tokens in the program's label store (labelloop tokens issue).
    store_url = None if cfg.program.store_url in ("sqlite://", "sqlite:///:memory:") else cfg.program.store_url
    app_args = AppArgs(model_name=tracking.registered_model,
                       tracking_uri=absolute_sqlite_uri(tracking.uri) if tracking.enabled else None,
                       trusted_modules=list(trusted_modules(model)), allow_pickle=model.allow_pickle,
                       store_url=absolute_sqlite_uri(store_url),
                       auth="token")
    path = Path(cfg.tune.serve_config)
    write_serve_config(path, app_args=app_args, thresholds=best.thresholds)
    return path


def main(cfg: TuneConfig, *, console: Any = None, worlds: Sequence[Any] | None = None,
         output: str | os.PathLike[str] | None = None) -> StudyResult:
    """``labelloop tune``: run or resume the study, write the best thresholds, print a summary.

    Parameters
    ----------
    cfg : TuneConfig
    console : rich.console.Console, optional
        Where the progress bar and the summary go; default a new console.
    worlds : sequence of experiments.world.World, optional
        The ``cfg.tune.worlds`` simulated worlds of the trials (see :func:`program_objective`);
        default built from ``cfg.program`` at the first trial.
    output : path, optional
        A directory to write the results to as CSV: ``summary.csv`` and ``rounds.csv`` of the
        best trial's programs, one per world (columns ``trial`` and ``world_seed`` after
        ``strategy``; run again when an earlier session ran that trial; header only when no
        trial meets the target), and ``trials.csv``, the study's trials.

    Returns
    -------
    StudyResult
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from experiments.config import flatten

    console = console if console is not None else Console()
    tracking = cfg.program.tracking
    kept: dict[tuple[tuple[str, float], ...], list[Any]] = {}
    keep = (lambda params, programs: kept.__setitem__(_key(params), programs)) if output is not None else None
    evaluate = program_objective(cfg.program, worlds=cfg.tune.worlds, built=worlds, objective=cfg.tune.objective,
                                 keep=keep)
    best = {"cost": math.inf}
    with Progress(TextColumn("[bold]tune[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as bar:
        task = bar.add_task(cfg.tune.study_name, total=None)

        def on_trial(done: int, total: int, outcome: TrialOutcome) -> None:
            if outcome.error_rate <= cfg.tune.target_error_rate:
                best["cost"] = min(best["cost"], outcome.cost)
            text = "none meets the target yet" if math.isinf(best["cost"]) else f"cheapest so far {best['cost']:.1f}"
            bar.update(task, completed=done, total=total, description=f"{cfg.tune.study_name} ({text} this session)")

        result = run_study(evaluate, cfg.tune, base_thresholds=cfg.program.thresholds,
                           base_audit_rate=cfg.program.audit_rate,
                           tracking_uri=tracking.uri if tracking.enabled else None,
                           experiment=tracking.experiment, params=flatten(cfg.program),
                           write_best=lambda params: write_best_serve_config(cfg, params), on_trial=on_trial)
    _print_summary(console, cfg, result)
    if output is not None:
        written = _write_output(output, cfg, result, evaluate=evaluate, kept=kept)
        console.print(f"Results for scripts: {', '.join(str(p) for p in written)}")
    return result


def _key(params: TrialParams) -> tuple[tuple[str, float], ...]:
    return tuple(sorted(params.to_dict().items()))


def _write_output(directory: str | os.PathLike[str], cfg: TuneConfig, result: StudyResult, *,
                  evaluate: Evaluate, kept: Mapping[tuple[tuple[str, float], ...], list[Any]]) -> list[Path]:
    """Write a study's results to ``directory``: the best trial's programs, and every trial.

    ``summary.csv`` and ``rounds.csv`` (:mod:`experiments.results`) hold the best trial's
    programs, one per world, told apart by the columns ``trial`` and ``world_seed``: the
    programs whose thresholds the Serve config carries, as ``labelloop run`` would write them.
    ``trials.csv`` is the study's table (``StudyResult.trials``: one row per trial, its values,
    mean ``program_cost``, mean ``error_rate`` as ``tune.objective`` measures it, ``feasible``). When an
    earlier session ran the best trial, its programs are run again here (same values, same
    worlds: the same programs); without a feasible trial the two program files have their
    header only.

    Parameters
    ----------
    directory : path
    cfg : TuneConfig
    result : StudyResult
    evaluate : callable TrialParams -> TrialOutcome
        The study's objective, made with ``keep`` filling ``kept``.
    kept : mapping
        The programs of this session's trials by their values (:func:`program_objective`'s ``keep``).
    """
    from experiments import results

    programs: list[Any] = []
    if result.best is not None:
        if _key(result.best) not in kept:
            evaluate(result.best)
        programs = list(kept[_key(result.best)])
    seeds = world_seeds(cfg.program, cfg.tune.worlds)[:len(programs)]
    keys = {"trial": [result.best_number] * len(programs), "world_seed": list(seeds)}
    return results.write_results(directory, programs, keys=keys, extra={T.TRIALS_CSV: result.trials})


def _print_summary(console: Any, cfg: TuneConfig, result: StudyResult) -> None:
    from rich.table import Table

    target = cfg.tune.target_error_rate
    seeds = world_seeds(cfg.program, cfg.tune.worlds)
    over = f"on world seed {seeds[0]}" if len(seeds) == 1 else \
        f"means over {len(seeds)} worlds, seeds {seeds[0]}-{seeds[-1]}"
    console.print(f"Study [bold]{result.study_name}[/] at {T.hide_passwords(result.storage)}: "
                  f"{result.n_complete} trials complete ({result.n_new} this session), "
                  f"{result.n_feasible} meet the target error rate {target:.1%} "
                  f"({'true rate' if result.objective is Objective.SIMULATOR else 'audit bound'}, {over}).")
    if result.best is None:
        console.print(f"[red]No trial meets the target[/]: the closest misses it by "
                      f"{result.closest_excess:.2%}. Run more trials (--trials), widen the search space, "
                      "or relax tune.target_error_rate. No Serve config was written.")
        return
    measured = "final error rate" if result.objective is Objective.SIMULATOR else \
        "audit bound on the final error rate"
    table = Table(title=f"best trial #{result.best_number}: mean cost {result.best_cost:.1f}, "
                        f"mean {measured} {result.best_error_rate:.2%}")
    table.add_column("value")
    table.add_column("configured", justify="right")
    table.add_column("tuned", justify="right")
    configured = {**{k: getattr(cfg.program.thresholds, k) for k in THRESHOLD_PARAMS},
                  AUDIT_RATE: cfg.program.audit_rate}
    for name, value in result.best.to_dict().items():
        table.add_row(name, f"{configured[name]:.4g}", f"{value:.4g}")
    console.print(table)
    console.print(f"Serve config with these thresholds: [bold]{result.serve_config}[/] "
                  f"(deploy: serve deploy {result.serve_config}; on a running app the Router takes them "
                  f"without a redeploy). Set program.audit_rate: {result.best.audit_rate:.4g} in the program config.")
