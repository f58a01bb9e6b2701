"""Label issues: which given labels are probably wrong, and which class pairs get mixed up.

Without per-annotator labels this is confident learning (cleanlab): a label is scored by the
out-of-sample probability the model gives it (self-confidence), and the confident joint
estimates how many labels are wrong and between which classes.

With the long annotations frame there is more evidence. The model's probabilities, tempered
by a weight ``w``, are the prior over the true class of each row; each annotation enters
through its annotator's confusion matrix ``pi_a[true, said]``; and a label is scored by its
posterior probability of being the true class::

    log q[i, t] = w * log p[i, t] + sum over the annotations (a, l) of row i of log pi_a[t, l]
    score[i]    = softmax(q[i])[labels[i]]

``w`` (how far to trust the model against the annotators) maximises the marginal likelihood
of the annotations, ``sum_i log sum_t softmax(w log p[i])[t] prod pi_a[t, l]``, over the rows
that have annotations; a well-calibrated model on a crowd whose confusion is well estimated
gets ``w`` near 1.

**How the annotators are estimated** (``annotator_model``):

- ``"one_coin"`` (default): one accuracy ``s_a`` per annotator, ``pi_a[t, t] = s_a`` and
  ``(1 - s_a) / (k - 1)`` elsewhere, fitted *jointly with the model* by EM: the E-step is the
  posterior above, the M-step sets ``s_a = (sum of q[i, l] over a's annotations (i, l) + 1) /
  (n_a + 2)`` and refits ``w``; it starts from the model alone (the first M-step measures
  each annotator by agreement with the model) and stops when the posterior stops moving
  (Raykar et al. 2010, with the classifier held fixed). Most items of a labelling program
  carry one label: a fit on the annotations alone learns nothing about an annotator from
  them (a lone label agrees with itself), a joint fit learns from how often the annotator
  agrees with the model there. On the music-genre crowd with one label per song (three
  600-song splits, out-of-fold probabilities of a model trained on those labels), the
  posterior's argmax is right on 68% of the songs against 62% with ``"dawid_skene"`` (the
  labels: 55%).
- ``"dawid_skene"``: full confusion matrices from :class:`~loop.aggregate.DawidSkene` fitted on
  the annotations alone, then held fixed. Class-specific confusions (*rock* taken for *metal*)
  need several labels per item to be learned; with them this can rank better.

**Rows and annotations.** ``item_ids[i]`` is the item id of row ``i`` (default: the row
position ``0 .. n - 1``); every ``item_id`` of the annotations must be one of them. Rows
without annotations are scored by the model alone, tempered by the same ``w``, so that
scores of rows with and without annotations rank on one scale.

**The given label counts once.** The given labels are what is being judged, so they are not
evidence for themselves. When a given label *is* an annotator's label, say so with
``given_annotator[i]``: that annotation then enters the posterior exactly once, through the
annotator's own confusion matrix (the frame's row for ``(item_ids[i], given_annotator[i])``
is that annotation, not a second, independent vote; if the frame lacks it, it is added; an
annotator the frame does not know counts as an average one under ``"dawid_skene"``, and is
estimated from that label like any other under ``"one_coin"``). Counting it once is right: an
unreliable annotator's label is less likely to be correct. Counting it twice, or treating
the label and its own annotation as two agreeing votes, would make the score circular.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from cleanlab.count import compute_confident_joint
from cleanlab.filter import find_label_issues as _cleanlab_find_label_issues
from scipy.optimize import minimize_scalar
from scipy.special import softmax

from ._validation import check_annotations, check_int, check_labels, check_pred_probs, fail
from .aggregate import DawidSkene
from .columns import ANNOTATOR, CLASS_A, CLASS_B, ESTIMATED_COUNT, ITEM, LABEL, SHARE

__all__ = ["ANNOTATOR_MODELS", "annotator_skills", "confused_pairs", "find_label_issues", "label_posteriors",
           "label_quality_scores"]

#: The values of ``annotator_model``: how the annotators are estimated (see the module docstring).
ANNOTATOR_MODELS = ("one_coin", "dawid_skene")


def label_quality_scores(labels: Any, pred_probs: Any, *, annotations: pd.DataFrame | None = None,
                         item_ids: Any = None, given_annotator: Any = None,
                         annotator_model: str = "one_coin") -> np.ndarray:
    """Score how likely each given label is correct; lower means more likely wrong.

    Without ``annotations`` this is cleanlab's self-confidence, ``pred_probs[i, labels[i]]``.
    With ``annotations`` it is the posterior probability that ``labels[i]`` is the true class
    given the model and the annotators' labels (see the module docstring).

    Parameters
    ----------
    labels : array-like of int, shape (n,)
        Given labels, class codes ``0 .. k - 1``.
    pred_probs : array-like of float, shape (n, k)
        Out-of-sample class probabilities (e.g. from cross-validation); rows sum to 1.
    annotations : DataFrame, optional
        Long frame ``item_id, annotator_id, label`` with labels in ``0 .. k - 1``.
    item_ids : array-like, shape (n,), optional
        Item id of each row; defaults to the row positions ``0 .. n - 1``.
    given_annotator : array-like, shape (n,), or one annotator id, optional
        Annotator whose label is ``labels[i]`` (``None`` or NaN where the label comes from
        elsewhere); one id means that annotator gave every label. Needs ``annotations``.
    annotator_model : {"one_coin", "dawid_skene"}, default "one_coin"
        How the annotators are estimated (see the module docstring); used with ``annotations``.

    Returns
    -------
    scores : ndarray of float, shape (n,)
        Values in ``[0, 1]``.

    Examples
    --------
    >>> import pandas as pd
    >>> probs = [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]
    >>> label_quality_scores([0, 1, 1, 0], probs).round(2)
    array([0.9, 0.2, 0.7, 0.6])

    Two annotators who agree with each other outvote a lukewarm model on row 3:

    >>> crowd = pd.DataFrame({"item_id": [0, 0, 1, 1, 2, 2, 3, 3],
    ...                       "annotator_id": ["a", "b"] * 4,
    ...                       "label": [0, 0, 0, 0, 1, 1, 1, 1]})
    >>> scores = label_quality_scores([0, 1, 1, 0], probs, annotations=crowd)
    >>> (scores < 0.5).tolist()
    [False, True, False, True]
    """
    labels, probs = _check_labels_and_probs(labels, pred_probs)
    annotator_model = _check_annotator_model(annotator_model)
    if annotations is None:
        _refuse_given_annotator_alone(given_annotator)
        # cleanlab's self-confidence (tests check it is the same), read directly: cleanlab
        # checks its inputs again with a Python loop over the labels, which cost labelloop
        # score more than the rest of its scoring.
        return _clip_unit(probs[np.arange(labels.size), labels])
    evidence = _check_evidence(labels, probs, annotations, item_ids, given_annotator)
    return _clip_unit(_posteriors(probs, evidence, annotator_model)[np.arange(labels.size), labels])


def label_posteriors(pred_probs: Any, *, annotations: pd.DataFrame, item_ids: Any = None,
                     annotator_model: str = "one_coin", fit_rows: int | None = None,
                     random_state: Any = None) -> np.ndarray:
    """The probability of each true class of each row given the model and the annotators.

    The posterior :func:`label_quality_scores` reads the given label's score from (see the
    module docstring): the model's probabilities tempered by the fitted weight ``w`` are the
    prior, and each annotation enters through its annotator's confusion matrix (as
    ``annotator_model`` estimates it).
    Its argmax is a consensus label that lets the model break ties between annotators who
    disagree; rows without annotations get the tempered model.

    Parameters
    ----------
    pred_probs : array-like of float, shape (n, k)
        Out-of-sample class probabilities; rows sum to 1.
    annotations : DataFrame
        Long frame ``item_id, annotator_id, label`` with labels in ``0 .. k - 1``.
    item_ids : array-like, shape (n,), optional
        Item id of each row; defaults to the row positions ``0 .. n - 1``.
    annotator_model : {"one_coin", "dawid_skene"}, default "one_coin"
        How the annotators are estimated (see the module docstring).
    fit_rows : int, optional
        Fit the annotators and the model weight on at most this many rows with annotations,
        drawn uniformly with ``random_state`` when there are more, so that the fit's cost stops
        growing with the rows: under ``"one_coin"`` the joint EM runs on the sample, then one
        more step over every annotation gives each annotator (also one outside the sample) its
        accuracy and every row its posterior; under ``"dawid_skene"`` only the model weight is
        fitted on the sample. Default: every row (the exact fit).
    random_state : int, sequence of int or Generator, optional
        Draws the sample of ``fit_rows``.

    Returns
    -------
    posteriors : ndarray of float, shape (n, k)
        Rows sum to 1.

    Examples
    --------
    >>> import pandas as pd
    >>> probs = [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]
    >>> crowd = pd.DataFrame({"item_id": [0, 0, 1, 1, 2, 2, 3, 3],
    ...                       "annotator_id": ["a", "b"] * 4,
    ...                       "label": [0, 0, 0, 0, 1, 1, 1, 1]})
    >>> label_posteriors(probs, annotations=crowd).argmax(axis=1).tolist()
    [0, 0, 1, 1]
    """
    probs = check_pred_probs(pred_probs)
    annotator_model = _check_annotator_model(annotator_model)
    if fit_rows is not None:
        fit_rows = check_int(fit_rows, "fit_rows", low=1)
    labels = np.zeros(probs.shape[0], dtype=np.int64)  # no given labels: nothing to fold in
    evidence = _check_evidence(labels, probs, annotations, item_ids, None)
    sample = None
    seen = np.flatnonzero(np.bincount(evidence.row, minlength=probs.shape[0]))  # sorted, like np.unique
    if fit_rows is not None and seen.size > fit_rows:
        sample = np.sort(np.random.default_rng(random_state).choice(seen, size=fit_rows, replace=False))
    return _posteriors(probs, evidence, annotator_model, sample=sample)


def annotator_skills(posteriors: Any, *, annotations: pd.DataFrame, item_ids: Any = None) -> pd.Series:
    """Each annotator's estimated accuracy: the posterior of their labels, as the one-coin fit does.

    ``s_a = (sum of q[i, l] over a's annotations (i, l) + 1) / (n_a + 2)``: the M-step of
    :func:`label_posteriors`'s ``"one_coin"`` fit given its posterior ``q`` (so an annotator
    with few labels stays near 1/2, and one who agrees with confident consensus ranks high).
    No truth is read.

    Parameters
    ----------
    posteriors : array-like of float, shape (n, k)
        Class probabilities of each row, e.g. :func:`label_posteriors`'s; rows sum to 1.
    annotations : DataFrame
        Long frame ``item_id, annotator_id, label`` with labels in ``0 .. k - 1``; every item
        one of ``item_ids``.
    item_ids : array-like, shape (n,), optional
        Item id of each row; defaults to the row positions ``0 .. n - 1``.

    Returns
    -------
    Series of float in (0, 1), indexed by annotator id
        One value per annotator of ``annotations``.

    Examples
    --------
    >>> import pandas as pd
    >>> q = [[0.9, 0.1], [0.2, 0.8]]
    >>> crowd = pd.DataFrame({"item_id": [0, 1, 0], "annotator_id": ["a", "a", "b"], "label": [0, 1, 1]})
    >>> annotator_skills(q, annotations=crowd).round(3).to_dict()
    {'a': 0.675, 'b': 0.367}
    """
    probs = check_pred_probs(posteriors, name="posteriors")
    evidence = _check_evidence(np.zeros(probs.shape[0], dtype=np.int64), probs, annotations, item_ids, None)
    agreed = probs[evidence.row, evidence.label]
    sums = np.bincount(evidence.code, weights=agreed)
    counts = np.bincount(evidence.code)
    # pd.factorize coded them in order of first appearance, as pd.unique lists them.
    names = pd.Index(pd.unique(pd.Series(evidence.annotator, dtype=object)), dtype=object)
    return pd.Series((sums + 1.0) / (counts + 2.0), index=names, name="skill")


def find_label_issues(labels: Any, pred_probs: Any, *, annotations: pd.DataFrame | None = None,
                      item_ids: Any = None, given_annotator: Any = None,
                      annotator_model: str = "one_coin") -> np.ndarray:
    """Flag the given labels that are probably wrong.

    Without ``annotations``: confident learning (cleanlab's ``prune_by_noise_rate``); the
    confident joint estimates how many labels of each class are really of each other class,
    and that many labels with the lowest margin are flagged. (When every given label is the
    same class there is nothing to compare, and a label is flagged when the model prefers
    another class.)

    With ``annotations``: a label of a row with annotations is flagged when it is more likely
    wrong than right given the model and the annotators, i.e. when
    :func:`label_quality_scores` is below 1/2; rows without annotations keep the flags of
    confident learning. (Confident learning on the posteriors misses many errors when the
    labels are the crowd's majority: the confident joint counts few of them as confidently
    wrong.)

    Parameters (``annotator_model`` included) and the link between rows and annotations are
    those of :func:`label_quality_scores`.

    Returns
    -------
    is_issue : ndarray of bool, shape (n,)

    Examples
    --------
    >>> probs = [[0.9, 0.1]] * 4 + [[0.1, 0.9]] * 4
    >>> find_label_issues([0, 0, 0, 1, 1, 1, 1, 1], probs).nonzero()[0]
    array([3])
    """
    labels, probs = _check_labels_and_probs(labels, pred_probs)
    annotator_model = _check_annotator_model(annotator_model)
    if annotations is None:
        _refuse_given_annotator_alone(given_annotator)
        return _confident_learning_issues(labels, probs)
    evidence = _check_evidence(labels, probs, annotations, item_ids, given_annotator)
    wrong = _posteriors(probs, evidence, annotator_model)[np.arange(labels.size), labels] < 0.5
    annotated = np.zeros(labels.size, dtype=bool)
    annotated[evidence.row] = True
    if annotated.all():
        return wrong
    return np.where(annotated, wrong, _confident_learning_issues(labels, probs))


def confused_pairs(labels: Any, pred_probs: Any, *, classes: Sequence[Any] | None = None) -> pd.DataFrame:
    """The class pairs that get mixed up most, from cleanlab's confident joint.

    The calibrated confident joint ``C[given, true]`` estimates how many items of true class
    ``true`` carry label ``given``. Errors in both directions of a pair are summed::

        estimated_count(a, b) = C[a, b] + C[b, a]        (a < b)
        share(a, b)           = estimated_count(a, b) / sum of off-diagonal C

    Parameters
    ----------
    labels : array-like of int, shape (n,)
    pred_probs : array-like of float, shape (n, k)
        Out-of-sample class probabilities.
    classes : sequence, length k, optional
        Class names written into ``class_a`` and ``class_b``; defaults to the codes.

    Returns
    -------
    pairs : DataFrame
        Columns ``class_a, class_b, estimated_count, share``, one row per unordered pair with
        a positive count, most confused first (ties in class order).

    Examples
    --------
    >>> probs = [[0.9, 0.1, 0.0]] * 5 + [[0.1, 0.9, 0.0]] * 5 + [[0.0, 0.0, 1.0]] * 5
    >>> confused_pairs([0, 0, 0, 0, 1, 1, 1, 1, 0, 1, 2, 2, 2, 2, 2], probs,
    ...                classes=["cat", "dog", "fox"])
      class_a class_b  estimated_count  share
    0     cat     dog              2.0    1.0
    """
    labels, probs = _check_labels_and_probs(labels, pred_probs)
    k = probs.shape[1]
    if classes is None:
        names = list(range(k))
    else:
        names = list(classes)
        if len(names) != k:
            raise fail("classes", f"one name per column of pred_probs ({k} names)", f"{len(names)} names")
    joint = compute_confident_joint(labels, probs, calibrate=True).astype(np.float64)
    both_ways = joint + joint.T
    a, b = np.triu_indices(k, 1)
    counts = both_ways[a, b]
    total = counts.sum()
    order = np.lexsort((b, a, -counts))
    keep = order[counts[order] > 0]
    return pd.DataFrame({
        CLASS_A: [names[i] for i in a[keep]],
        CLASS_B: [names[j] for j in b[keep]],
        ESTIMATED_COUNT: counts[keep],
        SHARE: counts[keep] / total if total > 0 else counts[keep],
    })


# --- checks -------------------------------------------------------------------------------


def _check_labels_and_probs(labels: Any, pred_probs: Any) -> tuple[np.ndarray, np.ndarray]:
    probs = check_pred_probs(pred_probs)
    return check_labels(labels, n_classes=probs.shape[1], n_items=probs.shape[0]), probs


def _check_annotator_model(value: Any) -> str:
    if not isinstance(value, str) or value not in ANNOTATOR_MODELS:
        raise fail("annotator_model", f"one of {list(ANNOTATOR_MODELS)}", repr(value))
    return value


def _refuse_given_annotator_alone(given_annotator: Any) -> None:
    # Without the frame there is no estimate of the annotator's skill to weigh the label by.
    if given_annotator is not None:
        raise fail("annotations", "the annotations frame when 'given_annotator' is given", "None")


@dataclass(frozen=True)
class _Evidence:
    """The annotations: annotation ``j`` is about row ``row[j]`` of ``pred_probs``, by the
    annotator ``annotator[j]`` (coded ``code[j]``, ``0 .. m - 1``), who said ``label[j]``;
    ``frame`` is the validated annotations frame (without the given labels it lacked)."""

    row: np.ndarray  # (n_annotations,) int
    annotator: np.ndarray  # (n_annotations,) annotator ids
    code: np.ndarray  # (n_annotations,) int
    label: np.ndarray  # (n_annotations,) int
    frame: pd.DataFrame


def _check_evidence(labels: np.ndarray, probs: np.ndarray, annotations: Any, item_ids: Any,
                    given_annotator: Any) -> _Evidence:
    """Validate the annotations against the rows and fold in the given annotators' labels."""
    n, k = probs.shape
    frame = check_annotations(annotations, classes=range(k))
    ids = _check_item_ids(item_ids, n)
    rows = ids.get_indexer(frame[ITEM].to_numpy(dtype=object) if ids.dtype == object else frame[ITEM])
    if (rows < 0).any():
        unknown = frame.loc[rows < 0, ITEM].unique()[:5].tolist()
        raise fail("annotations", "item_id values that are item ids of the rows (see 'item_ids')",
                   f"unknown items {unknown}")
    frame_labels = frame[LABEL].to_numpy().astype(np.int64)
    frame = frame.assign(**{LABEL: frame_labels})
    annotators = frame[ANNOTATOR].to_numpy()
    if given_annotator is not None:
        extra_rows, extra_annotators = _given_annotations(labels, given_annotator, rows, annotators,
                                                          frame_labels)
        rows = np.concatenate([rows, extra_rows])
        annotators = np.concatenate([annotators, extra_annotators])
        frame_labels = np.concatenate([frame_labels, labels[extra_rows]])
    codes = pd.factorize(pd.Series(annotators, dtype=object))[0]
    return _Evidence(rows, annotators, codes, frame_labels, frame)


def _check_item_ids(item_ids: Any, n: int) -> pd.Index:
    if item_ids is None:
        return pd.RangeIndex(n)
    if np.ndim(item_ids) != 1:
        raise fail("item_ids", "a 1-D array of item ids", f"an array of shape {np.shape(item_ids)}")
    ids = pd.Index(item_ids, tupleize_cols=False)
    if ids.dtype != object and ids.inferred_type == "string":
        # Object strings: pandas' hashing of Arrow-backed ones is several times slower.
        ids = ids.astype(object)
    if len(ids) != n:
        raise fail("item_ids", f"one item id per row ({n} ids)", f"{len(ids)} ids")
    if ids.hasnans:
        raise fail("item_ids", "item ids without missing values", f"{int(ids.isna().sum())} missing")
    if ids.has_duplicates:
        raise fail("item_ids", "distinct item ids", f"duplicates such as {ids[ids.duplicated()][0]!r}")
    return ids


def _given_annotations(labels: np.ndarray, given_annotator: Any, rows: np.ndarray,
                       annotators: np.ndarray, frame_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows (and their annotators) whose given label must be added to the evidence because
    the frame does not hold it; refuse a frame that gives the same annotator another label."""
    if np.ndim(given_annotator) == 0:
        # One annotator gave every label.
        given_annotator = [given_annotator] * labels.size
    given = pd.Series(np.asarray(given_annotator, dtype=object).reshape(-1))
    if given.size != labels.size:
        raise fail("given_annotator", f"one annotator id (or None) per row ({labels.size} values)",
                   f"{given.size} values")
    has = given.notna().to_numpy()
    key = pd.MultiIndex.from_arrays([rows, annotators])
    wanted = pd.MultiIndex.from_arrays([np.flatnonzero(has), given[has].to_numpy()])
    where = key.get_indexer(wanted)
    found = where >= 0
    clash = found & (frame_labels[np.where(found, where, 0)] != labels[has])
    if clash.any():
        row = int(np.flatnonzero(has)[clash][0])
        raise fail("given_annotator", "annotators whose label in 'annotations' is the given label",
                   f"row {row}: {given[row]!r} said {frame_labels[where[clash][0]]} in the annotations "
                   f"but the given label is {labels[row]}")
    missing = np.flatnonzero(has)[~found]
    return missing, given[missing].to_numpy()


def _annotator_confusion(frame: pd.DataFrame, annotators: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Confusion matrices from a Dawid-Skene fit on ``frame``, laid out on the class codes
    ``0 .. k - 1``: a ``(m + 1, k, k)`` array (the last one is the average annotator) and,
    for each of ``annotators``, its index into it.

    A class nobody used gets the row the Dawid-Skene prior gives an empty row,
    ``(1/k + 1)/2`` on the diagonal and ``1/(2k)`` elsewhere; an annotator ``frame`` does not
    know is the average of the others, weighted by how many labels each gave.
    """
    model = DawidSkene("full").fit(frame)
    seen = np.asarray(model.classes_, dtype=np.int64)
    full = np.empty((len(model.annotators_), k, k))
    full[:] = (np.full((k, k), 1.0 / k) + np.eye(k)) / 2.0
    full[np.ix_(np.arange(len(model.annotators_)), seen, seen)] = model.confusion_
    # Rows of seen classes lose the mass of the unseen columns' prior; renormalise.
    full /= full.sum(axis=2, keepdims=True)
    counts = frame[ANNOTATOR].value_counts().reindex(model.annotators_).to_numpy(dtype=np.float64)
    average = np.tensordot(counts / counts.sum(), full, axes=1)
    where = model.annotators_.get_indexer(annotators)
    return np.concatenate([full, average[None]]), np.where(where >= 0, where, len(full))


def _clip_unit(scores: np.ndarray) -> np.ndarray:
    # Rounding can leave 1 + 1e-16; the contract is [0, 1].
    return np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)


# --- cores --------------------------------------------------------------------------------


# Probabilities of exactly 0 would make the log-prior -inf and veto a class the annotators
# agree on; the floor keeps the model's vote finite.
_PROB_FLOOR = 1e-9
# Search range of the model weight w: 0 ignores the model; past 4 the model's argmax decides.
_WEIGHT_BOUNDS = (0.0, 4.0)
# The joint EM stops when no posterior probability moves by more than _JOINT_TOL (it takes a
# few dozen steps on a real crowd) or after _JOINT_MAX_ITER steps.
_JOINT_TOL = 1e-6
_JOINT_MAX_ITER = 200


def _posteriors(probs: np.ndarray, evidence: _Evidence, annotator_model: str, *,
                sample: np.ndarray | None = None) -> np.ndarray:
    """``(n, k)`` posterior over the true class of each row given the model and the annotations;
    fitted on the rows ``sample`` (sorted, all with annotations) when given, else on all."""
    log_prior = np.log(np.maximum(probs, _PROB_FLOOR))
    n = probs.shape[0]
    seen = np.flatnonzero(np.bincount(evidence.row, minlength=n)) if sample is None else sample
    n, k = probs.shape
    if annotator_model == "dawid_skene":
        confusion, who = _annotator_confusion(evidence.frame, evidence.annotator, k)
        # log_likelihood[i, t] = sum over the annotations (a, l) of row i of log pi_a[t, l].
        per_annotation = np.log(confusion[who, :, evidence.label])
        log_likelihood = np.stack([np.bincount(evidence.row, weights=per_annotation[:, t], minlength=n)
                                   for t in range(k)], axis=1)
        return _tempered_posterior(log_prior, log_likelihood, seen)
    n_codes = int(evidence.code.max()) + 1 if evidence.code.size else 0
    if sample is None:
        posterior, _, _ = _one_coin(log_prior, evidence.row, evidence.code, evidence.label, n_codes, seen)
        return posterior
    # The joint EM on the sample's rows and their annotations...
    in_sample = np.zeros(n, dtype=bool)
    in_sample[sample] = True
    keep = in_sample[evidence.row]
    position = np.cumsum(in_sample) - 1
    _, accuracy, weight = _one_coin(log_prior[sample], position[evidence.row[keep]], evidence.code[keep],
                                    evidence.label[keep], n_codes, np.arange(sample.size))
    # ...then every row with the fitted annotators and weight, one more M-step over every
    # annotation (an annotator outside the sample gets an accuracy too), and the E-step.
    for last in (False, True):
        posterior = softmax(weight * log_prior + _one_coin_log_likelihood(
            accuracy[evidence.code], evidence.row, evidence.label, n, k), axis=1)
        if not last:
            accuracy = _one_coin_accuracy(posterior, evidence.row, evidence.code, evidence.label, n_codes)
    return posterior


def _one_coin(log_prior: np.ndarray, row: np.ndarray, code: np.ndarray, label: np.ndarray, n_codes: int,
              seen: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The joint EM of one-coin annotators and the model's tempered probabilities (each row's
    prior): the posterior, each annotator's accuracy (by code) and the model weight."""
    n, k = log_prior.shape
    # The first M-step measures each annotator against the model alone.
    posterior = softmax(log_prior, axis=1)
    accuracy, weight = np.full(n_codes, 0.5), 1.0
    for _ in range(_JOINT_MAX_ITER):
        accuracy = _one_coin_accuracy(posterior, row, code, label, n_codes)
        log_likelihood = _one_coin_log_likelihood(accuracy[code], row, label, n, k)
        weight = _model_weight(log_prior[seen], log_likelihood[seen])
        updated = softmax(weight * log_prior + log_likelihood, axis=1)
        moved = float(np.abs(updated - posterior).max())
        posterior = updated
        if moved < _JOINT_TOL:
            break
    return posterior, accuracy, weight


def _one_coin_accuracy(posterior: np.ndarray, row: np.ndarray, code: np.ndarray, label: np.ndarray,
                       n_codes: int) -> np.ndarray:
    """``(m,)`` each annotator's expected share of right labels under ``posterior``."""
    right = np.bincount(code, weights=posterior[row, label], minlength=n_codes)
    # Beta-like pseudo-counts: an annotator with one label is not certain either way.
    return (right + 1.0) / (np.bincount(code, minlength=n_codes) + 2.0)


def _one_coin_log_likelihood(accuracy: np.ndarray, row: np.ndarray, label: np.ndarray, n: int,
                             k: int) -> np.ndarray:
    """``(n, k)`` log-likelihood of each row's annotations, given each annotation's accuracy."""
    log_wrong = np.log((1.0 - accuracy) / max(k - 1, 1))
    # Every annotation adds log_wrong to each class of its row, and log(accuracy) - log_wrong
    # more to the class it said.
    return np.bincount(row, weights=log_wrong, minlength=n)[:, None] + np.bincount(
        row * k + label, weights=np.log(accuracy) - log_wrong, minlength=n * k).reshape(n, k)


def _tempered_posterior(log_prior: np.ndarray, log_likelihood: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """``softmax(w log p + L)`` with the model weight ``w`` that maximises the marginal
    likelihood of the annotations of the rows ``seen``."""
    weight = _model_weight(log_prior[seen], log_likelihood[seen])
    return softmax(weight * log_prior + log_likelihood, axis=1)


def _model_weight(log_prior: np.ndarray, log_likelihood: np.ndarray) -> float:
    """The ``w`` that maximises ``sum_i log sum_t softmax(w log p[i])[t] L[i, t]``."""
    # Column-major: the search evaluates this some 25 times, and each evaluation reduces over
    # the k classes, which then run down contiguous columns.
    log_prior, log_likelihood = np.asfortranarray(log_prior), np.asfortranarray(log_likelihood)

    def negative_log_likelihood(weight: float) -> float:
        tempered = weight * log_prior
        return -float((_logsumexp_rows(tempered + log_likelihood) - _logsumexp_rows(tempered)).sum())

    return float(minimize_scalar(negative_log_likelihood, bounds=_WEIGHT_BOUNDS, method="bounded").x)


def _logsumexp_rows(x: np.ndarray) -> np.ndarray:
    """``(n,)`` ``log(sum(exp(x), axis=1))`` for an ``(n, k)`` array, without overflow."""
    columns = [x[:, t] for t in range(x.shape[1])]
    top = np.maximum.reduce(columns)
    return top + np.log(np.add.reduce([np.exp(column - top) for column in columns]))


def _confident_learning_issues(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    if np.unique(labels).size < 2:
        # A single given class leaves the confident joint nothing to compare (cleanlab refuses
        # it): flag the labels the model ranks below another class.
        return probs[np.arange(labels.size), labels] < probs.max(axis=1)
    # n_jobs=1: the machines we run on have 2 cores and cleanlab's pool costs more than it saves.
    return np.asarray(_cleanlab_find_label_issues(labels, probs, filter_by="prune_by_noise_rate",
                                                  n_jobs=1), dtype=bool)
