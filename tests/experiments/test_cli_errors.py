"""The command reports a user's mistake in one line, never with a traceback."""

from __future__ import annotations

import pytest

from experiments.cli import main
from loop.exceptions import StoreError
from loop.store.migrate import current_revision, upgrade


def test_a_bad_store_url_is_one_line_and_exit_2(capsys) -> None:
    assert main(["db", "upgrade", "--url", "mysql://somewhere/db"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'url'" in err and "Traceback" not in err


@pytest.mark.parametrize("action", ["current", "upgrade"])
def test_an_unreachable_store_is_one_line_and_exit_1(capsys, tmp_path, action) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "labels.db"
    assert main(["db", action, "--url", f"sqlite:///{missing}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("labelloop db: error: Cannot connect to the label store at sqlite:///")
    assert err.count("\n") == 1


@pytest.mark.parametrize("call", [current_revision, upgrade])
def test_the_store_names_where_it_could_not_connect(call) -> None:
    with pytest.raises(StoreError, match=r"Cannot connect to the label store at postgresql\+psycopg://nobody@127\.0\.0\.1:1/x"):
        call("postgresql://nobody@127.0.0.1:1/x")


def test_an_unreachable_tracking_server_is_one_line_and_exit_1(capsys, tmp_path) -> None:
    from serve.local import quiet_port

    config = tmp_path / "program.yaml"
    config.write_text(f"tracking: {{uri: 'http://127.0.0.1:{quiet_port()}'}}\nserve: {{url: in_process}}\n"
                      f"store: {{url: 'sqlite:///{tmp_path}/labels.db'}}\n")
    assert main(["run", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("labelloop run: error: tracking.uri: cannot reach the MLflow tracking server at http://")
    assert err.count("\n") == 1
    assert not (tmp_path / "labels.db").exists()  # stopped before any work


def test_any_http_answer_counts_as_a_reachable_tracking_server() -> None:
    import http.server
    import threading

    from experiments.tracking import check_reachable

    class Refusing(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server protocol
            self.send_error(401)  # e.g. a server behind authentication

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check_reachable(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    check_reachable("sqlite:///not/checked/here.db")
