"""A hand-built stream history whose impact figures are known by construction (used by the
store's and the API's impact tests).

Classes neg=0, neu=1, pos=2; ann and bob tier 1, eve an expert.

Round 0: ann labels i0=neg, i1=neu, i2=pos; bob i3=neg; each is the item's first resolution.
Round 1: bob i0=neg (agrees with ann), bob and eve i1=pos (the label changes neu -> pos), eve
i2=neg (pos -> neg); ann disputes i3 proposing neu, eve adjudicates neu (neg -> neu).
After round 1 a retrained model m2 predicts i1=pos, i2=neu (it disagrees with eve's fix),
i3=neu. Round 2 is open: ann answers i2=neu (pending).
"""

from __future__ import annotations

from loop.store import LabelStore

STREAM = "impact"
CLASSES = ("neg", "neu", "pos")
SKILLS_0 = {"ann": 0.9, "bob": 0.6, "eve": 0.99}
SKILLS_1 = {"ann": 0.85, "bob": 0.7, "eve": 0.98}

# (round, annotator) -> the figures the module docstring of loop.impact defines.
EXPECTED = {
    (0, "ann"): dict(skill=0.9, answers=3, confirmed=1, overturned=2, pending=0, disputes_won=0, errors_fixed=0,
                     errors_fixed_model_right=0, share_of_error_reduction=0.0),
    (0, "bob"): dict(skill=0.6, answers=1, confirmed=0, overturned=1, pending=0, disputes_won=0, errors_fixed=0,
                     errors_fixed_model_right=0, share_of_error_reduction=0.0),
    # Round 1's changes the retrained model agrees with: i1 (bob and eve: half each) and i3 (eve).
    (1, "ann"): dict(skill=0.85, answers=0, confirmed=0, overturned=0, pending=0, disputes_won=1, errors_fixed=0,
                     errors_fixed_model_right=0, share_of_error_reduction=0.0),
    (1, "bob"): dict(skill=0.7, answers=2, confirmed=2, overturned=0, pending=0, disputes_won=0, errors_fixed=1,
                     errors_fixed_model_right=1, share_of_error_reduction=0.25),
    # eve's i2=neg and i3=neu are the current labels but nobody else gave them: not confirmed.
    (1, "eve"): dict(skill=0.98, answers=3, confirmed=1, overturned=0, pending=0, disputes_won=0, errors_fixed=3,
                     errors_fixed_model_right=2, share_of_error_reduction=0.75),
    (2, "ann"): dict(answers=1, confirmed=0, overturned=0, pending=1, disputes_won=0, errors_fixed=0,
                     errors_fixed_model_right=0, share_of_error_reduction=0.0),
}


def build_history(store: LabelStore) -> None:
    store.create_stream(STREAM, CLASSES)
    store.add_annotator("ann", streams=[STREAM])
    store.add_annotator("bob", streams=[STREAM])
    store.add_annotator("eve", tier=3, streams=[STREAM])
    store.add_items(STREAM, [{"item_id": f"i{k}"} for k in range(4)])
    store.add_model_version("m1")
    store.add_predictions(STREAM, "m1", [{"item_id": f"i{k}", "probs": [0.4, 0.3, 0.3]} for k in range(4)])
    # Round 0.
    store.add_annotations(STREAM, [{"item_id": "i0", "annotator_id": "ann", "label": "neg"},
                                   {"item_id": "i1", "annotator_id": "ann", "label": "neu"},
                                   {"item_id": "i2", "annotator_id": "ann", "label": "pos"},
                                   {"item_id": "i3", "annotator_id": "bob", "label": "neg"}])
    store.add_resolutions(STREAM, [{"item_id": i, "label": label} for i, label in
                                   (("i0", "neg"), ("i1", "neu"), ("i2", "pos"), ("i3", "neg"))], method="consensus")
    store.close_round(STREAM, 0, skills=SKILLS_0)
    # Round 1.
    store.add_annotations(STREAM, [{"item_id": "i0", "annotator_id": "bob", "label": "neg"},
                                   {"item_id": "i1", "annotator_id": "bob", "label": "pos"},
                                   {"item_id": "i1", "annotator_id": "eve", "label": "pos"},
                                   {"item_id": "i2", "annotator_id": "eve", "label": "neg"}])
    heads = store.resolved_labels(STREAM).set_index("item_id")["resolution_id"]
    store.add_resolutions(STREAM, [{"item_id": "i1", "label": "pos", "supersedes": int(heads["i1"])},
                                   {"item_id": "i2", "label": "neg", "supersedes": int(heads["i2"])}],
                          method="adjudicated")
    store.dispute(STREAM, "i3", "ann", target="resolution", reason="clearly neutral", label="neu")
    task = store.next_task("eve", stream=STREAM)
    store.answer_task(task.id, "eve", "neu")
    store.close_round(STREAM, 1, skills=SKILLS_1)
    store.add_model_version("m2")
    store.add_predictions(STREAM, "m2", [{"item_id": "i1", "probs": [0.1, 0.2, 0.7]},
                                         {"item_id": "i2", "probs": [0.2, 0.6, 0.2]},
                                         {"item_id": "i3", "probs": [0.2, 0.7, 0.1]}])
    # Round 2, open.
    store.add_annotations(STREAM, [{"item_id": "i2", "annotator_id": "ann", "label": "neu",
                                    "idempotency_key": "round-2:ann:i2"}])
