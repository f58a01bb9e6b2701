"""Measure a real crowd against gold and build a simulated crowd like it."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import brentq
from scipy.special import expit, logit
from scipy.stats import betabinom, binom

from .._validation import check_annotations, check_int, check_labels, check_rng, fail
from ..agreement import annotator_accuracy
from ..columns import ACCURACY, ANNOTATOR, ITEM, LABEL, N_CORRECT, N_ITEMS, SECONDS
from ._crowd import Annotator, SimulatedCrowd
from ._model import (
    DEFAULT_PROFILES,
    Tier,
    TierProfile,
    _knowledge,
    _shift_knowledge,
    _with_hit,
    annotator_confusions,
    confusability_from_confusion,
)


@dataclass(frozen=True, eq=False)
class CrowdProfile:
    """What a real crowd looks like, measured against gold (see :func:`fit_crowd_profile`).

    The crowd is a mixture: a share of *spammers* who answer at random, whatever the truth,
    and *workers* whose accuracy is Beta distributed, whose errors follow ``confusability``,
    whose accuracy varies by class (``class_difficulty``, and ``class_bias_std`` from worker
    to worker) and by item (``item_difficulty_std``).

    Attributes
    ----------
    n_classes : int
    correct, n_gold : Series by annotator_id
        Gold-checked labels each annotator got right, and how many were checked.
    spammer_share : float
        Share of annotators who answer at random.
    spammer_probability : Series by annotator_id
        Posterior probability that each annotator is a spammer.
    spammer_answers : ndarray of shape (k,)
        How spammers spread their answers over the classes, whatever the truth.
    accuracy_alpha, accuracy_beta : float
        Beta distribution of the workers' accuracy, fitted by the moments of a beta-binomial
        (the binomial noise of annotators with few labels is not counted as skill spread).
    confusability : ndarray of shape (k, k)
        Where the workers' errors land (answers vs gold, diagonal dropped).
    class_difficulty : ndarray of shape (k,)
        Logit offset of each class's accuracy from the workers' average.
    item_difficulty_std : float
        Spread of item difficulty on the logit scale: how much more the crowd agrees on some
        items, and less on others, than independent annotators would.
    class_bias_std : float
        Spread on the logit scale of each worker's own accuracy on each class around
        ``class_difficulty``: workers differ in which classes they get wrong, and so agree
        less than their accuracies alone suggest.
    labels_per_item : Series by item_id
        Labels each item received.
    seconds_median : float or None
        Median seconds per label, where the source records it.
    """

    n_classes: int
    correct: pd.Series
    n_gold: pd.Series
    spammer_share: float
    spammer_probability: pd.Series
    spammer_answers: np.ndarray
    accuracy_alpha: float
    accuracy_beta: float
    confusability: np.ndarray
    class_difficulty: np.ndarray
    item_difficulty_std: float
    class_bias_std: float
    labels_per_item: pd.Series
    seconds_median: float | None = None

    @property
    def accuracy(self) -> pd.Series:
        """Observed accuracy of each annotator on gold items."""
        return (self.correct / self.n_gold).rename(ACCURACY)

    @property
    def accuracy_mean(self) -> float:
        """Mean accuracy of the fitted mixture of spammers and workers."""
        worker = self.accuracy_alpha / (self.accuracy_alpha + self.accuracy_beta)
        return self.spammer_share / self.n_classes + (1 - self.spammer_share) * worker

    @property
    def accuracy_std(self) -> float:
        """Standard deviation of accuracy across annotators in the fitted mixture (without the
        binomial noise of a finite number of labels)."""
        a, b, pi = self.accuracy_alpha, self.accuracy_beta, self.spammer_share
        mean, var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
        second = pi / self.n_classes**2 + (1 - pi) * (var + mean**2)
        return float(np.sqrt(max(second - self.accuracy_mean**2, 0.0)))

    @property
    def skill(self) -> pd.Series:
        """Posterior mean accuracy of each annotator under the fitted mixture."""
        a, b = self.accuracy_alpha, self.accuracy_beta
        worker = (self.correct + a) / (self.n_gold + a + b)
        spam = self.spammer_probability
        return (spam / self.n_classes + (1 - spam) * worker).rename("skill")


def fit_crowd_profile(annotations: pd.DataFrame, gold: pd.Series, *, n_classes: int | None = None,
                      max_iter: int = 100) -> CrowdProfile:
    """Measure a real crowd against gold, to simulate one like it with :func:`crowd_like`.

    1. Skill: each annotator's correct count on gold items is a draw from either a spammer
       (``Binomial(n_j, 1 / k)``) or a worker (``BetaBinomial(n_j, alpha, beta)``); the share
       of spammers, the posterior of each annotator and the Beta are fitted by EM, the Beta
       by weighted moments. Spammers' answers are pooled into ``spammer_answers``.
    2. Where errors go and class difficulty: the workers' answers against gold (each label
       weighted by its annotator's probability of being a worker); the class offsets are
       solved so that expected and observed correct answers agree on every class.
    3. Class bias: how much each worker's accuracy on each class strays from its own
       average plus the class offset, beyond binomial noise (moments of the residuals).
    4. Item difficulty: the excess of each item's squared residual count correct over
       independent labels, ``sum_i [(c_i - sum_r p_r)^2 - sum_r p_r (1 - p_r)]``, matched by
       the covariance that a difficulty spread ``sigma`` induces among the workers' labels
       of one item (Gauss-Hermite quadrature, Brent's method).

    The fit takes well under a second on the crowds of :mod:`loop.datasets`.

    Parameters
    ----------
    annotations : DataFrame with columns item_id, annotator_id, label
        Integer class codes; an optional ``seconds`` column.
    gold : Series of class codes indexed by item_id
        For some or all items; only annotators with gold-checked labels enter the fit.
    n_classes : int, optional
        Defaults to one more than the largest code seen.
    max_iter : int
        EM iterations at most.

    Returns
    -------
    CrowdProfile

    Examples
    --------
    >>> profile = fit_crowd_profile(dataset.annotations, dataset.gold)  # doctest: +SKIP
    >>> crowd = crowd_like(profile, rng=0)  # doctest: +SKIP
    """
    frame = check_annotations(annotations)
    labels = check_labels(frame[LABEL].to_numpy(), "annotations")
    if not isinstance(gold, pd.Series) or gold.empty:
        raise fail("gold", "a non-empty Series of class codes indexed by item_id", type(gold).__name__)
    gold_codes = check_labels(gold.to_numpy(), "gold")
    k = int(max(labels.max(), gold_codes.max())) + 1 if n_classes is None else check_int(n_classes, "n_classes", low=2)
    check_labels(labels, "annotations", n_classes=k)
    check_labels(gold_codes, "gold", n_classes=k)
    max_iter = check_int(max_iter, "max_iter", low=1)
    gold = pd.Series(gold_codes, index=gold.index)

    table = annotator_accuracy(frame, gold)
    table = table[table[N_ITEMS] > 0]
    if table.empty:
        raise fail("gold", "labels for some annotated items", "no overlap with annotations' item_id")
    correct, n_gold = table[N_CORRECT].rename("correct"), table[N_ITEMS].rename("n_gold")
    spam, alpha, beta = _fit_skill_mixture(correct.to_numpy(), n_gold.to_numpy(), 1.0 / k, max_iter)
    spam = pd.Series(spam, index=table.index, name="spammer_probability")

    checked = frame[ITEM].isin(gold.index).to_numpy()
    rows = frame.loc[checked]
    y, answer = gold.reindex(rows[ITEM]).to_numpy(), labels[checked]
    worker = 1.0 - spam.reindex(rows[ANNOTATOR]).to_numpy()
    counts = np.zeros((k, k))
    np.add.at(counts, (y, answer), worker)
    # Spammers answer from one distribution whatever the item: often a favourite class.
    spam_answers = np.bincount(answer, weights=1.0 - worker, minlength=k) + 1.0
    spam_answers /= spam_answers.sum()
    skill = (correct + alpha) / (n_gold + alpha + beta)
    base = logit(np.clip(skill.reindex(rows[ANNOTATOR]).to_numpy(), 1e-6, 1 - 1e-6))
    hit = (answer == y).astype(np.float64)
    difficulty = _fit_class_difficulty(hit, y, base, worker, spam_answers, k)
    trusted = worker >= 0.5
    bias_std = _fit_bias_spread(hit[trusted], y[trusted], rows.loc[trusted, ANNOTATOR].to_numpy(),
                                base[trusted] + difficulty[y[trusted]], k)
    confusability = confusability_from_confusion(counts)
    kappa, chance = _label_knowledge(base, difficulty, confusability, y)
    item_std = _fit_item_spread(hit, rows[ITEM].to_numpy(), kappa, chance, worker, spam_answers[y], bias_std)

    seconds = float(frame[SECONDS].median()) if SECONDS in frame and frame[SECONDS].notna().any() else None
    return CrowdProfile(
        n_classes=k,
        correct=correct,
        n_gold=n_gold,
        spammer_share=float(spam.mean()),
        spammer_probability=spam,
        spammer_answers=spam_answers,
        accuracy_alpha=alpha,
        accuracy_beta=beta,
        confusability=confusability,
        class_difficulty=difficulty,
        item_difficulty_std=item_std,
        class_bias_std=bias_std,
        labels_per_item=frame.groupby(ITEM).size().rename("labels"),
        seconds_median=seconds,
    )


def _label_knowledge(base: np.ndarray, difficulty: np.ndarray, confusability: np.ndarray,
                     y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``kappa`` and ``c`` (see :func:`loop.simulate._model._knowledge`) of the worker behind
    each label (n,), on the label's true class, from its logit skill ``base`` (n,)."""
    k = difficulty.size
    per_class = expit(base[:, None] + difficulty[None, :])  # (n, k): this worker on each class
    # c: how often this worker says y when the truth is another class z.
    chance = ((1 - per_class) * confusability[:, y].T).sum(axis=1) / (k - 1)
    hit = per_class[np.arange(y.size), y]
    return np.clip((hit - chance) / (1 - chance), 0.0, 1.0), chance


def _fit_class_difficulty(hit: np.ndarray, y: np.ndarray, base: np.ndarray, worker: np.ndarray,
                          spam_answers: np.ndarray, k: int, n_iter: int = 30) -> np.ndarray:
    """Logit offset ``d_y`` per class such that, on the labels of class ``y``, the expected
    number correct ``sum worker * expit(base + d_y) + (1 - worker) * spam_answers[y]``
    equals the observed one (Newton steps; 0 for classes never seen)."""
    d = np.zeros(k)
    seen = np.bincount(y, minlength=k) > 0
    for _ in range(n_iter):
        p = expit(base + d[y])
        gap = np.bincount(y, weights=hit - worker * p - (1 - worker) * spam_answers[y], minlength=k)
        slope = np.bincount(y, weights=worker * p * (1 - p), minlength=k)
        d = np.clip(d + np.where(slope > 1e-12, gap / np.maximum(slope, 1e-12), 0.0), -8.0, 8.0)
    return np.where(seen, d, 0.0)


def _fit_item_spread(hit: np.ndarray, item: np.ndarray, kappa: np.ndarray, chance: np.ndarray,
                     worker: np.ndarray, spam_hit: np.ndarray, bias_std: float, n_nodes: int = 16) -> float:
    """Spread ``sigma`` of item difficulty, by matching the over-dispersion of items' correct
    counts.

    Observed: ``sum_i [(c_i - sum_r p_r)^2 - sum_r p_r (1 - p_r)]``, the excess of the
    squared residuals over independent labels. Predicted for a given ``sigma``: the sum over
    items of the covariances of their labels' correctness,
    ``E_e[(sum_r p_r(e))^2 - sum_r p_r(e)^2] - [(sum_r p_r)^2 - sum_r p_r^2]`` with
    ``p_r(e) = c_r + (1 - c_r) expit(x_r - e)`` for a worker (``x_r`` such that the mean over
    ``e ~ N(0, sigma^2)`` and the worker's own class offsets is ``kappa_r``), computed by
    Gauss-Hermite quadrature; increasing in ``sigma``, solved by Brent's method.
    """
    codes, items = pd.factorize(item)
    to_items = sparse.csr_matrix((np.ones(codes.size), (codes, np.arange(codes.size))),
                                 shape=(items.size, codes.size))
    p = worker * (chance + (1 - chance) * kappa) + (1 - worker) * spam_hit
    observed = float(((to_items @ (hit - p)) ** 2).sum() - (p * (1 - p)).sum())
    if observed <= 0:
        return 0.0
    nodes, weights = np.polynomial.hermite_e.hermegauss(n_nodes)
    weights = weights / weights.sum()
    logit_kappa = logit(np.clip(kappa, 1e-9, 1 - 1e-9))
    blur = np.sqrt(1.0 + np.pi * bias_std**2 / 8.0)  # averages over the unknown class offsets

    def predicted(sigma: float) -> float:
        x = logit_kappa * np.sqrt(1.0 + np.pi * (sigma**2 + bias_std**2) / 8.0)
        knows = np.where(kappa[:, None] > 0, expit((x[:, None] - sigma * nodes[None, :]) / blur), 0.0)
        at = worker[:, None] * (chance[:, None] + (1 - chance[:, None]) * knows) + ((1 - worker) * spam_hit)[:, None]
        mean = at @ weights
        pairs = ((to_items @ at) ** 2 - to_items @ at**2) @ weights
        return float(pairs.sum() - ((to_items @ mean) ** 2 - to_items @ mean**2).sum())

    high = 6.0
    if predicted(high) < observed:
        return high
    return float(brentq(lambda sigma: predicted(sigma) - observed, 0.0, high, xtol=1e-3))


def _fit_bias_spread(hit: np.ndarray, y: np.ndarray, who: np.ndarray, logits: np.ndarray, k: int,
                     n_iter: int = 20) -> float:
    """Spread ``tau`` of per-(worker, class) logit offsets ``b_jy ~ N(0, tau^2)``.

    Each worker gets its own overall offset (Newton), so that its residuals ``R_jy`` (observed
    minus expected correct on class ``y``) sum to 0; then, with ``V_jy = sum p (1 - p)`` and
    ``S_j = sum_y V_jy``, the moments ``E sum_y R_jy^2 = S_j - sum_y V_jy^2 / S_j + tau^2 T_j``
    with ``T_j = sum_y V_jy^2 - 2 sum_y V_jy^3 / S_j + (sum_y V_jy^2)^2 / S_j^2`` give ``tau``.
    """
    if hit.size == 0:
        return 0.0
    code, _ = pd.factorize(who)
    m = int(code.max()) + 1
    offset = np.zeros(m)
    for _ in range(n_iter):
        p = expit(logits + offset[code])
        gap = np.bincount(code, weights=hit - p, minlength=m)
        slope = np.bincount(code, weights=p * (1 - p), minlength=m)
        offset = np.clip(offset + np.where(slope > 1e-9, gap / np.maximum(slope, 1e-9), 0.0), -10.0, 10.0)
    p = expit(logits + offset[code])
    cell = code * k + y
    resid = np.bincount(cell, weights=hit - p, minlength=m * k).reshape(m, k)
    var = np.bincount(cell, weights=p * (1 - p), minlength=m * k).reshape(m, k)
    total = var.sum(axis=1)
    ok = total > 1e-9
    resid, var, total = resid[ok], var[ok], total[ok]
    square = (var**2).sum(axis=1)
    excess = (resid**2).sum(axis=1) - (total - square / total)
    scale = square - 2 * (var**3).sum(axis=1) / total + square**2 / total**2
    denominator = float(scale.sum())
    return float(np.sqrt(max(float(excess.sum()) / denominator, 0.0))) if denominator > 1e-12 else 0.0


def _fit_skill_mixture(correct: np.ndarray, n: np.ndarray, chance: float,
                       max_iter: int) -> tuple[np.ndarray, float, float]:
    """EM for a mixture of spammers (accuracy ``chance``) and Beta-distributed workers.

    Returns the posterior spammer probability of each annotator and the workers' Beta.
    """
    spam = (correct / n <= chance).astype(np.float64) * 0.5
    share = 0.1
    log_spam = binom.logpmf(correct, n, chance)
    alpha = beta = 1.0
    for _ in range(max_iter):
        alpha, beta = _fit_beta_binomial(correct, n, 1.0 - spam)
        log_worker = betabinom.logpmf(correct, n, alpha, beta)
        share = float(np.clip(spam.mean(), 1e-6, 0.5))
        new = expit(np.log(share) + log_spam - np.log1p(-share) - log_worker)
        if np.abs(new - spam).max() < 1e-6:
            spam = new
            break
        spam = new
    alpha, beta = _fit_beta_binomial(correct, n, 1.0 - spam)
    return spam, alpha, beta


def _fit_beta_binomial(correct: np.ndarray, n: np.ndarray, weight: np.ndarray) -> tuple[float, float]:
    """Weighted moment fit of a Beta skill distribution to per-annotator ``correct / n``.

    ``Var(p_j) = mu (1 - mu) (rho + (1 - rho) / n_j)`` with ``rho = 1 / (alpha + beta + 1)``;
    solving the weighted average for ``rho`` removes the binomial part.
    """
    p = correct / n
    total_weight = weight.sum()
    if total_weight <= 1e-9:
        return 1.0, 1.0
    mu = float(np.clip((weight * p).sum() / total_weight, 1e-3, 1 - 1e-3))
    effective = total_weight - (weight**2).sum() / total_weight
    if effective <= 1e-9:
        return mu * 50.0, (1 - mu) * 50.0
    var = float((weight * (p - mu) ** 2).sum() / effective)
    h = float((weight / n).sum() / total_weight)
    ratio = var / (mu * (1 - mu))
    rho = float(np.clip((ratio - h) / (1 - h) if h < 1 else ratio, 1e-4, 0.99))
    return mu * (1.0 / rho - 1.0), (1 - mu) * (1.0 / rho - 1.0)


def crowd_like(profile: CrowdProfile, *, annotator_ids: Sequence[Hashable] | None = None,
               profiles: Mapping[Tier, TierProfile] = DEFAULT_PROFILES,
               rng: np.random.Generator | int) -> SimulatedCrowd:
    """A simulated twin for each annotator of a real crowd.

    Each twin is a spammer with the probability that its real annotator is one (unknown ids:
    ``spammer_share``); the workers' accuracies are drawn from the profile's Beta and handed
    out by rank of estimated skill. The draws keep the real spread; the ranks keep who did
    how much work, which in real crowds is far from independent of skill (spammers often
    label the most). Workers' errors follow the
    profile's confusability and class difficulty; spammers answer from ``spammer_answers``
    whatever the truth.

    The twins' accuracies are for an item of average difficulty: pass
    ``difficulty=draw_item_difficulty(items, profile.item_difficulty_std, rng=...)`` to
    :meth:`SimulatedCrowd.annotate` for their accuracy over items to match the real one
    (``E[expit(x + sigma z)] ~ expit(x / sqrt(1 + pi sigma^2 / 8))``).

    Each twin's tier is the one whose mean accuracy in ``profiles`` is nearest; seconds come
    from the profile when the source recorded them, else from the tier; cost per hour from
    the tier.

    Parameters
    ----------
    profile : CrowdProfile
    annotator_ids : sequence, optional
        Ids to build (default: the annotators with gold-checked labels); ids unknown to the
        profile get a random rank.
    profiles : mapping of Tier -> TierProfile
    rng : Generator or int

    Returns
    -------
    SimulatedCrowd
        Annotator ids are the real ids as strings.
    """
    generator = check_rng(rng)
    if not isinstance(profile, CrowdProfile):
        raise fail("profile", "a CrowdProfile (see fit_crowd_profile)", type(profile).__name__)
    ids = profile.skill.index if annotator_ids is None else pd.Index(list(annotator_ids))
    if ids.empty or ids.has_duplicates:
        raise fail("annotator_ids", "a non-empty sequence of unique ids", f"{len(ids)} ids, duplicated: {ids.has_duplicates}")
    m, k = len(ids), profile.n_classes
    skill = profile.skill.reindex(ids).to_numpy(dtype=np.float64, copy=True)
    spam = profile.spammer_probability.reindex(ids).to_numpy(dtype=np.float64, copy=True)
    unknown = np.isnan(skill)
    skill[unknown] = generator.random(int(unknown.sum()))
    spam[unknown] = profile.spammer_share
    # Each twin is a spammer with its real annotator's posterior probability of being one.
    is_spam = generator.random(m) < spam
    workers = np.flatnonzero(~is_spam)
    accuracy = np.full(m, 1.0 / k)
    accuracy[workers[np.argsort(skill[workers], kind="stable")]] = np.sort(
        generator.beta(profile.accuracy_alpha, profile.accuracy_beta, size=workers.size))
    confusions = _twin_confusions(profile, accuracy, is_spam, generator)

    tiers = [t for t in Tier if t in profiles]
    means = np.array([profiles[t].accuracy_mean for t in tiers])
    annotators = []
    for i, annotator_id in enumerate(ids):
        tier = tiers[int(np.abs(means - accuracy[i]).argmin())]
        tier_profile = profiles[tier]
        annotators.append(Annotator(
            str(annotator_id), tier, confusions[i],
            seconds_median=profile.seconds_median or tier_profile.seconds_median,
            seconds_sigma=tier_profile.seconds_sigma, cost_per_hour=tier_profile.cost_per_hour,
        ))
    return SimulatedCrowd(tuple(annotators))


def _twin_confusions(profile: CrowdProfile, accuracy: np.ndarray, is_spam: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """Confusion matrices (m, k, k) of twins with the given accuracy over items and classes."""
    m, k = accuracy.size, profile.n_classes
    # Each worker's own class offsets, centred so they move no one's overall accuracy; since
    # E[expit(x + tau z)] ~ expit(x / sqrt(1 + pi tau^2 / 8)), the rest is stretched to match.
    bias = profile.class_bias_std * rng.standard_normal((m, k))
    bias -= bias.mean(axis=1, keepdims=True)
    stretch = np.sqrt(1.0 + np.pi * profile.class_bias_std**2 * (1 - 1 / k) / 8.0)
    logits = (logit(np.clip(accuracy, 1e-9, 1 - 1e-9))[:, None] + profile.class_difficulty) * stretch + bias
    confusions = annotator_confusions(np.full(m, 0.5), profile.confusability, class_difficulty=logits)
    confusions[is_spam] = profile.spammer_answers
    # From accuracy over items to accuracy on an item of average difficulty, likewise.
    stretch = np.sqrt(1.0 + np.pi * profile.item_difficulty_std**2 / 8.0)
    kappa, chance = _knowledge(confusions)
    hit = _shift_knowledge(kappa, chance, scale=stretch).ravel()
    return _with_hit(confusions.reshape(m * k, k), np.tile(np.arange(k), m), hit).reshape(m, k, k)
