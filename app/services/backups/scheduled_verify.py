"""Scheduled verification: every succeeded backup whose last check is older than
`backup_verify_days` is verified again, by a job per host queued by the instance holding that
host's lease (so one instance among several does it), which marks corrupt ones. Backups are
taken oldest first, so a chain's full backup is checked before the incrementals built on it;
the job's result also lists those left unrestorable (their own files intact, a backup they build
on corrupt or gone). A check missed while virtdeck was down is due at once when it is back, and
done once."""

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import transaction
from app.errors import Conflict, NotFound
from app.models import Backup, Job
from app.models.base import utcnow
from app.services.backups.verify import verify_backup
from app.services.job_work import JobEnv, store_work
from app.services.jobs import SETTLING, JobKind, create_job
from app.services.ports import Reporter

# Backups one job verifies at most; the rest are due at the next check.
BATCH = 200
QUEUED_BY = "verify schedule"


@dataclass(frozen=True)
class VerifyJob:
    """What a verification job works from: the host and its backups due, oldest first."""

    host_id: int
    backup_ids: tuple[int, ...]


def queue_due(sessions: sessionmaker[Session], settings: Settings, *, hosts: set[int]) -> list[int]:
    """A verification job for each of these hosts (the ones whose lease the caller holds) that
    has backups due and no verification queued or running; the new jobs' ids."""
    if settings.backup_verify_days <= 0 or not hosts:
        return []
    cutoff = utcnow() - timedelta(days=settings.backup_verify_days)
    queued = []
    with transaction(sessions) as session:
        for host_id in sorted(hosts - _verifying(session, hosts)):
            due = tuple(
                session.scalars(
                    select(Backup.id)
                    .where(
                        Backup.host_id == host_id,
                        Backup.status == "succeeded",
                        or_(Backup.verified_at.is_(None), Backup.verified_at < cutoff),
                    )
                    .order_by(Backup.id)
                    .limit(BATCH)
                )
            )
            if due:
                job = create_job(
                    session, kind=JobKind.BACKUP_VERIFY, host_id=host_id, created_by=QUEUED_BY
                )
                store_work(job, VerifyJob(host_id=host_id, backup_ids=due))
                queued.append(job.id)
    return queued


def _verifying(session: Session, hosts: set[int]) -> set[int]:
    """The hosts among these with a verification job queued or running."""
    return set(
        session.scalars(
            select(Job.host_id).where(
                Job.kind == JobKind.BACKUP_VERIFY,
                Job.status.in_(SETTLING),
                Job.host_id.in_(hosts),
            )
        )
    )


def run_verify(job: VerifyJob, env: JobEnv, report: Reporter) -> dict[str, Any]:
    """Verify each backup in turn; those that no longer match are marked corrupt (and the
    webhook told)."""
    total, corrupt, unrestorable, verified = len(job.backup_ids), [], [], 0
    for done, backup_id in enumerate(job.backup_ids):
        report(done / total, f"verifying backup {backup_id}: {done} of {total} done")
        try:
            checked = verify_backup(env.sessions, env.settings, backup_id)
        except (NotFound, Conflict):  # deleted, or failed/corrupt, since the job was queued
            continue
        verified += 1
        if checked.backup.status == "corrupt":
            corrupt.append(backup_id)
        elif not checked.chain.restorable:
            unrestorable.append(backup_id)
    report(1.0, "done")
    return {"verified": verified, "corrupt": corrupt, "unrestorable": unrestorable}
