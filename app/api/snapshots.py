"""/api/v1/guests/{uuid}/snapshots"""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, Field

from app.api.schemas import GuestOut
from app.deps import SessionDep, SessionsDep, SyncDep, guard, needs
from app.models import Snapshot
from app.services import guests as guest_service
from app.services import snapshots as snapshot_service
from app.services.auth import Permission, Principal
from app.services.inventory import SNAPSHOT_FIELDS

router = APIRouter(prefix="/guests", tags=["snapshots"])
REFUSALS = {
    404: {"description": "no such guest or snapshot"},
    409: {"description": "busy, a duplicate name, or something this libvirt cannot do"},
    422: {"description": "a bad name or description, or a memory choice the state rules out"},
    503: {"description": "the guest's host is not connected"},
}


class SnapshotCreate(BaseModel):
    """A snapshot to take."""

    name: str = Field(examples=["before-upgrade"])
    description: str = ""
    memory: bool | None = Field(
        None, description="save the memory state too; default: if the guest is running"
    )


class SnapshotOut(BaseModel):
    """A snapshot as the inventory knows it."""

    name: str
    parent: str | None
    depth: int = Field(description="how deep it sits in the tree (0 for a root)")
    created_at: datetime
    state: str = Field(description="the guest's state when it was taken")
    description: str
    is_current: bool
    external: bool
    memory: bool

    @classmethod
    def of(cls, snapshot: Snapshot, depth: int = 0) -> "SnapshotOut":
        """From a snapshot row and its depth."""
        return cls(depth=depth, **{c: getattr(snapshot, c) for c in SNAPSHOT_FIELDS})


class SnapshotList(BaseModel):
    """A guest's snapshots as a tree, depth first."""

    items: list[SnapshotOut]


@router.get(
    "/{uuid:guest}/snapshots", response_model=SnapshotList, dependencies=guard(Permission.VIEW)
)
def list_snapshots(uuid: str, session: SessionDep) -> SnapshotList:
    """The guest's snapshots as of the last sync or snapshot action, as a tree."""
    guest = guest_service.get_guest(session, uuid)
    tree = snapshot_service.snapshot_tree(session, guest.id)
    return SnapshotList(items=[SnapshotOut.of(n.snapshot, n.depth) for n in tree])


@router.post(
    "/{uuid:guest}/snapshots",
    response_model=SnapshotOut,
    status_code=status.HTTP_201_CREATED,
    dependencies=guard(Permission.OPERATE, "snapshot.create"),
    responses=REFUSALS,
)
def create_snapshot(
    uuid: str, body: SnapshotCreate, sessions: SessionsDep, sync: SyncDep
) -> SnapshotOut:
    """Take an internal snapshot of the guest."""
    snapshot = snapshot_service.create_snapshot(
        sessions, sync, uuid=uuid, name=body.name, description=body.description,
        memory=body.memory,
    )  # fmt: skip
    return SnapshotOut.of(snapshot)


@router.post(
    "/{uuid:guest}/snapshots/{name:snapshot}/revert",
    response_model=GuestOut,
    responses={
        **REFUSALS,
        403: {"description": "force asked by someone who is not an admin"},
        409: {"description": "busy, something this libvirt cannot do, or over the policy"},
    },
)
def revert_snapshot(
    uuid: str,
    name: str,
    sessions: SessionsDep,
    sync: SyncDep,
    principal: Annotated[Principal, needs(Permission.OPERATE, "snapshot.revert")],
    force: Annotated[
        bool, Query(description="revert even when it starts the guest over the policy (admins)")
    ] = False,
) -> GuestOut:
    """Put the guest back to the snapshot; answers with the guest as it is after. A revert that
    starts a stopped guest is checked against the overcommit policy as a start is."""
    guest = snapshot_service.revert_snapshot(
        sessions, sync, uuid=uuid, name=name, principal=principal, force=force
    )
    return GuestOut.of(guest)


@router.delete(
    "/{uuid:guest}/snapshots/{name:snapshot}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=guard(Permission.OPERATE, "snapshot.delete"),
    responses=REFUSALS,
)
def delete_snapshot(uuid: str, name: str, sessions: SessionsDep, sync: SyncDep) -> Response:
    """Delete the snapshot; its children move up to its parent."""
    snapshot_service.delete_snapshot(sessions, sync, uuid=uuid, name=name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
