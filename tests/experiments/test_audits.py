"""experiments.audits: what the audits so far say, and the auto-accept bound they calibrate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments.audits import STRATA, AuditBook, AutoAcceptBound, audit_verdict
from loop.columns import ITEM, REASON, ROUTE


def _decisions(ids, routes) -> pd.DataFrame:
    return pd.DataFrame({ITEM: ids, ROUTE: routes, REASON: "router"})


def test_without_a_bound_the_routers_decisions_stand() -> None:
    bound = AutoAcceptBound(None, cutoff=0.9)
    decisions = _decisions(["a", "b"], ["auto_accept", "review"])
    assert bound.apply(decisions, np.array(["a", "b"]), np.array([[0.99, 0.01], [0.6, 0.4]])) is decisions
    assert bound.calibrate(1, AuditBook()) is None and bound.cutoff == 0.9


def test_before_any_audit_a_bound_auto_accepts_nothing_and_says_why() -> None:
    bound = AutoAcceptBound(0.02, cutoff=0.9)
    out = bound.apply(_decisions(["a", "b"], ["auto_accept", "auto_accept"]), np.array(["a", "b"]),
                      np.array([[0.999, 0.001], [0.98, 0.02]]))
    assert list(out[ROUTE]) == ["review", "review"] and bound.cutoff == 1.0
    assert out[REASON].str.contains("no audit yet supports auto-accepting").all()


def test_an_audit_that_clears_the_auto_accepted_stratum_opens_the_bound() -> None:
    book = AuditBook()
    sample = np.array(["a", "b", "c"], dtype=object)
    labels = np.array([0, 1, 0])
    verdict = audit_verdict(sample, labels, labels, np.full(3, np.nan))
    router = pd.DataFrame([[0.99, 0.01], [0.02, 0.98], [0.97, 0.03]], index=sample)
    from loop.audit import estimate_error_rate

    from experiments.audits import AuditResult

    result = AuditResult(estimate=estimate_error_rate(300, 0), auto=estimate_error_rate(300, 0), strata=pd.DataFrame())
    book.record(verdict, np.array(["auto_accepted"] * 3), 0, result, router)
    bound = AutoAcceptBound(0.02, cutoff=0.9)
    why = bound.calibrate(2, book)
    assert bound.temperature == 1.0 and "is within 0.02" in why and why.startswith("round 2: ")
    assert book.first_checks == 3 and book.stratum_audits.loc["auto_accepted", "audited"] == 3
    assert set(book.error_rates(0.1).index) == set(STRATA)
    assert book.expert_accuracy() == pytest.approx(0.95)


@pytest.mark.parametrize("module", ["experiments.audits", "experiments.measure", "experiments.live"])
def test_the_public_names_are_listed_once_and_exist(module) -> None:
    import importlib

    m = importlib.import_module(module)
    assert sorted(m.__all__) == sorted(set(m.__all__)) and all(hasattr(m, name) for name in m.__all__)
