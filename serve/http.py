"""The HTTP edge's guards: JSON bodies only, a byte limit on bodies, and no 500 without JSON.

- :class:`JsonApiGuard`, an ASGI middleware around the whole app:

  - a ``POST``, ``PUT`` or ``PATCH`` must say ``Content-Type: application/json``, else 415.
    A web page can make a browser send a cross-site ``POST`` without asking the server
    first only as a form (``application/x-www-form-urlencoded``, ``multipart/form-data``,
    ``text/plain``); a JSON content type makes the browser ask (CORS preflight), which the
    app never grants. So a page a team member visits cannot trigger ``POST /v1/reload``.
  - an exception no handler turned into an answer becomes a 500 with the one error shape
    (:func:`serve.payload.error_body`) naming the exception's type: no traceback, no exception
    text and no plain text reach the caller; the traceback goes to the replica's log with URL
    passwords hidden (:func:`loop._redact.redact`).

- :func:`read_body`: a request body read up to a byte limit. A ``Content-Length`` above it is
  refused before a byte is read, and a body without one (chunked) is counted as it streams
  and refused as soon as it passes the limit: 413 either way, never a body read whole first.

Every refusal is ``{"error": {"field": ..., "message": ...}}``.
"""

from __future__ import annotations

import json
import logging
import traceback
from typing import Any

from loop._redact import redact

from .payload import BadRequest, error_body

__all__ = ["DEFAULT_MAX_BODY_BYTES", "JSON_MEDIA_TYPE", "BodyTooLarge", "JsonApiGuard", "document_edge_errors",
           "read_body"]

JSON_MEDIA_TYPE = "application/json"
# 65,536 rows (AppArgs.max_rows_per_request) of 64 float64 features in base64 are 45 MB, with
# ids, labels and the rest a little more: 64 MiB takes the documented largest compact request
# and refuses what only a mistake or an attack sends. A plain JSON request of as many rows with
# long decimals is larger: send it compact (ServeClient does), or raise max_body_bytes.
DEFAULT_MAX_BODY_BYTES = 64 * 1024 ** 2
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

logger = logging.getLogger("ray.serve")


class BodyTooLarge(BadRequest):
    """A request body over the byte limit: 413, raised before it is read whole."""

    def __init__(self, limit: int, got: str) -> None:
        super().__init__("body", f"Request bodies are at most {limit} bytes; got {got}. Split the batch "
                         "(ServeClient's chunk_size) or send the compact form.", 413)
        self.limit = limit
        self.got = got

    def __reduce__(self):
        return (type(self), (self.limit, self.got))


async def read_body(request: Any, max_bytes: int) -> bytes:
    """The body of a Starlette ``request``, at most ``max_bytes`` of it.

    Parameters
    ----------
    request : starlette.requests.Request
    max_bytes : int
        The limit; :class:`BodyTooLarge` (413) beyond it.

    Returns
    -------
    bytes

    Raises
    ------
    BodyTooLarge
        ``Content-Length`` says more than ``max_bytes`` (nothing is read), or the streamed body
        passes ``max_bytes`` (reading stops there).
    BadRequest
        400 for a ``Content-Length`` that is not a number.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise BadRequest("body", f"Content-Length must be a number of bytes; got {declared!r}.", 400) from None
        if length > max_bytes:
            raise BodyTooLarge(max_bytes, f"Content-Length {length}")
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge(max_bytes, f"more than that (read {size} bytes so far)")
        parts.append(chunk)
    return b"".join(parts)


def _media_type(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.decode("latin-1").split(";", 1)[0].strip().lower()
    return None


class JsonApiGuard:
    """ASGI middleware: 415 for a body method without a JSON content type; JSON 500s.

    Parameters
    ----------
    app : ASGI app
        What it wraps (``FastAPI.add_middleware(JsonApiGuard)`` passes it).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] in _BODY_METHODS:
            media = _media_type(scope.get("headers") or [])
            if media != JSON_MEDIA_TYPE:
                await _send_json(send, 415, error_body("Content-Type", (
                    f"{scope['method']} bodies must be JSON, sent with 'Content-Type: {JSON_MEDIA_TYPE}'; "
                    f"got {media or 'no Content-Type'}.")))
                return
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            logger.error("Unhandled error on %s %s:\n%s", scope["method"], scope.get("path"),
                         redact("".join(traceback.format_exception(exc))))
            if started:  # part of an answer went out already: nothing better to do than cut it
                raise
            # The type only: an exception's text can hold internals (hosts, paths, gRPC debug strings).
            await _send_json(send, 500, error_body(None, f"Internal error ({type(exc).__name__}); the "
                                                   "app's log has the details."))


_ERROR_CONTENT = {"content": {JSON_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Error"}}}}
_ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["field", "message"],
    "properties": {"field": {"type": "string", "nullable": True}, "message": {"type": "string"}}}}}


def document_edge_errors(spec: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI document with the answers of the edge itself on every operation they can reach.

    :class:`JsonApiGuard` answers 415 to any ``POST``, ``PUT`` or ``PATCH`` without a JSON
    content type, before a route runs; an operation with a request body answers 400 to a body
    that cannot be read (not UTF-8, not JSON: ``error.field`` is ``body``). Routes do not
    declare these one by one, so they are added here, where the middleware is. Changes
    ``spec`` in place and returns it.
    """
    spec.setdefault("components", {}).setdefault("schemas", {}).setdefault("Error", _ERROR_SCHEMA)
    for operations in spec.get("paths", {}).values():
        for method, operation in operations.items():
            if method.upper() not in _BODY_METHODS:
                continue
            responses = operation.setdefault("responses", {})
            responses.setdefault("415", {"description": f"The body is not sent as {JSON_MEDIA_TYPE}", **_ERROR_CONTENT})
            if "requestBody" in operation:
                responses.setdefault("400", {"description": "The body cannot be read: not UTF-8, not JSON, or a "
                                                            "number of the wrong type", **_ERROR_CONTENT})
    return spec


async def _send_json(send: Any, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", JSON_MEDIA_TYPE.encode()), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
