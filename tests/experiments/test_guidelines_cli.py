"""``labelloop guidelines``: draft from the confused pairs, review, publish, measure (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from experiments.cli import main
from loop.store import LabelStore
from tests.store.conftest import pg_server, pg_url, store_url  # noqa: F401 - fixtures
from tests.store.test_guidance import PARENT, STREAM, _confused_stream, _timed_answers


def test_draft_show_revise_publish_impact(capsys, tmp_path, store_url) -> None:  # noqa: F811
    with LabelStore(store_url) as store:
        _confused_stream(store)
        store.publish_guideline(STREAM, store.add_guideline(STREAM, PARENT, author="lead").version)
    assert main(["guidelines", "draft", "--stream", STREAM, "--pairs", "2", "--author", "ops",
                 "--store", store_url]) == 0
    out = capsys.readouterr().out
    assert "draft version 2 (from version 1), by ops" in out and "guideline_unclear" in out
    assert "labelloop guidelines publish --stream sentiment --version 2" in out
    assert main(["guidelines", "show", "--stream", STREAM, "--version", "2", "--store", store_url]) == 0
    shown = capsys.readouterr()
    assert "version 2 (draft)" in shown.err and "## neg vs pos" in shown.out and "Be literal." in shown.out
    # Standard output is the text itself: edit it and revise the draft with it.
    edited = tmp_path / "v2.md"
    edited.write_text(shown.out + "\nSarcasm counts as neg.\n", encoding="utf-8")
    assert main(["guidelines", "revise", "--stream", STREAM, "--version", "2", "--file", str(edited),
                 "--reason", "the rule", "--store", store_url]) == 0
    assert "draft version 2 revised" in capsys.readouterr().out
    with LabelStore(store_url) as store:
        assert store.guideline(STREAM, 2).text == edited.read_text(encoding="utf-8")
        events = store.events_frame(stream=STREAM)
        revised = events[events["action"] == "guideline.revised"]
        assert len(revised) == 1 and revised["reason"].iloc[0] == "the rule"
    assert main(["guidelines", "publish", "--stream", STREAM, "--version", "2", "--store", store_url]) == 0
    assert "version 2 published" in capsys.readouterr().out
    # A published version never changes: a refusal (exit 1) naming the version to draft from.
    assert main(["guidelines", "revise", "--stream", STREAM, "--version", "2", "--file", str(edited),
                 "--store", store_url]) == 1
    assert "immutable; draft a new version with parent_version=2." in capsys.readouterr().err
    with LabelStore(store_url) as store:
        assert store.guideline(STREAM).version == 2
        _timed_answers(store, store.guideline(STREAM).published_at)
    assert main(["guidelines", "impact", "--stream", STREAM, "--version", "2", "--pair", "neg,pos",
                 "--boot", "20", "--store", store_url]) == 0
    out = capsys.readouterr().out
    assert "version 2 on neg vs pos: graded against expert and adjudicated resolutions; 21 answers before" in out
    assert "baseline 0.714; gain +0.286" in out and "half-life" in out


@pytest.mark.parametrize("argv, field", [
    (["draft", "--stream", STREAM, "--pairs", "0"], "--pairs"),
    (["publish", "--stream", STREAM], "--version"),
    (["revise", "--stream", STREAM, "--version", "2"], "--file"),
    (["revise", "--stream", STREAM, "--version", "2", "--file", "/nonexistent/v2.md"], "--file"),
    (["impact", "--stream", STREAM, "--version", "1", "--pair", "neg"], "--pair"),
    (["impact", "--stream", STREAM, "--version", "1", "--boot", "-1"], "--boot"),
])
def test_bad_arguments_are_one_line_and_exit_2(capsys, tmp_path, argv, field) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["guidelines", *argv, "--store", f"sqlite:///{tmp_path / 'l.db'}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and field in err


def test_store_refusals_are_one_line_and_exit_2(capsys, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    with LabelStore(url) as store:
        store.create_stream(STREAM, ["neg", "neu", "pos"])
    assert main(["guidelines", "draft", "--stream", STREAM, "--store", url]) == 2
    assert main(["guidelines", "impact", "--stream", STREAM, "--version", "7", "--store", url]) == 2
    assert main(["guidelines", "draft", "--stream", "nope", "--store", url]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and "'stream'" in err[0] and "guideline" in err[1]
