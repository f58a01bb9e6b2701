"""Annotators see their impact: per annotator and round, what their answers did to the labels.

One pure function, :func:`annotator_impact`: the answers (each with its round), the stream's
resolution history (each resolution with the round that wrote it), the disputes, the next
model's predictions and the resolver's skills in; one row per (round, annotator) out. The store
reads these frames (:meth:`loop.store.LabelStore.impact_inputs`, rounds from the program's
``round.closed`` events); this module only counts.

The figures, for annotator ``u`` and round ``r`` (every label is judged against the item's
*current* label, the head of its resolution chain in ``history``):

``skill``
    The resolver's estimate of the probability that ``u``'s label is right, fitted at the close
    of round ``r`` (``skills``; NaN when none was recorded).
``answers``
    ``u``'s answers in round ``r``.
``confirmed``
    Answers of a judged round that equal the item's current label *and* that another annotator
    also gave (an expert's adjudication, an audit, a second reviewer): the label rests on more
    than ``u``'s word. An answer that agrees with the label but nobody else backs is neither
    confirmed nor overturned.
``overturned``
    Answers of a judged round that differ from the item's current label, whether the label was
    once theirs and a later resolution changed it away, or the resolver never took it.
``pending``
    Answers not judged yet: the round is still open (after ``closed_round``), or the item has no
    resolution. ``confirmed + overturned + pending <= answers``.
``disputes_won``
    Disputes ``u`` raised in round ``r`` that ended ``resolved`` (the adjudicator changed the
    label) with the item's current label equal to the label ``u`` proposed (any change, when
    they proposed none).
``errors_fixed``
    Label changes written in round ``r`` (a resolution superseding one with another label) to
    a label ``u`` gave that item in round ``r``: ``u`` backed the fix.
``errors_fixed_model_right``
    Those fixes that the model retrained after the round agrees with (``next_predictions``: its
    predicted class of the item equals the new label). No truth needed.
``share_of_error_reduction``
    ``u``'s part of the round's label changes that the retrained model agrees with: each such
    change is one unit of credit, split equally between the annotators who backed it, and
    ``u``'s credit is divided by the number of such changes. A change no annotator backed (a
    model's auto-accept) keeps its unit, so shares sum to at most 1 per round; 0 when the
    round has no such change.
``round_fixes_model_right``
    The share's denominator: the round's label changes the retrained model agrees with (the
    same for every row of a round; :func:`impact_totals` needs it).
``true_errors_fixed``
    Simulation only (``truth`` given): ``u``'s fixes whose new label is the true class.

No I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

from ._validation import _describe, check_int, fail
from .columns import ANNOTATOR, ITEM, LABEL

__all__ = ["IMPACT_COLUMNS", "ImpactInputs", "PREDICTED", "RESOLUTION_ID", "ROUND", "SKILL", "STATUS", "SUPERSEDES",
           "annotator_impact", "impact_totals"]

ROUND: Final = "round"
SKILL: Final = "skill"
PREDICTED: Final = "predicted"
STATUS: Final = "status"
RESOLUTION_ID: Final = "resolution_id"
SUPERSEDES: Final = "supersedes"
COUNTS: Final = ("answers", "confirmed", "overturned", "pending", "disputes_won", "errors_fixed",
                 "errors_fixed_model_right")
IMPACT_COLUMNS: Final = (ROUND, ANNOTATOR, SKILL, *COUNTS, "share_of_error_reduction", "round_fixes_model_right")
TRUE_FIXED: Final = "true_errors_fixed"
_RESOLVED: Final = "resolved"


def annotator_impact(answers: pd.DataFrame, history: pd.DataFrame, *, closed_round: int | None = None,
                     disputes: pd.DataFrame | None = None, next_predictions: pd.DataFrame | None = None,
                     skills: pd.DataFrame | None = None, truth: pd.Series | None = None) -> pd.DataFrame:
    """Per annotator and round, the figures of the module docstring.

    Parameters
    ----------
    answers : DataFrame
        Columns ``item_id, annotator_id, label, round``: one row per answer (label a class
        code, round an integer >= 0).
    history : DataFrame
        Columns ``resolution_id, item_id, label, supersedes, round``: every resolution of the
        stream up to now (``supersedes``: the id it replaced, NA for a first resolution;
        ``round``: the round that wrote it).
    closed_round : int, optional
        The last round that closed; answers of later rounds are pending. None: every round is
        judged.
    disputes : DataFrame, optional
        Columns ``item_id, annotator_id, label, status, round`` (label NA: none proposed).
    next_predictions : DataFrame, optional
        Columns ``item_id, round, predicted``: the class the model retrained after ``round``
        predicts for the item. Without it no fix counts as one the model agrees with.
    skills : DataFrame, optional
        Columns ``round, annotator_id, skill``.
    truth : Series, optional
        True class by item id (simulation only): adds ``true_errors_fixed``.

    Returns
    -------
    DataFrame
        Columns :data:`IMPACT_COLUMNS` (plus ``true_errors_fixed`` with ``truth``), one row per
        (round, annotator) with an answer or a dispute, sorted by round and annotator.

    Raises
    ------
    SchemaError
        A frame that is not a DataFrame or misses a column, a round that is not an integer
        >= 0, a negative ``closed_round``.

    Examples
    --------
    >>> import pandas as pd
    >>> answers = pd.DataFrame({"item_id": ["a", "a"], "annotator_id": ["u", "v"], "label": [1, 1],
    ...                         "round": [1, 1]})
    >>> history = pd.DataFrame({"resolution_id": [1, 2], "item_id": ["a", "a"], "label": [0, 1],
    ...                         "supersedes": [pd.NA, 1], "round": [0, 1]})
    >>> predicted = pd.DataFrame({"item_id": ["a"], "round": [1], "predicted": [1]})
    >>> out = annotator_impact(answers, history, next_predictions=predicted)
    >>> out[["annotator_id", "confirmed", "errors_fixed_model_right", "share_of_error_reduction"]].values.tolist()
    [['u', 1, 1, 0.5], ['v', 1, 1, 0.5]]
    """
    answers = _frame(answers, "answers", (ITEM, ANNOTATOR, LABEL, ROUND))
    history = _frame(history, "history", (RESOLUTION_ID, ITEM, LABEL, SUPERSEDES, ROUND))
    disputes = _frame(disputes, "disputes", (ITEM, ANNOTATOR, LABEL, STATUS, ROUND))
    predictions = _frame(next_predictions, "next_predictions", (ITEM, ROUND, PREDICTED))
    skills = _frame(skills, "skills", (ROUND, ANNOTATOR, SKILL))
    if closed_round is not None:
        closed_round = check_int(closed_round, "closed_round", low=0)
    if truth is not None and not isinstance(truth, pd.Series):
        raise fail("truth", "a Series of true classes by item id", _describe(truth))
    current = _current(history)
    judged = _judged(answers, current, closed_round)
    fixes = _fixes(history, answers, predictions, truth)
    keys = pd.concat([answers[[ROUND, ANNOTATOR]], disputes[[ROUND, ANNOTATOR]]], ignore_index=True)
    out = keys.drop_duplicates().sort_values([ROUND, ANNOTATOR], kind="stable").reset_index(drop=True)
    out = out.merge(judged, on=[ROUND, ANNOTATOR], how="left")
    out = out.merge(_disputes_won(disputes, current), on=[ROUND, ANNOTATOR], how="left")
    out = out.merge(fixes[0], on=[ROUND, ANNOTATOR], how="left").merge(fixes[1], on=ROUND, how="left")
    for column in (*COUNTS, *([TRUE_FIXED] if truth is not None else []), "round_fixes_model_right"):
        out[column] = out[column].fillna(0).astype(np.int64) if column in out else np.int64(0)
    credit = out["credit"].fillna(0.0).to_numpy(dtype=float) if "credit" in out else np.zeros(len(out))
    denominator = out["round_fixes_model_right"].to_numpy(dtype=float)
    out["share_of_error_reduction"] = np.divide(credit, denominator, out=np.zeros(len(out)), where=denominator > 0)
    skill = skills.drop_duplicates([ROUND, ANNOTATOR], keep="last")[[ROUND, ANNOTATOR, SKILL]]
    out = out.merge(skill.astype({SKILL: float}), on=[ROUND, ANNOTATOR], how="left")
    columns = [*IMPACT_COLUMNS, *([TRUE_FIXED] if truth is not None else [])]
    return out[columns].reset_index(drop=True)


def impact_totals(impact: pd.DataFrame) -> pd.DataFrame:
    """One row per annotator over every round of :func:`annotator_impact`'s table: the counts
    summed, ``skill`` the latest estimate (an open round has none yet),
    ``share_of_error_reduction`` their credit over every model-backed change of their rounds
    (each round's share times its denominator, summed, over the denominators of the rounds they
    took part in), ``rounds`` the rounds they took part in.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"round": [1, 2], "annotator_id": ["u", "u"], "skill": [0.8, 0.9],
    ...                       "answers": [2, 3], "confirmed": [1, 2], "overturned": [1, 0], "pending": [0, 1],
    ...                       "disputes_won": [0, 1], "errors_fixed": [1, 0], "errors_fixed_model_right": [1, 0],
    ...                       "share_of_error_reduction": [0.5, 0.0], "round_fixes_model_right": [2, 0]})
    >>> impact_totals(table)[["annotator_id", "answers", "skill", "share_of_error_reduction"]].values.tolist()
    [['u', 5, 0.9, 0.5]]
    """
    impact = _frame(impact, "impact", IMPACT_COLUMNS)
    counts = [c for c in (*COUNTS, TRUE_FIXED) if c in impact]
    ordered = impact.sort_values([ANNOTATOR, ROUND], kind="stable")
    by = ordered.groupby(ANNOTATOR, sort=True)
    credit = (ordered["share_of_error_reduction"] * ordered["round_fixes_model_right"]).groupby(ordered[ANNOTATOR])
    denominator = by["round_fixes_model_right"].sum().astype(float)
    out = by[counts].sum().astype(np.int64)
    out.insert(0, SKILL, by[SKILL].last())
    out.insert(0, "rounds", by[ROUND].nunique().astype(np.int64))
    out["share_of_error_reduction"] = np.divide(credit.sum().to_numpy(dtype=float), denominator.to_numpy(),
                                                out=np.zeros(len(out)), where=denominator.to_numpy() > 0)
    return out.reset_index()


# ----------------------------------------------------------------------------- the parts

def _frame(value: Any, name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    if value is None:
        return pd.DataFrame({c: pd.Series(dtype=object if c in (ITEM, ANNOTATOR, STATUS) else np.int64)
                             for c in columns})
    if not isinstance(value, pd.DataFrame) or any(c not in value.columns for c in columns):
        got = f"a {type(value).__name__}" if not isinstance(value, pd.DataFrame) else \
            f"a frame with columns {list(value.columns)}"
        raise fail(name, f"a DataFrame with columns {list(columns)}", got)
    if ROUND in columns and len(value):
        rounds = pd.to_numeric(value[ROUND], errors="coerce")
        bad = rounds.isna() | (rounds < 0) | (rounds != np.floor(rounds))
        if bad.any():
            raise fail(f"{name}.round", "integers >= 0", _describe(value[ROUND][bad].iloc[0]))
        value = value.assign(**{ROUND: rounds.astype(np.int64)})
    if ITEM in columns:
        value = value.assign(**{ITEM: value[ITEM].astype(str)})
    return value


def _current(history: pd.DataFrame) -> pd.Series:
    """The head of each item's chain: its current label, by item id."""
    superseded = set(pd.to_numeric(history[SUPERSEDES], errors="coerce").dropna().astype(np.int64).tolist())
    heads = history[~history[RESOLUTION_ID].astype(np.int64).isin(superseded)]
    return heads.drop_duplicates(ITEM, keep="last").set_index(ITEM)[LABEL].astype(np.int64)


def _judged(answers: pd.DataFrame, current: pd.Series, closed_round: int | None) -> pd.DataFrame:
    label = answers[ITEM].map(current)
    open_ = answers[ROUND] > closed_round if closed_round is not None else pd.Series(False, index=answers.index)
    judged = label.notna() & ~open_
    # Another annotator gave the same label to the same item (any round): the label rests on more
    # than this annotator's word.
    backers = answers.groupby([ITEM, LABEL])[ANNOTATOR].transform("nunique")
    agrees = judged & (label == answers[LABEL])
    work = pd.DataFrame({ROUND: answers[ROUND], ANNOTATOR: answers[ANNOTATOR], "answers": 1,
                         "confirmed": (agrees & (backers >= 2)).astype(np.int64),
                         "overturned": (judged & (label != answers[LABEL])).astype(np.int64),
                         "pending": (~judged).astype(np.int64)})
    return work.groupby([ROUND, ANNOTATOR], as_index=False).sum()


def _disputes_won(disputes: pd.DataFrame, current: pd.Series) -> pd.DataFrame:
    label = disputes[ITEM].map(current)
    proposed = pd.to_numeric(disputes[LABEL], errors="coerce")
    won = (disputes[STATUS] == _RESOLVED) & (proposed.isna() | (label == proposed))
    work = pd.DataFrame({ROUND: disputes[ROUND], ANNOTATOR: disputes[ANNOTATOR],
                         "disputes_won": won.astype(np.int64)})
    return work.groupby([ROUND, ANNOTATOR], as_index=False).sum()


def _fixes(history: pd.DataFrame, answers: pd.DataFrame, predictions: pd.DataFrame,
           truth: pd.Series | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (round, annotator): fixes backed, those the next model agrees with, their credit
    (and the true ones); per round: the changes the next model agrees with."""
    ids = history[RESOLUTION_ID].astype(np.int64)
    previous = pd.Series(history[LABEL].astype(np.int64).to_numpy(), index=ids.to_numpy())
    sup = pd.to_numeric(history[SUPERSEDES], errors="coerce")
    changes = history.assign(before=sup.map(previous))
    changes = changes[sup.notna() & changes["before"].notna()]
    changes = changes[changes["before"].astype(np.int64) != changes[LABEL].astype(np.int64)]
    changes = changes[[RESOLUTION_ID, ITEM, LABEL, ROUND]].astype({LABEL: np.int64}).reset_index(drop=True)
    nexts = predictions.drop_duplicates([ITEM, ROUND], keep="last")[[ITEM, ROUND, PREDICTED]]
    changes = changes.merge(nexts, on=[ITEM, ROUND], how="left")
    changes["model_right"] = pd.to_numeric(changes[PREDICTED], errors="coerce") == changes[LABEL]
    per_round = changes.groupby(ROUND, as_index=False)["model_right"].sum() \
        .rename(columns={"model_right": "round_fixes_model_right"})
    backed = changes.merge(answers[[ITEM, LABEL, ROUND, ANNOTATOR]].drop_duplicates(), on=[ITEM, LABEL, ROUND])
    n_backers = backed.groupby(RESOLUTION_ID)[ANNOTATOR].transform("size")
    work = pd.DataFrame({ROUND: backed[ROUND], ANNOTATOR: backed[ANNOTATOR], "errors_fixed": 1,
                         "errors_fixed_model_right": backed["model_right"].astype(np.int64),
                         "credit": backed["model_right"].astype(float) / n_backers})
    if truth is not None:
        true = backed[ITEM].map(truth.set_axis(truth.index.astype(str)))
        work[TRUE_FIXED] = (true == backed[LABEL]).astype(np.int64)
    columns = [ROUND, ANNOTATOR, "errors_fixed", "errors_fixed_model_right", "credit",
               *([TRUE_FIXED] if truth is not None else [])]
    return work[columns].groupby([ROUND, ANNOTATOR], as_index=False).sum(), per_round


@dataclass(frozen=True)
class ImpactInputs:
    """What :func:`annotator_impact` reads, as the store holds it
    (:meth:`loop.store.LabelStore.impact_inputs`); :meth:`table` computes the figures."""

    answers: pd.DataFrame
    history: pd.DataFrame
    disputes: pd.DataFrame
    next_predictions: pd.DataFrame
    skills: pd.DataFrame
    closed_round: int | None

    def table(self, *, next_predictions: pd.DataFrame | None = None, truth: pd.Series | None = None) -> pd.DataFrame:
        """:func:`annotator_impact` of these frames (``next_predictions`` replaces the stored
        ones for the rounds it names)."""
        predictions = self.next_predictions
        if next_predictions is not None:
            predictions = pd.concat([predictions, _frame(next_predictions, "next_predictions",
                                                         (ITEM, ROUND, PREDICTED))], ignore_index=True)
        return annotator_impact(self.answers, self.history, closed_round=self.closed_round, disputes=self.disputes,
                                next_predictions=predictions, skills=self.skills, truth=truth)
