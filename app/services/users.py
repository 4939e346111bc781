"""Local users: Argon2id passwords, roles, and login with throttling of failed attempts."""

import math
import re
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import and_, delete, func, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.errors import Conflict, Invalid, NotFound, VirtdeckError
from app.models import ROLES, LoginFailure, User
from app.models.base import utcnow

USER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 10
_hasher = PasswordHasher()  # Argon2id with the library's current recommended parameters
# Verified against when the user does not exist, so that both cases take as long.
_DUMMY_HASH = _hasher.hash("virtdeck-no-such-user")


class LoginThrottled(VirtdeckError):
    """Too many failed logins for this user or address; try again later."""

    status_code = 429
    denied = True

    def __init__(self, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(f"too many failed logins; try again in {seconds} s")
        self.headers = {"Retry-After": str(seconds)}


class LoginFailed(VirtdeckError):
    """Wrong user name or password (never saying which)."""

    status_code = 401
    denied = True


def role_rank(role: str) -> int:
    """viewer < operator < admin."""
    return ROLES.index(role)


def validate_role(role: str, *, field: str = "role") -> str:
    """The role, or Invalid naming the field."""
    if role not in ROLES:
        raise Invalid(f"{field}: must be one of {', '.join(ROLES)}", field=field)
    return role


def validate_password(password: str) -> str:
    """The password, if long enough."""
    if len(password) < MIN_PASSWORD:
        raise Invalid(f"password: at least {MIN_PASSWORD} characters", field="password")
    return password


def create_user(session: Session, *, name: str, password: str, role: str) -> User:
    """A new user with a hashed password."""
    name = name.strip()
    if not USER_NAME.match(name):
        raise Invalid(
            "name: 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit",
            field="name",
        )
    validate_role(role)
    validate_password(password)
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise Conflict(f"name: a user called '{name}' already exists", field="name")
    user = User(name=name, password_hash=_hasher.hash(password), role=role)
    session.add(user)
    session.flush()
    return user


def has_users(session: Session) -> bool:
    """Whether any user exists (else the first admin may be created from localhost)."""
    return bool(session.scalar(select(func.count()).select_from(User)))


def list_users(session: Session) -> list[User]:
    """All users by name."""
    return list(session.scalars(select(User).order_by(User.name)))


def get_user(session: Session, user_id: int) -> User:
    """The user, or NotFound."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return user


def update_user(
    session: Session,
    user: User,
    *,
    role: str | None = None,
    disabled: bool | None = None,
    password: str | None = None,
) -> User:
    """Change a user's role, disabled flag or password; the last active admin stays one."""
    if role is not None:
        validate_role(role)
    demoted = role is not None and role != "admin"
    if user.role == "admin" and (demoted or disabled) and _active_admins(session) <= 1:
        raise Conflict("role: the last active admin cannot be demoted or disabled", field="role")
    if role is not None:
        user.role = role
    if disabled is not None:
        user.disabled = disabled
    if password is not None:
        user.password_hash = _hasher.hash(validate_password(password))
    return user


def delete_user(session: Session, user: User) -> None:
    """Remove a user with their sessions and tokens; never the last active admin."""
    if user.role == "admin" and not user.disabled and _active_admins(session) <= 1:
        raise Conflict("the last active admin cannot be deleted")
    session.delete(user)


def _active_admins(session: Session) -> int:
    query = select(func.count()).where(User.role == "admin", User.disabled.is_(False))
    return session.scalar(query) or 0


def _wait(session: Session, attempt: LoginFailure, key, *, after: int, settings: Settings) -> float:
    """Seconds this attempt must still wait, judged by the key's other failures in the window
    (including attempts made at the same moment, which were recorded before they were judged)."""
    since = utcnow() - timedelta(minutes=settings.login_throttle_window_minutes)
    count, last = session.execute(
        select(func.count(), func.max(LoginFailure.at)).where(
            key, LoginFailure.at > since, LoginFailure.id != attempt.id
        )
    ).one()
    if count < after or last is None:
        return 0.0
    delay = min(settings.login_throttle_base * 2 ** (count - after), settings.login_throttle_max)
    return max(0.0, delay - (utcnow() - last).total_seconds())


def _reserve_attempt(
    session: Session, *, name: str, address: str, settings: Settings
) -> LoginFailure:
    """Record the attempt as a failure and commit it before the password is checked, then judge
    it: of attempts made at once, each one judged sees all committed before it, so no more than
    the allowed number get through. A refused attempt is removed again (it was not a guess)."""
    attempt = LoginFailure(username=name, address=address)
    session.add(attempt)
    session.commit()
    # Per (user, address) and per address, never per user alone: a stranger guessing at a
    # user's password slows down only their own address, not that user elsewhere.
    keys = (
        (and_(LoginFailure.username == name, LoginFailure.address == address),
         settings.login_throttle_after),
        (LoginFailure.address == address, settings.login_throttle_address_after),
    )  # fmt: skip
    for key, after in keys:
        wait = _wait(session, attempt, key, after=after, settings=settings)
        if wait > 0:
            session.delete(attempt)
            session.commit()
            raise LoginThrottled(wait)
    return attempt


def authenticate(
    session: Session, *, name: str, password: str, address: str, settings: Settings
) -> User:
    """The user if name and password match. Each attempt is counted (and committed) before the
    password is checked; a failure stays counted and slows down the next tries."""
    name, address = name.strip()[:64], address[:64]
    _reserve_attempt(session, name=name, address=address, settings=settings)
    user = session.scalar(select(User).where(User.name == name))
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
        ok = user is not None and not user.disabled
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok:
        raise LoginFailed("wrong user name or password")
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    # This attempt and the earlier failures from here are forgiven; the address's other
    # failures stay (one account of one's own must not reset an address's count).
    session.execute(
        delete(LoginFailure).where(LoginFailure.username == name, LoginFailure.address == address)
    )
    return user
