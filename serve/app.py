"""The Ray Serve application: a Router (the HTTP ingress) and a Scorer, wired with ``.bind()``.

::

    HTTP ─► Router (FastAPI ingress) ─► Scorer ─► Router ─► HTTP answer
            parse, check; then            champion from the MLflow registry,
            loop.routing.route with       @serve.batch predict_proba,
            thresholds from user_config   signals (loop.routing.score_items)

The Router is the ingress so that a routed request crosses one replica boundary (to the
Scorer and back), as a scored one does: with a Router deployment behind a separate ingress
the Scorer's answer was pickled twice more per request, which cost more than routing itself.
The Router batches ``loop.routing.route`` calls across requests (``@serve.batch``): its
fixed cost then counts once per batch.

Start it with ``serve run serve.app:build_app model_name=digits tracking_uri=...``, with a
Serve config YAML (:mod:`serve.config`), or from Python with :func:`serve.local.start_local`.

Endpoints (JSON bodies described in :mod:`serve.payload`):

- ``POST /v1/score``: probabilities and signals per item.
- ``POST /v1/route``: signals plus ``route``, ``reason``, ``priority`` per item; with
  ``label_issue_scores`` the Router routes on the caller's label-issue scores instead of the
  Scorer's own. Given ``probabilities`` instead of features, the Router computes the signals
  itself and the Scorer is not asked (the answer's ``model`` is then ``null``).
- ``GET /v1/health``: 200 when a model is loaded, 503 before.
- ``GET /v1/model``: the served model (name, alias, version, temperature...).
- ``GET /v1/thresholds``: the Router's thresholds.
- ``POST /v1/reload``: load the version the alias points at now, with no downtime.

Every refusal is ``{"error": {"field": ..., "message": ...}}`` with a 4xx status.

Zero-downtime reload: the Scorer loads the new version in a worker thread while the old one
keeps serving, then swaps one reference. A batch reads the reference once, so each request is
scored by exactly one version, named in its answer (``model.version``).
"""

# No "from __future__ import annotations" here: FastAPI reads the endpoint annotations
# (Request) at run time, from a class Serve pickles by value, so they must be real objects.

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from loop.columns import ITEM, LABEL, LABEL_ISSUE_SCORE
from loop.exceptions import LoopError, SchemaError
from loop.routing import RoutingThresholds, route, score_items

from .args import APP_NAME, AppArgs
from .labelstudio import LabelStudioBackend
from .labelstudio import router as labelstudio_router
from .payload import (NO_LABEL, BadRequest, ParsedRequest, ScoreRequest, check_label_codes, encode_answer,
                      error_body, parse_request)

__all__ = ["APP_NAME", "AppArgs", "Router", "Scorer", "build_app"]

logger = logging.getLogger("ray.serve")

_JSON = "application/json"


# ----------------------------------------------------------------------------- the Scorer

@dataclass(frozen=True)
class LoadedModel:
    """One registry version, loaded: what a batch reads once and uses throughout."""

    model: Any
    name: str
    alias: str
    version: str
    run_id: str | None
    classes: list[Any]
    n_features: int | None
    temperature: float | None
    loaded_at: float

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "alias": self.alias, "version": self.version, "run_id": self.run_id,
                "classes": self.classes, "n_classes": len(self.classes), "n_features": self.n_features,
                "temperature": self.temperature,
                "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at))}

    def stamp(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "alias": self.alias}


@dataclass(frozen=True)
class Scored:
    """A request's probabilities, shape (n, k), and its scores frame (item ids 0 .. n - 1;
    after the Router, with ``route, reason, priority`` too). ``model`` is None when no model
    ran: the request carried the probabilities."""

    probs: np.ndarray | None
    scores: pd.DataFrame
    model: dict[str, Any] | None
    classes: list[Any]


def _signals(probs: np.ndarray, labels: np.ndarray | None, classes: list[Any]) -> pd.DataFrame:
    """The scores frame of (n, k) probabilities (item ids 0 .. n - 1), with the self-confidence
    label-issue score of each labelled item (``labels``: codes below k, ``NO_LABEL`` where none):
    :func:`loop.routing.score_items`, the same call as the in-process and bulk scorers'.

    The Scorer calls it on the model's probabilities, the Router on a caller's.
    """
    return score_items(probs, labels=labels, classes=classes)


class NoModel(LoopError):
    """The registry has no version under the alias (yet), or it could not be loaded."""


def _registry_client(args: AppArgs):
    import mlflow
    from mlflow import MlflowClient

    # A replica is its own process; mlflow.sklearn.load_model("models:/...") reads the
    # process-wide URIs, so set them here, once, from the app's arguments.
    if args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)
    if args.registry_uri or args.tracking_uri:
        mlflow.set_registry_uri(args.registry_uri or args.tracking_uri)
    return MlflowClient(tracking_uri=args.tracking_uri, registry_uri=args.registry_uri or args.tracking_uri)


def _n_features(model: Any) -> int | None:
    for candidate in (model, getattr(model, "estimator", None)):
        n = getattr(candidate, "n_features_in_", None)
        if n is not None:
            return int(n)
    return None


@serve.deployment(name="Scorer", max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.25})
class Scorer:
    """Serves ``models:/<model_name>@<alias>``: batched ``predict_proba`` and routing signals.

    Parameters
    ----------
    args : dict
        :class:`AppArgs` as a mapping.
    """

    async def __init__(self, args: dict[str, Any]) -> None:
        self._args = AppArgs.model_validate(args)
        self._client = _registry_client(self._args)
        self._current: LoadedModel | None = None
        self._reload_lock = asyncio.Lock()
        self._predict.set_max_batch_size(self._args.max_batch_size)
        self._predict.set_batch_wait_timeout_s(self._args.batch_wait_timeout_s)
        try:
            await self.reload()
        except NoModel as exc:
            # Start anyway: /v1/health says 503 until a version is registered and reloaded.
            logger.warning("Scorer starts without a model: %s", exc)
        self._poller = None
        if self._args.refresh_seconds:
            self._poller = asyncio.get_running_loop().create_task(self._poll(self._args.refresh_seconds))

    async def score(self, features: np.ndarray, labels: np.ndarray | None,
                    keep_probabilities: bool = True) -> Scored:
        """Probabilities and the scores frame of one request (batched with its neighbours).

        ``keep_probabilities=False`` leaves the probabilities out of the answer (a route
        request that did not ask for them): fewer bytes between the replicas.
        """
        current = self._require_model()
        if current.n_features is not None and features.shape[1] != current.n_features:
            raise BadRequest("features", f"Model {current.name} version {current.version} takes "
                             f"{current.n_features} features per item; got {features.shape[1]}.")
        if labels is not None:
            check_label_codes(labels, len(current.classes), "this model")
        probs, used = await self._predict(features)
        scores = _signals(probs, labels, used.classes)
        return Scored(probs=probs if keep_probabilities else None, scores=scores, model=used.stamp(),
                      classes=used.classes)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _predict(self, batch: list[np.ndarray]) -> list[tuple[np.ndarray, LoadedModel]]:
        current = self._require_model()  # read once: the whole batch sees one version
        sizes = np.cumsum([x.shape[0] for x in batch])[:-1]
        probs = np.asarray(current.model.predict_proba(np.concatenate(batch)), dtype=np.float64)
        return [(part, current) for part in np.split(probs, sizes)]

    async def reload(self) -> dict[str, Any]:
        """Load the version the alias points at now, if it is not the one served; then swap."""
        async with self._reload_lock:
            previous = self._current
            version = await asyncio.to_thread(self._resolve_alias)
            if previous is not None and previous.version == version:
                return {**previous.describe(), "previous_version": previous.version, "changed": False}
            try:
                loaded = await asyncio.to_thread(self._load, version)  # the old model keeps serving
            except NoModel:
                raise
            except Exception as exc:  # an unreadable artifact, a registry outage: keep the old one
                raise NoModel(f"Could not load models:/{self._args.model_name}/{version} "
                              f"({type(exc).__name__}: {exc}); still serving "
                              f"{'version ' + previous.version if previous else 'nothing'}.") from None
            self._current = loaded  # the swap: one reference
            logger.info("Scorer serves %s version %s (was %s)", loaded.name, loaded.version,
                        previous.version if previous else None)
            return {**loaded.describe(), "previous_version": previous.version if previous else None,
                    "changed": True}

    def model_info(self) -> dict[str, Any] | None:
        return None if self._current is None else self._current.describe()

    def _require_model(self) -> LoadedModel:
        current = self._current
        if current is None:
            raise NoModel(f"No version of model {self._args.model_name!r} has alias "
                          f"{self._args.alias!r} yet: register one, set the alias, then POST /v1/reload.")
        return current

    def _resolve_alias(self) -> str:
        from mlflow.exceptions import MlflowException

        try:
            return str(self._client.get_model_version_by_alias(self._args.model_name, self._args.alias).version)
        except MlflowException as exc:
            raise NoModel(f"Cannot resolve models:/{self._args.model_name}@{self._args.alias}: {exc.message}") from None
        except Exception as exc:  # the registry is unreachable
            raise NoModel(f"Cannot reach the model registry for models:/{self._args.model_name}@"
                          f"{self._args.alias} ({type(exc).__name__}: {exc}).") from None

    def _load(self, version: str) -> LoadedModel:
        from serve.registry import load_model

        name = self._args.model_name
        # The one loader: a flavour that would run code while loading is refused unless allowed.
        model = load_model(f"models:/{name}/{version}", allow_pickle=self._args.allow_pickle,
                           trusted_modules=self._args.trusted_modules, field="model", allow_key="allow_pickle")
        if not hasattr(model, "predict_proba") or not hasattr(model, "classes_"):
            raise NoModel(f"Model {name} version {version} has no predict_proba/classes_; "
                          "log a scikit-learn classifier (loop.calibration.CalibratedClassifier).")
        k = len(model.classes_)
        classes = list(self._args.class_names) if self._args.class_names else list(range(k))
        if len(classes) != k:
            raise NoModel(f"Model {name} version {version} has {k} classes but the app was given "
                          f"{len(classes)} class_names.")
        run_id = self._client.get_model_version(name, version).run_id
        temperature = getattr(model, "temperature_", None)
        return LoadedModel(model=model, name=name, alias=self._args.alias, version=version, run_id=run_id,
                           classes=classes, n_features=_n_features(model),
                           temperature=None if temperature is None else float(temperature),
                           loaded_at=time.time())

    async def _poll(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.reload()
            except Exception as exc:  # keep serving the current version; try again next time
                logger.warning("Scorer refresh failed: %s", exc)


# ----------------------------------------------------------------------------- the Router (HTTP ingress)

api = FastAPI(title="labelloop", version="1",
              description="Score and route items for labeling: who should look at which item, and why.")

_REQUEST_BODY = {"requestBody": {"required": True, "content": {
    _JSON: {"schema": ScoreRequest.model_json_schema(ref_template="#/components/schemas/{model}")}}}}


api.include_router(labelstudio_router)  # Label Studio's ML backend protocol under /labelstudio


@api.exception_handler(BadRequest)
async def _bad_request(request: Request, exc: BadRequest) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


@api.exception_handler(SchemaError)
async def _schema_error(request: Request, exc: SchemaError) -> JSONResponse:
    return JSONResponse(error_body(_schema_field(str(exc)), str(exc)), status_code=422)


@api.exception_handler(NoModel)
async def _no_model(request: Request, exc: NoModel) -> JSONResponse:
    return JSONResponse(error_body("model", str(exc)), status_code=503)


@api.exception_handler(RequestValidationError)
async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    return JSONResponse(error_body(".".join(map(str, first["loc"])) or None, first["msg"]), status_code=422)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse(error_body(None, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


# The helpers the Router calls are defined above it: @serve.ingress makes a class that
# Serve pickles by value when the decorator runs, with the globals defined by then.

async def _unwrap(response: Any) -> Any:
    """Await a handle call; re-raise our own errors as themselves, not wrapped by Ray."""
    try:
        return await response
    except Exception as exc:
        cause, seen = getattr(exc, "cause", None), 0
        while cause is not None and seen < 5:
            if isinstance(cause, (BadRequest, NoModel, SchemaError)):
                raise cause from None
            cause, seen = getattr(cause, "cause", None), seen + 1
        raise


def _with_ids(frame: pd.DataFrame, item_ids: list[Any]) -> pd.DataFrame:
    out = frame.copy(deep=False)
    out[ITEM] = pd.Series(item_ids, dtype=object)
    return out


def _answer(frame: pd.DataFrame, probs: np.ndarray | None, compact: bool, scored: Scored) -> Response:
    body = encode_answer(frame, probs, compact=compact, model=scored.model, classes=scored.classes)
    return Response(content=body, media_type=_JSON)


def _schema_field(message: str) -> str | None:
    # loop's messages read "The 'name' argument must be ..."; the name is the field.
    start = message.find("'")
    end = message.find("'", start + 1)
    return message[start + 1:end] if 0 <= start < end else None


@serve.deployment(name="Router", max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.25})
@serve.ingress(api)
class Router:
    """The HTTP ingress: parses requests, asks the Scorer, routes with :func:`loop.routing.route`.

    The thresholds come from the deployment's ``user_config`` (a
    :meth:`RoutingThresholds.to_dict` mapping); changing it calls :meth:`reconfigure` on the
    running replicas, without a redeploy. Routing here, in the process that holds the
    request, rather than in a deployment of its own saves a replica hop per request: the
    Scorer's answer would otherwise be pickled twice more (to the Router, and back).
    """

    def __init__(self, scorer: DeploymentHandle, args: dict[str, Any]) -> None:
        self._scorer = scorer
        self._args = AppArgs.model_validate(args)
        self._thresholds = RoutingThresholds()
        self._reconfigured = 0
        self._route.set_max_batch_size(self._args.max_batch_size)
        self._route.set_batch_wait_timeout_s(self._args.batch_wait_timeout_s)
        self.label_studio = LabelStudioBackend.for_router(self)

    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        self._thresholds = RoutingThresholds.from_dict(user_config or {})
        self._reconfigured += 1

    @api.post("/v1/score", openapi_extra=_REQUEST_BODY)
    async def score(self, request: Request) -> Response:
        parsed = self._parse(await request.body())
        if parsed.label_issue_scores is not None:
            raise BadRequest("label_issue_scores", "Label-issue scores are an input of the Router: send "
                             "them to POST /v1/route, not /v1/score.")
        if parsed.probabilities is not None:
            raise BadRequest("probabilities", "Probabilities are an input of routing only: send them to "
                             "POST /v1/route; /v1/score takes 'features' (or 'features_b64').")
        keep = parsed.return_probabilities is not False
        scored = await _unwrap(self._scorer.score.remote(parsed.features, parsed.labels, keep))
        return _answer(_with_ids(scored.scores, parsed.item_ids), scored.probs, parsed.compact, scored)

    @api.post("/v1/route", openapi_extra=_REQUEST_BODY)
    async def route(self, request: Request) -> Response:
        """Signals plus ``route, reason, priority``; with ``label_issue_scores`` (shape (n,), in
        [0, 1]) the caller's label-issue scores (e.g. computed with the annotators' labels as
        evidence) replace the Scorer's own. With ``probabilities`` (shape (n, k)) instead of
        features the signals are computed here, from them, and the Scorer is not asked."""
        parsed = self._parse(await request.body())
        keep = bool(parsed.return_probabilities)
        if parsed.probabilities is None:
            scored = await _unwrap(self._scorer.score.remote(parsed.features, parsed.labels, keep))
        else:
            scored = self._from_probabilities(parsed, keep)
        scores = scored.scores
        if parsed.label_issue_scores is not None:
            scores = scores.assign(**{LABEL_ISSUE_SCORE: np.asarray(parsed.label_issue_scores, dtype=np.float64)})
        to_route = scores
        if parsed.labels is not None:
            # The reasons name each item's current label (by class name, like `predicted`).
            names = np.asarray(scored.classes, dtype=object)
            to_route = scores.assign(**{LABEL: np.where(parsed.labels == NO_LABEL, None,
                                                        names[np.maximum(parsed.labels, 0)])})
        routes = await self._route(to_route)
        frame = pd.concat([scores, routes], axis=1)
        return _answer(_with_ids(frame, parsed.item_ids), scored.probs, parsed.compact, scored)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _route(self, frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
        # One route() call per batch: its fixed cost (a few ms of pandas) then counts once for
        # the batch. Item ids are positions, made unique across the batch here.
        thresholds = self._thresholds  # read once: the whole batch sees one policy
        if len(frames) == 1:
            return [route(frames[0], thresholds).drop(columns=[ITEM])]
        merged = pd.concat(frames, ignore_index=True)
        merged[ITEM] = np.arange(len(merged))
        routes = route(merged, thresholds).drop(columns=[ITEM])
        bounds = np.cumsum([0] + [len(f) for f in frames])
        return [routes.iloc[a:b].reset_index(drop=True) for a, b in zip(bounds[:-1], bounds[1:])]

    @api.get("/v1/health")
    async def health(self) -> JSONResponse:
        info = await _unwrap(self._scorer.model_info.remote())
        if info is None:
            return JSONResponse({"status": "no_model", "model": None}, status_code=503)
        return JSONResponse({"status": "ok", "model": {k: info[k] for k in ("name", "alias", "version")}})

    @api.get("/v1/model")
    async def model(self) -> JSONResponse:
        info = await _unwrap(self._scorer.model_info.remote())
        if info is None:
            raise NoModel(f"No version of model {self._args.model_name!r} has alias {self._args.alias!r} "
                          "loaded yet: register one, set the alias, then POST /v1/reload.")
        return JSONResponse(info)

    @api.get("/v1/thresholds")
    async def thresholds(self) -> JSONResponse:
        return JSONResponse({"thresholds": self._thresholds.to_dict(), "reconfigured": self._reconfigured,
                             "replica": serve.get_replica_context().replica_id.unique_id})

    @api.post("/v1/reload")
    async def reload(self) -> JSONResponse:
        return JSONResponse(await _unwrap(self._scorer.reload.remote()))

    def _parse(self, body: bytes) -> ParsedRequest:
        return parse_request(body, class_names=self._args.class_names, max_rows=self._args.max_rows_per_request)

    def _from_probabilities(self, parsed: ParsedRequest, keep_probabilities: bool) -> Scored:
        # The caller's probabilities (parse_request checked them, and k against class_names):
        # no model ran, so the answer names none.
        # Label-issue scores from the labels only where the caller sent none of its own (route
        # replaces them with the caller's anyway); parse_request checked the labels against k.
        probs = parsed.probabilities
        classes = list(self._args.class_names) if self._args.class_names else list(range(probs.shape[1]))
        labels = parsed.labels if parsed.label_issue_scores is None else None
        return Scored(probs=probs if keep_probabilities else None, scores=_signals(probs, labels, classes),
                      model=None, classes=classes)


# ----------------------------------------------------------------------------- the builder

def build_app(args: dict[str, Any] | AppArgs) -> Application:
    """Compose the app: ``Router(Scorer)``, each with fractional CPUs.

    Parameters
    ----------
    args : AppArgs or mapping
        See :class:`AppArgs`. ``thresholds`` becomes the Router's ``user_config`` (a Serve
        config's ``user_config`` for the Router wins over it).

    Returns
    -------
    ray.serve.Application

    Examples
    --------
    ``serve run serve.app:build_app model_name=digits tracking_uri=sqlite:////tmp/mlflow.db``,
    or from Python::

        from ray import serve
        serve.run(build_app({"model_name": "digits", "tracking_uri": uri}), name="labelloop")
    """
    args = args if isinstance(args, AppArgs) else AppArgs.model_validate(args)
    # Our handlers are async and short, so they run on the replica's own event loop instead of
    # a second thread: one GIL hand-off less per call (Ray Serve's performance guide).
    actor = {"num_cpus": args.replica_cpus,
             "runtime_env": {"env_vars": {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}}}
    # The thresholds reach the Router only, as user_config: changing them then reconfigures the
    # Router in place and leaves the Scorer (whose arguments did not change) alone.
    plain = args.model_dump(exclude={"thresholds"})
    scorer = Scorer.options(num_replicas=args.scorer_replicas, ray_actor_options=actor,
                            max_ongoing_requests=max(64, 4 * args.max_batch_size)).bind(plain)
    return Router.options(num_replicas=args.router_replicas, ray_actor_options=actor,
                          user_config=args.routing_thresholds().to_dict()).bind(scorer, plain)
