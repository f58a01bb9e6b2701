"""The task API: people in the loop, over the label store, in the Router's FastAPI app.

Stateless: every replica reads and writes the store (``AppArgs.store_url``), so the API scales
out with the Router. Every route needs a bearer token (:mod:`serve.auth`) and documents its
4xx answers in OpenAPI.

Annotators
    ``GET /v1/tasks/next?stream=`` (200 ``{"task": ...}``, 204 when there is none),
    ``GET /v1/tasks/{id}``, ``GET /v1/tasks?status=&stream=`` (their own; admin: all),
    ``POST /v1/tasks/{id}/annotations`` (201 new, 200 a retry, 409 other content under the
    same ``Idempotency-Key``), ``POST /v1/items/{item_id}/disputes?stream=``.
Clients
    ``POST /v1/items``: ingest items into a stream, scored (or with the caller's
    probabilities) and routed on arrival; idempotent by item id. It creates no task: a
    round driver plans tasks from the stored routes, or an admin posts them.
Owners and admins
    ``GET /v1/queue/escalated?stream=``: work past its SLA (the stream's ``owner``, by
    token name, or an admin).
Admins
    streams, annotators (tier, streams, email, tokens), tokens, guideline versions, tasks.
    Thresholds and reload live with the Router (:mod:`serve.app`).

The task JSON (what the review page and the Label Studio bridge read)::

    {"task_id", "stream", "item_id", "kind", "blind", "tier", "due_at", "classes": [...],
     "item": {"display": str | null, "payload": {...} | null},
     "guideline": {"version": int | null, "section": str | null},
     "suggestion": null | {"label", "confidence", "route", "reason", "confused_pair": [a, b]},
     "examples": null | {"<class a>": [{"item_id", "display"}, ...], "<class b>": [...]}}

A blind task (double-blind, audit, adjudication) has ``suggestion`` and ``examples`` null and
the whole guideline as its section; nothing in any task's answer depends on another
annotator's answer.

SLA: the store's :meth:`~loop.store.LabelStore.escalate_overdue` runs at most every
:data:`ESCALATE_EVERY_S` seconds per replica, on the requests that read queues (next task,
the escalated queue, metrics): no timer to keep alive, and one cheap UPDATE when it runs.
"""

# No "from __future__ import annotations": FastAPI reads the signatures at run time.

import time
from datetime import datetime, timedelta
from typing import Any, Literal

import pandas as pd
from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from loop.columns import ITEM
from loop.exceptions import ForbiddenError
from loop.store import MAX_SLA, Principal, Role, TaskPreview

from .auth import AUTH_RESPONSES, ERROR_SCHEMA, AuthError, Services, any_role, get_services, require
from .payload import BadRequest

__all__ = ["ESCALATE_EVERY_S", "IngestRequest", "admin_role", "client_role", "metrics_text", "router", "task_json"]

ESCALATE_EVERY_S = 30.0
_ERR = {"content": {"application/json": {"schema": ERROR_SCHEMA}}}


def _doc(*extra: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=``: 401 and 403 always, 422 for a bad request, plus ``extra``."""
    text = {400: "Malformed request", 404: "No such task, item, stream, annotator, version or token",
            409: "Conflict: an idempotency key reused with other content, or the entity is not in a state for this",
            413: "Too many rows", 503: "No label store configured"}
    out = dict(AUTH_RESPONSES)
    out[422] = {"description": "Invalid request: the body or a parameter, named in error.field", **_ERR}
    for code in extra:
        out[code] = {"description": text[code], **_ERR}
    out[503] = {"description": text[503], **_ERR}
    return out


router = APIRouter()

annotator_role = require(Role.ANNOTATOR)
admin_role = require()
client_role = require(Role.CLIENT)


# ----------------------------------------------------------------------------- request bodies

class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IngestItem(_Body):
    item_id: StrictStr | StrictInt
    features: list[StrictFloat | StrictInt] | None = None
    probabilities: list[StrictFloat | StrictInt] | None = None
    payload: dict[str, Any] | None = Field(None, description="What people see: display text, title, links...")


class IngestRequest(_Body):
    stream: StrictStr
    items: list[IngestItem] = Field(min_length=1)


class AnswerRequest(_Body):
    label: StrictStr | StrictInt
    rationale: StrictStr | None = None
    evidence: Any = None
    seconds: StrictFloat | StrictInt | None = Field(None, ge=0)
    flags: list[Literal["model_wrong", "guideline_unclear"]] | None = None
    idempotency_key: StrictStr | None = Field(None, min_length=1, max_length=150)


class DisputeRequest(_Body):
    target: Literal["resolution", "suggestion"]
    reason: StrictStr = Field(min_length=1)
    label: StrictStr | StrictInt | None = None
    idempotency_key: StrictStr | None = Field(None, min_length=1, max_length=150)


class StreamRequest(_Body):
    name: StrictStr
    classes: list[StrictStr] = Field(min_length=2)
    owner: StrictStr | None = None
    escalation_contact: StrictStr | None = None


class AnnotatorRequest(_Body):
    name: StrictStr
    tier: StrictInt = Field(1, ge=0)
    streams: list[StrictStr] = Field(default_factory=list)
    email: StrictStr | None = None
    hourly_rate: StrictFloat | StrictInt = Field(0.0, ge=0)


class AnnotatorPatch(_Body):
    tier: StrictInt | None = Field(None, ge=0)
    active: bool | None = None
    streams: list[StrictStr] = Field(default_factory=list, description="Streams to add the annotator to")
    email: StrictStr | None = None


class TokenRequest(_Body):
    name: StrictStr | None = None
    role: Literal["admin", "annotator", "client"] = "annotator"
    annotator: StrictStr | None = None
    expires_at: datetime | None = None


class GuidelineRequest(_Body):
    text: StrictStr = Field(min_length=1)
    examples: Any = None
    parent_version: StrictInt | None = None
    idempotency_key: StrictStr | None = None


class GuidelineRevision(_Body):
    text: StrictStr | None = Field(None, min_length=1)
    examples: Any = None
    reason: StrictStr | None = Field(None, description="Why, kept in the audit trail")


class ConfusionDraftRequest(_Body):
    pairs: StrictInt = Field(3, ge=1, le=50, description="Sections for this many of the most confused pairs")
    per_class: StrictInt = Field(3, ge=1, le=50, description="Boundary examples per class of a pair")


class TaskSpec(_Body):
    item_id: StrictStr | StrictInt
    tier: StrictInt = Field(1, ge=0)
    kind: Literal["label", "expert", "double_blind", "audit", "adjudication"] = "label"
    blind: bool | None = None
    due_at: datetime | None = None
    annotator: StrictStr | None = None
    round: StrictInt | None = Field(None, ge=0)
    guideline_version: StrictInt | None = None
    idempotency_key: StrictStr | None = None


class TasksRequest(_Body):
    tasks: list[TaskSpec] = Field(min_length=1)
    sla_hours: StrictFloat | StrictInt | None = Field(None, gt=0, le=MAX_SLA.total_seconds() / 3600,
                                                      description="Default: the app's task_sla_hours")


# ----------------------------------------------------------------------------- helpers

def _store(services: Services):
    if services.store is None:
        raise BadRequest("store_url", "This app has no label store: deploy it with store_url to use the task API.",
                         status=503)
    return services.store


def _stamp(value: Any) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return pd.Timestamp(value).isoformat()


def _own_annotator(principal: Principal) -> str:
    if principal.annotator is None:
        raise AuthError(f"Token {principal.name!r} speaks for no annotator; tasks need an annotator's token.",
                        status=403)
    return principal.annotator


def task_json(preview: TaskPreview) -> dict[str, Any]:
    """The task JSON (module docstring) of a preview."""
    task, s = preview.task, preview.suggestion
    return {
        "task_id": task.id, "stream": task.stream, "item_id": task.item_id, "kind": task.kind, "blind": task.blind,
        "tier": task.tier, "due_at": _stamp(task.due_at), "classes": list(preview.classes),
        "item": {"display": preview.display, "payload": preview.payload if isinstance(preview.payload, dict) else None},
        "guideline": {"version": preview.guideline_version, "section": preview.guideline_section},
        "suggestion": None if s is None else {"label": s.label, "confidence": s.confidence, "route": s.route,
                                              "reason": s.reason, "confused_pair": list(s.confused_pair)},
        "examples": preview.examples,
    }


def _task_row(row: pd.Series) -> dict[str, Any]:
    return {"task_id": int(row["task_id"]), "stream": row["stream"], "item_id": row[ITEM], "kind": row["kind"],
            "blind": bool(row["blind"]), "tier": int(row["tier"]), "status": row["status"],
            "annotator": None if pd.isna(row["annotator_id"]) else row["annotator_id"],
            "due_at": _stamp(row["due_at"]), "assigned_at": _stamp(row["assigned_at"]),
            "completed_at": _stamp(row["completed_at"]), "escalated_at": _stamp(row["escalated_at"])}


async def escalate_if_due(services: Services) -> None:
    """Escalate overdue work at most every ESCALATE_EVERY_S seconds in this replica."""
    now = time.monotonic()
    if services.store is not None and now - services.last_escalation >= ESCALATE_EVERY_S:
        services.last_escalation = now
        await services.run(services.store.escalate_overdue)


def _annotator_json(a) -> dict[str, Any]:
    return {"name": a.name, "tier": a.tier, "active": a.active, "streams": list(a.streams), "email": a.email,
            "hourly_rate": a.hourly_rate}


def _stream_json(s) -> dict[str, Any]:
    return {"name": s.name, "classes": list(s.classes), "owner": s.owner, "escalation_contact": s.escalation_contact,
            "created_at": _stamp(s.created_at)}


def _guideline_json(g) -> dict[str, Any]:
    return {"stream": g.stream, "version": g.version, "text": g.text, "examples": g.examples,
            "parent_version": g.parent_version, "author": g.author, "created_at": _stamp(g.created_at),
            "published_at": _stamp(g.published_at)}


# ----------------------------------------------------------------------------- annotators

@router.get("/v1/tasks/next", responses={**_doc(404), 200: {"description": "The caller's next task"},
                                         204: {"description": "No task for the caller now"}})
async def next_task(stream: str | None = Query(None, description="Only this stream"),
                    principal: Principal = Depends(annotator_role),
                    services: Services = Depends(get_services)) -> Response:
    """The caller's next task: their unfinished one, else one claimed for them now (stream
    membership, tier, never an item they labelled, skill on the item's likely class pair,
    urgency)."""
    store = _store(services)
    await escalate_if_due(services)
    preview = await services.run(store.next_task_preview, _own_annotator(principal), stream=stream,
                                 actor=principal.name)
    if preview is None:
        return Response(status_code=204)
    return JSONResponse({"task": task_json(preview)})


@router.get("/v1/tasks/{task_id}", responses=_doc(404))
async def get_task(task_id: int, principal: Principal = Depends(annotator_role),
                   services: Services = Depends(get_services)) -> JSONResponse:
    """One task, as its assignee sees it (admins see any)."""
    store = _store(services)
    task = await services.run(store.task, task_id)
    if principal.role is not Role.ADMIN and task.annotator != _own_annotator(principal):
        raise ForbiddenError(f"Task {task_id} is not assigned to you.")
    return JSONResponse({"task": task_json(await services.run(store.task_preview, task_id))})


@router.get("/v1/tasks", responses=_doc(404))
async def list_tasks(status: Literal["open", "assigned", "done", "cancelled"] | None = None,
                     stream: str | None = None, principal: Principal = Depends(annotator_role),
                     services: Services = Depends(get_services)) -> JSONResponse:
    """The caller's tasks (an admin's: everyone's), oldest first."""
    store = _store(services)
    who = None if principal.role is Role.ADMIN else _own_annotator(principal)
    frame = await services.run(store.annotator_tasks, who, stream=stream,
                               statuses=None if status is None else [status])
    return JSONResponse({"tasks": [_task_row(row) for _, row in frame.iterrows()]})


@router.post("/v1/tasks/{task_id}/annotations", status_code=201,
             responses={**_doc(404, 409), 200: {"description": "A retry: the stored answer"},
                        201: {"description": "The answer, stored now"}})
async def answer(task_id: int, body: AnswerRequest, principal: Principal = Depends(annotator_role),
                 services: Services = Depends(get_services),
                 idempotency_key: str | None = Header(None, alias="Idempotency-Key", max_length=150)) -> JSONResponse:
    """Answer a task assigned to the caller. ``Idempotency-Key`` (header, or
    ``idempotency_key`` in the body) makes a retry safe: the same content returns the stored
    answer (200), other content is 409."""
    store = _store(services)
    if idempotency_key and body.idempotency_key and idempotency_key != body.idempotency_key:
        raise BadRequest("idempotency_key", "The Idempotency-Key header and the body's idempotency_key differ.")
    stored, created = await services.run(
        store.answer_task, task_id, _own_annotator(principal), body.label, rationale=body.rationale,
        evidence=body.evidence, seconds=body.seconds, flags=body.flags,
        idempotency_key=idempotency_key or body.idempotency_key, source="api", actor=principal.name)
    classes = store.stream(stored.stream).classes
    return JSONResponse({"annotation": {
        "annotation_id": stored.id, "task_id": stored.task_id, "stream": stored.stream, "item_id": stored.item_id,
        "annotator": stored.annotator, "label": classes[stored.label], "rationale": stored.rationale,
        "evidence": stored.evidence, "seconds": stored.seconds, "flags": list(stored.flags),
        "guideline_version": stored.guideline_version, "created_at": _stamp(stored.created_at)},
        "created": created}, status_code=201 if created else 200)


@router.post("/v1/items/{item_id}/disputes", status_code=201, responses=_doc(404, 409))
async def dispute(item_id: str, body: DisputeRequest, stream: str = Query(..., description="The item's stream"),
                  principal: Principal = Depends(annotator_role),
                  services: Services = Depends(get_services)) -> JSONResponse:
    """Dispute an item's resolved label or its suggestion: the item goes to adjudication (a
    blind tier-2 task, due after the app's SLA)."""
    store = _store(services)
    d = await services.run(store.dispute, stream, item_id, _own_annotator(principal), target=body.target,
                           reason=body.reason, label=body.label, idempotency_key=body.idempotency_key,
                           sla=timedelta(hours=services.task_sla_hours), actor=principal.name)
    return JSONResponse({"dispute": {"dispute_id": d.id, "stream": d.stream, "item_id": d.item_id,
                                     "target": d.target, "status": d.status,
                                     "label": None if d.label is None else store.stream(stream).classes[d.label],
                                     "adjudication_task_id": d.adjudication_task_id, "due_at": _stamp(d.due_at)}},
                        status_code=201)


# ----------------------------------------------------------------------------- owners

@router.get("/v1/queue/escalated", responses=_doc(404))
async def escalated(stream: str = Query(...), principal: Principal = Depends(require(Role.ANNOTATOR, Role.CLIENT)),
                    services: Services = Depends(get_services)) -> JSONResponse:
    """The stream owner's queue: tasks and disputes past their SLA, still unfinished. For the
    stream's owner (a token whose name is the stream's ``owner``) and admins."""
    store = _store(services)
    s = await services.run(store.stream, stream)
    if principal.role is not Role.ADMIN and principal.name != s.owner:
        raise AuthError(f"Only stream {stream!r}'s owner or an admin reads its escalated queue.", status=403)
    await escalate_if_due(services)
    frame = await services.run(store.owner_queue, stream)
    return JSONResponse({"stream": stream, "owner": s.owner, "queue": [
        {"entity": r["entity"], "id": int(r["id"]), "item_id": r[ITEM], "kind": r["kind"], "status": r["status"],
         "annotator": None if pd.isna(r["annotator_id"]) else r["annotator_id"], "due_at": _stamp(r["due_at"]),
         "escalated_at": _stamp(r["escalated_at"])} for _, r in frame.iterrows()]})


# ----------------------------------------------------------------------------- admin

@router.post("/v1/streams", status_code=201, responses=_doc(409))
async def create_stream(body: StreamRequest, principal: Principal = Depends(admin_role),
                        services: Services = Depends(get_services)) -> JSONResponse:
    """Create a work stream with its ordered classes (idempotent by name)."""
    store = _store(services)
    s = await services.run(store.create_stream, body.name, body.classes, owner=body.owner,
                           escalation_contact=body.escalation_contact, actor=principal.name)
    return JSONResponse({"stream": _stream_json(s)}, status_code=201)


@router.get("/v1/streams", responses=_doc())
async def list_streams(principal: Principal = Depends(admin_role),
                       services: Services = Depends(get_services)) -> JSONResponse:
    store = _store(services)
    return JSONResponse({"streams": [_stream_json(s) for s in await services.run(store.streams)]})


@router.post("/v1/annotators", status_code=201, responses=_doc(404, 409))
async def create_annotator(body: AnnotatorRequest, principal: Principal = Depends(admin_role),
                           services: Services = Depends(get_services)) -> JSONResponse:
    """Register an annotator (idempotent by name) on streams, with a tier and an email."""
    store = _store(services)
    a = await services.run(store.add_annotator, body.name, tier=body.tier, streams=body.streams, email=body.email,
                           hourly_rate=float(body.hourly_rate), actor=principal.name)
    return JSONResponse({"annotator": _annotator_json(a)}, status_code=201)


@router.get("/v1/annotators", responses=_doc())
async def list_annotators(principal: Principal = Depends(admin_role),
                          services: Services = Depends(get_services)) -> JSONResponse:
    store = _store(services)
    return JSONResponse({"annotators": [_annotator_json(a) for a in await services.run(store.annotators)]})


@router.patch("/v1/annotators/{name}", responses=_doc(404, 409))
async def patch_annotator(name: str, body: AnnotatorPatch, principal: Principal = Depends(admin_role),
                          services: Services = Depends(get_services)) -> JSONResponse:
    """Change an annotator's tier, active flag or email; add them to streams."""
    store = _store(services)
    a = await services.run(store.update_annotator, name, tier=body.tier, active=body.active, email=body.email,
                           streams=body.streams, actor=principal.name)
    services.tokens.clear()  # a deactivated annotator's tokens stop working now, not after the TTL
    return JSONResponse({"annotator": _annotator_json(a)})


@router.post("/v1/annotators/{name}/tokens", status_code=201, responses=_doc(404))
async def issue_annotator_token(name: str, body: TokenRequest | None = None,
                                principal: Principal = Depends(admin_role),
                                services: Services = Depends(get_services)) -> JSONResponse:
    """Issue an annotator token for ``name``: the answer is the only time it is shown."""
    store = _store(services)
    expires = None if body is None else body.expires_at
    token = await services.run(store.issue_token, name, Role.ANNOTATOR, annotator=name, expires_at=expires,
                               actor=principal.name)
    return JSONResponse({"token": token, "prefix": token[:10], "role": "annotator", "annotator": name},
                        status_code=201)


@router.post("/v1/tokens", status_code=201, responses=_doc(404))
async def issue_token(body: TokenRequest, principal: Principal = Depends(admin_role),
                      services: Services = Depends(get_services)) -> JSONResponse:
    """Issue a token of any role (a client's for scoring, another admin's); shown once."""
    store = _store(services)
    if body.name is None:
        raise BadRequest("name", "A token needs a name (who or what uses it).")
    token = await services.run(store.issue_token, body.name, body.role, annotator=body.annotator,
                               expires_at=body.expires_at, actor=principal.name)
    return JSONResponse({"token": token, "prefix": token[:10], "role": body.role, "annotator": body.annotator},
                        status_code=201)


@router.get("/v1/tokens", responses=_doc())
async def list_tokens(principal: Principal = Depends(admin_role),
                      services: Services = Depends(get_services)) -> JSONResponse:
    """Every token's id, prefix, role, name, annotator and state (never the token or its hash)."""
    store = _store(services)
    frame = await services.run(store.tokens_frame)
    return JSONResponse({"tokens": [
        {"token_id": int(r["token_id"]), "prefix": r["prefix"], "role": r["role"], "name": r["name"],
         "annotator": None if pd.isna(r["annotator_id"]) else r["annotator_id"],
         "created_at": _stamp(r["created_at"]), "expires_at": _stamp(r["expires_at"]),
         "revoked_at": _stamp(r["revoked_at"]), "active": bool(r["active"])} for _, r in frame.iterrows()]})


@router.delete("/v1/tokens/{token}", responses=_doc(404))
async def revoke_token(token: str, principal: Principal = Depends(admin_role),
                       services: Services = Depends(get_services)) -> JSONResponse:
    """Revoke a token by id or prefix (as listed)."""
    store = _store(services)
    token_id = await services.run(store.revoke_token, token, actor=principal.name)
    services.tokens.clear()  # now in this replica; others within serve.auth.TOKEN_TTL_S
    return JSONResponse({"token_id": token_id, "revoked": True})


@router.post("/v1/streams/{stream}/guidelines", status_code=201, responses=_doc(404, 409))
async def draft_guideline(stream: str, body: GuidelineRequest, principal: Principal = Depends(admin_role),
                          services: Services = Depends(get_services)) -> JSONResponse:
    """Draft the next guideline version (markdown; a heading naming two classes, ``## neg vs
    pos``, is the section shown for that confused pair)."""
    store = _store(services)
    g = await services.run(store.add_guideline, stream, body.text, author=principal.name, examples=body.examples,
                           parent_version=body.parent_version, idempotency_key=body.idempotency_key,
                           actor=principal.name)
    return JSONResponse({"guideline": _guideline_json(g)}, status_code=201)


@router.patch("/v1/streams/{stream}/guidelines/{version}", responses=_doc(404, 409))
async def revise_guideline(stream: str, version: int, body: GuidelineRevision,
                           principal: Principal = Depends(admin_role),
                           services: Services = Depends(get_services)) -> JSONResponse:
    """Revise a draft's text and/or examples before publishing it (a drafted-from-confusions
    version is meant to be edited). 409 once the version is published: published versions never
    change, draft a new one. 422 (field ``text``) when the body changes nothing."""
    store = _store(services)
    g = await services.run(store.revise_guideline, stream, version, text=body.text, examples=body.examples,
                           actor=principal.name, reason=body.reason)
    return JSONResponse({"guideline": _guideline_json(g)})


@router.post("/v1/streams/{stream}/guidelines/{version}/publish", responses=_doc(404))
async def publish_guideline(stream: str, version: int, principal: Principal = Depends(admin_role),
                            services: Services = Depends(get_services)) -> JSONResponse:
    """Publish a draft (idempotent): tasks show it from now on."""
    store = _store(services)
    g = await services.run(store.publish_guideline, stream, version, actor=principal.name)
    return JSONResponse({"guideline": _guideline_json(g)})


@router.post("/v1/streams/{stream}/guidelines/drafts/from-confusions", status_code=201,
             responses=_doc(404, 409))
async def draft_guideline_from_confusions(stream: str, body: ConfusionDraftRequest | None = None,
                                          principal: Principal = Depends(admin_role),
                                          services: Services = Depends(get_services)) -> JSONResponse:
    """Draft the next guideline version from the stream's most confused class pairs: per pair a
    ``## a vs b`` section (what a task of that pair previews once published) with the resolved
    items nearest the model's decision edge and the annotators' ``guideline_unclear`` flags and
    rationales, added to the published version's text. Review it, then publish it
    (``POST /v1/streams/{stream}/guidelines/{version}/publish``). 422 (field ``stream``) when the
    stream has no stored predictions or no confused pair."""
    store = _store(services)
    body = body or ConfusionDraftRequest()
    g, draft = await services.run(store.draft_guideline_from_pairs, stream, author=principal.name, pairs=body.pairs,
                                  per_class=body.per_class, actor=principal.name)
    pairs = [{"class_a": r.class_a, "class_b": r.class_b, "estimated_count": float(r.estimated_count),
              "share": float(r.share), "items": int(r.items), "answers": int(r.answers),
              "guideline_unclear": int(r.guideline_unclear), "rationales": list(r.rationales)}
             for r in draft.pairs.itertuples(index=False)]
    return JSONResponse({"guideline": _guideline_json(g), "pairs": pairs}, status_code=201)


@router.get("/v1/streams/{stream}/guidelines/{version}", responses=_doc(404))
async def get_guideline(stream: str, version: int, principal: Principal = Depends(admin_role),
                        services: Services = Depends(get_services)) -> JSONResponse:
    store = _store(services)
    return JSONResponse({"guideline": _guideline_json(await services.run(store.guideline, stream, version))})


@router.post("/v1/streams/{stream}/tasks", status_code=201, responses=_doc(404, 409))
async def create_tasks(stream: str, body: TasksRequest, principal: Principal = Depends(admin_role),
                       services: Services = Depends(get_services)) -> JSONResponse:
    """Create tasks directly (idempotent by key), due after ``sla_hours`` unless they say."""
    store = _store(services)
    rows = []
    for spec in body.tasks:
        row = {ITEM: spec.item_id, "tier": spec.tier, "kind": spec.kind}
        for key, value in (("blind", spec.blind), ("due_at", spec.due_at), ("annotator_id", spec.annotator),
                           ("round", spec.round), ("guideline_version", spec.guideline_version),
                           ("idempotency_key", spec.idempotency_key)):
            if value is not None:
                row[key] = value
        rows.append(row)
    sla = timedelta(hours=float(body.sla_hours or services.task_sla_hours))
    result = await services.run(store.add_tasks, stream, rows, sla=sla, actor=principal.name)
    return JSONResponse({"inserted": result.inserted, "existing": result.existing, "task_ids": list(result.ids)},
                        status_code=201)



# ----------------------------------------------------------------------------- metrics

# Metric names, in one place (Prometheus text format, ``GET /metrics``).
QUEUE_DEPTH = "labelloop_queue_depth"
TASK_AGE = "labelloop_task_oldest_age_seconds"
TASKS_OVERDUE = "labelloop_tasks_overdue"
ANSWERS_PER_MINUTE = "labelloop_answers_per_minute"
SLA_BREACHES = "labelloop_sla_breaches"
DISPUTES_OPEN = "labelloop_disputes_open"


def metrics_text(metrics) -> bytes:
    """A :class:`~loop.store.QueueMetrics` in Prometheus' text format."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class _Queues:
        def collect(self):
            labels = ["stream", "tier", "status"]
            depth = GaugeMetricFamily(QUEUE_DEPTH, "Unfinished tasks per stream, tier and status", labels=labels)
            age = GaugeMetricFamily(TASK_AGE, "Age of the oldest unfinished task", labels=labels)
            late = GaugeMetricFamily(TASKS_OVERDUE, "Unfinished tasks past their due time", labels=labels)
            for r in metrics.queues.itertuples(index=False):
                key = [r.stream, str(r.tier), r.status]
                depth.add_metric(key, r.depth)
                age.add_metric(key, r.oldest_seconds)
                late.add_metric(key, r.overdue)
            answers = GaugeMetricFamily(ANSWERS_PER_MINUTE, "Answers stored in the last minute", labels=["stream"])
            breaches = CounterMetricFamily(SLA_BREACHES, "Tasks and disputes escalated past their SLA",
                                           labels=["stream", "entity"])
            disputes = GaugeMetricFamily(DISPUTES_OPEN, "Open disputes", labels=["stream"])
            for r in metrics.streams.itertuples(index=False):
                answers.add_metric([r.stream], r.answers_last_minute)
                breaches.add_metric([r.stream, "task"], r.tasks_escalated)
                breaches.add_metric([r.stream, "dispute"], r.disputes_escalated)
                disputes.add_metric([r.stream], r.disputes_open)
            yield from (depth, age, late, answers, breaches, disputes)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Queues())
    return generate_latest(registry)


@router.get("/metrics", response_class=Response, responses={
    **{k: v for k, v in _doc().items() if k != 422},
    200: {"description": "Prometheus text format", "content": {"text/plain": {}}}})
async def metrics(principal: Principal | None = Depends(any_role),
                  services: Services = Depends(get_services)) -> Response:
    """Queue depth per stream, tier and status, the oldest task's age, overdue tasks, answers
    per minute, SLA breaches, open disputes. Needs a token (any role: give Prometheus a client
    token, ``authorization: {credentials: ...}`` in its scrape config) unless ``auth: none``."""
    store = _store(services)
    await escalate_if_due(services)
    body = metrics_text(await services.run(store.queue_metrics))
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
