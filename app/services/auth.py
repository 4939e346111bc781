"""Who is asking: browser sessions, API tokens, and the permissions each role holds."""

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from app.config import Settings
from app.errors import Invalid, NotFound, VirtdeckError
from app.models import ApiToken, LoginSession, User
from app.models.base import utcnow
from app.services.users import role_rank, update_user, validate_role

TOKEN_PREFIX = "vd_"
TOKEN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9 ._-]{0,63}$")
# A session's activity time is written when it is older than this (or a tenth of the idle
# limit, if less): not on every request, which made every page view a database write. A session
# then ends at most this much before its idle limit.
TOUCH_EVERY = timedelta(minutes=1)


class Permission(StrEnum):
    """What a route needs; each names the lowest role that holds it."""

    PUBLIC = "public"
    VIEW = "view"
    OPERATE = "operate"
    ADMIN = "admin"


LOWEST_ROLE = {Permission.VIEW: "viewer", Permission.OPERATE: "operator", Permission.ADMIN: "admin"}


class NotAuthenticated(VirtdeckError):
    """No valid session or token."""

    status_code = 401
    denied = True


class Forbidden(VirtdeckError):
    """Authenticated, but the role (or the CSRF token) does not allow this."""

    status_code = 403
    denied = True


@dataclass(frozen=True)
class Principal:
    """Who a request acts for, and how it proved it."""

    user_id: int | None
    username: str | None
    role: str | None
    auth: str  # cookie, token or anonymous
    token_id: int | None = None
    token_name: str | None = None
    csrf_token: str | None = None

    def allows(self, permission: Permission) -> bool:
        """Whether this principal holds the permission."""
        if permission is Permission.PUBLIC:
            return True
        return self.role is not None and role_rank(self.role) >= role_rank(LOWEST_ROLE[permission])


ANONYMOUS = Principal(user_id=None, username=None, role=None, auth="anonymous")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def start_session(session: Session, user: User) -> tuple[str, LoginSession]:
    """A new browser session; returns the cookie secret (stored only as a hash)."""
    secret = secrets.token_urlsafe(32)
    login = LoginSession(
        secret_hash=_digest(secret), user_id=user.id, csrf_token=secrets.token_urlsafe(32)
    )
    session.add(login)
    session.flush()
    return secret, login


def session_principal(
    session: Session, secret: str, *, settings: Settings, touch: bool
) -> Principal | None:
    """The principal of a live session cookie; an expired one is deleted. touch extends idle
    (see TOUCH_EVERY). The session and its user are read at every call: a logged-out session or
    a disabled user is refused at once."""
    login = session.scalar(select(LoginSession).where(LoginSession.secret_hash == _digest(secret)))
    if login is None:
        return None
    now = utcnow()
    idle = timedelta(minutes=settings.session_idle_minutes)
    absolute = timedelta(hours=settings.session_absolute_hours)
    if (
        now - login.last_active_at > idle
        or now - login.created_at > absolute
        or login.user.disabled
    ):
        session.delete(login)
        return None
    if touch and now - login.last_active_at > min(TOUCH_EVERY, idle / 10):
        login.last_active_at = now
    user = login.user
    return Principal(user.id, user.name, user.role, "cookie", csrf_token=login.csrf_token)


def end_session(session: Session, secret: str) -> None:
    """Log out: forget the session."""
    session.execute(delete(LoginSession).where(LoginSession.secret_hash == _digest(secret)))


def change_user(
    session: Session,
    user: User,
    *,
    principal: Principal,
    current_secret: str | None = None,
    role: str | None = None,
    disabled: bool | None = None,
    password: str | None = None,
) -> str | None:
    """Change a user's role, disabled flag or password. A new password or disabling ends all
    their browser sessions and revokes all their API tokens (re-enabling brings none back),
    except that users changing their own password from a browser keep that session under a new
    secret, which is returned for its cookie. A role is read at every request: it needs none of
    this. Open event streams of the user notice the change (see app/web/live.py)."""
    update_user(session, user, role=role, disabled=disabled, password=password)
    if password is None and not disabled:
        return None
    session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    own = principal.auth == "cookie" and principal.user_id == user.id and not disabled
    kept = None
    if own and password is not None and current_secret:
        kept = session.scalar(
            select(LoginSession).where(LoginSession.secret_hash == _digest(current_secret))
        )
    ended = delete(LoginSession).where(LoginSession.user_id == user.id)
    if kept is None:
        session.execute(ended)
        return None
    session.execute(ended.where(LoginSession.id != kept.id))
    secret = secrets.token_urlsafe(32)
    kept.secret_hash = _digest(secret)
    return secret


def create_token(
    session: Session,
    user: User,
    *,
    name: str,
    role: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[str, ApiToken]:
    """A new API token for the user; the plain token is returned once and never stored."""
    name = name.strip()
    if not TOKEN_NAME.match(name):
        raise Invalid(
            "name: 1-64 letters, digits, spaces, '.', '_' or '-', starting with a letter or digit",
            field="name",
        )
    role = validate_role(role or user.role)
    if role_rank(role) > role_rank(user.role):
        raise Invalid(f"role: cannot exceed the user's own role ({user.role})", field="role")
    if expires_at is not None and expires_at <= utcnow():
        raise Invalid("expires_at: must be in the future", field="expires_at")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        user_id=user.id,
        name=name,
        secret_hash=_digest(secret),
        prefix=secret[: len(TOKEN_PREFIX) + 6],
        role=role,
        expires_at=expires_at,
    )
    session.add(token)
    session.flush()
    return secret, token


def create_token_for(
    session: Session,
    principal: Principal,
    *,
    name: str,
    role: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[str, ApiToken]:
    """A token for the requester, never above the role this request holds.

    Tokens cannot mint tokens: a leaked or short-lived token must not outlive its revocation.
    """
    if principal.auth == "token":
        raise Forbidden("API tokens are created from a browser session or the command line")
    user = session.get(User, principal.user_id)
    if user is None:
        raise NotFound(f"user {principal.user_id} not found")
    role = role or principal.role
    if (
        principal.role
        and role in LOWEST_ROLE.values()
        and role_rank(role) > role_rank(principal.role)
    ):
        raise Invalid(f"role: cannot exceed your role ({principal.role})", field="role")
    return create_token(session, user, name=name, role=role, expires_at=expires_at)


def token_principal(session: Session, secret: str) -> Principal | None:
    """The principal of a valid, unexpired, unrevoked token of an enabled user."""
    token = session.scalar(select(ApiToken).where(ApiToken.secret_hash == _digest(secret)))
    now = utcnow()
    if token is None or token.revoked_at is not None or token.user.disabled:
        return None
    if token.expires_at is not None and token.expires_at <= now:
        return None
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        token.last_used_at = now
    # A token never holds more than its user does now, even if the user was demoted.
    role = min(token.role, token.user.role, key=role_rank)
    user = token.user
    return Principal(user.id, user.name, role, "token", token_id=token.id, token_name=token.name)


def list_tokens(session: Session, *, user_id: int | None) -> list[ApiToken]:
    """Tokens of one user (or of everyone when user_id is None), newest first."""
    query = select(ApiToken).order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
    if user_id is not None:
        query = query.where(ApiToken.user_id == user_id)
    return list(session.scalars(query))


def revoke_token(session: Session, token_id: int, *, principal: Principal) -> ApiToken:
    """Revoke a token: its owner or an admin may."""
    token = session.get(ApiToken, token_id)
    mine = token is not None and token.user_id == principal.user_id
    if token is None or not (mine or principal.allows(Permission.ADMIN)):
        raise NotFound(f"token {token_id} not found")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
    return token


def purge_expired_sessions(session: Session, *, settings: Settings) -> int:
    """Delete sessions past their idle or absolute limit."""
    now = utcnow()
    idle = now - timedelta(minutes=settings.session_idle_minutes)
    absolute = now - timedelta(hours=settings.session_absolute_hours)
    result = session.execute(
        delete(LoginSession).where(
            or_(LoginSession.last_active_at < idle, LoginSession.created_at < absolute)
        )
    )
    return result.rowcount or 0
