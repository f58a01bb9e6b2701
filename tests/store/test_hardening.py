"""Inputs the store cannot hold: each is refused with a SchemaError naming the field, the same
on SQLite and PostgreSQL, and nothing is stored (no row, no event)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pandas as pd
import pytest

from loop.columns import ANNOTATOR, ITEM, LABEL, REASON, SECONDS
from loop.exceptions import NotFoundError, SchemaError
from loop.store import (CONFIDENCE, EVIDENCE, GUIDELINE_VERSION, IDEMPOTENCY_KEY, PAYLOAD, PAYLOAD_REF, RATIONALE,
                        SOURCE, SUGGESTION, SUPERSEDES, TASK_ID, LabelStore)

from .conftest import STREAM

SURROGATE = "\ud800"
NUL = "\x00"
HUGE = 10**30


def _annotation(**extra) -> list[dict]:
    return [{ITEM: "i0", ANNOTATOR: "a", LABEL: "pos", **extra}]


def _task(**extra) -> list[dict]:
    return [{ITEM: "i0", **extra}]


def _resolution(**extra) -> list[dict]:
    return [{ITEM: "i0", LABEL: "pos", **extra}]


def _prediction(**extra) -> list[dict]:
    return [{ITEM: "i0", "probs": [0.2, 0.3, 0.5], **extra}]


# (id, field named in the error, the call)
CASES: list[tuple[str, str, Callable[[LabelStore], object]]] = [
    # Labels that are no labels.
    ("label-dict", LABEL, lambda s: s.add_annotations(STREAM, _annotation(**{LABEL: {"pos": 1}}))),
    ("label-list", LABEL, lambda s: s.add_annotations(STREAM, _annotation(**{LABEL: ["pos"]}))),
    ("suggestion-dict", SUGGESTION, lambda s: s.add_annotations(STREAM, _annotation(**{SUGGESTION: {"a": 1}}))),
    ("resolve-label-dict", LABEL, lambda s: s.resolve(STREAM, "i0", {"pos": 1}, method="consensus")),
    ("resolutions-label-list", LABEL,
     lambda s: s.add_resolutions(STREAM, _resolution(**{LABEL: ["pos"]}), method="consensus")),
    # Integers that are not integers, or do not fit the column.
    ("annotation-guideline-text", GUIDELINE_VERSION,
     lambda s: s.add_annotations(STREAM, _annotation(**{GUIDELINE_VERSION: "v1"}))),
    ("annotation-guideline-huge", GUIDELINE_VERSION,
     lambda s: s.add_annotations(STREAM, _annotation(**{GUIDELINE_VERSION: HUGE}))),
    ("annotation-task-text", TASK_ID, lambda s: s.add_annotations(STREAM, _annotation(**{TASK_ID: "abc"}))),
    ("annotation-task-huge", TASK_ID, lambda s: s.add_annotations(STREAM, _annotation(**{TASK_ID: HUGE}))),
    ("annotation-task-bool", TASK_ID, lambda s: s.add_annotations(STREAM, _annotation(**{TASK_ID: True}))),
    ("annotation-seconds-bool", SECONDS, lambda s: s.add_annotations(STREAM, _annotation(**{SECONDS: True}))),
    ("annotation-seconds-huge", SECONDS, lambda s: s.add_annotations(STREAM, _annotation(**{SECONDS: 10**400}))),
    ("task-guideline-text", GUIDELINE_VERSION, lambda s: s.add_tasks(STREAM, _task(**{GUIDELINE_VERSION: "v1"}))),
    ("task-tier-huge", "tier", lambda s: s.add_tasks(STREAM, _task(tier=HUGE))),
    ("task-tier-bool", "tier", lambda s: s.add_tasks(STREAM, _task(tier=True))),
    ("task-round-huge", "round", lambda s: s.add_tasks(STREAM, _task(round=2**31))),
    ("set-status-task-text", "task_id", lambda s: s.set_task_status(task_id="abc", status="done")),
    ("set-status-task-huge", "task_id", lambda s: s.set_task_status(HUGE, "done")),
    ("set-status-dict", "status", lambda s: s.set_task_status(1, {"s": "done"})),
    ("set-statuses-huge", "task_ids", lambda s: s.set_task_statuses([HUGE], "done")),
    ("task-huge", "task_id", lambda s: s.task(HUGE)),
    ("tasks-frame-status", "status", lambda s: s.tasks_frame(STREAM, statuses=["finished"])),
    ("guideline-version-huge", "version", lambda s: s.guideline(STREAM, HUGE)),
    ("publish-version-text", "version", lambda s: s.publish_guideline(STREAM, "2")),
    ("parent-version-huge", "parent_version",
     lambda s: s.add_guideline(STREAM, "text", author="lead", parent_version=HUGE)),
    ("annotator-tier-huge", "tier", lambda s: s.add_annotator("e", tier=HUGE)),
    ("annotator-rate-huge", "hourly_rate", lambda s: s.add_annotator("e", hourly_rate=10**400)),
    ("annotator-active-text", "active", lambda s: s.add_annotator("e", active="no")),
    ("set-active-text", "active", lambda s: s.set_annotator_active("a", "no")),
    ("annotations-after-huge", "after", lambda s: s.annotations_frame(STREAM, after=HUGE)),
    ("resolutions-after-huge", "after", lambda s: s.resolutions_frame(STREAM, after=HUGE)),
    ("resolutions-as-of-huge", "as_of", lambda s: s.resolutions_frame(STREAM, as_of=HUGE)),
    ("supersedes-huge", SUPERSEDES,
     lambda s: s.add_resolutions(STREAM, _resolution(**{SUPERSEDES: HUGE}), method="expert")),
    ("supersedes-bool", SUPERSEDES,
     lambda s: s.add_resolutions(STREAM, _resolution(**{SUPERSEDES: True}), method="expert")),
    ("confidence-text", CONFIDENCE,
     lambda s: s.add_resolutions(STREAM, _resolution(**{CONFIDENCE: "high"}), method="consensus")),
    # Text that one engine or both cannot hold.
    ("rationale-surrogate", RATIONALE, lambda s: s.add_annotations(STREAM, _annotation(**{RATIONALE: SURROGATE}))),
    ("rationale-nul", RATIONALE, lambda s: s.add_annotations(STREAM, _annotation(**{RATIONALE: "a" + NUL}))),
    ("rationale-dict", RATIONALE, lambda s: s.add_annotations(STREAM, _annotation(**{RATIONALE: {"why": 1}}))),
    ("annotation-item-surrogate", ITEM, lambda s: s.add_annotations(STREAM, _annotation(**{ITEM: SURROGATE}))),
    ("annotation-item-nul", ITEM, lambda s: s.add_annotations(STREAM, _annotation(**{ITEM: "i0" + NUL}))),
    ("annotation-annotator-nul", ANNOTATOR, lambda s: s.add_annotations(STREAM, _annotation(**{ANNOTATOR: NUL}))),
    ("annotation-key-nul", IDEMPOTENCY_KEY,
     lambda s: s.add_annotations(STREAM, _annotation(**{IDEMPOTENCY_KEY: "k" + NUL}))),
    ("annotation-key-long", IDEMPOTENCY_KEY,
     lambda s: s.add_annotations(STREAM, _annotation(**{IDEMPOTENCY_KEY: "k" * 201}))),
    ("annotation-source-nul", SOURCE, lambda s: s.add_annotations(STREAM, _annotation(**{SOURCE: "api" + NUL}))),
    ("evidence-nul", EVIDENCE, lambda s: s.add_annotations(STREAM, _annotation(**{EVIDENCE: {"quote": NUL}}))),
    ("evidence-surrogate-key", EVIDENCE,
     lambda s: s.add_annotations(STREAM, _annotation(**{EVIDENCE: {SURROGATE: [1]}}))),
    ("annotations-actor-nul", "actor", lambda s: s.add_annotations(STREAM, _annotation(), actor="bot" + NUL)),
    ("annotations-actor-long", "actor", lambda s: s.add_annotations(STREAM, _annotation(), actor="x" * 201)),
    ("annotations-reason-surrogate", "reason",
     lambda s: s.add_annotations(STREAM, _annotation(), reason=SURROGATE)),
    ("annotator-name-surrogate", "name", lambda s: s.add_annotator(SURROGATE)),
    ("annotator-name-nul", "name", lambda s: s.add_annotator("e" + NUL)),
    ("annotator-lookup-nul", ANNOTATOR, lambda s: s.annotator("a" + NUL)),
    ("assign-annotator-nul", ANNOTATOR, lambda s: s.assign_annotator("a" + NUL, STREAM)),
    ("stream-name-nul", "name", lambda s: s.create_stream("s" + NUL, ["x", "y"])),
    ("stream-owner-long", "owner", lambda s: s.create_stream("s2", ["x", "y"], owner="o" * 201)),
    ("stream-class-nul", "classes", lambda s: s.create_stream("s2", ["x" + NUL, "y"])),
    ("stream-class-dict", "classes", lambda s: s.create_stream("s2", [{"x": 1}, "y"])),
    ("stream-lookup-surrogate", "stream", lambda s: s.stream(SURROGATE)),
    ("stream-lookup-nul", "stream", lambda s: s.annotations_frame("s" + NUL)),
    ("guideline-text-surrogate", "text", lambda s: s.add_guideline(STREAM, SURROGATE, author="lead")),
    ("guideline-text-nul", "text", lambda s: s.add_guideline(STREAM, "a" + NUL, author="lead")),
    ("guideline-author-nul", "author", lambda s: s.add_guideline(STREAM, "text", author="lead" + NUL)),
    ("guideline-key-long", IDEMPOTENCY_KEY,
     lambda s: s.add_guideline(STREAM, "text", author="lead", idempotency_key="k" * 201)),
    ("guideline-examples-nul", "examples",
     lambda s: s.add_guideline(STREAM, "text", author="lead", examples=[{"text": NUL}])),
    ("revise-text-nul", "text", lambda s: s.revise_guideline(STREAM, 2, text="a" + NUL)),
    ("items-id-empty", ITEM, lambda s: s.add_items(STREAM, [{ITEM: ""}])),
    ("items-id-long", ITEM, lambda s: s.add_items(STREAM, [{ITEM: "x" * 201}])),
    ("items-id-dict", ITEM, lambda s: s.add_items(STREAM, [{ITEM: {"id": 1}}])),
    ("items-id-surrogate", ITEM, lambda s: s.add_items(STREAM, [{ITEM: "x" + SURROGATE}])),
    ("items-id-nul", ITEM, lambda s: s.add_items(STREAM, [{ITEM: "x" + NUL}])),
    ("items-payload-nul", PAYLOAD, lambda s: s.add_items(STREAM, [{ITEM: "x", PAYLOAD: {"text": "a" + NUL}}])),
    ("items-payload-surrogate", PAYLOAD, lambda s: s.add_items(STREAM, [{ITEM: "x", PAYLOAD: {"t": SURROGATE}}])),
    ("items-payload-ref-nul", PAYLOAD_REF, lambda s: s.add_items(STREAM, [{ITEM: "x", PAYLOAD_REF: "s3://" + NUL}])),
    ("items-source-long", SOURCE, lambda s: s.add_items(STREAM, [{ITEM: "x", SOURCE: "s" * 201}])),
    ("task-key-long", IDEMPOTENCY_KEY, lambda s: s.add_tasks(STREAM, _task(**{IDEMPOTENCY_KEY: "k" * 201}))),
    ("task-annotator-nul", ANNOTATOR, lambda s: s.add_tasks(STREAM, _task(**{ANNOTATOR: "a" + NUL}))),
    ("set-status-reason-nul", "reason", lambda s: s.set_task_status(1, "done", reason=NUL)),
    ("set-status-annotator-surrogate", ANNOTATOR, lambda s: s.set_task_status(1, "assigned", annotator=SURROGATE)),
    ("resolution-item-nul", ITEM, lambda s: s.resolve(STREAM, "i0" + NUL, "pos", method="consensus")),
    ("resolution-key-long", IDEMPOTENCY_KEY,
     lambda s: s.resolve(STREAM, "i0", "pos", method="consensus", idempotency_key="k" * 201)),
    ("resolution-reason-column-nul", REASON,
     lambda s: s.add_resolutions(STREAM, _resolution(**{REASON: NUL}), method="consensus")),
    ("resolution-actor-long", "actor", lambda s: s.resolve(STREAM, "i0", "pos", method="consensus", actor="x" * 201)),
    ("resolution-method-dict", "method", lambda s: s.add_resolutions(STREAM, _resolution(method={"m": 1}))),
    ("model-name-nul", "name", lambda s: s.add_model_version("m" + NUL)),
    ("model-uri-surrogate", "uri", lambda s: s.add_model_version("m", uri=SURROGATE)),
    ("predictions-model-nul", "model_version", lambda s: s.add_predictions(STREAM, "m" + NUL, _prediction())),
    ("predictions-route-long", "route", lambda s: s.add_predictions(STREAM, "m1", _prediction(route="r" * 51))),
    ("predictions-reason-nul", "reason", lambda s: s.add_predictions(STREAM, "m1", _prediction(reason=NUL))),
    ("predictions-signals-nul", "signals",
     lambda s: s.add_predictions(STREAM, "m1", _prediction(signals={"note": NUL}))),
    ("events-item-nul", ITEM, lambda s: s.events_frame(stream=STREAM, item_id="i0" + NUL)),
    ("label-studio-model-nul", "model_version", lambda s: s.export_label_studio(STREAM, model_version="m" + NUL)),
    # Found by the OpenAPI fuzz (tests/serve/test_openapi_fuzz.py): a 500 on SQLite, a vaguer error on PostgreSQL.
    ("answer-task-huge", "task_id", lambda s: s.answer_task(HUGE, "a", "pos")),
    ("update-annotator-tier-huge", "tier", lambda s: s.update_annotator("a", tier=2**40)),
    ("dispute-item-nul", ITEM, lambda s: s.dispute(STREAM, "i0" + NUL, "a", target="suggestion", reason="x")),
    ("dispute-key-nul", IDEMPOTENCY_KEY,
     lambda s: s.dispute(STREAM, "i0", "a", target="suggestion", reason="x", idempotency_key="k" + NUL)),
    ("answer-key-nul", IDEMPOTENCY_KEY, lambda s: s.answer_task(1, "a", "pos", idempotency_key="k" + NUL)),
    ("task-due-past-9999", "due_at", lambda s: s.add_tasks(STREAM, _task(due_at="9999-12-31T23:59:59-14:00"))),
    ("task-sla-huge", "sla", lambda s: s.add_tasks(STREAM, _task(), sla=timedelta(days=10**6))),
    ("token-expiry-past-9999", "expires_at",
     lambda s: s.issue_token("x", "client", expires_at="9999-12-31T23:59:59-14:00")),
]


def _stored(store: LabelStore) -> tuple[int, ...]:
    """What a refused call must leave unchanged: events (every write records one), rows."""
    return (len(store.events_frame()), len(store.annotations_frame(STREAM)), len(store.resolutions_frame(STREAM)),
            len(store.tasks_frame(STREAM)))


@pytest.mark.parametrize(("field", "call"), [pytest.param(f, c, id=i) for i, f, c in CASES])
def test_unstorable_input_is_refused_naming_the_field(seeded, field, call):
    seeded.add_model_version("m1")
    seeded.add_tasks(STREAM, _task(**{IDEMPOTENCY_KEY: "t-1"}))
    before = _stored(seeded)
    with pytest.raises(SchemaError, match=rf"^The '{field}' argument must be"):
        call(seeded)
    assert _stored(seeded) == before


@pytest.mark.parametrize("which", ["99999999999999999999999", str(2**31), "0", "\u0661", "\u00b2", "ll_" + "\x00" * 7])
def test_a_token_id_no_token_can_have_is_not_found(seeded, which):
    # Digits beyond the ids column (SQLite's OverflowError, PostgreSQL's out of range) and
    # non-ASCII digits (int() of "١" is 1, of "²" a ValueError) name no stored token.
    seeded.issue_token("ops", "admin")
    with pytest.raises((NotFoundError, SchemaError), match="'token' argument must"):
        seeded.revoke_token(which)
    assert seeded.tokens_frame()["active"].all()


def test_an_empty_rationale_is_no_rationale(seeded):
    seeded.add_annotations(STREAM, _annotation(**{RATIONALE: ""}) + [{ITEM: "i1", ANNOTATOR: "a", LABEL: 0,
                                                                       RATIONALE: "sarcasm"}])
    got = seeded.annotations_frame(STREAM, extras=(RATIONALE,))
    assert got.set_index(ITEM)[RATIONALE].to_dict() == {"i0": None, "i1": "sarcasm"}


def test_clean_text_and_integer_ids_still_pass(seeded):
    # Non-ASCII text (accents, emoji: surrogate pairs in JSON escapes) and integer item ids.
    seeded.add_items(STREAM, pd.DataFrame({ITEM: [101, 102], PAYLOAD: [{"text": "très 😀"}, None]}))
    seeded.add_annotations(STREAM, pd.DataFrame({ITEM: [101, 102], ANNOTATOR: ["a", "a"], LABEL: [0, 2],
                                                 RATIONALE: ["très 😀", None], EVIDENCE: [{"q": "😀"}, None]}))
    got = seeded.annotations_frame(STREAM, extras=(RATIONALE, EVIDENCE))
    assert got[ITEM].tolist() == ["101", "102"]
    assert got[RATIONALE].tolist() == ["très 😀", None]
    assert got[EVIDENCE].tolist() == [{"q": "😀"}, None]


def test_a_value_the_database_refuses_is_a_schema_error_without_sql(pg_url):
    # The last line of defence, for a value the checks miss: no psycopg error, no SQL.
    import sqlalchemy as sa

    from loop.store._engine import write_transaction

    with LabelStore(pg_url) as store:
        with pytest.raises(SchemaError, match="cannot hold a value") as info:
            with write_transaction(store._engine) as conn:
                conn.execute(sa.text("INSERT INTO model_versions (name, created_at) VALUES (:n, now())"),
                             {"n": "x" * 300})
        assert "INSERT" not in str(info.value) and info.value.__cause__ is None
        with store._read() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM model_versions")).scalar() == 0


def test_item_data_leaves_out_ids_no_item_can_have(seeded):
    # Label Studio's /predict hands the store whatever ids its tasks hold: PostgreSQL refused a
    # NUL character (DataError) and the driver a lone surrogate (UnicodeEncodeError), both 500s.
    got = seeded.item_data(STREAM, ["i1", "a\x00b", "\udaff", "x" * 300, ""])
    assert list(got) == ["i1"] and got["i1"]["data"]["text"] == "review 1"
