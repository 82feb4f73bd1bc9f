"""API tokens and sessions: made once, stored as a hash, checked on every request.

Contract: :func:`create` makes a token ``pgf_<43 random characters>`` (256 bits) and
returns it once (its name stripped; no two live tokens have names equal but for case: a
name stands for a person); the control database keeps only its sha256 (a token is random, not a
password a person chose: a fast hash of it cannot be guessed back), with its name,
role, creation and last-use times. :func:`check` finds the live (not revoked) token
of a presented secret, or None; :func:`revoke` ends every live token of a name.
Sessions (:func:`new_session`, :func:`check_session`) are the same thing for a
browser: a random cookie value, stored hashed, that expires after ``[service]
session_ttl`` and dies with its token.

Roles, each able to do what the ones before it can: ``viewer`` reads; ``operator``
starts runs; ``approver`` approves another person's runs; ``admin`` manages tokens.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import psycopg

from pgferry.errors import BadInput
from pgferry.jobs.control import Control

Role = Literal["viewer", "operator", "approver", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "approver", "admin")
PREFIX = "pgf_"


def rank(role: str) -> int:
    return ROLES.index(role) if role in ROLES else -1


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Token:
    id: int
    name: str
    role: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


@dataclass(frozen=True)
class NewToken:
    token: Token
    #: the secret, shown once
    secret: str

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, **self.token.to_dict(), "token": self.secret}


_COLS = "id, name, role, created_at, last_used_at, revoked_at"


def create(ctl: Control, name: str, role: str) -> NewToken:
    if role not in ROLES:
        raise BadInput(f"--role {role!r}: use {', '.join(ROLES)}", field="role")
    name = name.strip()
    if not name:
        raise BadInput("--name is empty", field="name")
    secret = PREFIX + secrets.token_urlsafe(32)
    with ctl.conn() as c:
        # a name is a person (four eyes): "Alice" is not made while "alice" is live
        taken = c.execute(
            "SELECT name FROM pgferry_control.tokens"
            " WHERE lower(btrim(name)) = lower(%s) AND revoked_at IS NULL",
            [name],
        ).fetchone()
        if taken is not None:
            raise BadInput(
                f"a live token is named {taken['name']!r}, the same name as {name!r}; "
                "revoke it first or pick another name",
                field="name",
            )
        try:
            row = c.execute(
                f"INSERT INTO pgferry_control.tokens (name, role, hash) VALUES (%s, %s, %s)"  # noqa: S608
                f" RETURNING {_COLS}",
                [name, role, hash_secret(secret)],
            ).fetchone()
        except psycopg.errors.UniqueViolation:
            raise BadInput(
                f"a live token is named {name!r}; revoke it first or pick another name",
                field="name",
            ) from None
    assert row is not None
    return NewToken(Token(**row), secret)


def listing(ctl: Control, *, include_revoked: bool = False) -> list[Token]:
    with ctl.conn() as c:
        rows = c.execute(
            f"SELECT {_COLS} FROM pgferry_control.tokens"  # noqa: S608
            " WHERE %s OR revoked_at IS NULL ORDER BY id",
            [include_revoked],
        ).fetchall()
    return [Token(**r) for r in rows]


def revoke(ctl: Control, name: str) -> int:
    """Revoke the live token called ``name`` (and its sessions); how many were revoked."""
    with ctl.conn() as c:
        rows = c.execute(
            "UPDATE pgferry_control.tokens SET revoked_at = now()"
            " WHERE name = %s AND revoked_at IS NULL RETURNING id",
            [name],
        ).fetchall()
        ids = [r["id"] for r in rows]
        if ids:
            c.execute("DELETE FROM pgferry_control.sessions WHERE token_id = ANY(%s)", [ids])
    if not ids:
        raise BadInput(f"no live token is named {name!r}", field="name")
    return len(ids)


def check(ctl: Control, secret: str) -> Token | None:
    """The live token whose secret this is (its last use noted at most once a minute)."""
    with ctl.conn() as c:
        row = c.execute(
            f"UPDATE pgferry_control.tokens SET last_used_at = now()"  # noqa: S608
            " WHERE hash = %s AND revoked_at IS NULL"
            " AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')"
            f" RETURNING {_COLS}",
            [hash_secret(secret)],
        ).fetchone()
        if row is None:
            row = c.execute(
                f"SELECT {_COLS} FROM pgferry_control.tokens"  # noqa: S608
                " WHERE hash = %s AND revoked_at IS NULL",
                [hash_secret(secret)],
            ).fetchone()
    return Token(**row) if row is not None else None


def new_session(ctl: Control, token: Token, ttl: timedelta) -> str:
    value = secrets.token_urlsafe(32)
    with ctl.conn() as c:
        c.execute(
            "INSERT INTO pgferry_control.sessions (hash, token_id, expires_at)"
            " VALUES (%s, %s, now() + %s)",
            [hash_secret(value), token.id, ttl],
        )
    return value


def check_session(ctl: Control, value: str) -> Token | None:
    with ctl.conn() as c:
        row = c.execute(
            f"SELECT {', '.join('t.' + x.strip() for x in _COLS.split(','))}"  # noqa: S608
            " FROM pgferry_control.sessions s JOIN pgferry_control.tokens t ON t.id = s.token_id"
            " WHERE s.hash = %s AND s.expires_at > now() AND t.revoked_at IS NULL",
            [hash_secret(value)],
        ).fetchone()
    return Token(**row) if row is not None else None


def end_session(ctl: Control, value: str) -> None:
    with ctl.conn() as c:
        c.execute("DELETE FROM pgferry_control.sessions WHERE hash = %s", [hash_secret(value)])
