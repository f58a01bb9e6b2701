"""Review ranking: how many label errors a reviewer catches when checking k items.

A reviewer checks the k = (number of errors) items ranked lowest by a label quality score;
the figure is the share of the errors among them (1.0 = every checked item was an error).

Methods, all measured in the same run on the same probabilities:

- ``labelloop``: :func:`loop.issues.label_quality_scores`, with the annotations when the case
  has annotator evidence;
- ``cleanlab``: ``cleanlab.rank.get_label_quality_scores`` (its default, self-confidence);
- ``least_conf``: the largest class probability (the least confident items first);
- ``random``: the expected share of a random order, k / n.

Cases:

- scikit-learn's digits, wine and breast_cancer with uniform noise (10 %, 20 %) and noise
  concentrated on the most confusable class pairs (15 %); probabilities from 5-fold
  cross-validation of a logistic regression trained on the noisy labels. ``+ann`` repeats
  the case with two extra simulated annotators per item (accuracy 70-85 %) as evidence.
- the real music-genre crowd (700 songs, 44 MTurk annotators, gold): the given label is one
  annotator's label (``one``) or the majority vote (``majority``), an error is a given label
  that differs from gold, the evidence is the crowd's labels, and the probabilities come
  from 5-fold cross-validation on the 124 audio features trained on the given labels.

Run: ``.venv/bin/python benchmarks/review_ranking.py`` (about a minute on 2 cores). BLAS runs
single-threaded: on a shared 2-core machine its threads fight each other and the
cross-validation of a small logistic regression takes a minute instead of a second.

A second table, on the music-genre crowd only: how often the *consensus* of the model and the
annotators is the gold genre, for labelloop's :func:`loop.issues.label_posteriors` (its argmax;
``annotator_model`` one_coin and dawid_skene) and cleanlab's CROWDLAB
(``cleanlab.multiannotator.get_label_quality_multiannotator``, its ``consensus_label``), with
majority vote for reference. The probabilities are the out-of-fold ones of a model trained on
one annotator's label per song (three draws); the evidence is every crowd label (``all``) or
only that one label (``one``: CROWDLAB refuses data where every item has one label).

``ceiling`` is the largest ratio any ranking could reach, 1 / cleanlab's share: when cleanlab
already catches 92 % of the errors, no method can catch 1.10 times as many. ``oracle`` (for
the simulated annotators) is the ratio of the same posterior given what no method knows: each
annotator's true accuracy and the best model weight in hindsight.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from cleanlab.rank import get_label_quality_scores
from scipy.special import softmax
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loop.columns import ANNOTATOR, ITEM, LABEL  # noqa: E402
from loop.datasets import load_music_genre, shared_data_dir  # noqa: E402
from loop.issues import ANNOTATOR_MODELS, label_posteriors, label_quality_scores  # noqa: E402

SEED = 0
SKLEARN_SETS = {"digits": load_digits, "wine": load_wine, "breast_cancer": load_breast_cancer}
NOISES = (("uniform", 0.10), ("uniform", 0.20), ("pairs", 0.15))
EXTRA_ANNOTATORS = 6          # pool of simulated annotators for the +ann cases
LABELS_PER_ITEM = 2           # of them, how many label each item
ANNOTATOR_ACCURACY = (0.70, 0.85)
TARGET_EVIDENCE_RATIO = 1.10


@dataclass(frozen=True)
class Case:
    """One ranking problem: given labels, model probabilities, where the errors are, evidence."""

    name: str
    labels: np.ndarray
    pred_probs: np.ndarray
    errors: np.ndarray
    annotations: pd.DataFrame | None = None
    item_ids: np.ndarray | None = None
    given_annotator: np.ndarray | None = None
    truth: np.ndarray | None = None  # known for the simulated annotators: for the oracle


# --- data --------------------------------------------------------------------------------


def cv_probs(features: np.ndarray, labels: np.ndarray, seed: int = SEED) -> np.ndarray:
    """Out-of-sample probabilities from 5-fold cross-validation of a logistic regression."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    return cross_val_predict(model, features, labels, cv=folds, method="predict_proba")


def partner_classes(features: np.ndarray, truth: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each class, the class it is most confused with by a model trained on clean labels,
    and how often (symmetric confusion counts)."""
    predicted = cv_probs(features, truth).argmax(axis=1)
    confusion = np.zeros((k, k))
    np.add.at(confusion, (truth, predicted), 1)
    both = confusion + confusion.T
    np.fill_diagonal(both, -1)
    return both.argmax(axis=1), both.max(axis=1)


def add_noise(truth: np.ndarray, rate: float, kind: str, partner: np.ndarray, weight: np.ndarray,
              k: int, rng: np.random.Generator) -> np.ndarray:
    """Flip ``rate * n`` labels: to a uniformly drawn other class, or (``pairs``) to the
    partner class, choosing items in proportion to how confusable their class is."""
    n = truth.size
    n_flip = int(round(rate * n))
    if kind == "uniform":
        flip = rng.choice(n, size=n_flip, replace=False)
        shift = rng.integers(1, k, size=n_flip)
        noisy = truth.copy()
        noisy[flip] = (truth[flip] + shift) % k
        return noisy
    p = weight[truth] + 0.5
    flip = rng.choice(n, size=n_flip, replace=False, p=p / p.sum())
    noisy = truth.copy()
    noisy[flip] = partner[truth[flip]]
    return noisy


def simulate_annotators(truth: np.ndarray, k: int, rng: np.random.Generator) -> pd.DataFrame:
    """``LABELS_PER_ITEM`` labels per item from a pool of annotators with accuracies drawn in
    ``ANNOTATOR_ACCURACY``; a wrong label is a uniformly drawn other class."""
    n = truth.size
    accuracy = rng.uniform(*ANNOTATOR_ACCURACY, size=EXTRA_ANNOTATORS)
    who = np.argsort(rng.random((n, EXTRA_ANNOTATORS)), axis=1)[:, :LABELS_PER_ITEM]
    items = np.repeat(np.arange(n), LABELS_PER_ITEM)
    annotator = who.ravel()
    correct = rng.random(items.size) < accuracy[annotator]
    label = np.where(correct, truth[items], (truth[items] + rng.integers(1, k, size=items.size)) % k)
    return pd.DataFrame({ITEM: items, ANNOTATOR: [f"sim-{a}" for a in annotator], LABEL: label})


def sklearn_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for set_name, loader in SKLEARN_SETS.items():
        x, truth = loader(return_X_y=True)
        k = int(truth.max()) + 1
        partner, weight = partner_classes(x, truth, k)
        annotations = simulate_annotators(truth, k, rng)
        for kind, rate in NOISES:
            noisy = add_noise(truth, rate, kind, partner, weight, k, rng)
            probs = cv_probs(x, noisy)
            name = f"{set_name} {kind} {rate:.0%}"
            cases.append(Case(name, noisy, probs, noisy != truth))
            cases.append(Case(f"{name} +ann", noisy, probs, noisy != truth, annotations=annotations,
                              truth=truth))
    return cases


def music_genre_cases(rng: np.random.Generator) -> list[Case]:
    crowd = load_music_genre()
    items = crowd.features.index.to_numpy()
    x = crowd.features.to_numpy()
    gold = crowd.gold.reindex(items).to_numpy()
    annotations = crowd.annotations
    one = _one_label_each(annotations, items, int(rng.integers(2**31)))
    majority = _majority_vote(annotations, items)
    cases = []
    for tag, given, who in (("one", one[LABEL].to_numpy(), one[ANNOTATOR].to_numpy()),
                            ("majority", majority, None)):
        given = given.astype(np.int64)
        probs = _full_width(cv_probs(x, given), given, crowd.n_classes)
        name = f"music_genre {tag}"
        cases.append(Case(name, given, probs, given != gold))
        cases.append(Case(f"{name} +ann", given, probs, given != gold, annotations=annotations,
                          item_ids=items, given_annotator=who))
    return cases


def _one_label_each(annotations: pd.DataFrame, items: np.ndarray, seed: int) -> pd.DataFrame:
    """One annotator's label per item, drawn uniformly among those who labelled it (by item)."""
    return annotations.sample(frac=1.0, random_state=seed).drop_duplicates(ITEM).set_index(ITEM).reindex(items)


def _majority_vote(annotations: pd.DataFrame, items: np.ndarray) -> np.ndarray:
    """Majority vote per item, ties broken towards the lowest class code."""
    votes = pd.crosstab(annotations[ITEM], annotations[LABEL]).reindex(items)
    return votes.columns.to_numpy()[votes.to_numpy().argmax(axis=1)]


def _full_width(probs: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """cross_val_predict drops classes nobody used; put the columns back at their codes."""
    present = np.unique(labels)
    if present.size == k:
        return probs
    full = np.zeros((probs.shape[0], k))
    full[:, present] = probs
    return full


# --- measurement -------------------------------------------------------------------------


def caught_share(scores: np.ndarray, errors: np.ndarray) -> float:
    """Share of the errors among the k = errors.sum() lowest scores."""
    k = int(errors.sum())
    if k == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    return float(errors[order[:k]].sum() / k)


def oracle_share(case: Case) -> float:
    """What the evidence allows at best: the share caught by the same posterior when each
    simulated annotator's accuracy is measured against the truth (uniform errors, as
    simulated) and the model weight is the best of a grid, chosen in hindsight."""
    n, k = case.pred_probs.shape
    rows = case.annotations[ITEM].to_numpy()
    said = case.annotations[LABEL].to_numpy()
    right = pd.Series(said == case.truth[rows]).groupby(case.annotations[ANNOTATOR].to_numpy()).mean()
    accuracy = right.reindex(case.annotations[ANNOTATOR]).to_numpy()
    per_label = np.where(np.arange(k) == said[:, None], accuracy[:, None], ((1 - accuracy) / (k - 1))[:, None])
    log_likelihood = np.zeros((n, k))
    np.add.at(log_likelihood, rows, np.log(per_label))
    log_prior = np.log(np.maximum(case.pred_probs, 1e-9))
    best = 0.0
    for weight in np.linspace(0.25, 5.0, 20):
        post = softmax(weight * log_prior + log_likelihood, axis=1)
        best = max(best, caught_share(post[np.arange(n), case.labels], case.errors))
    return best


def rank_case(case: Case) -> dict[str, float]:
    ours = label_quality_scores(case.labels, case.pred_probs, annotations=case.annotations,
                                item_ids=case.item_ids, given_annotator=case.given_annotator)
    theirs = get_label_quality_scores(case.labels, case.pred_probs)
    n_err = int(case.errors.sum())
    return {
        "labelloop": caught_share(ours, case.errors),
        "cleanlab": caught_share(theirs, case.errors),
        "least_conf": caught_share(case.pred_probs.max(axis=1), case.errors),
        "random": n_err / case.errors.size,
    }


def consensus_table(draws: int = 3) -> pd.DataFrame:
    """Consensus accuracy against gold on the music-genre crowd (see the module docstring)."""
    from cleanlab.multiannotator import get_label_quality_multiannotator

    crowd = load_music_genre()
    items = crowd.features.index.to_numpy()
    gold = crowd.gold.reindex(items).to_numpy()
    annotations = crowd.annotations[[ITEM, ANNOTATOR, LABEL]]
    majority = _majority_vote(annotations, items)
    rows = []
    for draw in range(draws):
        one = _one_label_each(annotations, items, draw)
        given = one[LABEL].to_numpy().astype(np.int64)
        probs = _full_width(cv_probs(crowd.features.to_numpy(), given), given, crowd.n_classes)
        for evidence, frame in (("one", one.reset_index()[[ITEM, ANNOTATOR, LABEL]]), ("all", annotations)):
            row = {"evidence": evidence, "draw": draw, "given label": float((given == gold).mean())}
            for model in ANNOTATOR_MODELS:
                post = label_posteriors(probs, annotations=frame, item_ids=items, annotator_model=model)
                row[f"labelloop {model}"] = float((post.argmax(axis=1) == gold).mean())
            row["cleanlab crowdlab"] = np.nan
            if evidence == "all":
                wide = frame.pivot(index=ITEM, columns=ANNOTATOR, values=LABEL).reindex(items)
                found = get_label_quality_multiannotator(wide, probs, verbose=False)["label_quality"]
                row["cleanlab crowdlab"] = float((found["consensus_label"].to_numpy() == gold).mean())
                row["majority vote"] = float((majority == gold).mean())
            rows.append(row)
    return pd.DataFrame(rows)


def main() -> pd.DataFrame:
    with threadpool_limits(limits=1):
        table = _run()
        if shared_data_dir() is not None:
            consensus = consensus_table()
            print("\nconsensus accuracy against gold, music genre (mean over 3 draws of the model's training label):")
            print(consensus.drop(columns="draw").groupby("evidence", sort=False).mean().to_string(
                float_format=lambda v: f"{v:.3f}"))
        return table


def _run() -> pd.DataFrame:
    start = time.perf_counter()
    rng = np.random.default_rng(SEED)
    cases = sklearn_cases(rng)
    if shared_data_dir() is not None:
        cases += music_genre_cases(rng)
    else:
        print("music_genre skipped: ../shared/data is not on this machine")
    rows = []
    for case in cases:
        shares = rank_case(case)
        rows.append({"case": case.name, "n": case.labels.size, "errors": int(case.errors.sum()),
                     **shares, "ratio": shares["labelloop"] / shares["cleanlab"],
                     "ceiling": 1.0 / shares["cleanlab"],
                     "oracle": np.nan if case.truth is None else oracle_share(case) / shares["cleanlab"],
                     "evidence": case.annotations is not None})
    table = pd.DataFrame(rows)
    target = np.where(table["evidence"], TARGET_EVIDENCE_RATIO, 1.0)
    table["target"] = target
    table["met"] = table["ratio"] >= target - 1e-12
    with pd.option_context("display.width", 160, "display.max_rows", 100):
        print(table.drop(columns="evidence").to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\ntargets met: {int(table['met'].sum())}/{len(table)} "
          f"(ratio >= 1.00 without evidence, >= {TARGET_EVIDENCE_RATIO:.2f} with annotator evidence); "
          f"{time.perf_counter() - start:.1f} s")
    return table


if __name__ == "__main__":
    main()
