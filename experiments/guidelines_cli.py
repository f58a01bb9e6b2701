"""``labelloop guidelines``: confused pairs become guidance; publish it; measure what it did.

::

    labelloop guidelines draft --stream S [--pairs K] [--per-class N] [--author NAME] [--store URL]
    labelloop guidelines show --stream S [--version V] [--store URL]
    labelloop guidelines revise --stream S --version V --file F [--reason TEXT] [--store URL]
    labelloop guidelines publish --stream S --version V [--store URL]
    labelloop guidelines impact --stream S --version V [--window 1D | --window 200] [--pair a,b] [--boot N]

``draft`` stores a draft version (the published one's text plus a ``## a vs b`` section per
confused pair: boundary examples, ``guideline_unclear`` flags, rationales) and prints its
version; ``show`` prints a version's text to review; ``revise`` replaces a draft's text with a
file's (edit what ``show`` printed); ``publish`` makes it what tasks show;
``impact`` prints the crowd's accuracy on the pairs it addresses per window, before and after
publication, graded against expert and adjudicated resolutions, with the gain and the
half-life of the rise (95% bootstrap intervals). The store is ``--store``, else
``$LABELLOOP_STORE_URL``, else ``sqlite:///labelloop.db``.
"""

from __future__ import annotations

import argparse
import getpass
import sys


def add_guidelines_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``guidelines draft``, ``show``, ``revise``, ``publish`` and ``impact``."""
    from experiments.cli import positive_int
    from loop.store import URL_ENV_VAR

    parser = sub.add_parser("guidelines", help="draft guideline sections from the confused pairs, publish them, "
                                               "measure how fast annotators' accuracy rose")
    actions = parser.add_subparsers(dest="guidelines_command", required=True, metavar="ACTION")
    store_help = f"label store URL (default: ${URL_ENV_VAR}, else sqlite:///labelloop.db)"

    draft = actions.add_parser("draft", help="draft the next version from the stream's most confused pairs")
    draft.add_argument("--stream", required=True)
    draft.add_argument("--pairs", type=positive_int, default=3, metavar="K", help="sections for the K most confused pairs "
                                                                            "(default 3)")
    draft.add_argument("--per-class", type=positive_int, default=3, metavar="N",
                       help="boundary examples per class of a pair (default 3)")
    draft.add_argument("--author", default=None, help="who drafts (default: the login name)")
    draft.add_argument("--store", default=None, help=store_help)
    draft.set_defaults(func=_draft)

    show = actions.add_parser("show", help="print a version's text (default: the newest published)")
    show.add_argument("--stream", required=True)
    show.add_argument("--version", type=positive_int, default=None)
    show.add_argument("--store", default=None, help=store_help)
    show.set_defaults(func=_show)

    revise = actions.add_parser("revise", help="replace a draft's text with a file's (a published version is "
                                               "immutable: draft a new one)")
    revise.add_argument("--stream", required=True)
    revise.add_argument("--version", type=positive_int, required=True)
    revise.add_argument("--file", required=True, type=_text_file, metavar="F",
                        help="the new markdown text ('-' reads standard input)")
    revise.add_argument("--reason", default=None, help="why, kept in the audit trail")
    revise.add_argument("--actor", default=None, help="who revises (default: the login name)")
    revise.add_argument("--store", default=None, help=store_help)
    revise.set_defaults(func=_revise)

    publish = actions.add_parser("publish", help="publish a draft: tasks show it from now on")
    publish.add_argument("--stream", required=True)
    publish.add_argument("--version", type=positive_int, required=True)
    publish.add_argument("--actor", default=None, help="who publishes (default: the login name)")
    publish.add_argument("--store", default=None, help=store_help)
    publish.set_defaults(func=_publish)

    impact = actions.add_parser("impact", help="accuracy on the version's pairs before and after publication, "
                                               "its gain and half-life")
    impact.add_argument("--stream", required=True)
    impact.add_argument("--version", type=positive_int, required=True)
    impact.add_argument("--window", type=_window, default="1D",
                        help="a duration (1D, 12h: time windows) or a number of answers (default 1D)")
    impact.add_argument("--pair", type=_pair, action="append", default=None, metavar="A,B",
                        help="a class pair to measure (repeatable; default: the pairs the version addresses)")
    impact.add_argument("--boot", type=_boot, default=200, metavar="N", help="bootstrap resamples (default 200)")
    impact.add_argument("--store", default=None, help=store_help)
    impact.set_defaults(func=_impact)


def _boot(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"expected an integer in 0..10000, got {text!r}")
    return value


def _window(text: str) -> str | int:
    return int(text) if text.strip().isdigit() else text


def _text_file(path: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path!r}: {exc}") from None


def _pair(text: str) -> tuple[str, str]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise argparse.ArgumentTypeError(f"expected two different class names as A,B, got {text!r}")
    return parts[0], parts[1]


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in a container
        return "labelloop guidelines"


def _store(args: argparse.Namespace):
    from loop.store import LabelStore

    return LabelStore(args.store)


def _draft(args: argparse.Namespace) -> int:
    author = args.author or _login()
    with _store(args) as store:
        g, draft = store.draft_guideline_from_pairs(args.stream, author=author, pairs=args.pairs,
                                                    per_class=args.per_class, actor=author)
    table = draft.pairs.assign(rationales=draft.pairs["rationales"].map(len)).rename(
        columns={"estimated_count": "confusions", "rationales": "quoted"})
    table["share"] = table["share"].map(lambda v: f"{v:.0%}")
    table["confusions"] = table["confusions"].map(lambda v: f"{v:.1f}")
    parent = "no published version" if g.parent_version is None else f"version {g.parent_version}"
    print(f"stream {args.stream!r}: draft version {g.version} (from {parent}), by {g.author}")
    print(table.to_string(index=False))
    store_flag = f" --store {args.store}" if args.store else ""
    print(f"review: labelloop guidelines show --stream {args.stream} --version {g.version}{store_flag}")
    print(f"publish: labelloop guidelines publish --stream {args.stream} --version {g.version}{store_flag}")
    return 0


def _show(args: argparse.Namespace) -> int:
    with _store(args) as store:
        g = store.guideline(args.stream, args.version)
    state = "draft" if g.published_at is None else f"published {g.published_at:%Y-%m-%d %H:%M} UTC"
    # The header goes to stderr so that standard output is the text itself: edit it, `revise` it.
    print(f"stream {g.stream}, version {g.version} ({state}), by {g.author}", file=sys.stderr)
    print(g.text, end="" if g.text.endswith("\n") else "\n")
    return 0


def _revise(args: argparse.Namespace) -> int:
    with _store(args) as store:
        g = store.revise_guideline(args.stream, args.version, text=args.file, actor=args.actor or _login(),
                                   reason=args.reason)
    print(f"stream {args.stream!r}: draft version {g.version} revised ({len(g.text.splitlines())} lines); "
          f"publish: labelloop guidelines publish --stream {args.stream} --version {g.version}")
    return 0


def _publish(args: argparse.Namespace) -> int:
    with _store(args) as store:
        g = store.publish_guideline(args.stream, args.version, actor=args.actor or _login())
    print(f"stream {args.stream!r}: version {g.version} published {g.published_at:%Y-%m-%d %H:%M} UTC; "
          "tasks show it from now on")
    return 0


def _impact(args: argparse.Namespace) -> int:
    from experiments.guidance import guideline_impact

    with _store(args) as store:
        impact = guideline_impact(store, args.stream, args.version, pairs=args.pair, window=args.window,
                                  n_boot=args.boot)
    for (a, b), result in zip(impact.pairs, impact.results):
        unit = result.unit
        print(f"version {impact.version} on {a} vs {b}: graded against {result.reference}; "
              f"{result.n_before} answers before publication, {result.n_after} after")
        table = result.windows.copy()
        for col in ("accuracy", "ci_low", "ci_high", "fitted"):
            table[col] = table[col].map(lambda v: f"{v:.3f}")
        table["since_publication"] = table["since_publication"].map(lambda v: f"{v:.1f}")
        print(table.rename(columns={"since_publication": f"{unit}_since"}).to_string(index=False))
        print(f"baseline {result.baseline:.3f}; gain {result.gain:+.3f} "
              f"[{result.gain_ci[0]:+.3f}, {result.gain_ci[1]:+.3f}]; "
              f"half-life {result.half_life:.2f} {unit} [{result.half_life_ci[0]:.2f}, {result.half_life_ci[1]:.2f}] "
              "(time until accuracy rose by half its gain; 95% bootstrap over annotators)")
    return 0
