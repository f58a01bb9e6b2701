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
- ``PUT /v1/thresholds``: new thresholds on every Router replica (admin).
- ``POST /v1/reload``: load the version the alias points at now, with no downtime (admin).
- ``POST /v1/items``: ingest items into a label-store stream, scored and routed on arrival.
- The task API (:mod:`serve.tasks`) and ``GET /metrics`` (Prometheus), with ``store_url``.
- ``GET /v1/me/impact``: an annotator's impact per round (:mod:`serve.impact`), with ``store_url``.
- Label Studio's ML backend protocol under ``/labelstudio`` (:mod:`serve.labelstudio`), with
  ``label_studio`` and ``store_url``.

Auth (:mod:`serve.auth`): bearer tokens from the label store. Score and route need a client
or admin token, model/thresholds/metrics any token, unless ``auth: none`` (a local demo);
thresholds, reload, the task API and the Label Studio webhook always need one; Label
Studio's ``/labelstudio/setup`` and ``/predict`` take the token as a bearer token or as an HTTP
Basic password (all Label Studio sends), and need none with ``auth: none``; ``/v1/health`` and
``/labelstudio/health`` never do.

Every refusal is ``{"error": {"field": ..., "message": ...}}`` with a 4xx status: 401 (no
valid token, with ``WWW-Authenticate: Bearer``), 403 (wrong role, not your task), 404, 409
(conflict), 413, 422 (invalid, the field named); and so is a 500 (:mod:`serve.http`): a
``POST`` must be ``Content-Type: application/json`` (415), a body at most ``max_body_bytes``
(413); a request larger than a replica message (gRPC's 4 MiB) reaches the Scorer in parts.

Zero-downtime reload: the Scorer loads the new version in a worker thread while the old one
keeps serving, then swaps one reference. A batch reads the reference once, so each request is
scored by exactly one version, named in its answer (``model.version``).
"""

# No "from __future__ import annotations" here: FastAPI reads the endpoint annotations
# (Request) at run time, from a class Serve pickles by value, so they must be real objects.

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from loop._redact import redact
from loop.columns import ITEM, LABEL, LABEL_ISSUE_SCORE
from loop._validation import check_pred_probs
from loop.columns import CONFIDENCE, ENTROPY, MARGIN, PREDICTED, REASON, ROUTE, RUNNER_UP
from loop.exceptions import ConflictError, ForbiddenError, LoopError, NotFoundError, SchemaError
from loop.routing import RoutingThresholds, route, score_items
from loop.store import LabelStore, Principal

from . import review
from .args import APP_NAME, AppArgs
from .auth import AUTH_RESPONSES, AuthError, Services, any_role, scoring_access
from .http import JsonApiGuard, document_edge_errors, read_body
from .labelstudio import LabelStudioBackend
from .labelstudio import router as labelstudio_router
from .payload import (NO_LABEL, BadRequest, ParsedRequest, ScoreRequest, check_label_codes, chunk_bounds,
                      encode_answer, error_body, parse_request)
from .tasks import IngestRequest, admin_role, client_role, router as task_router
from .impact import router as impact_router

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
    """The registry has no version under the alias (yet), or it could not be loaded.

    Its message goes into 503 answers and logs, so URL passwords (a tracking URI's) are hidden
    in it when it is made."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


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
            logger.warning("Scorer starts without a model: %s", exc)  # NoModel hides passwords
        self._poller = None
        if self._args.refresh_seconds:
            self._poller = asyncio.get_running_loop().create_task(self._poll(self._args.refresh_seconds))

    async def score(self, features: np.ndarray, labels: np.ndarray | None,
                    keep_probabilities: bool = True, offset: int = 0) -> Scored:
        """Probabilities and the scores frame of one request, or of rows ``offset ..`` of it
        (batched with its neighbours).

        ``keep_probabilities=False`` leaves the probabilities out of the answer (a route
        request that did not ask for them): fewer bytes between the replicas.
        """
        current = self._require_model()
        if current.n_features is not None and features.shape[1] != current.n_features:
            raise BadRequest("features", f"Model {current.name} version {current.version} takes "
                             f"{current.n_features} features per item; got {features.shape[1]}.")
        if labels is not None:
            check_label_codes(labels, len(current.classes), "this model", offset=offset)
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
                logger.warning("Scorer refresh failed: %s", redact(str(exc)))


# ----------------------------------------------------------------------------- the Router (HTTP ingress)

api = FastAPI(title="labelloop", version="1",
              description="Score and route items for labeling: who should look at which item, and why.")
api.include_router(review.router)  # the annotators' review page, GET /review

# 415 for a POST that is not JSON (a cross-site form cannot reach /v1/reload); JSON 500s.
api.add_middleware(JsonApiGuard)

_REQUEST_BODY = {"requestBody": {"required": True, "content": {
    _JSON: {"schema": ScoreRequest.model_json_schema(ref_template="#/components/schemas/{model}")}}}}


api.include_router(labelstudio_router)  # Label Studio's ML backend protocol under /labelstudio

_routes_openapi = api.openapi


def _openapi() -> dict[str, Any]:
    """FastAPI's document of the routes, plus what the edge answers on its own (415, 400)."""
    if api.openapi_schema is None:
        api.openapi_schema = document_edge_errors(_routes_openapi())
    return api.openapi_schema


api.openapi = _openapi


@api.exception_handler(BadRequest)
async def _bad_request(request: Request, exc: BadRequest) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


@api.exception_handler(AuthError)
async def _auth_error(request: Request, exc: AuthError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


@api.exception_handler(NotFoundError)
async def _not_found(request: Request, exc: NotFoundError) -> JSONResponse:
    return JSONResponse(error_body(_schema_field(str(exc)), str(exc)), status_code=404)


@api.exception_handler(ForbiddenError)
async def _forbidden(request: Request, exc: ForbiddenError) -> JSONResponse:
    return JSONResponse(error_body(None, str(exc)), status_code=403)


@api.exception_handler(ConflictError)
async def _conflict(request: Request, exc: ConflictError) -> JSONResponse:
    return JSONResponse(error_body(_schema_field(str(exc)), str(exc)), status_code=409)


@api.exception_handler(SchemaError)
async def _schema_error(request: Request, exc: SchemaError) -> JSONResponse:
    return JSONResponse(error_body(_schema_field(str(exc)), redact(str(exc))), status_code=422)


@api.exception_handler(NoModel)
async def _no_model(request: Request, exc: NoModel) -> JSONResponse:
    return JSONResponse(error_body("model", str(exc)), status_code=503)


@api.exception_handler(RequestValidationError)
async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    return JSONResponse(error_body(".".join(map(str, first["loc"])) or None, first["msg"]), status_code=422)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # FastAPI's one 400 is a body it cannot read (bytes that are not UTF-8): name the body.
    field = "body" if exc.status_code == 400 else None
    message = "The body cannot be read: send UTF-8 JSON." if exc.status_code == 400 else str(exc.detail)
    return JSONResponse(error_body(field, message), status_code=exc.status_code, headers=exc.headers)


api.include_router(task_router)
api.include_router(impact_router)  # GET /v1/me/impact: annotators see their impact

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


_CALLER = "caller"  # the model version of predictions the caller brought
_ERROR_DOC = {"description": "Refused: error.field and error.message say why"}
_SCORING_RESPONSES = {**AUTH_RESPONSES, 413: _ERROR_DOC, 422: _ERROR_DOC, 503: _ERROR_DOC}
_ADMIN_RESPONSES = {**AUTH_RESPONSES, 422: _ERROR_DOC, 503: _ERROR_DOC}


def _ingest_ids(body: IngestRequest) -> list[str]:
    ids = [str(it.item_id) for it in body.items]
    for k, it in enumerate(body.items):
        if (it.features is None) == (it.probabilities is None):
            raise BadRequest(f"items.{k}", "Each item needs either 'features' or 'probabilities' (not both).")
    if len(set(ids)) != len(ids):
        raise BadRequest("items.item_id", "Item ids must be distinct within a request.")
    return ids


def _ingest_payload(item: Any) -> dict[str, Any] | None:
    # Features travel in the payload: the task preview finds the nearest resolved examples by them.
    if item.features is None:
        return item.payload
    return {**(item.payload or {}), "features": list(item.features)}


def _signal_json(row: Any, classes: tuple[str, ...]) -> dict[str, Any]:
    def name(code: Any) -> Any:
        return classes[int(code)] if isinstance(code, (int, np.integer)) and 0 <= code < len(classes) else code

    return {PREDICTED: name(getattr(row, PREDICTED)), RUNNER_UP: name(getattr(row, RUNNER_UP)),
            CONFIDENCE: float(getattr(row, CONFIDENCE)), MARGIN: float(getattr(row, MARGIN)),
            ENTROPY: float(getattr(row, ENTROPY))}


def _deploy_thresholds(user_config: dict[str, Any]) -> None:
    """Deploy the running Serve config again with the Router's ``user_config`` replaced."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    client = _get_global_client()
    details = client.get_serve_details()
    apps = []
    for name, app in (details.get("applications") or {}).items():
        config = app.get("deployed_app_config")
        if config is None:
            raise BadRequest("thresholds", f"Serve app {name!r} was not deployed from a config file, so it cannot be "
                             "redeployed with new thresholds; deploy it with `serve deploy`.", status=409)
        if name == APP_NAME:
            deployments = [d for d in config.get("deployments") or [] if d.get("name") != "Router"]
            router = next((d for d in config.get("deployments") or [] if d.get("name") == "Router"), {"name": "Router"})
            config = {**config, "deployments": [*deployments, {**router, "user_config": user_config}]}
        apps.append(config)
    document = {"applications": apps}
    for key in ("proxy_location", "http_options", "grpc_options", "target_capacity"):
        if details.get(key) is not None:
            document[key] = details[key]
    client.deploy_apps(ServeDeploySchema.model_validate(document))


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
        store = None if self._args.store_url is None else LabelStore(self._args.store_url)
        # What the task API and auth dependencies use (serve.auth.get_services finds it here).
        self.services = Services(store, auth=self._args.auth, task_sla_hours=self._args.task_sla_hours)
        self._thresholds = RoutingThresholds()
        self._reconfigured = 0
        # The served model's class count as last seen (for the size of the Scorer's answers);
        # asked of the Scorer before the first answer.
        self._n_classes: int | None = None
        self._route.set_max_batch_size(self._args.max_batch_size)
        self._route.set_batch_wait_timeout_s(self._args.batch_wait_timeout_s)
        self.label_studio = LabelStudioBackend.for_router(self)

    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        self._thresholds = RoutingThresholds.from_dict(user_config or {})
        self._reconfigured += 1

    @api.post("/v1/score", openapi_extra=_REQUEST_BODY, responses=_SCORING_RESPONSES)
    async def score(self, request: Request, _: Principal | None = Depends(scoring_access)) -> Response:
        parsed = self._parse(await read_body(request, self._args.max_body_bytes))
        if parsed.label_issue_scores is not None:
            raise BadRequest("label_issue_scores", "Label-issue scores are an input of the Router: send "
                             "them to POST /v1/route, not /v1/score.")
        if parsed.probabilities is not None:
            raise BadRequest("probabilities", "Probabilities are an input of routing only: send them to "
                             "POST /v1/route; /v1/score takes 'features' (or 'features_b64').")
        keep = parsed.return_probabilities is not False
        scored = await self._score(parsed, keep)
        return _answer(_with_ids(scored.scores, parsed.item_ids), scored.probs, parsed.compact, scored)

    @api.post("/v1/route", openapi_extra=_REQUEST_BODY, responses=_SCORING_RESPONSES)
    async def route(self, request: Request, _: Principal | None = Depends(scoring_access)) -> Response:
        """Signals plus ``route, reason, priority``; with ``label_issue_scores`` (shape (n,), in
        [0, 1]) the caller's label-issue scores (e.g. computed with the annotators' labels as
        evidence) replace the Scorer's own. With ``probabilities`` (shape (n, k)) instead of
        features the signals are computed here, from them, and the Scorer is not asked."""
        parsed = self._parse(await read_body(request, self._args.max_body_bytes))
        keep = bool(parsed.return_probabilities)
        if parsed.probabilities is None:
            scored = await self._score(parsed, keep)
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

    @api.get("/v1/model", responses=AUTH_RESPONSES)
    async def model(self, _: Principal | None = Depends(any_role)) -> JSONResponse:
        info = await _unwrap(self._scorer.model_info.remote())
        if info is None:
            raise NoModel(f"No version of model {self._args.model_name!r} has alias {self._args.alias!r} "
                          "loaded yet: register one, set the alias, then POST /v1/reload.")
        return JSONResponse(info)

    @api.get("/v1/thresholds", responses=AUTH_RESPONSES)
    async def thresholds(self, _: Principal | None = Depends(any_role)) -> JSONResponse:
        return JSONResponse({"thresholds": self._thresholds.to_dict(), "reconfigured": self._reconfigured,
                             "replica": serve.get_replica_context().replica_id.unique_id})

    @api.put("/v1/thresholds", status_code=202, responses=_ADMIN_RESPONSES, openapi_extra={"requestBody": {
        "required": True, "content": {_JSON: {"schema": {"type": "object", "description":
                                                         "RoutingThresholds.to_dict() form"}}}}})
    async def set_thresholds(self, request: Request, principal: Principal = Depends(admin_role)) -> JSONResponse:
        """New thresholds for every Router replica: the app's Serve config is deployed again
        with them as the Router's ``user_config`` (what ``serve deploy`` with an edited file
        does), so Serve calls :meth:`reconfigure` on each replica, and on replicas started
        later; nothing restarts. 202: the replicas take them within moments (``GET
        /v1/thresholds`` shows them). A redeploy of the original file later brings its own."""
        try:
            body = json.loads(await read_body(request, self._args.max_body_bytes))
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            raise BadRequest("body", "The body must be a JSON object of thresholds.", 400) from None
        if not isinstance(body, dict):
            raise BadRequest("body", "The body must be a JSON object of thresholds.")
        thresholds = RoutingThresholds.from_dict(body)  # SchemaError (422) names the key
        await asyncio.to_thread(_deploy_thresholds, thresholds.to_dict())
        logger.info("Thresholds redeployed by %s", principal.name)
        return JSONResponse({"thresholds": thresholds.to_dict(), "status": "reconfiguring"}, status_code=202)

    @api.post("/v1/reload", responses=_ADMIN_RESPONSES)
    async def reload(self, _: Principal = Depends(admin_role)) -> JSONResponse:
        return JSONResponse(await _unwrap(self._scorer.reload.remote()))

    @api.post("/v1/items", responses={**_ADMIN_RESPONSES, 404: _ERROR_DOC, 409: _ERROR_DOC, 413: _ERROR_DOC})
    async def ingest(self, body: IngestRequest, principal: Principal = Depends(client_role)) -> JSONResponse:
        """Ingest items into a stream (idempotent by item id): each is stored, scored (or
        takes the caller's ``probabilities``) and routed, and the prediction (probabilities,
        signals, route, reason) is stored under the served model version (``name/version``, or
        ``caller``). An item ingested again keeps its stored prediction from the same model.
        No task is created here: the round driver (or an admin) plans them from the routes."""
        store = self.services.store
        if store is None:
            raise BadRequest("store_url", "This app has no label store: deploy it with store_url.", status=503)
        if len(body.items) > self._args.max_rows_per_request:
            raise BadRequest("items", f"At most {self._args.max_rows_per_request} items per request; got "
                             f"{len(body.items)}.", status=413)
        stream = await self.services.run(store.stream, body.stream)
        ids = _ingest_ids(body)
        known = await self.services.run(store.known_items, body.stream, ids)
        stored = (await self.services.run(store.latest_predictions, body.stream, ids)).set_index(ITEM)
        routed: dict[str, tuple[str, str | None, str | None]] = {}
        predictions, models = [], []
        for mode in ("features", "probabilities"):
            rows = [(k, it) for k, it in enumerate(body.items) if getattr(it, mode) is not None]
            if not rows:
                continue
            scored, model = await self._score_for_ingest(mode, rows, stream.classes)
            frame = pd.concat([scored.scores, await self._route(scored.scores)], axis=1)
            models.append(model)
            for (k, it), row, p in zip(rows, frame.itertuples(index=False), scored.probs):
                key = str(it.item_id)
                if key in stored.index and stored.at[key, "model_version"] == model:
                    routed[key] = (model, stored.at[key, ROUTE], stored.at[key, REASON])  # a retry
                    continue
                routed[key] = (model, getattr(row, ROUTE), getattr(row, REASON))
                predictions.append((model, {ITEM: key, "probs": p.tolist(), ROUTE: getattr(row, ROUTE),
                                            "signals": _signal_json(row, stream.classes),
                                            REASON: getattr(row, REASON)}))
        items = [{ITEM: str(it.item_id), "payload": _ingest_payload(it)} for it in body.items]
        await self.services.run(store.add_items, body.stream, items, actor=principal.name)
        for model in dict.fromkeys(models):
            rows = [p for m, p in predictions if m == model]
            if rows:
                await self.services.run(store.add_model_version, model, uri=None if model == _CALLER else
                                        f"models:/{model}")
                await self.services.run(store.add_predictions, body.stream, model, rows, actor=principal.name)
        return JSONResponse({"stream": body.stream, "items": [
            {ITEM: str(it.item_id), "new": str(it.item_id) not in known, "model_version": routed[str(it.item_id)][0],
             ROUTE: routed[str(it.item_id)][1], REASON: routed[str(it.item_id)][2]} for it in body.items]})

    async def _score_for_ingest(self, mode: str, rows: list, classes: tuple[str, ...]) -> tuple[Scored, str]:
        values = [getattr(it, mode) for _, it in rows]
        if len({len(v) for v in values}) != 1:
            raise BadRequest(f"items.{mode}", f"Every item's {mode} must have the same length.")
        array = np.asarray(values, dtype=np.float64)
        if mode == "features":
            # Through _score: asked in parts when the features pass a replica message.
            scored = await self._score(ParsedRequest(item_ids=list(range(len(array))), features=array, labels=None,
                                                     compact=False, return_probabilities=True,
                                                     label_issue_scores=None, probabilities=None), True)
            model = f"{scored.model['name']}/{scored.model['version']}"
        else:
            probs = check_pred_probs(array, "probabilities")
            scored = Scored(probs=probs, scores=_signals(probs, None, list(classes)), model=None, classes=list(classes))
            model = _CALLER
        if scored.probs.shape[1] != len(classes):
            raise BadRequest(f"items.{mode}", f"Stream classes {list(classes)} are {len(classes)}; the "
                             f"{'model' if mode == 'features' else 'caller'} gives {scored.probs.shape[1]} "
                             "probabilities per item.")
        return scored, model
    async def _score(self, parsed: ParsedRequest, keep_probabilities: bool) -> Scored:
        """The Scorer's answer for a request's features, asked in parts that fit a replica message.

        Between replicas a call travels as one gRPC message of at most 4 MiB (Serve's
        high-throughput mode); a request is cut into row ranges whose features and answer fit
        in about a quarter of that (:func:`serve.payload.chunk_bounds`), asked at once (the
        Scorer batches them) and joined. A request is scored by one model version: if a reload
        swapped it between parts, the parts are asked again.
        """
        features, labels = parsed.features, parsed.labels
        k = len(self._args.class_names) if self._args.class_names else self._n_classes
        if k is None:
            info = await _unwrap(self._scorer.model_info.remote())
            k = info["n_classes"] if info else 2  # no model: the Scorer refuses the request anyway
        bounds = chunk_bounds(features.shape[0], features.shape[1] * features.itemsize + 8, k)
        if len(bounds) == 1:
            scored = await _unwrap(self._scorer.score.remote(features, labels, keep_probabilities))
            self._n_classes = len(scored.classes)
            return scored
        for _ in range(3):
            parts = await asyncio.gather(*(
                _unwrap(self._scorer.score.remote(features[a:b], None if labels is None else labels[a:b],
                                                  keep_probabilities, a)) for a, b in bounds))
            if len({str(p.model) for p in parts}) == 1:
                break
        else:
            raise NoModel("The served model changed three times while this request was scored; send it again.")
        self._n_classes = len(parts[0].classes)
        probs = np.concatenate([p.probs for p in parts]) if keep_probabilities else None
        scores = pd.concat([p.scores for p in parts], ignore_index=True)
        scores[ITEM] = np.arange(len(scores))  # each part's ids are its own positions
        return Scored(probs=probs, scores=scores, model=parts[0].model, classes=parts[0].classes)

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
