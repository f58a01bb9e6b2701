"""``labelloop tokens``: the first admin token comes from the command line, printed once."""

from __future__ import annotations

from experiments.cli import main
from loop.store import LabelStore, Role


def test_issue_list_and_revoke(capsys, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'labels.db'}"
    assert main(["tokens", "issue", "--role", "admin", "--name", "ops", "--store", url]) == 0
    token = capsys.readouterr().out.strip()
    with LabelStore(url) as store:
        assert store.authenticate(token).role is Role.ADMIN
    assert main(["tokens", "list", "--store", url]) == 0
    listed = capsys.readouterr().out
    assert token[:10] in listed and token not in listed
    assert main(["tokens", "revoke", token[:10], "--store", url]) == 0
    with LabelStore(url) as store:
        assert store.authenticate(token) is None


def test_an_unknown_annotator_is_one_line_and_exit_2(capsys, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'labels.db'}"
    assert main(["tokens", "issue", "--role", "annotator", "--name", "ghost", "--store", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "annotator" in err
