"""/api/v1/backups and POST /api/v1/guests/{uuid}/backups."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.orm import Session, sessionmaker

from app.api.schemas import JobOut
from app.deps import JobsDep, RowId, SessionDep, SessionsDep, SettingsDep, SyncDep, guard, needs
from app.models import Backup
from app.services import backups as backup_service
from app.services.auth import Permission, Principal
from app.services.backups.chains import Chain, chains
from app.services.backups.digests import ALGORITHMS, SHA256, shown

router = APIRouter(tags=["backups"])
REFUSALS = {
    404: {"description": "no such guest or backup"},
    409: {"description": "busy, in a state that rules it out, or a corrupt backup"},
    422: {"description": "a field is not acceptable; `field` names it"},
    503: {"description": "the host is not connected"},
}


class BackupFile(BaseModel):
    """One file of a backup, as its manifest lists it."""

    name: str
    kind: str = Field(description="domain-xml, disk or nvram")
    target: str | None = Field(description="the disk's target (vda) for a disk image")
    format: str | None = Field(
        description="qcow2 or raw, or delta: an incremental backup's "
        "changed blocks, one after another"
    )
    size: int
    algorithm: str | None = Field(
        description=f"what digest names: one of {', '.join(ALGORITHMS)}; null when the record "
        "holds no valid digest (verifying finds the backup corrupt)"
    )
    digest: str | None = Field(description="the file's digest when it was taken, in hex")
    sha256: str | None = Field(
        default=None, description="the same digest when the algorithm is sha256 (as before)"
    )
    copied_by: str | None = Field(
        default=None,
        description="how a disk's bytes were read: file (a local shut-off guest's volume), nbd "
        "(a local running guest's pull-mode export) or stream (through the libvirt connection)",
    )

    @model_validator(mode="before")
    @classmethod
    def _digest(cls, entry: Any) -> Any:
        """The recorded entry's digest as algorithm and digest; sha256 only for a valid one."""
        if not isinstance(entry, dict):
            return entry
        algorithm, digest = shown(entry) or (None, None)
        sha256 = digest if algorithm == SHA256 else None
        return {**entry, "algorithm": algorithm, "digest": digest, "sha256": sha256}


class BackupOut(BaseModel):
    """A backup and how it went."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    host_id: int
    host_name: str
    guest_uuid: str
    guest_name: str
    started_by: str | None
    started_at: datetime
    finished_at: datetime | None
    duration_seconds: float | None
    status: str = Field(description="running, succeeded, failed, cancelled or corrupt")
    kind: str = Field(description="full, or incremental: the blocks changed since its parent")
    parent_id: int | None = Field(description="the backup an incremental one builds on")
    checkpoint: str | None = Field(
        description="the libvirt checkpoint it began on the guest, from which the next "
        "incremental backup reads the changes (none for a shut-off guest's backup)"
    )
    full_reason: str | None = Field(
        description="why the backup is full when an incremental one could have been expected "
        "(e.g. the parent's checkpoint was missing on the host)"
    )
    changed_bytes: int | None = Field(
        description="an incremental backup's changed bytes (what it copied), over all disks"
    )
    restorable: bool = Field(
        description="whether it can be restored: it and every backup it builds on succeeded"
    )
    unrestorable_reason: str | None = Field(
        description="why it cannot be restored, e.g. 'backup 40 is corrupt'"
    )
    dependents: list[int] = Field(
        description="the backups that build on it, oldest first: it cannot be deleted before them"
    )
    guest_state: str = Field(description="running (push-mode job) or shutoff (volume copy)")
    size_bytes: int
    error: str | None
    verified_at: datetime | None
    job_id: int | None
    path: str = Field(description="the directory under the backup directory")
    files: list[BackupFile]


class BackupList(BaseModel):
    """One page of backups, newest first."""

    items: list[BackupOut]
    total: int
    limit: int
    offset: int


class BackupStarted(BaseModel):
    """A backup or restore now running: follow the job."""

    backup: BackupOut
    job: JobOut


class RestoreIn(BaseModel):
    """How to restore: in place (admins; the guest shut off or gone) or as a new guest."""

    mode: str = Field(examples=["new"], description="in_place or new")
    name: str | None = Field(None, description="the new guest's name (mode new)")
    host_id: RowId | None = Field(
        None, description="the host to restore to (mode new; default: the backup's)"
    )
    pool: str | None = Field(
        None, description="the pool for the new volumes (mode new; default: the original's)"
    )


# BackupOut's fields read from the record; the rest say where it stands in its chain.
_RECORDED = [
    name
    for name in BackupOut.model_fields
    if name not in ("restorable", "unrestorable_reason", "dependents")
]


def backup_out(backup: Backup, chain: Chain) -> BackupOut:
    """The backup as the API shows it."""
    recorded = {name: getattr(backup, name) for name in _RECORDED}
    return BackupOut.model_validate(
        {**recorded, "restorable": chain.restorable, "unrestorable_reason": chain.blocker,
         "dependents": list(chain.dependents)}
    )  # fmt: skip


def backups_out(session: Session, backups: list[Backup]) -> list[BackupOut]:
    """The backups as the API shows them, their chains read in one go."""
    found = chains(session, backups)
    return [backup_out(b, found[b.id]) for b in backups]


def _started(sessions: sessionmaker[Session], started: backup_service.Started) -> BackupStarted:
    with sessions() as session:
        (backup,) = backups_out(session, [started.backup])
    return BackupStarted(backup=backup, job=JobOut.model_validate(started.job))


@router.get("/backups", response_model=BackupList, dependencies=guard(Permission.VIEW))
def list_backups(
    session: SessionDep,
    host_id: RowId | None = None,
    guest_uuid: str | None = None,
    status: str | None = None,
    limit: Annotated[int, Query()] = 50,
    offset: Annotated[int, Query()] = 0,
) -> BackupList:
    """Backups newest first, filtered by host, guest and status."""
    rows, total = backup_service.list_backups(
        session, host_id=host_id, guest_uuid=guest_uuid, status=status, limit=limit, offset=offset
    )
    return BackupList(items=backups_out(session, rows), total=total, limit=limit, offset=offset)


@router.get(
    "/backups/{backup_id:id}", response_model=BackupOut, dependencies=guard(Permission.VIEW)
)
def get_backup(backup_id: int, session: SessionDep) -> BackupOut:
    """One backup with its files and where it stands in its chain."""
    (backup,) = backups_out(session, [backup_service.get_backup(session, backup_id)])
    return backup


@router.post(
    "/guests/{uuid:guest}/backups",
    response_model=BackupStarted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=REFUSALS,
)
def start_backup(
    uuid: str,
    sessions: SessionsDep,
    sync: SyncDep,
    jobs: JobsDep,
    settings: SettingsDep,
    principal: Annotated[Principal, needs(Permission.OPERATE, "backup.create")],
) -> BackupStarted:
    """Back the guest up now (running: push-mode job; shut off: volume copy), as a job."""
    return _started(
        sessions,
        backup_service.start_backup(sessions, sync, jobs, settings, uuid=uuid, principal=principal),
    )


@router.post(
    "/backups/{backup_id:id}/verify",
    response_model=BackupOut,
    dependencies=guard(Permission.OPERATE, "backup.verify"),
    responses=REFUSALS,
)
def verify_backup(backup_id: int, sessions: SessionsDep, settings: SettingsDep) -> BackupOut:
    """Recompute every checksum: succeeded again, or corrupt naming the files; and whether it
    can still be restored (restorable, unrestorable_reason)."""
    verified = backup_service.verify_backup(sessions, settings, backup_id)
    return backup_out(verified.backup, verified.chain)


@router.post(
    "/backups/{backup_id:id}/restore",
    response_model=BackupStarted,
    status_code=status.HTTP_202_ACCEPTED,
    responses={**REFUSALS, 403: {"description": "in place asked by someone not an admin"}},
)
def restore_backup(
    backup_id: int,
    body: RestoreIn,
    sessions: SessionsDep,
    sync: SyncDep,
    jobs: JobsDep,
    settings: SettingsDep,
    principal: Annotated[Principal, needs(Permission.OPERATE, "backup.restore")],
) -> BackupStarted:
    """Verify, check the images, then restore in place or as a new guest, as a job."""
    request = backup_service.RestoreRequest(
        mode=body.mode, name=body.name, host_id=body.host_id, pool=body.pool
    )
    return _started(
        sessions,
        backup_service.start_restore(
            sessions,
            sync,
            jobs,
            settings,
            backup_id=backup_id,
            request=request,
            principal=principal,
        ),
    )


@router.delete(
    "/backups/{backup_id:id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=guard(Permission.ADMIN, "backup.delete"),
    responses=REFUSALS,
)
def delete_backup(backup_id: int, sessions: SessionsDep, settings: SettingsDep) -> Response:
    """Remove the backup's files and its record; 409 naming the backups that build on it."""
    backup_service.delete_backup(sessions, settings, backup_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
