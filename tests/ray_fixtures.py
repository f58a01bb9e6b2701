"""Session-scoped Ray and Serve for the tests that need them (the machine has 2 cores).

One Ray per pytest session: Ray takes ~6 s to start and ~2.5 GB, so every test that deploys
the Serve app shares this one. Registered from ``tests/conftest.py`` with ``pytest_plugins``.

Fixtures
--------
ray_serve : ServeSession
    Ray (2 CPUs, a small object store, its temp dir under the session's tmp path) and
    Serve's HTTP proxy on a free local port. Deploy with
    ``serve.local.start_local(app_args)``: it reuses this Ray and this port.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Ray's unix sockets live under its temp dir and their paths must stay under 108 characters;
# Ray adds about 62 ("/session_<date>_<pid>/sockets/plasma_store").
_MAX_TEMP_DIR = 40
_OBJECT_STORE_BYTES = 256 * 1024 ** 2


@dataclass(frozen=True)
class ServeSession:
    """Where the session's Serve listens, and Ray's temp dir."""

    host: str
    port: int
    temp_dir: Path

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@pytest.fixture(scope="session")
def ray_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeSession]:
    """Ray (2 CPUs) and Serve on a free port for the whole session; skips when Ray is absent."""
    ray = pytest.importorskip("ray")
    from ray import serve

    temp_dir = tmp_path_factory.mktemp("ray")
    if len(str(temp_dir)) > _MAX_TEMP_DIR:
        temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    if ray.is_initialized():
        pytest.fail("Ray is already running: tests must start it only through the ray_serve fixture")
    from serve.local import init_ray, quiet_port

    init_ray(num_cpus=2, temp_dir=temp_dir, object_store_memory=_OBJECT_STORE_BYTES, log_to_driver=False)
    session = ServeSession(host="127.0.0.1", port=quiet_port(), temp_dir=temp_dir)
    try:
        serve.start(http_options={"host": session.host, "port": session.port})
        yield session
    finally:
        from serve.local import shutdown_local

        shutdown_local()  # Serve, Ray, and the HAProxy folder init_ray made
