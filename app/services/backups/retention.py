"""Retention: which of a guest's backups a policy keeps (keep-last, -daily, -weekly, -monthly,
as Proxmox's prune), the policy that governs each guest, applying it after a backup, and the
preview of what a policy would remove.

A guest's policy is that of the most specific enabled schedule covering it (guest, then host,
then all guests; the oldest schedule first); a guest no schedule covers keeps its newest
`backup_keep` backups. The rules count restore points: succeeded backups whose whole chain (every
backup they build on) is succeeded too. Running, failed and cancelled backups are left alone.

Chains: a backup that a staying one builds on (kept, left alone, or still running) is kept too,
"backup 41 depends on it", so a chain is never cut in the middle and an incremental never
outlives its full backup.

A corrupt backup, and an incremental that cannot be restored because a backup it builds on is
corrupt or gone, count as no restore point. Each goes once it is older than the oldest kept
restore point, and not before: while no newer full backup has given the guest kept restore
points past it, it stays (it is all there is, and a corrupt file may be put right and verified
again).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import transaction
from app.errors import Invalid
from app.models import Backup, BackupSchedule, Guest
from app.services.backups.chains import HOLDING, blocker
from app.services.backups.files import backup_root, remove_tree

KEEPS = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly")
MAX_KEEP = 10000
PRUNABLE = ("succeeded", "corrupt")


@dataclass(frozen=True)
class Policy:
    """How many backups each rule keeps (0: the rule is off)."""

    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0

    @classmethod
    def checked(cls, **keeps: int) -> "Policy":
        """The policy from keep counts; 422 naming the count out of range, or keep_last when
        all are 0 (a policy that keeps nothing would remove every backup)."""
        for name, count in keeps.items():
            if not 0 <= count <= MAX_KEEP:
                raise Invalid(f"{name}: a count from 0 to {MAX_KEEP}", field=name)
        if not any(keeps.values()):
            raise Invalid("keep_last: keep at least one backup by some rule", field="keep_last")
        return cls(**keeps)

    @classmethod
    def of(cls, schedule: BackupSchedule) -> "Policy":
        """A schedule's policy."""
        return cls(**{name: getattr(schedule, name) for name in KEEPS})


@dataclass(frozen=True)
class Verdict:
    """What a policy says of one backup: kept (and by which rule) or removed."""

    backup: Backup
    keep: bool
    reason: str


# Each rule's bucket: within one bucket (a day, an ISO week, a month) only the newest is kept.
_BUCKETS: dict[str, Callable[[datetime], object]] = {
    "keep_daily": lambda t: t.date(),
    "keep_weekly": lambda t: t.isocalendar()[:2],
    "keep_monthly": lambda t: (t.year, t.month),
}


def prune(backups: Sequence[Backup], policy: Policy) -> list[Verdict]:
    """The verdict on each of one guest's prunable backups, newest first (backups: all of the
    guest's that hold on to their parents, running ones included).

    As Proxmox: keep-last keeps the newest N restore points; each later rule walks newest first
    and keeps the newest restore point of each of its N most recent buckets, skipping buckets a
    kept one covers. Then every backup a staying one builds on is kept as well.
    """
    by_id = {b.id: b for b in backups}
    ordered = sorted(
        (b for b in backups if b.status in PRUNABLE), key=lambda b: b.started_at, reverse=True
    )
    kept: dict[int, str] = {}
    good = [b for b in ordered if blocker(b, by_id) is None]
    good_ids = {b.id for b in good}
    for backup in good[: policy.keep_last]:
        kept[backup.id] = "last"
    for rule, bucket_of in _BUCKETS.items():
        count = getattr(policy, rule)
        covered = {bucket_of(b.started_at) for b in good if b.id in kept}
        taken: set[object] = set()
        for backup in good:
            bucket = bucket_of(backup.started_at)
            if backup.id in kept or bucket in covered or bucket in taken:
                continue
            if len(taken) >= count:
                break
            taken.add(bucket)
            kept[backup.id] = rule.removeprefix("keep_")
    oldest_kept = min((b.started_at for b in good if b.id in kept), default=None)
    removed: dict[int, str] = {}
    for b in ordered:
        if b.id in kept:
            continue
        if b.id in good_ids:
            removed[b.id] = "no rule keeps it"
        elif oldest_kept is not None and b.started_at < oldest_kept:
            why = blocker(b, by_id)
            removed[b.id] = "corrupt" if b.status == "corrupt" else f"cannot be restored: {why}"
    _keep_ancestors(backups, by_id, kept, removed)
    return [
        Verdict(b, b.id in kept, kept.get(b.id) or removed[b.id])
        for b in ordered
        if b.id in kept or b.id in removed
    ]


def _keep_ancestors(
    backups: Sequence[Backup],
    by_id: dict[int, Backup],
    kept: dict[int, str],
    removed: dict[int, str],
) -> None:
    """Move every backup a staying one builds on from removed to kept, naming the newest
    backup that depends on it."""
    for backup in sorted(backups, key=lambda b: b.started_at, reverse=True):
        if backup.id in removed:
            continue
        parent = by_id.get(backup.parent_id) if backup.parent_id is not None else None
        while parent is not None:
            if parent.id in removed:
                del removed[parent.id]
                kept[parent.id] = f"backup {backup.id} depends on it"
            parent = by_id.get(parent.parent_id) if parent.parent_id is not None else None


def policy_for(session: Session, settings: Settings, guest_uuid: str) -> Policy:
    """The policy that governs the guest's backups."""
    host_id = session.scalar(select(Guest.host_id).where(Guest.uuid == guest_uuid).limit(1))
    specific = case(
        (BackupSchedule.scope == "guest", 0), (BackupSchedule.scope == "host", 1), else_=2
    )
    schedule = session.scalars(
        select(BackupSchedule)
        .where(
            BackupSchedule.enabled,
            (BackupSchedule.scope == "all")
            | ((BackupSchedule.scope == "host") & (BackupSchedule.host_id == host_id))
            | ((BackupSchedule.scope == "guest") & (BackupSchedule.guest_uuid == guest_uuid)),
        )
        .order_by(specific, BackupSchedule.id)
        .limit(1)
    ).first()
    return Policy.of(schedule) if schedule else Policy(keep_last=settings.backup_keep)


def guest_backups(session: Session, guest_uuids: Sequence[str]) -> dict[str, list[Backup]]:
    """The backups of these guests that prune judges or that hold on to their parents, by
    guest."""
    found: dict[str, list[Backup]] = {uuid: [] for uuid in guest_uuids}
    for backup in session.scalars(
        select(Backup).where(Backup.guest_uuid.in_(guest_uuids), Backup.status.in_(HOLDING))
    ):
        found[backup.guest_uuid].append(backup)
    return found


def apply_retention(sessions: sessionmaker[Session], settings: Settings, guest_uuid: str) -> int:
    """Delete the guest's backups its policy does not keep, files first; how many went."""
    with transaction(sessions) as session:
        policy = policy_for(session, settings, guest_uuid)
        backups = guest_backups(session, [guest_uuid])[guest_uuid]
        removed = [v.backup for v in prune(backups, policy) if not v.keep]
        root = backup_root(settings)
        for backup in removed:
            remove_tree(root, backup.path)
            session.delete(backup)
        return len(removed)
