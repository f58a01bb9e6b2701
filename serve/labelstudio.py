"""Label Studio's ML backend protocol, served by the Router: ``/labelstudio/{health,setup,predict,webhook}``.

A team enters ``http://<serve host>:8000/labelstudio`` as the project's ML backend URL; Label
Studio then calls (``label_studio/ml/api_connector.py``, ``label_studio_ml/api.py``):

- ``GET /health`` -> ``{"status": "UP", "model_class": "labelloop"}``;
- ``POST /setup`` (``project``, ``schema``, ``hostname``, ``access_token``) ->
  ``{"model_version": "<name>@<version>"}``;
- ``POST /predict`` (``tasks``, ``project``, ``label_config``, ``params``) -> ``{"results":
  [{"result": [choices, reason], "score": p, "model_version": v}, ...]}``, one per task, in
  order: the champion's class and probability, and the route's reason as a read-only
  ``textarea`` result (a ``<TextArea name="reason" toName="text" editable="false"/>`` in the
  labelling config shows it). Features come from the task's data (``features``) or the item's
  payload in the store; an item with neither gets its newest stored prediction.

The project's webhook (``POST /webhook``; Label Studio's ``webhooks/models.py`` payloads) brings
the answers into the store as they are given: ``ANNOTATION_CREATED``, ``ANNOTATIONS_CREATED``
and ``ANNOTATION_UPDATED`` (an edit is a new annotation under a new key, never an overwrite)
close the tasks they answer; ``ANNOTATIONS_DELETED`` records
``annotation.deleted_in_label_studio`` events and keeps the rows. Re-sent webhooks store nothing
twice. Webhook payloads name the user by id: the backend looks the email up in Label Studio
(``GET /api/users/``, with ``label_studio.token_env``) and refuses, naming the email, a user who
is no labelloop annotator.

Auth (:mod:`serve.auth`): the webhook needs a client or admin token of the store, which Label
Studio sends from the webhook's custom headers (``{"Authorization": "Bearer <token>"}``); the
token's name is the actor of what it stores. ``/setup`` and ``/predict`` need one too unless the
app's ``auth`` is ``none`` (as scoring): Label Studio's ML backend connection sends only HTTP
Basic auth, so there the token may also come as its password (any user name).
``/health`` is open: Label Studio calls it to validate the URL. All of them answer from the
Router's store (``store_url``), and 503 without one.
"""

# No "from __future__ import annotations": FastAPI reads the endpoint annotations at run time.

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from loop.columns import ITEM, REASON
from loop.exceptions import LoopError, SchemaError
from loop.labelstudio import ControlNames, item_of, prediction
from loop.store import LabelStore, Principal, Role

from .args import LabelStudioArgs
from .auth import AUTH_RESPONSES, ERROR_SCHEMA, ml_backend_access, require
from .payload import BadRequest

__all__ = ["LabelStudioBackend", "router"]

MODEL_CLASS = "labelloop"
ANSWERS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED")
DELETES = ("ANNOTATIONS_DELETED",)
_IDS = (int, str, type(None))  # what a Label Studio id may be in a payload (hashable, unlike a list)

# score(features (n, d)) -> (probs (n, k), classes, model stamp or None, scores frame);
# route(scores frame) -> a frame with route and reason per row; model() -> the served model or None.
Score = Callable[[np.ndarray], Awaitable[tuple[np.ndarray, list[Any], dict[str, Any] | None, pd.DataFrame]]]
Route = Callable[[pd.DataFrame], Awaitable[pd.DataFrame]]
Model = Callable[[], Awaitable[dict[str, Any] | None]]


class LabelStudioBackend:
    """What the endpoints need from the replica: scoring, routing, the store, the user map.

    Parameters
    ----------
    args : LabelStudioArgs
    store : LabelStore or None
        The Router's label store (``services.store``); None when the app has no ``store_url``,
        and then every call but ``/health`` answers 503.
    score, route, model : async callables
        The Scorer, the Router's routing and the served model (``Score``, ``Route``, ``Model``).
    users : callable, optional
        Returns Label Studio's user id -> email map (default: ``GET /api/users/`` at
        ``args.url`` with the token in ``$<args.token_env>``).
    """

    def __init__(self, args: LabelStudioArgs, *, store: LabelStore | None, score: Score, route: Route, model: Model,
                 users: Callable[[], dict[int, str]] | None = None) -> None:
        self.args = args
        self.names = ControlNames(args.from_name, args.to_name, args.reason_name)
        self.store = store
        self._score = score
        self._route = route
        self._model = model
        self._fetch_users = users or _label_studio_users(args)
        self._users: dict[int, str] = {}

    @classmethod
    def for_router(cls, router: Any) -> "LabelStudioBackend | None":
        """The backend of a :class:`serve.app.Router` replica (None when its app has no
        ``label_studio`` arguments)."""
        from .app import _unwrap

        args = router._args
        if args.label_studio is None:
            return None

        async def score(features: np.ndarray):
            scored = await _unwrap(router._scorer.score.remote(features, None, True))
            return scored.probs, scored.classes, scored.model, scored.scores

        async def model():
            info = await _unwrap(router._scorer.model_info.remote())
            return None if info is None else {"name": info["name"], "version": info["version"]}

        return cls(args.label_studio, store=router.services.store, score=score, route=router._route, model=model)

    async def model_version(self) -> str:
        info = await self._model()
        return f"{info['name']}@{info['version']}" if info else f"labelloop-{self.args.stream}"

    def users(self, needed: set[int]) -> dict[int, str]:
        if not needed <= set(self._users):
            self._users = self._fetch_users()
        return self._users

    async def predictions(self, tasks: list[dict]) -> list[dict]:
        """One Label Studio prediction per task, in order."""
        stream = self.args.stream
        items = [str(t.get("data", {}).get(ITEM)) for t in tasks]
        known = await asyncio.to_thread(self.store.item_data, stream, [i for i in items if i != "None"],
                                        to_name=self.names.to_name)
        features, stored, rows = [], {}, []
        for n, (task, item) in enumerate(zip(tasks, items)):
            vector = _features(task.get("data", {}), known.get(item, {}).get("data", {}), self.args.features_key)
            if vector is not None:
                rows.append(n)
                features.append(vector)
            elif known.get(item, {}).get("prediction") is not None:
                stored[n] = known[item]["prediction"]
            else:
                raise BadRequest(f"tasks[{n}].data", f"Task {task.get('id')} has no {self.args.features_key!r} in "
                                 f"its data, and its item {item!r} has neither features nor a prediction in the "
                                 f"store's stream {stream!r}.")
        out: list[dict | None] = [None] * len(tasks)
        if features:
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for row in features for v in row)
            matrix = np.asarray(features, dtype=np.float64) if numbers and len({len(r) for r in features}) == 1 else None
            # JSON from Label Studio may say NaN or Infinity (Python's parser takes them): no model can.
            if matrix is None or not np.isfinite(matrix).all():
                raise BadRequest("features", "Every task's features must be a list of finite numbers of one "
                                 "length.")
            probs, classes, model, scores = await self._score(matrix)
            routes = (await self._route(scores)).reset_index(drop=True)
            version = f"{model['name']}@{model['version']}" if model else "labelloop"
            for j, n in enumerate(rows):
                out[n] = prediction(classes, probs[j], model_version=version, reason=routes[REASON].iloc[j],
                                    names=self.names)
        classes = await asyncio.to_thread(lambda: self.store.stream(stream).classes)
        for n, (name, probs, reason) in stored.items():
            out[n] = prediction(classes, np.asarray(probs), model_version=name, reason=reason, names=self.names)
        return out

    def record(self, payload: dict[str, Any], actor: str) -> dict[str, Any]:
        """Store a webhook's answers or deletions; what was done, for the answer body."""
        action = payload.get("action")
        stream = self.args.stream
        if action in DELETES:
            deleted = payload.get("annotations") or []
            if not isinstance(deleted, list):
                raise BadRequest("annotations", f"An {action} webhook lists the deleted 'annotations'; got "
                                 f"{type(deleted).__name__}.")
            ids = [a.get("id") for a in deleted if isinstance(a, dict)]
            written, unknown = self.store.record_label_studio_deletions(stream, ids, actor=actor)
            return {"status": "ok", "action": action, "events": written, "unknown_annotations": unknown}
        if action not in ANSWERS:
            return {"status": "ignored", "action": action}
        annotations = payload.get("annotation")
        tasks = payload.get("task")
        if isinstance(annotations, dict):
            annotations, tasks = [annotations], [tasks]
        if not isinstance(annotations, list) or not isinstance(tasks, list):
            raise BadRequest("annotation", f"A {action} webhook with its 'annotation' and 'task' (Label Studio "
                             "sends them when the webhook's 'send_payload' is on).")
        for n, ann in enumerate(annotations):
            if not isinstance(ann, dict):
                raise BadRequest(f"annotation.{n}", f"An annotation is a JSON object; got {type(ann).__name__}.")
        # Ids are numbers in Label Studio's payloads; anything else (a list, an object) names no task.
        by_id = {t.get("id"): t for t in tasks if isinstance(t, dict) and isinstance(t.get("id"), _IDS)}
        export = []
        for n, ann in enumerate(annotations):
            key = ann.get("task")
            task = (by_id.get(key) if isinstance(key, _IDS) else None) if len(by_id) > 1 else \
                next(iter(by_id.values()), None)
            if task is None:
                raise BadRequest("task", f"The webhook's annotation {ann.get('id')} comes without its task.")
            item_of(task.get("data") or {}, f"Label Studio task {task.get('id')}")
            export.append({"id": task.get("id"), "data": task["data"], "annotations": [ann]})
        needed = {int(a["completed_by"]) for a in annotations if isinstance(a.get("completed_by"), int)}
        users = self.users(needed) if needed else {}
        result = self.store.import_label_studio(stream, export, users=users, from_name=self.names.from_name,
                                                actor=actor)
        return {"status": "ok", "action": action, "inserted": result.inserted, "existing": result.existing}


def _features(data: dict, stored: dict, key: str) -> list | None:
    for source in (data, stored):
        value = source.get(key) if isinstance(source, dict) else None
        if isinstance(value, list) and value:
            return value
    return None


def _label_studio_users(args: LabelStudioArgs) -> Callable[[], dict[int, str]]:
    def fetch() -> dict[int, str]:
        from .labelstudio_api import HttpTransport, LabelStudioClient

        token = os.environ.get(args.token_env or "")
        if not args.url or not token:
            raise BadRequest("completed_by", "Label Studio names the annotator by user id; set label_studio.url "
                             "and label_studio.token_env (a Label Studio API token) so labelloop can look up "
                             "their email.")
        return LabelStudioClient(HttpTransport(args.url, token)).users()

    return fetch


# ----------------------------------------------------------------------------- the endpoints

router = APIRouter(prefix="/labelstudio", tags=["Label Studio ML backend"])


def backend() -> LabelStudioBackend:
    """The replica's backend (the Router's ``label_studio``); tests override this dependency."""
    from ray import serve

    found = getattr(serve.get_replica_context().servable_object, "label_studio", None)
    if found is None:
        raise BadRequest(None, "This app serves no Label Studio backend: give it label_studio: {stream: ...} "
                         "and store_url in its arguments.", status=404)
    return found


def backend_with_store(ls: LabelStudioBackend = Depends(backend)) -> LabelStudioBackend:
    """The backend, once it has the Router's store (503 naming ``store_url`` when the app has
    none); resolved before the token, which the store checks."""
    if ls.store is None:
        raise BadRequest("store_url", "This app's Label Studio backend needs the label store: deploy it with "
                         "store_url.", status=503)
    return ls


_RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH_RESPONSES, 503: {"description": "The app has no label store (store_url)",
                            "content": {"application/json": {"schema": ERROR_SCHEMA}}}}


@router.get("/health")
@router.get("/")
async def health() -> JSONResponse:
    return JSONResponse({"status": "UP", "model_class": MODEL_CLASS})


def _doc(**codes: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=``: 404 (the app serves no backend) and 422 (a bad body), plus ``codes``."""
    texts = {"404": "This app serves no Label Studio backend", "422": "A body Label Studio would not send, named in "
             "error.field", **codes}
    return {int(code): {"description": text, "content": {"application/json": {"schema": ERROR_SCHEMA}}}
            for code, text in texts.items()}


def _body(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """OpenAPI ``openapi_extra``: the JSON body Label Studio sends (the routes read it raw)."""
    schema = {"type": "object", "properties": properties, **({"required": list(required)} if required else {})}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_TASK = {"type": "object", "properties": {"id": {"type": "integer"}, "data": {"type": "object", "properties": {
    ITEM: {"type": "string"}, "features": {"type": "array", "items": {"type": "number"}}}}}}
_SETUP_BODY = _body({"project": {"type": "string"}, "schema": {"type": "string"}, "hostname": {"type": "string"},
                     "access_token": {"type": "string"}})
_PREDICT_BODY = _body({"tasks": {"type": "array", "items": _TASK}, "project": {"type": "string"},
                       "label_config": {"type": "string"}, "params": {"type": "object"}}, required=("tasks",))
_WEBHOOK_BODY = _body({"action": {"type": "string", "enum": [*ANSWERS, *DELETES]},
                       "annotation": {"type": "object"}, "task": _TASK,
                       "annotations": {"type": "array", "items": {"type": "object"}}}, required=("action",))


@router.post("/setup", responses={**_doc(), **_RESPONSES}, openapi_extra=_SETUP_BODY)
async def setup(request: Request, ls: LabelStudioBackend = Depends(backend_with_store),
                _: Principal | None = Depends(ml_backend_access)) -> JSONResponse:
    await _json(request)
    return JSONResponse({"model_version": await ls.model_version()})


@router.post("/predict", responses={**_doc(), **_RESPONSES, 503: {"description": "No label store (store_url), or no model served yet", "content": {"application/json": {"schema": ERROR_SCHEMA}}}},
              openapi_extra=_PREDICT_BODY)
async def predict(request: Request, ls: LabelStudioBackend = Depends(backend_with_store),
                  _: Principal | None = Depends(ml_backend_access)) -> JSONResponse:
    tasks = _tasks_of(await _json(request))
    try:
        results = await ls.predictions(tasks)
    except SchemaError as exc:
        raise BadRequest(None, str(exc)) from None
    return JSONResponse({"results": results})


@router.post("/webhook", responses={201: {"description": "Answers (or deletions) recorded"},
                                    200: {"description": "Nothing new: a retry, or an action labelloop ignores"},
                                    **_doc(**{"409": "The answers conflict with the store (a task not open for "
                                                     "them)"}), **_RESPONSES}, openapi_extra=_WEBHOOK_BODY)
async def webhook(request: Request, ls: LabelStudioBackend = Depends(backend_with_store),
                  principal: Principal = Depends(require(Role.CLIENT))) -> JSONResponse:
    body = await _json(request)
    try:
        done = await asyncio.to_thread(ls.record, body, principal.name)
    except SchemaError as exc:
        raise BadRequest(_field(str(exc)), str(exc)) from None
    except LoopError as exc:
        raise BadRequest(None, str(exc), status=409) from None
    return JSONResponse(done, status_code=201 if done["status"] == "ok" else 200)


def _tasks_of(body: dict) -> list[dict]:
    """The ``tasks`` of a /predict body: a list of objects whose ``data`` (when given) is an object."""
    tasks = body.get("tasks")
    if not isinstance(tasks, list):
        raise BadRequest("tasks", "Label Studio's /predict body holds 'tasks', a list of tasks.")
    for n, task in enumerate(tasks):
        if not isinstance(task, dict):
            raise BadRequest(f"tasks.{n}", f"A task is a JSON object with 'id' and 'data'; got {type(task).__name__}.")
        if not isinstance(task.get("data", {}), dict):
            raise BadRequest(f"tasks.{n}.data", f"A task's 'data' is a JSON object; got {type(task['data']).__name__}.")
    return tasks


async def _json(request: Request) -> dict:
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise BadRequest("body", "The body must be JSON.") from None
    if not isinstance(body, dict):
        raise BadRequest("body", "The body must be a JSON object.")
    return body


def _field(message: str) -> str | None:
    start = message.find("'")
    end = message.find("'", start + 1)
    return message[start + 1:end] if 0 <= start < end else None

