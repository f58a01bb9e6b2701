"""Tracking: every metric, param, tag and artifact name in one place, the trackers, the plots.

A program logs through a *tracker* port (:class:`Tracker`), so the same program code runs
with MLflow (:class:`MlflowTracker`: runs, metrics with ``step = round``, PNG and CSV
artifacts, models registered with the aliases ``challenger`` and ``champion``) or with none
(:class:`MemoryTracker`: keeps everything in memory, for tests and the tuner). The params,
metrics, tags and artifacts of every run, the program's and the tuner's study and trial runs
alike, go through one :class:`RunWriter`: MLflow's batch and length limits and
URL passwords and secret query values hidden (:func:`loop._redact.redact`), in one place.

The model contract the Serve app relies on: ``mlflow.sklearn`` flavour, ``predict_proba`` as
the pyfunc method, a registered version under an alias.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from loop._redact import redact
from loop.exceptions import LoopError

__all__ = [
    "ALIAS_CHALLENGER", "ALIAS_CHAMPION", "MemoryTracker", "MlflowTracker", "RunWriter", "Tracker",
    "TrackingError", "check_reachable", "draw_error_vs_cost", "hide_passwords", "plot_confusion_matrix",
    "plot_error_vs_cost",
    "plot_reliability", "routed_table_path", "strategy_metric", "tune_best_value",
]

# --- aliases -----------------------------------------------------------------------------
ALIAS_CHAMPION = "champion"
ALIAS_CHALLENGER = "challenger"

# --- per-round metrics (step = round) --------------------------------------------------------
TRUE_ERROR_RATE = "true_error_rate"            # share of arrived items whose label is wrong (simulation truth)
AUDIT_ERROR_RATE = "audit_error_rate"          # estimate from this round's random expert audit
AUDIT_CI_LOW = "audit_error_rate_ci_low"       # 95% Wilson interval
AUDIT_CI_HIGH = "audit_error_rate_ci_high"
AUDIT_N = "audit_items"
MODEL_ACCURACY = "model_accuracy"              # the champion after this round's gate, on held-out gold
MODEL_ECE = "model_ece"
CHALLENGER_ACCURACY = "challenger_accuracy"    # this round's retrained model, on held-out gold
CHALLENGER_ECE = "challenger_ece"
PROMOTED = "promoted"                          # 1 when the gate promoted the challenger
PROGRAM_COST = "program_cost"                  # cumulative cost beyond the initial labels: the one cost figure
ROUND_COST = "round_cost"
BUDGET = "budget"                              # this round's budget, carry-over included
ANNOTATOR_HOURS = "annotator_hours"            # cumulative
ANNOTATIONS = "annotations"                    # cumulative number, initial labels included
AUTO_ACCEPT_RATE = "auto_accept_rate"          # share of this round's new items auto-accepted
AUTO_ACCEPT_ERROR_RATE = "auto_accept_error_rate"  # wrong labels among items auto-accepted this round
ERRORS_FIXED = "errors_fixed"                  # labels wrong before this round, right after
ERRORS_INTRODUCED = "errors_introduced"        # right before, wrong after
ERRORS_REMOVED = "errors_removed"              # cumulative: initial errors of arrived items minus current errors
CORRECTION_FREQUENCY = "correction_frequency"  # share of resolutions that supersede another (store)
KRIPPENDORFF_ALPHA = "krippendorff_alpha"      # inter-annotator agreement on items with >= 2 labels (store)
PERCENT_AGREEMENT = "percent_agreement"
RESOLUTION_HOURS = "disagreement_resolution_hours"  # median simulated hours from first label to resolution
TOP_PAIR_SHARE = "top_confused_pair_share"     # share of estimated label errors in the most confused pair
N_ITEMS = "items"                              # items arrived so far
ACTION_COUNT_PREFIX = "items_"                 # + action name: items per action this round
# Estimated companions of the truth-needing figures above: computed the same way with or without
# truth, never reading it (a live team sees only these). Truth-needing names start true_ or are
# logged only in simulation.
AUTO_ACCEPT_ESTIMATE = "auto_accept_error_rate_estimate"   # audited stratum of auto-accepted labels
AUTO_ACCEPT_ESTIMATE_CI_LOW = "auto_accept_error_rate_estimate_ci_low"
AUTO_ACCEPT_ESTIMATE_CI_HIGH = "auto_accept_error_rate_estimate_ci_high"
ERRORS_FIXED_CONFIRMED = "errors_fixed_confirmed"  # this round's corrections confirmed by adjudication
ERRORS_REMOVED_ESTIMATE = "errors_removed_estimate"  # cumulative confirmed corrections

# --- labelloop retrain: one run per retraining (step 0) -------------------------------------------
CHAMPION_ACCURACY = "champion_accuracy"        # the champion before the run, on the same evaluation items
CHAMPION_ECE = "champion_ece"                  # (CHALLENGER_ACCURACY, CHALLENGER_ECE and PROMOTED as above)
RETRAIN_TRAINING_ITEMS = "training_items"
RETRAIN_EVALUATION_ITEMS = "evaluation_items"  # items with gold or an expert-confirmed label, less calibration
RETRAIN_CALIBRATION_ITEMS = "calibration_items"
RETRAIN_STREAM = "retrain.stream"              # params beside the config's
RETRAIN_AS_OF = "retrain.as_of"                # the resolution version (or timestamp) the labels were read at

# --- final metrics of a program run and of a comparison --------------------------------------
FINAL_ERROR_RATE = "final_error_rate"
INITIAL_ERROR_RATE = "initial_error_rate"
ERRORS_REMOVED_PER_100 = "errors_removed_per_100_annotations"
FINAL_ERROR_RATE_ESTIMATE = "final_error_rate_estimate"  # the last round's audit_error_rate
FINAL_ERROR_RATE_ESTIMATE_CI_LOW = "final_error_rate_estimate_ci_low"
FINAL_ERROR_RATE_ESTIMATE_CI_HIGH = "final_error_rate_estimate_ci_high"
COST_PER_ERROR_REMOVED = "cost_per_error_removed"  # program_cost / errors_removed
COST_PER_ERROR_REMOVED_ESTIMATE = "cost_per_error_removed_estimate"  # program_cost / errors_removed_estimate
# Neither is logged when no error was removed (or the net count is negative): a ratio to zero
# means nothing, and MLflow's charts draw NaN and inf poorly.
INITIAL_LABELS_COST = "initial_labels_cost"    # what the initial crowd labels cost (not a program's cost)
ROI = "roi"                                    # value_per_error_removed * errors_removed / program_cost
ROI_ESTIMATE = "roi_estimate"                  # the same with errors_removed_estimate (no truth read)

# --- tags --------------------------------------------------------------------------------------
TAG_STRATEGY = "labelloop.strategy"
TAG_DATASET = "labelloop.dataset"
TAG_STREAM = "labelloop.stream"
TAG_ROLE = "labelloop.role"       # what a run is: one of the ROLE_* values
ROLE_PROGRAM = "program"
ROLE_COMPARISON = "comparison"
ROLE_TUNE = "tune"                # a study's parent run
ROLE_TUNE_TRIAL = "tune_trial"    # one trial, nested under it
ROLE_RETRAIN = "retrain"          # a labelloop retrain run
ROLE_ROUND = "program_round"      # one round of a live program (labelloop serve), nested under its run
TAG_ROUND = "labelloop.round"     # that round's number
TAG_GATE_REASON = "labelloop.gate_reason"
TAG_GATE_VERDICT = "labelloop.gate_verdict"  # a retrain run's verdict: one of the VERDICT_* values
VERDICT_PROMOTED = "promoted"
VERDICT_REFUSED = "refused"
TAG_MODEL_VERSION = "labelloop.model_version"  # the registered version a retrain run published
TAG_AUTO_ACCEPT_BOUND = "labelloop.auto_accept_bound"  # why the program last raised the auto-accept cut-off
TAG_LIVE_EXPERIMENT = "labelloop.live_experiment"  # labelloop serve's arms: what its tasks were randomised to
TAG_CURRENCY = "labelloop.currency"            # the unit of every cost figure (program.currency)
TAG_WINNER = "labelloop.winner"                # a comparison's winner (see experiments.compare.winner)
TAG_DESCRIPTION = "mlflow.note.content"        # a run's description in the MLflow UI (markdown)
# Tags of a registered model version a program published.
VERSION_STRATEGY = "strategy"
VERSION_RUN_ID = "run_id"
VERSION_ROUND = "round"
VERSION_GATE_VERDICT = "gate_verdict"          # promoted | refused (VERDICT_*)
VERSION_DATASET = "dataset"
VERSION_WINNER = "comparison_winner"           # "true" on the version a comparison made champion

# --- params beyond the config ------------------------------------------------------------------
PARAM_AUDIT_METHOD = "audit.method"            # how audit_error_rate is estimated
AUTO_ACCEPT_CUTOFF = "auto_accept_cutoff"      # per round: the cut-off the program auto-accepted at

# --- artifacts ---------------------------------------------------------------------------------
ERROR_VS_COST_PNG = "plots/error_rate_vs_cost.png"
RELIABILITY_PNG = "plots/reliability_diagram.png"
CONFUSION_PNG = "plots/confusion_matrix.png"
CONFUSED_PAIRS_CSV = "tables/confused_pairs.csv"
ROUNDS_CSV = "tables/rounds.csv"
# A published guideline version a program routed with, logged once per version per run: its
# text and its examples and addressed pairs (experiments.guidance.log_guideline_version).
TAG_GUIDELINE_VERSION = "guideline_version"   # the versions used, comma-separated, newest last
GUIDELINE_MD = "guidelines/v{version}.md"
GUIDELINE_JSON = "guidelines/v{version}.json"
GUIDELINE_IMPACT_CSV = "tables/guideline_impact.csv"  # accuracy on the addressed pair per window
TAG_GUIDANCE = "labelloop.guidance"                   # what the program published, when, or why not
TAG_GUIDELINE_IMPACT = "labelloop.guideline_impact"   # which version and pair the metrics are, and the reference
# How fast a guideline published during the program raised accuracy on the pair it addresses
# (loop.guidance.propagation; truth-free: graded against the resolved labels people made).
GUIDELINE_GAIN = "guideline_gain"                      # with _ci_low / _ci_high
GUIDELINE_HALF_LIFE_DAYS = "guideline_half_life_days"  # with _ci_low / _ci_high
# The same graded against the simulation's truth (simulation only).
TRUE_GUIDELINE_GAIN = "true_guideline_gain"
TRUE_GUIDELINE_HALF_LIFE_DAYS = "true_guideline_half_life_days"
GATE_CSV = "tables/gate_decisions.csv"
AUDIT_STRATA_CSV = "tables/audit_strata.csv"   # per round and route: population, audited, errors, interval
AUTO_ACCEPT_BOUND_CSV = "tables/auto_accept_bound.csv"  # each time the bound raised the cut-off, and why
COMPARISON_CSV = "comparison.csv"
REPORT_HTML = "report.html"                    # a comparison's report, at the parent run's artifact root
REPORT_PNG = "report.png"
MODEL_ARTIFACT = "model"

# --- labelloop tune: a parent run per study, a nested run per trial ---------------------------
# A trial's params are the values it tried, under their config names (the Optuna parameter
# names too): RoutingThresholds fields, and the program's audit rate.
TUNED_THRESHOLDS = ("auto_accept_confidence", "expert_margin", "double_blind_issue_score")
TUNED_AUDIT_RATE = "audit_rate"
TRIAL_NUMBER = "trial_number"                  # param: the Optuna trial number
# A trial's metrics: its program metrics averaged over the worlds it ran on, and these.
TUNE_COST = "objective_cost"                   # mean program_cost over the worlds
TUNE_ERROR_RATE = FINAL_ERROR_RATE             # mean over the worlds: the constrained value
TUNE_ERROR_RATE_EXCESS = "error_rate_excess"   # mean final error rate - target (<= 0: feasible)
TUNE_FEASIBLE = "feasible"                     # 1 when the excess is <= 0
TUNE_COST_MIN = "objective_cost_min"           # the spread over the worlds
TUNE_COST_MAX = "objective_cost_max"
TUNE_COST_STD = "objective_cost_std"           # population std (0 for one world)
TUNE_ERROR_RATE_MIN = "final_error_rate_min"
TUNE_ERROR_RATE_MAX = "final_error_rate_max"
TUNE_ERROR_RATE_STD = "final_error_rate_std"
# With tune.objective: estimated the constrained value is the audits' upper 95% bound on the final
# error rate (1 for a world whose last round had no audit), under its own names: it is not the
# true rate, nor any one program's final_error_rate_estimate_ci_high.
TUNE_ERROR_RATE_BOUND = "final_error_rate_bound"
TUNE_ERROR_RATE_BOUND_MIN = "final_error_rate_bound_min"
TUNE_ERROR_RATE_BOUND_MAX = "final_error_rate_bound_max"
TUNE_ERROR_RATE_BOUND_STD = "final_error_rate_bound_std"
# The parent run's metrics.
TUNE_BEST_COST = "best_cost"
TUNE_BEST_ERROR_RATE = "best_final_error_rate"
TUNE_BEST_ERROR_RATE_BOUND = "best_final_error_rate_bound"
TUNE_TRIALS_COMPLETE = "trials_complete"
TUNE_TRIALS_FEASIBLE = "trials_feasible"
TAG_STUDY = "labelloop.study"
TAG_OPTUNA_STORAGE = "labelloop.optuna_storage"  # password hidden
TAG_TRIAL = "labelloop.trial"
TAG_TUNE_OBJECTIVE = "labelloop.tune_objective"  # simulator | estimated, on the parent and every trial
TRIALS_CSV = "trials.csv"                      # the parent's table of every trial of the study


# --- drift alerts (experiments.drift_watch; logged only with drift.enabled) ------------------
DRIFT_PSI_MAX = "drift_psi_max"                # per round: the largest feature PSI against the reference
DRIFT_PREDICTION_PSI = "drift_prediction_psi"  # PSI of the predicted classes' shares
DRIFT_LABEL_PSI = "drift_label_psi"            # PSI of the resolved labels' shares
DRIFT_NOVEL_SHARE = "drift_novel_share"        # share of the round's arrivals unlike the reference
DRIFT_ALERTS = "drift_alerts"                  # views past their threshold this round (0: no alert)
DRIFT_RELABEL_ITEMS = "drift_relabel_items"    # items the alert's queue sent to people
DRIFT_RELABEL_COST = "drift_relabel_cost"      # what they cost (in program_cost, outside the round's budget)
DRIFT_RELABEL_CHANGED = "drift_relabel_changed"  # their labels the relabeling changed (no truth read)
TRUE_DRIFT_ERRORS_REMOVED = "true_drift_errors_removed"  # wrong before minus wrong after, of the queue (simulation)
TRUE_DRIFT_QUEUE_WRONG = "true_drift_queue_wrong"  # the queue's wrong labels before relabeling (simulation)
TAG_DRIFT = "labelloop.drift"                  # the last alert's one-line summary


def drift_report_path(round_: int) -> str:
    """Artifact path of a round's drift report (what drifted, by how much, what moved)."""
    return f"drift/round_{round_:02d}.csv"


def drift_queue_path(round_: int) -> str:
    """Artifact path of a round's relabel queue (item, reason, priority)."""
    return f"drift/relabel_round_{round_:02d}.csv"


def strategy_metric(strategy: str, metric: str) -> str:
    """Name of a strategy's final figure on the comparison's parent run, e.g. ``tiered/final_error_rate``.

    MLflow's chart view makes each prefix before ``/`` a section: one section per strategy.
    """
    return f"{strategy}/{metric}"


def tune_best_value(name: str) -> str:
    """Name of the best trial's tuned value on a study's parent run, e.g. ``best_audit_rate``."""
    return f"best_{name}"


def routed_table_path(round_: int) -> str:
    """Artifact path of a round's routed-item table."""
    return f"rounds/round_{round_:02d}_routed.csv"


# --- annotator impact (loop.impact): a table per round, a few aggregates ----------------------
# Per-annotator figures stay in the table: a metric per annotator would not scale.
ANNOTATORS_WITH_CONFIRMED_FIXES = "annotators_with_confirmed_fixes"  # fixed a label the retrained model agrees with
TOP_ANNOTATOR_SHARE = "top_annotator_share"    # the largest share of the round's error reduction


def impact_table_path(round_: int) -> str:
    """Artifact path of a round's per-annotator impact table."""
    return f"impact/round_{round_}.csv"


# --- reaching a tracking server ------------------------------------------------------------


class TrackingError(LoopError):
    """The MLflow tracking server does not answer."""


def check_reachable(tracking_uri: str, *, timeout: float = 5.0) -> None:
    """Fail at once, naming the server, when an ``http(s)://`` tracking URI does not answer.

    MLflow's client retries a refused connection with back-off for minutes before it gives
    up, silently; a command would sit there. Any HTTP answer counts as reachable (a server
    behind authentication may refuse ``/health``); database and file URIs are not checked here
    (MLflow opens them itself and says why it cannot).

    Raises
    ------
    TrackingError
        No HTTP answer from ``<tracking_uri>/health`` within ``timeout`` seconds.
    """
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.parse
    import urllib.request

    # urllib reads "user:password@host" as a host name; any answer counts, so ask without them.
    parts = urllib.parse.urlsplit(tracking_uri)
    bare = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    try:
        with urllib.request.urlopen(bare.rstrip("/") + "/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return  # it answered
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(f"tracking.uri: cannot reach the MLflow tracking server at {redact(tracking_uri)} "
                            f"({redact(str(reason))}); "
                            "start it (see the README's team setup) or use a local store such as "
                            "sqlite:///mlflow.db") from None


# --- the port ----------------------------------------------------------------------------------


class Tracker(Protocol):
    """What a program needs from tracking: a run, metrics, artifacts and a model registry."""

    def start(self, run_name: str, *, params: Mapping[str, str], tags: Mapping[str, str]) -> str | None: ...

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None: ...

    def log_table(self, frame: pd.DataFrame, path: str) -> None: ...

    def log_figure(self, figure: Any, path: str) -> None: ...

    def log_text(self, text: str, path: str) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def publish(self, model: Any, *, aliases: tuple[str, ...], input_example: Any = None) -> str: ...

    def set_alias(self, alias: str, version: str) -> None: ...

    def tag_version(self, version: str, tags: Mapping[str, str]) -> None: ...

    def log_text(self, text: str, path: str) -> None: ...

    def load_model(self, alias: str) -> Any: ...

    def finish(self, *, failed: bool = False) -> None: ...


@dataclass
class MemoryTracker:
    """Tracks in memory: metrics by step, tables, the models and their aliases.

    Used by the simulator (``tracking.uri: none``), the tuner and tests. Figures are closed
    without being drawn.
    """

    metrics: list[dict[str, float]] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    models: list[Any] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    version_tags: dict[str, dict[str, str]] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    status: str = "none"

    def start(self, run_name: str, *, params: Mapping[str, str], tags: Mapping[str, str]) -> str | None:
        self.params.update(params)
        self.tags.update(tags)
        self.status = "running"
        return None

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        self.metrics.append({"step": -1 if step is None else step, **{k: float(v) for k, v in metrics.items()}})

    def log_table(self, frame: pd.DataFrame, path: str) -> None:
        self.tables[path] = frame

    def log_figure(self, figure: Any, path: str) -> None:
        import matplotlib.pyplot as plt

        self.figures.append(path)
        plt.close(figure)

    def log_text(self, text: str, path: str) -> None:
        self.texts[path] = redact(text)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tags.update(tags)

    def publish(self, model: Any, *, aliases: tuple[str, ...], input_example: Any = None) -> str:
        self.models.append(model)
        version = str(len(self.models))
        for alias in aliases:
            self.aliases[alias] = version
        return version

    def set_alias(self, alias: str, version: str) -> None:
        self.aliases[alias] = version

    def tag_version(self, version: str, tags: Mapping[str, str]) -> None:
        self.version_tags.setdefault(str(version), {}).update({k: str(v) for k, v in tags.items()})

    def log_text(self, text: str, path: str) -> None:
        self.texts[path] = redact(text)

    def load_model(self, alias: str) -> Any:
        return self.models[int(self.aliases[alias]) - 1]

    def finish(self, *, failed: bool = False) -> None:
        self.status = "failed" if failed else "finished"

    def history(self) -> pd.DataFrame:
        """Per-step metrics as a frame indexed by step."""
        return pd.DataFrame(self.metrics).groupby("step").last()


# --- the one MLflow writer ---------------------------------------------------------------------

# MLflow's limits (mlflow.utils.validation): one log_batch call takes at most 100 params, 100 tags
# and 1000 metrics, 1000 entities in all; a param value at most 6000 characters, a tag value 8000,
# a key 250. Values are cut to fit (MLflow's own client does the same); a key is refused, since
# cutting it could merge two names into one.
MAX_BATCH_PARAMS = 100
MAX_BATCH_TAGS = 100
MAX_BATCH_METRICS = 1000
MAX_BATCH_ENTITIES = 1000
MAX_PARAM_CHARS = 6000
MAX_TAG_CHARS = 8000
MAX_KEY_CHARS = 250

def hide_passwords(text: str) -> str:
    """``text`` with URL passwords and secret query values shown as ``***``: :func:`loop._redact.redact`.

    Examples
    --------
    >>> hide_passwords("postgresql+psycopg://labelloop:s3cret@db:5432/labels")
    'postgresql+psycopg://labelloop:***@db:5432/labels'
    >>> hide_passwords("sqlite:///optuna.db")
    'sqlite:///optuna.db'
    """
    return redact(text)


# Artifacts read as text (and so redacted) before they are logged; others (images, models) as they are.
_TEXT_ARTIFACTS = frozenset({".yaml", ".yml", ".json", ".csv", ".txt", ".cfg", ".ini", ".toml", ".md", ".log"})


def _status(failed: bool) -> str:
    return "FAILED" if failed else "FINISHED"


class RunWriter:
    """Every write to MLflow runs goes through here: the program's runs, a study's parent and trials.

    It writes to runs by id through one ``MlflowClient`` (no global active run), and keeps
    MLflow's rules in one place: params, tags and metrics go in batches within MLflow's limits,
    over-long values are cut to fit, over-long keys refused, and no param or tag value or text
    artifact shows the password of a URL (a PostgreSQL ``store.url``, an Optuna storage, a
    tracking URI) or a secret query value.

    Parameters
    ----------
    tracking_uri : str
        The tracking store, also the registry.
    client : MlflowClient, optional
        Default ``MlflowClient(tracking_uri, registry_uri=tracking_uri)``, made when first needed.

    Examples
    --------
    >>> writer = RunWriter("sqlite:///mlflow.db")
    >>> experiment = writer.experiment_id("labelloop-tune")  # doctest: +SKIP
    >>> parent = writer.start_run(experiment, "tune s", params={"tune.seed": 0})  # doctest: +SKIP
    >>> trial = writer.start_run(experiment, "trial 0", parent_run_id=parent)  # doctest: +SKIP
    >>> writer.log(trial, metrics={"objective_cost": 120.0})  # doctest: +SKIP
    >>> writer.finish(trial)  # doctest: +SKIP
    """

    def __init__(self, tracking_uri: str, *, client: Any = None) -> None:
        self.tracking_uri = tracking_uri
        self._client = client

    @property
    def client(self):
        from mlflow import MlflowClient

        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, created when missing."""
        found = self.client.get_experiment_by_name(name)
        return found.experiment_id if found else self.client.create_experiment(name)

    def start_run(self, experiment_id: str, run_name: str, *, parent_run_id: str | None = None,
                  params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None) -> str:
        """Create a run (nested under ``parent_run_id``, if given), log its params; returns its id."""
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        nested = {MLFLOW_PARENT_RUN_ID: parent_run_id} if parent_run_id else {}
        run = self.client.create_run(experiment_id, run_name=run_name, tags=self.clean_tags({**nested, **(tags or {})}))
        self.log(run.info.run_id, params=params)
        return run.info.run_id

    def reopen(self, run_id: str) -> None:
        """Mark a finished run running again (a study that resumes under its parent)."""
        self.client.update_run(run_id, status="RUNNING")

    def log(self, run_id: str, *, params: Mapping[str, Any] | None = None,
            metrics: Mapping[str, float] | None = None, tags: Mapping[str, Any] | None = None,
            step: int | None = None) -> None:
        """Log params, metrics (at ``step``, default 0) and tags, in as few batches as MLflow allows.

        Raises
        ------
        ValueError
            A key longer than MLflow's 250 characters.
        """
        import time

        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        at = 0 if step is None else int(step)
        param_rows = [Param(_key(k), _value(v, MAX_PARAM_CHARS)) for k, v in (params or {}).items()]
        tag_rows = [RunTag(k, v) for k, v in self.clean_tags(tags or {}).items()]
        metric_rows = [Metric(_key(k), float(v), now, at) for k, v in (metrics or {}).items()]
        while param_rows or tag_rows or metric_rows:
            batch_params, param_rows = param_rows[:MAX_BATCH_PARAMS], param_rows[MAX_BATCH_PARAMS:]
            batch_tags, tag_rows = tag_rows[:MAX_BATCH_TAGS], tag_rows[MAX_BATCH_TAGS:]
            room = min(MAX_BATCH_METRICS, MAX_BATCH_ENTITIES - len(batch_params) - len(batch_tags))
            batch_metrics, metric_rows = metric_rows[:room], metric_rows[room:]
            self.client.log_batch(run_id, metrics=batch_metrics, params=batch_params, tags=batch_tags)

    def clean_tags(self, tags: Mapping[str, Any]) -> dict[str, str]:
        """Tags as MLflow takes them: text, cut to 8000 characters, no URL password."""
        return {_key(k): _value(v, MAX_TAG_CHARS) for k, v in tags.items()}

    def log_table(self, run_id: str, frame: pd.DataFrame, path: str) -> None:
        """``frame`` as a CSV artifact at ``path`` (e.g. ``tables/rounds.csv``)."""
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(path).name
            frame.to_csv(local, index=False)
            folder = str(Path(path).parent)
            self.log_artifact(run_id, str(local), folder=None if folder == "." else folder)

    def log_figure(self, run_id: str, figure: Any, path: str) -> None:
        """A matplotlib figure as an image artifact at ``path``; the figure is closed."""
        import matplotlib.pyplot as plt

        self.client.log_figure(run_id, figure, path)
        plt.close(figure)

    def log_text(self, run_id: str, text: str, path: str) -> None:
        """``text`` as a text artifact at ``path`` (e.g. ``guidelines/v3.md``), redacted."""
        self.client.log_text(run_id, redact(text), path)

    def log_artifact(self, run_id: str, local_path: str, *, folder: str | None = None) -> None:
        """A local file as an artifact, in ``folder`` of the run's artifacts (default: at the top).

        A text file (YAML, JSON, CSV...) is logged with its URL passwords and secret query
        values hidden (a copy is logged; the file itself is left as it is: a Serve config must
        keep the password that `serve deploy` needs)."""
        import tempfile
        from pathlib import Path

        source = Path(local_path)
        if source.suffix.lower() in _TEXT_ARTIFACTS and source.is_file():
            text = source.read_text(errors="replace")
            hidden = redact(text)
            if hidden != text:
                with tempfile.TemporaryDirectory() as tmp:
                    copy = Path(tmp) / source.name
                    copy.write_text(hidden)
                    self.client.log_artifact(run_id, str(copy), artifact_path=folder)
                return
        self.client.log_artifact(run_id, local_path, artifact_path=folder)

    def log_text(self, run_id: str, text: str, path: str) -> None:
        """``text`` as the artifact ``path`` (e.g. ``report.html``), URL passwords and secret
        query values hidden."""
        self.client.log_text(run_id, redact(text), path)

    def finish(self, run_id: str, *, failed: bool = False, status: str | None = None) -> None:
        """End a run: FINISHED, FAILED when ``failed``, or ``status`` (e.g. ``KILLED``)."""
        self.client.set_terminated(run_id, status=status or _status(failed))


def _key(key: Any) -> str:
    key = str(key)
    if len(key) > MAX_KEY_CHARS:
        raise ValueError(f"MLflow key {key[:40]!r}... is {len(key)} characters long; MLflow takes at most "
                         f"{MAX_KEY_CHARS}")
    return key


def _value(value: Any, limit: int) -> str:
    # Hidden before cutting, so that a cut cannot leave part of a password behind.
    return hide_passwords(str(value))[:limit]


class MlflowTracker:
    """Tracks to MLflow: one run (nested under the active run, if any), the model registry.

    Parameters
    ----------
    tracking_uri : str
        E.g. ``sqlite:///mlflow.db`` or ``http://mlflow:5000``; also the registry URI.
    experiment : str
        Experiment name (created when missing).
    model_name : str
        Registered model name the Scorer loads.
    trusted_modules : sequence of str, default=()
        Modules whose types the models may hold beyond skops' defaults and labelloop's (the
        config's ``model.estimator``, see :func:`experiments.models.trusted_modules`).
    allow_pickle : bool, default=False
        Whether :meth:`load_model` may load flavours that unpickle (``model.allow_pickle``).
    """

    def __init__(self, tracking_uri: str, experiment: str, model_name: str, *,
                 trusted_modules: tuple[str, ...] = (), allow_pickle: bool = False) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.model_name = model_name
        self.trusted_modules = tuple(trusted_modules)
        self.allow_pickle = allow_pickle
        self.run_id: str | None = None
        self.writer = RunWriter(tracking_uri)

    @property
    def client(self):
        return self.writer.client

    def start(self, run_name: str, *, params: Mapping[str, str], tags: Mapping[str, str]) -> str:
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        mlflow.set_experiment(self.experiment)
        # MLflow's fluent API starts the run, because the run must be the active one: publish's
        # mlflow.sklearn.log_model logs into it, a comparison's strategies nest under it, and
        # under `mlflow run` the first one is the project run. Everything else is the writer's.
        run = mlflow.start_run(run_name=run_name, nested=mlflow.active_run() is not None,
                               tags=self.writer.clean_tags(tags))
        self.run_id = run.info.run_id
        self.writer.log(self.run_id, params=params)
        return self.run_id

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        self.writer.log(self.run_id, metrics={k: v for k, v in metrics.items() if v is not None and np.isfinite(v)},
                        step=step)

    def log_table(self, frame: pd.DataFrame, path: str) -> None:
        self.writer.log_table(self.run_id, frame, path)

    def log_figure(self, figure: Any, path: str) -> None:
        self.writer.log_figure(self.run_id, figure, path)

    def log_text(self, text: str, path: str) -> None:
        self.writer.log_text(self.run_id, text, path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.writer.log(self.run_id, tags=tags)

    def publish(self, model: Any, *, aliases: tuple[str, ...], input_example: Any = None) -> str:
        """Log ``model`` in this run (sklearn flavour, ``predict_proba``), register a version, set aliases."""
        from serve.registry import log_and_register

        return log_and_register(model, model_name=self.model_name, aliases=aliases, input_example=input_example,
                                trusted_modules=self.trusted_modules)

    def set_alias(self, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(self.model_name, alias, version)

    def tag_version(self, version: str, tags: Mapping[str, str]) -> None:
        """Tag a registered version of :attr:`model_name` (values as text, no URL password)."""
        for key, value in self.writer.clean_tags(tags).items():
            self.client.set_model_version_tag(self.model_name, str(version), key, value)

    def log_text(self, text: str, path: str) -> None:
        self.writer.log_text(self.run_id, text, path)

    def load_model(self, alias: str) -> Any:
        """The version under ``alias``, through :func:`serve.registry.load_model` (no code runs
        while it loads unless ``allow_pickle``)."""
        import mlflow

        from serve.registry import load_model

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        return load_model(f"models:/{self.model_name}@{alias}", allow_pickle=self.allow_pickle,
                          trusted_modules=self.trusted_modules)

    def finish(self, *, failed: bool = False) -> None:
        import mlflow

        # The fluent API holds the run active (see start); ending it there terminates it.
        if self.run_id is not None:
            mlflow.end_run(status=_status(failed))


# --- plots -------------------------------------------------------------------------------------


def _figure(width: float = 5.5, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def plot_error_vs_cost(curves: Mapping[str, pd.DataFrame], *, title: str = "label error rate against program cost",
                       metric: str = TRUE_ERROR_RATE, currency: str = "cost units"):
    """One line per program: cumulative ``program_cost`` (x, in ``currency``) against ``metric``
    (y; default ``true_error_rate``, or ``audit_error_rate`` where nobody knows the truth), a
    point per round.

    Parameters
    ----------
    curves : mapping of name -> DataFrame with columns ``program_cost`` and ``metric``
    """
    fig = _figure()
    draw_error_vs_cost(fig.add_subplot(), curves, title=title, metric=metric, currency=currency)
    fig.tight_layout()
    return fig


def draw_error_vs_cost(ax: Any, curves: Mapping[str, pd.DataFrame], *, title: str, metric: str = TRUE_ERROR_RATE,
                       currency: str = "cost units") -> None:
    """:func:`plot_error_vs_cost` on a given matplotlib axes (a panel of a report)."""
    for name, frame in curves.items():
        ax.plot(frame[PROGRAM_COST], frame.get(metric, pd.Series(np.nan, index=frame.index)), marker="o", label=name)
    ax.set_xlabel(f"program cost ({currency}), cumulative")
    ax.set_ylabel("true label error rate" if metric == TRUE_ERROR_RATE else "estimated label error rate (audits)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_reliability(table: pd.DataFrame, *, title: str = "reliability diagram (held-out gold)"):
    """Accuracy against mean confidence per bin (``loop.calibration.reliability_table``)."""
    fig = _figure(4.5, 4.5)
    ax = fig.add_subplot()
    filled = table[table["count"] > 0]
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    width = (table["bin_upper"] - table["bin_lower"]).to_numpy()
    ax.bar(table["bin_lower"], table["accuracy"].fillna(0.0), width=width, align="edge", alpha=0.6,
           edgecolor="black", label="accuracy")
    ax.plot(filled["mean_confidence"], filled["accuracy"], marker="o", color="C3", label="bins")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def plot_confusion_matrix(truth: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...], *,
                          title: str = "confusion matrix (held-out gold)"):
    """Counts of true class (rows) against predicted class (columns)."""
    k = len(classes)
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (np.asarray(truth, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    fig = _figure(5.5, 5.0)
    ax = fig.add_subplot()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(k):
        for j in range(k):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if counts[i, j] > counts.max() / 2 else "black")
    fig.tight_layout()
    return fig
