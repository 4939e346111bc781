"""The backups on record: one by id, the history filtered a page at a time, deleting one (not
while others, finished or running, build on it), and settling those whose job died with its
instance."""

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import transaction
from app.errors import Conflict, NotFound
from app.models import Backup, Job
from app.models.base import utcnow
from app.services.backups.actions import DELETE, status_actions
from app.services.backups.chains import chains, held, listing
from app.services.backups.files import backup_root, remove_tree
from app.services.jobs import SETTLING
from app.services.paging import check_page


def get_backup(session: Session, backup_id: int, *, lock: bool = False) -> Backup:
    """The backup, or NotFound; with lock, its row locked until the transaction ends (on
    PostgreSQL)."""
    backup = session.get(Backup, backup_id, with_for_update=lock or None)
    if backup is None:
        raise NotFound(f"backup {backup_id} not found")
    return backup


def list_backups(
    session: Session,
    *,
    host_id: int | None = None,
    guest_uuid: str | None = None,
    guest: str | None = None,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Backup], int]:
    """Backups newest first, filtered (guest: a UUID or part of a name); and how many match."""
    check_page(limit=limit, offset=offset, max_limit=500)
    query = select(Backup)
    if host_id is not None:
        query = query.where(Backup.host_id == host_id)
    if guest_uuid:
        query = query.where(Backup.guest_uuid == guest_uuid)
    if guest:
        query = query.where(
            or_(
                Backup.guest_uuid == guest.lower(),
                Backup.guest_name.contains(guest, autoescape=True),
            )
        )
    if status:
        query = query.where(Backup.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(Backup.started_at.desc(), Backup.id.desc()).offset(offset).limit(limit)
    ).all()
    return list(rows), total


def delete_backup(sessions: sessionmaker[Session], settings: Settings, backup_id: int) -> None:
    """Remove the backup's record and its files; 409 while it runs or while other backups build
    on it (naming them: finished ones go first, newest first; running ones end first). A backup
    choosing it as its parent at this moment (app.services.backups.backup_kind) either waits for
    its row lock and finds it gone, or holds it first and is named here: the delete is one
    conditional statement, so on SQLite too no backup starts building on it unseen."""
    with transaction(sessions) as session:
        backup = get_backup(session, backup_id, lock=True)
        if DELETE not in status_actions(backup.status):
            raise Conflict(
                f"backup {backup_id} is running; cancel it first", extra={"status": backup.status}
            )
        deleted = session.execute(
            delete(Backup)
            .where(Backup.id == backup_id, ~held(backup_id))
            .execution_options(synchronize_session=False)
        ).rowcount
        if not deleted:
            raise _held_conflict(
                session, backup_id, chains(session, [backup])[backup_id].dependents
            )
        remove_tree(backup_root(settings), backup.path)


def _held_conflict(session: Session, backup_id: int, dependents: tuple[int, ...]) -> Conflict:
    """The 409 naming the backups that build on backup_id: the running ones to wait for (or
    cancel), else the finished ones to delete first."""
    running = tuple(
        session.scalars(
            select(Backup.id)
            .where(Backup.id.in_(dependents), Backup.status == "running")
            .order_by(Backup.id)
        )
    )
    extra = {"dependents": list(dependents)}
    if running:
        one = len(running) == 1
        return Conflict(
            f"backup {backup_id} cannot be deleted: {listing(running)}, running now, "
            f"{'builds' if one else 'build'} on it; wait until {'it ends' if one else 'they end'} "
            f"or cancel {'it' if one else 'them'}",
            extra={**extra, "running": list(running)},
        )
    if not dependents:  # only records changed by hand: a backup of another guest names it
        return Conflict(f"backup {backup_id} cannot be deleted: another backup builds on it")
    then = (
        "builds on it; delete that one first"
        if len(dependents) == 1
        else "build on it; delete those first, newest first"
    )
    return Conflict(
        f"backup {backup_id} cannot be deleted: {listing(dependents)} {then}", extra=extra
    )


def settle_orphans(sessions: sessionmaker[Session], settings: Settings) -> int:
    """Backups still "running" whose job has ended without them (its instance died): failed,
    with the job's error, and their partial files removed. Returns how many."""
    with transaction(sessions) as session:
        orphans = session.execute(
            select(Backup, Job.error)
            .join(Job, Job.id == Backup.job_id)
            .where(Backup.status == "running", Job.status.not_in(SETTLING))
        ).all()
        for backup, error in orphans:
            remove_tree(backup_root(settings), backup.path)
            backup.status, backup.finished_at = "failed", utcnow()
            backup.error = error or "its job ended without finishing it"
        return len(orphans)
