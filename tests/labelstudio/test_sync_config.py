"""``labelloop labelstudio sync``'s arguments: checked at the edge, one line each, no token shown."""

from __future__ import annotations

import pytest

from experiments.cli import main
from experiments.labelstudio import SyncConfig, parse_projects
from loop.exceptions import SchemaError

BASE = {"url": "http://127.0.0.1:8080", "token_env": "LS_TOKEN_FOR_TESTS", "stream": "s", "projects": {"label": 1}}


@pytest.mark.parametrize("change, field", [
    ({"url": "ls:8080"}, "url"), ({"projects": {}}, "projects"), ({"projects": {"chat": 1}}, "projects"),
    ({"projects": {"label": 0}}, "projects"), ({"projects": {"label": 1, "double_blind": 1}}, "blind"),
])
def test_bad_configs_are_refused_naming_the_field(change, field):
    with pytest.raises(SchemaError, match=field):
        SyncConfig(**{**BASE, **change})


def test_blind_kinds_may_share_their_own_project():
    cfg = SyncConfig(**{**BASE, "projects": {"label": 1, "expert": 1, "double_blind": 2, "audit": 2}})
    assert cfg.projects["audit"] == 2


def test_the_token_comes_from_the_environment_only(monkeypatch):
    monkeypatch.delenv("LS_TOKEN_FOR_TESTS", raising=False)
    with pytest.raises(SchemaError, match=r"\$LS_TOKEN_FOR_TESTS"):
        SyncConfig(**BASE).token()
    monkeypatch.setenv("LS_TOKEN_FOR_TESTS", "s3cret")
    assert SyncConfig(**BASE).token() == "s3cret"


def test_projects_read_kind_equals_id():
    assert parse_projects(["label=1", "double_blind = 3"]) == {"label": 1, "double_blind": 3}
    with pytest.raises(SchemaError, match="KIND=ID"):
        parse_projects(["label:1"])


def test_the_command_stops_in_one_line_on_a_missing_option(capsys):
    assert main(["labelstudio", "sync", "--url", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "projects" in err[0]


def test_an_unreachable_label_studio_is_one_line_without_the_token(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("LS_TOKEN_FOR_TESTS", "s3cret-token")
    code = main(["labelstudio", "sync", "--url", "http://127.0.0.1:9", "--token-env", "LS_TOKEN_FOR_TESTS",
                 "--project", "label=1", "--stream", "s", "--store", f"sqlite:///{tmp_path / 'x.db'}"])
    out = capsys.readouterr()
    assert code == 1 and "Cannot reach Label Studio" in out.err and "s3cret" not in out.err + out.out


def test_a_config_file_gives_the_options_and_flags_win(tmp_path, monkeypatch):
    import argparse

    from experiments.labelstudio_cli import _options

    path = tmp_path / "ls.yaml"
    path.write_text("labelstudio:\n  url: http://ls:8080\n  token_env: TEAM_LS_TOKEN\n  stream: s\n"
                    "  store: sqlite:///team.db\n  projects: {label: 1, double_blind: 2}\n")
    args = argparse.Namespace(config=str(path), url=None, token_env=None, stream="other", store=None,
                              project=[], pull_only=True)
    opts = _options(args)
    assert opts == {"url": "http://ls:8080", "token_env": "TEAM_LS_TOKEN", "stream": "other",
                    "store_url": "sqlite:///team.db", "projects": {"label": 1, "double_blind": 2}, "push": False}
    SyncConfig(**opts)
