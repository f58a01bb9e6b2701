"""The program's ports: small interfaces the round loop talks to, and their adapters.

The program (:mod:`experiments.program`) is a loop over ports; it never asks which adapter
it has:

==============  ===========================================================  ==============================
port            what it does                                                 adapters
==============  ===========================================================  ==============================
``Dataset``     items, their features, arrivals, initial labels, gold        :class:`WorldDataset` (a built-in
                (calibration, holdout) and the truth (``None``: unknown)     world or a team's table);
                                                                             ``live.StoreDataset`` (a store
                                                                             stream, no truth)
``Workforce``   takes work (crowd or expert labels) and answers it, maybe    :class:`SimulatedWorkforce`
                later: :meth:`Workforce.submit` returns a :class:`Ticket`,   (simulated or replayed answers,
                :meth:`Workforce.collect` its answers once they are in       at once); people:
                                                                             ``live.HumanWorkforce`` (tasks
                                                                             in the store, an SLA)
``Trainer``     fits a model on resolved labels: calibrated, evaluated,      :class:`CalibratedTrainer`
                with out-of-fold probabilities of its training items
``Scorer``      scores and routes with the champion                          ``InProcessScorer``,
                                                                             ``HttpScorer`` (program)
``Tracker``     runs, metrics, tables, models                                :mod:`experiments.tracking`
==============  ===========================================================  ==============================

The simulator is one adapter pair (:class:`WorldDataset` and :class:`SimulatedWorkforce` over
an :class:`experiments.world.World`), not the shape of the loop.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from loop.calibration import calibrate
from loop.columns import ITEM
from loop.gate import ModelEvaluation, evaluate_model
from loop.routing import RoutingThresholds
from loop.simulate import Guideline, draw_adoption_delays
from loop.strategies import TaskCosts

from .tracking import Tracker
from .world import World

__all__ = ["CalibratedTrainer", "Dataset", "Request", "Scorer", "SimulatedWorkforce", "Ticket", "Trained", "Tracker",
           "Trainer", "Workforce", "WorldDataset"]

FOLDS = 5  # out-of-fold probabilities of the training items


# --- Dataset -----------------------------------------------------------------------------------


@runtime_checkable
class Dataset(Protocol):
    """The items of a program: what arrives when, their features, their first labels, the gold.

    Attributes
    ----------
    name : str
    classes : tuple of str
        Class names; labels are codes into it.
    initial : DataFrame
        The initial label of every stream item: ``item_id, annotator_id, label, seconds, cost``.
    calibration, holdout : Series
        Gold class codes by item id: the temperature's slice and the evaluation's.
    truth : Series or None
        The true class code of every stream item (a simulation); None when nobody knows it
        (a live team).
    """

    name: str
    classes: tuple[str, ...]
    initial: pd.DataFrame
    calibration: pd.Series
    holdout: pd.Series
    truth: pd.Series | None

    def x(self, item_ids: Any) -> np.ndarray:
        """Features of ``item_ids``, shape ``(n, d)``, float64."""
        ...

    def arrivals(self, round_: int) -> np.ndarray:
        """Ids of the items arriving in round ``round_`` (0 = seed round)."""
        ...

    def arrived(self, round_: int) -> np.ndarray:
        """Ids of every item arrived by the end of round ``round_``, in arrival order."""
        ...

    def items(self, item_ids: Any) -> pd.DataFrame:
        """The rows that register ``item_ids`` in the label store (``LabelStore.add_items``:
        ``item_id`` and optionally ``payload``, ``payload_ref``, ``source``); registering an item
        already stored with these rows changes nothing."""
        ...


class WorldDataset:
    """A simulated world (built-in dataset or a team's table, :func:`experiments.world.build_world`)
    as a :class:`Dataset`."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.name, self.classes = world.dataset, world.classes
        self.initial, self.truth = world.initial, world.truth
        self.calibration, self.holdout = world.calibration, world.holdout

    def x(self, item_ids: Any) -> np.ndarray:
        return self.world.x(item_ids)

    def arrivals(self, round_: int) -> np.ndarray:
        return self.world.arrivals(round_)

    def arrived(self, round_: int) -> np.ndarray:
        return self.world.stream[:(round_ + 1) * self.world.items_per_round]

    def items(self, item_ids: Any) -> pd.DataFrame:
        return pd.DataFrame({ITEM: item_ids, "source": self.name})


# --- Workforce ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """Work for the workforce: labels of some items, by the crowd or by experts.

    Attributes
    ----------
    item_ids : array-like of str
    expert : bool
        Expert labels (one per item) instead of crowd labels.
    labels_per_item : int
        Crowd labels per item, each from a different person.
    exclude : DataFrame, optional
        ``item_id, annotator_id`` pairs that may not answer (who labelled the item already).
    kind : str, optional
        What the work is, as the store's task kinds name it (``label``, ``expert``,
        ``double_blind``, ``audit``, ``adjudication``); default ``expert`` for expert work,
        else ``label``. People see it (a blind task shows no suggestion); a simulation ignores it.
    round : int, optional
        The program round that asks.
    prefer : Series of float, optional
        Crowd work: each annotator's estimated skill (by annotator id; higher first). Of the
        people who may answer an item, the most skilled answer it (a replayed crowd: those who
        really answered the song; one not in the Series counts as 1/2). A simulated crowd, where
        anyone may answer anything and nobody's time runs out, ignores it (every item would go
        to one person), and so do people, who pick their own tasks.
    """

    item_ids: Any
    expert: bool = False
    labels_per_item: int = 1
    exclude: pd.DataFrame | None = None
    kind: str | None = None
    round: int | None = None
    prefer: pd.Series | None = None

    @property
    def task_kind(self) -> str:
        """:attr:`kind`, or its default."""
        return self.kind if self.kind is not None else ("expert" if self.expert else "label")


@dataclass(frozen=True)
class Ticket:
    """A request the workforce took; :meth:`Workforce.collect` gives its answers."""

    id: int
    request: Request


@runtime_checkable
class Workforce(Protocol):
    """Who labels: takes requests, and answers them now (simulated, replayed) or later (people).

    Attributes
    ----------
    annotators : DataFrame
        Everyone who may answer: ``annotator_id, tier, hourly_rate``.
    costs : TaskCosts
        The expected cost of a crowd and an expert label (what rounds are planned at).
    """

    annotators: pd.DataFrame
    costs: TaskCosts

    def submit(self, request: Request, *, rng: np.random.Generator) -> Ticket:
        """Take a request. ``rng`` draws what a simulated workforce draws (who answers, what,
        how long); people ignore it."""
        ...

    def collect(self, ticket: Ticket) -> pd.DataFrame | None:
        """The ticket's answers (``item_id, annotator_id, label, seconds, cost``), or None while
        they are not all in. Answers people stored themselves carry their ``task_id`` (the
        program does not store them again); a workforce of people may return fewer answers
        than asked (a task whose time ran out), never invented ones."""
        ...


class SimulatedWorkforce:
    """The world's workforce (simulated annotators, or a real crowd replayed with simulated twins)
    as a :class:`Workforce`: it answers each request when it is submitted, from the truth."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.costs = world.costs
        self._answers: dict[int, pd.DataFrame] = {}
        self._ids = itertools.count()
        # A published guideline, and when (days since publication) each crowd member follows it.
        self._guideline: Guideline | None = None
        self._delays = pd.Series(dtype=np.float64)
        self._since: Callable[[int], float] = lambda round_: 0.0

    @property
    def annotators(self) -> pd.DataFrame:
        return self.world.workforce.annotators

    def follow_guideline(self, guideline: Guideline, *, half_life_days: float, since: Callable[[int], float],
                         rng: np.random.Generator) -> None:
        """A guideline was published: from now on each crowd member follows it once their
        adoption delay (:func:`loop.simulate.draw_adoption_delays`, median ``half_life_days``)
        has passed; ``since(round)`` is how many days after publication that round's work is
        asked for. Experts answer as before (their labels are the reference)."""
        crowd = self.world.workforce.crowd.ids
        self._guideline = guideline
        self._delays = draw_adoption_delays(crowd, half_life_days, rng=rng)
        self._since = since

    def submit(self, request: Request, *, rng: np.random.Generator) -> Ticket:
        wf, truth = self.world.workforce, self.world.truth[request.item_ids]
        if request.expert:
            answers = wf.ask_experts(truth, exclude=request.exclude, rng=rng)
        else:
            follow = {}
            if self._guideline is not None and request.round is not None:
                at = self._since(request.round)
                follow = {"guideline": self._guideline, "adopters": self._delays.index[self._delays.to_numpy() <= at]}
            if request.prefer is not None:  # a crowd without a preference order is asked as before
                follow["prefer"] = request.prefer
            answers = wf.ask_crowd(truth, request.labels_per_item, exclude=request.exclude, rng=rng, **follow)
        ticket = Ticket(next(self._ids), request)
        self._answers[ticket.id] = answers
        return ticket

    def collect(self, ticket: Ticket) -> pd.DataFrame | None:
        return self._answers.pop(ticket.id, None)


# --- Trainer -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trained:
    """A trained model, its evaluation on the holdout, and its training items' out-of-fold
    calibrated probabilities (DataFrame, shape (n, k), indexed by item id)."""

    model: Any
    evaluation: ModelEvaluation
    out_of_fold: pd.DataFrame


@runtime_checkable
class Trainer(Protocol):
    """Trains a challenger on the labels resolved as of now."""

    def train(self, labels: pd.Series) -> Trained:
        """``labels``: class codes by item id (sorted by item id, as the store returns them)."""
        ...


class CalibratedTrainer:
    """The program's model: the configured estimator, temperature-scaled on the calibration
    gold, evaluated on the holdout gold, with out-of-fold probabilities of its training items.

    Parameters
    ----------
    dataset : Dataset
    estimator : callable () -> unfitted classifier
        A new estimator each call (``program``'s ``model:`` section).
    seed : int
        The folds' shuffle and the training sample's draw.
    max_fit_items : int, optional
        At most this many items train a model (a uniform sample, in item order).
    """

    def __init__(self, dataset: Dataset, *, estimator: Callable[[], Any], seed: int,
                 max_fit_items: int | None = None) -> None:
        self.dataset, self.estimator, self.seed, self.max_fit_items = dataset, estimator, seed, max_fit_items

    def train(self, labels: pd.Series) -> Trained:
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        data = self.dataset
        ids = labels.index.to_numpy(dtype=object)
        y = labels.to_numpy(dtype=np.int64)
        cap = self.max_fit_items
        if cap is not None and len(ids) > cap:
            # A bounded training set, so that a round's cost stops growing with the history: a
            # uniform sample (in item order). The items left out are judged by the champion's own
            # probabilities, which are out of sample for them.
            rng = np.random.default_rng([self.seed, 23, len(ids)])
            keep = np.sort(rng.choice(len(ids), size=cap, replace=False))
            ids, y = ids[keep], y[keep]
        k = len(data.classes)
        x = data.x(ids)
        estimator = self.estimator().fit(x, y)
        calib = data.calibration
        model = calibrate(estimator, data.x(calib.index), calib.to_numpy(), n_classes=k)
        # A model judges the labels it learnt from too kindly (it fits their errors): the items it
        # was trained on are judged by models that did not see them (cleanlab's out-of-sample
        # requirement), each fold's probabilities calibrated like the model's.
        # Fewer folds when no class has FOLDS items (a live program's first small rounds).
        n_splits = int(max(2, min(FOLDS, np.bincount(y).max())))
        folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a class with fewer items than folds
            held_out = cross_val_predict(estimator, x, y, cv=folds, method="predict_proba")  # refits clones
        raw = np.zeros((len(ids), k))
        raw[:, estimator.classes_] = held_out
        out_of_fold = pd.DataFrame(model.scaler.transform(raw), index=pd.Index(ids, name=ITEM))
        holdout = data.holdout
        evaluation = evaluate_model(holdout.to_numpy(), model.predict_proba(data.x(holdout.index)))
        return Trained(model=model, evaluation=evaluation, out_of_fold=out_of_fold)


# --- Scorer (its adapters, InProcessScorer and HttpScorer, are in experiments.program) ---------


class Scorer(Protocol):
    """Scores items with the current champion (the Serve app, or the same code in process)."""

    def score(self, item_ids: Any, features: Any, labels: Any = None) -> tuple[pd.DataFrame, np.ndarray]:
        """The scores frame (``loop.columns.SCORE_COLUMNS``) and the (n, k) class probabilities."""
        ...

    def route(self, item_ids: Any, probabilities: Any, label_issue_scores: Any,
              thresholds: RoutingThresholds, labels: Any = None) -> pd.DataFrame:
        """Routing decisions (``item_id, route, reason, priority``, as :func:`loop.routing.route`)
        of the champion's probabilities (shape (n, k), as :meth:`score` returned them), with the
        caller's label-issue scores: the model does not run again. ``labels`` (the current
        class codes, optional) are named in the reasons."""
        ...

    def reload(self) -> None:
        """Pick up the current champion."""
        ...

