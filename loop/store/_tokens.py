"""Bearer tokens: issued once, stored only as their SHA-256 hash.

A token is ``ll_`` followed by 32 random bytes (urlsafe base64, 43 characters). It is shown
once, when issued; the store keeps its SHA-256 hex digest and its first characters (the
``prefix``, to tell tokens apart in a listing and to revoke one by it). A token carries 256
random bits, so a fast hash is enough: there is nothing to brute-force, and a lookup by hash
compares no secret character by character (no timing leak).
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from datetime import datetime
from typing import Final

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .._validation import _describe, _text_problem, fail
from ..exceptions import NotFoundError
from . import _schema as S
from ._convert import MAX_INTEGER, now_utc
from ._records import Principal, Role
from ._writes import record_events

TOKEN_PREFIX: Final = "ll_"
TOKEN_BYTES: Final = 32
PREFIX_CHARS: Final = 10  # "ll_" and 7 random characters: shown in listings, enough to revoke by
TOKEN_CHARS: Final = len(TOKEN_PREFIX) + 43
TOKEN_COLUMNS: Final = ("token_id", "prefix", "role", "name", "annotator_id", "created_at", "expires_at",
                        "revoked_at", "active")


def token_hash(token: str) -> str:
    """The stored form of a token: its SHA-256 hex digest."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def check_role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise fail("role", f"one of {[r.value for r in Role]}", _describe(role)) from None


def issue(conn: Connection, *, name: str, role: Role, annotator_id: int | None, expires_at: datetime | None,
          actor: str | None) -> str:
    tk = S.tokens
    token = new_token()
    id_ = conn.execute(tk.insert().returning(tk.c.id), {
        "token_hash": token_hash(token), "prefix": token[:PREFIX_CHARS], "role": role.value, "name": name,
        "annotator_id": annotator_id, "created_at": now_utc(), "expires_at": expires_at, "revoked_at": None,
    }).scalar_one()
    # The event names the token by id and prefix, never by its hash.
    record_events(conn, [{"action": "token.issued", "entity": "token", "entity_id": id_,
                          "after": {"prefix": token[:PREFIX_CHARS], "role": role.value, "name": name,
                                    "annotator_id": annotator_id,
                                    "expires_at": None if expires_at is None else expires_at.isoformat()}}],
                  actor=actor, reason=None)
    return token


def revoke(conn: Connection, which: int | str, *, actor: str | None, reason: str | None) -> int:
    """Revoke the token with id ``which`` (an int or digits) or whose prefix is ``which``
    (which may also be the whole token). Returns the token id; revoking twice is a no-op."""
    tk = S.tokens
    if isinstance(which, int) or (isinstance(which, str) and which.isascii() and which.isdigit()):
        if not 0 < int(which) <= MAX_INTEGER:  # no stored id: not found, on both engines
            raise NotFoundError(f"The 'token' argument must name a stored token. Got {which!r} instead.")
        where = tk.c.id == int(which)
    elif isinstance(which, str) and which.startswith(TOKEN_PREFIX) and len(which) >= PREFIX_CHARS \
            and _text_problem(which, max_chars=None, empty=False) is None:  # NUL: PostgreSQL refuses it
        where = (tk.c.token_hash == token_hash(which)) if len(which) == TOKEN_CHARS else \
            (tk.c.prefix == which[:PREFIX_CHARS])
    else:
        raise fail("token", f"a token id or a token prefix ({TOKEN_PREFIX}... , {PREFIX_CHARS} characters)",
                   _describe(which))
    rows = conn.execute(sa.select(tk.c.id, tk.c.revoked_at).where(where)).all()
    if not rows:
        raise NotFoundError(f"The 'token' argument must name a stored token. Got {which!r} instead.")
    if len(rows) > 1:
        raise fail("token", "a prefix that names one token (give the token id instead)",
                   f"{which!r}, which names {len(rows)} tokens")
    id_, revoked_at = rows[0]
    if revoked_at is None:
        conn.execute(tk.update().where(tk.c.id == id_).values(revoked_at=now_utc()))
        record_events(conn, [{"action": "token.revoked", "entity": "token", "entity_id": id_}],
                      actor=actor, reason=reason)
    return id_


def authenticate(conn: Connection, token: str, *, now: datetime) -> Principal | None:
    if not isinstance(token, str) or len(token) != TOKEN_CHARS or not token.startswith(TOKEN_PREFIX):
        return None  # the form is public; nothing secret was compared
    row = conn.execute(_authenticate_select(), {"token_hash": token_hash(token)}).first()
    if row is None or row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    if row.annotator is not None and not row.active:
        return None  # a deactivated annotator's tokens stop working with them
    return Principal(token_id=row.id, role=Role(row.role), name=row.name, annotator=row.annotator,
                     expires_at=row.expires_at)


@functools.cache
def _authenticate_select() -> sa.Select:
    # Built once with a bound hash: a replica checks a token on most requests.
    tk, a = S.tokens, S.annotators
    return (sa.select(tk.c.id, tk.c.role, tk.c.name, tk.c.expires_at, tk.c.revoked_at,
                      a.c.name.label("annotator"), a.c.active)
            .select_from(tk).outerjoin(a, a.c.id == tk.c.annotator_id)
            .where(tk.c.token_hash == sa.bindparam("token_hash")))


def frame(conn: Connection, *, now: datetime) -> pd.DataFrame:
    tk, a = S.tokens, S.annotators
    rows = conn.execute(sa.select(tk.c.id, tk.c.prefix, tk.c.role, tk.c.name, a.c.name, tk.c.created_at,
                                  tk.c.expires_at, tk.c.revoked_at)
                        .select_from(tk).outerjoin(a, a.c.id == tk.c.annotator_id).order_by(tk.c.id)).all()
    out = pd.DataFrame(rows, columns=list(TOKEN_COLUMNS[:-1]))
    out["active"] = [pd.isna(r) and (pd.isna(e) or e > now) for r, e in zip(out["revoked_at"], out["expires_at"])]
    return out
