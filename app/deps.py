"""The FastAPI dependencies: settings, a database session, the sync manager, and permissions."""

import secrets
from collections.abc import Iterator
from typing import Annotated, Any

from annotated_types import Interval
from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.services.auth import (
    ANONYMOUS,
    LOWEST_ROLE,
    Forbidden,
    NotAuthenticated,
    Permission,
    Principal,
    session_principal,
    token_principal,
)
from app.workers.jobs import JobRunner
from app.workers.sync import SyncManager

SESSION_COOKIE = "virtdeck_session"
CSRF_HEADER = "X-CSRF-Token"
# Sent by polling and live-update requests: they must not keep an idle session alive.
BACKGROUND_HEADER = "X-Virtdeck-Background"
# Requests that never count as user activity (the idle timer keeps running): the event stream.
BACKGROUND_PATHS = frozenset({"/events"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Routes FastAPI adds itself; they show the API's shape, never data.
UNGUARDED_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """A session for the request; routes that change something commit it themselves."""
    with request.app.state.sessions() as session:
        yield session


def get_sessions(request: Request) -> sessionmaker[Session]:
    """The session factory, for work that commits in steps of its own (locks, jobs)."""
    return request.app.state.sessions


def get_sync(request: Request) -> SyncManager:
    """The sync manager of this process."""
    return request.app.state.sync


def get_jobs(request: Request) -> JobRunner:
    """The job runner of this process."""
    return request.app.state.jobs


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
SyncDep = Annotated[SyncManager, Depends(get_sync)]
JobsDep = Annotated[JobRunner, Depends(get_jobs)]
SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]
# A row id in a path, query or body: larger numbers are a 422, not a database error (SQLite
# cannot bind past 2**63 - 1, and the id columns are 32-bit on PostgreSQL).
RowId = Annotated[int, Interval(ge=1, le=2**31 - 1)]


def resolve_principal(request: Request, session: Session, settings: Settings) -> Principal:
    """Who the request acts for: a Bearer token, else the session cookie, else anonymous."""
    header = request.headers.get("Authorization")
    if header:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise NotAuthenticated("Authorization: expected 'Bearer <token>'")
        principal = token_principal(session, secret.strip())
        if principal is None:
            raise NotAuthenticated("the API token is invalid, expired or revoked")
        return principal
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        touch = (
            not request.headers.get(BACKGROUND_HEADER) and request.url.path not in BACKGROUND_PATHS
        )
        principal = session_principal(session, secret, settings=settings, touch=touch)
        if principal is not None:
            return principal
    return ANONYMOUS


class Needs:
    """The permission a route declares (and the action name its audit rows carry)."""

    def __init__(self, permission: Permission, action: str | None = None) -> None:
        self.permission = permission
        self.action = action

    def __call__(self, request: Request, session: SessionDep, settings: SettingsDep) -> Principal:
        """Authenticate, then check the permission and, for cookie requests, the CSRF token."""
        if self.action:
            request.state.action = self.action
        principal = resolve_principal(request, session, settings)
        request.state.principal = principal
        session.commit()  # the session's activity time, the token's last use
        if self.permission is Permission.PUBLIC:
            return principal
        if principal.auth == "anonymous":
            raise NotAuthenticated("log in first (or send an API token)")
        if not principal.allows(self.permission):
            raise Forbidden(
                f"your role ({principal.role}) does not allow this; "
                f"it needs {LOWEST_ROLE[self.permission]}"
            )
        if principal.auth == "cookie" and request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not secrets.compare_digest(sent, principal.csrf_token or ""):
                raise Forbidden("missing or wrong CSRF token")
        return principal


def needs(permission: Permission, action: str | None = None) -> Any:
    """Declare a route's permission: `principal: Annotated[Principal, needs(Permission.VIEW)]`."""
    return Depends(Needs(permission, action))


def guard(permission: Permission, action: str | None = None) -> list[Any]:
    """The same, for `dependencies=` when the route does not use the principal."""
    return [needs(permission, action)]
