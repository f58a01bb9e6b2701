"""Automated retraining: train on the store's labels, judge against the champion, set the aliases.

``main(cfg, *, stream=None, as_of=None) -> RetrainResult`` is what ``labelloop retrain --config
F`` (and ``mlflow run . -e retrain``) runs, from a cron job or CI:

1. **Labels.** The items of the config's table (``program.dataset``, see
   :mod:`experiments.table`) give the features; the label store's stream gives the labels,
   as resolved now or ``as_of`` a resolution version or a timestamp (reproducible). The
   default stream is the team's, ``<program.name>-<table's stem>``: created from the table
   when missing (each labelled item's current label its first resolution), and table items
   it does not have yet are added the same way on each run. From then on the store is where
   labels change (reviews, adjudications, corrections); the table gives features, gold and
   new items. ``stream`` names another stream (e.g. one a program run wrote) as it is.
2. **Evaluation items.** The items with gold in the table, and the stream's items whose
   current label an expert gave or confirmed (resolution method ``expert`` or
   ``adjudicated``); gold wins where both exist. They never enter training: a model judged on
   items it learnt from is judged too kindly. Of them, ``program.calibration_items`` (at most
   half) fit the temperature, drawn by ``program.seed``; the rest evaluate.
3. **Train** the model (the program's) on the other resolved items, temperature-scaled.
4. **Gate.** The challenger and the registry's champion are evaluated on the same items and
   :func:`loop.gate.decide` applies ``gate:``. With no champion yet only the calibration
   (and ``min_accuracy``) checks apply. A champion that was trained on some evaluation items
   (a simulation's model: simulations train on gold items) is judged too kindly there.
5. **Aliases.** The challenger is registered with the alias ``challenger``; when promoted it
   becomes ``champion`` too.
6. **Track.** One MLflow run: the config as params with the stream and resolution version,
   both models' accuracy and calibration error, ``promoted``, the gate's checks as a table and
   its verdict and reason as tags.

The command exits 0 when the challenger was promoted, :data:`EXIT_REFUSED` (3) when the gate
refused it, 2 on bad input (a missing stream, a table that does not cover the stream's
items, too few items to train or evaluate on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from loop.calibration import CalibratedClassifier, calibrate
from loop.columns import ITEM, LABEL, REASON
from loop.exceptions import SchemaError
from loop.gate import GateDecision, ModelEvaluation, decide, evaluate_model
from loop.store import LabelStore

from . import tracking as T
from .config import ConfigError, ProgramConfig, flatten
from .table import Table, load_table

__all__ = ["EXIT_PROMOTED", "EXIT_REFUSED", "RetrainResult", "main", "team_stream"]

EXIT_PROMOTED = 0
EXIT_REFUSED = 3
MIN_EVALUATION_ITEMS = 20  # fewer items and the gate's accuracy and calibration error are noise
_CONFIRMED = ("expert", "adjudicated")  # resolution methods whose label counts as checked


@dataclass(frozen=True)
class RetrainResult:
    """What a retraining run did.

    Attributes
    ----------
    stream : str
    as_of : int or str
        The store's resolution version (or the timestamp) the labels were read at: ``--as-of``
        with it reproduces the run.
    training_items, evaluation_items, calibration_items : int
    challenger : ModelEvaluation
    champion : ModelEvaluation or None
        The champion before this run, on the same items (None: there was none).
    decision : GateDecision
    version : str
        The challenger's registered version.
    run_id : str or None
    """

    stream: str
    as_of: int | str
    training_items: int
    evaluation_items: int
    calibration_items: int
    challenger: ModelEvaluation
    champion: ModelEvaluation | None
    decision: GateDecision
    version: str
    run_id: str | None

    @property
    def promoted(self) -> bool:
        return self.decision.promote

    @property
    def exit_code(self) -> int:
        return EXIT_PROMOTED if self.promoted else EXIT_REFUSED

    def summary(self) -> dict[str, Any]:
        """One flat row for ``--output DIR``'s ``summary.csv`` (no truth in it: gold and
        expert-confirmed labels are what the team has)."""
        champion = self.champion
        return {"stream": self.stream, "as_of": self.as_of, "version": self.version, "promoted": self.promoted,
                "gate_reason": self.decision.reason, "training_items": self.training_items,
                "evaluation_items": self.evaluation_items, "calibration_items": self.calibration_items,
                "challenger_accuracy": self.challenger.accuracy, "challenger_ece": self.challenger.ece,
                "champion_accuracy": None if champion is None else champion.accuracy,
                "champion_ece": None if champion is None else champion.ece, "run_id": self.run_id}


def team_stream(cfg: ProgramConfig) -> str:
    """The team's stream of a config: ``<program.name>-<table's stem>``."""
    if cfg.table is None:
        raise ConfigError(f"program.dataset: expected a table (retrain reads the items' features from it), "
                          f"got {cfg.dataset.value!r}")
    return f"{cfg.name}-{cfg.table.value}"


def main(cfg: ProgramConfig, *, stream: str | None = None, as_of: int | str | None = None,
         store: LabelStore | None = None, tracker: T.Tracker | None = None) -> RetrainResult:
    """Retrain on the store's labels, gate against the champion, set aliases, log one run.

    Parameters
    ----------
    cfg : ProgramConfig
        With a table as ``program.dataset``.
    stream : str, optional
        Default :func:`team_stream` (created or topped up from the table).
    as_of : int or str, optional
        A resolution version (int) or a timestamp: the labels as resolved then.
    store : LabelStore, optional
        Default ``LabelStore(cfg.store_url)`` (closed at the end).
    tracker : Tracker, optional
        Default from ``cfg.tracking``.

    Returns
    -------
    RetrainResult

    Raises
    ------
    SchemaError
        Bad input (the CLI's exit code 2), naming it in one line.
    """
    name = team_stream(cfg)
    table = load_table(cfg.table, annotations=cfg.annotations)
    owned = store is None
    store = LabelStore(cfg.store_url) if owned else store
    try:
        if stream is None:
            stream = name
            _sync(store, stream, table)
        version = store.resolution_version() if as_of is None else as_of
        data = _split(cfg, store, stream, table, version)
        tracker = tracker if tracker is not None else _tracker(cfg)
        return _retrain(cfg, tracker, table, stream, version, data)
    finally:
        if owned:
            store.close()


@dataclass(frozen=True)
class _Data:
    train: pd.Series  # label codes by item id
    calibration: pd.Series
    evaluation: pd.Series


def _sync(store: LabelStore, stream: str, table: Table) -> None:
    """Create the team's stream from the table, or add the table's items it does not have yet."""
    try:
        known = store.stream(stream)
    except SchemaError:
        known = store.create_stream(stream, list(table.classes))
    if tuple(known.classes) != table.classes:
        raise ConfigError(f"program.dataset.classes: stream {stream!r} has the classes {list(known.classes)}, "
                          f"the table {list(table.classes)}; name them in that order")
    store.add_items(stream, pd.DataFrame({ITEM: table.labels.index.to_numpy(dtype=object), "source": table.name}))
    resolved = store.resolved_labels(stream)[ITEM].astype(str)
    new = table.labelled[~table.labelled.index.isin(resolved)]
    if len(new):
        store.add_resolutions(stream, pd.DataFrame({ITEM: new.index.to_numpy(dtype=object), LABEL: new.to_numpy(),
                                                    "method": "consensus", REASON: "the table's label"}))


def _split(cfg: ProgramConfig, store: LabelStore, stream: str, table: Table, as_of: int | str) -> _Data:
    """Training labels (resolved, unchecked) and the checked items: calibration and evaluation."""
    classes = tuple(store.stream(stream).classes)
    if classes != table.classes:
        raise ConfigError(f"program.dataset.classes: stream {stream!r} has the classes {list(classes)}, "
                          f"the table {list(table.classes)}; name them in that order")
    resolved = store.resolved_labels(stream, as_of=as_of)
    ids = resolved[ITEM].astype(str)
    unknown = ~ids.isin(table.labels.index)
    if unknown.any():
        raise SchemaError(f"{cfg.table.path}: column {cfg.table.id!r}: stream {stream!r} has item "
                          f"{ids[unknown].iloc[0]!r}, which the table does not (retrain needs its features)")
    labels = pd.Series(resolved[LABEL].to_numpy(dtype=np.int64), index=ids.to_numpy())
    confirmed = labels[resolved["method"].isin(_CONFIRMED).to_numpy()]
    gold = table.known_gold
    checked = pd.concat([confirmed[~confirmed.index.isin(gold.index)], gold]).astype(np.int64)
    train = labels[~labels.index.isin(checked.index)]
    if len(checked) < MIN_EVALUATION_ITEMS:
        where = f"column {cfg.table.gold!r}" if cfg.table.gold else "no gold column"
        raise SchemaError(f"{cfg.table.path}: {where}: retrain needs at least {MIN_EVALUATION_ITEMS} items with "
                          f"gold or an expert-confirmed label in stream {stream!r} to evaluate on, got {len(checked)}")
    if train.nunique() < 2:
        raise SchemaError(f"stream {stream!r}: retrain needs resolved labels of at least 2 classes on items "
                          f"without gold, got {len(train)} items of {train.nunique()} classes (as of {as_of})")
    rng = np.random.default_rng([cfg.seed, 19])
    order = rng.permutation(len(checked))
    n_calibration = min(cfg.calibration_items, len(checked) // 2)
    return _Data(train=train, calibration=checked.iloc[order[:n_calibration]],
                 evaluation=checked.iloc[order[n_calibration:]])


def _fit(cfg: ProgramConfig, table: Table, data: _Data) -> CalibratedClassifier:
    """The configured model (``model:``) on the training labels, temperature-scaled on the
    calibration items."""
    from threadpoolctl import threadpool_limits

    from .models import make_estimator

    with threadpool_limits(1):  # small arrays; BLAS threads only fight over shared cores
        estimator = make_estimator(cfg.model).fit(_x(table, data.train.index), data.train.to_numpy())
        return calibrate(estimator, _x(table, data.calibration.index), data.calibration.to_numpy(),
                         n_classes=len(table.classes))


def _x(table: Table, ids: Any) -> np.ndarray:
    return table.features.loc[pd.Index(ids)].to_numpy(dtype=np.float64)


def _tracker(cfg: ProgramConfig) -> T.Tracker:
    """The program's tracker (the model config's trust included) with the team's registered
    model (``tracking.registered_model``, not a simulation's)."""
    from .program import make_tracker

    return make_tracker(cfg, model_name=cfg.tracking.registered_model)


def _load_champion(tracker: T.Tracker) -> Any:
    """The registry's champion, or None when there is none yet."""
    try:
        return tracker.load_model(T.ALIAS_CHAMPION)
    except KeyError:  # MemoryTracker: no alias yet
        return None
    except Exception as exc:  # MLflow: no such registered model or alias
        if getattr(exc, "error_code", None) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def _retrain(cfg: ProgramConfig, tracker: T.Tracker, table: Table, stream: str, version: int | str,
             data: _Data) -> RetrainResult:
    evaluation_x = _x(table, data.evaluation.index)
    truth = data.evaluation.to_numpy()
    params = {**flatten(cfg), T.RETRAIN_STREAM: stream, T.RETRAIN_AS_OF: str(version)}
    run_id = tracker.start(f"retrain-{stream}", params=params, tags={
        T.TAG_ROLE: T.ROLE_RETRAIN, T.TAG_DATASET: table.name, T.TAG_STREAM: stream})
    try:
        model = _fit(cfg, table, data)
        challenger = evaluate_model(truth, model.predict_proba(evaluation_x))
        champion_model = _load_champion(tracker)
        champion = None if champion_model is None else evaluate_model(truth, champion_model.predict_proba(evaluation_x))
        decision = decide(challenger, champion, cfg.gate)
        published = tracker.publish(model, aliases=(T.ALIAS_CHALLENGER,), input_example=evaluation_x[:2])
        # Like a program's versions, less the strategy and round a retraining does not have.
        tracker.tag_version(published, {
            T.VERSION_RUN_ID: run_id or "", T.VERSION_DATASET: table.name,
            T.VERSION_GATE_VERDICT: T.VERDICT_PROMOTED if decision.promote else T.VERDICT_REFUSED})
        if decision.promote:
            tracker.set_alias(T.ALIAS_CHAMPION, published)
        metrics = {T.CHALLENGER_ACCURACY: challenger.accuracy, T.CHALLENGER_ECE: challenger.ece,
                   T.PROMOTED: float(decision.promote), T.RETRAIN_TRAINING_ITEMS: float(len(data.train)),
                   T.RETRAIN_EVALUATION_ITEMS: float(len(data.evaluation)),
                   T.RETRAIN_CALIBRATION_ITEMS: float(len(data.calibration))}
        if champion is not None:
            metrics.update({T.CHAMPION_ACCURACY: champion.accuracy, T.CHAMPION_ECE: champion.ece})
        tracker.log_metrics(metrics)
        tracker.log_table(decision.checks, T.GATE_CSV)
        tracker.set_tags({T.TAG_GATE_VERDICT: T.VERDICT_PROMOTED if decision.promote else T.VERDICT_REFUSED,
                          T.TAG_GATE_REASON: decision.reason, T.TAG_MODEL_VERSION: published})
    except BaseException:
        tracker.finish(failed=True)
        raise
    tracker.finish()
    return RetrainResult(stream=stream, as_of=version, training_items=len(data.train),
                         evaluation_items=len(data.evaluation), calibration_items=len(data.calibration),
                         challenger=challenger, champion=champion, decision=decision, version=published,
                         run_id=run_id)
