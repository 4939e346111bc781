"""Edit a guest: vCPUs and memory (current and maximum), autostart, description, boot order.
Every value is checked against the others and the host before anything changes on it; a running
guest gets what libvirt can change live (vCPUs up to the maximum it started with, the balloon
within its maximum memory), and the rest applies at its next start. Growing a running guest is
held to the overcommit policy, as a start is (admins may force it)."""

from dataclasses import dataclass, replace

from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.errors import Conflict, Invalid
from app.models import Guest
from app.services.auth import Principal
from app.services.guest_actions import guest_lock
from app.services.guest_create.request import (
    MAX_MEMORY_MIB,
    MAX_VCPUS,
    MIN_MEMORY_MIB,
    check_guest_name,
)
from app.services.guests import get_guest
from app.services.hosts import require_connected
from app.services.inventory import record_guest
from app.services.overcommit import check_force, check_policy
from app.services.ports import HostCalls
from app.virt import domains
from app.virt.edit import BOOT_DEVICES, Applied, Change, Settings, apply_change, read_settings

MAX_DESCRIPTION = 4000
__all__ = ["BOOT_DEVICES", "Change", "current_settings", "edit_guest", "rename_guest"]


@dataclass(frozen=True)
class EditResult:
    """The guest after the edit, and where each change took effect."""

    guest: Guest
    applied: Applied


def current_settings(sync: HostCalls, guest: Guest) -> Settings:
    """The guest's settings, read from its host now (for the edit form)."""
    return sync.call(guest.host_id, lambda conn: read_settings(conn, guest.uuid))


def check_change(change: Change, now: Settings, *, host_cpus: int | None) -> None:
    """Invalid, naming the field, for values out of range or at odds with each other."""
    vcpus_max = change.vcpus_max if change.vcpus_max is not None else now.vcpus_max
    if change.vcpus_max is not None and not 1 <= change.vcpus_max <= MAX_VCPUS:
        raise Invalid(f"vcpus_max: must be 1 to {MAX_VCPUS}", field="vcpus_max")
    if host_cpus and change.vcpus_max is not None and change.vcpus_max > host_cpus:
        raise Invalid(
            f"vcpus_max: the host has {host_cpus} CPUs; a guest with more vCPUs than that runs "
            "badly (not recommended)",
            field="vcpus_max",
        )
    if change.vcpus is not None and not 1 <= change.vcpus <= vcpus_max:
        raise Invalid(f"vcpus: must be 1 to the maximum, {vcpus_max}", field="vcpus")
    if change.vcpus is None and now.vcpus > vcpus_max:
        raise Invalid(
            f"vcpus_max: below the guest's {now.vcpus} vCPUs; lower vcpus as well",
            field="vcpus_max",
        )
    memory_max = change.memory_max_kib if change.memory_max_kib is not None else now.memory_max_kib
    if change.memory_max_kib is not None and not (
        MIN_MEMORY_MIB * 1024 <= change.memory_max_kib <= MAX_MEMORY_MIB * 1024
    ):
        raise Invalid(
            f"memory_max_mib: must be {MIN_MEMORY_MIB} to {MAX_MEMORY_MIB} MiB",
            field="memory_max_mib",
        )
    if change.memory_kib is not None and not (
        MIN_MEMORY_MIB * 1024 <= change.memory_kib <= memory_max
    ):
        raise Invalid(
            f"memory_mib: must be {MIN_MEMORY_MIB} MiB to the maximum, {memory_max // 1024} MiB",
            field="memory_mib",
        )
    if change.memory_kib is None and now.memory_kib > memory_max:
        raise Invalid(
            f"memory_max_mib: below the guest's {now.memory_kib // 1024} MiB; lower memory_mib "
            "as well",
            field="memory_max_mib",
        )
    if change.description is not None and len(change.description) > MAX_DESCRIPTION:
        raise Invalid(f"description: at most {MAX_DESCRIPTION} characters", field="description")
    if change.boot_order is not None:
        check_boot_order(change.boot_order)


def check_boot_order(order: tuple[str, ...]) -> None:
    """Invalid unless order names boot devices (hd, cdrom, network, fd), each once."""
    if not order or any(d not in BOOT_DEVICES for d in order) or len(set(order)) != len(order):
        raise Invalid(
            f"boot_order: one or more of {', '.join(BOOT_DEVICES)}, each once, first tried first",
            field="boot_order",
        )


def edit_guest(
    sessions: sessionmaker[Session],
    sync: HostCalls,
    *,
    uuid: str,
    change: Change,
    principal: Principal,
    force: bool = False,
) -> EditResult:
    """Check, lock, apply and record an edit of the guest."""
    if force:
        check_force(principal, "growing a running guest over the overcommit policy")
    with sessions() as session:
        guest = get_guest(session, uuid)
        host = guest.host
        require_connected(host)
        host_cpus = host.cpus_online
    with guest_lock(sessions, guest, "edit"):
        now = current_settings(sync, guest)
        change = _differences(change, now)
        check_change(change, now, host_cpus=host_cpus)
        if now.running and not force:
            _check_growth(sessions, guest, change, now)
        applied = sync.call(guest.host_id, lambda conn: apply_change(conn, uuid, change, now))
        after = sync.call(guest.host_id, lambda conn: conn.guest(uuid))
        with transaction(sessions) as session:
            record_guest(session, guest.host_id, after)
    with sessions() as session:
        return EditResult(get_guest(session, uuid), applied)


def _differences(change: Change, now: Settings) -> Change:
    """The change without what already is so (a form sends every field)."""
    same = {
        "vcpus": now.vcpus,
        "vcpus_max": now.vcpus_max,
        "memory_kib": now.memory_kib,
        "memory_max_kib": now.memory_max_kib,
        "autostart": now.autostart,
        "description": now.description,
        "boot_order": now.boot_order,
    }
    return replace(
        change,
        **{field: None for field, value in same.items() if getattr(change, field) == value},
    )


def _check_growth(
    sessions: sessionmaker[Session], guest: Guest, change: Change, now: Settings
) -> None:
    """409 when what a running guest gets live would take its host over policy."""
    if change.vcpus is None or change.vcpus <= now.vcpus:
        return  # the policy counts vCPUs and maximum memory; a maximum waits for a start
    with sessions() as session:
        check_policy(
            session,
            guest.host_id,
            add_vcpus=change.vcpus - now.vcpus,
            add_memory_kib=0,
            action="this edit",
        )


def rename_guest(
    sessions: sessionmaker[Session], sync: HostCalls, *, uuid: str, name: str
) -> Guest:
    """Rename a shut-off guest: the name checked as a new guest's, and free on its host."""
    check_guest_name(name)
    with sessions() as session:
        guest = get_guest(session, uuid)
        require_connected(guest.host)
    with guest_lock(sessions, guest, "rename"):
        now = sync.call(guest.host_id, lambda conn: conn.guest(uuid))
        if now.state != "shutoff":
            raise Conflict(
                f"name: only a shut-off guest can be renamed ({guest.name} is {now.state})",
                field="name",
                extra={"state": now.state},
            )
        if sync.call(guest.host_id, lambda conn: domains.name_taken(conn, name, other_than=uuid)):
            raise Conflict(f"name: a guest called '{name}' is already on this host", field="name")
        sync.call(guest.host_id, lambda conn: domains.rename(conn, uuid, name))
        after = sync.call(guest.host_id, lambda conn: conn.guest(uuid))
        with transaction(sessions) as session:
            record_guest(session, guest.host_id, after)
    with sessions() as session:
        return get_guest(session, uuid)
