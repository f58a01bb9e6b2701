"""Idempotency as a property: whatever mix of retries, reorderings and duplicates a client
sends, every key is stored once, with one event, and its content is the first one sent."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from loop.columns import ANNOTATOR, ITEM, LABEL
from loop.store import IDEMPOTENCY_KEY, LabelStore

KEYS = [f"k{j}" for j in range(30)]


def _row(key: str) -> dict:
    j = int(key[1:])  # the content is a function of the key, as for a client that retries
    return {ITEM: f"i{j % 7}", ANNOTATOR: "ab"[j % 2], LABEL: j % 3, IDEMPOTENCY_KEY: key}


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.sampled_from(KEYS), min_size=1, max_size=12), min_size=1, max_size=6))
def test_any_sequence_of_retried_batches_stores_each_key_once(batches):
    with LabelStore("sqlite://") as store:
        store.create_stream("s", ["x", "y", "z"])
        store.add_annotator("a", streams=["s"]), store.add_annotator("b", streams=["s"])
        store.add_items("s", [{ITEM: f"i{k}"} for k in range(7)])
        inserted = sum(store.add_annotations("s", [_row(k) for k in batch]).inserted for batch in batches)
        sent = {k for batch in batches for k in batch}
        frame = store.annotations_frame("s", extras=(IDEMPOTENCY_KEY,))
        with store._engine.connect() as conn:
            events = conn.execute(sa.text("SELECT count(*) FROM events WHERE action = 'annotation.created'")).scalar()
    assert inserted == len(sent) == len(frame) == events
    expected = pd.DataFrame([_row(k) for k in sorted(sent)]).set_index(IDEMPOTENCY_KEY)
    got = frame.set_index(IDEMPOTENCY_KEY).loc[expected.index]
    assert got[LABEL].tolist() == expected[LABEL].tolist()
    assert got[ITEM].tolist() == expected[ITEM].tolist()


_INTS = st.one_of(st.none(), st.integers(-(2 ** 62) + 1, 2 ** 62))
_FLOATS = st.one_of(st.none(), st.just(float("nan")), st.floats(allow_nan=False))
_TEXTS = st.one_of(st.none(), st.text(max_size=20))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("int"), _INTS), st.tuples(st.just("float"), _FLOATS),
                          st.tuples(st.just("text"), _TEXTS)), min_size=1, max_size=12))
def test_a_rows_content_hash_without_a_frame_is_the_frames(cells):
    # The task API hashes one answer from its cells; a batch retry of it hashes a frame: the
    # two must agree to the bit, or the retry would be a conflict (or a second answer).
    from loop.store._convert import content_hash, content_hash_row

    frame = pd.DataFrame({f"c{j}": pd.Series([value], dtype={"int": "Int64", "float": "float64", "text": object}[kind])
                          for j, (kind, value) in enumerate(cells)})
    assert content_hash_row(cells) == int(content_hash(frame)[0])
