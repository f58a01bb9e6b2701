"""People in the loop, at the store: tokens, handing out tasks, answers, disputes, SLAs, previews.

Every test runs on SQLite and PostgreSQL (fixture ``store``/``seeded``).
"""

from __future__ import annotations

import re
import threading
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from loop.exceptions import ConflictError, ForbiddenError, NotFoundError, SchemaError
from loop.store import LabelStore, Role, TaskStatus, _annotations, _tasks, guideline_section
from loop.store._records import Stream
from loop.store._schema import MAX_RATIONALE_CHARS

from loop.store._schema import guideline_versions as G

from .conftest import STREAM

GUIDELINE = """# Sentiment
Label the overall sentiment of the review.

## neg vs pos
Sarcasm ("great, it broke again") is neg.

## neu
No opinion either way.
"""


@pytest.fixture
def team(seeded: LabelStore) -> LabelStore:
    """``seeded`` plus an expert ``e`` (tier 3), guideline v3 with sections, published, and a
    model's predictions on i0..i9 (i0..i4 lean pos over neg, i5..i9 neu over pos)."""
    seeded.add_annotator("e", tier=3, streams=[STREAM])
    seeded.add_guideline(STREAM, GUIDELINE, author="lead")
    seeded.publish_guideline(STREAM, 3)
    seeded.add_model_version("m1")
    seeded.add_predictions(STREAM, "m1", [
        {"item_id": f"i{k}", "probs": [0.3, 0.1, 0.6] if k < 5 else [0.05, 0.55, 0.4], "route": "review",
         "reason": f"margin low on i{k}", "signals": {"margin": 0.3}} for k in range(10)])
    return seeded


# ----------------------------------------------------------------------------- tokens

def test_tokens_are_shown_once_and_stored_only_hashed(team):
    token = team.issue_token("a", "annotator")
    assert token.startswith("ll_") and len(token) == 46
    principal = team.authenticate(token)
    assert (principal.role, principal.name, principal.annotator) == (Role.ANNOTATOR, "a", "a")
    frame = team.tokens_frame()
    assert "token_hash" not in frame and token not in frame.to_string()
    import hashlib

    import sqlalchemy as sa

    with team._read() as conn:
        stored = conn.execute(sa.text("SELECT token_hash FROM tokens")).scalars().all()
        events = conn.execute(sa.text("SELECT CAST(after AS TEXT) FROM events WHERE entity = 'token'")).scalars().all()
    assert stored == [hashlib.sha256(token.encode()).hexdigest()]
    assert all(token not in e and stored[0] not in e for e in events)


def test_revoked_expired_wrong_and_inactive_tokens_do_not_authenticate(team):
    admin = team.issue_token("ops", "admin")
    old = team.issue_token("old", "client", expires_at=datetime.now(timezone.utc) - timedelta(seconds=1))
    b = team.issue_token("b", "annotator")
    assert team.authenticate(admin).role is Role.ADMIN
    assert team.authenticate(old) is None
    assert team.authenticate(admin[:-1] + ("A" if admin[-1] != "A" else "B")) is None
    assert team.authenticate("") is None and team.authenticate("Bearer x") is None
    team.revoke_token(admin[:10])
    assert team.authenticate(admin) is None
    assert team.revoke_token(admin) == team.tokens_frame()["token_id"].iloc[0]  # again: a no-op
    team.set_annotator_active("b", False)
    assert team.authenticate(b) is None
    assert team.tokens_frame()["active"].tolist() == [False, False, True]


def test_token_arguments_are_checked(team):
    with pytest.raises(SchemaError, match="role"):
        team.issue_token("x", "root")
    with pytest.raises(SchemaError, match="annotator"):
        team.issue_token("nobody", "annotator")
    with pytest.raises(NotFoundError):
        team.revoke_token("ll_doesnotex")


def test_emails_map_annotators(team):
    team.set_annotator_email("a", "A@Example.com")
    assert team.annotator_by_email("a@example.com").name == "a"
    assert team.add_annotator("a", streams=[STREAM], hourly_rate=36.0).email == "a@example.com"
    with pytest.raises(ConflictError, match="email"):
        team.set_annotator_email("b", "a@example.com")
    with pytest.raises(SchemaError, match="email"):
        team.set_annotator_email("b", "not an email")


# ----------------------------------------------------------------------------- next task

def test_next_task_returns_the_callers_unfinished_task_first_then_claims(team):
    ids = team.add_tasks(STREAM, [{"item_id": "i0"}, {"item_id": "i1"}]).ids
    first = team.next_task("a")
    assert first.id == ids[0] and first.annotator == "a" and first.status is TaskStatus.ASSIGNED
    assert first.assigned_at is not None
    assert team.next_task("a").id == ids[0]  # still theirs, not a second one
    assert team.next_task("b").id == ids[1]
    assert team.next_task("c") is None
    assert "task.assigned" in team.events_frame(stream=STREAM)["action"].tolist()


def test_never_an_item_the_caller_labelled_or_holds(team):
    team.add_annotations(STREAM, [{"item_id": "i0", "annotator_id": "a", "label": "pos"}])
    team.add_tasks(STREAM, [{"item_id": "i0"}, {"item_id": "i1", "kind": "double_blind"},
                            {"item_id": "i1", "kind": "double_blind", "idempotency_key": "db2"}])
    got = team.next_task("a")
    assert got.item_id == "i1"
    team.answer_task(got.id, "a", "neg")
    assert team.next_task("a") is None  # i0 labelled, and the second i1 task is the same item


def test_expert_tasks_only_to_tier_2_and_tiers_respected(team):
    team.add_tasks(STREAM, [{"item_id": "i0", "kind": "expert", "tier": 3}, {"item_id": "i1", "kind": "expert"}])
    assert team.next_task("a") is None  # an expert task, even at tier 1, is for experts
    got = team.next_task("e")
    assert got.item_id == "i0" and got.kind == "expert"


def test_only_streams_the_annotator_is_on(team):
    team.add_items("other", [{"item_id": "o1"}])
    team.add_tasks("other", [{"item_id": "o1"}])
    assert team.next_task("a") is None
    assert team.next_task("d").item_id == "o1"
    with pytest.raises(ForbiddenError):
        team.next_task("a", stream="other")


def test_skill_on_the_likely_class_pair_ranks_tasks(team):
    # a is right on neg/pos items and wrong on neu/pos ones: a gets the neg/pos item first,
    # although the neu/pos one is more urgent.
    team.add_annotations(STREAM, [
        {"item_id": "i2", "annotator_id": "a", "label": "pos"}, {"item_id": "i3", "annotator_id": "a", "label": "neg"},
        {"item_id": "i7", "annotator_id": "a", "label": "neg"}, {"item_id": "i8", "annotator_id": "a", "label": "neg"}])
    team.add_resolutions(STREAM, [{"item_id": "i2", "label": "pos"}, {"item_id": "i3", "label": "neg"},
                                  {"item_id": "i7", "label": "neu"}, {"item_id": "i8", "label": "pos"}],
                         method="consensus")
    soon = datetime.now(timezone.utc) + timedelta(hours=1)
    team.add_tasks(STREAM, [{"item_id": "i9", "due_at": soon}, {"item_id": "i4", "due_at": soon + timedelta(hours=1)}])
    assert team.next_task("a").item_id == "i4"
    assert team.next_task("b").item_id == "i9"  # no history: urgency decides


def test_candidate_skills_equal_pair_skill_row_by_row():
    # The vectorised ranking key is the per-candidate formula, to the last bit.
    rng = np.random.default_rng(0)
    for n_hist in (0, 1, 7, 60):
        history = pd.DataFrame({"stream_id": rng.integers(1, 3, n_hist), "label": rng.integers(0, 4, n_hist),
                                "resolved": rng.integers(0, 4, n_hist)})
        stream_ids = rng.integers(1, 4, 40)
        pairs = np.array([rng.choice(4, 2, replace=False) if rng.random() < 0.8 else (-1, -1) for _ in range(40)])
        got = _tasks.candidate_skills(history, stream_ids, pairs)
        want = [_tasks.pair_skill(history, int(s), None if p[0] < 0 else (int(p[0]), int(p[1])))
                for s, p in zip(stream_ids, pairs)]
        assert got.tolist() == want
    empty = pd.DataFrame({"stream_id": [], "label": [], "resolved": []})
    assert _tasks.candidate_skills(empty, np.array([1]), np.array([[-1, -1]])).tolist() == [0.5]


_ODD = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
                 st.just(2 ** 70), st.just(float("nan")), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))
_LABELS = st.one_of(st.sampled_from(["neg", "pos", "neu", "1", ""]), st.integers(-2, 4), _ODD)
_RATIONALES = st.one_of(st.text(max_size=20), st.sampled_from(["", "a\x00b", "\ud800", "x" * (MAX_RATIONALE_CHARS + 1),
                                                                "y" * MAX_RATIONALE_CHARS]), _ODD)
_SECONDS = st.one_of(st.floats(), st.integers(-5, 2 ** 60), st.sampled_from([2 ** 53, 2 ** 53 + 1, 0, -0.0]), _ODD)
_FLAGS = st.one_of(st.lists(st.sampled_from(["model_wrong", "guideline_unclear", "other"]), max_size=3),
                   st.sampled_from(["model_wrong", ("guideline_unclear",)]), _ODD)


def _outcome(fn, stream, label, **content):
    try:
        return "ok", fn(stream, label, **content)
    except Exception as exc:  # noqa: BLE001 - the kind and message are what is compared
        return "error", type(exc), str(exc)


@settings(max_examples=400, deadline=None)
@given(_LABELS, _RATIONALES, _SECONDS, _FLAGS, st.one_of(st.none(), st.just({"url": "u"})))
def test_an_answers_scalar_checks_are_the_batch_checks(label, rationale, seconds, flags, evidence):
    # The task API checks an answer's content as scalars; whatever is sent, it must store and
    # refuse exactly what the batch path (one row through _annotations' column checks) does.
    stream = Stream(id=1, name=STREAM, classes=("neg", "pos"), owner=None, escalation_contact=None,
                    created_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
    content = {"rationale": rationale, "evidence": evidence, "seconds": seconds, "flags": flags}
    assert _outcome(_tasks.answer_content, stream, label, **content) == \
        _outcome(_tasks._answer_content_frame, stream, label, **content)


@pytest.mark.parametrize("via", ["next_task", "next_task_preview"])
def test_concurrent_next_never_hands_one_task_to_two_people(store, via):
    store.create_stream(STREAM, ("neg", "pos"))
    people = [f"p{k}" for k in range(8)]
    for name in people:
        store.add_annotator(name, streams=[STREAM])
    store.add_items(STREAM, [{"item_id": f"i{k}"} for k in range(12)])
    store.add_tasks(STREAM, [{"item_id": f"i{k}"} for k in range(12)])
    got: dict[str, list[int]] = {}
    errors = []
    barrier = threading.Barrier(len(people))

    def work(name: str) -> None:
        try:
            barrier.wait()
            mine = []
            for _ in range(3):
                task = store.next_task(name) if via == "next_task" else store.next_task_preview(name)
                if task is None:
                    break
                task = task if via == "next_task" else task.task
                mine.append(task.id)
                store.answer_task(task.id, name, "pos")
            got[name] = mine
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(name,)) for name in people]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    claimed = [i for ids in got.values() for i in ids]
    assert len(claimed) == len(set(claimed)) == 12
    tasks = store.tasks_frame(STREAM)
    assert (tasks["status"] == "done").all()
    frame = store.annotations_frame(STREAM)
    assert len(frame) == 12 and frame["task_id"].is_unique


def test_next_task_preview_is_next_task_and_its_preview(team):
    # One transaction, the ranking's prediction reused: the same task and the same preview as
    # next_task then task_preview, for a new claim (with a suggestion) and for the caller's
    # unfinished task; None and the same refusals where next_task has them.
    team.add_tasks(STREAM, [{"item_id": "i5"}, {"item_id": "i1"}, {"item_id": "i7", "kind": "audit"}])
    first = team.next_task_preview("a")
    assert first.suggestion is not None and first.examples is not None
    assert first == team.task_preview(first.task.id)
    assert team.next_task_preview("a") == first == team.task_preview(team.next_task("a").id)
    team.answer_task(first.task.id, "a", "pos")
    second = team.next_task_preview("a", stream=STREAM)
    assert second.task.id != first.task.id and second == team.task_preview(second.task.id)
    team.answer_task(second.task.id, "a", "neu")
    blind = team.next_task_preview("a")
    assert blind.task.kind == "audit" and blind.suggestion is None and blind == team.task_preview(blind.task.id)
    team.answer_task(blind.task.id, "a", "neu")
    assert team.next_task_preview("a") is None and team.next_task("a") is None
    with pytest.raises(ForbiddenError, match="not on stream"):
        team.next_task_preview("d", stream=STREAM)
    team.update_annotator("b", active=False)
    with pytest.raises(ForbiddenError, match="inactive"):
        team.next_task_preview("b")


def test_a_claim_skips_a_task_another_caller_holds_and_keeps_rank_order(store):
    # PostgreSQL claims in one statement (FOR UPDATE SKIP LOCKED in rank order): a task locked
    # by another transaction is passed over without waiting, and the next in rank order is taken.
    if store.dialect != "postgresql":
        pytest.skip("SQLite claims inside its database write lock: no row locks to skip")
    store.create_stream(STREAM, ("neg", "pos"))
    store.add_annotator("p0", streams=[STREAM])
    store.add_items(STREAM, [{"item_id": f"i{k}"} for k in range(3)])
    ids = store.add_tasks(STREAM, [{"item_id": f"i{k}"} for k in range(3)]).ids
    t = sa.table("tasks", sa.column("id"))
    with store._engine.connect() as other, other.begin():
        other.execute(sa.select(t.c.id).where(t.c.id == ids[0]).with_for_update())
        assert store.next_task("p0").id == ids[1]
    assert store.task(ids[0]).status.value == "open" and store.task(ids[2]).status.value == "open"


# ----------------------------------------------------------------------------- answers

def test_an_answer_records_what_was_shown_and_closes_the_task(team):
    task_id = team.add_tasks(STREAM, [{"item_id": "i0"}]).ids[0]
    team.next_task("a")
    answer, created = team.answer_task(task_id, "a", "neg", rationale="sarcasm", evidence={"span": [0, 5]},
                                       seconds=12.5, flags=["model_wrong"], idempotency_key="k1")
    assert created and answer.label == 0 and answer.task_id == task_id and answer.source == "api"
    assert (answer.suggestion, answer.suggestion_confidence) == (2, 0.6)
    assert answer.guideline_version == 3 and answer.flags == ("model_wrong",)
    task = team.task(task_id)
    assert task.status is TaskStatus.DONE and task.completed_at is not None
    actions = team.events_frame(stream=STREAM)["action"].tolist()
    assert actions[-2:] == ["annotation.created", "task.completed"]


def test_an_answer_row_is_what_the_batch_path_prepares(team):
    # answer_task's single-row path hands the driver what _annotations.prepare and row_tuples
    # make of the same answer (content hash included: a batch retry of it must be recognised
    # as the same answer), cell for cell and type for type.
    team.add_tasks(STREAM, [{"item_id": "i1"}, {"item_id": "i6", "kind": "audit"}])
    s = team.stream(STREAM)
    for who, extra in (("a", {"rationale": "why", "seconds": 2.5, "flags": ["model_wrong"], "evidence": {"s": [1]}}),
                       ("b", {"rationale": None, "seconds": None, "flags": None, "evidence": None})):
        task = team.next_task(who)
        with team._engine.connect() as conn:
            row = _tasks.task_row(conn, task.id)
            content = _tasks.answer_content(s, "pos", **extra)
            key = _tasks.answer_key(task.id, "k")
            fast = _tasks.answer_row(conn, s, row, who, content, key=key, source="api",
                                     now=datetime.now(timezone.utc))
            suggestion, confidence = _tasks.shown_suggestion(conn, row, s)
            gv = _tasks.shown_guideline(conn, row)
            record = {"item_id": task.item_id, "annotator_id": who, "label": content["label"],
                      "rationale": content["rationale"], "evidence": [extra["evidence"]], "seconds": content["seconds"],
                      "suggestion": suggestion, "suggestion_confidence": confidence,
                      "guideline_version": conn.execute(sa.select(G.c.version).where(G.c.id == gv)).scalar(),
                      "task_id": task.id, "flags": [extra["flags"]], "source": "api", "idempotency_key": key}
            frame = pd.DataFrame([record]).astype({"evidence": object, "flags": object})
            frame.at[0, "evidence"], frame.at[0, "flags"] = extra["evidence"], extra["flags"]
            slow = _annotations.prepare(conn, s, frame)
            stored = _annotations.row_tuples(slow, team.dialect)[0]
        at = _annotations.STORED.index("created_at")
        assert fast[:at] + fast[at + 1:] == stored[:at] + stored[at + 1:]
        assert [type(v) for v in fast] == [type(v) for v in stored]


def test_a_blind_answer_records_no_suggestion(team):
    task_id = team.add_tasks(STREAM, [{"item_id": "i0", "kind": "audit"}]).ids[0]
    team.next_task("a")
    answer, _ = team.answer_task(task_id, "a", "pos")
    assert answer.suggestion is None and answer.suggestion_confidence is None


def test_answers_are_idempotent_and_never_overwritten(team):
    task_id = team.add_tasks(STREAM, [{"item_id": "i0"}]).ids[0]
    team.next_task("a")
    first, created = team.answer_task(task_id, "a", "pos", rationale="r", idempotency_key="k")
    again, created_again = team.answer_task(task_id, "a", "pos", rationale="r", idempotency_key="k")
    assert created and not created_again and again == first
    with pytest.raises(ConflictError):
        team.answer_task(task_id, "a", "neg", rationale="r", idempotency_key="k")
    with pytest.raises(ConflictError):
        team.answer_task(task_id, "a", "neg", idempotency_key="other")
    assert len(team.annotations_frame(STREAM)) == 1


def test_only_the_assignee_answers(team):
    task_id = team.add_tasks(STREAM, [{"item_id": "i0"}]).ids[0]
    with pytest.raises(ForbiddenError):
        team.answer_task(task_id, "a", "pos")  # open: nobody's yet
    team.next_task("a")
    with pytest.raises(ForbiddenError):
        team.answer_task(task_id, "b", "pos")
    with pytest.raises(NotFoundError):
        team.answer_task(99999, "a", "pos")
    with pytest.raises(SchemaError, match="label"):
        team.answer_task(task_id, "a", "bogus")
    with pytest.raises(SchemaError, match="flags"):
        team.answer_task(task_id, "a", "pos", flags=["bored"])
    assert team.annotations_frame(STREAM).empty


# ----------------------------------------------------------------------------- disputes

def test_a_dispute_goes_to_blind_adjudication_and_supersedes(team):
    team.resolve(STREAM, "i0", "pos", method="consensus")
    dispute = team.dispute(STREAM, "i0", "a", target="resolution", reason="sarcasm", label="neg")
    assert dispute.status == "open" and dispute.label == 0 and dispute.due_at is not None
    assert team.dispute(STREAM, "i0", "a", target="resolution", reason="sarcasm", label="neg") == dispute
    with pytest.raises(ConflictError):
        team.dispute(STREAM, "i0", "a", target="resolution", reason="other", label="neg")
    adj = team.task(dispute.adjudication_task_id)
    assert (adj.kind, adj.tier, adj.blind, adj.status) == ("adjudication", 3, True, TaskStatus.OPEN)
    assert team.next_task("a") is None and team.next_task("b") is None  # tier 1
    got = team.next_task("e")
    assert got.id == adj.id
    preview = team.task_preview(got.id)
    assert preview.suggestion is None and preview.examples is None
    team.answer_task(got.id, "e", "neg")
    closed = team.disputes_frame(STREAM).iloc[0]
    assert closed["status"] == "resolved" and closed["closed_at"] is not None
    labels = team.resolved_labels(STREAM)
    assert labels.set_index("item_id").loc["i0", "label"] == 0
    assert labels.set_index("item_id").loc["i0", "method"] == "adjudicated"
    actions = team.events_frame(stream=STREAM, item_id="i0")["action"].tolist()
    assert actions[-7:] == ["task.created", "dispute.created", "task.assigned", "annotation.created",
                            "task.completed", "resolution.superseded", "dispute.resolved"]


def test_an_upheld_label_rejects_the_dispute(team):
    team.resolve(STREAM, "i1", "pos", method="consensus")
    dispute = team.dispute(STREAM, "i1", "b", target="resolution", reason="hmm")
    team.next_task("e")
    team.answer_task(dispute.adjudication_task_id, "e", "pos")
    assert team.disputes_frame(STREAM)["status"].tolist() == ["rejected"]
    assert len(team.resolutions_frame(STREAM)) == 1


def test_disputes_of_one_item_share_its_adjudication(team):
    first = team.dispute(STREAM, "i2", "a", target="suggestion", reason="not pos")
    second = team.dispute(STREAM, "i2", "b", target="suggestion", reason="neg", label="neg")
    assert first.adjudication_task_id == second.adjudication_task_id
    team.next_task("e")
    team.answer_task(first.adjudication_task_id, "e", "neg")
    assert team.disputes_frame(STREAM)["status"].tolist() == ["resolved", "resolved"]
    assert team.resolved_labels(STREAM).set_index("item_id").loc["i2", "label"] == 0


def test_dispute_arguments_are_checked(team):
    with pytest.raises(SchemaError, match="target"):
        team.dispute(STREAM, "i0", "a", target="resolution", reason="not resolved yet")
    with pytest.raises(SchemaError, match="target"):
        team.dispute(STREAM, "i0", "a", target="everything", reason="x")
    with pytest.raises(NotFoundError, match="item_id"):
        team.dispute(STREAM, "nope", "a", target="suggestion", reason="x")
    with pytest.raises(SchemaError, match="reason"):
        team.dispute(STREAM, "i0", "a", target="suggestion", reason=" ")
    with pytest.raises(ForbiddenError, match="stream"):
        team.dispute(STREAM, "i0", "d", target="suggestion", reason="not on the stream")


def test_the_disputer_never_adjudicates(team):
    dispute = team.dispute(STREAM, "i3", "e", target="suggestion", reason="neg")
    assert team.next_task("e") is None
    team.add_annotator("f", tier=3, streams=[STREAM])
    assert team.next_task("f").id == dispute.adjudication_task_id


# ----------------------------------------------------------------------------- SLAs, metrics

def test_overdue_tasks_and_disputes_escalate_to_the_owner_queue(team):
    past = datetime.now(timezone.utc) - timedelta(minutes=5)
    ids = team.add_tasks(STREAM, [{"item_id": "i0", "due_at": past}, {"item_id": "i1"}],
                         sla=timedelta(hours=2)).ids
    assert team.task(ids[1]).due_at > datetime.now(timezone.utc) + timedelta(hours=1)
    dispute = team.dispute(STREAM, "i5", "a", target="suggestion", reason="x", sla=timedelta(seconds=1))
    later = datetime.now(timezone.utc) + timedelta(minutes=1)
    result = team.escalate_overdue(later)
    adjudication = dispute.adjudication_task_id  # due with its dispute
    assert result.tasks == (ids[0], adjudication) and result.disputes == (dispute.id,)
    assert team.escalate_overdue(later).tasks == ()  # once
    queue = team.owner_queue(STREAM)
    assert set(zip(queue["entity"], queue["id"])) == {("task", ids[0]), ("task", adjudication),
                                                      ("dispute", dispute.id)}
    assert "task.escalated" in team.events_frame(stream=STREAM)["action"].tolist()
    metrics = team.queue_metrics(later)
    row = metrics.streams.set_index("stream").loc[STREAM]
    assert (row["tasks_escalated"], row["disputes_escalated"], row["disputes_open"]) == (2, 1, 1)
    queues = metrics.queues
    tier1 = queues[(queues["stream"] == STREAM) & (queues["tier"] == 1) & (queues["status"] == "open")].iloc[0]
    assert tier1["depth"] == 2 and tier1["overdue"] == 1 and tier1["oldest_seconds"] > 0


def test_answers_per_minute(team):
    task_id = team.add_tasks(STREAM, [{"item_id": "i0"}]).ids[0]
    team.next_task("a")
    team.answer_task(task_id, "a", "pos")
    assert team.queue_metrics().streams.set_index("stream").loc[STREAM, "answers_last_minute"] == 1


# ----------------------------------------------------------------------------- previews

def test_preview_shows_suggestion_section_and_nearest_examples(team):
    team.add_items(STREAM, [{"item_id": f"f{k}", "payload": {"text": f"f{k}", "features": [float(k), 0.0]}}
                            for k in range(6)])
    team.add_resolutions(STREAM, [{"item_id": f"f{k}", "label": "pos" if k % 2 else "neg"} for k in range(1, 6)],
                         method="consensus")
    team.add_predictions(STREAM, "m1", [{"item_id": "f0", "probs": [0.45, 0.05, 0.5], "route": "review",
                                         "reason": "close call"}])
    task_id = team.add_tasks(STREAM, [{"item_id": "f0"}]).ids[0]
    preview = team.task_preview(task_id)
    assert preview.display == "f0" and preview.payload["features"] == [0.0, 0.0]
    assert preview.suggestion.label == "pos" and preview.suggestion.confidence == 0.5
    assert preview.suggestion.confused_pair == ("pos", "neg") and preview.suggestion.reason == "close call"
    assert preview.guideline_version == 3 and preview.guideline_section.startswith("## neg vs pos")
    assert "Sarcasm" in preview.guideline_section and "No opinion" not in preview.guideline_section
    assert [e["item_id"] for e in preview.examples["pos"]] == ["f1", "f3", "f5"]
    assert [e["item_id"] for e in preview.examples["neg"]] == ["f2", "f4"]


def test_a_blind_preview_depends_on_no_answer_and_no_prediction(team):
    task_id = team.add_tasks(STREAM, [{"item_id": "i4", "kind": "double_blind"}]).ids[0]
    before = team.task_preview(task_id)
    assert before.suggestion is None and before.examples is None and before.guideline_section == GUIDELINE
    team.add_annotations(STREAM, [{"item_id": "i4", "annotator_id": "b", "label": "neg"}])
    team.add_model_version("m2")
    team.add_predictions(STREAM, "m2", [{"item_id": "i4", "probs": [0.9, 0.05, 0.05]}])
    team.resolve(STREAM, "i4", "neg", method="consensus")
    assert team.task_preview(task_id) == before


def test_guideline_sections():
    text = "# T\nintro\n## pos / neg\nA\n### detail\nB\n## neu\nC\n## pos\nD"
    assert guideline_section(text, ("neg", "pos")) == "## pos / neg\nA\n### detail\nB"
    assert guideline_section(text, ("neu", "pos")) == "## neu\nC\n\n## pos\nD"
    assert guideline_section(text, ("x", "y")) == text
    assert guideline_section("no headings", ("neg", "pos")) == "no headings"


def test_the_postgresql_claim_takes_stream_ids_as_an_in_list(pg_url):
    # With "stream_id = ANY(array)" PostgreSQL no longer walks ix_tasks_open_urgency in order
    # and stops after CANDIDATES rows: it sorts every open task (0.5 -> 500 ms a claim at
    # 40,000 tasks). The candidates query must keep an expanding IN list of the stream ids.
    with LabelStore(pg_url) as store:
        store.create_stream(STREAM, ("neg", "pos"))
        store.create_stream("other", ("neg", "pos"))
        store.add_annotator("a", streams=[STREAM, "other"])
        for name in (STREAM, "other"):
            store.add_items(name, [{"item_id": f"i{j}"} for j in range(3)])
            store.add_tasks(name, [{"item_id": f"i{j}"} for j in range(3)])
        sent: list[str] = []
        sa.event.listen(store._engine, "before_cursor_execute", lambda *args: sent.append(args[2]))
        assert store.next_task("a") is not None
        assert store.next_task_preview("a", stream="other") is not None
    candidates = [q for q in sent if "ORDER BY tasks.due_at" in q and "LIMIT" in q]
    assert len(candidates) == 2  # one per claim (the second has one stream: still a list)
    for query in candidates:
        assert re.search(r"tasks\.stream_id IN \((%\(stream_ids_\d+\)s(::\w+)?(, )?)+\)", query), query
        assert not re.search(r"stream_id\s*=\s*ANY", query, re.IGNORECASE), query
