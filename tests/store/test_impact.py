"""Annotator impact read from the store (SQLite and PostgreSQL): a hand-built history whose
every figure is known by construction (tests/store/impact_history.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loop.exceptions import SchemaError
from loop.impact import IMPACT_COLUMNS, impact_totals
from loop.store import _impact

from .impact_history import EXPECTED, SKILLS_1, STREAM, build_history


def test_every_figure_matches_the_history_built_by_hand(store):
    build_history(store)
    table = store.annotator_impact(STREAM)
    assert list(table.columns) == list(IMPACT_COLUMNS)
    got = {(int(r["round"]), r["annotator_id"]): r for _, r in table.iterrows()}
    assert set(got) == set(EXPECTED)
    for key, figures in EXPECTED.items():
        for name, value in figures.items():
            assert got[key][name] == pytest.approx(value), (key, name)
    assert table[table["round"] == 2]["skill"].isna().all()  # the open round has no skill yet
    assert table[table["round"] == 1]["round_fixes_model_right"].eq(2).all()
    assert table.groupby("round")["share_of_error_reduction"].sum().le(1 + 1e-12).all()


def test_one_annotator_sees_only_their_rows_and_totals_add_up(store):
    build_history(store)
    eve = store.annotator_impact(STREAM, annotator="eve")
    assert eve["annotator_id"].eq("eve").all() and eve["round"].tolist() == [1]
    totals = impact_totals(store.annotator_impact(STREAM)).set_index("annotator_id")
    assert totals.loc["ann", "answers"] == 4 and totals.loc["ann", "pending"] == 1
    assert totals.loc["ann", "skill"] == pytest.approx(SKILLS_1["ann"])  # the latest round's estimate
    assert totals.loc["eve", "share_of_error_reduction"] == pytest.approx(0.75)


def test_round_close_events_hold_the_marks_and_skills(store):
    build_history(store)
    events = store.events_frame(stream=STREAM)
    closed = events[events["action"] == "round.closed"]
    assert closed["entity_id"].tolist() == [0, 1]
    assert closed.iloc[1]["after"]["skills"] == SKILLS_1
    assert closed.iloc[0]["after"]["annotation_version"] < closed.iloc[1]["after"]["annotation_version"]


def test_without_any_closed_round_the_history_is_one_judged_round(store):
    store.create_stream("s", ["a", "b"])
    store.add_annotator("u", streams=["s"])
    store.add_annotator("v", streams=["s"])
    store.add_items("s", [{"item_id": "x"}])
    store.add_annotations("s", [{"item_id": "x", "annotator_id": "u", "label": "a"},
                                {"item_id": "x", "annotator_id": "v", "label": "b"}])
    store.resolve("s", "x", "a", method="consensus")
    table = store.annotator_impact("s").set_index("annotator_id")
    assert table["round"].tolist() == [0, 0]
    assert (table.loc["u", "confirmed"], table.loc["u", "overturned"]) == (0, 0)  # nobody backs u's "a"
    assert (table.loc["v", "overturned"], table.loc["v", "pending"]) == (1, 0)


@pytest.mark.parametrize("kwargs,field", [({"round_": -1}, "round"), ({"round_": "1"}, "round"),
                                          ({"round_": 1, "skills": {"u": 1.5}}, "skills['u']"),
                                          ({"round_": 1, "skills": [0.5]}, "skills")])
def test_close_round_refuses_bad_input_naming_the_field(store, kwargs, field):
    store.create_stream("s", ["a", "b"])
    with pytest.raises(SchemaError, match=f"'{field}'" if "[" not in field else "skills"):
        store.close_round("s", **kwargs)
    assert store.events_frame(stream="s").query("action == 'round.closed'").empty


def test_annotator_impact_refuses_a_bad_annotator_name(store):
    store.create_stream("s", ["a", "b"])
    with pytest.raises(SchemaError, match="annotator"):
        store.annotator_impact("s", annotator="")


@pytest.mark.parametrize("rounds", [[0], [1], [2], [0, 2]])
def test_reading_some_rounds_gives_their_rows_of_the_whole_history(store, rounds):
    build_history(store)
    whole = store.annotator_impact(STREAM)
    marks = store.round_marks(STREAM)
    part = store.impact_inputs(STREAM, rounds=rounds, marks=marks).table()
    expected = whole[whole["round"].isin(rounds)].reset_index(drop=True)
    pd.testing.assert_frame_equal(part[part["round"].isin(rounds)].reset_index(drop=True), expected)
    # Only the items those rounds name are read: round 2 answered i2 alone.
    if rounds == [2]:
        read = store.impact_inputs(STREAM, rounds=rounds)
        assert set(read.answers["item_id"]) == set(read.history["item_id"]) == {"i2"}


@pytest.mark.parametrize("kwargs,field", [({"rounds": "1"}, "rounds"), ({"rounds": [-1]}, "rounds"),
                                          ({"marks": [{"x": 1}]}, "marks")])
def test_impact_inputs_refuses_bad_rounds_and_marks(store, kwargs, field):
    store.create_stream("s", ["a", "b"])
    with pytest.raises(SchemaError, match=f"'{field}'"):
        store.impact_inputs("s", **kwargs)


def _random_history(store, *, n_items: int = 60, rounds: int = 3, seed: int = 0) -> list[str]:
    """Two answers an item from six annotators, a third of the labels changed by a superseding
    resolution, a retrained model's predictions after each close, then an open round."""
    rng = np.random.default_rng(seed)
    store.create_stream("r", ["c0", "c1", "c2"])
    people = [f"p{j}" for j in range(6)]
    for name in people:
        store.add_annotator(name, streams=["r"])
    store.add_model_version("m")
    per_round = n_items // rounds
    for r in range(rounds + 1):
        ids = [f"i{r}-{k}" for k in range(per_round)]
        store.add_items("r", [{"item_id": i} for i in ids])
        who = np.array([rng.choice(people, 2, replace=False) for _ in range(per_round)])
        labels = rng.integers(0, 3, size=(per_round, 2))
        store.add_annotations("r", pd.DataFrame({"item_id": np.repeat(ids, 2), "annotator_id": who.ravel(),
                                                 "label": labels.ravel(),
                                                 "idempotency_key": [f"{i}:{n}" for i in ids for n in range(2)]}))
        if r == rounds:
            break  # the round in progress: answered, not resolved, not closed
        store.add_resolutions("r", pd.DataFrame({"item_id": ids, "label": labels[:, 0]}), method="consensus")
        heads = store.resolved_labels("r").set_index("item_id")["resolution_id"]
        changed = [(i, int(b)) for i, (a, b) in zip(ids, labels) if a != b]
        store.add_resolutions("r", pd.DataFrame({"item_id": [i for i, _ in changed], "label": [b for _, b in changed],
                                                 "supersedes": [int(heads[i]) for i, _ in changed]}),
                              method="adjudicated")
        store.close_round("r", r, skills={p: float(rng.uniform(0.5, 1.0)) for p in people})
        store.add_model_version(f"m{r + 1}")
        store.add_predictions("r", f"m{r + 1}", [{"item_id": i, "probs": list(rng.dirichlet(np.ones(3)))}
                                                  for i in ids])
    return people


def test_one_annotators_rows_read_alone_are_their_rows_of_the_whole_history(store):
    # GET /v1/me/impact reads one annotator's figures at the cost of what they touched: their
    # rows must be those of the whole history's table, to the bit, on both engines.
    build_history(store)
    people = _random_history(store)
    for stream, names in ((STREAM, ["ann", "bob", "eve", "p0"]), ("r", people + ["ann"])):
        whole = store.annotator_impact(stream)
        for name in names:
            alone = store.annotator_impact(stream, annotator=name)
            expected = whole[whole["annotator_id"] == name].reset_index(drop=True)
            pd.testing.assert_frame_equal(alone, expected, check_exact=True)
            assert len(alone) == len(expected)
        assert (whole["share_of_error_reduction"] > 0).any()  # the shares were put to the test
    # It reads what the annotator touched: their answers' items, not every answer.
    with store._read() as conn:
        one = _impact.annotator_inputs(conn, store.stream("r"), store.annotator("p0").id)
    assert 0 < len(one.answers) < len(store.annotations_frame("r"))
