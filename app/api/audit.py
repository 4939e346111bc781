"""/api/v1/audit"""

from dataclasses import asdict
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, computed_field

from app.deps import SessionDep, guard
from app.models.audit import parse_targets
from app.services import audit as audit_service
from app.services.auth import Permission
from app.services.paging import MAX_OFFSET

router = APIRouter(prefix="/audit", tags=["audit"])


class TargetOut(BaseModel):
    """One thing an audit entry is about."""

    kind: str = Field(description="guest, host, user, token, backup, ...")
    id: str
    name: str | None = Field(description="its name when the entry was written, if recorded")


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

    @computed_field(description="`target` read: each thing the entry is about, with its name")
    @property
    def targets(self) -> list[TargetOut]:
        return [TargetOut(**asdict(t)) for t in parse_targets(self.target)]


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
    target: Annotated[
        str | None, Query(description="kind:id, e.g. guest:<uuid> or host:3 (whatever name it had)")
    ] = None,
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
