"""The first admin through /setup: the one-time setup code `virtdeck serve` prints, and the
claim that lets only one setup succeed."""

import hashlib
import hmac
import logging
import secrets
import threading

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.errors import NotFound
from app.models import SetupClaim, User
from app.services.users import create_user, has_users

log = logging.getLogger(__name__)
CLAIM_ID = 1
ALREADY_DONE = "the first admin is created from this machine only, and only once"


class SetupCode:
    """A one-time code, kept only as its SHA-256 and spent by the first admin's creation."""

    def __init__(self, code: str) -> None:
        self._digest = hashlib.sha256(code.encode()).digest()
        self._spent = False
        self._lock = threading.Lock()

    def matches(self, code: str) -> bool:
        """Whether code is this one and not yet spent (compared in constant time)."""
        given = hashlib.sha256(code.encode()).digest()
        with self._lock:
            return hmac.compare_digest(given, self._digest) and not self._spent

    def spend(self) -> None:
        """It has made the first admin: never again."""
        with self._lock:
            self._spent = True


def startup_setup_code(sessions: sessionmaker[Session], settings: Settings) -> SetupCode | None:
    """While no user exists: the setup code (the configured one, else a new one), announced on
    the console; None once there are users."""
    with sessions() as session:
        if has_users(session):
            return None
    if settings.setup_code:
        log.warning(
            "virtdeck has no users yet: create the first admin at /setup on this machine "
            "with the setup code set in VIRTDECK_SETUP_CODE"
        )
        return SetupCode(settings.setup_code)
    code = secrets.token_urlsafe(16)
    log.warning(
        "virtdeck has no users yet: create the first admin at /setup on this machine "
        "(or with `virtdeck create-user NAME --role admin`) with this one-time setup code: %s",
        code,
    )
    return SetupCode(code)


def create_first_admin(session: Session, *, name: str, password: str) -> User:
    """The first admin; NotFound once there is a user or another setup claimed the place first.

    The claim is a row with a fixed primary key in the same transaction: of two setups at once,
    the second waits for the first's commit and then breaks the key (SQLite and PostgreSQL).
    """
    if has_users(session):
        raise NotFound(ALREADY_DONE)
    try:
        user = create_user(session, name=name, password=password, role="admin")
        session.add(SetupClaim(id=CLAIM_ID, user_id=user.id))
        session.flush()
    except IntegrityError as exc:  # the other setup's claim (or its same name) came first
        session.rollback()
        raise NotFound(ALREADY_DONE) from exc
    return user
