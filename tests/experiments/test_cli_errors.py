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
