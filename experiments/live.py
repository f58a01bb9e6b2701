"""The program with people as its workforce: ``labelloop serve``.

The same round loop as a simulation (:func:`experiments.program.run_program`: score, route,
plan, annotate, resolve, audit, retrain, gate, measure), over two other adapters of its ports
(:mod:`experiments.ports`) and a schedule:

- :class:`StoreDataset` (the *Dataset* port): items come from a label-store stream (stored by
  ``POST /v1/items``, or from a table by :func:`ingest_table`). Features are the payload's
  ``features``; an item arrives in the first round after it was stored, with its initial label
  from the payload's ``label`` (a class name or code) or its existing resolution, by the
  annotator :data:`CURRENT_LABEL`; an item with neither waits. A restarted service takes up the
  items an earlier session had in its seed round (their labels and history as they are). The
  gold are the items whose label an expert confirmed or adjudicated and that never arrived (a
  team's gold set, e.g. a table's ``gold`` column): a third fits the temperature, the rest
  evaluates models, and they never arrive, so they never train. There is no truth (``truth is
  None``): the program computes and logs only its estimated figures.
- :class:`HumanWorkforce` (the *Workforce* port): :meth:`~HumanWorkforce.submit` turns a request
  into tasks in the store (kind ``label``, ``double_blind``, ``expert``, ``adjudication`` or
  ``audit``; crowd work at tier 1, expert work at the expert tier, 3; the round; due
  ``sla_seconds`` from now), which people claim and answer through the task API
  (``GET /v1/tasks/next``, ``POST /v1/tasks/{id}/annotations``) or Label Studio; people see the
  champion's prediction of the round on tasks that are not blind;
  :meth:`~HumanWorkforce.collect` waits (polling the store) until every task of the request is
  answered or its time ran out, returns the answers people stored (never an invented one) and
  escalates the tasks left unanswered (``LabelStore.escalate_overdue``: ``escalated_at`` and an
  event), then cancels them (a ``task.status`` event saying why). A round goes on with what
  came in.
- :class:`RoundSchedule`: a round starts once ``live.round_items`` items wait or the oldest has
  waited ``live.round_seconds``; it takes at most ``round_items`` of them, the oldest first.
  Ctrl-C while waiting ends the program cleanly (the last round is finished and logged).

Every round is a step of the program's MLflow run and a nested run of its own
(:class:`RoundRuns`: the round's estimated figures, the gate's verdict and reason).

Examples
--------
>>> from experiments.config import parse_config
>>> cfg = parse_config({"live": {"round_items": 50}, "store": {"url": "sqlite:///labels.db"}})
>>> result = serve_program(cfg)  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from loop.columns import ANNOTATOR, COST, ITEM, LABEL, SECONDS
from loop.exceptions import LoopError
from loop.resolution import METHOD_ADJUDICATED, METHOD_EXPERT
from loop.simulate import Tier
from loop.store import PAYLOAD, TASK_ID, LabelStore
from loop.strategies import TaskCosts

from . import tracking as T
from .config import ProgramConfig
from .experiment import ExperimentSettings, LiveArm, assign_arms, live_arms
from .ports import Request, Ticket
from .program import ProgramResult, _serving, make_tracker, run_program, wall_clock
from .table import Table
from .world import TIER_CODES, expected_cost

__all__ = ["CURRENT_LABEL", "HumanWorkforce", "RoundRuns", "RoundSchedule", "StoreDataset", "ingest_table",
           "serve_program"]

CURRENT_LABEL = "current-label"  # the annotator of the labels items arrive with
GOLD_METHODS = (METHOD_EXPERT, METHOD_ADJUDICATED)
CALIBRATION_SHARE = 1 / 3  # of the gold: fits the temperature; the rest evaluates models
MIN_GOLD = 20
FEATURES = "features"
_TIER_NAMES = {code: name for name, code in TIER_CODES.items()}
_CROWD_TIER, _EXPERT_TIER = TIER_CODES[Tier.NOVICE.value], TIER_CODES[Tier.EXPERT.value]
_ANSWER_COLUMNS = [ITEM, ANNOTATOR, LABEL, SECONDS, COST, TASK_ID]
Now = Callable[[], float]  # seconds (time.time, or a test's clock)
Sleep = Callable[[float], None]


# --- Dataset -----------------------------------------------------------------------------------


class StoreDataset:
    """A label-store stream as the program's :class:`~experiments.ports.Dataset` (see the module
    docstring). Arrivals are decided when a round asks for them (:meth:`arrivals`), from the
    items :meth:`poll` has seen.

    Parameters
    ----------
    store : LabelStore
    stream : str
        An existing stream.
    round_items : int
        At most this many items arrive in a round (the oldest waiting first).
    seed : int
        Splits the gold into calibration and holdout.

    Raises
    ------
    LoopError
        Fewer than :data:`MIN_GOLD` gold items, or a gold item without features.
    """

    truth = None  # nobody knows it

    def __init__(self, store: LabelStore, stream: str, *, round_items: int, seed: int) -> None:
        self.store, self.name, self.round_items = store, stream, round_items
        self.classes = store.stream(stream).classes
        self._features: dict[str, np.ndarray] = {}
        self._labels: dict[str, int] = {}  # the label each seen item arrives with
        self._rows: dict[str, dict[str, Any]] = {}  # as stored: what registers it again unchanged
        self._waiting: list[str] = []  # seen, not arrived, in arrival order
        self._batches: list[np.ndarray] = []
        self._last_row: int | None = None
        self.initial = pd.DataFrame({ITEM: pd.Series(dtype=object), ANNOTATOR: pd.Series(dtype=object),
                                     LABEL: pd.Series(dtype=np.int64), SECONDS: pd.Series(dtype=np.float64),
                                     COST: pd.Series(dtype=np.float64)})
        resolved = store.resolved_labels(stream)
        self._resolved = pd.Series(resolved[LABEL].to_numpy(dtype=np.int64),
                                   index=pd.Index(resolved[ITEM].astype(str), dtype=object))
        # Items that arrived in an earlier session (they have their initial label by
        # CURRENT_LABEL) arrive again first, all in the seed round, and are never gold (an
        # audit's expert correction of a training item is not evaluation gold).
        recorded = store.annotations_frame(stream)
        self._resumed = set(recorded.loc[recorded[ANNOTATOR] == CURRENT_LABEL, ITEM].astype(str))
        gold = resolved[resolved["method"].isin(GOLD_METHODS) & ~resolved[ITEM].astype(str).isin(self._resumed)]
        gold_ids = gold[ITEM].astype(str).to_numpy(dtype=object)
        self._gold = set(gold_ids)
        self.poll()
        if len(gold_ids) < MIN_GOLD:
            raise LoopError(f"stream {stream!r}: expected at least {MIN_GOLD} gold items (labels an expert confirmed "
                            f"or adjudicated, e.g. a table's gold column) to calibrate and evaluate models, "
                            f"got {len(gold_ids)}")
        missing = [i for i in gold_ids if i not in self._features]
        if missing:
            raise LoopError(f"stream {stream!r}: gold item {missing[0]!r} has no payload 'features'")
        order = np.random.default_rng([seed, 31]).permutation(len(gold_ids))
        cut = max(1, int(round(len(gold_ids) * CALIBRATION_SHARE)))
        labels = gold[LABEL].to_numpy(dtype=np.int64)
        self.calibration = pd.Series(labels[order[:cut]], index=pd.Index(gold_ids[order[:cut]], name=ITEM))
        self.holdout = pd.Series(labels[order[cut:]], index=pd.Index(gold_ids[order[cut:]], name=ITEM))

    # -- what the round schedule reads --------------------------------------------------------
    def poll(self) -> list[str]:
        """Read the items stored since the last poll; returns the ids waiting to arrive (those
        with features and a label to arrive with), oldest first."""
        new = self.store.items_frame(self.name, after=self._last_row)
        if not new.empty:
            self._last_row = int(new["item_row"].iloc[-1])
        for row in new.itertuples(index=False):
            item = str(row.item_id)
            payload = row.payload if isinstance(row.payload, Mapping) else {}
            self._rows[item] = {ITEM: item, PAYLOAD: row.payload, "payload_ref": row.payload_ref, "source": row.source}
            if FEATURES in payload:
                self._features[item] = np.asarray(payload[FEATURES], dtype=np.float64)
            label = self._label_of(item, payload)
            if label is not None:
                self._labels[item] = label
            if item not in self._gold and item in self._features and label is not None:
                self._waiting.append(item)
        return list(self._waiting)

    def _label_of(self, item: str, payload: Mapping[str, Any]) -> int | None:
        """The label an item arrives with: its payload's (a class name or code), else its resolution."""
        value = payload.get(LABEL)
        if isinstance(value, str) and value in self.classes:
            return self.classes.index(value)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < len(self.classes):
            return int(value)
        return int(self._resolved[item]) if item in self._resolved.index else None

    # -- the port ------------------------------------------------------------------------------
    def arrivals(self, round_: int) -> np.ndarray:
        while len(self._batches) <= round_:
            # The seed round takes every item an earlier session had, then round_items new ones.
            take = self.round_items + (sum(i in self._resumed for i in self._waiting) if not self._batches else 0)
            batch, self._waiting = self._waiting[:take], self._waiting[take:]
            ids = np.asarray(batch, dtype=object)
            self._batches.append(ids)
            labels = np.asarray([self._labels[i] for i in batch], dtype=np.int64)
            self.initial = pd.concat([self.initial, pd.DataFrame({
                ITEM: ids, ANNOTATOR: CURRENT_LABEL, LABEL: labels, SECONDS: 0.0, COST: 0.0})], ignore_index=True)
        return self._batches[round_]

    def arrived(self, round_: int) -> np.ndarray:
        return np.concatenate([np.asarray([], dtype=object), *self._batches[:round_ + 1]])

    def x(self, item_ids: Any) -> np.ndarray:
        return np.stack([self._features[str(i)] for i in item_ids]).astype(np.float64)

    def items(self, item_ids: Any) -> pd.DataFrame:
        return pd.DataFrame([self._rows[str(i)] for i in item_ids], columns=[ITEM, PAYLOAD, "payload_ref", "source"])


# --- Workforce ---------------------------------------------------------------------------------


class HumanWorkforce:
    """The stream's people as the program's :class:`~experiments.ports.Workforce` (see the module
    docstring).

    Parameters
    ----------
    store : LabelStore
    stream : str
    sla_seconds : float
        A task is due this long after it was made; unanswered then, it is escalated.
    poll_seconds : float
        How often :meth:`collect` reads the store while answers are missing.
    now, sleep : callable, optional
        The clock (seconds) and the wait, ``time.time`` and ``time.sleep`` by default; a test
        injects its own (its ``sleep`` may let scripted annotators answer).
    """

    def __init__(self, store: LabelStore, stream: str, *, sla_seconds: float, poll_seconds: float,
                 now: Now = time.time, sleep: Sleep = time.sleep, arms: Sequence[LiveArm] = (),
                 seed: int = 0) -> None:
        self.store, self.stream = store, stream
        # A live experiment: crowd label tasks go to these arms at random (assign_arms).
        self.arms, self.seed = tuple(arms), seed
        self.assigned = {a.name: 0 for a in self.arms}
        self.sla_seconds, self.poll_seconds, self.now, self.sleep = sla_seconds, poll_seconds, now, sleep
        self.costs = TaskCosts(crowd=expected_cost(Tier.NOVICE), expert=expected_cost(Tier.EXPERT))
        self._session = uuid.uuid4().hex[:12]  # task keys of this run: a new run never reuses one
        self._ids = itertools.count()
        self._tickets: dict[int, tuple[list[int], float, int]] = {}  # task ids, deadline, annotation mark
        self._mark = 0  # the largest annotation id read so far
        self.escalated: list[int] = []

    @property
    def annotators(self) -> pd.DataFrame:
        """Everyone on the stream: ``annotator_id, tier, hourly_rate`` (tier by name)."""
        people = [a for a in self.store.annotators() if a.active and self.stream in a.streams]
        return pd.DataFrame({ANNOTATOR: [a.name for a in people],
                             "tier": [_TIER_NAMES.get(a.tier, Tier.NOVICE.value) for a in people],
                             "hourly_rate": [a.hourly_rate for a in people]})

    def submit(self, request: Request, *, rng: np.random.Generator) -> Ticket:
        ticket = Ticket(next(self._ids), request)
        ids = np.asarray(request.item_ids, dtype=object).astype(str)
        copies = 1 if request.expert else request.labels_per_item
        kind = request.task_kind
        deadline = self.now() + self.sla_seconds
        task_ids: list[int] = []
        if ids.size:
            items = np.repeat(ids, copies)
            copy = np.tile(np.arange(copies), ids.size)
            tasks = pd.DataFrame({
                ITEM: items, "tier": _EXPERT_TIER if request.expert else _CROWD_TIER, "kind": kind,
                "round": request.round, "due_at": pd.Timestamp(deadline, unit="s", tz="UTC").floor("us"),
                "idempotency_key": [f"{self.stream}:{self._session}:{ticket.id}:{i}:{c}" for i, c in zip(items, copy)]})
            if self.arms and kind == "label" and not request.expert:
                self._randomise(tasks)
            task_ids = list(self.store.add_tasks(self.stream, tasks).ids)
        self._tickets[ticket.id] = (task_ids, deadline, self._mark)
        return ticket

    def _randomise(self, tasks: pd.DataFrame) -> None:
        """Give each task an arm: the guideline version it shows and whether it shows the
        suggestion, which the answer then records (what ``labelloop experiment`` measures)."""
        chosen = [self.arms[i] for i in assign_arms(tasks["idempotency_key"], len(self.arms), self.seed)]
        tasks["guideline_version"] = pd.array([a.guideline_version for a in chosen], dtype="Int64")
        tasks["blind"] = [not a.suggestion for a in chosen]
        for arm in chosen:
            self.assigned[arm.name] += 1

    def collect(self, ticket: Ticket) -> pd.DataFrame:
        """Wait until every task of the ticket is answered or due, then the answers people gave."""
        task_ids, deadline, mark = self._tickets.pop(ticket.id)
        if not task_ids:
            return pd.DataFrame(columns=_ANSWER_COLUMNS)
        wanted = set(task_ids)
        while True:
            # Everything stored since the ticket was made, read again each time (not from the
            # last id seen: on PostgreSQL two answers may commit out of id order); a round's worth.
            stored = self.store.annotations_frame(self.stream, after=mark)
            answers = stored[stored[TASK_ID].isin(wanted)].drop_duplicates(TASK_ID, keep="first")
            # Past due when due_at < now, as the task API counts it.
            if len(answers) == len(wanted) or self.now() > deadline:
                break
            self.sleep(min(self.poll_seconds, max(0.0, deadline - self.now()) + 1e-3))
        if not stored.empty:
            self._mark = max(self._mark, int(stored["annotation_id"].max()))
        # What people did not answer in time: escalated (``escalated_at`` and an event, the task
        # API's SLA rule), then cancelled, so that nobody spends time on work the round no longer
        # waits for; never answered for them.
        late = sorted(wanted - set(answers[TASK_ID].astype(int)))
        if late:
            self.store.escalate_overdue(pd.Timestamp(self.now(), unit="s", tz="UTC").ceil("us"))
            self.store.set_task_statuses(late, "cancelled", reason=f"escalated: not answered within the SLA "
                                                                   f"({self.sla_seconds:g} s, live.sla_seconds)")
            self.escalated.extend(late)
        return answers[_ANSWER_COLUMNS].reset_index(drop=True).astype({ITEM: str})


# --- the schedule ------------------------------------------------------------------------------


class RoundSchedule:
    """When the next round starts (``run_program``'s ``schedule``): once ``round_items`` items
    wait or the oldest has waited ``round_seconds`` (by this schedule's clock, from when it was
    first seen). Returns False to end the program: after ``max_rounds`` rounds, on Ctrl-C while
    waiting, or when ``stop()`` says so.
    """

    def __init__(self, dataset: StoreDataset, *, round_items: int, round_seconds: float, poll_seconds: float,
                 max_rounds: int | None = None, now: Now = time.time, sleep: Sleep = time.sleep,
                 stop: Callable[[], bool] = lambda: False) -> None:
        self.dataset, self.round_items, self.round_seconds = dataset, round_items, round_seconds
        self.poll_seconds, self.max_rounds, self.now, self.sleep, self.stop = poll_seconds, max_rounds, now, sleep, stop
        self._seen: dict[str, float] = {}

    def __call__(self, round_: int) -> bool:
        if self.max_rounds is not None and round_ > self.max_rounds:
            return False
        try:
            while not self.stop():
                waiting = self.dataset.poll()
                at = self.now()
                for item in waiting:
                    self._seen.setdefault(item, at)
                if len(waiting) >= self.round_items or (waiting and at - self._seen[waiting[0]] >= self.round_seconds):
                    return True
                self.sleep(self.poll_seconds)
        except KeyboardInterrupt:
            pass
        return False


# --- MLflow: a nested run per round ------------------------------------------------------------


class RoundRuns:
    """A :class:`~experiments.tracking.Tracker` that also logs every round as a nested MLflow
    run (``round-<r>``: the round's figures and the gate's verdict and reason as tags) under the
    program's run; everything else goes to ``inner`` as it is."""

    def __init__(self, inner: T.Tracker, *, params: Mapping[str, str] | None = None,
                 tags: Mapping[str, str] | None = None) -> None:
        self.inner = inner
        self._gate_reason = ""
        self._params, self._tags = dict(params or {}), dict(tags or {})  # added to the program run's own

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def start(self, run_name: str, *, params: Mapping[str, str], tags: Mapping[str, str]) -> str | None:
        return self.inner.start(run_name, params={**params, **self._params}, tags={**tags, **self._tags})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._gate_reason = tags.get(T.TAG_GATE_REASON, self._gate_reason)
        self.inner.set_tags(tags)

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        self.inner.log_metrics(metrics, step=step)
        writer = getattr(self.inner, "writer", None)
        if writer is None or step is None or T.N_ITEMS not in metrics:  # not a round's row
            return
        verdict = T.VERDICT_PROMOTED if metrics.get(T.PROMOTED) else T.VERDICT_REFUSED
        run = writer.start_run(writer.experiment_id(self.inner.experiment), f"round-{step}",
                               parent_run_id=self.inner.run_id,
                               tags={T.TAG_ROLE: T.ROLE_ROUND, T.TAG_GATE_VERDICT: verdict,
                                     T.TAG_GATE_REASON: self._gate_reason, T.TAG_ROUND: str(step)})
        writer.log(run, metrics={k: v for k, v in metrics.items() if v is not None and np.isfinite(v)}, step=step)
        writer.finish(run)



# --- ingesting a table -------------------------------------------------------------------------


def ingest_table(store: LabelStore, stream: str, table: Table) -> int:
    """Store a team's table on ``stream`` (created with the table's classes when missing): each
    row an item with payload ``{"features": [...], "label": <class name>}`` (no label when not
    labelled yet), and each known gold label as the item's first resolution by an expert (the
    program's gold). Idempotent; returns the items newly stored."""
    from loop.exceptions import SchemaError

    try:
        store.stream(stream)
    except SchemaError:
        store.create_stream(stream, list(table.classes))
    features = table.features.to_numpy(dtype=np.float64)
    payloads = [{FEATURES: f.tolist(), **({LABEL: table.classes[code]} if code >= 0 else {})}
                for f, code in zip(features, table.labels.to_numpy())]
    result = store.add_items(stream, pd.DataFrame({ITEM: table.features.index.astype(str), PAYLOAD: payloads,
                                                   "source": table.name}))
    gold = table.known_gold
    resolved = set(store.resolved_labels(stream)[ITEM].astype(str))
    gold = gold[~gold.index.astype(str).isin(list(resolved))]
    if len(gold):
        store.add_resolutions(stream, pd.DataFrame({ITEM: gold.index.astype(str), LABEL: gold.to_numpy(),
                                                    "method": METHOD_EXPERT, "reason": "gold from the team's table"}))
    return result.inserted


# --- the service's program ---------------------------------------------------------------------


def serve_program(cfg: ProgramConfig, *, store: LabelStore | None = None, tracker: T.Tracker | None = None,
                  scorer: Any = None, table: Table | None = None, max_rounds: int | None = None,
                  now: Now = time.time, sleep: Sleep = time.sleep, stop: Callable[[], bool] = lambda: False,
                  progress: Callable[[int, int], None] | None = None,
                  experiment: ExperimentSettings | None = None) -> ProgramResult:
    """Run the program with people: what ``labelloop serve`` runs in the foreground.

    Parameters
    ----------
    cfg : ProgramConfig
        ``live`` (the stream, SLA and round triggers), ``store``, ``serve``, ``tracking``,
        ``program`` (strategy, budget, audit rate...), ``thresholds``, ``gate``, ``model``.
    store : LabelStore, optional
        Default ``LabelStore(cfg.store_url)``.
    tracker : Tracker, optional
        Default from ``cfg.tracking``; each round is also a nested run (:class:`RoundRuns`).
    scorer : Scorer, optional
        Default from ``cfg.serve`` (in process, or the Serve app).
    table : Table, optional
        Items to ingest first (:func:`ingest_table`; ``labelloop serve --items``).
    max_rounds : int, optional
        Stop after this many rounds (default: run until Ctrl-C or ``stop()``).
    now, sleep, stop : callable, optional
        The clock, the wait and the stop signal of the schedule and the workforce.
    progress : callable (round, rounds) -> None, optional
    experiment : ExperimentSettings, optional
        A live experiment (the config's ``experiment:`` section): the crowd's label tasks are
        randomised to its variants as they are created (:func:`experiments.experiment.live_arms`,
        checked against the store first), each showing its variant's guideline version and
        the suggestion or not; ``labelloop experiment`` on the same config measures them.

    Returns
    -------
    ProgramResult
        Estimated figures only (the truth-needing ones are NaN).
    """
    import contextlib

    live = cfg.live
    stream = live.stream or cfg.name
    with contextlib.ExitStack() as stack:
        if store is None:
            store = stack.enter_context(LabelStore(cfg.store_url))
        if table is not None:
            ingest_table(store, stream, table)
        store.add_annotator(CURRENT_LABEL, tier=_CROWD_TIER, streams=[stream])
        dataset = StoreDataset(store, stream, round_items=live.round_items, seed=cfg.seed)
        arms = live_arms(experiment, store, stream) if experiment is not None else ()
        workforce = HumanWorkforce(store, stream, sla_seconds=live.sla_seconds, poll_seconds=live.poll_seconds,
                                   now=now, sleep=sleep, arms=arms, seed=experiment.seed if experiment else 0)
        schedule = RoundSchedule(dataset, round_items=live.round_items, round_seconds=live.round_seconds,
                                 poll_seconds=live.poll_seconds, max_rounds=max_rounds, now=now, sleep=sleep,
                                 stop=stop)
        # The team's own model (not a simulation's <name>-simulation): what its people label with.
        model = cfg.tracking.registered_model
        # A live experiment is on the program run: its settings as params, its arms as a tag.
        tracker = RoundRuns(tracker if tracker is not None else make_tracker(cfg, model_name=model),
                            params=experiment.to_params() if arms else None,
                            tags={T.TAG_LIVE_EXPERIMENT: "; ".join(f"{a.name}: {a.describe()}" for a in arms)}
                            if arms else None)
        if scorer is None:
            scorer = stack.enter_context(_serving(cfg, model_name=model, store_url=cfg.store_url))
        return run_program(cfg, scorer=scorer, store=store, tracker=tracker, dataset=dataset, workforce=workforce,
                           stream=stream, schedule=schedule, clock=wall_clock, progress=progress)
