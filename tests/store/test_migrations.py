"""Migrations: an empty database reaches the newest revision, a database populated at the
previous revision keeps every row, and the migrated schema matches the live metadata."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from experiments.cli import main as cli
from loop.columns import ANNOTATOR, COST, ITEM, LABEL
from loop.exceptions import StoreError
from loop.store import LabelStore, current_revision, head_revision, upgrade
from loop.store._engine import make_engine
from loop.store._schema import metadata

STAMP = datetime(2024, 5, 1, 8, 0, 0, 123456, tzinfo=timezone.utc)


def test_empty_database_migrates_to_head(store_url):
    assert current_revision(store_url) is None
    assert upgrade(store_url) == head_revision() == "0004"
    assert upgrade(store_url) == "0004"  # already there: a no-op
    engine = make_engine(store_url)
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert {t.name for t in metadata.sorted_tables} <= tables
    assert diffs == []


def test_store_refuses_an_old_schema_without_migrate(store_url):
    with pytest.raises(StoreError, match="labelloop db upgrade"):
        LabelStore(store_url, migrate=False)
    LabelStore(store_url).close()  # migrate=True (the default) brings it up on first use
    assert current_revision(store_url) == head_revision()


def _populate_revision_1(url: str) -> dict[str, int]:
    """Rows in every table, written with plain SQL against the 0001 schema."""
    engine = make_engine(url)
    stamp = STAMP.replace(tzinfo=None).isoformat(sep=" ") if engine.dialect.name == "sqlite" else STAMP
    rows = {
        "streams": [dict(id=1, name="s", owner=None, escalation_contact=None, classes='["x", "y"]', created_at=stamp)],
        "annotators": [dict(id=k, name=f"p{k}", tier=1, active=True, created_at=stamp) for k in (1, 2)],
        "stream_annotators": [dict(stream_id=1, annotator_id=k) for k in (1, 2)],
        "guideline_versions": [dict(id=1, stream_id=1, version=1, text="t", examples=None, parent_id=None, author="me",
                                    created_at=stamp, published_at=stamp, idempotency_key="g1")],
        "items": [dict(id=k, stream_id=1, external_id=f"e{k}", payload=None, payload_ref=None, source=None,
                       created_at=stamp) for k in (1, 2, 3)],
        "model_versions": [dict(id=1, name="m", uri=None, created_at=stamp)],
        "predictions": [dict(id=1, item_id=1, model_version_id=1, probs="[0.4, 0.6]", signals=None, route="auto",
                             reason=None, created_at=stamp)],
        "tasks": [dict(id=1, stream_id=1, item_id=1, tier=1, annotator_id=1, guideline_version_id=1, status="done",
                       created_at=stamp, due_at=None, idempotency_key="t1")],
        "annotations": [dict(id=k, stream_id=1, task_id=None, item_id=i, annotator_id=a, label=y, rationale=None,
                             evidence=None, seconds=30.0, suggestion=None, suggestion_confidence=None,
                             guideline_version_id=1, created_at=stamp, idempotency_key=f"a{k}", content_hash=k)
                        for k, (i, a, y) in enumerate([(1, 1, 0), (1, 2, 1), (2, 1, 1)], start=1)],
        "resolutions": [dict(id=1, stream_id=1, item_id=1, label=1, method="adjudicated", confidence=None,
                             resolved_at=stamp, supersedes_id=None, actor="me", reason=None, idempotency_key="r1",
                             content_hash=1)],
        "events": [dict(id=k, at=stamp, actor="me", action="x", entity="annotation", entity_id=k, stream_id=1,
                        item_id=1, before=None, after=None, reason=None) for k in (1, 2, 3)],
    }
    with engine.begin() as conn:
        for table, values in rows.items():
            cols = list(values[0])
            conn.execute(sa.text(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"),
                         values)
        if engine.dialect.name == "postgresql":  # explicit ids: move the sequences past them
            for table in ("streams", "annotators", "items", "annotations", "resolutions", "events", "tasks"):
                conn.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), 10)"))
    engine.dispose()
    return {table: len(values) for table, values in rows.items()}


def test_upgrading_from_revision_1_keeps_every_row(store_url):
    assert upgrade(store_url, "0001") == "0001"
    counts = _populate_revision_1(store_url)
    assert upgrade(store_url) == "0004"
    engine = make_engine(store_url)
    with engine.connect() as conn:
        for table, n in counts.items():
            assert conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() == n, table
        assert conn.execute(sa.text("SELECT hourly_rate FROM annotators")).scalars().all() == [0.0, 0.0]
    engine.dispose()
    with LabelStore(store_url) as store:  # the old rows read through today's code
        frame = store.annotations_frame("s")
        assert frame[[ITEM, ANNOTATOR, LABEL]].values.tolist() == [["e1", "p1", 0], ["e1", "p2", 1], ["e2", "p1", 1]]
        assert (frame["created_at"] == STAMP).all() and (frame[COST] == 0).all()
        assert store.resolved_labels("s")[LABEL].tolist() == [1]
        store.add_annotations("s", [{ITEM: "e3", ANNOTATOR: "p2", LABEL: "y"}])
        assert len(store.annotations_frame("s")) == 4


def test_cli_upgrades_and_reports(tmp_path, capsys, monkeypatch):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert cli(["db", "current", "--url", url]) == 0
    assert "empty" in capsys.readouterr().out
    assert cli(["db", "upgrade", "--url", url, "--revision", "0001"]) == 0
    assert cli(["db", "current", "--url", url]) == 0
    assert "behind 0004" in capsys.readouterr().out
    monkeypatch.setenv("LABELLOOP_STORE_URL", url)
    assert cli(["db", "upgrade"]) == 0
    assert "revision 0004" in capsys.readouterr().out
    assert current_revision(url) == "0004"
