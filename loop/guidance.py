"""From confused pairs to guidance, and how fast a published guideline changes answers.

Two pure functions, numpy and pandas in, named results out; the store, the API and the CLI
(:mod:`experiments.guidance`) read the data and call them.

Drafting (:func:`draft_sections`)
    For each of the top confused class pairs (:func:`loop.issues.confused_pairs` on the
    current labels and calibrated probabilities), a markdown section headed ``## a vs b``,
    the heading :func:`loop.store.guideline_section` looks up, so that once an admin publishes
    the draft, a task whose likely pair is ``(a, b)`` shows this section in its preview. A
    section holds:

    - the *boundary examples*: for each class of the pair, the ``per_class`` trusted items
      resolved as that class whose probability margin ``|p_a - p_b|`` is smallest (nearest the
      model's decision edge between the two; ties by item order);
    - what annotators said on the pair's items: how many answers, how many carried the
      ``guideline_unclear`` flag, and a few of their rationales (flagged answers first), each
      redacted (:func:`loop._redact.redact`) and cut to ``quote_chars`` characters.

    An item *belongs to* the pair when the model's two most probable classes are the pair (the
    pair its task preview shows), or when annotators gave it both classes.

Propagation (:func:`propagation`)
    Annotators' accuracy on the pair's items, against reference labels (gold where known,
    else expert or adjudicated resolutions: truth-free), per window of time (or of N answers)
    before and after publication. The *baseline* is the accuracy of every answer before
    publication; after it, accuracy is modelled as rising from the baseline towards an
    eventual level, as when each annotator adopts the guideline at an exponentially
    distributed time after publication::

        accuracy(x) = baseline + gain * (1 - 2 ** (-x / half_life))

    ``x`` is the time (days) or the number of the pair's answers since publication; ``gain``
    and ``half_life`` are fitted by binomial maximum likelihood on the individual answers.
    ``half_life`` is then exactly the time until accuracy reaches half of its eventual gain.
    It is bounded by half the span observed after publication: a slower rise cannot be told
    from one that has barely begun (a half-life at that bound says: wait and measure again).
    Intervals: percentile bootstrap over annotators (adoption is an annotator's, so answers of
    one annotator are not independent), answers within each annotator resampled as well.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd
from scipy import optimize

from ._redact import redact
from ._validation import check_int, check_pred_probs, check_rng, fail
from .audit import estimate_error_rate
from .columns import ANNOTATOR, CLASS_A, CLASS_B, ESTIMATED_COUNT, ITEM, LABEL, SHARE
from .issues import confused_pairs

__all__ = ["GUIDELINE_UNCLEAR", "GuidanceDraft", "Propagation", "draft_sections", "merge_guideline",
           "propagation", "section_heading"]

GUIDELINE_UNCLEAR: Final = "guideline_unclear"
RATIONALE: Final = "rationale"
FLAGS: Final = "flags"
CREATED_AT: Final = "created_at"
# Columns of the draft's frames.
ITEMS: Final = "items"
ANSWERS: Final = "answers"
RATIONALES: Final = "rationales"
EXAMPLE_CLASS: Final = "class"
EDGE_MARGIN: Final = "margin"
# Columns of the propagation table.
WINDOW: Final = "window"
PHASE: Final = "phase"
SINCE: Final = "since_publication"
CORRECT: Final = "correct"
ACCURACY: Final = "accuracy"
CI_LOW: Final = "ci_low"
CI_HIGH: Final = "ci_high"
FITTED: Final = "fitted"
_DAY = pd.Timedelta(days=1)


# ----------------------------------------------------------------------------- drafting

@dataclass(frozen=True)
class GuidanceDraft:
    """Draft guideline sections for the most confused pairs.

    Attributes
    ----------
    pairs : DataFrame
        One row per pair, most confused first: ``class_a, class_b, estimated_count, share``
        (as :func:`loop.issues.confused_pairs`), ``items`` (items of the pair), ``answers``
        (annotations on them), ``guideline_unclear`` (those flagged so), ``rationales`` (the
        quoted ones, a list of str).
    examples : DataFrame
        The boundary examples: ``class_a, class_b, class`` (the example's resolved class),
        ``item_id``, ``margin`` (``|p_a - p_b|``), nearest the edge first within a class.
    sections : dict of (class_a, class_b) -> str
        Each pair's markdown section, in the order of ``pairs``.
    """

    pairs: pd.DataFrame
    examples: pd.DataFrame
    sections: dict[tuple[str, str], str]

    @property
    def text(self) -> str:
        """Every section, in order, as one markdown text."""
        return "\n\n".join(self.sections.values())

    def examples_json(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """The examples as the guideline's ``examples`` field holds them:
        ``{"a vs b": {"a": [{"item_id": ..., "margin": ...}, ...], "b": [...]}}``."""
        out: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for (a, b), group in self.examples.groupby([CLASS_A, CLASS_B], sort=False):
            key = section_heading(a, b)
            out[key] = {str(c): [] for c in (a, b)}
            for cls, item, margin in group[[EXAMPLE_CLASS, ITEM, EDGE_MARGIN]].itertuples(index=False):
                out[key][str(cls)].append({ITEM: str(item), EDGE_MARGIN: round(float(margin), 4)})
        for (a, b) in self.sections:
            out.setdefault(section_heading(a, b), {str(a): [], str(b): []})
        return out


def section_heading(a: Any, b: Any) -> str:
    """The words of a pair's heading, ``"a vs b"``: what :func:`loop.store.guideline_section`
    matches (each class name must be one word of the heading)."""
    return f"{a} vs {b}"


def draft_sections(labels: Any, pred_probs: Any, *, item_ids: Any, classes: Sequence[Hashable],
                   trusted: Any = None, annotations: pd.DataFrame | None = None, pairs: int = 3,
                   per_class: int = 3, quotes: int = 3, quote_chars: int = 200) -> GuidanceDraft:
    """Draft a guideline section for each of the ``pairs`` most confused class pairs.

    Parameters
    ----------
    labels : array-like of int, shape (n,)
        Each item's current resolved label (class code).
    pred_probs : array-like of float, shape (n, k)
        Calibrated, out-of-sample class probabilities of the same items.
    item_ids : array-like, shape (n,)
        The items' ids (unique).
    classes : sequence of length k
        Class names; the headings and examples use them.
    trusted : array-like of bool, shape (n,), optional
        Which items may serve as examples (e.g. resolved by consensus, adjudication or an
        expert, not by the model alone). Default: all.
    annotations : DataFrame, optional
        The answers: ``item_id``, ``label`` (code); optional ``rationale`` (str or None) and
        ``flags`` (a list of str per row; ``"guideline_unclear"`` is counted). Rows about other
        items are ignored.
    pairs : int, default=3
        How many of the most confused pairs get a section.
    per_class : int, default=3
        Boundary examples per class of a pair.
    quotes : int, default=3
        Rationales quoted per pair.
    quote_chars : int, default=200
        A longer rationale is cut to this many characters (an ellipsis marks the cut).

    Returns
    -------
    GuidanceDraft

    Examples
    --------
    >>> probs = ([[0.9, 0.1, 0.0]] * 4 + [[0.1, 0.9, 0.0]] * 4 + [[0.85, 0.15, 0.0], [0.6, 0.4, 0.0]]
    ...          + [[0.0, 0.0, 1.0]] * 4)
    >>> draft = draft_sections([0] * 4 + [1] * 4 + [1, 0] + [2] * 4, probs, item_ids=range(14),
    ...                        classes=["cat", "dog", "fox"], per_class=1)
    >>> list(draft.sections)
    [('cat', 'dog')]
    >>> draft.examples[["class", "item_id"]].values.tolist()
    [['cat', 9], ['dog', 8]]
    """
    probs = check_pred_probs(pred_probs)
    n, k = probs.shape
    codes = _codes(labels, n, k)
    ids = _item_ids(item_ids, n)
    names = list(classes) if not isinstance(classes, str) else None
    if names is None or len(names) != k:
        raise fail("classes", f"a sequence of {k} class names (one per column of pred_probs)", repr(classes)[:60])
    mask = np.ones(n, dtype=bool) if trusted is None else _mask(trusted, n)
    pairs = check_int(pairs, "pairs", low=1)
    per_class = check_int(per_class, "per_class", low=1)
    quotes = check_int(quotes, "quotes", low=0)
    quote_chars = check_int(quote_chars, "quote_chars", low=10)
    answers = _answers(annotations, k)

    top = confused_pairs(codes, probs).head(pairs)
    position = pd.Index(ids)
    likely = np.argsort(-probs, axis=1, kind="stable")[:, :2]
    rows, examples, sections = [], [], {}
    for code_a, code_b, count, share in top[[CLASS_A, CLASS_B, ESTIMATED_COUNT, SHARE]].itertuples(index=False):
        a, b = names[code_a], names[code_b]
        edge = np.abs(probs[:, code_a] - probs[:, code_b])
        chosen = []
        for code in (code_a, code_b):
            candidates = np.flatnonzero((codes == code) & mask)
            nearest = candidates[np.argsort(edge[candidates], kind="stable")[:per_class]]
            chosen.append(nearest)
            examples += [(a, b, names[code], ids[i], float(edge[i])) for i in nearest]
        of_pair = _items_of_pair(likely, code_a, code_b, answers, position)
        on_pair = answers[answers[ITEM].isin(ids[of_pair])] if len(answers) else answers
        unclear = int(on_pair[FLAGS].map(lambda f: GUIDELINE_UNCLEAR in f).sum()) if len(on_pair) else 0
        quoted = _quotes(on_pair, quotes, quote_chars)
        rows.append((a, b, float(count), float(share), int(of_pair.sum()), len(on_pair), unclear, quoted))
        sections[(a, b)] = _section(a, b, float(count), float(share), [ids[c] for c in chosen],
                                    [[float(edge[i]) for i in c] for c in chosen], len(on_pair), unclear, quoted)
    return GuidanceDraft(
        pairs=pd.DataFrame(rows, columns=[CLASS_A, CLASS_B, ESTIMATED_COUNT, SHARE, ITEMS, ANSWERS, GUIDELINE_UNCLEAR,
                                          RATIONALES]),
        examples=pd.DataFrame(examples, columns=[CLASS_A, CLASS_B, EXAMPLE_CLASS, ITEM, EDGE_MARGIN]),
        sections=sections)


def merge_guideline(parent: str | None, draft: GuidanceDraft, *, title: str = "Guideline") -> str:
    """The parent guideline's text with the draft's sections added.

    A pair the parent already has a section for (a heading naming both classes) gets the
    draft's material at the end of that section, under a heading one level deeper, so that the
    preview, which shows the first section naming the pair, shows both; any other pair's
    section is appended at the end. Without a parent, the text starts with ``# {title}``.

    Examples
    --------
    >>> probs = [[0.9, 0.1]] * 3 + [[0.8, 0.2], [0.3, 0.7]] + [[0.1, 0.9]] * 3
    >>> draft = draft_sections([0, 0, 0, 1, 0, 1, 1, 1], probs, item_ids=range(8), classes=["neg", "pos"])
    >>> text = merge_guideline("# Sentiment\\n## neg vs pos\\nSarcasm is neg.", draft)
    >>> text.count("## neg vs pos"), "### From confusions" in text
    (1, True)
    """
    from .store._tasks import guideline_section  # the preview's own lookup, so both agree

    text = f"# {title}" if parent is None or not parent.strip() else parent.rstrip()
    for (a, b), section in draft.sections.items():
        found = guideline_section(text, (str(a), str(b)))
        head = found.splitlines()[0] if found else ""
        if found != text and _names_pair(head, a, b):
            level = len(head) - len(head.lstrip("#"))
            body = section.split("\n", 1)[1] if "\n" in section else ""
            deeper = "#" * min(level + 1, 6) + " From confusions\n" + body
            text = text.replace(found, found + "\n\n" + deeper, 1)
        else:
            text = text + "\n\n" + section
    return text


def _names_pair(heading: str, a: Any, b: Any) -> bool:
    import re

    words = set(re.findall(r"[\w-]+", heading.lower()))
    return heading.startswith("#") and str(a).lower() in words and str(b).lower() in words


def _section(a: str, b: str, count: float, share: float, chosen: list[list[Any]], margins: list[list[float]],
             answers: int, unclear: int, quoted: list[str]) -> str:
    lines = [f"## {section_heading(a, b)}", "",
             f"*Draft from confusions: about {count:.0f} labels ({share:.0%} of the estimated confusions) "
             f"mix up {a} and {b}. Write the rule that tells them apart here.*", "",
             "Boundary examples (resolved items nearest the model's decision edge between the two):", ""]
    for cls, items, edge in zip((a, b), chosen, margins):
        shown = ", ".join(f"`{i}` (margin {m:.2f})" for i, m in zip(items, edge)) or "none resolved yet"
        lines.append(f"- **{cls}**: {shown}")
    lines += ["", f"Annotators answered items of this pair {answers} times and flagged "
                  f"`{GUIDELINE_UNCLEAR}` on {unclear} of those answers."]
    if quoted:
        lines += ["", "Rationales they left:", ""] + [f"> {q}" for q in quoted]
    return "\n".join(lines)


def _quotes(on_pair: pd.DataFrame, quotes: int, quote_chars: int) -> list[str]:
    if not quotes or not len(on_pair):
        return []
    texts = on_pair[RATIONALE].map(lambda r: " ".join(r.split()) if isinstance(r, str) else "")
    flagged = on_pair[FLAGS].map(lambda f: GUIDELINE_UNCLEAR in f)
    order = np.lexsort((np.arange(len(on_pair)), ~flagged.to_numpy()))  # flagged first, then as given
    out: list[str] = []
    for text in texts.to_numpy()[order]:
        if not text or text in out:
            continue
        text = redact(text)
        out.append(text if len(text) <= quote_chars else text[:quote_chars - 1].rstrip() + "…")
        if len(out) == quotes:
            break
    return out


def _items_of_pair(likely: np.ndarray, a: int, b: int, answers: pd.DataFrame, position: pd.Index) -> np.ndarray:
    """Rows whose two most probable classes are the pair, or that annotators gave both classes."""
    top = ((likely[:, 0] == a) & (likely[:, 1] == b)) | ((likely[:, 0] == b) & (likely[:, 1] == a))
    if len(answers):
        given = answers[answers[LABEL].isin([a, b])].groupby(ITEM, sort=False)[LABEL].nunique()
        both = position.isin(given.index[given.to_numpy() == 2])
        top = top | both
    return top


def _codes(labels: Any, n: int, k: int) -> np.ndarray:
    values = np.asarray(labels)
    if values.shape != (n,) or not np.issubdtype(values.dtype, np.integer) or (values < 0).any() or (values >= k).any():
        raise fail("labels", f"{n} class codes in 0..{k - 1} (one per row of pred_probs)",
                   f"shape {values.shape}, dtype {values.dtype}")
    return values.astype(np.int64)


def _item_ids(item_ids: Any, n: int) -> np.ndarray:
    ids = pd.Index(list(item_ids) if not isinstance(item_ids, (np.ndarray, pd.Index, pd.Series)) else item_ids)
    if len(ids) != n or ids.hasnans or ids.has_duplicates:
        raise fail("item_ids", f"{n} unique ids, one per row of pred_probs",
                   f"{len(ids)} ids ({int(ids.duplicated().sum())} duplicates)")
    return ids.to_numpy(dtype=object)


def _mask(value: Any, n: int) -> np.ndarray:
    mask = np.asarray(value)
    if mask.shape != (n,) or mask.dtype != bool:
        raise fail("trusted", f"{n} booleans, one per item", f"shape {mask.shape}, dtype {mask.dtype}")
    return mask


def _answers(annotations: pd.DataFrame | None, k: int) -> pd.DataFrame:
    if annotations is None:
        return pd.DataFrame({ITEM: pd.Series(dtype=object), LABEL: pd.Series(dtype=np.int64),
                             RATIONALE: pd.Series(dtype=object), FLAGS: pd.Series(dtype=object)})
    if not isinstance(annotations, pd.DataFrame) or not {ITEM, LABEL} <= set(annotations.columns):
        raise fail("annotations", f"a DataFrame with columns {[ITEM, LABEL]}",
                   type(annotations).__name__ if not isinstance(annotations, pd.DataFrame)
                   else f"columns {list(annotations.columns)}")
    labels = pd.to_numeric(annotations[LABEL], errors="coerce")
    if labels.isna().any() or (labels < 0).any() or (labels >= k).any() or (labels % 1 != 0).any():
        raise fail("annotations.label", f"class codes in 0..{k - 1}", "other values")
    flags = annotations[FLAGS] if FLAGS in annotations else pd.Series([[]] * len(annotations), index=annotations.index)
    bad = ~flags.map(lambda f: isinstance(f, (list, tuple)) and all(isinstance(x, str) for x in f))
    if bad.any():
        raise fail("annotations.flags", "a list of flag names per row", repr(flags[bad].iloc[0])[:60])
    return pd.DataFrame({ITEM: annotations[ITEM].to_numpy(dtype=object), LABEL: labels.to_numpy(dtype=np.int64),
                         RATIONALE: (annotations[RATIONALE] if RATIONALE in annotations
                                     else pd.Series([None] * len(annotations), index=annotations.index)).to_numpy(dtype=object),
                         FLAGS: flags.map(list).to_numpy(dtype=object)})


# ----------------------------------------------------------------------------- propagation

@dataclass(frozen=True)
class Propagation:
    """How annotators' accuracy on a pair moved after a guideline's publication.

    Attributes
    ----------
    windows : DataFrame
        One row per window: ``window`` (negative before publication, 0, 1, ... after),
        ``phase`` (``before``/``after``), ``since_publication`` (the window's mean, in
        ``unit``), ``answers``, ``correct``, ``accuracy`` with its 95% Wilson interval
        ``ci_low``/``ci_high``, and ``fitted`` (the model's accuracy there; the baseline before).
    baseline : float
        Accuracy of the answers before publication.
    gain, gain_ci : float, (float, float)
        The eventual rise of accuracy over the baseline, and its 95% bootstrap interval.
    half_life, half_life_ci : float, (float, float)
        ``unit``s after publication until accuracy reached half of its gain (NaN when the
        fitted gain is not positive), and its 95% bootstrap interval.
    unit : str
        ``"days"`` (time windows) or ``"answers"`` (windows of N answers).
    reference : str
        What the answers were graded against (e.g. ``"gold"``, ``"expert resolutions"``).
    n_before, n_after : int
        Answers graded before and after publication.
    """

    windows: pd.DataFrame
    baseline: float
    gain: float
    gain_ci: tuple[float, float]
    half_life: float
    half_life_ci: tuple[float, float]
    unit: str
    reference: str
    n_before: int
    n_after: int

    def metrics(self, prefix: str = "guideline") -> dict[str, float]:
        """The summary under its metric names: ``guideline_gain`` (with ``_ci_low``/``_ci_high``),
        ``guideline_baseline_accuracy``, ``guideline_half_life_{unit}`` (with its interval) and
        ``guideline_answers_before``/``_after`` (how many answers they rest on)."""
        half = f"{prefix}_half_life_{self.unit}"
        return {f"{prefix}_answers_before": float(self.n_before), f"{prefix}_answers_after": float(self.n_after),
                f"{prefix}_baseline_accuracy": self.baseline, f"{prefix}_gain": self.gain,
                f"{prefix}_gain_ci_low": self.gain_ci[0], f"{prefix}_gain_ci_high": self.gain_ci[1],
                half: self.half_life, f"{half}_ci_low": self.half_life_ci[0], f"{half}_ci_high": self.half_life_ci[1]}


def propagation(annotations: pd.DataFrame, reference_labels: pd.Series, published_at: Any,
                pair: tuple[int, int], *, window: pd.Timedelta | str | int = "1D", reference: str = "gold",
                n_boot: int = 200, rng: np.random.Generator | int = 0) -> Propagation:
    """Annotators' accuracy on a class pair before and after a guideline's publication.

    Parameters
    ----------
    annotations : DataFrame
        The answers: ``item_id``, ``annotator_id``, ``label`` (code), ``created_at`` (a
        timestamp; naive ones are read as UTC). Answers on items whose reference label is not
        one of ``pair`` are left out; leave out, too, the answers the reference was made of
        (an expert's own label graded against the expert resolution).
    reference_labels : Series of int
        The reference class of items, indexed by item id: gold where known, else expert or
        adjudicated resolutions.
    published_at : timestamp
        When the guideline was published.
    pair : (int, int)
        The class codes the guideline addresses.
    window : Timedelta, str or int, default="1D"
        A window of time (``"12h"``, ``pd.Timedelta(days=1)``), measured from publication; or
        an int N: windows of N answers (before publication counted back from it).
    reference : str, default="gold"
        How the reference labels were made, as the result names it.
    n_boot : int, default=200
        Bootstrap resamples for the intervals (0: none, NaN intervals).
    rng : Generator or int, default=0

    Returns
    -------
    Propagation

    Raises
    ------
    SchemaError
        A malformed input, or no graded answer before or after publication.

    Examples
    --------
    >>> t0 = pd.Timestamp("2026-01-01", tz="UTC")
    >>> rows = [(f"i{j}", f"a{j % 3}", 0 if j % 5 else 1, t0 + pd.Timedelta(hours=6 * j)) for j in range(60)]
    >>> ann = pd.DataFrame(rows, columns=["item_id", "annotator_id", "label", "created_at"])
    >>> ref = pd.Series(0, index=[f"i{j}" for j in range(60)])
    >>> result = propagation(ann, ref, t0 + pd.Timedelta(days=5), (0, 1), n_boot=0)
    >>> result.n_before, result.n_after, round(result.baseline, 2)
    (20, 40, 0.8)
    """
    frame = _graded(annotations, reference_labels, pair)
    published = _utc(published_at, "published_at")
    by_answers = isinstance(window, (int, np.integer)) and not isinstance(window, bool)
    if by_answers:
        size = check_int(window, "window", low=1)
    else:
        try:
            span = pd.Timedelta(window)
        except (TypeError, ValueError):
            raise fail("window", "a positive duration (e.g. '1D', '12h') or a number of answers", repr(window)[:40]) from None
        if pd.isna(span) or span <= pd.Timedelta(0):
            raise fail("window", "a positive duration (e.g. '1D', '12h') or a number of answers", repr(window)[:40])
    n_boot = check_int(n_boot, "n_boot", low=0)
    generator = check_rng(rng)
    if not isinstance(reference, str) or not reference:
        raise fail("reference", "a non-empty name of the reference labels", repr(reference)[:40])

    frame = frame.sort_values(CREATED_AT, kind="stable").reset_index(drop=True)
    after = (frame[CREATED_AT] >= published).to_numpy()
    if after.all() or not after.any():
        raise fail("annotations", "graded answers on the pair both before and after published_at",
                   f"{int((~after).sum())} before and {int(after.sum())} after")
    if by_answers:
        rank_after = np.cumsum(after) - 1
        rank_before = np.cumsum((~after)[::-1])[::-1]  # 1 for the last answer before publication
        x = np.where(after, rank_after, -rank_before).astype(float)
        win = np.where(after, rank_after // size, -((rank_before - 1) // size) - 1)
        unit = "answers"
    else:
        x = ((frame[CREATED_AT] - published) / _DAY).to_numpy(dtype=float)
        win = np.floor((frame[CREATED_AT] - published) / span).to_numpy(dtype=np.int64)
        unit = "days"
    correct = frame[CORRECT].to_numpy(dtype=float)
    who = frame[ANNOTATOR].to_numpy(dtype=object)
    base, gain, half = _fit(x, correct, after)
    gain_ci, half_ci = _bootstrap(x, correct, after, who, n_boot, generator, (base + gain, half))
    table = _windows(win, x, correct, after, base, gain, half)
    return Propagation(windows=table, baseline=base, gain=gain, gain_ci=gain_ci,
                       half_life=half if gain > 0 else float("nan"), half_life_ci=half_ci, unit=unit,
                       reference=reference, n_before=int((~after).sum()), n_after=int(after.sum()))


def _curve(x: np.ndarray, base: float, gain: float, half: float) -> np.ndarray:
    return base + gain * (1.0 - np.exp2(-np.maximum(x, 0.0) / half))


def _fit(x: np.ndarray, correct: np.ndarray, after: np.ndarray,
         start: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """Baseline from the answers before; gain and half-life by binomial maximum likelihood after."""
    base = float(correct[~after].mean())
    xa, ya = np.maximum(x[after], 0.0), correct[after]
    span = max(float(xa.max()), 1e-6)
    # A half-life beyond half the time observed after publication cannot be told from a rise
    # that has barely begun, and lets the eventual level run off to anything: bounded there.
    low, high = np.log(span / 1e4), np.log(span / 2)
    eps = 1e-6

    def nll(theta: np.ndarray) -> float:
        eventual = 1 / (1 + np.exp(-theta[0]))
        p = np.clip(_curve(xa, base, eventual - base, float(np.exp(theta[1]))), eps, 1 - eps)
        return -float(np.sum(ya * np.log(p) + (1 - ya) * np.log1p(-p)))

    if start is None:
        tail = ya[xa >= np.quantile(xa, 2 / 3)] if len(xa) > 2 else ya
        eventual0 = float(np.clip(tail.mean(), 0.02, 0.98))
        # A few starting half-lives: the likelihood is flat in the half-life when the gain is small.
        starts = [(eventual0, h) for h in (span / 16, span / 6, span / 2.5)]
    else:
        starts = [(float(np.clip(start[0], 0.02, 0.98)), float(np.clip(start[1], span / 1e4, span / 2)))]
    best = None
    for eventual0, half0 in starts:
        res = optimize.minimize(nll, x0=[np.log(eventual0 / (1 - eventual0)), np.log(half0)],
                                method="L-BFGS-B", bounds=[(-12, 12), (low, high)])
        if best is None or res.fun < best.fun:
            best = res
    eventual = float(1 / (1 + np.exp(-best.x[0])))
    return base, eventual - base, float(np.exp(best.x[1]))


def _bootstrap(x: np.ndarray, correct: np.ndarray, after: np.ndarray, who: np.ndarray, n_boot: int,
               rng: np.random.Generator, start: tuple[float, float]) -> tuple[tuple[float, float], tuple[float, float]]:
    nan = (float("nan"), float("nan"))
    if n_boot == 0:
        return nan, nan
    people, code = np.unique(who.astype(str), return_inverse=True)
    rows_of = [np.flatnonzero(code == i) for i in range(len(people))]
    gains, halves = [], []
    for _ in range(n_boot):
        picked = rng.integers(0, len(people), len(people))
        rows = np.concatenate([rng.choice(rows_of[p], len(rows_of[p])) for p in picked])
        if after[rows].all() or not after[rows].any():
            continue
        _, gain, half = _fit(x[rows], correct[rows], after[rows], start)
        gains.append(gain)
        halves.append(half if gain > 0 else np.nan)
    if not gains:
        return nan, nan
    g = np.percentile(gains, [2.5, 97.5])
    h = np.asarray(halves, dtype=float)
    # A resample without a gain has no half-life: it counts as "never", the interval's top.
    h = np.where(np.isnan(h), np.inf, h)
    # Order statistics, not interpolation, so that an infinite top stays a plain "never".
    hl = (np.percentile(h, 2.5, method="lower"), np.percentile(h, 97.5, method="higher"))
    return (float(g[0]), float(g[1])), (float(hl[0]), float(hl[1]))


def _windows(win: np.ndarray, x: np.ndarray, correct: np.ndarray, after: np.ndarray, base: float, gain: float,
             half: float) -> pd.DataFrame:
    rows = []
    for w in np.unique(win):
        sel = win == w
        n, c = int(sel.sum()), int(correct[sel].sum())
        # A binomial share's Wilson interval: the audit's estimator, counting right answers.
        est = estimate_error_rate(n, c)
        mean_x = float(x[sel].mean())
        phase = "after" if after[sel].all() else "before"
        fitted = float(_curve(np.array([mean_x]), base, gain, half)[0]) if phase == "after" else base
        rows.append((int(w), phase, mean_x, n, c, c / n, est.low, est.high, fitted))
    return pd.DataFrame(rows, columns=[WINDOW, PHASE, SINCE, ANSWERS, CORRECT, ACCURACY, CI_LOW, CI_HIGH, FITTED])


def _graded(annotations: Any, reference_labels: Any, pair: Any) -> pd.DataFrame:
    need = [ITEM, ANNOTATOR, LABEL, CREATED_AT]
    if not isinstance(annotations, pd.DataFrame) or not set(need) <= set(annotations.columns):
        raise fail("annotations", f"a DataFrame with columns {need}",
                   type(annotations).__name__ if not isinstance(annotations, pd.DataFrame)
                   else f"columns {list(annotations.columns)}")
    if not isinstance(reference_labels, pd.Series) or reference_labels.index.has_duplicates:
        raise fail("reference_labels", "a Series of class codes indexed by unique item ids",
                   type(reference_labels).__name__)
    if (not isinstance(pair, tuple) or len(pair) != 2 or pair[0] == pair[1]
            or not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c >= 0 for c in pair)):
        raise fail("pair", "two different class codes (a, b)", repr(pair)[:40])
    stamps = _utc_column(annotations[CREATED_AT])
    ref = reference_labels.reindex(annotations[ITEM].to_numpy())
    keep = ref.isin(list(pair)).to_numpy()
    frame = pd.DataFrame({ITEM: annotations[ITEM].to_numpy(dtype=object),
                          ANNOTATOR: annotations[ANNOTATOR].to_numpy(dtype=object),
                          CREATED_AT: stamps.to_numpy(),
                          CORRECT: annotations[LABEL].to_numpy() == ref.to_numpy()})[keep]
    return frame


def _utc(value: Any, name: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise fail(name, "a timestamp", repr(value)[:40]) from None
    if pd.isna(stamp):
        raise fail(name, "a timestamp", repr(value)[:40])
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _utc_column(values: pd.Series) -> pd.Series:
    try:
        stamps = pd.to_datetime(values)
    except (TypeError, ValueError):
        raise fail("annotations.created_at", "timestamps", "values that are not") from None
    if stamps.isna().any():
        raise fail("annotations.created_at", "timestamps without missing values", f"{int(stamps.isna().sum())} missing")
    return stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps.dt.tz_convert("UTC")
