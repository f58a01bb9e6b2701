"""The ``labelloop`` command: one subcommand per program, each a thin shell around ``main(cfg)``.

::

    labelloop demo                      # local Ray Serve + the strategy comparison on digits
    labelloop demo --library-only       # the library end to end, no Ray, no MLflow (= labelloop tour)
    labelloop run --config configs/program.yaml [--output DIR]
    labelloop compare --config configs/compare.yaml [--output DIR]
    labelloop tune --config configs/tune.yaml [--trials N] [--output DIR]
    labelloop retrain --config configs/own.yaml [--stream S] [--as-of V] [--output DIR]
    labelloop score --config F --pool pool.parquet --out scored.parquet [--output DIR]
    labelloop serve --config F [--items items.csv] [--rounds N] [--in-process]
    labelloop db upgrade | current
    labelloop tokens issue --role admin --name NAME [--annotator A] [--store URL] | revoke ID | list
    labelloop labelstudio sync --url URL --project label=1 [--project double_blind=2] --stream S
    labelloop experiment --config configs/experiment.yaml
    labelloop guidelines draft --stream S [--pairs K] [--store URL]   # confused pairs -> a draft version
    labelloop guidelines show --stream S [--version V]                # review its text
    labelloop guidelines publish --stream S --version V               # tasks show it from now on
    labelloop guidelines impact --stream S --version V [--window 1D]  # accuracy before/after, gain, half-life
    labelloop report --experiment NAME --since DATE [--tracking-uri URI] [--strategy S] [--output DIR]

A wrong argument or config value stops with one line naming it and exit code 2. ``retrain``
exits 0 when the gate promoted the new model and 3 when it refused it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rich.console import Console

EXIT_USAGE = 2
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1, or a one-line usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _output_dir(text: str) -> Any:
    from experiments.results import OutputError, check_output_dir

    try:
        return check_output_dir(text)
    except OutputError as exc:  # argparse prefixes "argument --output: "
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--output: ")) from None


def add_output_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--output DIR``: where a command writes its results as CSV (:mod:`experiments.results`).

    The directory is checked while the arguments are parsed, so a bad one stops the command
    before any work, in one line.
    """
    parser.add_argument("--output", type=_output_dir, default=None, metavar="DIR",
                        help=f"also write {what} to DIR (created if missing) for scripts and CI")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="labelloop", description="Continuous labeling improvement: model predictions "
                     "decide where human annotators look.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="start a local Ray Serve app and compare the annotation strategies on "
                                       "scikit-learn's digits with a simulated crowd (what `make demo` runs)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--library-only", action="store_true",
                      help="run the library end to end instead (no Ray, no MLflow; same as `labelloop tour`)")
    demo.add_argument("--config", default=None, help="a compare config to start from (default: the demo's own)")
    demo.set_defaults(func=_demo)

    tour = sub.add_parser("tour", help="the library end to end on digits: aggregate, calibrate, find label "
                                       "issues, route (no Ray, no MLflow; seconds)")
    tour.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    tour.set_defaults(func=_tour)

    run = sub.add_parser("run", help="run one labeling program (rounds of score, route, annotate, resolve, "
                                     "retrain, gate), tracked in MLflow")
    run.add_argument("--config", required=True, help="program config YAML (see configs/program.yaml)")
    add_output_argument(run, "summary.csv and rounds.csv")
    run.set_defaults(func=_run)

    compare = sub.add_parser("compare", help="run the program once per strategy under one parent MLflow run "
                                             "and print the comparison table")
    compare.add_argument("--config", required=True, help="program config YAML with a compare: section "
                                                         "(see configs/compare.yaml)")
    add_output_argument(compare, "summary.csv and rounds.csv (one row per strategy, per strategy and round)")
    compare.set_defaults(func=_compare)

    tune = sub.add_parser("tune", help="search routing thresholds and audit rate for the cheapest program "
                                       "that meets a target error rate (Optuna; resumes)")
    tune.add_argument("--config", required=True, help="program config YAML with a tune: section "
                                                      "(see configs/tune.yaml)")
    tune.add_argument("--trials", type=positive_int, default=None,
                      help="completed trials the study should reach (default: tune.trials of the config)")
    add_output_argument(tune, "the best trial's summary.csv and rounds.csv, and trials.csv")
    tune.set_defaults(func=_tune)

    retrain = sub.add_parser("retrain", help="train on the label store's labels of your own items, gate against "
                                             "the champion, set the registry aliases (exit 0 promoted, 3 refused)")
    retrain.add_argument("--config", required=True, help="program config YAML whose program.dataset is your table "
                                                         "(see configs/own.yaml)")
    retrain.add_argument("--stream", default=None,
                         help="the store stream to train on (default: <program.name>-<table's stem>, created from "
                              "the table when missing)")
    retrain.add_argument("--as-of", type=_as_of, default=None, dest="as_of",
                         help="the labels as resolved at this resolution version (an integer) or timestamp "
                              "(ISO 8601); default: now")
    add_output_argument(retrain, "summary.csv (one row: the gate's verdict and both models' figures)")
    retrain.set_defaults(func=_retrain)

    serve = sub.add_parser("serve", help="run the labeling service: the Serve app and the program's rounds with "
                                         "people as the workforce (items from the store; Ctrl-C stops)")
    serve.add_argument("--config", required=True, help="config YAML with a live: section (see configs/serve.yaml)")
    serve.add_argument("--items", default=None, metavar="FILE",
                       help="ingest the items of this .csv/.parquet first (columns as program.dataset names them; "
                            "default: the config's table, if it has one)")
    serve.add_argument("--rounds", type=positive_int, default=None,
                       help="stop after this many rounds (default: run until Ctrl-C)")
    serve.add_argument("--in-process", action="store_true", dest="in_process",
                       help="score in this process, without Ray Serve (no HTTP endpoints)")
    serve.set_defaults(func=_serve)

    score = sub.add_parser("score", help="score and route a whole pool with Ray Data; write Parquet and the "
                                         "store's predictions table")
    score.add_argument("--config", required=True, help="config YAML: model, tracking, thresholds, store, and the "
                                                       "table's columns (program.dataset)")
    score.add_argument("--pool", required=True, help="the items: a .parquet or .csv file (or a directory of them)")
    score.add_argument("--out", required=True, help="the Parquet dataset to write (a directory; must not exist)")
    score.add_argument("--stream", default=None,
                       help="the store's stream for the predictions (default: program.name; for a table, "
                            "<program.name>-<file stem>, the stream retrain trains on)")
    score.add_argument("--no-store", action="store_true", help="write the Parquet only, not the predictions table")
    add_output_argument(score, "summary.csv (one row: rows, items per route, model version, seconds)")
    score.set_defaults(func=_score)

    from experiments.db_cli import add_db_parser
    add_db_parser(sub)
    from experiments.tokens_cli import add_tokens_parser
    add_tokens_parser(sub)
    from experiments.labelstudio_cli import add_labelstudio_parser
    add_labelstudio_parser(sub)
    from experiments.experiment_cli import add_experiment_parser
    add_experiment_parser(sub)
    from experiments.guidelines_cli import add_guidelines_parser
    add_guidelines_parser(sub)
    from experiments.report_cli import add_report_parser
    add_report_parser(sub)
    return parser


def _as_of(text: str) -> int | str:
    """A resolution version (digits) or a timestamp (checked by the store)."""
    return int(text) if text.strip().isdigit() else text


def _check_table(cfg: Any) -> None:
    """A simulation on a team's table: read and check it before any work (one line, exit 2)."""
    if cfg.table is not None:
        from experiments.table import simulation_table

        simulation_table(cfg)


def _tour(args: argparse.Namespace) -> int:
    from experiments.demo import DemoConfig, main as demo_main

    demo_main(DemoConfig(seed=args.seed))
    return 0


def _demo(args: argparse.Namespace) -> int:
    if args.library_only:
        return _tour(args)
    from experiments.config import load_config, parse_config

    cfg = load_config(args.config, ignore=("tune",)) if args.config else parse_config(DEMO_CONFIG)
    return _comparison(_project_run(cfg.replace(seed=args.seed)))


def _run(args: argparse.Namespace) -> int:
    from experiments.config import load_config

    cfg = load_config(args.config, ignore=("compare", "tune"))
    _check_table(cfg)
    cfg = _project_run(cfg)
    from rich.table import Table

    from experiments import program
    from experiments.comparison_report import shown as _shown

    console = Console()
    with _rounds_progress(console, f"{cfg.name} ({cfg.strategy.value})", cfg.rounds) as progress:
        result = program.main(cfg, progress=progress)
    table = Table(title=f"{result.strategy} on {result.dataset}: {result.n_items} items, stream {result.stream}")
    currency = result.currency
    # One figure a row: a row of eight columns wraps every header in an 80-column terminal.
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [("initial error rate", f"{result.initial_error_rate:.2%}"),
            ("final error rate", f"{result.final_error_rate:.2%}"),
            (f"program cost ({currency})", f"{result.program_cost:.1f}"),
            (f"cost per error removed ({currency})", _shown(result.cost_per_error_removed, ".2f")),
            *((("ROI", _shown(result.roi, ".2f")),) if cfg.value_per_error_removed is not None else ()),
            ("errors fixed per 100 annotations", f"{result.errors_removed_per_100_annotations:.1f}"),
            ("model accuracy", f"{result.model_accuracy:.3f}"), ("promotions", str(result.promotions))]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    _print_written(console, args.output, [result])
    _print_ui_hint(console, cfg.tracking.uri, result.run_id)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from experiments.config import load_config

    cfg = load_config(args.config, ignore=("tune",))
    _check_table(cfg)
    return _comparison(_project_run(cfg), output=args.output)


def _comparison(cfg: Any, *, output: Any = None) -> int:
    """Run the strategy comparison with one progress bar per strategy, print its table."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from experiments import compare

    console = Console()
    with Progress(TextColumn("[bold]{task.description:<16}[/]"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:
        order = [s.value for s in cfg.strategies]
        tasks = {name: bar.add_task(name, total=cfg.rounds + 1, start=i == 0) for i, name in enumerate(order)}

        def progress(strategy: str, done: int, total: int) -> None:
            bar.update(tasks[strategy], completed=done + 1, total=total + 1)
            following = order.index(strategy) + 1
            if done == total and following < len(order):  # the strategies run one after the other
                bar.start_task(tasks[order[following]])

        result = compare.main(cfg, progress=progress)
    from experiments.comparison_report import WINNER_RULE, display_table

    rounds = f"{cfg.rounds} round{'s' if cfg.rounds != 1 else ''}"
    table = Table(title=f"{cfg.dataset.value}: {rounds} of {cfg.items_per_round} items, "
                        f"budget {cfg.budget_per_round:g} {cfg.currency} per round (triple_majority pays its own way)")
    shown = display_table(result.table, currency=cfg.currency, best=result.winner,
                          roi=cfg.value_per_error_removed is not None)
    for column in shown.columns:
        if column == "strategy":
            table.add_column(column, no_wrap=True)
        else:
            # A figure is never broken over two lines, nor a header's word (the header may wrap).
            table.add_column(column, justify="right", min_width=max(int(shown[column].str.len().max()),
                                                                    *map(len, column.split())))
    for row in shown.itertuples(index=False):
        table.add_row(*row)
    # Written to a file or a pipe (a CI log, the README's sample) the table has the room it needs
    # rather than a pretend terminal's 80 columns, where Rich drops the last columns.
    console.print(table, width=None if console.is_terminal else max(console.width, 120), crop=False)
    initial = next(iter(result.results.values())).initial_error_rate if result.results else float("nan")
    source = "table labels" if cfg.table is not None else "crowd labels"
    console.print(f"Every strategy started from the same {source} ({initial:.2%} wrong); program cost is what the "
                  "strategy and the audits spent beyond those labels.")
    console.print(f"The winner is {WINNER_RULE}; '-': no error removed (or no audit)." if result.winner else
                  "No winner: no strategy removed any errors.")
    _print_written(console, output, list(result.results.values()))
    _print_ui_hint(console, cfg.tracking.uri, result.parent_run_id)
    return 0


def _tune(args: argparse.Namespace) -> int:
    from experiments import tune

    cfg = tune.load_tune_config(args.config)
    if args.trials is not None:
        cfg = cfg.with_trials(args.trials)
    _check_table(cfg.program)
    cfg = dataclasses.replace(cfg, program=_project_run(cfg.program))
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bar and summary say it all
    console = Console()
    result = tune.main(cfg, console=console, output=args.output)
    _print_ui_hint(console, cfg.program.tracking.uri)
    return 0 if result.best is not None else 1


def _live_experiment(path: str, stream: str):
    """The config's ``experiment:`` section, when it has one: the variants ``serve`` randomises
    its tasks to (the same file then measures them with ``labelloop experiment``)."""
    from experiments.config import ConfigError, read_yaml
    from experiments.experiment import SECTION, ExperimentSettings

    raw = (read_yaml(path) or {}).get(SECTION)
    if raw is None:
        return None
    settings = ExperimentSettings.from_dict(raw)
    if settings.stream not in (None, stream):
        raise ConfigError(f"{SECTION}.stream: expected the served stream {stream!r} (or no value), "
                          f"got {settings.stream!r}")
    return settings


def _serve(args: argparse.Namespace) -> int:
    from rich.table import Table

    from experiments import live
    from experiments.config import IN_PROCESS, LOCAL, TableDataset, load_config
    from experiments.table import load_table

    cfg = load_config(args.config, ignore=("compare", "tune", "experiment"))
    experiment = _live_experiment(args.config, cfg.live.stream or cfg.name)
    # People reach the service over HTTP: a local Serve app unless the config names one.
    cfg = cfg.replace(serve=IN_PROCESS if args.in_process else LOCAL if cfg.serve == IN_PROCESS else cfg.serve)
    source = cfg.table
    if args.items is not None:
        source = TableDataset(**{**(cfg.table.to_dict() if cfg.table else {}), "path": args.items})
    table = load_table(source) if source is not None else None
    console = Console()
    console.print(f"labelloop serve: stream {cfg.live.stream or cfg.name}, store {_hidden(cfg.store_url)}, "
                  f"a round every {cfg.live.round_items} items or {cfg.live.round_seconds:g} s; Ctrl-C stops")

    def progress(round_: int, _: int) -> None:
        console.print(f"round {round_} done")

    try:
        result = live.serve_program(cfg, table=table, max_rounds=args.rounds, progress=progress,
                                    experiment=experiment)
    except KeyboardInterrupt:
        console.print("stopped during a round: its tasks stay in the store; the MLflow run is marked failed")
        return 130
    summary = Table(title=f"{result.n_items} items on stream {result.stream}, {len(result.rounds) - 1} rounds")
    for column in ("estimated error rate", "95% interval", "confirmed corrections",
                   f"program cost ({cfg.currency})", "promotions",
                   "champion"):
        summary.add_column(column, justify="right")
    summary.add_row(f"{result.final_error_rate_estimate:.2%}", f"{result.final_error_rate_estimate_ci_low:.2%} - "
                    f"{result.final_error_rate_estimate_ci_high:.2%}", str(result.errors_removed_estimate),
                    f"{result.program_cost:.1f}", str(result.promotions), result.champion_version)
    console.print(summary)
    _print_ui_hint(console, cfg.tracking.uri)
    return 0


def _hidden(url: str) -> str:
    from experiments.tracking import hide_passwords

    return hide_passwords(url)


def _retrain(args: argparse.Namespace) -> int:
    from experiments import retrain
    from experiments.config import load_config

    cfg = load_config(args.config, ignore=("compare", "tune"))
    retrain.team_stream(cfg)  # a table, before anything else
    from experiments.table import load_table

    load_table(cfg.table, annotations=cfg.annotations)  # bad input stops before any work
    cfg = _project_run(cfg)
    result = retrain.main(cfg, stream=args.stream, as_of=args.as_of)
    from rich.table import Table

    console = Console()
    table = Table(title=f"retrain on stream {result.stream} (labels as of {result.as_of}): "
                        f"{result.training_items} training items, {result.evaluation_items} evaluation items")
    for column in ("model", "accuracy", "calibration error"):
        table.add_column(column, justify="right" if column != "model" else "left")
    table.add_row(f"challenger (version {result.version})", f"{result.challenger.accuracy:.3f}",
                  f"{result.challenger.ece:.3f}")
    if result.champion is not None:
        table.add_row("champion before", f"{result.champion.accuracy:.3f}", f"{result.champion.ece:.3f}")
    console.print(table)
    console.print(f"Gate: {result.decision.reason}")
    _write_summary(console, args.output, result.summary())
    _print_ui_hint(console, cfg.tracking.uri)
    return result.exit_code
def _score(args: argparse.Namespace) -> int:
    from experiments import score
    from experiments.config import load_config
    from experiments.tracking import check_reachable

    cfg = load_config(args.config, ignore=("compare", "tune"))
    check_reachable(cfg.tracking.uri)
    result = score.main(cfg, args.pool, args.out, store=not args.no_store, stream=args.stream)
    routes = ", ".join(f"{name} {count}" for name, count in sorted(result.routes.items()))
    stored = (f"; {result.stored} new predictions in stream {result.stream} of the store" if result.stream
              else "")
    console = Console()
    console.print(f"Scored {result.rows} items with {result.model_version} ({result.model_uri}) in "
                  f"{result.score_seconds:.1f} s: {routes}. Wrote {result.out}{stored}.")
    _write_summary(console, args.output, result.summary())
    return 0


@contextlib.contextmanager
def _rounds_progress(console: Console, name: str, rounds: int) -> Iterator[Callable[[int, int], None]]:
    """A progress bar over a program's rounds (round 0 is the seed round)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]{task.description}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task(name, total=rounds + 1)
        yield lambda done, total: bar.update(task, completed=done + 1, total=total + 1)


def _project_run(cfg: Any) -> Any:
    """Under ``mlflow run``, track into the entry point's run: its store and its experiment.

    MLflow hands the entry point a run (``MLFLOW_RUN_ID``) in a tracking store
    (``MLFLOW_TRACKING_URI``) and an experiment of its choosing; the program adopts that run as
    its (parent) run, so the config's ``tracking.uri`` and ``tracking.experiment`` give way.
    Either way a tracking server that does not answer stops the command here, in one line.
    """
    import os

    from experiments.tracking import check_reachable

    run_id, uri = os.environ.get("MLFLOW_RUN_ID"), os.environ.get("MLFLOW_TRACKING_URI")
    if not (run_id and uri and cfg.tracking.enabled):
        check_reachable(cfg.tracking.uri)  # before any work: MLflow would retry for minutes
        return cfg
    check_reachable(uri)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment(client.get_run(run_id).info.experiment_id).name
    return cfg.replace(tracking=dataclasses.replace(cfg.tracking, uri=uri, experiment=experiment))


def _write_summary(console: Console, output: Any, row: dict[str, Any]) -> None:
    """A one-row ``summary.csv`` in ``output`` (when given) for a command that runs no program."""
    if output is None:
        return
    import pandas as pd

    from experiments.results import SUMMARY_CSV, write_tables

    written = write_tables(output, {SUMMARY_CSV: pd.DataFrame([row])})
    console.print(f"Results for scripts: {', '.join(str(p) for p in written)}")


def _print_written(console: Console, output: Any, results: list[Any]) -> None:
    """Write the programs' results to ``output`` (when given) and say where."""
    if output is None:
        return
    from experiments.results import write_results

    written = write_results(output, results)
    console.print(f"Results for scripts: {', '.join(str(p) for p in written)}")


def _print_ui_hint(console: Console, tracking_uri: str, run_id: str | None = None) -> None:
    """Say how to open the runs in the MLflow UI; with ``run_id``, the link to that run's view.

    The link opens the classic runs table (not the GenAI view) with the strategy runs as rows
    and the manager's columns (:mod:`experiments.mlflow_ui`); its shared view is written here,
    when the run has ended.
    """
    from experiments.config import NO_TRACKING
    from loop._redact import redact

    if tracking_uri == NO_TRACKING:
        return
    link = _shared_view(console, tracking_uri, run_id) if run_id else None
    tracking_uri = redact(tracking_uri)  # the terminal, and whatever records it, sees no password
    if link is not None:
        # soft_wrap: a link cut over two lines is neither clickable nor copyable.
        if link.command:
            console.print(f"Open the runs in the MLflow UI: [bold]{link.command}[/], then", soft_wrap=True)
        else:
            console.print("Open the runs in the MLflow UI:", soft_wrap=True)
        console.print(f"  {link.runs_url}", soft_wrap=True, highlight=False)
        if link.report_url:
            console.print(f"The comparison's report: {link.report_url}", soft_wrap=True, highlight=False)
    elif tracking_uri.startswith(("sqlite:", "postgresql:", "mysql:", "file:")) or "://" not in tracking_uri:
        console.print(f"Open the runs in the MLflow UI: [bold]mlflow ui --backend-store-uri {tracking_uri}[/]")
    elif tracking_uri.startswith(("http://", "https://")):
        console.print(f"Open the runs in the MLflow UI: [bold]{tracking_uri}[/]")


def _shared_view(console: Console, tracking_uri: str, run_id: str) -> Any:
    """The run's shared view written, and its links; None (said why) when MLflow refuses the tag:
    the runs are logged by then, and a missing view must not fail the command."""
    from mlflow.exceptions import MlflowException

    from experiments.mlflow_ui import share_run_view
    from loop._redact import redact

    try:
        return share_run_view(tracking_uri, run_id)
    except MlflowException as exc:
        console.print(f"(no shared MLflow view: {redact(str(exc)).splitlines()[0]})")
        return None


# The demo: the comparison on digits through a local Ray Serve app, sized to finish in a few
# minutes on 2 cores; stores in the working directory.
DEMO_CONFIG: dict[str, Any] = {
    "program": {"name": "demo", "dataset": "digits", "rounds": 3, "items_per_round": 200},
    "tracking": {"uri": DEFAULT_TRACKING_URI, "experiment": "labelloop-demo", "registered_model": "labelloop-demo"},
    "store": {"url": "sqlite:///labelloop.db"},
    "serve": {"url": "local"},
}


def _quiet_libraries() -> None:
    """Keep the command's output to its progress bars and tables: Ray's and MLflow's INFO lines
    (a new model version, a started replica) are for their own logs, not the terminal."""
    import logging
    import os

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow configures its loggers
    for name in ("mlflow", "ray", "ray.serve", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``labelloop`` command; returns the exit code: 2 for a bad argument, config or
    value (a :class:`~loop.exceptions.SchemaError`, of which config errors are one kind), 1 when
    labelloop refused or failed for another stated reason (e.g. the store is unreachable)."""
    from loop._redact import redact
    from loop.exceptions import LoopError, SchemaError

    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries()
    try:
        return args.func(args)
    except LoopError as exc:
        message = redact(" ".join(str(exc).split()))  # one line, whatever the message; no password
        print(f"{parser.prog} {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, SchemaError) else 1


if __name__ == "__main__":
    sys.exit(main())
