"""Bearer-token auth for the app, as FastAPI dependencies.

Tokens are issued by the label store (``labelloop tokens issue``, or ``POST
/v1/annotators/{name}/tokens``) and checked there by hash (:meth:`loop.store.LabelStore.authenticate`).
Roles (:class:`loop.store.Role`):

- ``admin``: everything;
- ``annotator``: their own tasks, answers and disputes;
- ``client``: score, route and ingest items.

Each replica remembers a valid token's principal for :data:`TOKEN_TTL_S` seconds
(:class:`TokenCache`), so that a busy annotator's requests do not each look their token up.
Revoking a token or deactivating an annotator through a replica's own API forgets every
remembered token at once; a revocation elsewhere (another replica, the CLI, the store) takes
effect within ``TOKEN_TTL_S`` seconds. An expired token is refused at its expiry, remembered or
not.

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
import contextvars
import functools
import hashlib
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from fastapi import Depends, Request

from loop.store import LabelStore, Principal, Role

from .payload import BadRequest

__all__ = ["AUTH_RESPONSES", "ERROR_SCHEMA", "STORE_THREADS", "TOKEN_TTL_S", "AuthError", "Services", "TokenCache",
           "any_role", "get_services", "ml_backend_access", "require", "scoring_access"]

FIELD = "Authorization"
# Store calls a replica runs at once. Each holds one of the store's pooled connections
# (SQLAlchemy's default pool: 5, overflowing to 15), so this stays under 15; more threads
# than connections would only queue inside the pool. asyncio's default executor would give
# min(32, cores + 4): 6 on a 2-core machine, too few to overlap 32 clients' database waits.
STORE_THREADS = 12
# How long a replica trusts a token it has checked: the window in which a revocation made
# elsewhere is not yet seen. Long enough that an annotator's next/answer cycle (seconds apart)
# checks the store about once, short enough for revocation to stay prompt.
TOKEN_TTL_S = 5.0
# Tokens a replica remembers at most (a few thousand people's; beyond, the oldest go first).
TOKEN_CACHE_SIZE = 10_000
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


class TokenCache:
    """Principals of tokens checked in the last ``ttl`` seconds, by the token's SHA-256 (the
    token itself is not kept). Only valid tokens are remembered, so unknown ones cost a lookup
    each time and cannot fill it. ``ttl`` 0 remembers nothing.

    ``clock`` (seconds, monotonic) and ``wall`` (aware UTC datetime) are the time sources: tests
    pass their own.
    """

    def __init__(self, ttl: float = TOKEN_TTL_S, *, size: int = TOKEN_CACHE_SIZE,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 <= ttl < float("inf"):
            raise ValueError(f"The 'ttl' parameter of TokenCache must be a finite number >= 0. Got {ttl!r} instead.")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"The 'size' parameter of TokenCache must be an int >= 1. Got {size!r} instead.")
        self.ttl, self.size, self._clock, self._wall = float(ttl), size, clock, wall
        self._entries: dict[str, tuple[float, Principal]] = {}

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()

    def get(self, token: str) -> Principal | None:
        """The remembered principal of ``token``; None when not remembered, older than ``ttl``,
        or past the token's expiry."""
        key = self._key(token)
        entry = self._entries.get(key)
        if entry is None:
            return None
        until, principal = entry
        if self._clock() >= until or (principal.expires_at is not None and principal.expires_at <= self._wall()):
            del self._entries[key]
            return None
        return principal

    def put(self, token: str, principal: Principal) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.size:
            del self._entries[next(iter(self._entries))]  # insertion order: the oldest
        self._entries[self._key(token)] = (self._clock() + self.ttl, principal)

    def clear(self) -> None:
        """Forget every token (a token was revoked or an annotator changed through this replica)."""
        self._entries.clear()


class Services:
    """What a Router replica's endpoints work with: the label store (None without
    ``store_url``), the auth mode, the task SLA and the replica's :class:`TokenCache`. The Router builds one in its constructor;
    tests build one over a store and put it in ``app.dependency_overrides[get_services]``.
    Store calls run in a pool of ``threads`` threads of their own (:data:`STORE_THREADS`)."""

    def __init__(self, store: LabelStore | None, *, auth: str = "token", task_sla_hours: float = 24.0,
                 reconfigure: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None,
                 threads: int = STORE_THREADS, tokens: TokenCache | None = None) -> None:
        self.store = store
        self.tokens = TokenCache() if tokens is None else tokens
        self.auth = auth
        self.task_sla_hours = task_sla_hours
        self.reconfigure = reconfigure
        self.last_escalation = 0.0
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="store")

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a (blocking) store call off the replica's event loop, in the store's threads."""
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)  # as asyncio.to_thread
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)


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
    principal = services.tokens.get(token)
    if principal is not None:
        return principal
    principal = await services.run(services.store.authenticate, token)
    if principal is None:
        raise AuthError("The bearer token is unknown, revoked or expired.")
    services.tokens.put(token, principal)
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
