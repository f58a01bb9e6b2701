"""serve.local: how the local Ray is started (without starting one: the session's Ray is shared)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import serve.local as local

_NAMES = (*local.THROUGHPUT_ENV, "RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT",
          "RAY_SERVE_HAPROXY_BINARY_PATH", *local._HAPROXY_FILES)


@pytest.fixture
def fake_ray_init(monkeypatch):
    """Record ray.init's arguments instead of starting Ray; start from an environment without our variables."""
    import ray

    calls = []
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    for name in _NAMES:
        # setenv first so that monkeypatch restores the variable's state before the test,
        # whatever init_ray writes into os.environ.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    yield calls
    local._release_haproxy()  # the folder init_ray made


def test_init_ray_turns_on_serves_high_throughput_mode(fake_ray_init, monkeypatch):
    import os

    local.init_ray(num_cpus=2)
    for name, value in local.THROUGHPUT_ENV.items():
        assert os.environ[name] == value
    # HAProxy's stats and metrics get free ports, not the fixed defaults two Rays would share.
    ports = {int(os.environ["RAY_SERVE_HAPROXY_STATS_PORT"]), int(os.environ["RAY_SERVE_HAPROXY_METRICS_PORT"])}
    assert ports.isdisjoint({8404, 9101}) and len(ports) == 2
    (kwargs,) = fake_ray_init
    assert kwargs["num_cpus"] == 2
    assert kwargs["_system_config"]["max_direct_call_object_size"] == local.INLINE_OBJECT_BYTES


def test_init_ray_leaves_the_users_choice_alone(fake_ray_init, monkeypatch):
    import os

    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "0")
    local.init_ray(num_cpus=1)
    assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
    # Without HAProxy there are no HAProxy ports to choose.
    assert "RAY_SERVE_HAPROXY_STATS_PORT" not in os.environ


def test_quiet_ports_stay_out_of_the_ranges_other_processes_are_handed():
    import socket

    ports = set()
    for _ in range(20):
        port = local.quiet_port(exclude=ports)
        # Below Serve's direct-ingress replica ports and the kernel's ephemeral range, above
        # Ray's worker ports, and bindable now.
        assert 20000 <= port < 30000 and port not in ports
        with socket.socket() as s:
            s.bind(("0.0.0.0", port))
        ports.add(port)


def test_a_quiet_port_that_is_taken_is_not_chosen(monkeypatch):
    import socket

    taken, free = [p for p in range(20000, 32768) if _bindable(p)][:2]
    with socket.socket() as held:
        held.bind(("0.0.0.0", taken))
        held.listen()
        # Two candidates, one of them held by this test: the other one comes back every time.
        monkeypatch.setattr(local, "_QUIET_PORTS", [taken, free])
        assert {local.quiet_port() for _ in range(20)} == {free}


def _bindable(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def test_haproxy_is_confined_to_this_user_and_this_machine(fake_ray_init, tmp_path):
    """The wrapper Ray runs as HAProxy rewrites the config Ray rendered: stats and metrics on
    127.0.0.1, the admin socket mode 600, in a directory only this user can enter."""
    import os
    import stat
    import subprocess

    local.init_ray(num_cpus=1)
    folder = Path(os.environ["RAY_SERVE_HAPROXY_SOCKET_PATH"]).parent
    try:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        for name in local._HAPROXY_FILES:
            assert os.environ[name].startswith(str(folder))
        stats, metrics = os.environ["RAY_SERVE_HAPROXY_STATS_PORT"], os.environ["RAY_SERVE_HAPROXY_METRICS_PORT"]
        # What Ray Serve 2.56's template renders for these lines (frontend on 0.0.0.0 stays as given).
        config = tmp_path / "haproxy.cfg"
        config.write_text(f"global\n    stats socket {folder}/admin.sock mode 666 level admin expose-fd listeners\n"
                          f"frontend prometheus\n    bind :{metrics}\nfrontend http_frontend\n    bind *:8000\n"
                          f"listen stats\n  bind *:{stats}\n  stats enable\n")
        page = tmp_path / "500.http"  # Ray writes it beside the config, as plain text
        page.write_bytes(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: 21\r\n\r\nInternal Server Error")
        run = subprocess.run([os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"], "-c", "-f", str(config)],
                             capture_output=True, text=True)
        head, _, body = page.read_bytes().partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 500 ") and b"Content-Type: application/json" in head
        assert f"Content-Length: {len(body)}".encode() in head
        assert json.loads(body)["error"]["field"] is None
        text = config.read_text()
        assert f"bind 127.0.0.1:{metrics}\n" in text and f"bind 127.0.0.1:{stats}\n" in text
        assert "bind *:8000" in text and "mode 600 level admin" in text and "mode 666" not in text
        assert "Configuration file is valid" in run.stdout, run.stderr  # the real binary checked it (-c)
    finally:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def test_haproxy_files_the_environment_chose_are_kept(fake_ray_init, monkeypatch):
    import os

    monkeypatch.setenv("RAY_SERVE_HAPROXY_SOCKET_PATH", "/somewhere/admin.sock")
    local.init_ray(num_cpus=1)
    assert os.environ["RAY_SERVE_HAPROXY_SOCKET_PATH"] == "/somewhere/admin.sock"
    assert "RAY_SERVE_HAPROXY_BINARY_PATH" not in os.environ


def test_shutting_down_removes_the_haproxy_folder(fake_ray_init):
    import os

    local.init_ray(num_cpus=1)
    folder = Path(os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"]).parent
    assert folder.is_dir()
    local.shutdown_local()  # Ray is not running here: only the folder and its variables go
    assert not folder.exists() and "RAY_SERVE_HAPROXY_SOCKET_PATH" not in os.environ
