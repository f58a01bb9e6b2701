"""serve.http: the guards at the HTTP edge, driven as ASGI without a server (no Ray here).

The same guards over real HTTP, in Serve's high-throughput mode: tests/serve/test_hardening.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from serve.http import BodyTooLarge, JsonApiGuard, read_body
from serve.payload import BadRequest


def _app(limit: int = 100) -> FastAPI:
    app = FastAPI()
    app.add_middleware(JsonApiGuard)

    @app.exception_handler(BadRequest)
    async def _bad(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.post("/echo")
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"n": len(await read_body(request, limit))})

    @app.get("/boom")
    async def boom() -> JSONResponse:
        raise RuntimeError("cannot reach http://user:s3cret@mlflow:5000 (refused)")

    return app


def _call(app: Any, method: str, path: str, *, headers: dict[str, str] | None = None,
          chunks: list[bytes] = ()) -> tuple[int, dict[str, Any], int]:
    """Status, JSON body, and how many body chunks the app asked for."""
    pending = list(chunks) or [b""]
    asked = 0

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not pending:
            return {"type": "http.disconnect"}
        asked += 1
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), asked


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jsonp"])
def test_a_post_that_is_not_json_is_415(content_type):
    headers = {} if content_type is None else {"Content-Type": content_type}
    status, body, asked = _call(_app(), "POST", "/echo", headers=headers, chunks=[b"{}"])
    assert status == 415 and body["error"]["field"] == "Content-Type"
    assert asked == 0  # refused before the body is read


def test_json_with_a_charset_is_json():
    status, body, _ = _call(_app(), "POST", "/echo", headers={"Content-Type": "application/json; charset=utf-8"},
                            chunks=[b"{}"])
    assert (status, body) == (200, {"n": 2})


def test_a_declared_length_over_the_limit_is_413_before_reading():
    status, body, asked = _call(_app(100), "POST", "/echo", headers={**JSON, "Content-Length": "101"},
                                chunks=[b"x" * 101])
    assert status == 413 and body["error"]["field"] == "body" and "100 bytes" in body["error"]["message"]
    assert asked == 0


def test_a_streamed_body_is_counted_and_refused_once_it_passes_the_limit():
    chunks = [b"x" * 40] * 10  # chunked: no Content-Length
    status, body, asked = _call(_app(100), "POST", "/echo", headers=JSON, chunks=chunks)
    assert status == 413 and body["error"]["field"] == "body"
    assert asked == 3  # stopped at 120 bytes, not 400
    assert _call(_app(100), "POST", "/echo", headers=JSON, chunks=[b"x" * 50, b"x" * 50])[:2] == (200, {"n": 100})


def test_an_unhandled_error_is_a_json_500_without_secrets():
    status, body, _ = _call(_app(), "GET", "/boom")
    assert status == 500 and body["error"]["field"] is None
    assert "RuntimeError" in body["error"]["message"] and "s3cret" not in json.dumps(body)


def test_body_too_large_survives_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(BodyTooLarge(10, "Content-Length 11")))
    assert (error.status, error.field, error.limit) == (413, "body", 10)
