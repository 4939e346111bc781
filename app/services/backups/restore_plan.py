"""What a restore is asked to make and works from, and the checks it passes before its job is
queued (the guest's state and name are checked again as the job runs)."""

import copy
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from app.errors import Conflict, Invalid
from app.models import Backup, Host
from app.services.backups.chains import chains
from app.virt import domains, volumes
from app.virt.connection import HostConnection

RESTORE_MODES = ("in_place", "new")


@dataclass(frozen=True)
class RestoreRequest:
    """What a restore should make: the same guest again, or a new one."""

    mode: str
    name: str | None = None
    host_id: int | None = None
    pool: str | None = None


@dataclass(frozen=True)
class Ancestor:
    """A backup that the one restored builds on: where its files are and their digests."""

    backup_id: int
    path: str  # under the backup directory
    files: tuple[dict[str, Any], ...]
    manifest_sha256: str | None

    @classmethod
    def of(cls, backup: Backup) -> "Ancestor":
        """The ancestor's record, copied out of its row."""
        return cls(
            backup_id=backup.id,
            path=backup.path,
            files=tuple(copy.deepcopy(backup.files)),
            manifest_sha256=backup.manifest_sha256,
        )


@dataclass(frozen=True)
class RestoreJob:
    """What a restore job works from: the backup's record and the host it restores to, as plain
    values, and what it was asked to make."""

    backup_id: int
    guest_uuid: str
    guest_name: str
    path: str  # under the backup directory
    files: tuple[dict[str, Any], ...]  # as recorded when the backup was taken
    manifest_sha256: str | None
    host_id: int
    host_name: str
    uri: str
    request: RestoreRequest
    # The backups an incremental one builds on, its full backup first (none for a full one).
    chain: tuple[Ancestor, ...] = ()

    @classmethod
    def of(
        cls, backup: Backup, host: Host, request: RestoreRequest, chain: list[Backup]
    ) -> "RestoreJob":
        """The inputs, copied out of the rows (the job never sees a row)."""
        return cls(
            backup_id=backup.id,
            guest_uuid=backup.guest_uuid,
            guest_name=backup.guest_name,
            path=backup.path,
            files=tuple(copy.deepcopy(backup.files)),
            manifest_sha256=backup.manifest_sha256,
            host_id=host.id,
            host_name=host.name,
            uri=host.uri,
            request=request,
            chain=tuple(Ancestor.of(ancestor) for ancestor in chain),
        )

    @property
    def disks(self) -> list[dict[str, Any]]:
        """The disk images' entries."""
        return [entry for entry in self.files if entry["kind"] == "disk"]


def ancestors(session: Session, backup: Backup) -> list[Backup]:
    """The backups a restore of backup needs besides it, its full backup first; 409 naming
    the one that is gone or did not succeed."""
    blocker = chains(session, [backup])[backup.id].blocker
    if blocker is not None:
        raise Conflict(f"backup {backup.id} cannot be restored: {blocker}")
    chain, parent_id = [], backup.parent_id
    while parent_id is not None:  # chains() loaded every ancestor: these are cached rows
        parent = session.get(Backup, parent_id)
        if parent is None or parent in chain:
            raise Conflict(f"backup {backup.id} cannot be restored: its chain is broken")
        chain.append(parent)
        parent_id = parent.parent_id
    first = chain[-1] if chain else backup
    if first.kind != "full":
        raise Conflict(f"backup {backup.id} cannot be restored: backup {first.id} has no parent")
    return chain[::-1]


def check_record(job: RestoreJob) -> None:
    """In place needs the volumes recorded in the database and the manifest digest: a backup
    taken before them has only its (unchecked) manifest.json to name the volumes, which
    whoever can write the backup directory could point at any volume."""
    if job.request.mode == "in_place" and (
        job.manifest_sha256 is None or not all("path" in e for e in job.disks)
    ):
        raise Conflict(
            "this backup predates manifest checks: restore it as a new guest, or take a new backup"
        )


def check_in_place(conn: HostConnection, job: RestoreJob) -> None:
    """The guest must be shut off or gone, and its name free for its UUID."""
    state = domains.state(conn, job.guest_uuid)
    if state is not None and state != "shutoff":
        raise Conflict(
            f"{job.guest_name} is {state}; shut it off to restore it in place",
            extra={"state": state},
        )
    if domains.name_taken(conn, job.guest_name, other_than=job.guest_uuid):
        raise Conflict(f"another guest on {job.host_name} is named {job.guest_name}", field="name")


def check_new(conn: HostConnection, job: RestoreJob) -> None:
    """The new name is free on the host and the pool, if one was named, is there."""
    request = job.request
    if domains.name_taken(conn, request.name or ""):
        raise Conflict(
            f"name: {job.host_name} already has a guest named {request.name}", field="name"
        )
    if request.pool is not None and not volumes.pool_active(conn, request.pool):
        raise Invalid(f"pool: {job.host_name} has no active pool {request.pool}", field="pool")
