"""Numbers that do not need truth: does the audit's interval cover the truth, and does the
auto-accept bound hold? (issue 11 §1)

Targets:

- the 95% interval of ``audit_error_rate`` covers ``true_error_rate`` in at least 93% of
  (program, round) cases, over 40 digits programs and 20 music-genre programs;
- its mean bias (estimate minus truth) within +-0.01;
- its mean width at most 1.25x today's at the same audit spend (digits: 0.256, from issue 11);
- with ``thresholds.max_auto_accept_error`` set (``--bound``, default 0.02), the true error of
  the labels auto-accepted over a program stays within it in at least 95% of programs, on
  digits and on music genre.

How: tiered programs (the default thresholds of :class:`experiments.config.ProgramConfig`,
auto-accept 0.9), four rounds after the seed round, the sizes and gate of
:mod:`benchmarks.program` (digits: 250 items a round; music genre: 120, the real crowd
replayed), audit rate 0.03, the budget of :func:`benchmarks.program.equal_budget` (half of
triple annotation's planned cost) from each seed's world; seeds 0-39 (digits) and 0-19 (music
genre). Every round r >= 1 is a case. A program's auto-accepted labels are those of every round
(``items_auto_accept``), each graded after its round (``auto_accept_error_rate``); a program that
auto-accepted nothing complies (it is counted apart).

Run::

    .venv/bin/python benchmarks/audit_coverage.py                       # both datasets, bound 0.02
    .venv/bin/python benchmarks/audit_coverage.py --bound none          # no bound: today's routing
    .venv/bin/python benchmarks/audit_coverage.py --dataset digits --seeds 10

The music-genre part needs ../shared/data (or LABELLOOP_SHARED_DATA; skipped otherwise). The
script runs against any checkout: on one without the bound (``--bound none``) it measures
today's audit.

``--audit-scope fresh`` (``program.audit_scope``) audits the labels new or changed since the last
audit only, and ``--audit-rate`` sets ``program.audit_rate``; the budget stays the one the default
audit's rate gives (:func:`benchmarks.program.equal_budget` reads the rate), so that a scope and
rate compared with today's at the same expert spend also have the same crowd budget::

    .venv/bin/python benchmarks/audit_coverage.py --bound none --audit-scope fresh --audit-rate 0.08
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.program import config, equal_budget  # noqa: E402
from experiments import tracking as T  # noqa: E402
from experiments.world import build_world  # noqa: E402
from loop.columns import ITEM, LABEL  # noqa: E402
from loop.datasets import shared_data_dir  # noqa: E402

TODAY_WIDTH = {"digits": 0.256}  # issue 11: the single-expert audit's mean interval width on digits
COVERAGE, BIAS, WIDTH, COMPLIANCE = 0.93, 0.01, 1.25, 0.95


@dataclasses.dataclass(frozen=True)
class Job:
    """One program: its dataset and seed, the auto-accept bound, how the audit counts errors, and
    the audit's scope and rate (None: the config's)."""

    dataset: str
    seed: int
    bound: float | None
    count: str = "plain"
    audit_scope: str | None = None
    audit_rate: float | None = None


def run_one(job: Job) -> pd.DataFrame:
    """One tiered program's rounds (r >= 1) with what this benchmark reads."""
    from experiments.program import run_program
    from loop.store import LabelStore

    dataset, seed, bound = job.dataset, job.seed, job.bound
    cfg = config(dataset, seed).replace(audit_count=job.count)
    world = build_world(cfg)
    # The budget at the default audit's rate: another scope or rate changes the audit, not the crowd's money.
    cfg = cfg.replace(budget_per_round=round(equal_budget(cfg, world), 2))
    if job.audit_rate is not None:
        cfg = cfg.replace(audit_rate=job.audit_rate)
    if job.audit_scope is not None:
        cfg = cfg.replace(audit_scope=job.audit_scope)
    if bound is not None:
        cfg = cfg.replace(thresholds=dataclasses.replace(cfg.thresholds, max_auto_accept_error=bound))
    with LabelStore("sqlite://") as store, _watching_audits(world.truth) as watched:
        result = run_program(cfg, world=world, store=store)
        annotations = store.annotations_frame(result.stream)
    # Audits work from 20:00 of their round's simulated day (experiments.program).
    stamps = pd.to_datetime(annotations["created_at"], utc=True)
    audit = annotations[stamps.dt.hour >= 20]
    rounds = result.rounds.loc[1:].reset_index()
    wanted = [T.TRUE_ERROR_RATE, T.AUDIT_ERROR_RATE, T.AUDIT_CI_LOW, T.AUDIT_CI_HIGH, T.AUDIT_N,
              T.AUTO_ACCEPT_ERROR_RATE, T.ACTION_COUNT_PREFIX + "auto_accept", T.AUTO_ACCEPT_ESTIMATE,
              T.AUTO_ACCEPT_ESTIMATE_CI_HIGH, T.ERRORS_FIXED_CONFIRMED, T.ERRORS_FIXED]
    rounds = rounds.merge(watched, on="round", how="left") if len(watched) else rounds
    wanted += [c for c in watched.columns if c != "round"]
    out = rounds[["round"] + [c for c in wanted if c in rounds.columns]].assign(
        dataset=dataset, seed=seed, final_error_rate=result.final_error_rate, errors_removed=result.errors_removed,
        audit_labels=len(audit), audit_cost=float(audit["cost"].sum()))
    return out


@contextlib.contextmanager
def _watching_audits(truth: pd.Series):
    """Measurement only (the program never sees it): each round, the plain count's estimate
    (an expert's agreement taken as proof) beside the program's, and how often the first expert
    agreed with a truly wrong label against the rate the latent-class model assumed there."""
    import experiments.program as program

    rows: dict[int, dict[str, float]] = {}
    estimate, latent = program.estimate_audit, program.latent_verdict

    def watched_latent(verdict, sample_design, confusion):
        out, posterior = latent(verdict, sample_design, confusion)
        label = verdict[LABEL].to_numpy(dtype=np.int64)
        wrong = truth.reindex(verdict[ITEM].astype(str)).to_numpy() != label
        rows.setdefault(-1, {}).update(
            wrong_audited=float(wrong.sum()), first_agreed_wrong=float((verdict["first"].to_numpy()[wrong] == label[wrong]).sum()),
            assumed_agreement=float(confusion.agreement_[label[wrong]].sum()), posterior_wrong=float(out["wrong"].sum()),
            plain_wrong=float(verdict["error"].sum()), audited=float(len(verdict)))
        return out, posterior

    def watched_estimate(verdict, strata, design, round_):
        plain = estimate(verdict.assign(wrong=verdict["error"].astype(np.float64),
                                        wrong_after=(verdict["error"] & ~verdict["fix"]).astype(np.float64)),
                         strata, design, round_).estimate
        rows[round_] = {**rows.pop(-1, {}), "plain_error_rate": plain.rate, "plain_ci_low": plain.low,
                        "plain_ci_high": plain.high}
        return estimate(verdict, strata, design, round_)

    program.estimate_audit, program.latent_verdict = watched_estimate, watched_latent
    frame = pd.DataFrame()
    try:
        yield frame
    finally:
        program.estimate_audit, program.latent_verdict = estimate, latent
        table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("round").reset_index()
        for column in table.columns:
            frame[column] = table[column]


def summarise(dataset: str, table: pd.DataFrame, bound: float | None) -> list[tuple[str, str, bool | None]]:
    t = table
    covered = (t[T.AUDIT_CI_LOW] <= t[T.TRUE_ERROR_RATE]) & (t[T.TRUE_ERROR_RATE] <= t[T.AUDIT_CI_HIGH])
    error = t[T.AUDIT_ERROR_RATE] - t[T.TRUE_ERROR_RATE]
    bias = float(error.mean())
    # Rounds of one program share its items: the standard error of the bias is over programs.
    by_program = error.groupby(t["seed"]).mean()
    bias_se = float(by_program.std(ddof=1) / np.sqrt(len(by_program))) if len(by_program) > 1 else float("nan")
    width = float((t[T.AUDIT_CI_HIGH] - t[T.AUDIT_CI_LOW]).mean())
    too_high = int(((t[T.AUDIT_CI_LOW] > t[T.TRUE_ERROR_RATE])).sum())
    too_low = int(((t[T.AUDIT_CI_HIGH] < t[T.TRUE_ERROR_RATE])).sum())
    rows: list[tuple[str, str, bool | None]] = [
        ("coverage >= 93%", f"{covered.mean():.1%} ({int(covered.sum())}/{len(t)} cases; misses: {too_high} too high, "
                            f"{too_low} too low)", covered.mean() >= COVERAGE),
        ("mean bias within +-0.01", f"{bias:+.4f} (standard error {bias_se:.4f} over programs; mean absolute "
                                    f"error {float(error.abs().mean()):.4f})", abs(bias) <= BIAS),
    ]
    ref = TODAY_WIDTH.get(dataset)
    rows.append(("mean width <= 1.25x today's", f"{width:.3f}" + (f" = {width / ref:.2f}x today's {ref}" if ref else
                                                                   " (no reference figure: run --bound none on today's code)"),
                 width <= WIDTH * ref if ref else None))
    if "wrong_audited" in t:
        rows += _plain_rows(t, error)
    auto = T.ACTION_COUNT_PREFIX + "auto_accept"
    per_program = t.assign(wrong=t[T.AUTO_ACCEPT_ERROR_RATE].fillna(0) * t[auto]).groupby("seed").agg(
        wrong=("wrong", "sum"), accepted=(auto, "sum"))
    rate = per_program["wrong"] / per_program["accepted"].where(per_program["accepted"] > 0)
    limit = bound if bound is not None else 0.02
    complies = rate.isna() | (rate <= limit + 1e-12)
    none = int(rate.isna().sum())
    rows.append((f"auto-accepted labels' true error <= {limit:g} in >= 95% of programs",
                 f"{complies.mean():.1%} ({int(complies.sum())}/{len(complies)}; {none} auto-accepted nothing); "
                 f"pooled error {per_program['wrong'].sum() / max(per_program['accepted'].sum(), 1):.4f} over "
                 f"{int(per_program['accepted'].sum())} labels, worst program {rate.max():.4f}",
                 complies.mean() >= COMPLIANCE))
    return rows


def _plain_rows(t: pd.DataFrame, error: pd.Series) -> list[tuple[str, str, bool | None]]:
    """The plain count's figures beside the program's, paired by case, and how often the first
    expert agreed with a truly wrong label against what the latent-class model assumed."""
    plain = t["plain_error_rate"] - t[T.TRUE_ERROR_RATE]
    covered = (t["plain_ci_low"] <= t[T.TRUE_ERROR_RATE]) & (t[T.TRUE_ERROR_RATE] <= t["plain_ci_high"])
    per_program = plain.groupby(t["seed"]).mean()
    change = (error - plain).groupby(t["seed"]).mean()
    se = float(per_program.std(ddof=1) / np.sqrt(len(per_program))) if len(per_program) > 1 else float("nan")
    change_se = float(change.std(ddof=1) / np.sqrt(len(change))) if len(change) > 1 else float("nan")
    wrong = t["wrong_audited"].sum()
    return [
        ("plain count (same runs)", f"bias {plain.mean():+.4f} (standard error {se:.4f}), coverage {covered.mean():.1%}, "
                                    f"width {float((t['plain_ci_high'] - t['plain_ci_low']).mean()):.3f}; the latent "
                                    f"class moves the bias by {change.mean():+.4f} (paired, s.e. {change_se:.4f})", None),
        ("first expert agrees with a wrong label", f"{t['first_agreed_wrong'].sum() / wrong:.4f} of {int(wrong)} truly "
                                                   f"wrong audited labels; the model assumed "
                                                   f"{t['assumed_agreement'].sum() / wrong:.4f}, the plain count 0; "
                                                   f"errors counted {t['plain_wrong'].sum():.0f} plain, "
                                                   f"{t['posterior_wrong'].sum():.1f} latent, of "
                                                   f"{int(t['audited'].sum())} audited", None),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["digits", "music_genre", "all"], default="all")
    parser.add_argument("--seeds", type=int, default=None, help="programs per dataset (default 40 digits, 20 music)")
    parser.add_argument("--count", choices=["latent", "plain"], default="plain",
                        help="program.audit_count (default: the program's, plain; the plain count is reported "
                             "beside either)")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--summarise", type=Path, nargs="+", default=None,
                        help="only summarise these saved CSVs (--save's, one dataset) together")
    parser.add_argument("--bound", default="0.02", help="thresholds.max_auto_accept_error, or 'none'")
    parser.add_argument("--processes", type=int, default=2, help="at most 2 on a shared machine")
    parser.add_argument("--save", type=Path, default=None,
                        help="write every (program, round) case to this CSV (each program's as it ends)")
    parser.add_argument("--audit-scope", choices=["all", "fresh"], default=None,
                        help="program.audit_scope (default: the config's, all)")
    parser.add_argument("--audit-rate", type=float, default=None,
                        help="program.audit_rate (default: the config's, 0.03); the budget stays the default's")
    args = parser.parse_args(argv)
    bound = None if args.bound == "none" else float(args.bound)
    if args.summarise:
        table = pd.concat([pd.read_csv(path) for path in args.summarise], ignore_index=True)
        print(f"\n== {', '.join(table['dataset'].unique())}: {table['seed'].nunique()} programs, {len(table)} cases")
        for name, value, met in summarise(str(table["dataset"].iloc[0]), table, bound):
            print(f"  {'    ' if met is None else 'MET ' if met else 'MISS'}  {name}: {value}")
        return 0
    datasets = ["digits", "music_genre"] if args.dataset == "all" else [args.dataset]
    ok = True
    for dataset in datasets:
        if dataset == "music_genre" and shared_data_dir() is None:
            print("\n== music_genre: skipped, ../shared/data is not on this machine")
            continue
        n = args.seeds or (40 if dataset == "digits" else 20)
        start = time.perf_counter()
        seeds = range(args.first_seed, args.first_seed + n)
        jobs = [Job(dataset, seed, bound, args.count, args.audit_scope, args.audit_rate) for seed in seeds]
        path = None if args.save is None else args.save.with_name(f"{args.save.stem}-{dataset}{args.save.suffix}")
        parts = []
        with multiprocessing.get_context("spawn").Pool(max(1, min(args.processes, 2))) as pool:
            # Each program's cases are saved as it ends: a run stopped early still leaves them.
            for part in pool.imap_unordered(run_one, jobs, chunksize=1):
                parts.append(part)
                if path is not None:
                    pd.concat(parts, ignore_index=True).sort_values(["seed", "round"]).to_csv(path, index=False)
        table = pd.concat(parts, ignore_index=True).sort_values(["seed", "round"], ignore_index=True)
        print(f"\n== {dataset}: {n} tiered programs (seeds {seeds[0]}-{seeds[-1]}), {len(table)} (program, round) cases; "
              f"max_auto_accept_error {bound}; audit count {args.count}, scope {args.audit_scope or 'config'}, rate "
              f"{args.audit_rate if args.audit_rate is not None else 'config'}; {time.perf_counter() - start:.0f} s")
        by_round = table.groupby("round").agg(
            true=(T.TRUE_ERROR_RATE, "mean"), audit=(T.AUDIT_ERROR_RATE, "mean"),
            width=(T.AUDIT_CI_HIGH, "mean"), audited=(T.AUDIT_N, "mean"))
        by_round["width"] -= table.groupby("round")[T.AUDIT_CI_LOW].mean()
        print(by_round.to_string(float_format=lambda v: f"{v:.4f}"))
        programs = table.groupby("seed").agg(final=("final_error_rate", "first"), removed=("errors_removed", "first"),
                                             labels=("audit_labels", "first"), cost=("audit_cost", "first"))
        print(f"per program (mean): final true error rate {programs['final'].mean():.4f}, errors removed "
              f"{programs['removed'].mean():.1f}, audit spend {programs['labels'].mean():.1f} expert labels "
              f"costing {programs['cost'].mean():.2f}")
        for name, value, met in summarise(dataset, table, bound):
            ok &= met is not False
            print(f"  {'    ' if met is None else 'MET ' if met else 'MISS'}  {name}: {value}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
