"""/api/v1/audit"""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from app.deps import SessionDep, guard
from app.services import audit as audit_service
from app.services.auth import Permission
from app.services.paging import MAX_OFFSET

router = APIRouter(prefix="/audit", tags=["audit"])


class AuditOut(BaseModel):
    """One audit entry."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    request_id: str
    user_id: int | None
    username: str | None
    auth: str
    token_id: int | None
    token_name: str | None
    method: str
    path: str
    action: str
    target: str | None
    result: str
    status_code: int
    error: str | None
    duration_s: float | None = Field(None, description="how long it lasted (console sessions)")


class AuditList(BaseModel):
    """One page of audit entries, newest first."""

    items: list[AuditOut]
    total: int
    limit: int
    offset: int


@router.get("", response_model=AuditList, dependencies=guard(Permission.ADMIN))
def list_audit(
    session: SessionDep,
    username: str | None = None,
    action: Annotated[str | None, Query(description="an action or its start, e.g. 'host.'")] = None,
    result: Annotated[str | None, Query(description="ok, denied or failed")] = None,
    target: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=audit_service.MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> AuditList:
    """Who did what, newest first, with filters."""
    page = audit_service.list_entries(
        session, username=username, action=action, result=result, target=target,
        since=since, until=until, limit=limit, offset=offset,
    )  # fmt: skip
    return AuditList(
        items=[AuditOut.model_validate(e) for e in page.items],
        total=page.total,
        limit=page.limit,
        offset=page.offset,
    )
