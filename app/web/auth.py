"""Log in, log out, and create the first admin."""

import math
from datetime import timedelta
from ipaddress import ip_address
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.config import Settings
from app.deps import SESSION_COOKIE, SessionDep, SettingsDep, guard
from app.errors import Invalid, NotFound, VirtdeckError
from app.models import User
from app.services import users as user_service
from app.services.auth import (
    Permission,
    Principal,
    end_session,
    purge_expired_sessions,
    start_session,
)
from app.web.templating import form_refused, redirect, templates

router = APIRouter()


def client_address(request: Request) -> str:
    """The peer address of the request."""
    return request.client.host if request.client else "unknown"


def is_local(request: Request) -> bool:
    """Whether the request comes from this machine."""
    try:
        return ip_address(client_address(request)).is_loopback
    except ValueError:
        return False


def _safe_next(target: str) -> str:
    """Only paths on this site: never '//host' or a full URL."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _logged_in(request: Request, session, user: User, settings: Settings, target: str) -> Response:
    purge_expired_sessions(session, settings=settings)
    secret, login = start_session(session, user)
    request.state.audit_target = f"user:{user.id} ({user.name})"
    request.state.principal = Principal(
        user.id, user.name, user.role, "cookie", csrf_token=login.csrf_token
    )
    session.commit()
    response = redirect(request, _safe_next(target))
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
    return response


@router.get("/login", response_class=HTMLResponse, dependencies=guard(Permission.PUBLIC))
def login_form(request: Request, session: SessionDep, next: str = "/") -> Response:
    """The login form; with no users yet, the first-admin form instead."""
    if not user_service.has_users(session):
        return RedirectResponse("/setup", status_code=303)
    return templates.TemplateResponse(request, "login.html", {"next": next, "form": {}})


@router.post("/login", dependencies=guard(Permission.PUBLIC, "login"))
def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    name: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    next: Annotated[str, Form(max_length=512)] = "/",
) -> Response:
    """Check the password and start a session; failures are slowed down."""
    request.state.audit_target = f"user:{name.strip()[:64]}"
    try:
        user = user_service.authenticate(
            session, name=name, password=password, address=client_address(request),
            settings=settings,
        )  # fmt: skip
    except VirtdeckError as exc:
        session.commit()  # keep the recorded failure
        request.state.audit_error = exc.message
        request.state.audit_denied = True
        context = {"next": next, "form": {"name": name}, "error": exc.message}
        return templates.TemplateResponse(
            request, "login.html", context, status_code=exc.status_code, headers=exc.headers
        )
    return _logged_in(request, session, user, settings, next)


@router.post("/logout", dependencies=guard(Permission.VIEW, "logout"))
def logout(request: Request, session: SessionDep) -> Response:
    """End this browser session."""
    end_session(session, request.cookies.get(SESSION_COOKIE, ""))
    session.commit()
    response = redirect(request, "/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _check_setup_allowed(request: Request, session) -> None:
    if user_service.has_users(session) or not is_local(request):
        raise NotFound("the first admin is created from this machine only, and only once")


@router.get("/setup", response_class=HTMLResponse, dependencies=guard(Permission.PUBLIC))
def setup_form(request: Request, session: SessionDep) -> Response:
    """The form for the first admin (only while there are no users, only from localhost)."""
    if user_service.has_users(session):
        return RedirectResponse("/login", status_code=303)
    _check_setup_allowed(request, session)
    return templates.TemplateResponse(request, "setup.html", {"form": {}})


@router.post("/setup", dependencies=guard(Permission.PUBLIC, "user.setup"))
def setup(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    name: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    password_again: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    """Create the first admin and log them in."""
    _check_setup_allowed(request, session)
    try:
        if password != password_again:
            raise Invalid("password_again: the passwords differ", field="password_again")
        user = user_service.create_user(session, name=name, password=password, role="admin")
    except VirtdeckError as exc:
        if exc.field is None:
            raise
        return form_refused(request, "setup.html", exc, form={"name": name})
    return _logged_in(request, session, user, settings, "/")
