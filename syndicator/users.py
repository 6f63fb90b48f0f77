"""People and API tokens: who may do what (谁发布谁负责 — every action is logged under a name).

Passwords are hashed with argon2; API tokens are random, shown once, and stored as SHA-256.
"""
from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select

from syndicator import states
from syndicator.models import ApiToken, User, utcnow
from syndicator.store import Store

#: The roles, least to most powerful in their own area.
ROLES = ("editor", "reviewer", "publisher", "ops", "admin")

#: Action → roles allowed to do it. Every web route and API call names one of these.
PERMISSIONS: dict[str, frozenset[str]] = {
    "read": frozenset(ROLES),
    "publish": frozenset({"editor", "publisher", "admin"}),
    "correct": frozenset({"editor", "publisher", "admin"}),
    "retract": frozenset({"publisher", "editor", "admin"}),
    "retry": frozenset({"editor", "publisher", "ops", "admin"}),
    "operate": frozenset({"ops", "admin"}),
    "manage_users": frozenset({"admin"}),
}
#: Usernames: letters, digits, . _ - (they appear in the event log as the actor).
USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$")
MIN_PASSWORD = 10

_hasher = PasswordHasher()


class UserError(ValueError):
    """A user or token request is invalid; the message says why."""


@dataclass(frozen=True)
class Principal:
    """Who is acting: a logged-in user or an API token's owner."""

    id: int
    username: str
    role: str
    via: str  # "session" | "token"

    @property
    def actor(self) -> str:
        return f"{self.via}:{self.username}" if self.via == "token" else self.username

    def may(self, action: str) -> bool:
        return self.role in PERMISSIONS[action]


def add_user(store: Store, username: str, password: str, role: str, *, actor: str, display_name: str = "") -> int:
    if not USERNAME_RE.match(username):
        raise UserError(f"username {username!r}: use 2–64 letters, digits, '.', '_' or '-'")
    if role not in ROLES:
        raise UserError(f"role {role!r}: must be one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password: at least {MIN_PASSWORD} characters")

    def tx(session) -> int:
        if session.scalar(select(User.id).where(User.username == username)) is not None:
            raise UserError(f"user {username!r} already exists")
        user = User(username=username, display_name=display_name or username, role=role, created_by=actor,
                    password_hash=_hasher.hash(password), created_at=utcnow())
        session.add(user)
        session.flush()
        states.record(session, "user_added", actor=actor, detail={"username": username, "role": role})
        return user.id

    return store.run_write(tx)


def authenticate(store: Store, username: str, password: str) -> Principal | None:
    with store.read() as session:
        user = session.scalar(select(User).where(User.username == username, User.active))
    if user is None:
        _hasher.hash(password)  # same cost whether or not the user exists
        return None
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    return Principal(user.id, user.username, user.role, "session")


def user_by_id(store: Store, user_id: int) -> Principal | None:
    with store.read() as session:
        user = session.get(User, user_id)
    if user is None or not user.active:
        return None
    return Principal(user.id, user.username, user.role, "session")


def issue_token(store: Store, username: str, name: str, *, actor: str) -> str:
    """Create an API token for a user; the token is returned once and never stored."""
    token = "syn_" + secrets.token_urlsafe(32)

    def tx(session) -> None:
        user = session.scalar(select(User).where(User.username == username, User.active))
        if user is None:
            raise UserError(f"no active user {username!r}")
        session.add(ApiToken(user_id=user.id, name=name, token_sha256=_sha(token), created_at=utcnow()))
        states.record(session, "token_issued", actor=actor, detail={"username": username, "name": name})

    store.run_write(tx)
    return token


def by_token(store: Store, token: str) -> Principal | None:
    with store.read() as session:
        row = session.execute(select(User.id, User.username, User.role).join(ApiToken, ApiToken.user_id == User.id)
                              .where(ApiToken.token_sha256 == _sha(token), ApiToken.revoked.is_(False),
                                     User.active)).one_or_none()
    return Principal(row.id, row.username, row.role, "token") if row else None


def count_users(store: Store) -> int:
    from sqlalchemy import func

    with store.read() as session:
        return session.scalar(select(func.count()).select_from(User))


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
