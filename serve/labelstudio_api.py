"""Label Studio's REST API, the few calls labelloop makes: a client over a swappable transport.

:class:`HttpTransport` speaks HTTP with ``requests`` and authenticates with a personal access
token (a JWT refresh token, traded for short-lived access tokens at ``/api/token/refresh/``) or
a legacy token (``Authorization: Token ...``; Label Studio 1.23 accepts those only where
``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true``). Tests may pass any object with its ``request``
method to :class:`LabelStudioClient`. Used by ``labelloop labelstudio sync`` and by the ML
backend (:mod:`serve.labelstudio`) to look users up.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from loop.exceptions import LoopError

__all__ = ["HttpTransport", "LabelStudioClient", "LabelStudioError", "Transport"]

_TIMEOUT = 60.0


class LabelStudioError(LoopError):
    """Label Studio answered with an error, or could not be reached."""


class Transport(Protocol):
    """One HTTP request to Label Studio's API; the JSON answer (None for an empty body)."""

    def request(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None) -> Any: ...


class HttpTransport:
    """Label Studio's REST API over ``requests``.

    Parameters
    ----------
    url : str
        The server, e.g. ``http://127.0.0.1:8080``.
    token : str
        A personal access token (a JWT: traded for an access token at
        ``/api/token/refresh/``, again when it expires) or a legacy token
        (``Authorization: Token ...``).
    """

    def __init__(self, url: str, token: str, *, timeout: float = _TIMEOUT) -> None:
        import requests

        self.url = url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._session = requests.Session()
        self._jwt = token.count(".") == 2
        self._access: str | None = None
        self._access_at = 0.0

    def __repr__(self) -> str:  # never the token
        return f"HttpTransport({self.url!r})"

    def _auth(self, *, fresh: bool = False) -> dict[str, str]:
        if not self._jwt:
            return {"Authorization": f"Token {self._token}"}
        # Access tokens live about five minutes; trade again well before.
        if fresh or self._access is None or time.monotonic() - self._access_at > 120:
            answer = self._session.post(f"{self.url}/api/token/refresh/", json={"refresh": self._token},
                                        timeout=self._timeout)
            if answer.status_code != 200:
                raise LabelStudioError(f"Label Studio at {self.url} refused the personal access token "
                                       f"(HTTP {answer.status_code} from /api/token/refresh/).")
            self._access, self._access_at = answer.json()["access"], time.monotonic()
        return {"Authorization": f"Bearer {self._access}"}

    def request(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        import requests

        try:
            answer = self._session.request(method, f"{self.url}{path}", json=json, params=params,
                                           headers=self._auth(), timeout=self._timeout)
            if answer.status_code == 401 and self._jwt:
                answer = self._session.request(method, f"{self.url}{path}", json=json, params=params,
                                               headers=self._auth(fresh=True), timeout=self._timeout)
        except requests.RequestException as exc:
            raise LabelStudioError(f"Cannot reach Label Studio at {self.url} ({type(exc).__name__}).") from None
        if answer.status_code >= 400:
            raise LabelStudioError(f"Label Studio answered {method} {path} with HTTP {answer.status_code}: "
                                   f"{answer.text[:300]}")
        return answer.json() if answer.content else None


class LabelStudioClient:
    """The few calls of Label Studio's API that labelloop makes, over any :class:`Transport`."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def users(self) -> dict[int, str]:
        """User id -> email (``GET /api/users/``)."""
        return {int(u["id"]): u["email"] for u in self.transport.request("GET", "/api/users/") if u.get("email")}

    def create_project(self, title: str, label_config: str, **settings: Any) -> int:
        body = {"title": title, "label_config": label_config, **settings}
        return int(self.transport.request("POST", "/api/projects/", json=body)["id"])

    def update_project(self, project: int, **settings: Any) -> None:
        self.transport.request("PATCH", f"/api/projects/{project}/", json=settings)

    def import_tasks(self, project: int, tasks: list[dict]) -> list[int]:
        """Create tasks (with their predictions); their ids, in order."""
        if not tasks:
            return []
        answer = self.transport.request("POST", f"/api/projects/{project}/import", json=tasks,
                                        params={"return_task_ids": "true"})
        ids = answer.get("task_ids") if isinstance(answer, dict) else None
        if ids is None or len(ids) != len(tasks):
            raise LabelStudioError(f"Label Studio's import into project {project} returned no task ids for "
                                   f"{len(tasks)} tasks; labelloop needs Label Studio >= 1.10.")
        return [int(i) for i in ids]

    def export(self, project: int) -> list[dict]:
        """Every task with its annotations (``exportType=JSON``)."""
        return self.transport.request("GET", f"/api/projects/{project}/export",
                                      params={"exportType": "JSON", "download_all_tasks": "true"})

    def next_task(self, project: int) -> dict | None:
        """The next task Label Studio's queue gives the calling user (None when none is left)."""
        try:
            return self.transport.request("GET", f"/api/projects/{project}/next/")
        except LabelStudioError as exc:
            if "HTTP 404" in str(exc):
                return None
            raise

    def annotate(self, task: int, result: list[dict], *, lead_time: float | None = None) -> dict:
        body: dict[str, Any] = {"result": result}
        if lead_time is not None:
            body["lead_time"] = lead_time
        return self.transport.request("POST", f"/api/tasks/{task}/annotations/", json=body)

    def add_webhook(self, project: int, url: str, *, headers: Mapping[str, str], actions: Sequence[str]) -> int:
        body = {"project": project, "url": url, "headers": dict(headers), "send_payload": True,
                "send_for_all_actions": False, "actions": list(actions), "is_active": True}
        return int(self.transport.request("POST", "/api/webhooks/", json=body)["id"])

    def add_ml_backend(self, project: int, url: str, *, title: str = "labelloop",
                       basic_auth: tuple[str, str] | None = None) -> int:
        """Connect a project to an ML backend; ``basic_auth`` (user, password) is what Label
        Studio then sends it (for labelloop's: any user, a client token as the password)."""
        body: dict[str, Any] = {"project": project, "url": url, "title": title, "is_interactive": False}
        if basic_auth is not None:
            body |= {"auth_method": "BASIC_AUTH", "basic_auth_user": basic_auth[0], "basic_auth_pass": basic_auth[1]}
        return int(self.transport.request("POST", "/api/ml/", json=body)["id"])
