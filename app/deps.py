"""The FastAPI dependencies: settings, a database session, the link to hosts and workers,
permissions, and the one CSRF check (Origin and token) for forms and cookie requests."""

import math
import re
import secrets
from collections.abc import Iterator
from datetime import timedelta
from ipaddress import ip_address
from typing import Annotated, Any
from urllib.parse import urlsplit

from annotated_types import Interval
from fastapi import Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import HTTPConnection

from app.config import Settings
from app.errors import Invalid
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
from app.services.guest_bulk import BulkRun
from app.workers.calls import HostLink

SESSION_COOKIE = "virtdeck_session"
CSRF_HEADER = "X-CSRF-Token"
# Before login there is no session to hold a CSRF token: the login and setup forms carry one
# that must equal this cookie's (double submit; another site can neither read nor set it).
FORM_COOKIE = "virtdeck_form"
FORM_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")
CSRF_REFUSED = "missing or wrong CSRF token"
FORM_EXPIRED = (
    "this form has expired or did not come from this site's page: reload the page and try again"
)
CROSS_SITE = "cross-site request refused: the Origin header names another site"
# Sent by polling and live-update requests: they must not keep an idle session alive.
BACKGROUND_HEADER = "X-Virtdeck-Background"
# Requests that never count as user activity (the idle timer keeps running): the event stream,
# and the screenshots an open guest page reloads every few seconds (an <img> sends no header).
BACKGROUND_PATHS = frozenset({"/events"})
BACKGROUND_SUFFIXES = ("/screenshot",)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Routes FastAPI adds itself; they show the API's shape, never data.
UNGUARDED_PATHS = frozenset({"/docs", "/openapi.json"})


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


def get_sync(request: Request) -> HostLink:
    """This process's link to the hosts and the workers."""
    return request.app.state.sync


def get_jobs(request: Request) -> HostLink:
    """Where this process queues jobs (the workers take them)."""
    return request.app.state.jobs


def bulk_run(request: Request, principal: Principal) -> BulkRun:
    """What a bulk action of this request runs with (its audit rows carry the request's id)."""
    return BulkRun(
        sessions=get_sessions(request), sync=get_sync(request), jobs=get_jobs(request),
        settings=get_settings(request), principal=principal,
        request_id=request.state.request_id, path=request.url.path,
    )  # fmt: skip


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
SyncDep = Annotated[HostLink, Depends(get_sync)]
JobsDep = Annotated[HostLink, Depends(get_jobs)]
SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]
# A row id in a path, query or body: larger numbers are a 422, not a database error (SQLite
# cannot bind past 2**63 - 1, and the id columns are 32-bit on PostgreSQL).
MAX_ROW_ID = 2**31 - 1
RowId = Annotated[int, Interval(ge=1, le=MAX_ROW_ID)]


def parse_row_id(value: str, *, field: str, what: str) -> int:
    """A row id typed into a form or query string (RowId's range), else Invalid naming the
    field ("host_id: choose a host from the list")."""
    value = value.strip()
    fits = value.isascii() and value.isdigit() and len(value) <= len(str(MAX_ROW_ID))
    if not (fits and 1 <= int(value) <= MAX_ROW_ID):
        raise Invalid(f"{field}: choose {what} from the list", field=field)
    return int(value)


def resolve_principal(
    request: HTTPConnection, session: Session, settings: Settings, *, touch: bool | None = None
) -> Principal:
    """Who the request (or WebSocket) acts for: a Bearer token, else the session cookie, else
    anonymous. touch: whether this counts as the session's activity (None: unless it is a
    background request)."""
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
        if touch is None:
            path = request.url.path
            touch = not (
                request.headers.get(BACKGROUND_HEADER)
                or path in BACKGROUND_PATHS
                or path.endswith(BACKGROUND_SUFFIXES)
            )
        principal = session_principal(session, secret, settings=settings, touch=touch)
        if principal is not None:
            return principal
    return ANONYMOUS


def loopback_host(request: Request, settings: Settings) -> bool:
    """Whether the Host header names this machine by a loopback name or address (localhost,
    127.0.0.0/8, [::1]) or is a trusted origin's: a page that DNS rebinding put at 127.0.0.1
    still sends its own name."""
    host = request.headers.get("Host", "").strip().lower()
    if host and any(urlsplit(o).netloc == host for o in settings.trusted_origin_set):
        return True
    name = urlsplit(f"//{host}").hostname
    if name == "localhost":
        return True
    try:
        return name is not None and ip_address(name).is_loopback
    except ValueError:
        return False


def same_origin(request: HTTPConnection, settings: Settings) -> bool:
    """Whether the Origin the browser sent (if any) is this site's own or a trusted one."""
    origin = request.headers.get("Origin")
    if origin is None:  # not sent by a browser, or a same-origin GET; the token still counts
        return True
    if origin.rstrip("/").lower() in settings.trusted_origin_set:
        return True
    host = request.headers.get("Host", "")
    return bool(host) and urlsplit(origin).netloc.lower() == host.lower()


def check_csrf(
    request: Request,
    settings: Settings,
    *,
    sent: str,
    expected: str | None,
    refusal: str = CSRF_REFUSED,
) -> None:
    """The one CSRF check: the Origin is this site, and the token is the one the page got."""
    if not same_origin(request, settings):
        raise Forbidden(CROSS_SITE)
    if not expected or not secrets.compare_digest(sent.encode(), expected.encode()):
        raise Forbidden(refusal)


def form_token(request: Request) -> str:
    """This browser's pre-session token (from its cookie), or a new one."""
    current = request.cookies.get(FORM_COOKIE, "")
    return current if FORM_TOKEN.match(current) else secrets.token_urlsafe(32)


def give_form_token(response: Response, request: Request, token: str) -> None:
    """Set the pre-session token's cookie along with a form that carries it."""
    response.set_cookie(
        FORM_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def check_form_token(request: Request, settings: Settings, sent: str) -> None:
    """A login or setup form: from this site, with the token of the page that showed it."""
    expected = request.cookies.get(FORM_COOKIE)
    check_csrf(request, settings, sent=sent, expected=expected, refusal=FORM_EXPIRED)


def set_session_cookie(
    response: Response, request: Request, *, secret: str, settings: Settings
) -> None:
    """Hand the browser its session cookie."""
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        # The server enforces the limit; the cookie only must not vanish before it.
        max_age=math.ceil(timedelta(hours=settings.session_absolute_hours).total_seconds()) + 60,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )


def still_allowed(
    request: HTTPConnection, permission: Permission, *, touch: bool | None = None
) -> bool:
    """Whether a long-lived request's session or token still holds the permission (read now:
    the user may have been disabled, demoted or given a new password since it began)."""
    with request.app.state.sessions() as session:
        try:
            principal = resolve_principal(request, session, request.app.state.settings, touch=touch)
        except NotAuthenticated:
            return False
        session.commit()  # the session's activity time, when touched
        return principal.auth != "anonymous" and principal.allows(permission)


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
            check_csrf(request, settings, sent=sent, expected=principal.csrf_token)
        return principal


def needs(permission: Permission, action: str | None = None) -> Any:
    """Declare a route's permission: `principal: Annotated[Principal, needs(Permission.VIEW)]`."""
    return Depends(Needs(permission, action))


def guard(permission: Permission, action: str | None = None) -> list[Any]:
    """The same, for `dependencies=` when the route does not use the principal."""
    return [needs(permission, action)]
