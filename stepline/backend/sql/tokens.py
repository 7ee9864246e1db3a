"""API tokens of a stepline server, kept in its SQL store.

A token is ``stp_`` followed by 32 random bytes (base64url). Only its sha256 is stored, so a
leaked database does not leak working tokens; a random 256-bit secret needs no slow hash.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from stepline.backend.sql import schema as t
from stepline.backend.sql.store import SqlBackend
from stepline.core.errors import ConflictError, NotFoundError, ValidationError
from stepline.core.ids import new_id
from stepline.core.records import ApiToken

PREFIX = "stp_"

#: last_used is written at most this often per token (a request must not mean a write)
TOUCH_EVERY = 60.0


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _token(row: object) -> ApiToken:
    m = row._mapping  # type: ignore[attr-defined]
    return ApiToken(
        id=m["id"], name=m["name"], created=m["created"], last_used=m["last_used"],
        revoked=m["revoked"],
    )  # fmt: skip


class SqlTokens:
    """Create, list, revoke and check tokens in ``backend``'s database."""

    def __init__(self, backend: SqlBackend) -> None:
        self.backend = backend

    def create(self, name: str) -> tuple[ApiToken, str]:
        """A new token named ``name``; returns it with its secret (shown only now)."""
        name = name.strip()
        if not name or len(name) > 256:
            raise ValidationError("a token needs a name of 1 to 256 characters, e.g. 'agent-gpu1'")
        secret = PREFIX + secrets.token_urlsafe(32)
        rec = ApiToken(id=new_id(), name=name, created=time.time())
        try:
            with self.backend._write() as conn:
                conn.execute(
                    insert(t.api_tokens),
                    {"id": rec.id, "name": rec.name, "hash": token_hash(secret),
                     "created": rec.created, "last_used": None, "revoked": None},
                )  # fmt: skip
        except IntegrityError:
            raise ConflictError(
                f"a token named {name!r} exists already; pick another name or revoke it first "
                "(`stepline server token revoke NAME`)"
            )
        return rec, secret

    def list(self) -> list[ApiToken]:
        with self.backend._read() as conn:
            rows = conn.execute(select(t.api_tokens).order_by(t.api_tokens.c.created)).all()
        return [_token(r) for r in rows]

    def revoke(self, name_or_id: str) -> ApiToken:
        c = t.api_tokens.c
        with self.backend._write() as conn:
            row = conn.execute(
                select(t.api_tokens).where((c.name == name_or_id) | (c.id == name_or_id))
            ).first()
            if row is None:
                raise NotFoundError(
                    f"no token named {name_or_id!r}; see `stepline server token list`"
                )
            if row.revoked is None:
                conn.execute(update(t.api_tokens).where(c.id == row.id).values(revoked=time.time()))
        return self.list_one(row.id)

    def list_one(self, token_id: str) -> ApiToken:
        with self.backend._read() as conn:
            row = conn.execute(select(t.api_tokens).where(t.api_tokens.c.id == token_id)).one()
        return _token(row)

    def active(self) -> bool:
        """Whether any token is usable (a server then requires one on every request)."""
        c = t.api_tokens.c
        with self.backend._read() as conn:
            return (
                conn.execute(select(c.id).where(c.revoked.is_(None)).limit(1)).first() is not None
            )

    def check(self, secret: str) -> ApiToken | None:
        """The token whose secret this is, if it is not revoked."""
        if not secret.startswith(PREFIX):
            return None
        c = t.api_tokens.c
        with self.backend._read() as conn:
            row = conn.execute(
                select(t.api_tokens).where(c.hash == token_hash(secret), c.revoked.is_(None))
            ).first()
        if row is None:
            return None
        now = time.time()
        if row.last_used is None or now - row.last_used > TOUCH_EVERY:
            with self.backend._write() as conn:
                conn.execute(update(t.api_tokens).where(c.id == row.id).values(last_used=now))
        return _token(row)
