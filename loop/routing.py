"""Routing: decide, item by item, whether a person must look, and say why.

A routing policy is a function, :func:`route`, of a scores frame and a
:class:`RoutingThresholds`. The same call decides in the simulator, the server and the
tuner. :func:`score_items` builds the scores frame from (calibrated) class probabilities and,
optionally, label-issue scores.

The decision, first rule that applies wins:

1. ``label_issue_score >= double_blind_issue_score`` -> ``double_blind``: the current label
   is probably wrong, so two people relabel the item without seeing it or each other.
2. ``margin < expert_margin`` -> ``expert``: the model is torn between two classes; this is
   what guidelines and experts are for.
3. predicted class in ``always_human`` -> ``review``: a person always checks these classes.
4. ``1 - weight * (1 - confidence) >= auto_accept_confidence`` -> ``auto_accept``, where
   ``weight`` is the predicted class's risk weight (default 1).
5. otherwise -> ``review``.

Only rule 4 sends items away from people, and only its threshold moves with
``auto_accept_confidence``, so raising that threshold never sends fewer items to people.
Confidence is trusted as a probability here: calibrate the model first
(:class:`loop.calibration.TemperatureScaling`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import ArrayLike

from ._validation import check_array, check_pred_probs, check_real, fail
from .columns import (
    CONFIDENCE,
    ENTROPY,
    ITEM,
    LABEL,
    LABEL_ISSUE_SCORE,
    MARGIN,
    NO_LABEL,
    PREDICTED,
    PRIORITY,
    REASON,
    ROUTE,
    RUNNER_UP,
    SCORE_COLUMNS,
)
from .signals import _entropy, _top_two

__all__ = ["Route", "RoutingThresholds", "route", "score_items"]

ROUTE_COLUMNS = (ITEM, ROUTE, REASON, PRIORITY)
_REQUIRED = (ITEM, PREDICTED, RUNNER_UP, CONFIDENCE, MARGIN)
# A signal shown in a reason is rounded down to at least this many decimals; see _number.
_CONFIDENCE_DECIMALS = 3
_SCORE_DECIMALS = 2
# Below this many items the reasons are put together in Python: Arrow and pandas' hash tables
# cost more to start than they save.
_FEW = 256


class Route(str, Enum):
    """Where an item goes. The values are the strings stored in the ``route`` column."""

    AUTO_ACCEPT = "auto_accept"
    REVIEW = "review"
    EXPERT = "expert"
    DOUBLE_BLIND = "double_blind"

    def __str__(self) -> str:
        return self.value

    @property
    def needs_person(self) -> bool:
        """Whether a person looks at items on this route (every route but ``auto_accept``)."""
        return self is not Route.AUTO_ACCEPT


class _FrozenMapping(Mapping):
    """A read-only, hashable, picklable mapping (``MappingProxyType`` cannot be pickled)."""

    def __init__(self, items: Mapping[Any, Any]) -> None:
        self._data = dict(items)

    def __getitem__(self, key: Any) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __repr__(self) -> str:
        return repr(self._data)


@dataclass(frozen=True)
class RoutingThresholds:
    """The cut-offs of a routing policy (see :mod:`loop.routing` for the decision order).

    Classes are matched by their text form (``str(c)``), so a config read from YAML or JSON,
    where mapping keys are strings, works with integer class codes.

    Parameters
    ----------
    auto_accept_confidence : float in (0, 1], default=0.98
        Risk-weighted confidence at or above which an item is auto-accepted.
    expert_margin : float in [0, 1], default=0.10
        Items whose margin (gap between the two most probable classes) is below this go to
        an expert. 0 turns the rule off.
    double_blind_issue_score : float in [0, 1], default=0.8
        Items whose label-issue score (higher = the current label is more likely wrong) is at
        or above this are relabelled double-blind. Items without a score are never sent there.
    class_risk_weights : mapping of class -> float >= 0, default={}
        Multiplies the risk ``1 - confidence`` of items predicted as that class; classes not
        listed weigh 1. A weight of 3 means "an error here costs three times as much".
    always_human : iterable of classes, default=frozenset()
        Items predicted as these classes always go to a person (``review``, or ``expert``
        or ``double_blind`` when an earlier rule applies).
    guideline_refs : mapping of class pair -> str, default={}
        A guideline reference (e.g. ``"guideline v3 §2"``) quoted in the reason of any item
        sent to a person whose two most probable classes are that pair. Keys are two-class
        ``frozenset``s or tuples; :meth:`from_dict` also takes a list of
        ``{"classes": [a, b], "ref": "..."}`` records.
    max_auto_accept_error : float in (0, 1) or None, default=None
        A bound on the error rate of auto-accepted labels (e.g. 0.02). :func:`route` does not
        read it: a program that audits its labels does, and raises the auto-accept cut-off
        when the audited upper bound of the auto-accepted labels' error exceeds it (see
        :mod:`experiments.program`). None: no bound.

    Examples
    --------
    >>> t = RoutingThresholds(auto_accept_confidence=0.95, class_risk_weights={"cat": 2},
    ...                       guideline_refs={("cat", "dog"): "guideline v3 §2"})
    >>> RoutingThresholds.from_dict(t.to_dict()) == t
    True
    """

    auto_accept_confidence: float = 0.98
    expert_margin: float = 0.10
    double_blind_issue_score: float = 0.8
    class_risk_weights: Mapping[Hashable, float] = field(default_factory=dict)
    always_human: frozenset[Hashable] = frozenset()
    guideline_refs: Mapping[frozenset[Hashable], str] = field(default_factory=dict)
    max_auto_accept_error: float | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # the one way to normalise fields of a frozen dataclass
        set_(self, "auto_accept_confidence", check_real(
            self.auto_accept_confidence, "auto_accept_confidence", low=0, high=1, low_open=True))
        set_(self, "expert_margin", check_real(self.expert_margin, "expert_margin", low=0, high=1))
        set_(self, "double_blind_issue_score", check_real(
            self.double_blind_issue_score, "double_blind_issue_score", low=0, high=1))
        set_(self, "class_risk_weights", _check_weights(self.class_risk_weights))
        set_(self, "always_human", _check_classes(self.always_human))
        set_(self, "guideline_refs", _check_guideline_refs(self.guideline_refs))
        if self.max_auto_accept_error is not None:
            set_(self, "max_auto_accept_error", check_real(
                self.max_auto_accept_error, "max_auto_accept_error", low=0, high=1, low_open=True, high_open=True))

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, f.name) for f in dataclasses.fields(self)))

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], *, base: RoutingThresholds | None = None) -> RoutingThresholds:
        """Build thresholds from a plain mapping (a YAML file, a Serve ``user_config``).

        Parameters
        ----------
        config : mapping
            Keys among the field names; missing keys take their values from ``base``.
        base : RoutingThresholds, optional
            The values ``config`` overrides (a program's own defaults); default the field
            defaults.

        Returns
        -------
        RoutingThresholds

        Raises
        ------
        SchemaError
            On an unknown key (the message lists the valid ones) or an invalid value.

        Examples
        --------
        >>> RoutingThresholds.from_dict({"expert_margin": 0.2}).expert_margin
        0.2
        >>> t = RoutingThresholds.from_dict({"expert_margin": 0.2}, base=RoutingThresholds(auto_accept_confidence=0.9))
        >>> t.auto_accept_confidence, t.expert_margin
        (0.9, 0.2)
        """
        if not isinstance(config, Mapping):
            raise fail("config", "a mapping of threshold names to values", f"a {type(config).__name__}")
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(map(str, set(config) - set(valid)))
        if unknown:
            raise fail("config", f"a mapping with keys among {valid}", f"unknown keys {unknown}")
        if base is not None and not isinstance(base, RoutingThresholds):
            raise fail("base", "a RoutingThresholds or None", f"a {type(base).__name__}")
        # replace() runs __post_init__, so the overrides are checked and normalised as in cls(...).
        return cls(**config) if base is None else dataclasses.replace(base, **config)

    def to_dict(self) -> dict[str, Any]:
        """The thresholds as plain YAML/JSON-ready values; :meth:`from_dict` reads them back.

        Returns
        -------
        dict
            ``always_human`` as a sorted list, ``guideline_refs`` as a list of
            ``{"classes": [a, b], "ref": ...}`` records.

        Examples
        --------
        >>> RoutingThresholds(always_human={"tumour"}).to_dict()["always_human"]
        ['tumour']
        """
        return {
            "auto_accept_confidence": self.auto_accept_confidence,
            "expert_margin": self.expert_margin,
            "double_blind_issue_score": self.double_blind_issue_score,
            "class_risk_weights": dict(self.class_risk_weights),
            "always_human": sorted(self.always_human, key=str),
            "guideline_refs": [
                {"classes": sorted(pair, key=str), "ref": ref}
                for pair, ref in sorted(self.guideline_refs.items(),
                                        key=lambda kv: sorted(map(str, kv[0])))
            ],
            "max_auto_accept_error": self.max_auto_accept_error,
        }


def score_items(pred_probs: ArrayLike, *, item_ids: ArrayLike | None = None,
                label_issue_scores: ArrayLike | None = None, labels: ArrayLike | None = None,
                classes: Sequence[Hashable] | None = None) -> pd.DataFrame:
    """Build the scores frame :func:`route` reads, from class probabilities.

    The one scoring step of labelloop: the Serve app, the in-process scorer and the bulk
    scorer (``labelloop score``) all call it, so an item gets the same signals and label-issue
    score whichever way it was scored.

    Parameters
    ----------
    pred_probs : array-like of shape (n_items, n_classes)
        Calibrated class probabilities; rows sum to 1.
    item_ids : array-like of shape (n_items,), optional
        Unique item identifiers; default ``0 .. n_items - 1``.
    label_issue_scores : array-like of shape (n_items,), optional
        Scores in [0, 1], higher = the current label is more likely wrong (for example
        ``1 - loop.issues.label_quality_scores(...)``); NaN where an item has no label yet.
        Default: all NaN.
    labels : array-like of int, shape (n_items,), optional
        Each item's current label as a class code ``0 .. n_classes - 1``, ``NO_LABEL`` (-1,
        :data:`loop.columns.NO_LABEL`) where it has none: the label-issue score of a labelled
        item is then one minus its self-confidence, ``1 - loop.issues.label_quality_scores``,
        and NaN elsewhere. Not together with ``label_issue_scores``.
    classes : sequence of length n_classes, optional
        Class names in column order; default the column indices ``0 .. n_classes - 1``.

    Returns
    -------
    DataFrame of n_items rows
        Columns ``item_id, predicted, runner_up, confidence, margin, entropy,
        label_issue_score``: the two most probable classes, the top probability, the gap
        between the top two, the normalised entropy (see :mod:`loop.signals`) and the
        label-issue score.

    Examples
    --------
    >>> scores = score_items([[0.05, 0.9, 0.05], [0.45, 0.1, 0.45]], classes=["a", "b", "c"])
    >>> scores[["predicted", "runner_up", "confidence", "margin"]].values.tolist()
    [['b', 'a', 0.9, 0.85], ['a', 'c', 0.45, 0.0]]
    >>> score_items([[0.05, 0.9, 0.05], [0.45, 0.1, 0.45]], labels=[0, -1])["label_issue_score"].tolist()
    [0.95, nan]
    """
    probs = check_pred_probs(pred_probs)
    n_items, n_classes = probs.shape
    names = _class_index(classes, n_classes)
    ids = _item_ids(item_ids, n_items)
    if labels is not None:
        if label_issue_scores is not None:
            raise fail("labels", "None when 'label_issue_scores' are given (one or the other)", "both")
        label_issue_scores = _self_confidence_issues(probs, labels)
    if label_issue_scores is None:
        issues = np.full(n_items, np.nan)
    else:
        issues = check_array(label_issue_scores, "label_issue_scores", ndim=1)
        _check_scores_range(issues, "label_issue_scores", n_items=n_items, allow_nan=True)
    predicted, runner_up, gap = _top_two(probs)
    return pd.DataFrame({
        ITEM: ids,
        PREDICTED: names.take(predicted),
        RUNNER_UP: names.take(runner_up),
        CONFIDENCE: probs[np.arange(n_items), predicted],
        MARGIN: gap,
        ENTROPY: _entropy(probs, normalize=True),
        LABEL_ISSUE_SCORE: issues,
    }, columns=list(SCORE_COLUMNS))


def _self_confidence_issues(probs: np.ndarray, labels: ArrayLike) -> np.ndarray:
    """1 - self-confidence of the labelled items, NaN where ``labels`` is NO_LABEL."""
    from .issues import label_quality_scores  # cleanlab loads only when labels are scored

    codes = check_array(labels, "labels", ndim=1, dtype=np.int64)
    if codes.shape[0] != probs.shape[0]:
        raise fail("labels", f"one class code per item ({probs.shape[0]})", f"{codes.shape[0]} codes")
    has = codes != NO_LABEL
    issues = np.full(codes.shape[0], np.nan)
    if has.any():
        issues[has] = 1.0 - label_quality_scores(codes[has], probs[has])
    return issues


def route(scores: pd.DataFrame, thresholds: RoutingThresholds) -> pd.DataFrame:
    """Route every item to exactly one of the :class:`Route` values, with a reason.

    The rules, in order (the first that applies wins):

    1. ``label_issue_score >= double_blind_issue_score`` -> ``double_blind``
    2. ``margin < expert_margin`` -> ``expert``
    3. ``predicted`` in ``always_human`` -> ``review``
    4. ``1 - weight * (1 - confidence) >= auto_accept_confidence`` -> ``auto_accept``
    5. otherwise -> ``review``

    Parameters
    ----------
    scores : DataFrame of n_items rows
        Columns ``item_id, predicted, runner_up, confidence, margin`` (no missing values,
        unique ``item_id``) and optionally ``label_issue_score`` (NaN = no score), as built
        by :func:`score_items`, and ``label``, the item's current label in the form of
        ``predicted`` (NaN or None = none), which the reasons then name. Other columns are
        ignored.
    thresholds : RoutingThresholds
        The policy's cut-offs.

    Returns
    -------
    DataFrame of n_items rows, in the order of ``scores``
        Columns ``item_id, route, reason, priority``. ``route`` holds the
        :class:`Route` string values. ``reason`` is a sentence with the signal values, the
        threshold crossed, the class pair in doubt and the guideline reference when there
        is one, e.g. ``"margin 0.04 between 3 and 5 < expert cut-off 0.10 (guideline v3 §2)"``,
        and the current label when ``scores`` has one (``"...; labelled 5"``; an auto-accept
        that changes it says ``"replaces label 5 with 3"``).
        ``priority`` (higher = look sooner) is the larger of the risk
        ``weight * (1 - confidence)`` and the label-issue score.

    Raises
    ------
    SchemaError
        Missing columns, missing values, values outside [0, 1], duplicate item ids, or
        ``thresholds`` not a :class:`RoutingThresholds`.

    Examples
    --------
    >>> scores = score_items([[0.995, 0.005], [0.52, 0.48], [0.9, 0.1]], classes=["cat", "dog"])
    >>> decisions = route(scores, RoutingThresholds())
    >>> decisions["route"].tolist()
    ['auto_accept', 'expert', 'review']
    >>> decisions["reason"][1]
    'margin 0.04 between cat and dog < expert cut-off 0.10'
    >>> for reason in route(scores.assign(label=["dog", "dog", None]), RoutingThresholds())["reason"]:
    ...     print(reason)
    confidence 0.995 >= auto-accept 0.98; replaces label dog with cat
    margin 0.04 between cat and dog < expert cut-off 0.10; labelled dog
    confidence 0.900 < auto-accept 0.98; cat over dog by margin 0.80
    """
    if not isinstance(thresholds, RoutingThresholds):
        raise fail("thresholds", "a RoutingThresholds (use RoutingThresholds.from_dict for a mapping)",
                   f"a {type(thresholds).__name__}")
    signals = _Signals.read(scores, thresholds)
    rules = _decide(signals, thresholds)
    return pd.DataFrame({
        ITEM: signals.item_ids,
        ROUTE: pd.Series(pa.array(_RULE_ROUTES).take(pa.array(rules)).to_pandas(), dtype="str"),
        REASON: pd.Series(_reasons(signals, rules, thresholds).to_pandas(), dtype="str"),
        PRIORITY: np.maximum(signals.risk, np.nan_to_num(signals.issue, nan=0.0)),
    }, columns=list(ROUTE_COLUMNS))


@dataclass(frozen=True)
class _Signals:
    """The scores frame as arrays, with each item's class weight and guideline looked up."""

    item_ids: np.ndarray
    classes: np.ndarray  # the distinct class names as text (object array of str)
    predicted_code: np.ndarray  # int, into classes
    runner_up_code: np.ndarray
    confidence: np.ndarray
    margin: np.ndarray
    issue: np.ndarray  # NaN = no label-issue score
    class_weights: np.ndarray  # one per class
    weight: np.ndarray  # one per item: its predicted class's
    always_human: np.ndarray  # bool
    guideline_table: np.ndarray  # (class, class) -> reference, "" where the pair has none
    label_code: np.ndarray  # int, into label_texts; -1 where an item has no current label
    label_texts: list[str]  # the current labels as text, in the form of the class names

    @property
    def risk(self) -> np.ndarray:
        return self.weight * (1.0 - self.confidence)

    @property
    def weighted_confidence(self) -> np.ndarray:
        # Where the weight is 1, use the confidence itself: 1 - (1 - c) can miss c by an ulp
        # and flip a decision that sits exactly on the threshold.
        return np.where(self.weight == 1.0, self.confidence, 1.0 - self.risk)

    @classmethod
    def read(cls, scores: Any, thresholds: RoutingThresholds) -> _Signals:
        frame = _check_scores_frame(scores)
        n = len(frame)
        # The class names are few: everything looked up per class (risk weight, always-human,
        # guideline reference) is looked up once per distinct name and spread by code. That
        # keeps a one-item serving request at microseconds, where pandas' string operations
        # cost milliseconds a call, and stays vectorised for a million items.
        (code_p, seen_p), (code_r, seen_r) = pd.factorize(frame[PREDICTED]), pd.factorize(frame[RUNNER_UP])
        # Names are compared as text (3 and "3" are one class): merge what prints the same.
        merged, text = pd.factorize(np.array([str(c) for c in [*seen_p.tolist(), *seen_r.tolist()]], dtype=object))
        code_p, code_r, text = merged[code_p], merged[len(seen_p):][code_r], np.asarray(text, dtype=object)
        confidence = check_array(frame[CONFIDENCE], f"scores.{CONFIDENCE}", ndim=1)
        margin = check_array(frame[MARGIN], f"scores.{MARGIN}", ndim=1)
        _check_scores_range(confidence, f"scores.{CONFIDENCE}")
        _check_scores_range(margin, f"scores.{MARGIN}")
        if LABEL_ISSUE_SCORE in frame.columns:
            issue = check_array(frame[LABEL_ISSUE_SCORE], f"scores.{LABEL_ISSUE_SCORE}", ndim=1)
            _check_scores_range(issue, f"scores.{LABEL_ISSUE_SCORE}", allow_nan=True)
        else:
            issue = np.full(n, np.nan)
        weights = {str(c): float(w) for c, w in thresholds.class_risk_weights.items()}
        human = {str(c) for c in thresholds.always_human}
        class_weights = np.array([weights.get(t, 1.0) for t in text], dtype=np.float64)
        label_code, label_texts = (_label_codes(frame[LABEL]) if LABEL in frame.columns
                                   else (np.full(n, -1, dtype=np.int64), []))
        return cls(
            item_ids=frame[ITEM].to_numpy(), classes=text, predicted_code=code_p, runner_up_code=code_r,
            confidence=confidence, margin=margin, issue=issue, class_weights=class_weights,
            weight=class_weights[code_p], always_human=np.array([t in human for t in text], dtype=bool)[code_p],
            guideline_table=_guideline_table(text, thresholds), label_code=label_code, label_texts=label_texts,
        )


# The rule that decided each item (see the module docstring), in the order they are tried, and
# the route each sends to: _decide returns the rule's code, so that the reasons need not compare
# strings per item.
_DOUBLE_BLIND, _EXPERT, _HUMAN, _AUTO, _REVIEW = range(5)
_RULE_ROUTES = (Route.DOUBLE_BLIND.value, Route.EXPERT.value, Route.REVIEW.value, Route.AUTO_ACCEPT.value,
                Route.REVIEW.value)
# Two more templates of reasons: auto-accept and review where the class has a risk weight.
_AUTO_WEIGHTED, _REVIEW_WEIGHTED = 5, 6


def _decide(s: _Signals, t: RoutingThresholds) -> np.ndarray:
    """The code of the rule that decides each item; ``np.select`` takes the first condition that holds."""
    with np.errstate(invalid="ignore"):  # NaN issue scores compare False: no double-blind
        double_blind = s.issue >= t.double_blind_issue_score
    conditions = [
        double_blind,
        s.margin < t.expert_margin,
        s.always_human,
        s.weighted_confidence >= t.auto_accept_confidence,
    ]
    return np.select(conditions, [_DOUBLE_BLIND, _EXPERT, _HUMAN, _AUTO], default=_REVIEW).astype(np.int8)


def _reasons(s: _Signals, rules: np.ndarray, t: RoutingThresholds) -> pa.Array:
    """One sentence per item, in item order, as an Arrow string array.

    Every sentence fills one of a few templates (:func:`_templates`). A template is literal text
    and fields, and every field takes few distinct values (a class name, a label, a number
    rounded down to a few decimals), so each field is a small table of texts and a code per
    item: the texts are formatted once per distinct value, and Arrow joins the pieces of all the
    items of a template in one call. A Python loop per item cost 2 microseconds a sentence,
    half of ``labelloop score``'s work besides the model.
    """
    kinds = np.where((rules >= _AUTO) & (s.weight != 1.0), rules + (_AUTO_WEIGHTED - _AUTO), rules)
    # The items grouped by template (a stable sort of small integers is a radix sort).
    order = np.argsort(kinds, kind="stable")
    ends = np.cumsum(np.bincount(kinds, minlength=_REVIEW_WEIGHTED + 1))
    parts = [_join(pieces, rows) for pieces, rows in zip(_templates(s, t), np.split(order, ends[:-1])) if rows.size]
    if not parts:
        return pa.array([], type=pa.string())
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    return pa.concat_arrays(parts).take(pa.array(back))


@dataclass(frozen=True)
class _Field:
    """A field of a reason: item i's text is ``text(keys[i])``, an int key (a code, a pair of
    codes, a rounded number) formatted once per distinct key among the items of a template."""

    keys: np.ndarray
    text: Callable[[int], str]


def _templates(s: _Signals, t: RoutingThresholds) -> list[list[str | _Field]]:
    """The sentences' templates, in the order of the template codes (``_DOUBLE_BLIND`` ...)."""
    cd = max(_CONFIDENCE_DECIMALS, _decimals(t.auto_accept_confidence))
    md = max(_SCORE_DECIMALS, _decimals(t.expert_margin))
    idd = max(_SCORE_DECIMALS, _decimals(t.double_blind_issue_score))
    classes, ref = s.classes.tolist(), s.guideline_table.tolist()
    k = len(classes)
    # Fields of a class pair are one field, not three: fewer pieces for Arrow to join.
    pair = s.predicted_code.astype(np.int64) * k + s.runner_up_code
    doubt = [_Field(pair, lambda key: "{} over {} by margin ".format(*(classes[c] for c in divmod(key, k)))),
             _number(s.margin, _SCORE_DECIMALS), _Field(pair, lambda key: _ref(ref[key // k][key % k]))]
    expert_cut = _threshold_text(t.expert_margin)
    expert = _Field(pair, lambda key: f" between {classes[key // k]} and {classes[key % k]} < expert cut-off "
                                      f"{expert_cut}{_ref(ref[key // k][key % k])}")
    plain_confidence = _number(s.confidence, _CONFIDENCE_DECIMALS)
    # A label code of -1 (none) reads the last entry, "".
    labels = [*s.label_texts, ""]
    label = s.label_code % len(labels)
    labelled = _Field(label, lambda key: f"; labelled {labels[key]}" if labels[key] else "")
    labelled_comma = _Field(label, lambda key: f"labelled {labels[key]}, " if labels[key] else "")

    def changes(key: int) -> str:  # an auto-accept that changes the current label says so
        x, c = labels[key // k], classes[key % k]
        return f"; replaces label {x} with {c}" if x and x != c else ""

    label_predicted = _Field(label * k + s.predicted_code, changes)
    weights = s.class_weights.tolist()
    weighted_clause = ["risk-weighted confidence ", _number(s.weighted_confidence, cd), " (confidence ",
                       plain_confidence,
                       _Field(s.predicted_code, lambda key: f", class {classes[key]} weight {weights[key]:g})")]
    auto = f" >= auto-accept {_threshold_text(t.auto_accept_confidence)}"
    below = f" < auto-accept {_threshold_text(t.auto_accept_confidence)}; "
    confidence = ["confidence ", _number(s.confidence, cd)]
    return [
        ["label-issue score ", _number(np.nan_to_num(s.issue), idd),
         f" >= double-blind cut-off {_threshold_text(t.double_blind_issue_score)}; ", labelled_comma,
         "model prefers ", *doubt],
        ["margin ", _number(s.margin, md), expert, labelled],
        ["class ", _Field(s.predicted_code, classes.__getitem__), " always goes to a person; confidence ",
         plain_confidence, ", ", *doubt, labelled],
        [*confidence, auto, label_predicted],
        [*confidence, below, *doubt, labelled],
        [*weighted_clause, auto, label_predicted],
        [*weighted_clause, below, *doubt, labelled],
    ]


def _ref(guideline: str) -> str:
    return f" ({guideline})" if guideline else ""


def _number(values: np.ndarray, digits: int) -> _Field:
    """Values rounded *down* to ``digits`` decimals and printed with them, as a field.

    Rounding down keeps the printed comparison true: with ``digits`` at least the threshold's
    decimals, ``v < t`` prints below ``t`` and ``v >= t`` prints at or above it (0.9799 would
    otherwise print as "0.980 < auto-accept 0.98"). The 1e-9 absorbs float error in v * 10**d.
    A value in [0, 1] so rounded takes at most 10**digits + 1 values: each is formatted once.
    """
    scale = 10.0 ** digits
    steps = np.floor(np.asarray(values, dtype=np.float64) * scale + 1e-9).astype(np.int64)
    return _Field(steps, lambda step: f"{step / scale:.{digits}f}")


def _join(pieces: list[str | _Field], rows: np.ndarray) -> pa.Array:
    """The sentences of ``rows``: the pieces (literal text or fields) joined, in one Arrow call;
    for a few items (a serving request) in Python, which starts faster."""
    if rows.size < _FEW:
        texts = [[piece] * rows.size if isinstance(piece, str) else list(map(piece.text, piece.keys[rows].tolist()))
                 for piece in pieces]
        return pa.array(["".join(parts) for parts in zip(*texts)], type=pa.string())
    columns = []
    for piece in pieces:
        if isinstance(piece, str):
            columns.append(piece)
        else:
            codes, keys = pd.factorize(piece.keys[rows])
            columns.append(pa.array([piece.text(key) for key in keys.tolist()], type=pa.string()).take(pa.array(codes)))
    return pc.binary_join_element_wise(*columns, "")


def _label_codes(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Current labels as the reasons print them, in the form of ``predicted``: a code per item
    (-1 where none) into a list of texts. Integral floats (an integer column with NaN) print as
    integers; each distinct label is formatted once (a categorical column's categories are)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes, distinct = column.cat.codes.to_numpy(dtype=np.int64), column.cat.categories
    else:
        codes, distinct = pd.factorize(column, use_na_sentinel=True)
    texts = []
    for v in distinct.tolist():
        if v is pd.NA or (isinstance(v, (float, np.floating)) and np.isnan(v)):
            texts.append("")  # pd.NA is not a sentinel of factorize on an object array
        elif isinstance(v, (float, np.floating)) and float(v).is_integer():
            texts.append(str(int(v)))
        else:
            texts.append(str(v))
    return codes, texts


def _guideline_table(text: np.ndarray, t: RoutingThresholds) -> np.ndarray:
    """The guideline reference of each pair of the distinct class names (``text``), "" where none."""
    table = np.full((len(text), len(text)), "", dtype=object)
    if t.guideline_refs:
        where = {name: i for i, name in enumerate(text)}
        for pair, ref in t.guideline_refs.items():
            a, b = (where.get(str(c)) for c in pair)
            if a is not None and b is not None:
                table[a, b] = table[b, a] = ref  # (3, 5) and (5, 3) find the same reference
    return table


def _decimals(threshold: float) -> int:
    """The fewest decimals (at least 2) that write ``threshold`` exactly, up to 6."""
    for digits in range(2, 7):
        if abs(round(threshold, digits) - threshold) < 1e-12:
            return digits
    return 6


def _threshold_text(threshold: float) -> str:
    return f"{threshold:.{_decimals(threshold)}f}"


def _check_scores_frame(scores: Any) -> pd.DataFrame:
    if not isinstance(scores, pd.DataFrame):
        raise fail("scores", f"a DataFrame with columns {list(_REQUIRED)}", f"a {type(scores).__name__}")
    missing = [c for c in _REQUIRED if c not in scores.columns]
    if missing:
        raise fail("scores", f"a DataFrame with columns {list(_REQUIRED)}",
                   f"columns {list(map(str, scores.columns))} (missing {missing})")
    for column in (ITEM, PREDICTED, RUNNER_UP):
        nulls = int(scores[column].isna().sum())
        if nulls:
            raise fail(f"scores.{column}", "a column without missing values", f"{nulls} missing values")
    duplicated = scores[ITEM].duplicated()
    if duplicated.any():
        raise fail(f"scores.{ITEM}", "unique item ids (one route per item)",
                   f"{int(duplicated.sum())} duplicates, the first {scores.loc[duplicated, ITEM].tolist()[0]!r}")
    return scores.reset_index(drop=True)


def _check_scores_range(values: np.ndarray, name: str, *, n_items: int | None = None,
                        allow_nan: bool = False) -> None:
    if n_items is not None and values.shape[0] != n_items:
        raise fail(name, f"one score per item ({n_items} scores)", f"{values.shape[0]} scores")
    present = values[~np.isnan(values)] if allow_nan else values
    if not np.isfinite(present).all():
        what = "inf" if allow_nan else "NaN or inf"
        raise fail(name, "finite scores" + (" or NaN" if allow_nan else ""),
                   f"{int((~np.isfinite(present)).sum())} {what} values")
    if present.size and (present.min() < 0 or present.max() > 1):
        raise fail(name, "scores in [0, 1]", f"values from {present.min():.4g} to {present.max():.4g}")


def _class_index(classes: Sequence[Hashable] | None, n_classes: int) -> pd.Index:
    if classes is None:
        return pd.RangeIndex(n_classes)
    if isinstance(classes, str) or not isinstance(classes, Iterable):
        raise fail("classes", f"a sequence of {n_classes} class names", repr(classes)[:60])
    names = pd.Index(list(classes))
    if len(names) != n_classes or not names.is_unique:
        raise fail("classes", f"{n_classes} distinct class names, one per column of pred_probs",
                   f"{len(names)} names ({names.nunique()} distinct)")
    return names


def _item_ids(item_ids: ArrayLike | None, n_items: int) -> np.ndarray:
    if item_ids is None:
        return np.arange(n_items)
    ids = np.asarray(item_ids)
    # Object ids stay object: pandas would infer Arrow strings, converting every id there and
    # back (~2x the checks' own cost, four times a round over every arrived item in a program).
    ids = pd.Series(ids, dtype=object if ids.dtype == object else None)
    if ids.ndim != 1 or len(ids) != n_items:
        raise fail("item_ids", f"a 1-D array of {n_items} ids, one per row of pred_probs",
                   f"shape {np.shape(item_ids)}")
    if ids.isna().any():
        raise fail("item_ids", "ids without missing values", f"{int(ids.isna().sum())} missing values")
    if ids.duplicated().any():
        raise fail("item_ids", "unique ids", f"{int(ids.duplicated().sum())} duplicates")
    return ids.to_numpy()


def _check_weights(value: Any) -> _FrozenMapping:
    if not isinstance(value, Mapping):
        raise fail("class_risk_weights", "a mapping of class -> weight >= 0", f"a {type(value).__name__}")
    for cls, weight in value.items():
        check_real(weight, f"class_risk_weights[{cls!r}]", low=0)
    _check_distinct_text(value.keys(), "class_risk_weights")
    return _FrozenMapping({cls: float(weight) for cls, weight in value.items()})


def _check_classes(value: Any) -> frozenset[Hashable]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise fail("always_human", "a collection of classes (a list or a set)", repr(value)[:60])
    classes = list(value)
    _check_distinct_text(classes, "always_human")
    return frozenset(classes)


def _check_guideline_refs(value: Any) -> _FrozenMapping:
    expected = "a mapping of class pair -> reference, or a list of {'classes': [a, b], 'ref': str}"
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        items = []
        for record in value:
            if not isinstance(record, Mapping) or set(record) != {"classes", "ref"}:
                raise fail("guideline_refs", expected, f"the entry {record!r}"[:80])
            items.append((record["classes"], record["ref"]))
    else:
        raise fail("guideline_refs", expected, f"a {type(value).__name__}")
    refs: dict[frozenset[Hashable], str] = {}
    for pair, ref in items:
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Iterable) or len(set(pair)) != 2:
            raise fail("guideline_refs", "keys of two distinct classes", repr(pair)[:60])
        if not isinstance(ref, str) or not ref.strip():
            raise fail(f"guideline_refs[{tuple(pair)!r}]", "a non-empty string", repr(ref)[:60])
        refs[frozenset(pair)] = ref
    _check_distinct_text(refs, "guideline_refs", text=lambda pair: "|".join(sorted(map(str, pair))))
    return _FrozenMapping(refs)


def _check_distinct_text(classes: Iterable[Hashable], name: str,
                         text: Callable[[Any], str] = str) -> None:
    """Classes are matched by ``str(c)``; two keys with one text form would be ambiguous."""
    seen: dict[str, Hashable] = {}
    for cls in classes:
        text_form = text(cls)
        if text_form in seen and seen[text_form] != cls:
            raise fail(name, "classes with distinct text forms (they are matched by str(c))",
                       f"both {seen[text_form]!r} and {cls!r}")
        seen[text_form] = cls

