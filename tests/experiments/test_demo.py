"""The demo runs the library end to end and its report is true."""

from __future__ import annotations

import io

import pytest

from rich.console import Console

from experiments.cli import main as cli_main
from experiments.demo import DemoConfig, main
from loop.routing import Route


def test_demo_finds_the_wrong_labels_and_routes_them_to_people() -> None:
    out = io.StringIO()
    result = main(DemoConfig(seed=1), console=Console(file=out, width=120))
    text = out.getvalue()
    assert "labels wrong after Dawid-Skene" in text and "highest-priority decisions" in text
    assert result.routes["items"].sum() == result.n_items
    assert result.routes["wrong_labels"].sum() == result.errors_total > 0
    # Routing concentrates the wrong labels where people look.
    auto = result.routes.loc[Route.AUTO_ACCEPT.value]
    assert auto["wrong_labels"] / auto["items"] < result.label_error_rate / 4
    assert result.issues_true / result.errors_total > 0.7
    assert result.issues_true / result.issues_flagged > 0.7
    assert result.ece_after < result.ece_before
    assert result.decisions["reason"].str.len().min() > 10


def test_cli_rejects_an_unknown_command(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["demolish"])
    assert exc.value.code == 2
    assert "invalid choice: 'demolish'" in capsys.readouterr().err
