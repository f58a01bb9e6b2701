"""Bearer-token auth for the app, as FastAPI dependencies.

Tokens are issued by the label store (``labelloop tokens issue``, or ``POST
/v1/annotators/{name}/tokens``) and checked there by hash (:meth:`loop.store.LabelStore.authenticate`).
Roles (:class:`loop.store.Role`):

- ``admin``: everything;
- ``annotator``: their own tasks, answers and disputes;
- ``client``: score, route and ingest items.

A missing, unknown, revoked or expired token gets 401 ``{"error": {"field": "Authorization",
...}}`` with ``WWW-Authenticate: Bearer``; a valid token of the wrong role gets 403. With
``auth: none`` (a local demo) the scoring endpoints take requests without a token; the task
and admin endpoints never do.

Label Studio's ML backend connection can send only HTTP Basic auth, so its two calls that
score (``/labelstudio/setup``, ``/labelstudio/predict``: :func:`ml_backend_access`) also take
``Authorization: Basic base64(<any user>:<token>)``, the token as the password; no other route
does.
"""

# No "from __future__ import annotations": FastAPI reads these signatures at run time.

import asyncio
import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, Request

from loop.store import LabelStore, Principal, Role

from .payload import BadRequest

__all__ = ["AUTH_RESPONSES", "ERROR_SCHEMA", "AuthError", "Services", "any_role", "get_services",
           "ml_backend_access", "require", "scoring_access"]

FIELD = "Authorization"
ERROR_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"error": {"type": "object", "properties": {
    "field": {"type": "string", "nullable": True}, "message": {"type": "string"}}}}}
_ERROR = {"content": {"application/json": {"schema": ERROR_SCHEMA}}}
# What every authenticated route documents (OpenAPI ``responses=``).
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, unknown, revoked or expired bearer token", **_ERROR},
    403: {"description": "The token's role (or owner) may not do this", **_ERROR},
}


class AuthError(BadRequest):
    """401 (no valid token; answered with ``WWW-Authenticate: Bearer``) or 403 (wrong role)."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(FIELD, message, status)

    def __reduce__(self):
        return (type(self), (self.message, self.status))

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="labelloop"'} if self.status == 401 else {}


class Services:
    """What a Router replica's endpoints work with: the label store (None without
    ``store_url``), the auth mode and the task SLA. The Router builds one in its constructor;
    tests build one over a store and put it in ``app.dependency_overrides[get_services]``."""

    def __init__(self, store: LabelStore | None, *, auth: str = "token", task_sla_hours: float = 24.0,
                 reconfigure: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None) -> None:
        self.store = store
        self.auth = auth
        self.task_sla_hours = task_sla_hours
        self.reconfigure = reconfigure
        self.last_escalation = 0.0

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a (blocking) store call off the replica's event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)


def get_services() -> Services:
    """The serving replica's :class:`Services` (the Router deployment instance holds them)."""
    from ray import serve

    return serve.get_replica_context().servable_object.services


def _token(request: Request, *, basic: bool = False) -> str:
    """The bearer token of the request; with ``basic``, also the password of HTTP Basic auth."""
    header = request.headers.get("authorization")
    if not header:
        raise AuthError("This endpoint needs a bearer token: send 'Authorization: Bearer <token>'.")
    scheme, _, credentials = header.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        return credentials
    if basic and scheme.lower() == "basic":
        try:
            _, _, password = base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            password = ""
        if password:
            return password
        raise AuthError("HTTP Basic auth must carry a labelloop token as its password: base64('<user>:<token>').")
    raise AuthError("The Authorization header must read 'Bearer <token>'"
                    + (" or 'Basic base64(<user>:<token>)'." if basic else "."))


async def _principal(request: Request, services: Services, *, basic: bool = False) -> Principal:
    token = _token(request, basic=basic)
    if services.store is None:
        raise AuthError("This app checks tokens in the label store but has none: deploy it with store_url, "
                        "or with auth 'none' for a local demo.")
    principal = await services.run(services.store.authenticate, token)
    if principal is None:
        raise AuthError("The bearer token is unknown, revoked or expired.")
    return principal


def _client_or_admin(principal: Principal, doing: str) -> Principal:
    if principal.role not in (Role.ADMIN, Role.CLIENT):
        raise AuthError(f"A {principal.role.value} token may not {doing}; it needs a client or admin token.",
                        status=403)
    return principal


def require(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller's principal when their token has one of ``roles`` (admin
    always passes), else 401/403."""
    allowed = {Role.ADMIN, *roles}

    async def dependency(request: Request, services: Services = Depends(get_services)) -> Principal:
        principal = await _principal(request, services)
        if principal.role not in allowed:
            raise AuthError(f"A {principal.role.value} token may not do this; it needs one of "
                            f"{sorted(r.value for r in allowed)}.", status=403)
        return principal

    return dependency


async def any_role(request: Request, services: Services = Depends(get_services)) -> Principal | None:
    """Any valid token; none needed with ``auth: none``."""
    if services.auth == "none":
        return None
    return await _principal(request, services)


async def scoring_access(request: Request, services: Services = Depends(get_services)) -> Principal | None:
    """Score and route: a client or admin token; none needed with ``auth: none``."""
    if services.auth == "none":
        return None
    return _client_or_admin(await _principal(request, services), "score or route")


async def ml_backend_access(request: Request, services: Services = Depends(get_services)) -> Principal | None:
    """Label Studio's ML backend calls that score (``/labelstudio/setup``, ``/predict``): a
    client or admin token, as a bearer token or as the password of HTTP Basic auth (all Label
    Studio's ML backend connection sends); none needed with ``auth: none``, as scoring."""
    if services.auth == "none":
        return None
    return _client_or_admin(await _principal(request, services, basic=True), "call the ML backend")
