"""What the API accepts and returns."""

from dataclasses import asdict
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Row

from app.models import Guest, Host
from app.models.base import utcnow
from app.services import guests as guest_service
from app.services.guest_actions import allowed_actions
from app.services.guest_failures import last_failure
from app.services.hosts import HostSummary
from app.services.inventory import last_seen
from app.services.overcommit import HostOvercommit
from app.services.tag_rules import listed


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


class AddressOut(BaseModel):
    """One IP address of the guest, and where it was learnt."""

    interface: str
    mac: str | None
    address: str
    prefix: int | None
    source: str = Field(description="DHCP lease or ARP table")


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
    cpu_percent: float | None = Field(
        description="CPU time over the last reading's interval, as a share of its vCPUs; "
        "None when not running or not read (the host's driver gives no figures)"
    )
    memory_used_kib: int | None = Field(description="memory in use, as memory_source sees it")
    memory_source: str | None = Field(
        description="guest (its balloon driver's figures) or host (QEMU's resident memory)"
    )
    disk_bps: int | None = Field(description="bytes a second its disks read and wrote")
    net_bps: int | None = Field(description="bytes a second its interfaces received and sent")
    usage_at: datetime | None = Field(description="when those figures were read")
    tags: list[str] = Field(description="its tags, as its domain XML's metadata has them")
    running_since: datetime | None = Field(
        description="when it came up, as virtdeck saw it start (or first saw it up); None when "
        "it is off, gone or its host is out of reach"
    )
    uptime_seconds: int | None = Field(description="how long it has been up since then")
    addresses: list[AddressOut] = Field(
        description="its IP addresses as the worker last read them while it was up"
    )
    addresses_at: datetime | None = Field(description="when those addresses were read")
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
    shown = guest_service.status(guest, host)
    up = guest_service.uptime(guest, shown, now=utcnow())
    return {
        "uuid": guest.uuid,
        "name": guest.name,
        "host_id": guest.host_id,
        "host_name": host.name,
        "status": shown,
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
        "cpu_percent": guest.cpu_percent,
        "memory_used_kib": guest.memory_used_kib,
        "memory_source": guest.memory_source,
        "disk_bps": guest.disk_bps,
        "net_bps": guest.net_bps,
        "usage_at": guest.usage_at,
        "tags": listed(guest.tags),
        "running_since": guest.running_since if up is not None else None,
        "uptime_seconds": None if up is None else int(up.total_seconds()),
        "addresses": guest_service.known_addresses(guest, shown),
        "addresses_at": guest.addresses_at,
        "first_seen_at": guest.first_seen_at,
        "last_seen_at": last_seen(guest, host),
        "changed_at": guest.changed_at,
        "gone_at": guest.gone_at,
    }


class FailureOut(BaseModel):
    """A guest's last failed action, kept until an action succeeds."""

    action: str
    at: datetime
    sentence: str = Field(description="what failed, in a plain sentence")
    hint: str | None = Field(description="what to do about it, when the cause is a known one")
    said: str = Field(description="libvirt's (or QEMU's) own words")


class GuestDetail(GuestOut):
    """A guest with its domain XML and its last failed action."""

    domain_xml: str
    last_failure: FailureOut | None = Field(
        description="the last lifecycle action that failed, if none has succeeded since"
    )

    @classmethod
    def of(cls, guest: Guest) -> "GuestDetail":
        """From a guest row with its host loaded."""
        failure = last_failure(guest)
        return cls(
            **guest_fields(guest, guest.host),
            domain_xml=guest.domain_xml,
            last_failure=None if failure is None else FailureOut(**asdict(failure)),
        )


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
