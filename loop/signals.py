"""Uncertainty signals from predicted class probabilities.

Single-model signals take an ``(n_items, n_classes)`` array of probabilities and return one
float per item. Committee signals take an ``(n_models, n_items, n_classes)`` array (one
probability matrix per committee member: bootstrap models, CV folds, checkpoints) and
return one float per item.

Direction of each score
-----------------------
- ``least_confidence``: in ``[0, 1 - 1/k]``, higher = more uncertain.
- ``entropy``: in ``[0, 1]`` (normalised by ``log k``), higher = more uncertain.
- ``vote_entropy``, ``mean_kl_to_consensus``: in ``[0, 1]`` (normalised by
  ``log min(m, k)``), higher = more disagreement.
- ``margin``: in ``[0, 1]``, **higher = more certain**: it is the raw gap ``p1 - p2``.

``margin`` is the one exception on purpose: everywhere in labelloop (the router's
``margin`` column, ``RoutingThresholds.expert_margin``, the reasons "margin 0.04 between 3
and 5") the word means the gap between the two most probable classes, so a small margin is
an uncertain item. Use ``1 - margin(p)`` when a "higher = more uncertain" score is needed.

Ties between classes are broken towards the lower class index, as :func:`numpy.argmax` does.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import xlogy

from ._validation import check_pred_probs

__all__ = [
    "entropy",
    "least_confidence",
    "margin",
    "mean_kl_to_consensus",
    "top_two",
    "vote_entropy",
]


def top_two(pred_probs: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The predicted class, the runner-up and the gap between their probabilities.

    Parameters
    ----------
    pred_probs : array-like of shape (n_items, n_classes)
        Class probabilities; rows sum to 1.

    Returns
    -------
    predicted : ndarray of shape (n_items,), int64
        Index of the most probable class (lowest index on ties).
    runner_up : ndarray of shape (n_items,), int64
        Index of the second most probable class; never equal to ``predicted``.
    gap : ndarray of shape (n_items,), float64
        ``p[predicted] - p[runner_up]``, in [0, 1].

    Examples
    --------
    >>> predicted, runner_up, gap = top_two([[0.1, 0.6, 0.3]])
    >>> int(predicted[0]), int(runner_up[0]), round(float(gap[0]), 2)
    (1, 2, 0.3)
    """
    probs = check_pred_probs(pred_probs)
    return _top_two(probs)


def least_confidence(pred_probs: ArrayLike) -> np.ndarray:
    """Least-confidence uncertainty: ``1 - max_c p_c``.

    Parameters
    ----------
    pred_probs : array-like of shape (n_items, n_classes)
        Class probabilities; rows sum to 1.

    Returns
    -------
    ndarray of shape (n_items,)
        Scores in ``[0, 1 - 1/k]``; higher = more uncertain.

    Examples
    --------
    >>> least_confidence([[0.9, 0.1], [0.5, 0.5]]).round(2).tolist()
    [0.1, 0.5]
    """
    probs = check_pred_probs(pred_probs)
    return 1.0 - probs.max(axis=1)


def margin(pred_probs: ArrayLike) -> np.ndarray:
    """Margin: the gap ``p1 - p2`` between the two most probable classes.

    **Higher = more certain** (the one score in this module that points this way; see the
    module docstring). An item with margin 0.04 is one the model nearly called the other way.

    Parameters
    ----------
    pred_probs : array-like of shape (n_items, n_classes)
        Class probabilities; rows sum to 1.

    Returns
    -------
    ndarray of shape (n_items,)
        Gaps in ``[0, 1]``; 0 when the top two classes tie, 1 for a one-hot row.

    Examples
    --------
    >>> margin([[0.5, 0.3, 0.2], [0.4, 0.4, 0.2]]).round(2).tolist()
    [0.2, 0.0]
    """
    probs = check_pred_probs(pred_probs)
    return _top_two(probs)[2]


def entropy(pred_probs: ArrayLike, *, normalize: bool = True) -> np.ndarray:
    """Shannon entropy of each row, ``-sum_c p_c log p_c``.

    Parameters
    ----------
    pred_probs : array-like of shape (n_items, n_classes)
        Class probabilities; rows sum to 1.
    normalize : bool, default=True
        Divide by ``log k`` so that the score lies in ``[0, 1]`` (1 = uniform) whatever the
        number of classes. With ``False`` the entropy is in nats, in ``[0, log k]``.

    Returns
    -------
    ndarray of shape (n_items,)
        Higher = more uncertain.

    Examples
    --------
    >>> entropy([[1.0, 0.0], [0.5, 0.5]]).tolist()
    [0.0, 1.0]
    """
    probs = check_pred_probs(pred_probs)
    return _entropy(probs, normalize=normalize)


def vote_entropy(committee_probs: ArrayLike, *, normalize: bool = True) -> np.ndarray:
    """Vote entropy of a committee: the entropy of the members' hard votes.

    Each member votes for its most probable class; with ``V_c`` votes for class ``c`` out of
    ``m`` members the score is ``-sum_c (V_c / m) log(V_c / m)``.

    Parameters
    ----------
    committee_probs : array-like of shape (n_models, n_items, n_classes)
        One probability matrix per committee member.
    normalize : bool, default=True
        Divide by ``log min(m, k)``, the largest value the vote entropy can take, so that
        the score lies in ``[0, 1]``. A committee of one member scores 0.

    Returns
    -------
    ndarray of shape (n_items,)
        Higher = more disagreement; 0 when all members vote alike.

    Examples
    --------
    >>> committee = [[[0.9, 0.1], [0.6, 0.4]], [[0.8, 0.2], [0.3, 0.7]]]
    >>> vote_entropy(committee).tolist()
    [0.0, 1.0]
    """
    probs = check_pred_probs(committee_probs, "committee_probs", ndim=3)
    n_models, n_items, n_classes = probs.shape
    votes = probs.argmax(axis=2)  # (m, n)
    # counts[i, c] = number of members voting c on item i: one bincount over flat cells.
    cells = (np.arange(n_items) * n_classes + votes).ravel()
    counts = np.bincount(cells, minlength=n_items * n_classes).reshape(n_items, n_classes)
    scores = 0.0 - xlogy(counts / n_models, counts / n_models).sum(axis=1)  # 0.0 - : no -0.0
    return _normalise_committee(scores, n_models, n_classes, normalize=normalize)


def mean_kl_to_consensus(committee_probs: ArrayLike, *, normalize: bool = True) -> np.ndarray:
    """Mean Kullback-Leibler divergence of each member from the committee consensus.

    With the consensus ``q = mean_j p_j``, the score is ``mean_j KL(p_j || q)``, which equals
    the generalised Jensen-Shannon divergence ``H(q) - mean_j H(p_j)``: disagreement that
    remains after each member's own uncertainty is taken out (McCallum and Nigam, 1998).

    Parameters
    ----------
    committee_probs : array-like of shape (n_models, n_items, n_classes)
        One probability matrix per committee member.
    normalize : bool, default=True
        Divide by ``log min(m, k)``, the largest value the score can take, so that it lies
        in ``[0, 1]``. A committee of one member scores 0.

    Returns
    -------
    ndarray of shape (n_items,)
        Higher = more disagreement; 0 when all members give the same probabilities.

    Examples
    --------
    >>> committee = [[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.5, 0.5]]]
    >>> mean_kl_to_consensus(committee).round(6).tolist()
    [1.0, 0.0]
    """
    probs = check_pred_probs(committee_probs, "committee_probs", ndim=3)
    n_models, _, n_classes = probs.shape
    consensus = probs.mean(axis=0)  # (n, k)
    # Terms with p = 0 contribute 0 (xlogy); where p > 0 the consensus is > 0 as well.
    ratio = np.divide(probs, consensus, out=np.ones_like(probs), where=probs > 0)
    scores = xlogy(probs, ratio).sum(axis=2).mean(axis=0)
    scores = np.maximum(scores, 0.0)  # float rounding can leave -1e-17
    return _normalise_committee(scores, n_models, n_classes, normalize=normalize)


def _top_two(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = np.arange(probs.shape[0])
    predicted = probs.argmax(axis=1)
    rest = probs.copy()
    rest[rows, predicted] = -np.inf
    runner_up = rest.argmax(axis=1)
    gap = probs[rows, predicted] - probs[rows, runner_up]
    return predicted.astype(np.int64), runner_up.astype(np.int64), gap


def _entropy(probs: np.ndarray, *, normalize: bool) -> np.ndarray:
    nats = 0.0 - xlogy(probs, probs).sum(axis=1)  # 0.0 - : no -0.0
    nats = np.maximum(nats, 0.0)
    if normalize:
        return np.minimum(nats / np.log(probs.shape[1]), 1.0)
    return nats


def _normalise_committee(scores: np.ndarray, n_models: int, n_classes: int, *,
                         normalize: bool) -> np.ndarray:
    if not normalize:
        return scores
    ceiling = np.log(min(n_models, n_classes))
    if ceiling == 0:  # one member: no disagreement is possible
        return np.zeros_like(scores)
    return np.clip(scores / ceiling, 0.0, 1.0)
