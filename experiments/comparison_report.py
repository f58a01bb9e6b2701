"""What a comparison tells a manager: the winner, its saving, a description and one report.

Pure functions of a comparison's table (:func:`experiments.compare.comparison_table`) and its
programs (:class:`experiments.program.ProgramResult`); :func:`experiments.compare.main` logs
what they return on the parent run (``mlflow.note.content``, ``report.html``, ``report.png``).

**The winner** answers "which strategy removes the most errors per unit of cost": the lowest
``cost_per_error_removed`` (``program_cost / errors_removed``) among the strategies that
removed any errors, ties broken by the lower ``final_error_rate``, then by the order run. No
strategy removed an error: no winner.

**The saving** of the winner against a baseline strategy: what the baseline would pay to remove
the winner's errors at its own cost per error removed, minus what the winner paid::

    saving = baseline.cost_per_error_removed * winner.errors_removed - winner.program_cost

in ``program.currency``; undefined (NaN, shown as "-") when the baseline removed no errors.
Both use the simulation's truth (``errors_removed``); the tables show each truth-needing figure
beside its estimate from audits alone.

Examples
--------
>>> import pandas as pd
>>> table = pd.DataFrame({"strategy": ["random", "tiered"], "program_cost": [50.0, 50.0],
...                       "errors_removed": [10, 40], "cost_per_error_removed": [5.0, 1.25],
...                       "final_error_rate": [0.2, 0.05]})
>>> winner(table)
'tiered'
>>> savings(table, "tiered")
{'random': 150.0}
"""

from __future__ import annotations

import base64
import html
import io
import math
import textwrap
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from . import tracking as T

__all__ = ["SAVING_RULE", "WINNER_RULE", "description", "display_table", "gate_table", "report_figure", "report_html",
           "round_figure", "shown",
           "savings", "winner"]

WINNER_RULE = ("the strategy that removes the most errors per unit of cost: the lowest program cost per error "
               "removed among the strategies that removed any errors (ties: the lower final error rate)")
SAVING_RULE = ("what the baseline would pay to remove the winner's errors at its own cost per error removed, "
               "minus the winner's program cost")
_MISSING = "-"


def winner(table: pd.DataFrame) -> str | None:
    """The strategy with the lowest cost per error removed among those that removed errors.

    Parameters
    ----------
    table : DataFrame
        One row per strategy with ``strategy``, ``errors_removed``, ``cost_per_error_removed``
        and ``final_error_rate``.

    Returns
    -------
    str or None
        None when no strategy removed an error.
    """
    removed = table[(table[T.ERRORS_REMOVED] > 0) & np.isfinite(table[T.COST_PER_ERROR_REMOVED].astype(float))]
    if removed.empty:
        return None
    ranked = removed.sort_values([T.COST_PER_ERROR_REMOVED, T.FINAL_ERROR_RATE], kind="stable")
    return str(ranked["strategy"].iloc[0])


def savings(table: pd.DataFrame, best: str | None) -> dict[str, float]:
    """The winner's saving against every other strategy as the baseline (module docstring).

    Returns
    -------
    dict of baseline strategy -> saving (NaN when the baseline removed no errors); empty
    without a winner.
    """
    if best is None:
        return {}
    rows = table.set_index("strategy")
    won = rows.loc[best]
    out = {}
    for name, row in rows.drop(index=best).iterrows():
        per_error = float(row[T.COST_PER_ERROR_REMOVED])
        out[str(name)] = per_error * float(won[T.ERRORS_REMOVED]) - float(won[T.PROGRAM_COST]) \
            if math.isfinite(per_error) and row[T.ERRORS_REMOVED] > 0 else math.nan
    return out


def round_figure(value: float, digits: int = 4) -> float:
    """``value`` to ``digits`` significant figures (NaN and inf as they are).

    >>> round_figure(139.49509838978676)
    139.5
    """
    value = float(value)
    return float(f"{value:.{digits}g}") if math.isfinite(value) else value


def shown(value: Any, form: str) -> str:
    """A figure as table text, ``'-'`` where it is not a number (no error removed, no value set).

    >>> shown(0.0312, ".2%"), shown(float("nan"), ".1f")
    ('3.12%', '-')
    """
    value = float(value)
    return format(value, form) if math.isfinite(value) else _MISSING


def display_table(table: pd.DataFrame, *, currency: str, best: str | None = None,
                  roi: bool = False) -> pd.DataFrame:
    """The comparison as text for people: one row per strategy, the unit in the headers.

    Columns: strategy, final error rate (true; estimated, with its 95% interval), program cost, errors removed, cost
    per error removed, ROI (when ``roi``), model accuracy. A missing figure shows as ``-``.
    """
    rows = []
    for row in table.itertuples(index=False):
        name = row.strategy + (" (winner)" if row.strategy == best else "")
        cells = {"strategy": name,
                 "final error rate (true)": shown(row.final_error_rate, ".2%"),
                 # An audit of a few dozen items can be far from the truth: the estimate alone
                 # read as a fact (4.9% against a true 21% in one demo) misleads.
                 "final error rate (estimated, 95% interval)": _with_interval(
                     row.final_error_rate_estimate, row.final_error_rate_estimate_ci_low,
                     row.final_error_rate_estimate_ci_high),
                 f"program cost ({currency})": shown(row.program_cost, ".1f"),
                 "errors removed": shown(row.errors_removed, ".0f"),
                 f"cost per error removed ({currency})": shown(row.cost_per_error_removed, ".2f")}
        if roi:
            cells["ROI"] = shown(row.roi, ".2f")
        cells["model accuracy"] = shown(row.model_accuracy, ".3f")
        rows.append(cells)
    return pd.DataFrame(rows)


def _with_interval(value: float, low: float, high: float) -> str:
    text = shown(value, ".2%")
    if text == _MISSING or not (math.isfinite(low) and math.isfinite(high)):
        return text
    return f"{text} ({low * 100:.1f}-{high:.1%})"


def _markdown(frame: pd.DataFrame) -> str:
    cells = lambda values: "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"  # noqa: E731
    align = ["---"] + ["---:"] * (frame.shape[1] - 1)
    return "\n".join([cells(frame.columns), cells(align), *(cells(r) for r in frame.itertuples(index=False))])


def _savings_frame(saved: Mapping[str, float], *, currency: str) -> pd.DataFrame:
    return pd.DataFrame({"baseline": list(saved), f"saving ({currency})": [shown(v, ".1f") for v in saved.values()]})


def _summary_lines(table: pd.DataFrame, best: str | None, saved: Mapping[str, float], *, currency: str,
                   value_per_error_removed: float | None) -> list[str]:
    if best is None:
        lines = ["**No winner**: no strategy removed any errors."]
    else:
        won = table.set_index("strategy").loc[best]
        lines = [f"**Winner: {best}**, {won[T.COST_PER_ERROR_REMOVED]:.2f} {currency} per error removed "
                 f"({won[T.ERRORS_REMOVED]:.0f} errors for {won[T.PROGRAM_COST]:.1f} {currency})."]
    lines.append(f"The winner is {WINNER_RULE}.")
    if value_per_error_removed is not None:
        lines.append(f"ROI = {value_per_error_removed:g} {currency} per error removed x errors removed / program "
                     "cost (1 breaks even).")
    lines.append(f"Program cost: what a strategy and its audits spent beyond the initial crowd labels, in {currency}. "
                 "True figures are the simulation's truth; estimated ones come from expert audits alone.")
    return lines


def description(table: pd.DataFrame, *, currency: str, value_per_error_removed: float | None = None,
                title: str = "") -> str:
    """The parent run's MLflow description (markdown): the table, the winner and its savings.

    Parameters
    ----------
    table : DataFrame
        :func:`experiments.compare.comparison_table`.
    currency : str
        ``program.currency``.
    value_per_error_removed : float, optional
        With it, the ROI column.
    title : str
        A first line (e.g. the dataset and the rounds).
    """
    best = winner(table)
    saved = savings(table, best)
    frame = display_table(table, currency=currency, best=best, roi=value_per_error_removed is not None)
    lines = _summary_lines(table, best, saved, currency=currency, value_per_error_removed=value_per_error_removed)
    # A blank line between sentences: markdown joins adjacent lines into one paragraph.
    parts = [f"### {title}" if title else "", _markdown(frame), "", "\n\n".join(lines)]
    if saved:
        parts += ["", f"Saving of {best} against each baseline: {SAVING_RULE}.", "",
                  _markdown(_savings_frame(saved, currency=currency))]
    parts += ["", f"The charts: `{T.REPORT_HTML}` (and `{T.REPORT_PNG}`) in this run's artifacts."]
    return "\n".join(parts).strip() + "\n"


# --- the report's panels ---------------------------------------------------------------------------


def _curves(results: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    return {name: r.rounds for name, r in results.items()}


def _draw_trend(ax: Any, results: Mapping[str, Any]) -> None:
    for i, (name, r) in enumerate(results.items()):
        rounds = r.rounds
        if T.AUDIT_ERROR_RATE not in rounds:
            continue
        x = rounds.index.to_numpy()
        color = f"C{i}"
        ax.plot(x, rounds[T.AUDIT_ERROR_RATE], marker="o", color=color, label=name)
        if T.AUDIT_CI_LOW in rounds and T.AUDIT_CI_HIGH in rounds:
            ax.fill_between(x, rounds[T.AUDIT_CI_LOW].astype(float), rounds[T.AUDIT_CI_HIGH].astype(float),
                            color=color, alpha=0.15, linewidth=0)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("estimated label error rate (audits)")
    ax.set_title("estimated error rate per round, 95% interval")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no audits (program.audit_rate is 0)", ha="center", va="center", transform=ax.transAxes)


def _draw_cost_per_error(ax: Any, table: pd.DataFrame, currency: str) -> None:
    x = np.arange(len(table))
    true = table[T.COST_PER_ERROR_REMOVED].astype(float).to_numpy()
    estimated = table[T.COST_PER_ERROR_REMOVED_ESTIMATE].astype(float).to_numpy()
    ax.bar(x - 0.2, np.nan_to_num(true), width=0.4, label="true errors removed")
    ax.bar(x + 0.2, np.nan_to_num(estimated), width=0.4, label="confirmed corrections (estimate)")
    for xi, value in zip(x - 0.2, true):
        if not math.isfinite(value):
            ax.text(xi, 0, "none removed", rotation=90, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, table["strategy"], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"{currency} per error removed")
    ax.set_title("cost per error removed (lower is better)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)


def _draw_hours(ax: Any, table: pd.DataFrame) -> None:
    ax.bar(table["strategy"], table[T.ANNOTATOR_HOURS].astype(float), color="C2")
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    ax.set_ylabel("annotator hours, initial labels included")
    ax.set_title("annotator hours")
    ax.grid(alpha=0.3, axis="y")


def gate_table(results: Mapping[str, Any]) -> pd.DataFrame:
    """Every strategy's gate decisions: ``strategy, round, version, verdict, reason``."""
    frames = []
    for name, r in results.items():
        gates = getattr(r, "gates", None)
        if gates is None or gates.empty:
            continue
        frames.append(pd.DataFrame({
            "strategy": name, "round": gates["round"].astype(int).to_numpy(),
            "version": gates["version"].astype(str).to_numpy(),
            "verdict": np.where(gates["promoted"].astype(bool), T.VERDICT_PROMOTED, T.VERDICT_REFUSED),
            "reason": gates["reason"].astype(str).to_numpy()}))
    columns = ["strategy", "round", "version", "verdict", "reason"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def _draw_gates(ax: Any, gates: pd.DataFrame, strategies: list[str]) -> None:
    from matplotlib.colors import ListedColormap

    rounds = sorted(gates["round"].unique()) if len(gates) else []
    grid = np.full((len(strategies), max(len(rounds), 1)), np.nan)
    for row in gates.itertuples(index=False):
        grid[strategies.index(row.strategy), rounds.index(row.round)] = row.verdict == T.VERDICT_PROMOTED
    ax.imshow(np.ma.masked_invalid(grid), cmap=ListedColormap(["#d9534f", "#5cb85c"]), vmin=0, vmax=1,
              aspect="auto")
    for i in range(grid.shape[0]):
        for j in range(len(rounds)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, "promoted" if grid[i, j] else "refused", ha="center", va="center", fontsize=7,
                        color="white")
    ax.set_xticks(range(len(rounds)), [str(r) for r in rounds], fontsize=8)
    ax.set_yticks(range(len(strategies)), strategies, fontsize=8)
    ax.set_xlabel("round (0: the seed model)")
    ax.set_title("quality gate: challenger promoted or refused")


def _draw_table(ax: Any, frame: pd.DataFrame) -> None:
    ax.axis("off")
    cell = ax.table(cellText=frame.to_numpy(), colLabels=[textwrap.fill(c, 14) for c in frame.columns],
                    loc="center", cellLoc="right")
    cell.auto_set_font_size(False)
    cell.set_fontsize(7)
    cell.scale(1, 1.6)


def _panels(table: pd.DataFrame, results: Mapping[str, Any], currency: str) -> dict[str, Any]:
    """Each panel as a function of an axes, by its report heading."""
    metric = T.TRUE_ERROR_RATE if all(T.TRUE_ERROR_RATE in r.rounds for r in results.values()) else \
        T.AUDIT_ERROR_RATE
    gates = gate_table(results)
    strategies = [str(s) for s in table["strategy"]]
    return {
        "Error rate against program cost": lambda ax: T.draw_error_vs_cost(
            ax, _curves(results), title="label error rate against program cost", metric=metric, currency=currency),
        "Estimated error rate per round": lambda ax: _draw_trend(ax, results),
        "Cost per error removed": lambda ax: _draw_cost_per_error(ax, table, currency),
        "Annotator hours": lambda ax: _draw_hours(ax, table),
        "Gate decisions": lambda ax: _draw_gates(ax, gates, strategies),
    }


def _png(figure: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def report_figure(table: pd.DataFrame, results: Mapping[str, Any], *, currency: str,
                  value_per_error_removed: float | None = None, title: str = ""):
    """The report's figures as one matplotlib figure (``report.png``): the five panels and the table."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 15), dpi=100)
    grid = fig.add_gridspec(3, 2, height_ratios=[1, 1, 1])
    panels = list(_panels(table, results, currency).values())
    for draw, spec in zip(panels, [grid[0, 0], grid[0, 1], grid[1, 0], grid[1, 1], grid[2, 0]]):
        draw(fig.add_subplot(spec))
    best = winner(table)
    _draw_table(fig.add_subplot(grid[2, 1]), display_table(table, currency=currency, best=best,
                                                           roi=value_per_error_removed is not None))
    fig.suptitle(title + (f"  (winner: {best})" if best else "  (no winner)"))
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # room for the suptitle
    return fig


_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 1.5em; color: #222;
       max-width: 1100px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
td.reason { text-align: left; } .promoted { color: #2e7d32; } .refused { color: #c62828; }
img { max-width: 100%; } p.note { color: #555; font-size: 0.9em; }
"""


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _gates_html(gates: pd.DataFrame) -> str:
    if gates.empty:
        return "<p>No gate decisions.</p>"
    rows = "".join(
        f"<tr><td>{html.escape(r.strategy)}</td><td>{r.round}</td><td>{html.escape(r.version)}</td>"
        f'<td class="{r.verdict}">{r.verdict}</td><td class="reason">{html.escape(r.reason)}</td></tr>'
        for r in gates.itertuples(index=False))
    return ("<table><thead><tr><th>strategy</th><th>round</th><th>model version</th><th>verdict</th>"
            f"<th>why</th></tr></thead><tbody>{rows}</tbody></table>")


def report_html(table: pd.DataFrame, results: Mapping[str, Any], *, currency: str,
                value_per_error_removed: float | None = None, title: str = "") -> str:
    """The comparison as ONE self-contained HTML page (``report.html``).

    Inline CSS, every figure an embedded base64 PNG, no script (MLflow's artifact viewer shows
    HTML in a sandboxed frame): the table with the winner and its savings, error rate against
    program cost, the estimated error rate per round with its 95% interval, cost per error
    removed, annotator hours, and the gate's decisions per round with their reasons.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    best = winner(table)
    saved = savings(table, best)
    frame = display_table(table, currency=currency, best=best, roi=value_per_error_removed is not None)
    summary = "".join(f"<p>{html.escape(line).replace('**', '')}</p>" for line in _summary_lines(
        table, best, saved, currency=currency, value_per_error_removed=value_per_error_removed))
    parts = [f"<h1>{html.escape(title or 'Strategy comparison')}</h1>", '<h2 id="comparison">Comparison</h2>',
             _html_table(frame), summary]
    if saved:
        parts += [f"<p>Saving of {html.escape(best)} against each baseline: {html.escape(SAVING_RULE)}.</p>",
                  _html_table(_savings_frame(saved, currency=currency))]
    for heading, draw in _panels(table, results, currency).items():
        fig = Figure(figsize=(8, 4.5) if heading != "Gate decisions" else (8, 1 + 0.5 * len(table)), dpi=100)
        draw(fig.add_subplot())
        fig.tight_layout()
        anchor = heading.lower().replace(" ", "-")
        parts += [f'<h2 id="{anchor}">{html.escape(heading)}</h2>',
                  f'<img alt="{html.escape(heading)}" src="data:image/png;base64,{_png(fig)}">']
    parts.append(_gates_html(gate_table(results)))
    parts.append('<p class="note">True figures are the simulation\'s truth; estimated ones come from expert '
                 "audits alone. Program cost excludes the initial crowd labels, the same for every strategy.</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title or 'Strategy comparison')}</title><style>{_STYLE}</style></head>"
            f"<body>{''.join(parts)}</body></html>\n")
