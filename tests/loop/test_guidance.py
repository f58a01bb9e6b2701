"""Confused pairs become guidance; how fast a published guideline raises accuracy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loop.exceptions import SchemaError
from loop.guidance import draft_sections, merge_guideline, propagation
from loop.store import guideline_section

CLASSES = ["cat", "dog", "fox", "owl"]


def _hand_built():
    """cat/dog mixed up most, fox/owl a little; known margins; answers with flags."""
    rows = []  # (item, label, probs)
    for i in range(6):
        rows.append((f"c{i}", 0, [0.9, 0.1, 0, 0]))
        rows.append((f"d{i}", 1, [0.1, 0.9, 0, 0]))
        rows.append((f"f{i}", 2, [0, 0, 0.9, 0.1]))
        rows.append((f"o{i}", 3, [0, 0, 0.1, 0.9]))
    # cat/dog boundary: margins 0.02 (cat), 0.06 (cat), 0.10 (dog), 0.30 (dog, mislabelled by the crowd?)
    rows += [("cd1", 0, [0.51, 0.49, 0, 0]), ("cd2", 0, [0.53, 0.47, 0, 0]),
             ("cd3", 1, [0.45, 0.55, 0, 0]), ("cd4", 1, [0.35, 0.65, 0, 0]),
             ("cdx", 0, [0.52, 0.48, 0, 0])]  # nearest of all, but untrusted (auto-accepted)
    # Confusions: dog-labelled items the model calls cat, and the reverse; one fox/owl.
    rows += [(f"m{i}", 1, [0.95, 0.05, 0, 0]) for i in range(4)]
    rows += [(f"n{i}", 0, [0.05, 0.95, 0, 0]) for i in range(3)]
    rows += [("fo", 3, [0, 0, 0.95, 0.05])]
    ids = [r[0] for r in rows]
    labels = np.array([r[1] for r in rows])
    probs = np.array([r[2] for r in rows], dtype=float)
    trusted = np.array([i != "cdx" for i in ids])
    answers = pd.DataFrame([
        ("cd1", 0, "whiskers, so cat", ["guideline_unclear"]),
        ("cd1", 1, "looks like a puppy; token=abc123", []),
        ("m0", 1, "pointy ears " + "x" * 400, ["guideline_unclear", "model_wrong"]),
        ("c0", 0, None, []),
        ("f0", 2, "an owl? no", ["guideline_unclear"]),  # another pair: not counted for cat/dog
    ], columns=["item_id", "label", "rationale", "flags"])
    return ids, labels, probs, trusted, answers


def test_draft_finds_the_pairs_the_edge_examples_and_the_flags():
    ids, labels, probs, trusted, answers = _hand_built()
    draft = draft_sections(labels, probs, item_ids=ids, classes=CLASSES, trusted=trusted,
                           annotations=answers, pairs=2, per_class=2, quote_chars=60)
    assert list(draft.sections) == [("cat", "dog"), ("fox", "owl")]
    cat_dog = draft.examples[(draft.examples["class_a"] == "cat")]
    # Nearest the cat/dog edge, trusted only: cd1 (0.02), cd2 (0.06) for cat; cd3 (0.10), cd4 (0.30) for dog.
    assert cat_dog.loc[cat_dog["class"] == "cat", "item_id"].tolist() == ["cd1", "cd2"]
    assert cat_dog.loc[cat_dog["class"] == "dog", "item_id"].tolist() == ["cd3", "cd4"]
    assert cat_dog["margin"].round(2).tolist() == [0.02, 0.06, 0.10, 0.30]
    row = draft.pairs.iloc[0]
    # Items of cat/dog: their top two classes are cat and dog (c*, d*, cd*, m*, n*), not f0.
    assert row["items"] == 6 + 6 + 5 + 4 + 3
    assert (row["answers"], row["guideline_unclear"]) == (4, 2)
    quotes = row["rationales"]
    assert quotes[0] == "whiskers, so cat" and quotes[1].startswith("pointy ears") and quotes[1].endswith("…")
    assert len(quotes[1]) == 60
    assert "abc123" not in " ".join(quotes) and "token=***" in quotes[2]  # redacted
    assert draft.pairs.iloc[1][["answers", "guideline_unclear"]].tolist() == [1, 1]


def test_published_draft_is_what_the_preview_shows_for_the_pair():
    ids, labels, probs, trusted, answers = _hand_built()
    draft = draft_sections(labels, probs, item_ids=ids, classes=CLASSES, trusted=trusted, annotations=answers)
    text = merge_guideline("# Animals\nLook closely.", draft)
    section = guideline_section(text, ("dog", "cat"))
    assert section == draft.sections[("cat", "dog")]
    assert "`cd1`" in section and "`fo`" not in section
    assert draft.examples_json()["cat vs dog"]["cat"][0] == {"item_id": "cd1", "margin": 0.02}


def test_merge_extends_an_existing_pair_section_instead_of_shadowing_it():
    ids, labels, probs, trusted, answers = _hand_built()
    draft = draft_sections(labels, probs, item_ids=ids, classes=CLASSES, trusted=trusted, pairs=1)
    parent = "# Animals\n## cat vs dog\nCats have whiskers.\n## owl\nOwls hoot."
    text = merge_guideline(parent, draft)
    section = guideline_section(text, ("cat", "dog"))
    assert section.startswith("## cat vs dog\nCats have whiskers.") and "### From confusions" in section
    assert "`cd1`" in section and text.endswith("Owls hoot.")


def test_no_confusion_no_section():
    probs = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    draft = draft_sections([0, 1, 2, 0, 1, 2], probs, item_ids=range(6), classes=["a", "b", "c"])
    assert draft.sections == {} and draft.pairs.empty and draft.text == ""


@pytest.mark.parametrize("kwargs, field", [
    ({"labels": [0, 5]}, "labels"),
    ({"item_ids": ["x", "x"]}, "item_ids"),
    ({"classes": ["a"]}, "classes"),
    ({"trusted": [1, 0]}, "trusted"),
    ({"pairs": 0}, "pairs"),
    ({"annotations": pd.DataFrame({"item_id": ["x"]})}, "annotations"),
    ({"annotations": pd.DataFrame({"item_id": ["x"], "label": [0], "flags": ["unclear"]})}, "annotations.flags"),
])
def test_draft_validates_its_input(kwargs, field):
    args = {"labels": [0, 1], "pred_probs": [[0.6, 0.4], [0.4, 0.6]], "item_ids": ["x", "y"], "classes": ["a", "b"]}
    args.update(kwargs)
    with pytest.raises(SchemaError, match=f"'{field}'"):
        draft_sections(args.pop("labels"), args.pop("pred_probs"), **args)


# ----------------------------------------------------------------------------- propagation

def _planted(half_life_days: float, *, seed: int, annotators: int = 40, base: float = 0.6, gain: float = 0.3,
             days_before: int = 5, days_after: int = 12, per_day: int = 12):
    """Each annotator adopts at an exponential time after publication (the model's premise);
    before adopting they are right with ``base``, after with ``base + gain``."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2026-03-01", tz="UTC")
    adopt = rng.exponential(half_life_days / np.log(2), annotators)
    rows, ref = [], {}
    for a in range(annotators):
        for d in range(-days_before, days_after):
            for j in range(per_day):
                t = d + rng.uniform(0, 1)
                p = base + gain * (t >= adopt[a])
                item = f"a{a}d{d}j{j}"
                truth = int(rng.integers(0, 2))
                rows.append((item, f"ann{a}", truth if rng.uniform() < p else 1 - truth, t0 + pd.Timedelta(days=t)))
                ref[item] = truth
    ann = pd.DataFrame(rows, columns=["item_id", "annotator_id", "label", "created_at"])
    return ann, pd.Series(ref), t0


def test_propagation_recovers_a_planted_adoption_speed():
    ann, ref, t0 = _planted(2.0, seed=1)
    result = propagation(ann, ref, t0, (0, 1), window="1D", reference="gold", n_boot=100, rng=0)
    # 40 annotators' adoption times are a sample: the estimate's spread is that of their
    # mean (about half_life / sqrt(40), 0.3 days); 0.7 days is over two such spreads.
    assert result.half_life == pytest.approx(2.0, abs=0.7)
    assert result.gain == pytest.approx(0.3, abs=0.06)
    assert result.baseline == pytest.approx(0.6, abs=0.03)
    assert result.gain_ci[0] < 0.3 < result.gain_ci[1]
    assert result.half_life_ci[0] < result.half_life < result.half_life_ci[1]
    w = result.windows
    assert (w.loc[w["phase"] == "before", "window"] < 0).all() and w["answers"].sum() == len(ann)
    assert w.loc[w["window"] == 11, "accuracy"].iloc[0] > w.loc[w["window"] == 0, "accuracy"].iloc[0]
    assert set(result.metrics()) >= {"guideline_gain", "guideline_half_life_days"}


def test_a_faster_adoption_gives_a_shorter_half_life():
    fast = propagation(*_planted(0.5, seed=2)[:3], (0, 1), n_boot=0)
    slow = propagation(*_planted(4.0, seed=2)[:3], (0, 1), n_boot=0)
    assert fast.half_life < 1.0 < 2.5 < slow.half_life


def test_propagation_by_answers_and_without_gain():
    ann, ref, t0 = _planted(1.0, seed=3, gain=0.0, annotators=10)
    result = propagation(ann, ref, t0, (0, 1), window=200, n_boot=20)
    assert result.unit == "answers" and abs(result.gain) < 0.05
    assert result.windows.loc[result.windows["phase"] == "after", "answers"].iloc[:-1].eq(200).all()
    assert result.gain_ci[0] < 0 < result.gain_ci[1]


def test_answers_on_other_classes_are_not_graded():
    ann, ref, t0 = _planted(1.0, seed=4, annotators=5)
    ref_other = ref.copy()
    ref_other.iloc[::2] = 3  # items of another class: left out
    result = propagation(ann, ref_other, t0, (0, 1), n_boot=0)
    assert result.n_before + result.n_after == int(ref_other.isin([0, 1]).sum())


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 30))
def test_window_table_counts_every_graded_answer_once(seed, size):
    ann, ref, t0 = _planted(1.0, seed=seed, annotators=3, days_before=2, days_after=3, per_day=4)
    result = propagation(ann, ref, t0, (0, 1), window=size, n_boot=0)
    w = result.windows
    assert w["answers"].sum() == len(ann) == result.n_before + result.n_after
    assert ((w["ci_low"] <= w["accuracy"]) & (w["accuracy"] <= w["ci_high"])).all()
    assert w["window"].is_monotonic_increasing


@pytest.mark.parametrize("kwargs, field", [
    ({"pair": (0, 0)}, "pair"),
    ({"window": "soon"}, "window"),
    ({"window": 0}, "window"),
    ({"published_at": "never"}, "published_at"),
    ({"published_at": "2020-01-01"}, "annotations"),  # nothing before
    ({"reference_labels": [0, 1]}, "reference_labels"),
])
def test_propagation_validates_its_input(kwargs, field):
    ann, ref, t0 = _planted(1.0, seed=5, annotators=2, days_before=1, days_after=1, per_day=2)
    args = {"annotations": ann, "reference_labels": ref, "published_at": t0, "pair": (0, 1), "n_boot": 0}
    args.update(kwargs)
    with pytest.raises(SchemaError, match=f"'{field}'"):
        propagation(args.pop("annotations"), args.pop("reference_labels"), args.pop("published_at"),
                    args.pop("pair"), **args)


def test_a_simulated_crowd_adopting_a_guideline_shows_the_planted_half_life():
    """The simulated crowd adopts a published guideline over time (draw_adoption_delays);
    propagation, knowing nothing of it, recovers the planted median delay."""
    from loop.simulate import Guideline, Tier, draw_adoption_delays, make_crowd

    crowd = make_crowd({Tier.NOVICE: 40}, 2, rng=0)
    guideline = Guideline("v2", {(0, 1): 0.9})
    delays = draw_adoption_delays(crowd.ids, 1.5, rng=1)
    t0 = pd.Timestamp("2026-01-05", tz="UTC")
    frames, truth = [], {}
    rng = np.random.default_rng(2)
    for day in range(-4, 10):
        items = [f"d{day}-{j}" for j in range(300)]
        y = pd.Series(rng.integers(0, 2, len(items)), index=items)
        truth.update(y.to_dict())
        at = day + 0.5  # the day's work, half a day after that day's start
        adopters = delays.index[delays.to_numpy() <= at] if day >= 0 else []
        answers = crowd.ask(y, labels_per_item=1, guideline=guideline, adopters=adopters, rng=rng)
        frames.append(answers.assign(created_at=t0 + pd.Timedelta(days=at)))
    ann = pd.concat(frames, ignore_index=True)
    result = propagation(ann, pd.Series(truth), t0, (0, 1), n_boot=50, rng=3)
    # 40 delays drawn once: their sample median spreads about 1.5 * 1.25 / sqrt(40) = 0.3 days
    # around 1.5 (the median's asymptotic sd for an exponential); 0.6 is two of those.
    assert result.half_life == pytest.approx(1.5, abs=0.6)
    assert result.gain > 0.1 and result.gain_ci[0] > 0
    before = crowd.ask(pd.Series([0, 1] * 500, index=[f"z{i}" for i in range(1000)]), guideline=guideline,
                       adopters=[], rng=4)
    without = crowd.ask(pd.Series([0, 1] * 500, index=[f"z{i}" for i in range(1000)]), rng=4)
    assert before["label"].tolist() == without["label"].tolist()  # nobody adopted: answers as without it


def test_public_names():
    import experiments.guidance
    import loop.guidance

    for module in (loop.guidance, experiments.guidance):
        assert sorted(module.__all__) == sorted(set(module.__all__))
        assert all(hasattr(module, name) for name in module.__all__)
