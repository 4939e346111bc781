"""/api/v1/me, /api/v1/tokens and /api/v1/users"""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from app.deps import (
    SESSION_COOKIE,
    SessionDep,
    SettingsDep,
    guard,
    needs,
    set_session_cookie,
)
from app.errors import Invalid
from app.models.audit import audit_target
from app.services import users as user_service
from app.services.auth import (
    Permission,
    Principal,
    change_user,
    create_token_for,
    list_tokens,
    revoke_token,
)

router = APIRouter(tags=["accounts"])


class MeOut(BaseModel):
    """Who the request acts for."""

    user_id: int
    username: str
    role: str
    auth: str
    token_name: str | None


class TokenCreate(BaseModel):
    """A new API token for yourself."""

    name: str = Field(max_length=64, examples=["ci-nightly"])
    role: str | None = Field(None, description="your role or a lower one; default yours")
    expires_at: datetime | None = Field(None, description="UTC; none for no expiry")


class TokenOut(BaseModel):
    """An API token (never its secret)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str
    role: str
    user_id: int
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    """A new token: the secret is shown this once."""

    token: str


class UserCreate(BaseModel):
    """A new user."""

    name: str = Field(max_length=64)
    password: str = Field(max_length=1024)
    role: str


class UserUpdate(BaseModel):
    """Changes to a user."""

    role: str | None = None
    disabled: bool | None = None
    password: str | None = Field(None, max_length=1024)


class UserOut(BaseModel):
    """A user (never the password hash)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    role: str
    disabled: bool
    created_at: datetime


@router.get("/me", response_model=MeOut)
def me(principal: Annotated[Principal, needs(Permission.VIEW)]) -> MeOut:
    """The user and role this request acts as."""
    return MeOut(
        user_id=principal.user_id,
        username=principal.username,
        role=principal.role,
        auth=principal.auth,
        token_name=principal.token_name,
    )


@router.get("/tokens", response_model=list[TokenOut])
def get_tokens(
    session: SessionDep, principal: Annotated[Principal, needs(Permission.VIEW)], all: bool = False
) -> list[TokenOut]:
    """Your tokens; admins may ask for everyone's with all=true."""
    if all and not principal.allows(Permission.ADMIN):
        raise Invalid("all: only admins may list everyone's tokens", field="all")
    tokens = list_tokens(session, user_id=None if all else principal.user_id)
    return [TokenOut.model_validate(t) for t in tokens]


@router.post("/tokens", response_model=TokenCreated, status_code=status.HTTP_201_CREATED)
def post_token(
    request: Request,
    body: TokenCreate,
    session: SessionDep,
    principal: Annotated[Principal, needs(Permission.VIEW, "token.create")],
) -> TokenCreated:
    """Create a token for yourself (from a browser session); its secret is in this answer only."""
    secret, token = create_token_for(
        session, principal, name=body.name, role=body.role, expires_at=body.expires_at
    )
    request.state.audit_target = audit_target("token", token.id, token.name)
    session.commit()
    return TokenCreated(**TokenOut.model_validate(token).model_dump(), token=secret)


@router.delete("/tokens/{token_id:id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_token(
    token_id: int,
    session: SessionDep,
    principal: Annotated[Principal, needs(Permission.VIEW, "token.revoke")],
) -> Response:
    """Revoke a token (yours, or anyone's for an admin)."""
    revoke_token(session, token_id, principal=principal)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/users", response_model=list[UserOut], dependencies=guard(Permission.ADMIN))
def get_users(session: SessionDep) -> list[UserOut]:
    """Every user."""
    return [UserOut.model_validate(u) for u in user_service.list_users(session)]


@router.post(
    "/users",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    dependencies=guard(Permission.ADMIN, "user.create"),
)
def post_user(request: Request, body: UserCreate, session: SessionDep) -> UserOut:
    """Create a user."""
    user = user_service.create_user(session, name=body.name, password=body.password, role=body.role)
    request.state.audit_target = audit_target("user", user.id, user.name)
    session.commit()
    return UserOut.model_validate(user)


@router.patch("/users/{user_id:id}", response_model=UserOut)
def patch_user(
    request: Request,
    response: Response,
    user_id: int,
    body: UserUpdate,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, needs(Permission.ADMIN, "user.update")],
) -> UserOut:
    """Change a user's role, disabled flag or password. A new password or disabling ends the
    user's sessions and revokes their tokens; your own new password keeps this session."""
    user = user_service.get_user(session, user_id)
    secret = change_user(
        session, user, principal=principal, current_secret=request.cookies.get(SESSION_COOKIE),
        role=body.role, disabled=body.disabled, password=body.password,
    )  # fmt: skip
    session.commit()
    if secret:
        set_session_cookie(response, request, secret=secret, settings=settings)
    return UserOut.model_validate(user)


@router.delete(
    "/users/{user_id:id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=guard(Permission.ADMIN, "user.delete"),
)
def delete_user(user_id: int, session: SessionDep) -> Response:
    """Delete a user with their sessions and tokens."""
    user_service.delete_user(session, user_service.get_user(session, user_id))
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
