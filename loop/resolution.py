"""Resolution rules: the label each item acted on in a round ends up with, and why.

One pure function, :func:`resolve_actions`: the round's plan (what happened to each item,
:class:`loop.strategies.Action`), the answers it brought and the stream's annotations in; one
row per resolved item out. The rules, by action:

=================  =======================================================================
``auto_accept``    the ``predicted`` class (under ``tiered`` the consensus of the model and
                   the annotators, otherwise the model's own); method ``auto``
``expert``         the expert's label (the last expert answer of the item); method ``expert``
``double_blind``   an expert's answer, when there is one, adjudicated the two crowd labels
                   (they disagreed): method ``adjudicated``; otherwise, when the two agreed,
                   their label is final: method ``consensus`` (a pair missing an answer, or
                   disagreeing without an adjudication, settles nothing)
``review``         under ``tiered``, the most probable class of ``posterior`` (the model's
                   probabilities as the prior, every annotator's label weighed, so the model
                   breaks a tie between two disagreeing labels); otherwise Dawid-Skene over
                   the stream's annotations (its annotator model chosen without gold, named
                   in the reason); method ``consensus``
``triple``         the majority of the item's three labels; when all three differ, one of
                   them drawn from ``rng`` (ties to the first class would favour it); method
                   ``consensus``
``keep``           nothing: the item's label stays
=================  =======================================================================

An expert's answer always beats the crowd's: an ``expert`` item takes the expert's label and a
``double_blind`` item with an expert answer takes it over the pair's. Rows come out in the
order of the table above (auto, expert, adjudicated, agreed, reviewed, triple).

No I/O, no clock; randomness only through ``rng``.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable
from typing import Any

import numpy as np
import pandas as pd

from ._validation import check_rng, fail
from .aggregate import DawidSkene, MajorityVote
from .columns import ANNOTATOR, ITEM, LABEL, REASON
from .strategies import ACTION, Action, Strategy, _check_strategy

__all__ = ["METHOD", "METHOD_ADJUDICATED", "METHOD_AUTO", "METHOD_CONSENSUS", "METHOD_EXPERT", "RESOLUTION_COLUMNS",
           "resolve_actions"]

METHOD = "method"
METHOD_CONSENSUS, METHOD_EXPERT, METHOD_ADJUDICATED, METHOD_AUTO = "consensus", "expert", "adjudicated", "auto"
RESOLUTION_COLUMNS = (ITEM, LABEL, METHOD, REASON)


def resolve_actions(plan: pd.DataFrame, answers: pd.DataFrame, annotations: pd.DataFrame, *,
                    strategy: Strategy | str, experts: Collection[Hashable], predicted: pd.Series,
                    posterior: pd.DataFrame | None = None,
                    rng: np.random.Generator | int | None = None) -> pd.DataFrame:
    """The new label of every item the plan acted on, by the rules of the module docstring.

    Parameters
    ----------
    plan : DataFrame
        Columns ``item_id, action`` (:func:`loop.strategies.plan_round`'s plan), one row per item.
    answers : DataFrame
        The round's answers: columns ``item_id, annotator_id, label``, one row per answer (the
        crowd's and the experts', adjudications included).
    annotations : DataFrame
        The stream's annotations, this round's included: columns ``item_id, annotator_id,
        label``. Dawid-Skene (``review`` without ``tiered``) and the triple vote read them.
    strategy : Strategy or str
    experts : collection of annotator ids
        Who is an expert: their answers are final.
    predicted : Series
        The predicted class code by item id (str), for ``auto_accept``.
    posterior : DataFrame, shape (n_items, n_classes), optional
        Class probabilities by item id (str); required when ``strategy`` is ``tiered`` and
        the plan reviews an item.
    rng : Generator or int, optional
        Draws the winner of a three-way tie of ``triple``; required when the plan has one.

    Returns
    -------
    DataFrame
        Columns ``item_id, label, method, reason`` (:data:`RESOLUTION_COLUMNS`).

    Raises
    ------
    SchemaError
        A frame misses a column, an action is unknown, or ``posterior`` / ``rng`` is missing
        where the plan needs it.

    Examples
    --------
    >>> import pandas as pd
    >>> plan = pd.DataFrame({"item_id": ["a", "b"], "action": ["expert", "keep"]})
    >>> answers = pd.DataFrame({"item_id": ["a"], "annotator_id": ["e1"], "label": [2]})
    >>> resolve_actions(plan, answers, answers, strategy="random", experts={"e1"},
    ...                 predicted=pd.Series({"a": 0, "b": 1}))[["item_id", "label", "method"]].values.tolist()
    [['a', 2, 'expert']]
    """
    strategy = _check_strategy(strategy)
    _check_frame(plan, "plan", (ITEM, ACTION))
    _check_frame(answers, "answers", (ITEM, ANNOTATOR, LABEL))
    _check_frame(annotations, "annotations", (ITEM, ANNOTATOR, LABEL))
    known = {a.value for a in Action}
    unknown = sorted(set(map(str, plan[ACTION].unique())) - known)
    if unknown:
        raise fail("plan.action", f"values among {sorted(known)}", repr(unknown[0]))
    actions = plan.set_index(ITEM)[ACTION]
    reviewed = actions.index[actions == Action.REVIEW.value]
    tripled = actions.index[actions == Action.TRIPLE.value]
    if strategy is Strategy.TIERED and len(reviewed) and not isinstance(posterior, pd.DataFrame):
        raise fail("posterior", "a DataFrame of class probabilities by item id when tiered reviews items",
                   type(posterior).__name__)
    ties = check_rng(rng) if len(tripled) else None
    return _resolve(actions, answers, annotations, strategy, experts, predicted, posterior, ties)


def _resolve(actions: pd.Series, answers: pd.DataFrame, annotations: pd.DataFrame, strategy: Strategy,
             experts: Collection[Hashable], predicted: pd.Series, posterior: pd.DataFrame | None,
             rng: np.random.Generator | None) -> pd.DataFrame:
    # The stream's annotations by string id, only where a rule reads them (tiered's reviews read the
    # posterior): converting every annotation's id costs the history each round.
    def stream() -> pd.DataFrame:
        return annotations[[ITEM, ANNOTATOR, LABEL]].astype({ITEM: str})

    out = [_auto(actions, predicted, strategy)]
    by_expert = answers[answers[ANNOTATOR].isin(experts)].drop_duplicates(ITEM, keep="last")
    out.extend(_expert_and_double_blind(actions, answers, by_expert))
    reviewed = actions.index[actions == Action.REVIEW.value]
    if len(reviewed):
        out.append(_reviewed(reviewed, stream() if strategy is not Strategy.TIERED else None, strategy, posterior))
    tripled = actions.index[actions == Action.TRIPLE.value]
    if len(tripled):
        vote = MajorityVote(tie_break="random", random_state=rng)
        frame = stream()
        votes = vote.fit(frame[frame[ITEM].isin(tripled)]).labels_
        out.append(_rows(tripled, votes.reindex(tripled).astype(np.int64).to_numpy(), METHOD_CONSENSUS,
                         "majority of three crowd labels"))
    return pd.concat([o for o in out if o is not None], ignore_index=True)


def _rows(items: Any, labels: Any, method: str, reason: str) -> pd.DataFrame:
    return pd.DataFrame({ITEM: items, LABEL: labels, METHOD: method, REASON: reason})


def _auto(actions: pd.Series, predicted: pd.Series, strategy: Strategy) -> pd.DataFrame | None:
    auto = actions.index[actions == Action.AUTO_ACCEPT.value]
    if not len(auto):
        return None
    whose = "the consensus of the model and its annotators" if strategy is Strategy.TIERED else "the model's label"
    return _rows(auto, predicted.reindex(auto).astype(np.int64).to_numpy(), METHOD_AUTO, f"auto-accepted: {whose}")


def _expert_and_double_blind(actions: pd.Series, answers: pd.DataFrame,
                             by_expert: pd.DataFrame) -> list[pd.DataFrame]:
    """Expert items take the expert's label; double-blind items the adjudicator's, else the pair's."""
    expert_items = actions.index[actions == Action.EXPERT.value]
    blind = actions.index[actions == Action.DOUBLE_BLIND.value]
    expert = by_expert[by_expert[ITEM].isin(expert_items)]
    adjudicated = by_expert[by_expert[ITEM].isin(blind)]
    # Agreed: both labels of the pair are in and the same (a pair whose second label never came,
    # people's time having run out, settles nothing: the item keeps its label).
    pairs = answers[answers[ITEM].isin(blind.difference(adjudicated[ITEM]))]
    by_item = pairs.groupby(ITEM)[LABEL]
    settled = (by_item.size() >= 2) & (by_item.nunique() == 1)
    agreed = pairs[pairs[ITEM].isin(settled.index[settled])].drop_duplicates(ITEM)
    return [_rows(expert[ITEM].to_numpy(), expert[LABEL].to_numpy(), METHOD_EXPERT, "expert label"),
            _rows(adjudicated[ITEM].to_numpy(), adjudicated[LABEL].to_numpy(), METHOD_ADJUDICATED,
                  "double-blind labels disagreed; expert adjudicated"),
            _rows(agreed[ITEM].to_numpy(), agreed[LABEL].to_numpy(), METHOD_CONSENSUS, "double-blind labels agreed")]


def _reviewed(reviewed: pd.Index, frame: pd.DataFrame | None, strategy: Strategy,
              posterior: pd.DataFrame | None) -> pd.DataFrame:
    if strategy is Strategy.TIERED:
        # The model breaks ties between annotators who disagree (one review of a single label).
        best = posterior.reindex(reviewed).to_numpy().argmax(axis=1)
        return _rows(reviewed, best.astype(np.int64), METHOD_CONSENSUS,
                     "reviewed; posterior over its labels and the model")
    # The default resolver picks its annotator model without gold; the reason names it.
    ds = DawidSkene().fit(frame)
    return _rows(reviewed, ds.labels_.reindex(reviewed).astype(np.int64).to_numpy(), METHOD_CONSENSUS,
                 f"reviewed; Dawid-Skene ({ds.model_} model) over its labels")


def _check_frame(value: Any, name: str, columns: tuple[str, ...]) -> None:
    if not isinstance(value, pd.DataFrame) or any(c not in value.columns for c in columns):
        got = f"a {type(value).__name__}" if not isinstance(value, pd.DataFrame) else \
            f"a frame with columns {list(value.columns)}"
        raise fail(name, f"a DataFrame with columns {list(columns)}", got)
