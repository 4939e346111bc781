"""Log in, log out, and create the first admin."""

from ipaddress import ip_address
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.config import Settings
from app.deps import (
    SESSION_COOKIE,
    SessionDep,
    SettingsDep,
    check_form_token,
    form_token,
    give_form_token,
    guard,
    loopback_host,
    set_session_cookie,
)
from app.errors import Invalid, NotFound, VirtdeckError
from app.models import User
from app.models.audit import audit_target
from app.services import users as user_service
from app.services.auth import (
    Forbidden,
    Permission,
    Principal,
    end_session,
    purge_expired_sessions,
    start_session,
)
from app.services.setup import ALREADY_DONE, create_first_admin
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
    request.state.audit_target = audit_target("user", user.id, user.name)
    request.state.principal = Principal(
        user.id, user.name, user.role, "cookie", csrf_token=login.csrf_token
    )
    session.commit()
    response = redirect(request, _safe_next(target))
    set_session_cookie(response, request, secret=secret, settings=settings)
    return response


def _form_page(
    request: Request, template: str, context: dict, *, status_code: int = 200, headers=None
) -> Response:
    """The login or setup form with this browser's pre-session token (and its cookie)."""
    token = form_token(request)
    response = templates.TemplateResponse(
        request, template, {**context, "csrf_token": token}, status_code=status_code,
        headers=headers,
    )  # fmt: skip
    give_form_token(response, request, token)
    return response


def _form_refused(request: Request, template: str, exc: VirtdeckError, *, form: dict) -> Response:
    """The form again with the reason next to its field, and a token to send it again."""
    request.state.audit_denied = exc.denied
    token = form_token(request)
    response = form_refused(request, template, exc, form=form, csrf_token=token)
    give_form_token(response, request, token)
    return response


@router.get("/login", response_class=HTMLResponse, dependencies=guard(Permission.PUBLIC))
def login_form(request: Request, session: SessionDep, next: str = "/") -> Response:
    """The login form; with no users yet, the first-admin form instead."""
    if not user_service.has_users(session):
        return RedirectResponse("/setup", status_code=303)
    return _form_page(request, "login.html", {"next": next, "form": {}})


@router.post("/login", dependencies=guard(Permission.PUBLIC, "login"))
def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    name: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    next: Annotated[str, Form(max_length=512)] = "/",
    csrf_token: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Check the form's origin and token, then the password, and start a session; failures are
    slowed down."""
    request.state.audit_target = audit_target("user", name.strip()[:64])
    try:
        check_form_token(request, settings, csrf_token)
        user = user_service.authenticate(
            session, name=name, password=password, address=client_address(request),
            settings=settings,
        )  # fmt: skip
    except VirtdeckError as exc:
        request.state.audit_error = exc.message
        request.state.audit_denied = True
        context = {"next": next, "form": {"name": name}, "error": exc.message}
        return _form_page(
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


def _check_setup_allowed(request: Request, session, settings: Settings) -> None:
    if user_service.has_users(session) or not is_local(request):
        raise NotFound(ALREADY_DONE)
    if not loopback_host(request, settings):
        raise Forbidden(
            "The first admin is created only at a loopback address, such as "
            "http://127.0.0.1:8000/setup or http://localhost:8000/setup (or at a trusted "
            "origin); this request names another host."
        )


@router.get("/setup", response_class=HTMLResponse, dependencies=guard(Permission.PUBLIC))
def setup_form(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """The form for the first admin (only while there are no users, only from localhost and at
    a loopback name)."""
    if user_service.has_users(session):
        return RedirectResponse("/login", status_code=303)
    _check_setup_allowed(request, session, settings)
    return _form_page(request, "setup.html", {"form": {}})


@router.post("/setup", dependencies=guard(Permission.PUBLIC, "user.setup"))
def setup(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    name: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    password_again: Annotated[str, Form(max_length=1024)] = "",
    setup_code: Annotated[str, Form(max_length=256)] = "",
    csrf_token: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Create the first admin and log them in: from this machine, from this site's form, with
    the setup code `virtdeck serve` printed."""
    _check_setup_allowed(request, session, settings)
    check_form_token(request, settings, csrf_token)
    code = getattr(request.app.state, "setup_code", None)
    try:
        if code is None or not code.matches(setup_code.strip()):
            raise Forbidden(
                "setup_code: wrong setup code; use the one virtdeck serve printed at startup",
                field="setup_code",
            )
        if password != password_again:
            raise Invalid("password_again: the passwords differ", field="password_again")
        user = create_first_admin(session, name=name, password=password)
    except VirtdeckError as exc:
        if exc.field is None:
            raise
        return _form_refused(request, "setup.html", exc, form={"name": name})
    response = _logged_in(request, session, user, settings, "/")
    code.spend()
    return response
