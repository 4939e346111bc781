"""What the API accepts and returns."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Row

from app.models import Guest, Host
from app.services import guests as guest_service
from app.services.guest_actions import allowed_actions
from app.services.hosts import HostSummary
from app.services.inventory import last_seen
from app.services.overcommit import HostOvercommit


class HostCreate(BaseModel):
    """A host to register."""

    name: str = Field(max_length=64, examples=["lab-1"])
    uri: str = Field(max_length=512, examples=["qemu+ssh://root@lab-1/system"])
    console_address: str | None = Field(
        None,
        max_length=255,
        description="qemu+tcp/tls hosts: the address at which virtdeck reaches their guests' "
        "VNC servers (libvirt has no tunnel there); local and qemu+ssh hosts need none",
    )


class HostUpdate(BaseModel):
    """What may change of a registered host."""

    console_address: str | None = Field(
        max_length=255, description="as for a new host; null or empty: none"
    )


class HostOut(BaseModel):
    """A host, its connection state, facts and guest totals."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    uri: str
    console_address: str | None
    created_at: datetime
    connection: str
    last_error: str | None
    unreachable_since: datetime | None
    last_contact_at: datetime | None
    last_sync_at: datetime | None
    last_sync_ms: float | None
    last_reconcile_at: datetime | None
    hostname: str | None
    hypervisor: str | None
    hypervisor_version: str | None
    libvirt_version: str | None
    cpu_model: str | None
    cpus_online: int | None
    memory_kib: int | None
    memory_source: str | None
    kvm_available: bool | None
    cpu_probe: dict[str, Any] | None = Field(
        description="which CPU QEMU starts new guests with here ('label') and why ('reason')"
    )
    guests_total: int
    guests_running: int
    vcpus_total: int
    memory_total_kib: int
    cpu_running_ratio: float | None = Field(description="running guests' vCPUs per CPU")
    cpu_state: str = Field(description="against the policy: ok, near, over or unknown")
    memory_running_ratio: float | None = Field(description="running guests' max memory per host's")
    memory_state: str = Field(description="against the policy: ok, near, over or unknown")

    @classmethod
    def of(cls, summary: HostSummary, picture: HostOvercommit) -> "HostOut":
        """From a host, its totals and its overcommit picture."""
        return cls.model_validate(
            {
                **{
                    k: getattr(summary.host, k)
                    for k in cls.model_fields
                    if hasattr(summary.host, k)
                },
                "guests_total": summary.guests_total,
                "guests_running": summary.guests_running,
                "vcpus_total": summary.vcpus,
                "memory_total_kib": summary.memory_kib,
                "cpu_running_ratio": picture.cpu_running.ratio,
                "cpu_state": picture.cpu_running.state,
                "memory_running_ratio": picture.memory_running.ratio,
                "memory_state": picture.memory_running.state,
            }
        )


class GuestOut(BaseModel):
    """A guest as the inventory knows it."""

    uuid: str
    name: str
    host_id: int
    host_name: str
    status: str = Field(description="gone, unknown (host unreachable) or the libvirt state")
    state: str = Field(description="the libvirt state when last seen")
    actions: list[str] = Field(description="the actions its state allows now")
    busy_action: str | None = Field(description="the action in progress, if any")
    vcpus: int
    memory_max_kib: int
    memory_current_kib: int
    autostart: bool
    persistent: bool
    disks: list[dict[str, Any]]
    nics: list[dict[str, Any]]
    first_seen_at: datetime
    last_seen_at: datetime
    changed_at: datetime
    gone_at: datetime | None

    @classmethod
    def of(cls, guest: Guest) -> "GuestOut":
        """From a guest row with its host loaded."""
        return cls(**guest_fields(guest, guest.host))


def guest_fields(guest: Guest | Row, host: Host | Row) -> dict[str, Any]:
    """GuestOut's fields, from a guest (an ORM object, or a row of a guest page) and its host:
    a list returns these dicts, validated and serialised once for the whole page."""
    return {
        "uuid": guest.uuid,
        "name": guest.name,
        "host_id": guest.host_id,
        "host_name": host.name,
        "status": guest_service.status(guest, host),
        "state": guest.state,
        "actions": allowed_actions(guest, host),
        "busy_action": guest.busy_action,
        "vcpus": guest.vcpus,
        "memory_max_kib": guest.memory_max_kib,
        "memory_current_kib": guest.memory_current_kib,
        "autostart": guest.autostart,
        "persistent": guest.persistent,
        "disks": guest.disks,
        "nics": guest.nics,
        "first_seen_at": guest.first_seen_at,
        "last_seen_at": last_seen(guest, host),
        "changed_at": guest.changed_at,
        "gone_at": guest.gone_at,
    }


class GuestDetail(GuestOut):
    """A guest with its domain XML."""

    domain_xml: str


class GuestList(BaseModel):
    """One page of guests."""

    items: list[GuestOut]
    total: int
    limit: int
    offset: int


class RefreshOut(BaseModel):
    """Whether a requested sync finished within the wait."""

    host_id: int
    synced: bool


class JobOut(BaseModel):
    """A job and how far it has got; result holds guest_uuid once a create, clone
    or restore succeeded, backup_id once a backup did."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    progress: float = Field(description="from 0 to 1")
    message: str | None
    error: str | None
    result: dict[str, Any] | None
    host_id: int | None
    guest_uuid: str | None
    created_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
