"""Guest snapshots: the stored tree, and take, revert and delete under the guest's lock."""

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.errors import Invalid
from app.models import Guest, Snapshot
from app.services.auth import Principal
from app.services.guest_actions import guest_lock
from app.services.guest_delete import present_guest
from app.services.inventory import record_guest, record_snapshots
from app.services.overcommit import check_force, check_start_policy
from app.services.ports import HostCalls
from app.services.states import GuestState
from app.virt import snapshots as virt

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_DESCRIPTION = 1000


@dataclass(frozen=True)
class TreeNode:
    """A snapshot and how deep it sits in its guest's tree (0 for a root)."""

    snapshot: Snapshot
    depth: int


def check_name(name: str) -> str:
    """The name, or 422 on the field `name`."""
    if not NAME.fullmatch(name):
        raise Invalid(
            "name: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            field="name",
        )
    return name


def check_description(description: str) -> str:
    """The description trimmed, or 422 on the field `description`."""
    description = description.strip()
    if len(description) > MAX_DESCRIPTION:
        raise Invalid(f"description: at most {MAX_DESCRIPTION} characters", field="description")
    return description


def snapshot_tree(session: Session, guest_id: int) -> list[TreeNode]:
    """The guest's snapshots depth first, oldest sibling first, with their depth."""
    rows = list(
        session.scalars(
            select(Snapshot)
            .where(Snapshot.guest_id == guest_id)
            .order_by(Snapshot.created_at, Snapshot.name)
        )
    )
    names = {s.name for s in rows}
    children: dict[str | None, list[Snapshot]] = {}
    for s in rows:
        children.setdefault(s.parent if s.parent in names else None, []).append(s)
    tree: list[TreeNode] = []

    def walk(parent: str | None, depth: int) -> None:
        for s in children.get(parent, []):
            tree.append(TreeNode(s, depth))
            walk(s.name, depth + 1)

    walk(None, 0)
    return tree


def _refresh(sessions: sessionmaker[Session], sync: HostCalls, guest: Guest) -> None:
    """Read the guest and its snapshots again and store both."""
    info = sync.call(guest.host_id, lambda conn: conn.guest(guest.uuid))
    snaps = sync.call(guest.host_id, lambda conn: virt.list_snapshots(conn, guest.uuid))
    with transaction(sessions) as session:
        record_guest(session, guest.host_id, info)
        record_snapshots(session, guest.id, snaps)


def create_snapshot(
    sessions: sessionmaker[Session],
    sync: HostCalls,
    *,
    uuid: str,
    name: str,
    description: str = "",
    memory: bool | None = None,
) -> Snapshot:
    """Take an internal snapshot (memory: default, with it if the guest is running)."""
    name, description = check_name(name), check_description(description)
    guest = present_guest(sessions, uuid)
    with guest_lock(sessions, guest, "snapshot.create"):
        if memory is None:
            state = sync.call(guest.host_id, lambda conn: conn.guest(guest.uuid)).state
            memory = GuestState.of(state).has_live_memory
        sync.call(
            guest.host_id,
            lambda conn: virt.create_snapshot(conn, guest.uuid, name, description, memory=memory),
        )
        _refresh(sessions, sync, guest)
    with sessions() as session:
        return session.scalars(
            select(Snapshot).where(Snapshot.guest_id == guest.id, Snapshot.name == name)
        ).one()


def revert_effect(now: GuestState, taken: str) -> str | None:
    """What a revert does to the guest's running state, in words, when it changes it: the guest
    is now in state now, and the snapshot was taken in state taken (libvirt's); None when the
    guest stays as it is (on, or off)."""
    before, after = now.holds_resources, GuestState.of(taken).holds_resources
    if before and not after:
        return "it is running now and will be shut off (the snapshot was taken while it was off)"
    if after and not before:
        return "it is off now and will be running (as when the snapshot was taken)"
    return None


def _check_revert_policy(
    sessions: sessionmaker[Session], sync: HostCalls, guest: Guest, name: str
) -> None:
    """A revert that brings a stopped guest back running passes a start's overcommit check, with
    the size the snapshot's own definition gives it (which the revert restores)."""
    state = GuestState.of(sync.call(guest.host_id, lambda conn: conn.guest(guest.uuid)).state)
    if state.holds_resources:
        return  # its vCPUs and memory are counted already
    snaps = sync.call(guest.host_id, lambda conn: virt.list_snapshots(conn, guest.uuid))
    snap = next(
        (s for s in snaps if s.name == name and GuestState.of(s.state).holds_resources), None
    )
    if snap is None:
        return  # one taken shut off keeps the guest off; an unknown one is the revert's 404
    with sessions() as session:
        check_start_policy(
            session,
            guest,
            vcpus=snap.vcpus or guest.vcpus,
            memory_kib=snap.memory_kib or guest.memory_max_kib,
            action="revert",
        )


def revert_snapshot(
    sessions: sessionmaker[Session],
    sync: HostCalls,
    *,
    uuid: str,
    name: str,
    principal: Principal,
    force: bool = False,
) -> Guest:
    """Put the guest back to the snapshot (one that starts the guest is checked against the
    overcommit policy unless an admin forces it); returns the guest as it is after."""
    if force:
        check_force(principal, "a revert over the overcommit policy")
    check_name(name)
    guest = present_guest(sessions, uuid)
    with guest_lock(sessions, guest, "snapshot.revert"):
        if not force:
            _check_revert_policy(sessions, sync, guest, name)
        sync.call(guest.host_id, lambda conn: virt.revert_snapshot(conn, guest.uuid, name))
        _refresh(sessions, sync, guest)
    return present_guest(sessions, uuid)


def delete_snapshot(
    sessions: sessionmaker[Session], sync: HostCalls, *, uuid: str, name: str
) -> None:
    """Delete the snapshot (its children move up to its parent)."""
    check_name(name)
    guest = present_guest(sessions, uuid)
    with guest_lock(sessions, guest, "snapshot.delete"):
        sync.call(guest.host_id, lambda conn: virt.delete_snapshot(conn, guest.uuid, name))
        _refresh(sessions, sync, guest)
