"""Simulated annotators that err like real ones.

A simulated annotator is a confusion matrix ``C`` of shape ``(k, k)``: ``C[y, l]`` is the
probability of answering ``l`` when the truth is ``y``. Its diagonal is the annotator's
accuracy ``a``; its errors go to the classes that are really confusable with ``y``::

    C[y] = a * e_y + (1 - a) * (s * Q[y] + (1 - s) * U[y])

where ``Q`` is a *confusability* matrix (row-stochastic, zero diagonal: where errors on
class ``y`` land, learned from a model's out-of-fold probabilities or from a real crowd),
``U`` spreads errors uniformly over the other classes and ``s`` is the share of errors that
follow ``Q``. Accuracies are drawn per annotator from a Beta distribution whose mean and
spread depend on the skill :class:`Tier`; so are the seconds per item (log-normal) and the
cost per hour. A :class:`Guideline` version moves a share of the confusion on named class
pairs back to the diagonal; an item difficulty (:func:`draw_item_difficulty`) makes some
items hard for everyone.

Typical use, on 10 classes with a model's out-of-fold probabilities::

    Q = confusability_from_probs(oof_probs, labels)
    crowd = make_crowd({Tier.NOVICE: 20, Tier.EXPERT: 3}, 10, confusability=Q, rng=0)
    truth = pd.Series(labels)                     # true class by item_id
    noisy = crowd.ask(truth, tier=Tier.NOVICE, labels_per_item=3, rng=1)
    reviewed = crowd.ask(truth[doubtful], tier=Tier.EXPERT, exclude=noisy, rng=2)

The answers are the long annotations frame (``item_id, annotator_id, label``) plus
``seconds`` and ``cost``.

To mimic a real crowd, :func:`fit_crowd_profile` measures it against gold (spammers, skill
distribution, where errors go, class and item difficulty) and :func:`crowd_like` builds a
simulated twin for each real annotator. Everything random takes an ``rng``.

Modules: ``_model`` (tiers, where errors go, guidelines, difficulty), ``_crowd``
(annotators, crowds, assignment, answers), ``_profile`` (fitting a real crowd), ``_variants``
(experiment arms: guideline, examples shown, suggestion shown, double-blind rule).
"""

from ._crowd import Annotator, SimulatedCrowd, make_crowd
from ._model import (
    DEFAULT_PROFILES,
    Guideline,
    Tier,
    TierProfile,
    annotator_confusions,
    confusability_from_confusion,
    confusability_from_probs,
    draw_adoption_delays,
    draw_item_difficulty,
    uniform_confusability,
)
from ._profile import CrowdProfile, crowd_like, fit_crowd_profile
from ._variants import Variant, annotate_variant, examples_effect

__all__ = [
    "DEFAULT_PROFILES",
    "Annotator",
    "CrowdProfile",
    "Guideline",
    "SimulatedCrowd",
    "Tier",
    "TierProfile",
    "annotator_confusions",
    "confusability_from_confusion",
    "confusability_from_probs",
    "crowd_like",
    "draw_adoption_delays",
    "draw_item_difficulty",
    "fit_crowd_profile",
    "make_crowd",
    "uniform_confusability",
    "Variant",
    "annotate_variant",
    "examples_effect",
]
