"""A continuous labelling program: rounds of score, route, annotate, resolve, retrain, measure.

``main(cfg, *, progress=None) -> ProgramResult`` runs one program with everything its config names
(what ``labelloop run`` and ``mlflow run . -e run`` run); ``run_program(cfg, *, scorer=None,
store=None, tracker=None, world=None, progress=None, workforce=None, trainer=None)`` is the same
with any of those given (a comparison shares them between its programs, see :func:`open_setup`).

**A loop over ports.** The round loop talks to five small interfaces (:mod:`experiments.ports`)
and never asks which adapter is behind one:

- *Dataset*: what arrives when, features, initial labels, the gold slices, the truth when
  known. Adapters: :class:`~experiments.ports.WorldDataset` (a built-in world or a team's
  table, :mod:`experiments.world`); :class:`experiments.live.StoreDataset` (a label-store
  stream, ``labelloop serve``: no truth, so only the estimated figures exist).
- *Workforce*: takes requests for crowd or expert labels (``submit -> Ticket``) and gives their
  answers (``collect``), so that people can answer later. Adapters:
  :class:`~experiments.ports.SimulatedWorkforce` (simulated annotators, or a real crowd
  replayed), which answers at once; :class:`experiments.live.HumanWorkforce` (people: tasks in
  the store, answered within an SLA or escalated). A round waits for its answers.
- *Trainer*: a challenger from the resolved labels, evaluated, with out-of-fold
  probabilities. Adapter: :class:`~experiments.ports.CalibratedTrainer`.
- *Scorer*: scores and routes with the champion (:class:`InProcessScorer`, :class:`HttpScorer`).
- *Tracker*: metrics, tables, models (:mod:`experiments.tracking`).

The rules themselves are pure functions in :mod:`loop`: the plan
(:func:`loop.strategies.plan_round`), the budget (:class:`loop.budget.Budget`), the resolution
(:func:`loop.resolution.resolve_actions`), the gate (:func:`loop.gate.decide`).

Round 0 (the seed round) brings the first ``items_per_round`` items with their initial crowd
labels; a model trained on them becomes the first champion (whatever the gate says: something
must serve). Each round ``r = 1 .. rounds`` then:

1. **Arrive.** ``items_per_round`` new items with one crowd label each, from the dataset port
   (see :mod:`experiments.world`); the label is the item's first resolution.
2. **Score.** Every item arrived so far is scored once by the champion through the *scorer*
   port (the Serve app's ``POST /v1/score``, or the same ``loop`` code in process):
   probabilities and signals. The items the champion was trained on then take its
   out-of-fold probabilities instead (5 folds, computed when it was trained, calibrated like
   it): a model judges the labels it learnt from too kindly, and cleanlab's ranking assumes
   out-of-sample probabilities.
3. **Plan.** The posterior of each item's true class given those probabilities and the
   annotators' labels (:func:`loop.issues.label_posteriors` over the store's annotations,
   one fit a round) gives its label-issue score (one minus the posterior of its current
   label), and the strategy decides each eligible item's action within the round's budget
   (:func:`loop.strategies.plan_round`). The tiered strategy routes on that posterior, and its
   decisions come from the scorer port too (:meth:`Scorer.route`: the Serve app's Router over
   ``POST /v1/route``, given the candidates' posterior, label-issue scores and current
   labels, so the model runs once per item per round; or :func:`loop.routing.route` in
   process). With ``program.deferred_accept_confidence``, a tiered item routed to a person
   whom the budget cannot pay for this round takes the posterior's class instead of keeping
   its label when that is another class at least that probable
   (:func:`loop.strategies.plan_round`'s ``deferred_accept``). Items are eligible while they
   have no expert label and fewer than
   :data:`MAX_LABELS` labels; old items are eligible too, so old errors are found and fixed,
   not only new items labelled.
4. **Annotate.** The workforce port answers (review: one crowd label; double-blind: two crowd
   labels, an expert adjudicates when they disagree; expert: one expert label; triple: two
   more crowd labels). Tasks and annotations go to the label store in batches. Under ``tiered``
   the crowd work asks for the most skilled of the people who may answer
   (:attr:`~experiments.ports.Request.prefer`): each crowd member's accuracy as the round's
   posterior estimates it (:func:`loop.issues.annotator_skills`, no truth read). A replayed
   crowd serves an item's most skilled real answerers first; a simulated one, where anyone
   may answer anything, draws at random (BENCHMARKS.md, "Program", measures it on music genre).
5. **Resolve** (the rules are :func:`loop.resolution.resolve_actions`, a pure function). Dawid-Skene
   over the stream's annotations (its annotator model chosen without gold, by held-out likelihood,
   and named in the reason) gives reviewed items their label (under ``tiered``, the posterior of
   :func:`loop.issues.label_posteriors`: the champion's probabilities as the prior, each annotator's
   label weighed as ``program.annotator_model`` says, by default by an accuracy fitted jointly with
   them, so that the model breaks a tie between two disagreeing labels); expert and adjudicated
   labels are final; auto-accepted items take the model's label; triple items take the majority of
   their three labels (when all three differ, one of them drawn at random: ties to the first class
   would favour it). Only changed labels are written, each superseding the current resolution.
6. **Audit.** Experts check items drawn at random, and the program estimates the error rate of
   the labels without reading the truth (the same code with a team's own people).

   - *Strata.* Each item's stratum is where its current label came from, by the program's
     own record: ``auto_accepted``, ``reviewed`` (review, double-blind, triple),
     ``expert`` (the expert route, an audit's correction) or ``untouched`` (the initial
     label). The draw has two design strata, the auto-accepted labels and the rest: the
     auto-accepted share ``W`` of the items gets ``W + W (1 - W) / 2`` of the draw (at least one
     item each), so its own estimate rests on more items; within a stratum the draw is uniform.
   - *Adjudication.* A first expert's disagreement with the label is evidence, not a verdict:
     a second, independent expert looks at the item, and the label counts as wrong only when
     both reject it; it is corrected only when they agree on its class (with experts wrong
     4% of the time, a right label is then counted wrong about 0.2% of the time instead of
     4%, and an audit no longer overwrites right labels). Where no second expert is left, the
     first's disagreement counts and changes nothing. Where one expert's disagreement is
     decisive, no second is asked: given a dispute the label is wrong with probability
     ``p / (p + (1 - p) (1 - a))``, ``p`` the label's stratum's error rate as the audits so far
     count it (after a prior worth five audited items at the posterior's mean doubt), ``a`` the
     experts' accuracy as the square root of how often two experts agreed on the audits so far
     (after a prior of 0.95 worth ten pairs; disputed items, so it leans low); a right label
     is taken to be disputed whenever the expert errs (the conservative bound), a wrong one
     always. At 0.95 or more (``DECISIVE_DISPUTE``, strata wrong about half the time) the
     disagreement counts as an error and corrects the label to the expert's class. Digits'
     strata seldom get there; music genre's crowd labels (about 44% wrong) sometimes do.
   - *Scope* (``program.audit_scope``). ``all`` (the default): every round's audit draws from
     every labelled item, so its work grows with the history (3% of every arrived item each
     round). ``fresh``: a label keeps its verdict until it changes, so each round's audit draws
     only from the *fresh* labels, those of items new since the last audit and those changed
     since (by the round's work or a correction), and carries the earlier audits' count of wrong
     labels forward (:class:`experiments.audits.AuditLedger`): its work is the round's. Opt-in:
     at the same ``audit_rate`` it spends much less, and its intervals are wider (BENCHMARKS.md,
     "A long program").
   - *Spend.* The same expert labels as a single-expert audit of the scope's labels,
     ``ceil(audit_rate * items)`` a round, second opinions included: the first checks are fewer
     by the share of first checks that needed a second opinion so far (before, the posterior's
     mean doubt in the labels); a decisive dispute's saved second opinion pays for more first
     checks.
   - *Estimates.* ``audit_error_rate``: the stratified share of wrong labels with the Wilson
     interval at Kish's effective size (:func:`loop.audit.estimate_error_rate_stratified`,
     ``method="wilson"``), less the share the audit itself corrected: the error of the labels
     after the round. With ``audit_scope: fresh``, a difference estimator
     (:func:`experiments.audits.estimate_carried`): the wrong labels the last audit left, plus,
     for the fresh labels, each one's error less its old label's (the experts' answers judge
     both), stratified as drawn; the Wilson interval at the effective size its variance gives
     (Kish's in the first audit), less the share the audit itself corrected: the error of the
     labels after the round. A changed label is drawn like a new one, so the errors the loop
     fixes in old labels leave the count (old verdicts kept for the labels that stayed, without
     that term, would keep them). ``auto_accept_error_rate_estimate``: the auto-accepted
     stratum's Wilson estimate among the audited scope, likewise. Every stratum's estimate goes
     to ``tables/audit_strata.csv`` (with ``fresh``, among the fresh labels; its ``all`` row is
     the carried estimate); the method is the run's ``audit.method`` param. ``errors_fixed_confirmed``: the
     round's label changes that two independent annotators back, more than back the old label
     (an expert alone, or a reviewer against the crowd label, is one word against another);
     ``errors_removed_estimate`` sums them.
   - The audit draws its items and experts from its own random numbers (seed and round), the
     same for every strategy. Audits are paid outside the budget, equally for every strategy
     (only what they cost beyond their plan is charged to it, see **Budget**).
   - *The auto-accept bound* (``thresholds.max_auto_accept_error``, tiered only; off by
     default). With a bound, nothing is auto-accepted before the first audit. After it,
     while the audited 95% upper bound of the auto-accepted stratum's error exceeds the
     bound, the router's probabilities are read at a temperature fitted on the audited
     items (the upper end of its 95% interval, at least 1; the larger of the fits on every
     audited item and on those at the auto-accept confidence or more, and closed while none of
     these has been audited), and a round auto-accepts its most
     confident items only while their share of errors stays within the bound with 95%
     probability under the tempered risks; the others go to review. Each change is logged with why (tag ``labelloop.auto_accept_bound``,
     ``tables/auto_accept_bound.csv``, the held items' reasons); ``auto_accept_cutoff`` is the
     lowest confidence auto-accepted in the round (1: none; without a bound, the configured
     cut-off).
7. **Retrain.** The trainer port, on the labels resolved as of this round (the store's resolved
   labels, which the program keeps in memory and reads incrementally,
   :class:`loop.store.StreamHistory`; with out-of-fold probabilities of those items), by default
   temperature-scaled on the calibration gold slice and evaluated on the held-out gold; the quality
   gate (:mod:`loop.gate`) decides whether the challenger becomes the champion; the scorer reloads.
8. **Measure.** Everything in :mod:`experiments.tracking` with ``step = round``, and the
   round's routed-item table (:class:`experiments.measure.Measures`; the audit's parts and the
   auto-accept bound are :mod:`experiments.audits`). The round closes in the label store (a
   ``round.closed`` event with the resolver's skill estimates) and its annotators' impact is
   logged: ``impact/round_<r>.csv``, ``annotators_with_confirmed_fixes``,
   ``top_annotator_share`` (:mod:`experiments.impact`, :mod:`loop.impact`).

**Guidelines** (:class:`experiments.guidance.ProgramGuidance`). Once a round's plan is made and
before anyone answers, the published guideline version its tasks show is logged to the run, once
per version (``guidelines/v<N>.md`` and ``.json``, tag ``guideline_version``); in
``guidance.publish_round`` the program first drafts a version from the confused pairs and
publishes it (a simulated crowd follows it after exponential delays). At the end, a version
published during the run gets its impact measured (``guideline_gain``,
``guideline_half_life_days``; ``true_*`` companions in simulation).

**Budget** (:class:`loop.budget.Budget`). The strategy may plan at most the round's budget
(``budget_per_round`` plus what earlier rounds left unspent, minus what they overspent: planned and
actual costs differ because seconds vary), so every budgeted strategy spends the same over the
program. ``triple_majority`` ignores the budget by design. A round is planned at the higher of the
workforce's expected cost of a crowd and an expert label and what they have actually cost in this
program so far (a program meets a few experts, and their speed decides the cost), and audits are
planned at the expected expert cost: what a round's audit will probably cost beyond that, plus one
standard deviation of the round's spending, is held back from the round's plan (and carried to the
next), and what the audit did cost beyond its plan is charged to the budget like the strategy's own
overspending (a saving is not handed out). So the total, audits included, stays within the planned
total, also after the last round.

**What counts as an error removed.** The truth is known in simulation: an item's label is
wrong when it differs from the true class. ``errors_removed`` = wrong initial labels of the
arrived items minus wrong current labels (net of errors a strategy introduces). These
truth-needing figures (``true_error_rate``, ``auto_accept_error_rate``, ``errors_fixed``,
``errors_introduced``, ``errors_removed``, ``final_error_rate``) exist only in simulation; each
has an estimated companion computed without the truth (step 6), and ``final_error_rate_estimate``
is the last round's ``audit_error_rate``.

**A long program.** A round's cost must not grow with the stream's history: the program keeps
the stream's annotations and labels in memory and reads only what is new
(:class:`loop.store.StreamHistory`), and at most ``program.max_fit_items`` items (default
10,000; every built-in dataset stays below it) train each round's model and get its out-of-fold
probabilities, and fit the posterior's annotators (:func:`loop.issues.label_posteriors`'s
``fit_rows``): a uniform sample once more have arrived. The round's passes over every annotation
(labels per item, the workforce's exclusions) index arrays by each item's arrival position, kept
as the history grows, instead of hashing item ids; a new champion's predictions go to the store
for new items and the items the plan acts on, not for every arrived item again.

**Drift** (``drift.enabled``; :mod:`experiments.drift_watch`). From round
``drift.reference_rounds`` on, after the plan, the round's arrivals are compared with the
reference window (features, the champion's predicted classes, the labels; no truth); on an
alert the store gets a ``drift.alert`` event, MLflow the report, and the items of the drifted
region that the plan sends to no person are relabelled (``drift.relabel_action``; ``auto``:
double-blind when only the class mix moved, experts when the items look new) within
``drift.relabel_budget``, outside the round's budget.

**Simulated time.** Round ``r`` is day ``r``: initial labels come in from midnight, program
work from 08:00, adjudication from 16:00, audits from 20:00, each annotator working through
their queue (their simulated seconds back to back). Disagreement resolution time is the
median, over items resolved this round whose labels disagree, of the hours from the item's
first label to its last.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from loop._validation import map_codes
from loop.budget import Budget
from loop.calibration import reliability_table
from loop.exceptions import LoopError
from loop.columns import ANNOTATOR, COST, ITEM, LABEL, LABEL_ISSUE_SCORE, PRIORITY, REASON, ROUTE, SECONDS
from loop.gate import ModelEvaluation, decide
from loop.issues import annotator_skills, confused_pairs, label_posteriors
from loop.resolution import METHOD_CONSENSUS, METHOD_EXPERT, resolve_actions
from loop.routing import RoutingThresholds, route, score_items
from loop.store import ANNOTATION_ID, CREATED_AT, TASK_ID, LabelStore, StreamHistory, head_revision
from loop.strategies import ACTION, IS_NEW, SELF_CONFIDENCE, Action, Strategy, plan_round

from . import tracking as T
from .audits import (_ACTION_STRATUM, _AUTO, _EXPERT, _UNTOUCHED, AUDIT_METHOD, DECISIVE_DISPUTE, AuditBook,
                     AuditLedger, AuditResult, AutoAcceptBound, audit_verdict, change_terms, dispute_posterior,
                     estimate_audit, estimate_carried, stratified_sample, with_estimate)
from .comparison_report import round_figure
from .config import IN_PROCESS, LOCAL, AuditScope, ConfigError, ModelConfig, ProgramConfig, flatten
from .drift_watch import DriftWatch, merge_queue, pool_frame, queue_outcome
from .guidance import ProgramGuidance
from .impact import RoundImpact
from .measure import Measures
from .results import cost_per_error, roi
from .models import make_estimator, trusted_modules
from .ports import (CalibratedTrainer, Dataset, Request, Scorer, SimulatedWorkforce, Ticket, Trainer, Workforce,
                    WorldDataset)
from .world import TIER_CODES, World, build_world

__all__ = ["MAX_LABELS", "Clock", "HttpScorer", "InProcessScorer", "ProgramResult", "Scorer", "Setup", "main",
           "make_tracker", "open_setup", "run_program", "simulated_clock", "wall_clock"]

MAX_LABELS = 5  # an item with this many labels is not sent to people again
_T0 = pd.Timestamp("2026-01-05", tz="UTC")
Clock = Callable[[int, pd.Timedelta], pd.Timestamp]  # (round, offset into the round's day) -> when


def simulated_clock(round_: int, offset: pd.Timedelta) -> pd.Timestamp:
    """Simulated time: round ``r`` is day ``r`` from 2026-01-05, plus ``offset``."""
    return _T0 + pd.Timedelta(days=round_) + offset


def wall_clock(round_: int, offset: pd.Timedelta) -> pd.Timestamp:
    """Real time, now (a live program with people): the round and offset do not matter."""
    return pd.Timestamp.now(tz="UTC")


# The final figures that need the truth: left out when nobody knows it.
_TRUTH_FINALS = frozenset({T.FINAL_ERROR_RATE, T.INITIAL_ERROR_RATE, T.ERRORS_REMOVED, T.ERRORS_REMOVED_PER_100,
                           "errors_fixed_total", "errors_introduced_total", T.COST_PER_ERROR_REMOVED, T.ROI})
_CROWD_START, _ADJUDICATION_START, _AUDIT_START = pd.Timedelta(hours=8), pd.Timedelta(hours=16), pd.Timedelta(hours=20)
# The store's task kind of each action's crowd work.
_TASK_KINDS = {Action.REVIEW: "label", Action.DOUBLE_BLIND: "double_blind", Action.TRIPLE: "label"}
# The actions that give people a task (an auto-accept or a keep gives none).
_PEOPLE_ACTIONS = tuple(a.value for a in (Action.REVIEW, Action.EXPERT, Action.DOUBLE_BLIND, Action.TRIPLE))


# --- the scorer port's adapters (the port: experiments.ports.Scorer) ------------------------


class InProcessScorer:
    """The Serve app's scoring, in process: ``predict_proba``, signals, label-issue scores.

    Parameters
    ----------
    load_model : callable () -> fitted model with ``predict_proba``
        Called by :meth:`reload`; e.g. ``lambda: tracker.load_model("champion")``.
    """

    def __init__(self, load_model: Callable[[], Any]) -> None:
        self._load = load_model
        self._model: Any = None

    def reload(self) -> None:
        self._model = self._load()

    def score(self, item_ids: Any, features: Any, labels: Any = None) -> tuple[pd.DataFrame, np.ndarray]:
        probs = self._probs(features)
        return score_items(probs, item_ids=np.asarray(item_ids, dtype=object), labels=labels), probs

    def route(self, item_ids: Any, probabilities: Any, label_issue_scores: Any,
              thresholds: RoutingThresholds, labels: Any = None) -> pd.DataFrame:
        """:func:`loop.routing.route` on the scores of the given probabilities and label-issue scores."""
        scores = score_items(np.asarray(probabilities, dtype=np.float64), item_ids=np.asarray(item_ids, dtype=object),
                             label_issue_scores=np.asarray(label_issue_scores, dtype=np.float64))
        if labels is not None:
            scores[LABEL] = np.asarray(labels)
        return route(scores, thresholds)

    def _probs(self, features: Any) -> np.ndarray:
        if self._model is None:
            self.reload()
        return np.asarray(self._model.predict_proba(np.asarray(features, dtype=np.float64)), dtype=np.float64)


class HttpScorer:
    """Scores and routes through a running labelloop Serve app (:class:`serve.client.ServeClient`).

    :meth:`route` asks the app's Router (``POST /v1/route``), which routes with its own
    thresholds (its ``user_config``). An app the program deploys itself gets the program's
    thresholds (:func:`open_setup`); an app somebody else runs may have others, and then a
    warning names both, each round.
    """

    def __init__(self, base_url: str, *, compact: bool = True, token: str | None = None) -> None:
        from serve.client import ServeClient

        self.client = ServeClient(base_url, compact=compact, token=token)

    def reload(self) -> None:
        self.client.reload()

    def score(self, item_ids: Any, features: Any, labels: Any = None) -> tuple[pd.DataFrame, np.ndarray]:
        scores, probs = self.client.score(list(item_ids), np.asarray(features, dtype=np.float64),
                                          None if labels is None else np.asarray(labels).tolist())
        return scores, probs

    def route(self, item_ids: Any, probabilities: Any, label_issue_scores: Any,
              thresholds: RoutingThresholds, labels: Any = None) -> pd.DataFrame:
        self._warn_unless_served(thresholds)
        # Probabilities, not features: the Router routes them without asking the Scorer. The
        # labels only for the reasons (the given label-issue scores replace the ones the Router
        # would compute from them). No probabilities back: the caller has them.
        routed = self.client.route(list(item_ids), probabilities=np.asarray(probabilities, dtype=np.float64),
                                   labels=None if labels is None else np.asarray(labels),
                                   label_issue_scores=np.asarray(label_issue_scores, dtype=np.float64))
        return routed[[ITEM, ROUTE, REASON, PRIORITY]]

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> HttpScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _warn_unless_served(self, thresholds: RoutingThresholds) -> None:
        served = RoutingThresholds.from_dict(self.client.thresholds()["thresholds"])
        if served == thresholds:
            return
        pairs = ((f.name, getattr(served, f.name), getattr(thresholds, f.name)) for f in fields(thresholds))
        differ = "; ".join(f"{name} {theirs!r} (Router) vs {ours!r} (program)"
                           for name, theirs, ours in pairs if theirs != ours)
        warnings.warn(f"The Serve app at {self.client.base_url} routes with its Router's thresholds, not the "
                      f"program's: {differ}. Deploy the app with the program's thresholds as the Router's "
                      "user_config, or give the program the Router's.", stacklevel=3)


def make_tracker(cfg: ProgramConfig, *, model_name: str | None = None) -> T.Tracker:
    """MLflow at ``cfg.tracking.uri``, or in memory when it is ``none``. Models register under
    ``model_name`` (default ``cfg.simulation_model``), loading with the model config's trust."""
    if not cfg.tracking.enabled:
        return T.MemoryTracker()
    return T.MlflowTracker(cfg.tracking.uri, cfg.tracking.experiment, model_name or cfg.simulation_model,
                           trusted_modules=trusted_modules(cfg.model), allow_pickle=cfg.model.allow_pickle)


# --- start-up ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """What a program needs besides its tracker, and a comparison shares between its programs.

    Attributes
    ----------
    world : World or None
        The simulated world; None when the caller gave the dataset (a live program's store).
    store : LabelStore
    scorer : Scorer or None
        The Serve app's :class:`HttpScorer`, or the scorer the caller gave; None means in
        process (each program then scores with its own tracker's champion).
    dataset : Dataset
        The program's dataset port: the given one, or the world's (:class:`WorldDataset`).
    """

    world: World | None
    store: LabelStore
    scorer: Scorer | None
    dataset: Dataset


@contextlib.contextmanager
def open_setup(cfg: ProgramConfig, *, world: World | None = None, store: LabelStore | None = None,
               scorer: Scorer | None = None, dataset: Dataset | None = None) -> Iterator[Setup]:
    """The world (or dataset), the label store and the scorer of ``cfg``, for the time of a
    ``with`` block.

    What is given is used as is and left open; what is opened here is closed at exit.

    - ``world``: default ``build_world(cfg)``, unless a ``dataset`` is given (a live program's
      :class:`experiments.live.StoreDataset`): then no world is built.
    - ``store``: default ``LabelStore(cfg.store_url)``, closed at exit.
    - ``scorer``, from ``cfg.serve``: ``in_process`` gives None; ``local`` starts Ray Serve
      here and deploys the app with the program's thresholds as the Router's
      ``user_config``, so that the Router and the program agree by construction (Ray is
      shut down at exit when it was started here); a URL is an app somebody else runs,
      whose Router's thresholds :class:`HttpScorer` checks each round.

    Raises
    ------
    ConfigError
        ``serve.url`` is not ``in_process`` while ``tracking.uri`` is ``none``: the Serve app
        loads its models from the MLflow registry.

    Examples
    --------
    >>> from experiments.config import parse_config
    >>> cfg = parse_config({"tracking": {"uri": "none"}, "store": {"url": "sqlite://"}})
    >>> with open_setup(cfg) as setup:  # doctest: +SKIP
    ...     results = [run_program(cfg.replace(strategy=s), store=setup.store, world=setup.world,
    ...                            scorer=setup.scorer) for s in ("random", "tiered")]
    """
    if scorer is None and cfg.serve != IN_PROCESS and not cfg.tracking.enabled:
        raise ConfigError("serve.url: expected 'in_process' when tracking.uri is 'none' (the Serve app loads "
                          f"models from the MLflow registry), got {cfg.serve!r}")
    with contextlib.ExitStack() as stack:
        # Cheapest first: a store that cannot be opened stops the run before Ray starts.
        if store is None:
            store = stack.enter_context(LabelStore(cfg.store_url))
        if dataset is None:
            world = world if world is not None else build_world(cfg)
            dataset = WorldDataset(world)
        if scorer is None:
            scorer = stack.enter_context(_serving(cfg))
        yield Setup(world=world, store=store, scorer=scorer, dataset=dataset)


@contextlib.contextmanager
def _serving(cfg: ProgramConfig, *, model_name: str | None = None,
             store_url: str | None = None) -> Iterator[HttpScorer | None]:
    """The Serve app ``cfg.serve`` names, as an :class:`HttpScorer`; None for ``in_process``.

    A local app serves ``model_name`` (default ``cfg.simulation_model``). With ``store_url`` (a
    live program's store) it serves the task API there with token auth; without, it only scores
    (auth ``none``, a token store of its own for the program's reloads)."""
    if cfg.serve == IN_PROCESS:
        yield None
        return
    if cfg.serve != LOCAL:
        with HttpScorer(cfg.serve) as scorer:
            yield scorer
        return
    from serve.local import absolute_sqlite_uri, local_app

    if store_url is None:
        # A simulation's app scores without tokens (auth: none); reloading stays admin-only, so
        # the app gets a token store of its own (the same file every run: the same args, no
        # redeploy) and the program an admin token from it. Named by schema revision, so that
        # an older labelloop never meets a file a newer one migrated past it.
        name = f"tokens-{head_revision()}.db"
        store_url = f"sqlite:///{Path(tempfile.gettempdir()) / f'labelloop-serve-{os.getuid()}' / name}"
        Path(store_url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        auth = "none"
    else:
        # A live program's app serves the task API on the program's store: people and the
        # program sign in with the store's tokens.
        store_url, auth = absolute_sqlite_uri(store_url), "token"
    with LabelStore(store_url) as tokens:
        token = tokens.issue_token("labelloop-program", "admin",
                                   expires_at=pd.Timestamp.now("UTC") + pd.Timedelta(days=2))
    args = {"model_name": model_name or cfg.simulation_model, "tracking_uri": cfg.tracking.uri,
            "trusted_modules": list(trusted_modules(cfg.model)), "allow_pickle": cfg.model.allow_pickle,
            "store_url": store_url, "auth": auth}
    with local_app(args, thresholds=cfg.thresholds) as url, HttpScorer(url, token=token) as scorer:
        yield scorer


def main(cfg: ProgramConfig, *, progress: Callable[[int, int], None] | None = None) -> ProgramResult:
    """Run one program with everything from its config: what ``labelloop run --config`` and
    ``mlflow run . -e run`` run.

    The world, the label store, the scorer (:func:`open_setup`) and the tracker
    (:func:`make_tracker`) come from ``cfg``; a Serve app started here is stopped at the end.

    Parameters
    ----------
    cfg : ProgramConfig
    progress : callable (round, rounds) -> None, optional
        Called after each round (0 = seed).

    Returns
    -------
    ProgramResult
    """
    return run_program(cfg, progress=progress)


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProgramResult:
    """What a program did, against the simulation's truth.

    Attributes
    ----------
    strategy, dataset, stream : str
    run_id : str or None
        The MLflow run (None without tracking).
    rounds : DataFrame
        One row per round (0 = seed), one column per metric of :mod:`experiments.tracking`.
    n_items : int
        Items arrived.
    initial_error_rate, final_error_rate : float
        Share of wrong labels among arrived items: initial crowd labels, and final labels.
    errors_removed : int
        Wrong initial labels minus wrong final labels.
    errors_fixed, errors_introduced : int
        Summed over rounds (a label may be fixed and broken again).
    initial_labels_cost : float
        What the initial crowd labels cost (the same for every strategy of a world; not a
        program's cost).
    program_cost : float
        The program's cost: what the strategy and the audits spent beyond the initial labels,
        in ``currency``.
    program_annotations : int
        Annotations beyond the initial labels.
    annotator_hours : float
    model_accuracy, model_ece : float
        The final champion on the held-out gold.
    champion_version : str
    promotions : int
        Challengers the gate promoted (the seed model not counted).
    final_error_rate_estimate, final_error_rate_estimate_ci_low, final_error_rate_estimate_ci_high : float
        The last round's audit estimate of the error rate and its 95% interval (no truth
        read; NaN without audits).
    errors_removed_estimate : int
        Label changes confirmed by two independent annotators, summed over rounds (no truth read).
    currency : str
        The unit of the costs (``program.currency``).
    value_per_error_removed : float or None
        What one error removed is worth, in ``currency`` (``program.value_per_error_removed``);
        with it, :attr:`roi` and :attr:`roi_estimate`.
    gates : DataFrame
        The gate's decision each round: ``round, version, promoted, reason`` (round 0: the seed model).
    """

    strategy: str
    dataset: str
    stream: str
    run_id: str | None
    rounds: pd.DataFrame
    n_items: int
    initial_error_rate: float
    final_error_rate: float
    errors_removed: int
    errors_fixed: int
    errors_introduced: int
    initial_labels_cost: float
    program_cost: float
    program_annotations: int
    annotator_hours: float
    model_accuracy: float
    model_ece: float
    champion_version: str
    promotions: int
    final_error_rate_estimate: float = float("nan")
    final_error_rate_estimate_ci_low: float = float("nan")
    final_error_rate_estimate_ci_high: float = float("nan")
    errors_removed_estimate: int = 0
    currency: str = "cost units"
    value_per_error_removed: float | None = None
    gates: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["round", "version", "promoted",
                                                                              "reason"]))

    @property
    def errors_removed_per_100_annotations(self) -> float:
        return 100.0 * self.errors_removed / self.program_annotations if self.program_annotations else float("nan")

    @property
    def total_cost(self) -> float:
        """Initial labels plus the program: what the benchmarks compare with the peers' total."""
        return self.initial_labels_cost + self.program_cost

    @property
    def cost_per_error_removed(self) -> float:
        """``program_cost / errors_removed``; NaN when no error was removed (truth: simulation only)."""
        return cost_per_error(self.program_cost, self.errors_removed)

    @property
    def cost_per_error_removed_estimate(self) -> float:
        """``program_cost / errors_removed_estimate``; NaN when no correction was confirmed."""
        return cost_per_error(self.program_cost, self.errors_removed_estimate)

    @property
    def roi(self) -> float:
        """``value_per_error_removed * errors_removed / program_cost``; NaN without a value or a cost."""
        return roi(self.value_per_error_removed, self.errors_removed, self.program_cost)

    @property
    def roi_estimate(self) -> float:
        """:attr:`roi` from ``errors_removed_estimate`` (no truth read)."""
        return roi(self.value_per_error_removed, self.errors_removed_estimate, self.program_cost)

    def metrics(self) -> dict[str, float]:
        """The final figures as flat metrics. Cost per error removed and ROI only where they are
        numbers (an error removed, a value configured): NaN would be a chart of nothing."""
        figures = {
            T.FINAL_ERROR_RATE: self.final_error_rate, T.INITIAL_ERROR_RATE: self.initial_error_rate,
            T.ERRORS_REMOVED: float(self.errors_removed), T.PROGRAM_COST: self.program_cost,
            T.INITIAL_LABELS_COST: self.initial_labels_cost,
            T.ANNOTATOR_HOURS: self.annotator_hours, T.MODEL_ACCURACY: self.model_accuracy,
            T.MODEL_ECE: self.model_ece, T.ERRORS_REMOVED_PER_100: self.errors_removed_per_100_annotations,
            "errors_fixed_total": float(self.errors_fixed), "errors_introduced_total": float(self.errors_introduced),
            "promotions": float(self.promotions),
            T.FINAL_ERROR_RATE_ESTIMATE: self.final_error_rate_estimate,
            T.FINAL_ERROR_RATE_ESTIMATE_CI_LOW: self.final_error_rate_estimate_ci_low,
            T.FINAL_ERROR_RATE_ESTIMATE_CI_HIGH: self.final_error_rate_estimate_ci_high,
            T.ERRORS_REMOVED_ESTIMATE: float(self.errors_removed_estimate),
        }
        ratios = {T.COST_PER_ERROR_REMOVED: self.cost_per_error_removed,
                  T.COST_PER_ERROR_REMOVED_ESTIMATE: self.cost_per_error_removed_estimate,
                  T.ROI: self.roi, T.ROI_ESTIMATE: self.roi_estimate}
        return figures | {name: value for name, value in ratios.items() if np.isfinite(value)}


# --- the program -------------------------------------------------------------------------------


def run_program(cfg: ProgramConfig, *, scorer: Scorer | None = None, store: LabelStore | None = None,
                tracker: T.Tracker | None = None, world: World | None = None,
                progress: Callable[[int, int], None] | None = None, workforce: Workforce | None = None,
                trainer: Trainer | None = None, dataset: Dataset | None = None, stream: str | None = None,
                schedule: Callable[[int], bool] | None = None, clock: Clock | None = None) -> ProgramResult:
    """Run one program end to end: the loop over its ports (:mod:`experiments.ports`).

    Parameters
    ----------
    cfg : ProgramConfig
    scorer : Scorer, optional
        Default from ``cfg.serve`` (:func:`open_setup`): in process with the tracker's
        champion, a local Serve app started for this run, or the app at a URL.
    store : LabelStore, optional
        Default ``LabelStore(cfg.store_url)`` (closed at the end). Each run writes its own
        stream, ``<name>-<dataset>-<strategy>-seed<seed>`` (``-2``, ``-3``... when taken).
    tracker : Tracker, optional
        Default from ``cfg.tracking``: MLflow, or in memory when ``uri`` is ``none``. Its run
        is nested under the active MLflow run when there is one (a comparison).
    world : World, optional
        The simulated world; default ``build_world(cfg)``. Pass one to share it between
        strategies (it depends on the dataset, crowd, sizes and seed only). It is the program's
        :class:`~experiments.ports.Dataset` (:class:`~experiments.ports.WorldDataset`).
    progress : callable (round, rounds) -> None, optional
        Called after each round (0 = seed).
    workforce : Workforce, optional
        Who labels; default the world's (:class:`~experiments.ports.SimulatedWorkforce`).
    trainer : Trainer, optional
        Trains each round's challenger; default :class:`~experiments.ports.CalibratedTrainer`
        with ``cfg.model``.
    dataset : Dataset, optional
        The items, instead of a world's (a live program: :class:`experiments.live.StoreDataset`,
        with ``workforce`` given too). Its ``truth`` may be None: then only the estimated
        figures are computed and logged, no ``true_*`` one.
    stream : str, optional
        Write to this existing stream instead of a fresh one (a live program's items are there).
    schedule : callable (round) -> bool, optional
        Called before each round (0 = seed): True plays it, False ends the program there. Default:
        rounds ``0 .. cfg.rounds``. A live program waits in it until the round's items are in.
    clock : callable (round, offset) -> Timestamp, optional
        When the program's own writes (initial labels, simulated answers) are stamped; default
        simulated time (round ``r`` is day ``r``, :data:`simulated_clock`).

    Returns
    -------
    ProgramResult

    Examples
    --------
    >>> from experiments.config import parse_config
    >>> cfg = parse_config({"program": {"rounds": 1, "items_per_round": 100},
    ...                     "tracking": {"uri": "none"}, "store": {"url": "sqlite://"}})
    >>> result = run_program(cfg)  # doctest: +SKIP
    >>> result.final_error_rate < result.initial_error_rate  # doctest: +SKIP
    True
    """
    tracker = tracker if tracker is not None else make_tracker(cfg)
    schedule = schedule if schedule is not None else (lambda r: r <= cfg.rounds)
    with open_setup(cfg, world=world, store=store, scorer=scorer, dataset=dataset) as setup:
        dataset = setup.dataset
        if workforce is None:
            if setup.world is None:
                raise LoopError("run_program: a dataset without a world needs its workforce (workforce=...)")
            workforce = SimulatedWorkforce(setup.world)
        # The estimator is looked up when a model is trained (_classifier, patched in tests).
        trainer = trainer if trainer is not None else CalibratedTrainer(
            dataset, estimator=lambda: _classifier(cfg.model), seed=cfg.seed, max_fit_items=cfg.max_fit_items)
        program = _Program(cfg, dataset, workforce, trainer, setup.store, tracker, stream=stream,
                           clock=clock or simulated_clock)
        tracker.start(f"{cfg.strategy.value}", params={**flatten(cfg), T.PARAM_AUDIT_METHOD: AUDIT_METHOD}, tags={
            T.TAG_STRATEGY: cfg.strategy.value, T.TAG_DATASET: dataset.name, T.TAG_ROLE: T.ROLE_PROGRAM,
            T.TAG_STREAM: program.stream, T.TAG_CURRENCY: cfg.currency})
        # Single-threaded BLAS: the arrays are small, and BLAS threads fighting over a few shared
        # cores made a 0.1 s model fit take 4 s.
        limits = threadpool_limits(1)
        try:
            if not schedule(0):
                raise LoopError("the program ended before its seed round: no items arrived")
            program.seed_round()
            if progress:
                progress(0, cfg.rounds)
            program.scorer = setup.scorer if setup.scorer is not None else \
                InProcessScorer(lambda: tracker.load_model(T.ALIAS_CHAMPION))
            program.scorer.reload()  # the seed model is the champion now
            round_ = 1
            while schedule(round_):
                program.play_round(round_)
                if progress:
                    progress(round_, cfg.rounds)
                round_ += 1
            result = program.finish()
        except BaseException:
            tracker.finish(failed=True)
            raise
        finally:
            limits.unregister()
        tracker.finish()
    return result


class _Program:
    """The state of one run between rounds; each step is a method of a few lines. It talks to
    its ports (dataset, workforce, trainer, scorer, tracker) and never asks which adapter it has."""

    def __init__(self, cfg: ProgramConfig, dataset: Dataset, workforce: Workforce, trainer: Trainer,
                 store: LabelStore, tracker: T.Tracker, *, stream: str | None = None,
                 clock: Clock | None = None) -> None:
        self.cfg, self.dataset, self.workforce, self.trainer = cfg, dataset, workforce, trainer
        self.clock = clock if clock is not None else simulated_clock
        self.store, self.tracker = store, tracker
        self.rng = np.random.default_rng([cfg.seed, 11, list(Strategy).index(cfg.strategy)])
        # Triple annotation's ties (three labels that all differ) are drawn from their own
        # numbers, so that breaking them leaves the crowd's answers as they were.
        self.ties = np.random.default_rng([cfg.seed, 13])
        self.stream = stream if stream is not None else _new_stream(
            store, f"{cfg.name}-{dataset.name}-{cfg.strategy.value}-seed{cfg.seed}", dataset.classes)
        # The stream's annotations and labels, kept in memory and read incrementally: the
        # program needs them several times a round, and a whole read costs the stream's history.
        self.history = StreamHistory(store, self.stream)
        people = workforce.annotators
        self.tiers = dict(zip(people[ANNOTATOR], people["tier"].map(TIER_CODES)))
        for row in people.itertuples(index=False):
            store.add_annotator(row.annotator_id, tier=TIER_CODES[row.tier], hourly_rate=float(row.hourly_rate),
                                streams=[self.stream])
        self.experts = set(people.loc[people["tier"] == "expert", ANNOTATOR])
        # The round's figures (the truth's only when the dataset knows it) and their totals.
        self.measures = Measures(dataset)
        self.last_round = 0
        self.scorer: Scorer | None = None
        self.champion: ModelEvaluation | None = None
        self.out_of_fold = pd.DataFrame()  # the champion's out-of-fold probabilities, by training item
        self.champion_version = ""
        # The model version whose predictions are stored; by arrival position, the items it has
        # predicted and those some champion has.
        self.predicted_by = ""
        self.predicted = self.ever_predicted = np.zeros(0, dtype=bool)
        # Integer positions, kept as the history grows: each arrived item's in arrival order, and
        # that of each annotation row's item (-1: not arrived), with the rows' ids; each row's
        # annotator as a code (its index in _who_names). The round's passes over every annotation
        # index arrays with them instead of hashing (or converting) ids.
        self._arrived = np.zeros(0, dtype=object)
        self._x = np.zeros((0, 0))  # the arrived items' features, in arrival order
        self._arrival_pos: dict[str, int] = {}
        self._row_ids = np.zeros(0, dtype=np.int64)
        self._row_pos = np.zeros(0, dtype=np.int64)
        self._row_who = np.zeros(0, dtype=np.int64)
        self._who: dict[str, int] = {}
        self._who_names: list[str] = []
        # Each arrived item's current label by arrival position (NaN: none yet), kept from the
        # resolutions read since (a reindex of every arrived id by string cost ~20 ms, three a
        # round); _label_rows: the resolutions applied. None: a resolution of an item that had
        # not arrived (a live stream's gold), so the labels are looked up by id.
        self._label_at: np.ndarray | None = np.zeros(0)
        self._label_rows = 0
        # triple_majority ignores the budget by design: its cost is its protocol's.
        self.budget = Budget(cfg.budget_per_round, workforce.costs,
                             carries=cfg.strategy is not Strategy.TRIPLE_MAJORITY)
        self.curve: list[dict[str, float]] = []
        self.gates: list[dict[str, Any]] = []
        self.promotions = 0
        # What the audits and the auto-accept bound know, none of it from truth.
        self.stratum = pd.Series(dtype=object, index=pd.Index([], dtype=object))  # where each item's label came from
        self.router = pd.DataFrame()  # the probabilities the last plan routed on, by arrived item
        self.book = AuditBook()  # what the audits so far say
        self.ledger = AuditLedger()  # and their count of wrong labels, carried on
        # The auto-accept bound (tiered only): what the router's probabilities are read at, and
        # the cut-off it gave this round.
        bounded = cfg.thresholds.max_auto_accept_error is not None and cfg.strategy is Strategy.TIERED
        self.bound = AutoAcceptBound(cfg.thresholds.max_auto_accept_error if bounded else None,
                                     cfg.thresholds.auto_accept_confidence)
        self.doubt = 0.15  # the posterior's mean doubt in the current labels (set each round)
        # Drift alerts and their relabel queue (experiments.drift_watch); the round's figures.
        self.drift = DriftWatch(cfg.drift, n_classes=len(dataset.classes), store=store, stream=self.stream,
                                tracker=tracker, seed=cfg.seed) if cfg.drift.enabled else None
        self.drift_figures: dict[str, float] = {}
        # Guidelines: each published version logged once; one drafted and published in
        # guidance.publish_round; its impact measured at the end (experiments.guidance).
        self.guidance = ProgramGuidance(cfg.guidance, store=store, stream=self.stream, tracker=tracker,
                                        workforce=workforce, truth=dataset.truth, clock=self.clock,
                                        work_offset=_CROWD_START, seed=cfg.seed)
        self.impact = RoundImpact(store, self.stream, annotator_model=cfg.annotator_model,
                                  fit_items=cfg.max_fit_items, random_state=[cfg.seed, 31])

    # -- steps -------------------------------------------------------------------------------
    def arrive(self, round_: int) -> np.ndarray:
        """Register the round's new items with their initial labels (the first resolution)."""
        new = self.dataset.arrivals(round_)
        self.last_round = round_
        initial = self.dataset.initial.set_index(ITEM).loc[new].reset_index()
        self.store.add_items(self.stream, self.dataset.items(new))
        # Object ids: pd.concat would infer Arrow strings, whose lookups (the audit's) cost more.
        ids = np.concatenate([self.stratum.index.to_numpy(dtype=object), new.astype(str).astype(object)])
        strata = np.concatenate([self.stratum.to_numpy(dtype=object), np.full(len(new), _UNTOUCHED, dtype=object)])
        self.stratum = pd.Series(strata, index=pd.Index(ids, dtype=object), dtype=object)
        # An initial label already recorded (a live stream's item that arrived in an earlier
        # session) is not recorded again, and an item resolved before it arrived keeps its label.
        recorded = self.history.annotations()
        known = self.history.annotated(initial[ITEM].to_numpy(dtype=object))
        if known.any():  # only then compare pairs, over the rows of those items (not the whole history)
            ids = initial[ITEM].astype(str).to_numpy(dtype=object)
            recorded = recorded[recorded[ITEM].astype(str).isin(ids[known])]
            pairs = pd.MultiIndex.from_arrays([ids, initial[ANNOTATOR].to_numpy(dtype=object)])
            known = pairs.isin(pd.MultiIndex.from_arrays([recorded[ITEM].astype(str).to_numpy(dtype=object),
                                                          recorded[ANNOTATOR].to_numpy(dtype=object)]))
        self._write_answers(initial[~known], round_, pd.Timedelta(0))
        first = ~pd.Index(initial[ITEM].astype(str), dtype=object).isin(self.history.heads().index)
        if first.any():
            self.store.add_resolutions(self.stream, pd.DataFrame({
                ITEM: new[first], LABEL: initial[LABEL].to_numpy()[first], "method": METHOD_CONSENSUS,
                REASON: "initial crowd label"}))
        return new

    def seed_round(self) -> None:
        self.arrive(0)
        self.guidance.before_work(0)
        labels = self._labels()
        trained = self.trainer.train(labels)
        evaluation, self.out_of_fold = trained.evaluation, trained.out_of_fold
        self.champion_version = self.tracker.publish(trained.model, aliases=(T.ALIAS_CHALLENGER, T.ALIAS_CHAMPION),
                                                     input_example=self.dataset.x(labels.index[:2]))
        self._tag_version(self.champion_version, 0, promoted=True)
        self.champion = evaluation
        self.gates.append({"round": 0, "version": self.champion_version, "promoted": True,
                           "reason": "seed model: the first champion"})
        arrived = self.dataset.arrived(0)
        impact = self._log_impact(0, None)
        self._log_round(0, arrived=arrived, new=arrived, before=labels, after=labels, plan=None, audit=None,
                        evaluation=evaluation, challenger=evaluation, promoted=True, round_cost=0.0, budget=0.0,
                        resolution_hours=float("nan"), pairs=None, extra=impact)

    def play_round(self, round_: int) -> None:
        cfg, dataset = self.cfg, self.dataset
        new = fresh = self.arrive(round_)
        arrived = dataset.arrived(round_)
        self._index_arrivals(arrived)
        # New to the strategy: arrived since its last plan (round 1 also sees the seed items).
        new = arrived if round_ == 1 else new
        before = self._labels()
        # The labels in arrival order too, once: measuring reads them by arrived item several
        # times, and a lookup of every arrived id costs ~20 ms at 10^5 (one against an equal
        # index ~4 ms). Training keeps the store's order (its folds and sample follow it).
        order = pd.Index(arrived, dtype=object)
        before_arrived = self._labels_arrived(order)
        why = self.bound.calibrate(round_, self.book)
        if why is not None:
            self.tracker.set_tags({T.TAG_AUTO_ACCEPT_BOUND: why})
        # Object ids: pandas infers Arrow str from an array of strings, and its lookups are ~10x slower.
        current = before_arrived.to_numpy(dtype=np.int64)
        x = self._x
        # One scoring pass over what arrived, without the labels: the program judges them
        # itself below (annotators' evidence against these probabilities), so the Scorer's own
        # label-issue scores would be thrown away.
        scores, probs = self.scorer.score(arrived, x)
        scores, probs = self._out_of_sample(arrived, scores, probs)
        annotations = self.history.annotations()
        # What the tiered routing decides on: the posterior of the model and the annotators
        # (other strategies: the model alone, as their definitions say).
        posterior, evidence, signals = self._evidence(scores, probs, annotations)
        candidates, eligible = self._candidates(signals, probs, current, annotations, new, posterior=posterior)
        self.router = pd.DataFrame(evidence, index=signals[ITEM].astype(str).to_numpy())
        self.doubt = float(1.0 - posterior[np.arange(len(current)), current].mean())
        candidate_probs = evidence[eligible]
        books = self.budget.open_round(*self._label_costs(annotations), audit_size=self._audit_size(arrived))
        decisions = self._route(candidates, candidate_probs)
        plan = plan_round(candidates, cfg.strategy, budget=books.plannable, costs=books.costs,
                          rng=self.rng, decisions=decisions,
                          deferred_accept=cfg.deferred_accept_confidence if decisions is not None else None)
        if decisions is not None:  # a deferred accept changes a label without a person: bounded too
            plan = self.bound.hold_deferred(plan, candidates[ITEM].astype(str).to_numpy(), candidate_probs)
        plan, queue = self._drift_queue(round_, fresh, x, probs, current, candidates, eligible, plan, books.costs,
                                        posterior=posterior)
        if decisions is not None and self.drift is not None:  # the stored routes and reasons say where it went
            decisions = merge_queue(decisions, queue, self.drift.action, books.costs)
        at = self._plan_positions(plan, candidates, eligible)
        self._store_predictions(arrived, probs, decisions, plan,
                                relabelled=signals["predicted"].to_numpy(dtype=np.int64) != current, at=at)
        self.guidance.before_work(round_)
        spent_before, rows_before = float(annotations[COST].sum()), len(annotations)
        answers = self._execute(plan, round_, annotations, prefer=self._skills(posterior, signals, annotations))
        annotations = self.history.annotations()
        planned_work = len(annotations)
        round_labels = self._resolve(plan, answers, annotations, signals, probs, current, at)
        self._write_resolutions(round_labels, before_arrived)
        self._track_strata(plan, at)
        relabel_cost = self._drift_outcome(queue, annotations.iloc[rows_before:planned_work], before)
        audit = self._audit(arrived, round_, annotations)
        annotations = self.history.annotations()
        after = self._labels()
        # The relabel queue has its own budget (drift.relabel_budget): not the round's.
        plan_cost = float(annotations[COST].iloc[:planned_work].sum()) - spent_before - relabel_cost
        audit_cost = float(annotations[COST].iloc[planned_work:].sum())
        # Audits are planned at the expected expert cost; what they cost beyond it comes out of
        # the budget (a saving is not handed out: the total stays within the plan either way).
        self.budget.close_round(books, plan_cost=plan_cost, audit_cost=audit_cost)
        trained = self.trainer.train(after)
        challenger, challenger_oof = trained.evaluation, trained.out_of_fold
        version = self.tracker.publish(trained.model, aliases=(T.ALIAS_CHALLENGER,),
                                       input_example=x[:2])
        decision = decide(challenger, self.champion, cfg.gate)
        self._tag_version(version, round_, promoted=decision.promote)
        if decision.promote:
            self.tracker.set_alias(T.ALIAS_CHAMPION, version)
            self.champion, self.champion_version = challenger, version
            self.out_of_fold = challenger_oof
            self.promotions += 1
            self.scorer.reload()
        self.gates.append({"round": round_, "version": version, "promoted": decision.promote,
                           "reason": decision.reason})
        self.tracker.set_tags({T.TAG_GATE_REASON: decision.reason})
        after_arrived = self._labels_arrived(order)
        pairs = confused_pairs(after_arrived.to_numpy(dtype=np.int64), probs,
                               classes=list(dataset.classes))
        impact = self._log_impact(round_, challenger_oof)
        self._log_round(round_, arrived=arrived, new=new, before=before_arrived, after=after_arrived, plan=plan,
                        audit=audit, evaluation=self.champion, challenger=challenger, promoted=decision.promote,
                        round_cost=float(annotations[COST].sum()) - spent_before, budget=books.budget,
                        resolution_hours=self._resolution_hours(annotations, plan, at), pairs=pairs, extra=impact,
                        at=at)
        self._log_routed(round_, plan, candidates, before_arrived, after_arrived, at)

    def finish(self) -> ProgramResult:
        cfg, dataset = self.cfg, self.dataset
        rounds = pd.DataFrame(self.measures.rows).set_index("round")
        arrived = dataset.arrived(self.last_round)
        initial = dataset.initial.set_index(ITEM)[LABEL].reindex(arrived)
        final = self._labels().reindex(arrived)
        annotations = self.history.annotations()
        n_initial = len(arrived)
        is_initial = ~annotations[ITEM].duplicated()  # each item's first label (a groupby costs more)
        initial_cost = float(annotations.loc[is_initial, COST].sum())
        model = self.tracker.load_model(T.ALIAS_CHAMPION)
        holdout = dataset.holdout
        probs = model.predict_proba(dataset.x(holdout.index))
        self._log_plots(rounds, probs, holdout.to_numpy())
        self.tracker.log_table(rounds.reset_index(), T.ROUNDS_CSV)
        self.tracker.log_table(pd.DataFrame(self.gates), T.GATE_CSV)
        if self.book.strata_log:
            self.tracker.log_table(pd.concat(self.book.strata_log, ignore_index=True), T.AUDIT_STRATA_CSV)
        if self.bound.log:
            self.tracker.log_table(pd.DataFrame(self.bound.log), T.AUTO_ACCEPT_BOUND_CSV)
        self.guidance.finish(cfg.rounds)
        last = rounds.iloc[-1]
        # Without truth these figures are unknown: NaN (and zero counts), never logged.
        known, m = self.measures.known, self.measures
        wrong_initial = int(m.wrong(initial).sum()) if known else 0
        wrong_final = int(m.wrong(final).sum()) if known else 0
        result = ProgramResult(
            strategy=cfg.strategy.value, dataset=dataset.name, stream=self.stream,
            run_id=getattr(self.tracker, "run_id", None), rounds=rounds, n_items=n_initial,
            initial_error_rate=wrong_initial / n_initial if known else float("nan"),
            final_error_rate=wrong_final / n_initial if known else float("nan"),
            errors_removed=wrong_initial - wrong_final, errors_fixed=m.fixed, errors_introduced=m.introduced,
            initial_labels_cost=initial_cost, program_cost=float(annotations[COST].sum()) - initial_cost,
            program_annotations=int(len(annotations) - n_initial),
            annotator_hours=float(annotations[SECONDS].sum() / 3600), model_accuracy=self.champion.accuracy,
            model_ece=self.champion.ece, champion_version=self.champion_version, promotions=self.promotions,
            final_error_rate_estimate=float(last.get(T.AUDIT_ERROR_RATE, np.nan)),
            final_error_rate_estimate_ci_low=float(last.get(T.AUDIT_CI_LOW, np.nan)),
            final_error_rate_estimate_ci_high=float(last.get(T.AUDIT_CI_HIGH, np.nan)),
            errors_removed_estimate=m.confirmed, currency=cfg.currency,
            value_per_error_removed=cfg.value_per_error_removed, gates=pd.DataFrame(self.gates))
        final_metrics = result.metrics()
        final_metrics[T.ERRORS_REMOVED_PER_100] = np.nan_to_num(final_metrics[T.ERRORS_REMOVED_PER_100])
        # Without audits there is no estimate to log (not a zero).
        final_metrics = {k: v for k, v in final_metrics.items() if not (k.startswith(T.FINAL_ERROR_RATE_ESTIMATE)
                                                                         and np.isnan(v))}
        if not known:
            final_metrics = {k: v for k, v in final_metrics.items() if k not in _TRUTH_FINALS}
        # The runs table shows these as they are logged: 4 significant figures read at a glance
        # (1.345, not 1.3449880171966218); the exact values are in the result and --output CSVs.
        self.tracker.log_metrics({k: round_figure(v) for k, v in final_metrics.items()}, step=cfg.rounds)
        return result

    # -- helpers -----------------------------------------------------------------------------
    def _tag_version(self, version: str, round_: int, *, promoted: bool) -> None:
        """Name the registered version's strategy, run, round, gate verdict and dataset: the
        registry alone then tells which program made a model and whether it served."""
        self.tracker.tag_version(version, {
            T.VERSION_STRATEGY: self.cfg.strategy.value, T.VERSION_RUN_ID: getattr(self.tracker, "run_id", None) or "",
            T.VERSION_ROUND: str(round_), T.VERSION_DATASET: self.dataset.name,
            T.VERSION_GATE_VERDICT: T.VERDICT_PROMOTED if promoted else T.VERDICT_REFUSED})

    def _labels(self) -> pd.Series:
        """Current resolved label of every arrived item, by item id (from the store). A live
        stream also holds items that have not arrived (or never will: its gold)."""
        labels = self.history.labels()
        arrived = pd.Index(self.dataset.arrived(self.last_round), dtype=object)
        if len(arrived) == len(labels):  # a simulation's stream: every resolved item has arrived
            return labels
        return labels[pd.Index(labels.index, dtype=object).isin(arrived)]

    def _audit_size(self, arrived: np.ndarray) -> int:
        """Items the round's audit will probably check (as :func:`loop.audit.audit_sample`
        rounds): the items new since the last audit and as many changed labels as it found."""
        if self.cfg.audit_scope is AuditScope.ALL:
            return int(np.ceil(self.cfg.audit_rate * len(arrived)))
        fresh = len(arrived) - len(self.ledger.ids) + self.ledger.changed
        return int(np.ceil(self.cfg.audit_rate * fresh))

    def _index_arrivals(self, arrived: np.ndarray) -> None:
        """Extend the arrival positions by the items new in ``arrived`` (in arrival order: the
        earlier items keep theirs; otherwise they are all computed again)."""
        n = len(self._arrived)
        if len(arrived) < n or not np.array_equal(np.asarray(arrived[:n], dtype=object), self._arrived):
            self._arrival_pos, self._row_ids, self._row_pos, n = {}, self._row_ids[:0], self._row_pos[:0], 0
            self._row_who = self._row_who[:0]
            self.predicted = self.ever_predicted = np.zeros(0, dtype=bool)
            self._label_at, self._label_rows = np.zeros(0), 0
        for i, item in enumerate(np.asarray(arrived[n:]).astype(str).tolist(), start=n):
            self._arrival_pos[item] = i
        # An item's features never change: only the new items' are looked up (each lookup of
        # every arrived id cost the history, and a world copies its whole feature table for it).
        new = self.dataset.x(arrived[n:])
        self._x = new if n == 0 else np.concatenate([self._x[:n], new])
        self._arrived = np.asarray(arrived, dtype=object).copy()
        stale = np.flatnonzero(self._row_pos < 0)  # rows of items that had not arrived: maybe now
        if stale.size and len(arrived) > n:
            self._row_pos[stale] = self._positions(self._row_items(stale), missing=-1)

    def _labels_arrived(self, order: pd.Index) -> pd.Series:
        """:meth:`_labels` in arrival order (``order``: the arrived ids, as :meth:`_index_arrivals`
        last saw them), from the resolutions new since the last call."""
        resolutions = self.history.resolutions()
        if self._label_at is not None and len(resolutions) >= self._label_rows:
            new = resolutions.iloc[self._label_rows:].drop_duplicates(ITEM, keep="last")
            pos = self._positions(new[ITEM], missing=-1)
            if (pos < 0).any():
                self._label_at = None
            else:
                at = np.full(len(order), np.nan)
                at[:len(self._label_at)] = self._label_at
                at[pos] = new[LABEL].to_numpy(dtype=np.float64)
                self._label_at, self._label_rows = at, len(resolutions)
        if self._label_at is None or len(self._label_at) != len(order) or np.isnan(self._label_at).any():
            return self._labels().reindex(order)
        return pd.Series(self._label_at.astype(np.int64), index=order, name=LABEL)

    def _positions(self, item_ids: Any, *, missing: int | None = None) -> np.ndarray:
        """The arrival positions of ``item_ids``, by a lookup per id: an id not arrived raises
        KeyError, or gets ``missing`` when given."""
        ids, pos = np.asarray(item_ids).astype(str).tolist(), self._arrival_pos
        found = (pos[i] for i in ids) if missing is None else (pos.get(i, missing) for i in ids)
        return np.fromiter(found, dtype=np.int64, count=len(ids))

    def _plan_positions(self, plan: pd.DataFrame, candidates: pd.DataFrame, eligible: np.ndarray) -> np.ndarray | None:
        """The arrival position of each of the plan's rows when the plan is the candidates in
        their order (``plan_round`` keeps it; the eligible items, in arrival order); else None.
        Under tiered the plan holds most settled items, and a lookup of each id cost ~30 ms, four
        times a round at 10^5."""
        if len(plan) == len(candidates) and np.array_equal(plan[ITEM].to_numpy(dtype=object),
                                                           candidates[ITEM].to_numpy(dtype=object)):
            return np.flatnonzero(eligible)
        return None

    def _plan_rows(self, plan: pd.DataFrame, rows: Any, at: np.ndarray | None) -> np.ndarray:
        """The arrival positions of the plan's ``rows`` (a mask): from ``at`` when given, else by id."""
        mask = np.asarray(rows, dtype=bool)
        return at[mask] if at is not None else self._positions(plan.loc[mask, ITEM])

    def _row_items(self, rows: np.ndarray) -> np.ndarray:
        return self.history.annotations()[ITEM].to_numpy(dtype=object)[rows]

    def _row_positions(self, annotations: pd.DataFrame) -> np.ndarray:
        """The arrival position of each row's item in ``annotations`` (the history's frame), -1
        for an item not arrived; looked up for the rows new since the last call only."""
        ids = annotations[ANNOTATION_ID].to_numpy(dtype=np.int64)
        n = len(self._row_ids)
        if len(ids) < n or not np.array_equal(ids[:n], self._row_ids):  # a row committed late: all again
            n = 0
        fresh = self._positions(annotations[ITEM].iloc[n:], missing=-1)
        who = annotations[ANNOTATOR].iloc[n:].astype(str).tolist()
        self._row_who = np.concatenate([self._row_who[:n], np.fromiter(
            (self._annotator_code(w) for w in who), dtype=np.int64, count=len(who))])
        self._row_pos = np.concatenate([self._row_pos[:n], fresh])
        self._row_ids = ids.copy()
        return self._row_pos

    def _annotator_code(self, annotator: str) -> int:
        code = self._who.get(annotator)
        if code is None:
            code = self._who[annotator] = len(self._who_names)
            self._who_names.append(annotator)
        return code

    def _by_expert(self, annotations: pd.DataFrame) -> np.ndarray:
        """Which rows of ``annotations`` (the history's frame) are an expert's, by annotator code."""
        self._row_positions(annotations)
        experts = [self._who[w] for w in self.experts if w in self._who]
        return np.isin(self._row_who, np.asarray(experts, dtype=np.int64))

    def _rows_about(self, frame: pd.DataFrame, where: np.ndarray, item_ids: Any) -> pd.DataFrame:
        """The rows of ``frame`` (one per annotation row, their items' arrival positions
        ``where``) about ``item_ids``, e.g. who may not answer them again: the workforce is
        handed these only, not the stream's every annotation."""
        wanted = np.zeros(len(self._arrived) + 1, dtype=bool)  # the last slot: rows not arrived
        pos = self._positions(item_ids, missing=-1)
        wanted[pos[pos >= 0]] = True
        rows = frame[wanted[where]]
        if (pos < 0).any():  # an item not arrived (not asked by the program): by id
            ids = frame[ITEM].astype(str)
            rows = pd.concat([rows, frame[ids.isin(np.asarray(item_ids)[pos < 0])]])
        # String ids, as the workforce matches them; converted for the selected rows only.
        return rows.astype({ITEM: str})

    def _resolution_hours(self, annotations: pd.DataFrame, plan: pd.DataFrame, at: np.ndarray | None = None) -> float:
        """Median hours from first to last label of the items acted on this round whose labels
        disagree. Their rows are selected by arrival position (converting every annotation's id
        costs the history), an item that has not arrived (not the program's plan) by id.
        ``at``: the plan's arrival positions (:meth:`_plan_positions`)."""
        acting = (plan[ACTION] != Action.KEEP.value).to_numpy()
        where = self._row_positions(annotations)
        pos = at[acting] if at is not None else self._positions(plan.loc[acting, ITEM], missing=-1)
        # By arrival position and in arrays: under tiered the plan auto-accepts most settled items
        # again every round, and grouping their every label by string id cost the history.
        wanted = np.zeros(len(self._arrived) + 1, dtype=bool)  # the last slot: rows not arrived
        wanted[pos[pos >= 0]] = True
        rows = np.flatnonzero(wanted[where])
        group = where[rows]
        if (pos < 0).any():  # each item not arrived is a group of its own, past the arrived ones
            absent = pd.Index(plan.loc[acting, ITEM].astype(str).to_numpy(dtype=object)[pos < 0], dtype=object)
            code = absent.get_indexer(annotations[ITEM].astype(str).to_numpy(dtype=object))
            extra = np.flatnonzero(code >= 0)
            rows, group = np.r_[rows, extra], np.r_[group, len(self._arrived) + 1 + code[extra]]
        return _disagreement_hours(annotations[LABEL].to_numpy(dtype=np.int64)[rows],
                                   pd.DatetimeIndex(pd.to_datetime(annotations[CREATED_AT].iloc[rows], utc=True)),
                                   group)

    def _label_costs(self, annotations: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """What each crowd label and each expert label of the stream has cost so far."""
        by_expert = self._by_expert(annotations)
        cost = annotations[COST].to_numpy(dtype=np.float64)
        return cost[~by_expert], cost[by_expert]

    def _evidence(self, scores: pd.DataFrame, probs: np.ndarray,
                  annotations: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
        """The posterior of the model (prior) and every annotator's label (weighed as
        ``program.annotator_model`` says), fitted once a round: every strategy's label-issue
        scores read it. Then the class probabilities routing decides on, and their signals:
        under ``tiered`` that posterior, so that an item the annotators and the model agree on
        is settled without a person, and one whose label both doubt is relabelled to their
        consensus when it is confident enough (auto-accept takes ``predicted``); the model's
        own otherwise."""
        posterior = self._posteriors(probs, scores, annotations)
        if self.cfg.strategy is not Strategy.TIERED:
            return posterior, probs, scores
        # The scorer checked the arrived ids: they go in as they are (a second check hashes every one).
        return posterior, posterior, score_items(posterior).assign(**{ITEM: scores[ITEM].array})

    def _posteriors(self, probs: np.ndarray, scores: pd.DataFrame, annotations: pd.DataFrame) -> np.ndarray:
        """:func:`loop.issues.label_posteriors` of the arrived items (the rows of ``probs``, in
        ``scores``' order: the arrival order) given every annotation. The annotations go in by
        their items' arrival positions: the item ids of every annotation, as strings hashed
        against every arrived id, cost more than the fit itself once the history is long."""
        by_position = self._positional(annotations)
        if by_position is not None:
            return label_posteriors(probs, annotations=by_position, annotator_model=self.cfg.annotator_model,
                                    **self._posterior_fit())
        frame = annotations[[ITEM, ANNOTATOR, LABEL]].astype({ITEM: str})
        return label_posteriors(probs, annotations=frame, item_ids=scores[ITEM].astype(str).to_numpy(),
                                annotator_model=self.cfg.annotator_model, **self._posterior_fit())

    def _positional(self, annotations: pd.DataFrame) -> pd.DataFrame | None:
        """``annotations``' item, annotator and label with each item id replaced by its item's
        arrival position; None when an annotation's item has not arrived (a live stream's item
        that arrives later, its gold): the caller then goes by id, and says which is unknown."""
        where = self._row_positions(annotations)
        if (where < 0).any():
            return None
        # Annotator codes for ids: label_posteriors codes annotators by first appearance either
        # way, and the ids would be converted from the frame's Arrow strings at every call.
        return pd.DataFrame({ITEM: where, ANNOTATOR: self._row_who, LABEL: annotations[LABEL].to_numpy()})

    def _posterior_fit(self) -> dict[str, Any]:
        """How :func:`loop.issues.label_posteriors` bounds its fit: at most
        ``program.max_fit_items`` rows, drawn the same way by both of a round's fits."""
        return {"fit_rows": self.cfg.max_fit_items, "random_state": [self.cfg.seed, 29]}

    def _candidates(self, scores: pd.DataFrame, probs: np.ndarray, current: np.ndarray, annotations: pd.DataFrame,
                    new: np.ndarray, *, posterior: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
        """Eligible items with signals, the label-issue score from model and annotators, and
        newness; and which of the arrived items are eligible."""
        arrived = scores[ITEM].astype(str).to_numpy()
        # loop.issues.label_quality_scores with these annotations: the posterior of the current label.
        quality = np.clip(posterior[np.arange(len(current)), current], 0.0, 1.0)
        # Counted by position (hashing every annotation's item id costs the history each round).
        where = self._row_positions(annotations)
        n_labels = np.bincount(where[where >= 0], minlength=len(arrived))
        by_expert = self._by_expert(annotations)
        has_expert = np.zeros(len(arrived) + 1, dtype=bool)  # the last slot: rows of items not arrived
        has_expert[where[by_expert]] = True
        eligible = (n_labels < MAX_LABELS) & ~has_expert[:-1]
        # Hashed membership on object ids: np.isin on strings compares every pair (quadratic in the
        # history), and pandas' Arrow-backed str isin costs ~10 us an item.
        is_new = pd.Index(arrived, dtype=object).isin(np.asarray(new, dtype=object))
        out = scores.assign(**{ITEM: arrived, LABEL: current, LABEL_ISSUE_SCORE: 1.0 - quality,
                               SELF_CONFIDENCE: probs[np.arange(len(current)), current], IS_NEW: is_new})
        return out[eligible].reset_index(drop=True), eligible

    def _drift_queue(self, round_: int, fresh: np.ndarray, x: np.ndarray, probs: np.ndarray, current: np.ndarray,
                     candidates: pd.DataFrame, eligible: np.ndarray, plan: pd.DataFrame,
                     costs: Any, *, posterior: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The round's drift check (:class:`~experiments.drift_watch.DriftWatch`): on an alert,
        the plan with the relabel queue's items routed to the alert's action (``drift.relabel_action``,
        or with ``auto`` chosen by what drifted)."""
        if self.drift is None:
            return plan, plan.iloc[:0][[ITEM, REASON, PRIORITY]]
        if round_ == self.cfg.drift.reference_rounds:  # rounds 0 .. reference_rounds - 1 are in
            self.drift.set_reference(len(self.dataset.arrived(round_ - 1)))
        predicted = probs.argmax(axis=1)
        pool = pool_frame(candidates, plan, np.flatnonzero(eligible), probs)
        report, queue = self.drift.check(round_, x=x, predicted=predicted, labels=current,
                                         current=self._positions(fresh), pool=pool, costs=costs, probs=probs,
                                         posterior=posterior)
        self.drift_figures = self.drift.figures(report)
        return merge_queue(plan, queue, self.drift.action, costs), queue

    def _drift_outcome(self, queue: pd.DataFrame, work: pd.DataFrame, before: pd.Series) -> float:
        """What the round's relabel queue cost (its items' share of the round's work) and did."""
        if self.drift is None or queue.empty:
            if self.drift_figures:
                self.drift_figures.update({T.DRIFT_RELABEL_ITEMS: 0.0, T.DRIFT_RELABEL_COST: 0.0})
            return 0.0
        mine = work[work[ITEM].astype(str).isin(queue[ITEM].astype(str).to_numpy(dtype=object))]
        cost = float(mine[COST].sum())
        self.drift_figures.update({T.DRIFT_RELABEL_ITEMS: float(len(queue)), T.DRIFT_RELABEL_COST: cost,
                                   **queue_outcome(queue, before, self._labels(), self.dataset.truth)})
        return cost

    def _route(self, candidates: pd.DataFrame, probs: np.ndarray) -> pd.DataFrame | None:
        """The tiered strategy's routing decisions, from the scorer port (the Serve app's Router)."""
        if self.cfg.strategy is not Strategy.TIERED:
            return None
        if candidates.empty:  # nothing to route: no request
            return route(candidates, self.cfg.thresholds)
        # A second request, after the scoring one, and it cannot be folded into it: the Router
        # decides on the label-issue scores (the double-blind cut-off, the priority), and those
        # depend on the probabilities of every arrived item (the posterior weighs the model
        # against the annotators with a weight fitted over all of them), so they exist only
        # once the scoring answer is back. Routing on the Scorer's model-only scores in the
        # first request instead would route on other scores than the program's. It carries
        # only what the Router needs: the candidates (not every arrived item), the
        # probabilities tiered decides on (not their features: the Router routes them
        # without asking the Scorer, so the model runs once per item per round) and their
        # label-issue scores.
        ids = candidates[ITEM].astype(str).to_numpy()
        decisions = self.scorer.route(ids, probs, candidates[LABEL_ISSUE_SCORE].to_numpy(dtype=np.float64),
                                      self.cfg.thresholds, labels=candidates[LABEL].to_numpy())
        # The auto-accept bound holds this round's auto-accepted items within it (AutoAcceptBound):
        # here, not in the Router's thresholds, so that a Serve app shared with others keeps its own.
        return self.bound.apply(decisions, ids, probs)

    def _store_predictions(self, arrived: np.ndarray, probs: np.ndarray, decisions: pd.DataFrame | None,
                           plan: pd.DataFrame, relabelled: np.ndarray, at: np.ndarray | None = None) -> None:
        """The champion's probabilities of the items that have none yet and of the items the plan
        gives people tasks for (what people open), with the route and reason of those routed,
        into the store's predictions: what Label Studio pre-annotates with
        (``export_label_studio``, ``labelloop labelstudio sync``).

        A new champion does not predict every arrived item again: the other items keep an earlier
        champion's prediction until a plan gives people a task about them (rewriting them all
        cost each promotion the stream's whole history). Auto-accepted items get no task, and
        under ``tiered`` the plan auto-accepts most settled items again every round: counting
        them made each promotion rewrite most of the history (~80,000 rows at 10^5 items). An
        auto-accept that changes the label (``relabelled``: the routed class, by arrival
        position, is not the current label) does get the deciding champion's prediction, with
        its route and reason: a label no person set keeps the record of what set it."""
        name = f"{self.stream}@{self.champion_version}"
        if name != self.predicted_by:
            self.store.add_model_version(name, uri=f"champion version {self.champion_version}")
            self.predicted_by, self.predicted = name, np.zeros(0, dtype=bool)
        # By arrival position (hashing every arrived id costs the history each round).
        n = len(arrived)
        ever, done = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        ever[:len(self.ever_predicted)], done[:len(self.predicted)] = self.ever_predicted, self.predicted
        acted = np.zeros(n, dtype=bool)
        acted[self._plan_rows(plan, plan[ACTION].isin(_PEOPLE_ACTIONS), at)] = True
        auto = np.zeros(n, dtype=bool)
        auto[self._plan_rows(plan, plan[ACTION] == Action.AUTO_ACCEPT.value, at)] = True
        acted |= auto & relabelled
        new = (~ever | acted) & ~done
        ever[new], done[new] = True, True
        self.ever_predicted, self.predicted = ever, done
        if not new.any():
            return
        rows = pd.DataFrame({ITEM: self._arrived[new].astype(str), "probs": list(probs[new])})
        if decisions is not None and not decisions.empty:
            why = decisions.assign(**{ITEM: decisions[ITEM].astype(str)}).set_index(ITEM)
            rows[ROUTE] = why[ROUTE].reindex(rows[ITEM]).to_numpy()
            rows[REASON] = why[REASON].reindex(rows[ITEM]).to_numpy()
        self.store.add_predictions(self.stream, name, rows)

    def _skills(self, posterior: np.ndarray, scores: pd.DataFrame, annotations: pd.DataFrame) -> pd.Series | None:
        """Under ``tiered``, the crowd's estimated skills (:func:`loop.issues.annotator_skills`
        on the round's posterior): its crowd work goes to the most skilled of the people who may
        answer. The other strategies draw their annotators at random, as their definitions say."""
        if self.cfg.strategy is not Strategy.TIERED or annotations.empty:
            return None
        by_crowd = ~self._by_expert(annotations)
        if not by_crowd.any():
            return None
        by_position = self._positional(annotations)
        if by_position is not None:
            skills = annotator_skills(posterior, annotations=by_position[by_crowd])
            names = np.asarray(self._who_names, dtype=object)[skills.index.to_numpy(dtype=np.int64)]
            return skills.set_axis(pd.Index(names, dtype=object))
        crowd = annotations.loc[by_crowd, [ITEM, ANNOTATOR, LABEL]]
        return annotator_skills(posterior, annotations=crowd.astype({ITEM: str}),
                                item_ids=scores[ITEM].astype(str).to_numpy(dtype=object))

    def _execute(self, plan: pd.DataFrame, round_: int, annotations: pd.DataFrame,
                 prefer: pd.Series | None = None) -> pd.DataFrame:
        """Ask the workforce for the plan's labels; write tasks and annotations; return the answers.

        The round's work goes out at once, then its answers are collected (a workforce of
        people answers later); adjudication goes out once the double-blind pairs are in.
        ``prefer``: the crowd's skills, by annotator id (see :class:`experiments.ports.Request`)."""
        wf, rng = self.workforce, self.rng
        exclude = annotations[[ITEM, ANNOTATOR]]
        # In arrays, for the actions that ask people only: under tiered the plan holds most settled
        # items (auto-accepts), and indexing the plan by id cost every one of them.
        action, item = plan[ACTION].to_numpy(dtype=object), plan[ITEM].array
        ids = {a: pd.Index(item[action == a.value], name=ITEM)
               for a in (Action.REVIEW, Action.DOUBLE_BLIND, Action.TRIPLE, Action.EXPERT)}
        where = self._row_positions(annotations)
        crowd_work = [wf.submit(Request(ids[a], labels_per_item=a.crowd_labels,
                                        exclude=self._rows_about(exclude, where, ids[a]),
                                        kind=_TASK_KINDS[a], round=round_, prefer=prefer), rng=rng)
                      for a in (Action.REVIEW, Action.DOUBLE_BLIND, Action.TRIPLE)]
        expert_work = wf.submit(Request(ids[Action.EXPERT], expert=True,
                                        exclude=self._rows_about(exclude, where, ids[Action.EXPERT]),
                                        kind="expert", round=round_), rng=rng)
        crowd = pd.concat([self._collect(t) for t in crowd_work], ignore_index=True)
        experts = self._collect(expert_work)
        first = pd.concat([crowd, experts], ignore_index=True)
        self._write_answers(first, round_, _CROWD_START)
        # Double-blind pairs that disagree go to an expert who labelled neither.
        pairs = crowd[crowd[ITEM].isin(ids[Action.DOUBLE_BLIND])]
        split = pairs.groupby(ITEM)[LABEL].nunique()
        disputed = split.index[split > 1]
        earlier = self._rows_about(exclude, where, disputed)
        seen = pd.concat([earlier, first.loc[first[ITEM].isin(disputed), [ITEM, ANNOTATOR]]], ignore_index=True)
        adjudication = self._collect(wf.submit(Request(disputed, expert=True, exclude=seen, kind="adjudication",
                                                       round=round_), rng=rng))
        self._write_answers(adjudication, round_, _ADJUDICATION_START)
        return pd.concat([first, adjudication], ignore_index=True)

    def _collect(self, ticket: Ticket) -> pd.DataFrame:
        """The answers of a ticket. A round waits for its answers; a workforce whose answers are
        not in yet (people) needs the annotation team's waiting, not supported yet."""
        answers = self.workforce.collect(ticket)
        if answers is None:
            raise LoopError(f"the workforce has not answered request {ticket.id} yet: the program's rounds need "
                            "their answers within the round")
        return answers

    def _write_answers(self, answers: pd.DataFrame, round_: int, offset: pd.Timedelta) -> None:
        """Tasks (each at its annotator's tier) and the annotations that answer them, in batched
        writes stamped by the program's clock (simulated time by default); the tasks are then
        closed by their ids. Answers already stored with their task (people answered through
        the task API) are not written again."""
        if TASK_ID in answers.columns:
            answers = answers[answers[TASK_ID].isna()]
        if answers.empty:
            return
        start = self.clock(round_, offset)
        # Each annotator works through their queue back to back.
        done = answers[SECONDS].astype(np.float64).groupby(answers[ANNOTATOR]).cumsum()
        stamps = start + pd.to_timedelta(done, unit="s")
        tasks = self.store.add_tasks(self.stream, pd.DataFrame({
            ITEM: answers[ITEM].to_numpy(), "tier": answers[ANNOTATOR].map(self.tiers).to_numpy(),
            ANNOTATOR: answers[ANNOTATOR].to_numpy(),
            "idempotency_key": [f"{self.stream}:{round_}:{i}:{a}" for i, a in zip(answers[ITEM], answers[ANNOTATOR])]}))
        self.store.add_annotations(self.stream, pd.DataFrame({
            ITEM: answers[ITEM].to_numpy(), ANNOTATOR: answers[ANNOTATOR].to_numpy(),
            LABEL: answers[LABEL].to_numpy(dtype=np.int64), SECONDS: answers[SECONDS].to_numpy(dtype=np.float64),
            CREATED_AT: stamps.to_numpy(), TASK_ID: list(tasks.ids)}))
        # Every task of this batch was just answered: close them in one write, by id (reading the
        # stream's assigned tasks instead would cost its whole history).
        self.store.set_task_statuses(list(tasks.ids), "done", reason="answered")

    def _resolve(self, plan: pd.DataFrame, answers: pd.DataFrame, annotations: pd.DataFrame,
                 scores: pd.DataFrame, probs: np.ndarray, current: np.ndarray,
                 at: np.ndarray | None = None) -> pd.DataFrame:
        """New labels of the items acted on (:func:`loop.resolution.resolve_actions`), but for the
        auto-accepts that keep their label. ``scores``: the routed signals of the arrived items and
        ``current`` their labels, in arrival order; ``at``: the plan's arrival positions."""
        predicted = scores["predicted"].to_numpy(dtype=np.int64)
        if at is not None:
            # An auto-accept of the label an item has resolves to that label, and _write_resolutions
            # would drop it: under tiered most settled items every round (~76,000 at 10^5), whose
            # resolving and comparing cost the history. The rest go in with their own positions.
            auto = (plan[ACTION] == Action.AUTO_ACCEPT.value).to_numpy()
            going = ~(auto & (predicted[at] == current[at]))
            plan, at = plan[going], at[going]
            ids = pd.Index(plan[ITEM].astype(str).to_numpy(dtype=object), dtype=object)
            by_item = pd.Series(predicted[at], index=ids)
        else:
            # By object ids: an Arrow str index (what astype(str) gives) looks ids up at twice the cost.
            by_item = pd.Series(predicted, index=pd.Index(scores[ITEM].astype(str).to_numpy(dtype=object),
                                                          dtype=object))
        posterior = None
        reviewed = (plan[ACTION] == Action.REVIEW.value).to_numpy()
        if self.cfg.strategy is Strategy.TIERED and reviewed.any():
            # The posterior after this round's answers: the model breaks ties between annotators.
            after = self._posteriors(probs, scores, annotations)
            posterior = (pd.DataFrame(after[at[reviewed]], index=ids[reviewed]) if at is not None else
                         pd.DataFrame(after, index=scores[ITEM].astype(str).to_numpy()))
        return resolve_actions(plan, answers, annotations, strategy=self.cfg.strategy, experts=self.experts,
                               predicted=by_item, posterior=posterior, rng=self.ties)

    def _write_resolutions(self, labels: pd.DataFrame, before: pd.Series) -> None:
        """Write the labels that changed, each superseding the item's current resolution.
        ``before``: every arrived item's label, in arrival order (:meth:`_labels_arrived`)."""
        if labels.empty:
            return
        heads = self.history.heads()
        changed = labels[labels[LABEL].to_numpy() != before.iloc[self._positions(labels[ITEM])].to_numpy()]
        if changed.empty:
            return
        self.store.add_resolutions(self.stream, changed.assign(supersedes=heads.reindex(changed[ITEM]).to_numpy()))

    def _track_strata(self, plan: pd.DataFrame, at: np.ndarray | None = None) -> None:
        """Record the stratum of each item the plan acted on (by its action); ``at``: the plan's
        arrival positions (:meth:`_plan_positions`)."""
        action = plan[ACTION].to_numpy(dtype=object)
        acting = action != Action.KEEP.value
        strata = map_codes(action[acting], _ACTION_STRATUM, dtype=object)
        if self._strata_in_arrival_order():
            # By arrival position: under tiered the plan acts on most settled items again every
            # round (auto-accepts), and a label lookup of each against a new index cost ~30 ms.
            self.stratum.iloc[self._plan_rows(plan, acting, at)] = strata
        else:
            self.stratum.loc[plan.loc[acting, ITEM].astype(str).to_numpy()] = strata

    def _strata_in_arrival_order(self) -> bool:
        return np.array_equal(self.stratum.index.to_numpy(dtype=object), self._arrived)

    def _strata_of(self, item_ids: np.ndarray) -> np.ndarray:
        """The stratum of each of ``item_ids``, untouched where none is recorded: by arrival
        position while the strata are in arrival order (they are a new Series each round, and a
        lookup by id hashed every arrived id first), else by id."""
        pos = self._positions(item_ids, missing=-1)
        if (pos >= 0).all() and self._strata_in_arrival_order():
            strata = self.stratum.to_numpy(dtype=object)[pos]
            return np.where(pd.isna(strata), _UNTOUCHED, strata)
        return self.stratum.reindex(item_ids).fillna(_UNTOUCHED).to_numpy()

    def _audit(self, arrived: np.ndarray, round_: int, annotations: pd.DataFrame) -> AuditResult | None:
        """An adjudicated, stratified expert audit: the error-rate estimates, then corrections
        that two independent experts agree on. Never reads the truth (the simulated experts do)."""
        if self.cfg.audit_rate == 0:
            return None
        # With audit_scope fresh, a label keeps its verdict until it changes: the audit draws from
        # the labels new or changed since the last one and carries the earlier audits' count.
        ids = np.asarray(arrived, dtype=object).astype(str).astype(object)
        labels = self._labels_arrived(pd.Index(ids, dtype=object))
        carried = self.cfg.audit_scope is AuditScope.FRESH
        now = labels.to_numpy(dtype=np.float64) if carried else None
        old = self.ledger.old_labels(ids) if carried else None
        is_fresh = np.isnan(old) | (old != now) if carried else np.ones(len(ids), dtype=bool)  # all: every label
        fresh = ids[is_fresh]
        if fresh.size == 0:
            return None
        # Only the fresh items' rows: who may not answer them again (not the stream's every annotation).
        exclude = self._rows_about(annotations[[ITEM, ANNOTATOR]], self._row_positions(annotations), fresh)
        # An item every expert has labelled already (routed, adjudicated, audited) has no expert
        # left to audit it: the audit draws from the other items.
        experts_per_item = exclude[exclude[ANNOTATOR].isin(self.experts)].groupby(ITEM)[ANNOTATOR].nunique()
        checked_by_all = experts_per_item.index[experts_per_item >= len(self.experts)]
        population = fresh[~pd.Index(fresh, dtype=object).isin(checked_by_all.to_numpy(dtype=object))]
        if population.size == 0:
            return None
        # The audit's own random numbers, the same for every strategy of a seed: the same items,
        # mostly the same experts and seconds, so audits (part of every strategy's cost, and with
        # their overrun of its budget) differ between strategies as little as they can.
        rng = np.random.default_rng([self.cfg.seed, 17, round_])
        # Today's spend in expert labels, second opinions included: the first checks are fewer
        # by the share of first checks that needed a second opinion so far, after a prior worth
        # five checks: the posterior's mean doubt in the labels (an expert disputes a wrong label).
        spend = int(np.ceil(self.cfg.audit_rate * fresh.size))
        share = self.book.second_share(self.doubt)
        strata = self._strata_of(population)
        design = np.where(strata == _AUTO, _AUTO, "rest")
        sample = stratified_sample(population, design, max(1, int(round(spend / (1 + share)))), rng)
        earlier = exclude[exclude[ITEM].isin(sample)]
        first = self._collect(self.workforce.submit(Request(sample, expert=True, exclude=earlier, kind="audit",
                                                            round=round_), rng=rng))
        self._write_answers(first, round_, _AUDIT_START)
        # People may leave an audit task unanswered (its time ran out): the audit is what was answered.
        sample = sample[pd.Index(sample, dtype=object).isin(first[ITEM].astype(str).to_numpy(dtype=object))]
        if sample.size == 0:
            return None
        first = first.set_index(ITEM)[[ANNOTATOR, LABEL]].reindex(sample)
        current = labels.iloc[self._positions(sample)].to_numpy(dtype=np.int64)
        sample_strata = pd.Series(strata, index=population).reindex(sample).to_numpy()
        doubt = dispute_posterior(self.book.error_rates(self.doubt).reindex(sample_strata).to_numpy(),
                                  self.book.expert_accuracy())
        is_disputed = first[LABEL].to_numpy() != current
        decisive = is_disputed & (doubt >= DECISIVE_DISPUTE)
        disputed = sample[is_disputed & ~decisive]
        seen = pd.concat([earlier, first.reset_index()[[ITEM, ANNOTATOR]]], ignore_index=True)
        # Only where an expert who has not labelled the item is left (see audit_verdict otherwise).
        used = seen[seen[ANNOTATOR].isin(self.experts)].groupby(ITEM)[ANNOTATOR].nunique()
        askable = disputed[used.reindex(disputed).fillna(0).to_numpy() < len(self.experts)]
        second = self._collect(self.workforce.submit(Request(askable, expert=True, exclude=seen, kind="audit",
                                                             round=round_), rng=rng))
        self._write_answers(second, round_, _AUDIT_START + pd.Timedelta(hours=2))
        verdict = audit_verdict(sample, current, first[LABEL].to_numpy(dtype=np.int64),
                                second.set_index(ITEM)[LABEL].reindex(sample).to_numpy(dtype=np.float64), decisive)
        fixes = verdict[verdict["fix"]]
        self._write_resolutions(pd.DataFrame({
            ITEM: fixes[ITEM].to_numpy(), LABEL: fixes["first"].to_numpy(dtype=np.int64), "method": METHOD_EXPERT,
            REASON: np.where(fixes["decisive"],
                             "corrected by a random audit: one expert's dispute is decisive in the label's stratum",
                             "corrected by a random audit: two independent experts agreed against the label")}), labels)
        audit = estimate_audit(verdict, pd.Series(strata, index=population), pd.Series(design, index=population),
                               round_)
        if carried:
            audit = self._carry(audit, verdict, old, now, ids, is_fresh, sample, population, design, fixes)
        self.book.record(verdict, sample_strata, askable.size, audit, self.router)
        self.stratum.loc[fixes[ITEM].to_numpy()] = _EXPERT
        return audit

    def _carry(self, audit: AuditResult, verdict: pd.DataFrame, old: np.ndarray, now: np.ndarray, ids: np.ndarray,
               is_fresh: np.ndarray, sample: np.ndarray, population: np.ndarray, design: np.ndarray,
               fixes: pd.DataFrame) -> AuditResult:
        """``audit`` with the whole set's estimate carried forward (``audit_scope: fresh``), and
        the ledger moved on to the labels after this audit's corrections."""
        drawn = pd.Index(population, dtype=object).get_indexer(sample)
        # ``ids`` are the arrived ids in arrival order: the sample and fixes by their positions (a
        # hash table of every arrived id cost ~20 ms at 10^5).
        estimate, errors, variance = estimate_carried(
            self.ledger, change_terms(verdict, old[self._positions(sample)]),
            design[drawn], design, len(ids), float((verdict["wrong"] - verdict["wrong_after"]).sum()))
        after = now.copy()
        after[self._positions(fixes[ITEM].to_numpy(dtype=object))] = fixes["first"].to_numpy()
        self.ledger = AuditLedger(ids=ids, labels=after, errors=errors, variance=variance,
                                  audited=self.ledger.audited + len(sample),
                                  changed=int((~np.isnan(old) & is_fresh).sum()))
        return with_estimate(audit, estimate, len(ids))

    def _out_of_sample(self, arrived: np.ndarray, scores: pd.DataFrame,
                       probs: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
        """The champion's probabilities, with its training items' rows out of fold (and their scores
        recomputed): what the program judges labels and routes on."""
        where = self._positions(self.out_of_fold.index, missing=-1)
        if len(arrived) != len(self._arrived) or (where < 0).any():
            known = self.out_of_fold.index.get_indexer(pd.Index(arrived.astype(str)))
        else:
            # By arrival position: the model's training items (at most max_fit_items) looked up
            # among the arrived, not every arrived id hashed against them.
            known = np.full(len(arrived), -1, dtype=np.int64)
            known[where] = np.arange(len(where))
        trained = known >= 0
        if not trained.any():
            return scores, probs
        probs = probs.copy()
        probs[trained] = self.out_of_fold.to_numpy()[known[trained]]
        # The signals are row by row: only the training items' rows change (at most max_fit_items;
        # scoring every arrived item again cost the history).
        rows = np.flatnonzero(trained)
        fresh = score_items(probs[rows])
        signals = fresh.columns.drop(ITEM)
        if list(scores.columns) != list(fresh.columns) or any(scores[c].dtype != fresh[c].dtype for c in signals):
            # Another scorer's frame (the Serve app's over HTTP, say): every row in the same form.
            return score_items(probs, item_ids=np.asarray(scores[ITEM], dtype=object)), probs
        scores = scores.copy()
        for column in signals:
            values = scores[column].to_numpy(copy=True)
            values[rows] = fresh[column].to_numpy()
            scores[column] = values
        return scores, probs

    # -- measuring ---------------------------------------------------------------------------
    def _log_round(self, round_: int, *, pairs: pd.DataFrame | None, plan: pd.DataFrame | None,
                   extra: dict[str, float] | None = None, **figures: Any) -> None:
        """Measure the round (:class:`~experiments.measure.Measures`) and log it with ``step = round``
        (``extra``: figures measured elsewhere, e.g. the annotators' impact)."""
        row = self.measures.round_row(round_, plan=plan, pairs=pairs, annotations=self.history.annotations(),
                                      stats=self.history.metrics(resolution_hours=False),
                                      cutoff=self.bound.cutoff if self.cfg.strategy is Strategy.TIERED else None,
                                      **figures)
        if extra:
            row.update(extra)
            self.measures.rows[-1].update(extra)
        if pairs is not None and len(pairs):
            self.tracker.log_table(pairs, T.CONFUSED_PAIRS_CSV)
        if self.drift_figures:  # in the round's row (rounds.csv) too
            row.update(self.drift_figures)
            self.measures.rows[-1].update(self.drift_figures)
            self.drift_figures = {}
        self.tracker.log_metrics(row, step=round_)

    def _log_impact(self, round_: int, out_of_fold: pd.DataFrame | None) -> dict[str, float]:
        """Close the round in the store; log its per-annotator impact table (:mod:`experiments.impact`)."""
        table, metrics = self.impact.close(round_, out_of_fold=out_of_fold,
                                           truth=self.dataset.truth if self.measures.known else None)
        self.tracker.log_table(table, T.impact_table_path(round_))
        return metrics

    def _log_routed(self, round_: int, plan: pd.DataFrame, candidates: pd.DataFrame, before: pd.Series,
                    after: pd.Series, at: np.ndarray | None = None) -> None:
        self.tracker.log_table(self.measures.routed_table(plan, candidates, before, after, at),
                               T.routed_table_path(round_))

    def _log_plots(self, rounds: pd.DataFrame, probs: np.ndarray, truth: np.ndarray) -> None:
        t = self.tracker
        metric = T.TRUE_ERROR_RATE if self.measures.known else T.AUDIT_ERROR_RATE
        t.log_figure(T.plot_error_vs_cost({self.cfg.strategy.value: rounds}, metric=metric), T.ERROR_VS_COST_PNG)
        t.log_figure(T.plot_reliability(reliability_table(probs, truth)), T.RELIABILITY_PNG)
        t.log_figure(T.plot_confusion_matrix(truth, probs.argmax(axis=1), self.dataset.classes), T.CONFUSION_PNG)


def _classifier(model: ModelConfig | None = None):
    """A new estimator as ``program``'s ``model:`` section says (the built-in one by default)."""
    return make_estimator(model)


def _new_stream(store: LabelStore, base: str, classes: tuple[str, ...]) -> str:
    """Create a fresh stream named ``base`` (or ``base-2``, ``base-3``... when taken)."""
    from loop.exceptions import SchemaError

    for n in range(1, 10_000):
        name = base if n == 1 else f"{base}-{n}"
        try:
            store.stream(name)
        except SchemaError:
            store.create_stream(name, list(classes))
            return name
    raise RuntimeError("no free stream name")  # pragma: no cover


def _disagreement_hours(labels: np.ndarray, stamps: pd.DatetimeIndex, group: np.ndarray) -> float:
    """Median hours from first to last label over the groups (items) whose ``labels`` disagree;
    one entry per label: its class code, its time and its item's group code."""
    if group.size == 0:
        return float("nan")
    order = np.argsort(group, kind="stable")
    group, labels, ticks = group[order], labels[order], stamps.asi8[order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    disagree = np.minimum.reduceat(labels, starts) != np.maximum.reduceat(labels, starts)
    if not disagree.any():
        return float("nan")
    span = np.maximum.reduceat(ticks, starts) - np.minimum.reduceat(ticks, starts)
    spans = pd.Series(span[disagree].astype(f"timedelta64[{stamps.unit}]"))
    return float(spans.dt.total_seconds().median() / 3600)
