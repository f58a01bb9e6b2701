"""``labelloop db``: migrate the label store and say which schema revision it is at."""

from __future__ import annotations

import argparse


def add_db_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``db upgrade`` and ``db current`` on the top-level subparsers."""
    from loop.store import URL_ENV_VAR

    db = sub.add_parser("db", help="migrate the label store (SQLite or PostgreSQL)")
    actions = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    url_help = f"store URL, e.g. sqlite:///labelloop.db or postgresql://user@host:5432/db (default: ${URL_ENV_VAR}, " \
               "else sqlite:///labelloop.db)"
    upgrade = actions.add_parser("upgrade", help="bring the schema to the newest revision (keeps every row)")
    upgrade.add_argument("--url", default=None, help=url_help)
    upgrade.add_argument("--revision", default="head", help="target revision (default: head)")
    upgrade.set_defaults(func=_upgrade)
    current = actions.add_parser("current", help="print the schema revision of the store")
    current.add_argument("--url", default=None, help=url_help)
    current.set_defaults(func=_current)


def _url(args: argparse.Namespace):
    from loop.store import default_url, normalize_url

    return normalize_url(args.url or default_url())


def _upgrade(args: argparse.Namespace) -> int:
    from loop.store import upgrade

    url = _url(args)
    revision = upgrade(url, args.revision)
    print(f"{url.render_as_string(hide_password=True)}: schema at revision {revision}")
    return 0


def _current(args: argparse.Namespace) -> int:
    from loop.store import current_revision, head_revision

    url = _url(args)
    revision = current_revision(url)
    head = head_revision()
    state = "empty (run `labelloop db upgrade`)" if revision is None else \
        ("up to date" if revision == head else f"behind {head} (run `labelloop db upgrade`)")
    print(f"{url.render_as_string(hide_password=True)}: revision {revision or '-'}, {state}")
    return 0
