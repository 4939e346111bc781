"""Chains of incremental backups: what a backup builds on (its ancestors, every one of which a
restore of it needs), what builds on it (which deleting it would break), and so whether it can
be restored and whether it may be deleted."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session, aliased

from app.models import Backup

# The statuses of a backup that holds on to its parent: its files are (being) written as the
# changes since the parent's. A failed or cancelled one left no files, so it holds nothing.
HOLDING = ("running", "succeeded", "corrupt")
_OWN_STATUS = {
    "running": "it is still running",
    "failed": "it failed",
    "cancelled": "it was cancelled",
    "corrupt": "its own files are corrupt",
}


@dataclass(frozen=True)
class Chain:
    """Where one backup stands in its chain."""

    # The backup it builds on (None: a full backup, or its parent's record is gone).
    parent: Backup | None
    # Why it cannot be restored, e.g. "backup 40 is corrupt"; None when it can.
    blocker: str | None
    # The backups that build on it, directly or through others, oldest first.
    dependents: tuple[int, ...]

    @property
    def restorable(self) -> bool:
        """Whether a restore of it can give the disks as they were."""
        return self.blocker is None


def blocker(backup: Backup, by_id: Mapping[int, Backup]) -> str | None:
    """Why the backup cannot be restored, from its status and its ancestors' as by_id has them
    (an ancestor missing from by_id is gone); None when it can."""
    if backup.status != "succeeded":
        return _OWN_STATUS.get(backup.status, f"it is {backup.status}")
    child_id, parent_id = backup.id, backup.parent_id
    while parent_id is not None:
        if parent_id >= child_id:  # a parent is always older: the record was changed by hand
            return f"backup {child_id} names a later backup, {parent_id}, as its parent"
        child_id, parent = parent_id, by_id.get(parent_id)
        if parent is None:
            return f"backup {parent_id}, which it builds on, is gone"
        if parent.status != "succeeded":
            return f"backup {parent_id} is {parent.status}"
        parent_id = parent.parent_id
    return None


def descendants(backup_id: int, children: Mapping[int, Sequence[int]]) -> tuple[int, ...]:
    """The backups that build on backup_id, directly or not, oldest (lowest id) first."""
    found, todo = [], list(children.get(backup_id, ()))
    while todo:
        child = todo.pop()
        if child in found:  # only a record changed by hand makes a loop
            continue
        found.append(child)
        todo.extend(children.get(child, ()))
    return tuple(sorted(found))


def chains(session: Session, backups: Sequence[Backup]) -> dict[int, Chain]:
    """Each backup's place in its chain, by id: its ancestors are loaded a generation at a
    time, and every holding incremental of the same guests is read once for the dependents."""
    if not backups:
        return {}
    by_id = {b.id: b for b in backups}
    wanted = {b.parent_id for b in backups if b.parent_id is not None} - by_id.keys()
    while wanted:
        found = session.scalars(select(Backup).where(Backup.id.in_(wanted))).all()
        by_id.update((b.id, b) for b in found)
        wanted = {b.parent_id for b in found if b.parent_id is not None} - by_id.keys()
    children: dict[int, list[int]] = {}
    for child_id, parent_id in session.execute(
        select(Backup.id, Backup.parent_id).where(
            Backup.guest_uuid.in_({b.guest_uuid for b in backups}),
            Backup.parent_id.is_not(None),
            Backup.status.in_(HOLDING),
        )
    ):
        children.setdefault(parent_id, []).append(child_id)
    return {
        b.id: Chain(
            parent=by_id.get(b.parent_id) if b.parent_id is not None else None,
            blocker=blocker(b, by_id),
            dependents=descendants(b.id, children),
        )
        for b in backups
    }


def held(backup_id: int) -> ColumnElement[bool]:
    """The SQL condition that a backup holding on to backup_id (see HOLDING) builds on it."""
    child = aliased(Backup)
    return select(child.id).where(child.parent_id == backup_id, child.status.in_(HOLDING)).exists()


def listing(backup_ids: Sequence[int]) -> str:
    """'backup 41', 'backups 41 and 42', 'backups 41, 42 and 43'."""
    if len(backup_ids) == 1:
        return f"backup {backup_ids[0]}"
    *rest, last = backup_ids
    return f"backups {', '.join(str(i) for i in rest)} and {last}"
