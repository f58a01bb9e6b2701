"""``labelloop tokens``: issue, revoke and list the bearer tokens of the app (stored hashed).

The first admin token comes from here (nobody can call the admin API without one)::

    labelloop tokens issue --role admin --name ops --store sqlite:////srv/labels.db
    labelloop tokens issue --role annotator --name ann --annotator ann --expires 2027-01-01
    labelloop tokens list
    labelloop tokens revoke ll_AbCdEfG      # a prefix from the list, or the token id

``issue`` prints the token once, on stdout alone (``TOKEN=$(labelloop tokens issue ...)``);
the store keeps only its SHA-256.
"""

from __future__ import annotations

import argparse


def add_tokens_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``tokens issue``, ``tokens revoke`` and ``tokens list``."""
    from loop.store import URL_ENV_VAR, Role

    tokens = sub.add_parser("tokens", help="issue, revoke and list the app's bearer tokens (stored hashed)")
    actions = tokens.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    store_help = f"label store URL (default: ${URL_ENV_VAR}, else sqlite:///labelloop.db)"
    issue = actions.add_parser("issue", help="issue a token and print it (the only time it is shown)")
    issue.add_argument("--role", required=True, choices=[r.value for r in Role])
    issue.add_argument("--name", required=True, help="who or what uses the token (a stream owner's name reads "
                                                     "that stream's escalated queue)")
    issue.add_argument("--annotator", default=None, help="the annotator an annotator token speaks for "
                                                         "(default: --name)")
    issue.add_argument("--expires", default=None, metavar="WHEN", help="expiry timestamp, e.g. 2027-01-01T00:00Z")
    issue.add_argument("--store", default=None, help=store_help)
    issue.set_defaults(func=_issue)
    revoke = actions.add_parser("revoke", help="revoke a token by id or prefix (as `tokens list` shows)")
    revoke.add_argument("token", help="token id, prefix (ll_ and 7 characters) or the token itself")
    revoke.add_argument("--store", default=None, help=store_help)
    revoke.set_defaults(func=_revoke)
    listing = actions.add_parser("list", help="list tokens (never the tokens themselves)")
    listing.add_argument("--store", default=None, help=store_help)
    listing.set_defaults(func=_list)


def _store(args: argparse.Namespace):
    from loop.store import LabelStore

    return LabelStore(args.store)


def _issue(args: argparse.Namespace) -> int:
    with _store(args) as store:
        print(store.issue_token(args.name, args.role, annotator=args.annotator, expires_at=args.expires,
                                actor="labelloop tokens"))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    with _store(args) as store:
        token_id = store.revoke_token(args.token, actor="labelloop tokens")
    print(f"token {token_id} revoked")
    return 0


def _list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        frame = store.tokens_frame()
    if frame.empty:
        print("no tokens")
        return 0
    print(frame.drop(columns=["created_at"]).to_string(index=False))
    return 0
