"""``labelloop score``: a whole pool scored and routed in bulk with Ray Data.

``main(cfg, pool, out) -> ScoreResult`` reads the pool (Parquet or CSV: one row an item),
scores every row with one registered model and routes it with the config's thresholds, and
writes what the Serve app answers per item: the class probabilities, the signals, the
label-issue score (where the pool has a current label), the route and its reason, and the
model version on every row. The same ``loop`` calls decide as in the Serve app and the
in-process scorer: :func:`loop.routing.score_items` (signals and label-issue scores) and
:func:`loop.routing.route`.

How it runs: ``ray.data.read_parquet`` (or ``read_csv``), then ``map_batches`` with
:class:`BulkScorer`, a callable class, so each actor holds the model once; every actor asks
for a fraction of a CPU (``num_cpus``) and as many run as there are cores (``concurrency``).
The model is loaded once, here, through :func:`serve.registry.load_model` (a flavour that runs
code when it loads is refused unless ``model.allow_pickle``), and handed to the actors.

Which model: ``model.uri`` when the config has one, else the champion of
``tracking.registered_model`` (``models:/<name>@champion``). Which columns: the config's table
says (``program.dataset``: ``id``, ``label``, ``features``, ``classes``); without a table the id
is ``item_id``, the label ``label`` (when present) and the features every other numeric column.

The output is a Parquet dataset (a directory of files, one per block, which
``pandas.read_parquet`` reads whole) with the columns of :data:`OUTPUT_COLUMNS`;
``probabilities`` is a list of k floats per row, in the order of the classes. Then, unless
``store=False``, the rows go to the label store's predictions table for the stream
``program.name`` (created with the classes when missing; the items are registered too).
"""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from loop.columns import (CONFIDENCE, ENTROPY, ITEM, LABEL, LABEL_ISSUE_SCORE, MARGIN, NO_LABEL, PREDICTED, PRIORITY,
                          REASON, ROUTE, RUNNER_UP)
from loop.exceptions import SchemaError
from loop.routing import RoutingThresholds, route, score_items

from .config import ProgramConfig

__all__ = ["MODEL_VERSION", "OUTPUT_COLUMNS", "PROBABILITIES", "BulkScorer", "PoolColumns", "ScoreResult",
           "main", "pool_columns"]

PROBABILITIES = "probabilities"
MODEL_VERSION = "model_version"
OUTPUT_COLUMNS = (ITEM, PROBABILITIES, PREDICTED, RUNNER_UP, CONFIDENCE, MARGIN, ENTROPY, LABEL_ISSUE_SCORE, ROUTE,
                  REASON, PRIORITY, MODEL_VERSION)
_SIGNALS = (CONFIDENCE, MARGIN, ENTROPY, LABEL_ISSUE_SCORE)
_STORE_CHUNK = 5_000


@dataclass(frozen=True)
class PoolColumns:
    """Which columns of the pool are what."""

    id: str
    label: str | None
    features: tuple[str, ...]


@dataclass(frozen=True)
class ScoreResult:
    """What ``labelloop score`` did.

    Attributes
    ----------
    out : Path
        The Parquet dataset written.
    rows : int
    model_uri, model_version : str
        What scored (``models:/name@champion``) and its version (``name/3``).
    routes : dict of str -> int
        Items per route.
    score_seconds : float
        Reading, scoring, routing and writing the Parquet, on Ray Data.
    store_seconds : float
        Writing the predictions table (0 with ``store=False``).
    stored : int
        Predictions written to the store (a rerun writes none: they are idempotent).
    stream : str or None
    """

    out: Path
    rows: int
    model_uri: str
    model_version: str
    routes: dict[str, int]
    score_seconds: float
    store_seconds: float
    stored: int
    stream: str | None

    def summary(self) -> dict[str, Any]:
        """One flat row for ``--output DIR``'s ``summary.csv``: what scored what, and the items per route."""
        return {"out": str(self.out), "rows": self.rows, "model_uri": self.model_uri,
                "model_version": self.model_version,
                **{f"route_{name}": count for name, count in sorted(self.routes.items())},
                "score_seconds": self.score_seconds, "store_seconds": self.store_seconds, "stored": self.stored,
                "stream": self.stream}


def pool_columns(cfg: ProgramConfig, names: Sequence[str], numeric: Sequence[str]) -> PoolColumns:
    """The id, label and feature columns of a pool with columns ``names`` (``numeric`` of them numeric).

    Raises
    ------
    SchemaError
        ``--pool: ...`` naming a missing id or feature column, or a non-numeric feature.

    Examples
    --------
    >>> from experiments.config import ProgramConfig
    >>> pool_columns(ProgramConfig(), ["item_id", "a", "b", "label"], ["a", "b", "label"])
    PoolColumns(id='item_id', label='label', features=('a', 'b'))
    """
    table = cfg.table
    id_, label = (table.id, table.label) if table else (ITEM, LABEL)
    if id_ not in names:
        raise SchemaError(f"--pool: expected an id column {id_!r}, got columns {list(names)[:20]}")
    label = label if label in names else None
    if table and table.features:
        missing = [c for c in table.features if c not in names]
        if missing:
            raise SchemaError(f"--pool: expected the feature columns of program.dataset.features, missing {missing}")
        text = [c for c in table.features if c not in numeric]
        if text:
            raise SchemaError(f"--pool: expected numeric feature columns, got non-numeric {text}")
        features = tuple(table.features)
    else:
        skip = {id_, label, table.gold if table else None}
        features = tuple(c for c in names if c in numeric and c not in skip)
    if not features:
        raise SchemaError(f"--pool: expected numeric feature columns besides {id_!r}, got none")
    return PoolColumns(id=id_, label=label, features=features)


class BulkScorer:
    """One Ray Data actor's scoring: a batch of pool rows in, a table of :data:`OUTPUT_COLUMNS` out.

    Parameters
    ----------
    model : fitted classifier with ``predict_proba``
    columns : PoolColumns
    classes : sequence of str
        Class names in the model's column order; labels in the pool are matched by text.
    thresholds : RoutingThresholds
    model_version : str
        Written on every row.
    """

    def __init__(self, model: Any, columns: PoolColumns, classes: Sequence[str], thresholds: RoutingThresholds,
                 model_version: str) -> None:
        from threadpoolctl import threadpool_limits

        # One BLAS thread per actor: the actors are the parallelism (one per core).
        self._limits = threadpool_limits(1)
        self.model, self.columns, self.thresholds, self.model_version = model, columns, thresholds, model_version
        self.classes = np.asarray([str(c) for c in classes], dtype=object)

    def __call__(self, batch: pd.DataFrame) -> Any:
        import pyarrow as pa

        cols = self.columns
        ids = batch[cols.id].to_numpy()
        x = batch[list(cols.features)].to_numpy(dtype=np.float64)
        if not np.isfinite(x).all():
            row, col = np.argwhere(~np.isfinite(x))[0]
            raise SchemaError(f"--pool: expected finite features, got {x[row, col]} in column "
                              f"{cols.features[col]!r} of item {ids[row]!r}")
        probs = np.asarray(self.model.predict_proba(x), dtype=np.float64)
        codes = self._label_codes(batch[cols.label]) if cols.label else None
        scores = score_items(probs, item_ids=ids, labels=codes, classes=self.classes)
        if codes is not None:
            # The reasons name each item's current label, as the Router's do; as codes into the
            # classes, so that no per-row text is made.
            scores[LABEL] = pd.Categorical.from_codes(codes, categories=self.classes)
        routes = route(scores, self.thresholds)
        n, k = probs.shape
        arrays = {ITEM: pa.array(ids),
                  PROBABILITIES: pa.FixedSizeListArray.from_arrays(pa.array(probs.ravel()), k)}
        for name in (PREDICTED, RUNNER_UP):
            arrays[name] = pa.array(scores[name].astype("str"), type=pa.string())
        for name in _SIGNALS:
            arrays[name] = pa.array(scores[name].to_numpy(dtype=np.float64))
        # pandas' text columns are Arrow arrays already (pandas 3): no per-row conversion.
        arrays[ROUTE] = pa.array(routes[ROUTE], type=pa.string())
        arrays[REASON] = pa.array(routes[REASON], type=pa.string())
        arrays[PRIORITY] = pa.array(routes[PRIORITY].to_numpy(dtype=np.float64))
        arrays[MODEL_VERSION] = pa.array([self.model_version], type=pa.string()).take(np.zeros(n, dtype=np.int64))
        return pa.table(arrays)

    def _label_codes(self, labels: pd.Series) -> np.ndarray:
        """Class codes of the labels (matched by text), NO_LABEL where a row has none.

        Each distinct label is turned into text and looked up once: per row that was a fifth of
        the scoring's work."""
        codes, distinct = pd.factorize(labels, use_na_sentinel=True)
        if pd.api.types.is_numeric_dtype(distinct) and (distinct.to_numpy(dtype=np.float64) % 1 == 0).all():
            text = distinct.to_numpy(dtype=np.float64).astype(np.int64).astype(str)  # 3.0, from a column with gaps, is "3"
        else:
            text = np.array([str(v).strip() for v in distinct.tolist()], dtype=object)
        found = pd.Index(self.classes).get_indexer(text)
        found[text == ""] = NO_LABEL  # a blank cell is no label
        unknown = found < 0
        unknown[text == ""] = False
        if unknown.any():
            first = np.flatnonzero(unknown[codes.clip(0)] & (codes >= 0))[0]
            raise SchemaError(f"--pool: expected labels among the classes {list(self.classes)} in column "
                              f"{labels.name!r}, got {str(text[codes[first]])!r}")
        return np.where(codes >= 0, found[codes.clip(0)], NO_LABEL).astype(np.int64)


def main(cfg: ProgramConfig, pool: str | Path, out: str | Path, *, store: bool = True, stream: str | None = None,
         batch_size: int | None = None, num_cpus: float = 0.5, concurrency: int | None = None) -> ScoreResult:
    """Score and route every row of ``pool`` with Ray Data; write ``out`` and the store's predictions.

    Parameters
    ----------
    cfg : ProgramConfig
        ``model`` (which model, whether pickles may load), ``tracking`` (the registry),
        ``thresholds``, ``program.dataset`` (the table's columns), ``store.url``, ``program.name``.
    pool : path
        ``.parquet`` (a file or a directory of them) or ``.csv``.
    out : path
        The Parquet dataset to write; must not exist yet.
    store : bool, default=True
        Write the predictions table too.
    stream : str, optional
        The store's stream; default ``program.name``, or for a table the stream ``retrain`` trains on (``<program.name>-<file stem>``).
    batch_size : int, optional
        Rows per ``map_batches`` call (and per output file); default about 16 MB of features,
        4,096 to 65,536 rows: each batch and each file costs Ray a task's fixed overhead.
    num_cpus : float, default=0.5
        CPUs each actor asks Ray for.
    concurrency : int, optional
        At most this many actors; default the CPUs of the Ray cluster.

    Returns
    -------
    ScoreResult

    Raises
    ------
    SchemaError
        Naming the field: ``--pool`` (missing, unreadable, columns, NaN features, unknown
        labels), ``--out`` (exists), ``model.uri`` (refused or unusable model).
    """
    pool, out = Path(pool), Path(out)
    if not pool.exists():
        raise SchemaError(f"--pool: expected a .parquet or .csv file, got {str(pool)!r}, which does not exist")
    if out.exists():
        raise SchemaError(f"--out: expected a path that does not exist yet, got {str(out)!r}")
    names, numeric = _pool_schema(pool)
    columns = pool_columns(cfg, names, numeric)
    model, model_uri, version = _load(cfg)
    k = _n_classes(model, len(columns.features))
    classes = _classes(cfg, k)
    if len(classes) != k:
        raise SchemaError(f"model.uri: {model_uri} gives {k} class probabilities, but program.dataset.classes "
                          f"names {len(classes)}")
    batch_size = batch_size or int(np.clip(2_000_000 // len(columns.features), 4096, 65536))
    started = time.perf_counter()
    try:
        _run_ray(pool, out, BulkScorer, dict(model=model, columns=columns, classes=classes,
                                             thresholds=cfg.thresholds, model_version=version),
                 columns, batch_size=batch_size, num_cpus=num_cpus, concurrency=concurrency)
    except BaseException:
        # A pool that fails half-way (a bad label in a later batch) leaves no half-written output:
        # --out did not exist before (checked above), so all of it is this run's.
        shutil.rmtree(out, ignore_errors=True)
        raise
    score_seconds = time.perf_counter() - started
    summary = pd.read_parquet(out, columns=[ROUTE])
    routes = {str(k_): int(v) for k_, v in summary[ROUTE].value_counts().items()}
    stored, store_seconds, name = 0, 0.0, None
    if store:
        started = time.perf_counter()
        from .retrain import team_stream  # a table's predictions go to the stream retrain trains on

        name = stream or (team_stream(cfg) if cfg.table else cfg.name)
        stored = _store(cfg, out, name, classes, version, model_uri)
        store_seconds = time.perf_counter() - started
    return ScoreResult(out=out, rows=len(summary), model_uri=model_uri, model_version=version, routes=routes,
                       score_seconds=score_seconds, store_seconds=store_seconds, stored=stored, stream=name)


def _classes(cfg: ProgramConfig, k: int) -> list[str]:
    """The class names a model's k probabilities stand for: a table's, as ``retrain`` trained on
    them (``program.dataset.classes``, or the sorted labels the table's file holds), else 0..k-1."""
    if cfg.table is None:
        return [str(c) for c in range(k)]
    if cfg.table.classes:
        return [str(c) for c in cfg.table.classes]
    from experiments.table import load_table

    return list(load_table(cfg.table).classes)


def _pool_schema(pool: Path) -> tuple[list[str], list[str]]:
    """Column names and the numeric ones, from the file's schema (Parquet) or first rows (CSV)."""
    import pyarrow as pa

    try:
        if _is_csv(pool):
            head = pd.read_csv(next(iter(_files(pool, ".csv"))), nrows=1000)
            return list(head.columns), [c for c in head.columns if pd.api.types.is_numeric_dtype(head[c])]
        import pyarrow.parquet as pq

        schema = pq.read_schema(next(iter(_files(pool, ".parquet"))))
    except (OSError, ValueError, StopIteration, pa.ArrowException) as exc:
        raise SchemaError(f"--pool: cannot read {str(pool)!r} as {'CSV' if _is_csv(pool) else 'Parquet'} "
                          f"({type(exc).__name__}: {exc})") from None
    numeric = [f.name for f in schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
               or pa.types.is_decimal(f.type)]
    return list(schema.names), numeric


def _is_csv(pool: Path) -> bool:
    return pool.name.lower().endswith((".csv", ".csv.gz")) or (pool.is_dir() and any(pool.glob("*.csv")))


def _files(pool: Path, suffix: str) -> list[Path]:
    return sorted(p for p in pool.rglob(f"*{suffix}*") if p.is_file()) if pool.is_dir() else [pool]


def _load(cfg: ProgramConfig) -> tuple[Any, str, str]:
    """The model, its URI and ``name/version``, loaded once here (no code runs unless allowed)."""
    import mlflow

    from serve.registry import load_model, model_version_name

    from .models import trusted_modules

    uri = cfg.model.uri or f"models:/{cfg.tracking.registered_model}@champion"
    mlflow.set_tracking_uri(cfg.tracking.uri)
    mlflow.set_registry_uri(cfg.tracking.uri)
    try:
        version = model_version_name(uri, tracking_uri=cfg.tracking.uri)
    except mlflow.exceptions.MlflowException as exc:
        raise SchemaError(f"model.uri: cannot find {uri} in the registry at {cfg.tracking.uri} ({exc.message})") from None
    model = load_model(uri, allow_pickle=cfg.model.allow_pickle, trusted_modules=trusted_modules(cfg.model))
    return model, uri, version


def _n_classes(model: Any, n_features: int) -> int:
    classes = getattr(model, "classes_", None)
    if classes is not None:
        return len(classes)
    return int(np.asarray(model.predict_proba(np.zeros((1, n_features)))).shape[1])  # a pyfunc: ask it once


def _run_ray(pool: Path, out: Path, scorer: type, scorer_kwargs: dict[str, Any], columns: PoolColumns, *,
             batch_size: int, num_cpus: float, concurrency: int | None) -> None:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        import os

        from serve.local import init_ray

        init_ray(num_cpus=os.cpu_count() or 1, log_to_driver=False)
    # Ray Data logs its progress at INFO and a failed block's traceback at ERROR, on loggers of
    # its own (set up when ray.data is imported): the command says what it did, and a bad row is
    # reported once, by us.
    import ray.data

    quiet = [logging.getLogger(name) for name in ["ray.data", *logging.root.manager.loggerDict]
             if name.startswith("ray.data")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.CRITICAL)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        read_columns = [columns.id, *([columns.label] if columns.label else []), *columns.features]
        if _is_csv(pool):
            data = ray.data.read_csv(str(pool)).select_columns(read_columns)
        else:
            data = ray.data.read_parquet(str(pool)).select_columns(read_columns)
        # A Parquet file is read as one block: split it, so that every actor gets batches.
        data = data.repartition(target_num_rows_per_block=batch_size)
        # One actor per core by default (each single-threaded); fewer when the pool has fewer blocks.
        actors = concurrency or max(1, int(ray.cluster_resources().get("CPU", 1)))
        with warnings.catch_warnings():
            # max_restarts goes to the actors as a "remote arg", which Ray 2.60 calls deprecated;
            # without it Ray warns that actors holding the model could not be restarted.
            warnings.simplefilter("ignore", DeprecationWarning)
            scored = data.map_batches(scorer, fn_constructor_kwargs=scorer_kwargs, batch_size=batch_size,
                                      batch_format="pandas", num_cpus=num_cpus, max_restarts=0,
                                      compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors))
        scored.write_parquet(str(out))
    except Exception as exc:
        cause = _our_error(exc)
        if cause is not None:
            raise cause from None
        raise
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
        if started_here:
            ray.shutdown()


def _our_error(exc: BaseException) -> SchemaError | None:
    """The SchemaError an actor raised, out of Ray's wrapping: its message, not Ray's traceback.

    Ray hands the driver a ``RayTaskError`` whose text holds the actor's traceback; the
    error's own line (``loop.exceptions.SchemaError: <message>``) is found there.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for line in reversed(str(exc).splitlines()):
            for marker in ("SchemaError: ", "ConfigError: ", "UnsafeModelError: "):
                if marker in line:
                    return SchemaError(line[line.index(marker) + len(marker):].strip())
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return None


def _store(cfg: ProgramConfig, out: Path, stream: str, classes: list[str], version: str, model_uri: str) -> int:
    """The scored rows into the store: the stream and its items when missing, the model version,
    the predictions (probabilities, signals as JSON, route, reason), in chunks."""
    import pyarrow.parquet as pq

    from loop.store import LabelStore

    with LabelStore(cfg.store_url) as labels:
        labels.create_stream(stream, classes)
        labels.add_model_version(version, uri=model_uri)
        written = 0
        wanted = [ITEM, PROBABILITIES, *_SIGNALS, ROUTE, REASON]
        for file in sorted(out.rglob("*.parquet")):
            for batch in pq.ParquetFile(file).iter_batches(batch_size=_STORE_CHUNK, columns=wanted):
                frame = batch.to_pandas()
                frame[ITEM] = frame[ITEM].astype(str)
                # A table's items carry its name as their source, as retrain and the program register
                # them: the store refuses the same item with another source.
                labels.add_items(stream, frame[[ITEM]].assign(source=cfg.table.value) if cfg.table else frame[[ITEM]])
                # NaN (no label, so no label-issue score) is not JSON: null.
                signals = [{k: (None if v != v else v) for k, v in row.items()}
                           for row in frame[list(_SIGNALS)].to_dict("records")]
                result = labels.add_predictions(stream, version, pd.DataFrame({
                    ITEM: frame[ITEM], "probs": frame[PROBABILITIES], "signals": signals,
                    ROUTE: frame[ROUTE], REASON: frame[REASON]}))
                written += result.inserted
        return written
