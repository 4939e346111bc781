"""/api/v1/guests/{uuid}/settings: a guest's size and settings, read from its host, and the edit
of them (PATCH); /rename for a shut-off guest."""

from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from app.api.schemas import GuestOut
from app.deps import SessionDep, SessionsDep, SyncDep, guard, needs
from app.models.audit import audit_target
from app.services import guests as guest_service
from app.services.auth import Permission, Principal
from app.services.guest_edit import Change, current_settings, edit_guest, rename_guest

router = APIRouter(prefix="/guests", tags=["guests"])


class SettingsOut(BaseModel):
    """A guest's persistent size and settings, and what it runs with now."""

    vcpus: int
    vcpus_max: int
    memory_mib: int
    memory_max_mib: int
    autostart: bool
    description: str
    running: bool
    live_vcpus_max: int | None = Field(description="the maximum the running guest started with")
    live_memory_max_mib: int | None
    has_balloon: bool
    boot_order: list[str] = Field(description="boot devices, first tried first: hd, cdrom, ...")
    firmware: str = Field(description="bios or uefi (shown, not changed)")


class SettingsIn(BaseModel):
    """What to change; a field left out stays as it is."""

    vcpus: int | None = Field(None, ge=1, le=4096)
    vcpus_max: int | None = Field(None, ge=1, le=4096)
    memory_mib: int | None = Field(None, ge=1, le=2**31)
    memory_max_mib: int | None = Field(None, ge=1, le=2**31)
    autostart: bool | None = None
    description: str | None = Field(None, max_length=4000)
    boot_order: list[str] | None = Field(
        None, max_length=4, description="hd, cdrom, network or fd, each once, first tried first"
    )
    force: bool = Field(False, description="grow a running guest over the policy (admins only)")


class EditOut(BaseModel):
    """The guest after the edit, and where each change took effect."""

    guest: GuestOut
    live: list[str] = Field(description="changed on the running guest (and in its config)")
    next_start: list[str] = Field(description="saved in its config: applies at next start")


def _mib(kib: int | None) -> int | None:
    return None if kib is None else kib // 1024


@router.get(
    "/{uuid:guest}/settings", response_model=SettingsOut, dependencies=guard(Permission.VIEW)
)
def guest_settings(uuid: str, session: SessionDep, sync: SyncDep) -> SettingsOut:
    """The guest's vCPUs, memory, autostart and description as its host has them now."""
    now = current_settings(sync, guest_service.get_guest(session, uuid))
    return SettingsOut(
        vcpus=now.vcpus,
        vcpus_max=now.vcpus_max,
        memory_mib=now.memory_kib // 1024,
        memory_max_mib=now.memory_max_kib // 1024,
        autostart=now.autostart,
        description=now.description,
        running=now.running,
        live_vcpus_max=now.live_vcpus_max,
        live_memory_max_mib=_mib(now.live_memory_max_kib),
        has_balloon=now.has_balloon,
        boot_order=list(now.boot_order),
        firmware=now.firmware,
    )


@router.patch(
    "/{uuid:guest}/settings",
    response_model=EditOut,
    responses={
        403: {"description": "force asked by someone who is not an admin"},
        409: {"description": "busy, or growing the running guest would go over the policy"},
        422: {"description": "a value out of range or at odds with another, naming the field"},
    },
)
def change_settings(
    request: Request,
    uuid: str,
    body: SettingsIn,
    sessions: SessionsDep,
    sync: SyncDep,
    principal: Annotated[Principal, needs(Permission.OPERATE, "guest.edit")],
) -> EditOut:
    """Change vCPUs, memory, autostart, description or boot order: live where the running
    guest can take it (vCPUs up to the maximum it started with, memory within its maximum by
    the balloon), else in its config for the next start."""
    change = Change(
        vcpus=body.vcpus,
        vcpus_max=body.vcpus_max,
        memory_kib=None if body.memory_mib is None else body.memory_mib * 1024,
        memory_max_kib=None if body.memory_max_mib is None else body.memory_max_mib * 1024,
        autostart=body.autostart,
        description=body.description,
        boot_order=None if body.boot_order is None else tuple(body.boot_order),
    )
    result = edit_guest(
        sessions, sync, uuid=uuid, change=change, principal=principal, force=body.force
    )
    request.state.audit_target = audit_target("guest", uuid, result.guest.name)
    return EditOut(
        guest=GuestOut.of(result.guest),
        live=list(result.applied.live),
        next_start=list(result.applied.next_start),
    )


class RenameIn(BaseModel):
    """The guest's new name."""

    name: str = Field(max_length=64, examples=["web-2"])


@router.post(
    "/{uuid:guest}/rename",
    response_model=GuestOut,
    responses={
        409: {"description": "the guest is not shut off, or the name is taken on its host"},
        422: {"description": "the name breaks the naming rule"},
    },
    dependencies=guard(Permission.OPERATE, "guest.rename"),
)
def rename(
    request: Request, uuid: str, body: RenameIn, sessions: SessionsDep, sync: SyncDep
) -> GuestOut:
    """Rename a shut-off guest (libvirt refuses one with snapshots or checkpoints)."""
    guest = rename_guest(sessions, sync, uuid=uuid, name=body.name)
    request.state.audit_target = audit_target("guest", uuid, guest.name)
    return GuestOut.of(guest)
