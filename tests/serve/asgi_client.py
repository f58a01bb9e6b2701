"""A small synchronous client that calls an ASGI app in process (Starlette's TestClient needs
httpx, which this environment does not ship): one request, one answer, no network."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit


@dataclass
class Answer:
    status_code: int
    headers: dict[str, str]
    content: bytes = field(repr=False)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class AsgiClient:
    """``request(method, path, headers=, json=)`` against ``app``; ``get``/``post``/... too."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def request(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                json: Any = None, content: bytes | None = None) -> Answer:  # noqa: A002 - requests' name
        """``json`` is sent as JSON; ``content`` (raw bytes, e.g. not UTF-8) as it is."""
        return asyncio.run(self._call(method.upper(), path, headers or {}, json, content))

    def get(self, path: str, **kw: Any) -> Answer:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Answer:
        return self.request("POST", path, **kw)

    def patch(self, path: str, **kw: Any) -> Answer:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Answer:
        return self.request("DELETE", path, **kw)

    async def _call(self, method: str, path: str, headers: dict[str, str], body: Any,
                    content: bytes | None = None) -> Answer:
        url = urlsplit(path)
        data = content if content is not None else b"" if body is None else json.dumps(body).encode()
        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        if method in ("POST", "PUT", "PATCH") and not any(k == b"content-type" for k, _ in raw):
            raw.append((b"content-type", b"application/json"))  # as ServeClient sends: the edge wants JSON
        raw.append((b"content-length", str(len(data)).encode()))
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": unquote(url.path), "raw_path": url.path.encode(), "query_string": url.query.encode(),
                 "root_path": "", "headers": raw, "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
        sent = False
        status, out_headers, chunks = 500, {}, []

        async def receive():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            return {"type": "http.disconnect"}

        async def send(message):
            nonlocal status, out_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                out_headers = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return Answer(status, out_headers, b"".join(chunks))
