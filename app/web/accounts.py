"""The API tokens page (everyone, for their own tokens) and the users page (admins)."""

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from app.deps import SessionDep, guard, needs
from app.errors import Invalid, VirtdeckError
from app.models import ROLES
from app.models.audit import audit_target
from app.models.base import utcnow
from app.services import users as user_service
from app.services.auth import (
    Permission,
    Principal,
    change_user,
    create_token_for,
    list_tokens,
    revoke_token,
)
from app.web.templating import form_refused, redirect, templates

router = APIRouter()
MAX_EXPIRY_DAYS = 3650
TOKEN_FIELDS = frozenset({"name", "role", "expires_days"})
USER_FIELDS = frozenset({"name", "password", "role"})
# The plain token is in the answer to its creation only: no cache may keep it.
NO_STORE = {"Cache-Control": "no-store"}


def _htmx(request: Request) -> bool:
    return bool(request.headers.get("HX-Request"))


def roles_up_to(role: str) -> list[str]:
    """The roles a token of someone with this role may carry: theirs and the lower ones."""
    return [r for r in ROLES if user_service.role_rank(r) <= user_service.role_rank(role)]


def expiry(days: str) -> datetime | None:
    """When a token made now expires: empty for never, else a whole number of days."""
    days = days.strip()
    if not days:
        return None
    try:
        count = int(days)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_EXPIRY_DAYS:
        raise Invalid(
            f"expires_days: a whole number from 1 to {MAX_EXPIRY_DAYS}, or empty for never",
            field="expires_days",
        )
    return utcnow() + timedelta(days=count)


def _token_context(session: Session, principal: Principal) -> dict:
    admin = principal.allows(Permission.ADMIN)
    return {
        "mine": list_tokens(session, user_id=principal.user_id),
        "everyone": list_tokens(session, user_id=None) if admin else None,
        "roles": roles_up_to(principal.role),
        "form": {},
    }


@router.get("/tokens", response_class=HTMLResponse)
def tokens_page(
    request: Request, session: SessionDep, principal: Annotated[Principal, needs(Permission.VIEW)]
) -> HTMLResponse:
    """Your API tokens and a form for a new one; admins also see everyone's."""
    return templates.TemplateResponse(request, "tokens.html", _token_context(session, principal))


@router.post("/tokens", response_class=HTMLResponse)
def add_token(
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, needs(Permission.VIEW, "token.create")],
    name: Annotated[str, Form(max_length=64)] = "",
    role: Annotated[str, Form(max_length=16)] = "",
    expires_days: Annotated[str, Form(max_length=16)] = "",
) -> Response:
    """Create a token for yourself; the answer shows its secret, this once."""
    roles = roles_up_to(principal.role)
    try:
        # Checked against the role this request holds, which a token may have lowered.
        if role not in roles:
            raise Invalid(f"role: one of {', '.join(roles)}", field="role")
        expires_at = expiry(expires_days)
        secret, token = create_token_for(
            session, principal, name=name, role=role, expires_at=expires_at
        )
    except VirtdeckError as exc:
        if exc.field not in TOKEN_FIELDS:
            raise
        form = {"name": name, "role": role, "expires_days": expires_days}
        return form_refused(request, "partials/token_form.html", exc, form=form, roles=roles)
    request.state.audit_target = audit_target("token", token.id, token.name)
    session.commit()
    context = {**_token_context(session, principal), "created": token, "secret": secret}
    page = "partials/token_created.html" if _htmx(request) else "tokens.html"
    return templates.TemplateResponse(request, page, context, status_code=201, headers=NO_STORE)


@router.post("/tokens/{token_id:id}/revoke", response_class=HTMLResponse)
def revoke(
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, needs(Permission.VIEW, "token.revoke")],
    token_id: int,
    table: Annotated[Literal["mine", "all"], Form()] = "mine",
) -> Response:
    """Revoke a token (yours, or anyone's for an admin); answers with its row, updated."""
    token = revoke_token(session, token_id, principal=principal)
    request.state.audit_target = audit_target("token", token.id, token.name)
    session.commit()
    if not _htmx(request):
        return redirect(request, "/tokens")
    # An admin's own token is listed twice: the other copy is updated out of band.
    both = principal.allows(Permission.ADMIN) and token.user_id == principal.user_id
    other = ({"mine": "all", "all": "mine"}[table]) if both else None
    context = {"token": token, "table": table, "other": other}
    return templates.TemplateResponse(request, "partials/token_revoked.html", context)


def _users_context(session: Session) -> dict:
    return {"users": user_service.list_users(session), "roles": ROLES, "form": {}}


@router.get("/users", response_class=HTMLResponse, dependencies=guard(Permission.ADMIN))
def users_page(request: Request, session: SessionDep) -> HTMLResponse:
    """Every user, with their role and state, and a form for a new one."""
    return templates.TemplateResponse(request, "users.html", _users_context(session))


@router.post(
    "/users", response_class=HTMLResponse, dependencies=guard(Permission.ADMIN, "user.create")
)
def add_user(
    request: Request,
    session: SessionDep,
    name: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    role: Annotated[str, Form(max_length=16)] = "",
) -> Response:
    """Create a user from the form; a refusal shows the form again with the reason."""
    try:
        user = user_service.create_user(session, name=name, password=password, role=role)
    except VirtdeckError as exc:
        if exc.field not in USER_FIELDS:
            raise
        form = {"name": name, "role": role}
        return form_refused(request, "partials/user_form.html", exc, form=form, roles=ROLES)
    request.state.audit_target = audit_target("user", user.id, user.name)
    session.commit()
    if not _htmx(request):
        return redirect(request, "/users")
    context = {**_users_context(session), "created": user}
    return templates.TemplateResponse(
        request, "partials/user_created.html", context, status_code=201
    )


@router.post("/users/{user_id:id}", response_class=HTMLResponse)
def update_user(
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, needs(Permission.ADMIN, "user.update")],
    user_id: int,
    role: Annotated[str | None, Form(max_length=16)] = None,
    disabled: Annotated[bool | None, Form()] = None,
) -> Response:
    """Change a user's role or disable (ending their sessions and tokens) or enable them;
    answers with their row, updated."""
    user = user_service.get_user(session, user_id)
    request.state.audit_target = audit_target("user", user.id, user.name)
    change_user(session, user, principal=principal, role=role or None, disabled=disabled)
    session.commit()
    if not _htmx(request):
        return redirect(request, "/users")
    return templates.TemplateResponse(
        request, "partials/user_row.html", {"user": user, "roles": ROLES}
    )


@router.post(
    "/users/{user_id:id}/delete",
    response_class=HTMLResponse,
    dependencies=guard(Permission.ADMIN, "user.delete"),
)
def remove_user(request: Request, session: SessionDep, user_id: int) -> Response:
    """Delete a user with their sessions and tokens; the answer (empty) replaces their row."""
    user = user_service.get_user(session, user_id)
    request.state.audit_target = audit_target("user", user.id, user.name)
    user_service.delete_user(session, user)
    session.commit()
    if not _htmx(request):
        return redirect(request, "/users")
    return HTMLResponse("")
