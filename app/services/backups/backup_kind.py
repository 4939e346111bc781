"""Full or incremental: what a backup about to begin will be. An incremental backup copies only
the blocks a running guest wrote since its parent (the guest's newest good backup) began its
libvirt checkpoint; it is taken when the chain is sound: the disks can carry bitmaps, the parent's
checkpoint is still on the host and the newest, the disks are the same, and the chain is shorter
than backup_full_every. Otherwise the backup is full, and says why when an incremental one could
have been expected. Decided under the guest's backup lock, so no other backup of it races; the
parent is recorded on the backup as soon as it is chosen, so that it is not deleted while the
backup runs (app.services.backups.catalog)."""

from dataclasses import dataclass, field, replace

from sqlalchemy import select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from app.config import Settings
from app.db import transaction
from app.models import Backup
from app.services.backups.chains import chains
from app.virt import checkpoints
from app.virt.backups import GuestSource
from app.virt.connection import HostConnection

SHUT_OFF = "the guest was shut off: incremental backups read a running guest's changed blocks"
PUSHED = (
    "this host's running guests are copied whole by a push-mode job (incremental backups need "
    "a local host, or a qemu+ssh host reached as root)"
)


@dataclass(frozen=True)
class Plan:
    """How a backup is taken: the checkpoint it begins (None: none, as for a shut-off guest), and
    for an incremental one its parent, the parent's checkpoint it reads the changes since and the
    bytes libvirt counts as changed per disk; else why it is full (None: nothing better was
    possible, as for a guest's first backup)."""

    checkpoint: str | None = None
    parent: int | None = None
    since: str | None = None
    changed: dict[str, int] = field(default_factory=dict)
    full_reason: str | None = None

    @property
    def kind(self) -> str:
        """full or incremental."""
        return "full" if self.parent is None else "incremental"

    def as_full(self, reason: str) -> "Plan":
        """The same backup taken in full (with a new checkpoint all the same), for reason."""
        return replace(self, parent=None, since=None, changed={}, full_reason=reason)


@dataclass(frozen=True)
class _Previous:
    """The guest's newest backup an incremental one could build on, as plain values."""

    id: int
    blocker: str | None  # why it cannot be restored (so nothing can build on it)
    checkpoint: str | None
    disks: dict[str, int]  # target: capacity
    chain_length: int  # backups from its full one to it, both counted


# The statuses of a backup that holds files, so that a newer one may build on it.
_HOLDS_FILES = ("succeeded", "corrupt")


def _chain_length(session: Session, backup: Backup) -> int:
    """How many backups the chain ending at backup holds, its full one included."""
    length = 1
    while backup.kind == "incremental" and backup.parent_id is not None:
        parent = session.get(Backup, backup.parent_id)
        if parent is None:
            break
        backup, length = parent, length + 1
    return length


def _previous(sessions: sessionmaker[Session], *, uuid: str, backup_id: int) -> _Previous | None:
    """The guest's newest backup before backup_id that holds files (succeeded, or found
    corrupt since)."""
    with transaction(sessions) as session:
        backup = session.scalars(
            select(Backup)
            .where(
                Backup.guest_uuid == uuid,
                Backup.id != backup_id,
                Backup.status.in_(_HOLDS_FILES),
            )
            .order_by(Backup.started_at.desc(), Backup.id.desc())
            .limit(1)
        ).first()
        if backup is None:
            return None
        return _Previous(
            id=backup.id,
            blocker=chains(session, [backup])[backup.id].blocker,
            checkpoint=backup.checkpoint,
            disks={f["target"]: f.get("capacity") for f in backup.files if f["kind"] == "disk"},
            chain_length=_chain_length(session, backup),
        )


def _incremental_refusal(
    conn: HostConnection, source: GuestSource, previous: _Previous, settings: Settings
) -> tuple[dict[str, int], str | None]:
    """({target: bytes changed}, None) if a backup can build on previous; else ({}, why not)."""
    if previous.blocker is not None:
        return {}, (
            f"the previous backup ({previous.id}) cannot be restored ({previous.blocker}); "
            "a new full begins"
        )
    if previous.checkpoint is None:
        return {}, f"the previous backup ({previous.id}) began no checkpoint to read changes since"
    if previous.disks != {d.target: d.capacity for d in source.disks}:
        return {}, f"the guest's disks were added, removed or resized since backup {previous.id}"
    if settings.backup_full_every == 1:
        return {}, "every backup is full (backup_full_every is 1)"
    if previous.chain_length >= settings.backup_full_every:
        return {}, f"chain reached {previous.chain_length} backups; a new full begins"
    # A backup that failed without removing its own checkpoint (libvirtd died under it) left a
    # newer one; removed, its bitmap merges back, so previous's again covers every change since.
    checkpoints.delete_others(conn, source.uuid, previous.checkpoint)
    return checkpoints.changed_since(
        conn, source.uuid, previous.checkpoint, targets=[d.target for d in source.disks]
    )


def plan_backup(
    conn: HostConnection,
    sessions: sessionmaker[Session],
    settings: Settings,
    source: GuestSource,
    *,
    backup_id: int,
    checkpoint: str,
    pull: bool,
) -> Plan:
    """How backup backup_id of the guest (as source found it) is taken. pull: whether a running
    guest's disks on this host are read from a pull-mode export (else a push-mode job)."""
    previous = _previous(sessions, uuid=source.uuid, backup_id=backup_id)
    if not source.running:
        return Plan(full_reason=SHUT_OFF if previous is not None else None)
    if not pull:
        return Plan(full_reason=PUSHED)
    for disk in source.disks:
        refusal = checkpoints.bitmap_refusal(
            conn, target=disk.target, path=disk.path, fmt=disk.format
        )
        if refusal is not None:
            return Plan(full_reason=refusal)
    plan = Plan(checkpoint=checkpoint)
    if previous is None:
        return plan
    changed, refusal = _incremental_refusal(conn, source, previous, settings)
    if refusal is not None:
        return plan.as_full(refusal)
    return hold_parent(
        sessions,
        backup_id,
        replace(plan, parent=previous.id, since=previous.checkpoint, changed=changed),
    )


def hold_parent(sessions: sessionmaker[Session], backup_id: int, plan: Plan) -> Plan:
    """Record the incremental plan's parent on running backup backup_id, which then holds it: a
    delete of the parent is refused until the backup ends. If the parent was deleted since it was
    chosen, the plan is full instead. On PostgreSQL the parent's row is locked first (a delete
    locks it too, so one waits for the other); on SQLite the conditional UPDATE is one atomic
    write."""
    parent = aliased(Backup)
    with transaction(sessions) as session:
        session.execute(
            select(Backup.id).where(Backup.id == plan.parent).with_for_update(read=True)
        ).all()
        recorded = session.execute(
            update(Backup)
            .where(
                Backup.id == backup_id,
                select(parent.id)
                .where(parent.id == plan.parent, parent.status.in_(_HOLDS_FILES))
                .exists(),
            )
            .values(kind=plan.kind, parent_id=plan.parent)
            .execution_options(synchronize_session=False)
        ).rowcount
    if recorded:
        return plan
    return plan.as_full(f"the previous backup ({plan.parent}) was deleted as this one began")
