"""/api/v1/guests: a guest's tags, and one action on many guests."""

from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, StringConstraints

from app.api.schemas import GuestOut
from app.deps import SessionsDep, SyncDep, bulk_run, guard, needs
from app.services import guest_bulk
from app.services.auth import Permission, Principal
from app.services.guest_tags import set_tags
from app.services.tag_rules import MAX_TAGS, RULE

router = APIRouter(prefix="/guests", tags=["guests"])
BulkAction = StrEnum("BulkAction", {a: a for a in guest_bulk.BULK_ACTIONS})


class TagsIn(BaseModel):
    """A guest's tags, all of them (what it had is replaced)."""

    tags: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        max_length=64, description=f"at most {MAX_TAGS}, each {RULE} (kept in lower case)"
    )


class BulkIn(BaseModel):
    """One action for many guests."""

    action: BulkAction
    uuids: list[Annotated[str, StringConstraints(max_length=36)]] = Field(
        min_length=1, max_length=guest_bulk.MAX_GUESTS
    )


class BulkResultOut(BaseModel):
    """How one guest's action ended."""

    uuid: str
    name: str
    outcome: str = Field(description="ok, refused (with the reason) or failed")
    message: str


class BulkOut(BaseModel):
    """A result a guest, in the order asked, and their count in one line."""

    summary: str
    results: list[BulkResultOut]


@router.put(
    "/{uuid:guest}/tags",
    response_model=GuestOut,
    responses={422: {"description": "a tag that is none, or too many"}},
    dependencies=guard(Permission.OPERATE, "guest.tags"),
)
def put_tags(
    uuid: str,
    body: TagsIn,
    sessions: SessionsDep,
    sync: SyncDep,
) -> GuestOut:
    """Replace a guest's tags: in its domain XML's metadata (a sync reads them back) and the
    inventory."""
    return GuestOut.of(set_tags(sessions, sync, uuid=uuid, tags=body.tags))


@router.post("/bulk", response_model=BulkOut)
def bulk_action(
    request: Request,
    body: BulkIn,
    principal: Annotated[Principal, needs(Permission.OPERATE)],
) -> BulkOut:
    """Start, shut down, force off or back up many guests: each on its own, with its own
    checks; a result each (ok, refused or failed), one guest's never stopping the others'."""
    action = body.action.value
    request.state.action = f"guest.bulk_{action}"
    results = guest_bulk.run_bulk(bulk_run(request, principal), action=action, uuids=body.uuids)
    return BulkOut(
        summary=guest_bulk.summary(results, action),
        results=[BulkResultOut(**vars(r)) for r in results],
    )
