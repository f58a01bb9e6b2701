"""What the program knows about its labels without the truth: the audits and the auto-accept bound.

The audit's parts are pure functions (the stratified draw, the adjudicated verdict, the
estimates, the dispute's posterior); :class:`AuditBook` keeps what the audits so far say (per
stratum, items audited and counted wrong; how often two experts agreed; the router's
probabilities of every audited item and the class the experts settled on); and
:class:`AutoAcceptBound` turns that into how many items a round may auto-accept under
``thresholds.max_auto_accept_error``. The program (:mod:`experiments.program`) runs the audit
step (asking its workforce, writing answers and corrections) and logs; none of this reads the
truth, so a simulation and a team with its own people run the very same code. The rules are
in the program's docstring (step 6, *Audit*).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import softmax

from loop.audit import ErrorRateEstimate, audit_sample, estimate_error_rate_stratified, wilson_interval
from loop.calibration import TemperatureScaling
from loop.columns import ANNOTATOR, ITEM, LABEL, REASON, ROUTE
from loop.strategies import ACTION, Action

from . import tracking as T

__all__ = ["AUDIT_METHOD", "DECISIVE_DISPUTE", "STRATA", "AuditBook", "AuditLedger", "AuditResult", "AutoAcceptBound",
           "audit_verdict", "change_terms", "confirmed_changes", "dispute_posterior", "estimate_audit",
           "estimate_carried", "stratified_sample", "with_estimate"]

# Where an item's current label came from, by the program's own record (no truth): the audit's
# strata. Double-blind and triple work count as reviewed, an audit's correction as expert.
STRATA = ("auto_accepted", "reviewed", "expert", "untouched")
_AUTO, _REVIEWED, _EXPERT, _UNTOUCHED = STRATA
# One expert's dispute of a label settles it, without a second opinion, when the label is
# wrong with at least this probability given the dispute (:func:`dispute_posterior`): the
# same 95% as the audit's intervals: at most one such correction in twenty is expected to break a
# right label, and only in strata wrong about half the time (p >= 0.49 with experts right 95%),
# where the first checks the saved second opinions pay for fix many more.
DECISIVE_DISPUTE = 0.95
_PRIOR_CHECKS = 5  # a stratum's error rate: a prior at the posterior's mean doubt, worth this many audited items
_PRIOR_EXPERT_ACCURACY, _PRIOR_PAIRS = 0.95, 10  # the experts' accuracy: a prior worth this many pairs
_ACTION_STRATUM = {Action.AUTO_ACCEPT.value: _AUTO, Action.REVIEW.value: _REVIEWED,
                   Action.DOUBLE_BLIND.value: _REVIEWED, Action.TRIPLE.value: _REVIEWED, Action.EXPERT.value: _EXPERT}
AUDIT_METHOD = ("stratified (auto-accepted oversampled, the rest uniform), adjudicated (a first expert's "
                "disagreement counts only when a second independent expert also rejects the label, or alone when "
                "the label's stratum makes it decisive: P(label wrong | dispute) >= 0.95), "
                "Wilson interval at Kish's effective size; each round audits the labels new or changed since "
                "the last audit and carries the earlier audits' count forward (a difference estimator)")

@dataclass(frozen=True)
class AuditResult:
    """One round's audit: the whole set's estimate, the auto-accepted stratum's (None when there
    is none or it drew no item), and the per-route table (:data:`T.AUDIT_STRATA_CSV`)."""

    estimate: ErrorRateEstimate
    auto: ErrorRateEstimate | None
    strata: pd.DataFrame


def stratified_sample(population: np.ndarray, design: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` items: the auto-accepted stratum oversampled, the rest uniform.

    The auto-accepted share ``W`` of the population gets ``W + W (1 - W) / 2`` of the sample (at
    least one item each), so its own estimate rests on more items while the whole set's
    effective size stays within about 10% of a uniform draw's. Too few items for two strata, or
    one stratum: a uniform draw.
    """
    size = min(size, population.size)
    auto = design == _AUTO
    n_auto_pop = int(auto.sum())
    if n_auto_pop in (0, population.size) or size < 2:
        return audit_sample(population, size=size, rng=rng)
    w = n_auto_pop / population.size
    n_auto = int(np.clip(round(size * (w + w * (1 - w) / 2)), 1, size - 1))
    n_rest = min(size - n_auto, population.size - n_auto_pop)
    n_auto = min(size - n_rest, n_auto_pop)
    picked = np.concatenate([audit_sample(population[auto], size=n_auto, rng=rng),
                             audit_sample(population[~auto], size=n_rest, rng=rng)])
    return population[pd.Index(population, dtype=object).isin(pd.Index(picked, dtype=object))]


def dispute_posterior(error_rate: np.ndarray, expert_accuracy: float) -> np.ndarray:
    """P(label wrong | one expert disputes it), per item: ``p / (p + (1 - p) (1 - a))``.

    ``error_rate`` (n,): the item's stratum's estimated error rate ``p``; ``expert_accuracy``:
    ``a``. A right label is taken to be disputed whenever the expert errs (the conservative
    bound: ``c = 1``, a wrong expert never picks the label), a wrong one always (it is unless
    the expert errs onto the label, which overstates the odds by at most ``1 - a``).

    >>> dispute_posterior(np.array([0.01, 0.5]), 0.96).round(3)
    array([0.202, 0.962])
    """
    p = np.clip(np.asarray(error_rate, dtype=np.float64), 0.0, 1.0)
    return p / np.maximum(p + (1.0 - p) * (1.0 - expert_accuracy), 1e-12)


def audit_verdict(sample: np.ndarray, label: np.ndarray, first: np.ndarray, second: np.ndarray,
             decisive: np.ndarray | None = None) -> pd.DataFrame:
    """Per audited item: is its label an error, and is it fixed (to ``first``)?

    A first expert's disagreement is evidence, not a verdict: it counts as an error only when a
    second, independent expert also rejects the label, and it fixes the label only when the two
    agree on the class. With experts wrong 4% of the time a right label is then counted wrong
    about 0.2% of the time instead of 4%. When no second expert is left (NaN), the first's
    disagreement counts (as before), but changes nothing. Where the disagreement is
    ``decisive`` (n,) (:func:`dispute_posterior` at least :data:`DECISIVE_DISPUTE`: the
    label's stratum is so often wrong that one expert's word settles it), it counts and fixes
    the label to ``first`` without a second opinion.

    ``wrong`` and ``wrong_after`` are what the estimates count: the label's error before and
    after the audit's correction, the verdict's 0 or 1 (an expert's agreement taken as proof),
    as whole counts.
    """
    disputed = first != label
    alone = np.isnan(second)
    decisive = np.zeros(len(sample), dtype=bool) if decisive is None else disputed & np.asarray(decisive, dtype=bool)
    error = disputed & (decisive | alone | (second != label))
    fix = decisive | (disputed & ~alone & (second == first))
    return pd.DataFrame({ITEM: sample, LABEL: label, "first": first, "second": second, "decisive": decisive,
                         "error": error, "fix": fix, "wrong": error.astype(np.int64),
                         "wrong_after": (error & ~fix).astype(np.int64)})


def estimate_audit(verdict: pd.DataFrame, strata: pd.Series, design: pd.Series, round_: int) -> AuditResult:
    """The audit's estimates, of the labels *after* its own corrections (each fix takes its
    label's error out of its stratum), and the per-route table. Errors are counted as the
    verdict's ``wrong`` (0 or 1)."""
    n_all = len(strata)
    audited = verdict.set_index(ITEM)
    removed = audited["wrong"] - audited["wrong_after"]
    by_design = pd.DataFrame({"population": design.value_counts(),
                              "audited": design.reindex(audited.index).value_counts(),
                              "errors": audited["wrong"].groupby(design.reindex(audited.index).to_numpy()).sum(),
                              "fixed": removed.groupby(design.reindex(audited.index).to_numpy()).sum()}).fillna(0)
    if (by_design["audited"] == 0).any():  # drawn uniformly (see stratified_sample)
        whole = _share(len(audited), float(audited["wrong"].sum()))
    else:
        whole = estimate_error_rate_stratified(by_design, method="wilson")
    whole = after_fixes(whole, float(removed.sum()) / n_all)
    auto = None
    if _AUTO in by_design.index and by_design.loc[_AUTO, "audited"] > 0:
        row = by_design.loc[_AUTO]
        auto = after_fixes(_share(int(row["audited"]), float(row["errors"])), row["fixed"] / row["population"])
    rows = []
    for name in STRATA:
        members = audited.index[strata.reindex(audited.index).to_numpy() == name]
        n, errors = len(members), float(audited.loc[members, "wrong"].sum())
        est = _share(n, errors) if n else None
        rows.append({"round": round_, "stratum": name, "population": int((strata == name).sum()), "audited": n,
                     "errors": errors, "rate": est.rate if est else np.nan, "ci_low": est.low if est else np.nan,
                     "ci_high": est.high if est else np.nan})
    rows.append({"round": round_, "stratum": "all", "population": n_all, "audited": len(audited),
                 "errors": float(audited["wrong"].sum()), "rate": whole.rate, "ci_low": whole.low, "ci_high": whole.high})
    return AuditResult(estimate=whole, auto=auto, strata=pd.DataFrame(rows))


def _share(n: int, errors: float) -> ErrorRateEstimate:
    """``errors`` of ``n`` audited items (the verdicts' ``wrong`` summed), with Wilson's
    interval: :func:`loop.audit.estimate_error_rate`'s."""
    rate = min(max(errors / n, 0.0), 1.0)
    return ErrorRateEstimate(rate, *wilson_interval(rate, n), n, int(round(errors)), 0.95)


@dataclass
class AuditLedger:
    """What the audits so far say about the whole labelled set, carried from round to round.

    A label keeps its verdict until it changes, so a round audits only the labels new or
    changed since the last audit (the *fresh* ones) and adds what they changed to the count the
    earlier audits left (:func:`estimate_carried`).

    ``ids`` (n,) and ``labels`` (n,): every labelled item at the last audit, in arrival order,
    with its label after that audit's corrections; ``errors``: the estimated wrong labels among
    them; ``variance``: that count's; ``audited``: items audited so far.
    """

    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    errors: float = 0.0
    variance: float = 0.0
    audited: int = 0
    changed: int = 0  # labels changed among the last audit's fresh ones (what the next is sized by)

    def old_labels(self, ids: np.ndarray) -> np.ndarray:
        """Each of ``ids``' label at the last audit (NaN: not labelled then), by arrival position
        when ``ids`` extend the last audit's (a program's arrivals do), by id otherwise."""
        n = len(self.ids)
        if len(ids) >= n and np.array_equal(ids[:n], self.ids):
            return np.concatenate([self.labels, np.full(len(ids) - n, np.nan)])
        return pd.Series(self.labels, index=pd.Index(self.ids, dtype=object)).reindex(
            pd.Index(ids, dtype=object)).to_numpy(dtype=np.float64)


def change_terms(verdict: pd.DataFrame, old: np.ndarray) -> np.ndarray:
    """Per audited item (n,): its label's error minus its old label's.

    ``verdict`` as :func:`audit_verdict` gives it (``wrong``: the label's error, before the
    audit's correction); ``old`` (n,): each item's label at the last audit, NaN for an item not
    labelled then (its old error is 0: it was not counted). The experts' answers judge the old
    label too: it was wrong when the first expert's class differs from it, and the second's as
    well when one was asked.
    """
    old = np.asarray(old, dtype=np.float64)
    had = ~np.isnan(old)
    first, second = verdict["first"].to_numpy(dtype=np.float64), verdict["second"].to_numpy(dtype=np.float64)
    old_wrong = (had & (first != old) & (np.isnan(second) | (second != old))).astype(np.float64)
    terms = verdict["wrong"].to_numpy(dtype=np.float64) - old_wrong
    terms[had & (old == verdict[LABEL].to_numpy(dtype=np.float64))] = 0.0  # the same label: the same verdict
    return terms


def estimate_carried(ledger: AuditLedger, terms: np.ndarray, sample_design: np.ndarray, fresh_design: np.ndarray,
                     n_population: int, n_fixed: float) -> tuple[ErrorRateEstimate, float, float]:
    """The whole labelled set's error rate: the earlier audits' count plus what the fresh labels changed.

    A difference estimator. The labels that did not change since the last audit have the
    errors they had then (``ledger.errors``, after that audit's corrections); each fresh label
    (new, or changed since) adds its error and takes its old label's away (``terms`` (n,), from
    :func:`change_terms`, for the audited sample, drawn within the design strata
    ``sample_design`` (n,) of the fresh labels' ``fresh_design`` (m,)): ``E = E_old + sum_h
    N_h mean_h(terms)``, with variance ``V_old + sum_h N_h^2 s_h^2 / n_h``. Each stratum's
    ``s_h^2`` is at least ``p (1 - p)`` at the estimate ``p`` (kept off 0 by half an error
    in the items audited so far): with a few items and no error a sample variance of 0 would
    make a point of the interval. The interval is Wilson's at the effective size
    ``p (1 - p) N^2 / V`` (Kish's for one round: :func:`estimate_error_rate_stratified`).
    ``n_fixed`` errors the audit itself corrected come off afterwards (:func:`after_fixes`; a
    count, or the verdict's ``wrong - wrong_after`` summed).

    Returns the estimate of the labels after the audit's corrections, and the count and variance
    the ledger carries on (the count after the corrections).
    """
    sample_design, fresh_design = np.asarray(sample_design), np.asarray(fresh_design)
    cells = [(int((fresh_design == h).sum()), terms[sample_design == h]) for h in np.unique(sample_design)]
    errors = ledger.errors + sum(size * float(t.mean()) for size, t in cells)
    n_population = max(int(n_population), 1)
    audited = ledger.audited + len(terms)
    p = min(max(errors / n_population, 0.5 / audited), 1.0 - 0.5 / audited)
    floor = p * (1.0 - p)
    variance = ledger.variance + sum(size ** 2 * max(float(t.var(ddof=1)) if len(t) > 1 else 0.0, floor) / len(t)
                                     for size, t in cells)
    rate = min(max(errors / n_population, 0.0), 1.0)
    low, high = wilson_interval(rate, floor * n_population ** 2 / variance)
    whole = ErrorRateEstimate(rate, low, high, audited, int(round(max(errors, 0.0))), 0.95)
    return after_fixes(whole, n_fixed / n_population), max(errors - n_fixed, 0.0), variance


def with_estimate(result: AuditResult, estimate: ErrorRateEstimate, n_population: int) -> AuditResult:
    """``result`` with the whole set's estimate replaced (by :func:`estimate_carried`'s), its
    table's ``all`` row too (the other rows stay the round's own sample's)."""
    table = result.strata.copy()
    whole = table["stratum"] == "all"
    table.loc[whole, ["population", "audited", "errors", "rate", "ci_low", "ci_high"]] = [
        n_population, estimate.n_audited, estimate.n_errors, estimate.rate, estimate.low, estimate.high]
    return dataclasses.replace(result, estimate=estimate, strata=table)


def after_fixes(estimate: ErrorRateEstimate, removed: float) -> ErrorRateEstimate:
    """The estimate less the share of the population the audit itself corrected."""
    return dataclasses.replace(estimate, rate=max(0.0, estimate.rate - removed), low=max(0.0, estimate.low - removed),
                               high=max(0.0, estimate.high - removed))


def confirmed_changes(annotations: pd.DataFrame, before: pd.Series, after: pd.Series) -> int:
    """Label changes backed by two independent annotators, more than back the old label.

    What a team can count as errors fixed without truth: an expert alone, or a reviewer against
    the crowd member before, is one word against another; two people agreeing on a new label,
    neither of them the one who gave the old, is a correction confirmed by adjudication.
    """
    changed = before.index[before.to_numpy() != after.to_numpy()]
    if changed.empty:
        return 0
    # The changed items' rows first, then their ids as strings (converting every annotation's id
    # cost the history each round); string ids are compared as they are.
    ids = annotations[ITEM]
    mine = (ids if pd.api.types.is_string_dtype(ids) else ids.astype(str)).isin(changed).to_numpy()
    frame = annotations.loc[mine, [ITEM, ANNOTATOR, LABEL]].astype({ITEM: str})
    frame = frame.drop_duplicates([ITEM, ANNOTATOR], keep="last")
    votes = frame.groupby([ITEM, LABEL])[ANNOTATOR].nunique()
    for_new = votes.reindex(list(zip(changed, after.reindex(changed).astype(np.int64))), fill_value=0).to_numpy()
    for_old = votes.reindex(list(zip(changed, before.reindex(changed).astype(np.int64))), fill_value=0).to_numpy()
    return int(((for_new >= 2) & (for_new > for_old)).sum())


def floored_logits(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(probs, 1e-6, 1.0))


def tempered(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities (n, k) read at ``temperature`` (softmax of the floored ``log p / T``); inf: uniform."""
    if np.isinf(temperature):
        return np.full_like(probs, 1.0 / probs.shape[1])
    return softmax(floored_logits(probs) / temperature, axis=1)


# --- what the audits so far say ----------------------------------------------------------------


@dataclass
class AuditBook:
    """What the audits so far say, never the truth: per stratum, items audited and counted wrong;
    first checks and second opinions; how often two experts agreed; and, for every audited item,
    the probabilities the router read and the class the experts settled on."""

    stratum_audits: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(0.0, index=list(STRATA), columns=["audited", "errors"]))
    first_checks: int = 0
    seconds: int = 0
    expert_pairs: int = 0
    expert_agreements: int = 0
    evidence: list[pd.DataFrame] = field(default_factory=list)
    strata_log: list[pd.DataFrame] = field(default_factory=list)
    last: AuditResult | None = None

    def second_share(self, doubt: float) -> float:
        """The share of first checks that needed a second opinion so far, after a prior worth
        five checks at ``doubt`` (the posterior's mean doubt in the labels)."""
        return (self.seconds + 5 * doubt) / (self.first_checks + 5)

    def error_rates(self, doubt: float) -> pd.Series:
        """Each stratum's error rate as the audits so far count it, after a prior worth
        :data:`_PRIOR_CHECKS` audited items at ``doubt``."""
        counts = self.stratum_audits
        return (counts["errors"] + _PRIOR_CHECKS * doubt) / (counts["audited"] + _PRIOR_CHECKS)

    def expert_accuracy(self) -> float:
        """The experts' accuracy as the audits so far show it: two independent experts agree
        about ``a**2`` of the time, after a prior of :data:`_PRIOR_EXPERT_ACCURACY` worth
        :data:`_PRIOR_PAIRS` pairs. The pairs are disputed items, where experts agree less
        often than on average, so the estimate leans low: a conservative side, as it makes a
        dispute less decisive."""
        agree = ((self.expert_agreements + _PRIOR_PAIRS * _PRIOR_EXPERT_ACCURACY ** 2)
                 / (self.expert_pairs + _PRIOR_PAIRS))
        return float(np.sqrt(agree))

    def record(self, verdict: pd.DataFrame, sample_strata: np.ndarray, n_seconds: int, result: AuditResult,
               router: pd.DataFrame) -> None:
        """Count a round's audit: its verdicts (:func:`audit_verdict`) by stratum, its second
        opinions and the experts' agreement, its result; and learn from it (:meth:`learn`)."""
        self.first_checks, self.seconds = self.first_checks + len(verdict), self.seconds + n_seconds
        asked = verdict[verdict["second"].notna()]
        self.expert_pairs += len(asked)
        self.expert_agreements += int((asked["second"] == asked["first"]).sum())
        tally = pd.DataFrame({"stratum": sample_strata, "error": verdict["error"].to_numpy()}).groupby("stratum")
        self.stratum_audits = self.stratum_audits.add(pd.DataFrame({"audited": tally.size(),
                                                                    "errors": tally["error"].sum()}), fill_value=0)
        self.learn(verdict, router)
        self.strata_log.append(result.strata)
        self.last = result

    def learn(self, verdict: pd.DataFrame, router: pd.DataFrame) -> None:
        """Keep, for each audited item, the probabilities the router read this round (``router``,
        by item id) and the class the experts settled on (the label when it stood, the two
        experts' class when they corrected it; an item whose two experts rejected the label and
        differ is left out): what the auto-accept bound calibrates the router against."""
        settled = np.where(~verdict["error"], verdict[LABEL], np.where(verdict["fix"], verdict["first"], -1))
        where = router.index.get_indexer(verdict[ITEM].astype(str))
        known = (settled >= 0) & (where >= 0)
        self.evidence.append(pd.DataFrame({"probs": list(router.to_numpy()[where[known]]),
                                           LABEL: settled[known].astype(np.int64)}))


# --- the auto-accept bound ---------------------------------------------------------------------


def _share_high(risk: np.ndarray) -> np.ndarray:
    """For each prefix of ``risk`` (items' probabilities of being wrong, in the order accepted),
    the 95% upper bound of its share of errors: mean + 1.645 standard deviations of the share."""
    m = np.arange(1, risk.size + 1)
    return np.cumsum(risk) / m + 1.645 * np.sqrt(np.cumsum(risk * (1.0 - risk))) / m


class AutoAcceptBound:
    """How many items a round may auto-accept so that their labels keep ``bound``
    (``thresholds.max_auto_accept_error``; None: no bound).

    :meth:`calibrate` (before a round's plan) sets the temperature the router's probabilities
    are read at from the audits; :meth:`apply` holds back the auto-accepted items beyond what the
    bound allows. See the program's docstring (*The auto-accept bound*).

    Attributes
    ----------
    temperature : float or None
        None: unbounded; inf: closed (before an audit supports anything).
    reason : str
        Why, as the last calibration found it.
    cutoff : float
        The lowest confidence auto-accepted in the last round (1: none; without a bound, ``cutoff``).
    region : float
        The configured ``cutoff``: audited items at this confidence or more calibrate the tail.
    log : list of dict
        Every calibration (:data:`T.AUTO_ACCEPT_BOUND_CSV`).
    """

    def __init__(self, bound: float | None, cutoff: float) -> None:
        self.bound = bound
        self.temperature: float | None = np.inf if bound is not None else None
        self.reason = "no audit yet supports auto-accepting anything (max_auto_accept_error)"
        self.cutoff = cutoff
        self.region = cutoff  # the router's auto-accept confidence: where the bound acts
        self.log: list[dict[str, Any]] = []

    def calibrate(self, round_: int, book: AuditBook) -> str | None:
        """Calibrate what the router reads from the audits so far; returns the tag text that says
        why (None when there is no bound or no audit yet).

        While the last audit's 95% upper bound on the auto-accepted labels' error exceeds the
        bound (at a few percent of audit spend it does: 30 audited labels without an error
        still allow 11%), the router's probabilities are read at a temperature fitted on every
        audited item so far (the class the experts settled on;
        :class:`loop.calibration.TemperatureScaling`), at the upper end of its 95%
        profile-likelihood interval and never below 1, or of the fit on those the router would
        auto-accept when that is higher (:meth:`_temperature`), and a round auto-accepts its most
        confident items while their share of errors stays within the bound with 95%
        probability under the tempered risks. A temperature, not a constant factor on the
        risk: an overconfident posterior
        (music genre's, 17% wrong at 0.9) is most overconfident near 1, where the model and a
        crowd label agree on the same mistake, and tempering raises the risk there the most.
        The posterior combines the model and the annotators, so a model's own temperature on
        gold cannot calibrate it. Before the first audit nothing supports auto-accepting, and
        nothing is. Labels auto-accepted before stay: the audits keep checking them, and
        withdrawing them would restore labels the posterior judged wrong.
        """
        bound = self.bound
        if self.temperature is None or book.last is None:
            return None
        auto = book.last.auto
        evidence = pd.concat(book.evidence, ignore_index=True)
        audited = "no auto-accepted label audited" if auto is None else \
            f"{auto.high:.3f} ({auto.n_errors}/{auto.n_audited} audited wrong)"
        if auto is not None and auto.high <= bound:
            temperature = 1.0
            why = f"the audited 95% upper bound of auto-accepted labels' error, {audited}, is within {bound:g}"
        elif evidence.empty:
            temperature, why = np.inf, "no audited item to calibrate the router on yet"
        else:
            temperature, why = self._temperature(np.stack(evidence["probs"].to_numpy()), evidence[LABEL].to_numpy())
            why = f"the audited 95% upper bound of auto-accepted labels' error, {audited}, is not within {bound:g}; {why}"
        self.reason = why
        self.log.append({"round": round_, "temperature": temperature, "auto_accept_ci_high":
                         np.nan if auto is None else auto.high, "max_auto_accept_error": bound,
                         "audited": len(evidence), "reason": why})
        self.temperature = temperature
        return f"round {round_}: {why}"

    def _temperature(self, probs: np.ndarray, settled: np.ndarray) -> tuple[float, str]:
        """The temperature the router's probabilities are read at, and why: the larger of the upper
        ends of the 95% intervals fitted on every audited item and on those the router would
        auto-accept (top probability at least its ``auto_accept_confidence``); inf (closed) while
        none of the latter has been audited.

        A temperature fitted on every audited item is set by the middling ones, and says little of
        the confident tail the bound opens: music genre's posterior, about as often wrong as it said
        over all audited items (6 of 24 against 4.9 on one program), was 5 to 11% wrong above 0.97,
        where the model and a crowd label agree on the same mistake; five audited items, one of them
        above 0.9, read it at temperature 1. So the tail is calibrated on its own audited items too,
        and with few of them its interval, hence the temperature, stays wide.
        """
        top = probs.max(axis=1)
        found_wrong = int((probs.argmax(axis=1) != settled).sum())
        seen = (f"the router's top class was wrong on {found_wrong} of {len(settled)} audited items against "
                f"{float((1.0 - top).sum()):.1f} it predicted")
        tail = top >= self.region
        if not tail.any():
            return np.inf, f"{seen}, and no audited item had {self.region:g} or more to calibrate where it auto-accepts"
        # Floored at 1e-6: one confident mistake among a few dozen audited items should raise
        # the temperature, not send it to its bound.
        logits = floored_logits(probs)
        whole = TemperatureScaling(kind="logits").fit(logits, settled)
        confident = TemperatureScaling(kind="logits").fit(logits[tail], settled[tail])
        temperature = max(1.0, whole.temperature_high_, confident.temperature_high_)
        return temperature, (f"{seen}; {int((probs[tail].argmax(axis=1) != settled[tail]).sum())} of the "
                             f"{int(tail.sum())} at {self.region:g} or more: its probabilities are read at temperature "
                             f"{temperature:.2f}, the upper end of the 95% intervals of the fitted {whole.temperature_:.2f} "
                             f"(all audited) and {confident.temperature_:.2f} (those at {self.region:g} or more)")

    def hold_deferred(self, plan: pd.DataFrame, candidate_ids: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
        """The ``plan`` with its deferred accepts (items over budget that take the consensus's class,
        ``program.deferred_accept_confidence``) held to the bound as well: they change a label
        without a person, as an auto-accept does. They take what the round's auto-accepts leave of
        it, the most confident first, by :meth:`apply`'s rule; the rest keep their label.

        ``candidate_ids`` (n,) and ``probs`` (n, k): as for :meth:`apply`.
        """
        if self.temperature is None:
            return plan
        actions, routes = plan[ACTION].to_numpy(dtype=object), plan[ROUTE].to_numpy(dtype=object)
        accepted = actions == Action.AUTO_ACCEPT.value
        deferred = np.flatnonzero(accepted & (routes != Action.AUTO_ACCEPT.value))
        if deferred.size == 0:
            return plan
        where = pd.Index(candidate_ids).get_indexer(plan[ITEM].astype(str))
        confidence = tempered(probs[where], self.temperature).max(axis=1)
        admitted = np.flatnonzero(accepted & (routes == Action.AUTO_ACCEPT.value))
        order = deferred[np.argsort(-confidence[deferred], kind="stable")]
        share = _share_high(1.0 - confidence[np.concatenate([admitted, order])])[admitted.size:]
        within = np.flatnonzero(share <= self.bound)
        held = order[int(within.max()) + 1 if within.size else 0:]
        if held.size == 0:
            return plan
        plan = plan.reset_index(drop=True)
        plan.loc[held, ACTION] = Action.KEEP.value
        plan.loc[held, REASON] = plan.loc[held, REASON].to_numpy(dtype=object) + \
            f"; deferred accept held under max_auto_accept_error: {self.reason}"
        return plan

    def apply(self, decisions: pd.DataFrame, candidate_ids: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
        """The routing ``decisions`` with the auto-accepted items beyond the bound sent to review.

        ``candidate_ids`` (n,) and ``probs`` (n, k): the candidates and the probabilities the
        router read. The most confident first, as many as keep their share of errors within the
        bound with 95% probability under the tempered risks (mean + 1.645 standard deviations of
        the share; a mean alone lets a few dozen labels overshoot half the time). An item held
        back goes to review, where the Router's rule 5 would send it.
        """
        if self.temperature is None:
            return decisions
        where = pd.Index(candidate_ids).get_indexer(decisions[ITEM].astype(str))
        raw = probs[where].max(axis=1)
        confidence = tempered(probs[where], self.temperature).max(axis=1)
        auto = np.flatnonzero(decisions[ROUTE].to_numpy() == Action.AUTO_ACCEPT.value)
        order = auto[np.argsort(-confidence[auto], kind="stable")]
        share = _share_high(1.0 - confidence[order])
        within = np.flatnonzero(share <= self.bound)
        keep = int(within.max()) + 1 if within.size else 0
        held = order[keep:]
        # In the router's own terms: the lowest confidence auto-accepted this round (1: none).
        self.cutoff = float(raw[order[:keep]].min()) if keep else 1.0
        if held.size == 0:
            return decisions
        decisions = decisions.reset_index(drop=True)
        decisions.loc[held, ROUTE] = Action.REVIEW.value
        decisions.loc[held, REASON] = [f"confidence {r:.4f}, {c:.4f} at the audited temperature: held for review "
                                       f"under max_auto_accept_error: {self.reason}"
                                       for r, c in zip(raw[held], confidence[held])]
        return decisions
