"""Jobs: long work (create with a new disk, clone, backup, restore) that the UI and API follow
by id."""

from datetime import timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.orm import Session

from app.errors import Conflict, NotFound
from app.live import note
from app.models import Job
from app.models.base import utcnow

INTERRUPTED = "interrupted: virtdeck stopped before the job finished"
# Running workers beat their jobs' hearts this often; a job silent for STALE_SECONDS is dead
# (its worker was killed): another worker fails it within about STALE + HEARTBEAT seconds.
HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 20.0
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
# Still to end: pages keep following these.
SETTLING = frozenset({"queued", "running"})


class JobKind(StrEnum):
    """What a job does; the value is the `kind` stored and shown (guest.create, backup, restore)."""

    GUEST_CREATE = "guest.create"
    GUEST_CLONE = "guest.clone"
    BACKUP = "backup"
    RESTORE = "restore"
    BACKUP_VERIFY = "backup.verify"

    @property
    def cancellable(self) -> bool:
        """Its work stops cleanly when asked (the others would leave half-made things behind)."""
        return self in (
            JobKind.BACKUP, JobKind.RESTORE, JobKind.GUEST_CLONE, JobKind.BACKUP_VERIFY,
        )  # fmt: skip


def create_job(
    session: Session,
    *,
    kind: JobKind,
    host_id: int | None = None,
    guest_uuid: str | None = None,
    created_by: str | None = None,
) -> Job:
    """A queued job, flushed so that it has its id."""
    job = Job(
        kind=kind,
        status="queued",
        host_id=host_id,
        guest_uuid=guest_uuid,
        created_by=created_by,
        progress=0.0,
        message="queued",
    )
    session.add(job)
    session.flush()
    return job


def settling(job: Job) -> bool:
    """Whether the job is still queued or running."""
    return job.status in SETTLING


def get_job(session: Session, job_id: int) -> Job:
    """The job, or NotFound."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


def mark_running(session: Session, job_id: int) -> None:
    """The job has begun."""
    job = get_job(session, job_id)
    job.status, job.started_at, job.message = "running", utcnow(), "started"


def record_progress(session: Session, job_id: int, *, progress: float, message: str) -> None:
    """How far the job has got (0 to 1) and what it is doing."""
    job = get_job(session, job_id)
    job.progress, job.message = min(max(progress, 0.0), 1.0), message[:255]


def mark_succeeded(session: Session, job_id: int, result: dict[str, Any]) -> None:
    """The job finished; result says what it made."""
    job = get_job(session, job_id)
    job.status, job.progress, job.message = "succeeded", 1.0, "done"
    job.result, job.finished_at = result, utcnow()


def mark_failed(session: Session, job_id: int, error: str) -> None:
    """The job ended with this error."""
    job = get_job(session, job_id)
    job.status, job.message, job.error, job.finished_at = "failed", "failed", error, utcnow()


def cancel_requested(session: Session, job_id: int) -> bool:
    """Whether someone asked the job to stop."""
    return bool(get_job(session, job_id).cancel_requested)


def request_cancel(session: Session, job_id: int) -> Job:
    """Ask a queued or running job to stop; 409 if it has finished or cannot be cancelled."""
    job = get_job(session, job_id)
    if job.status in FINISHED:
        raise Conflict(f"job {job_id} has already {job.status}", extra={"status": job.status})
    if not any(job.kind == kind for kind in JobKind if kind.cancellable):
        raise Conflict(f"a {job.kind} job cannot be cancelled", extra={"status": job.status})
    job.cancel_requested = True
    job.message = "cancelling"
    return job


def mark_cancelled(session: Session, job_id: int) -> None:
    """The job stopped because it was asked to."""
    job = get_job(session, job_id)
    job.status, job.message, job.finished_at = "cancelled", "cancelled", utcnow()


def beat(session: Session, job_ids: list[int]) -> None:
    """These jobs are still being run."""
    if job_ids:
        session.execute(
            update(Job)
            .where(Job.id.in_(job_ids), Job.status.in_(SETTLING))
            .values(heartbeat_at=utcnow())
            .execution_options(synchronize_session=False)
        )


def fail_abandoned(session: Session, error: str = INTERRUPTED) -> int:
    """Mark failed every queued or running job that no instance has claimed or beaten for
    STALE_SECONDS (its instance stopped or died); returns how many."""
    cutoff = utcnow() - timedelta(seconds=STALE_SECONDS)
    failed = session.scalars(
        update(Job)
        .where(
            Job.status.in_(SETTLING),
            func.coalesce(Job.heartbeat_at, Job.created_at) < cutoff,
        )
        .values(status="failed", message="failed", error=error, finished_at=utcnow())
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    ).all()
    if failed:  # pages following these jobs show how they ended (a bulk update is not noted)
        note(session, "jobs", *(f"job-{job_id}" for job_id in failed))
    return len(failed)
