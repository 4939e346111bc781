"""What web processes and worker processes ask of each other through the database, which both
reach: syncs asked for a host (a counter the asker raises, the highest one a worker answered),
queued jobs a worker takes, and each worker's heartbeat and figures for /metrics."""

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from app.models import Host, Job, WorkerRecord
from app.models.base import utcnow

# A worker that has not said it runs for this long is left out of /metrics.
WORKER_STALE_SECONDS = 30.0


def request_sync(session: Session, host_id: int) -> int:
    """Ask the host's worker for a sync; the request's number (answered once a sync that began
    after it has finished)."""
    session.execute(
        update(Host)
        .where(Host.id == host_id)
        .values(sync_requested=Host.sync_requested + 1)
        .execution_options(synchronize_session=False)
    )
    return session.scalar(select(Host.sync_requested).where(Host.id == host_id)) or 0


def answered(session: Session, host_id: int) -> int:
    """The highest sync request of the host a worker has answered (0 once the host is gone)."""
    return session.scalar(select(Host.sync_answered).where(Host.id == host_id)) or 0


def registered(session: Session) -> dict[int, tuple[str, int, int]]:
    """Every host's URI, its last sync request and the last answered one."""
    return {
        host_id: (uri, requested, done)
        for host_id, uri, requested, done in session.execute(
            select(Host.id, Host.uri, Host.sync_requested, Host.sync_answered)
        )
    }


def answer(session: Session, host_id: int, request: int) -> None:
    """A sync that began after this request has finished."""
    session.execute(
        update(Host)
        .where(Host.id == host_id, Host.sync_answered < request)
        .values(sync_answered=request)
        .execution_options(synchronize_session=False)
    )


def waiting_jobs(session: Session, limit: int) -> list[int]:
    """Up to `limit` queued jobs whose work is stored and that nobody runs yet, oldest first."""
    if limit <= 0:
        return []
    return list(
        session.scalars(
            select(Job.id)
            .where(Job.status == "queued", Job.owner.is_(None), Job.inputs.is_not(None))
            .order_by(Job.id)
            .limit(limit)
        )
    )


def take_jobs(session: Session, owner: str, job_ids: list[int]) -> list[Job]:
    """Take these waiting jobs (waiting_jobs); another worker taking the same job at the same
    moment gets none of them twice."""
    taken = []
    for job_id in job_ids:
        won = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.owner.is_(None), Job.status == "queued")
            .values(owner=owner, heartbeat_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount
        if won:
            taken.append(session.get(Job, job_id))
    return taken


def queued_jobs(session: Session) -> int:
    """Jobs waiting for a worker (the queue depth /metrics shows)."""
    return session.scalar(
        select(func.count()).select_from(Job).where(Job.status == "queued", Job.owner.is_(None))
    )


def report_worker(session: Session, instance: str, stats: dict[str, Any]) -> None:
    """This worker still runs; these are its figures."""
    now = utcnow()
    session.execute(  # workers that died long ago
        delete(WorkerRecord).where(WorkerRecord.heartbeat_at < now - timedelta(hours=1))
    )
    row = session.get(WorkerRecord, instance)
    if row is None:
        session.add(WorkerRecord(instance=instance, started_at=now, heartbeat_at=now, stats=stats))
    else:
        row.heartbeat_at, row.stats = now, stats


def forget_worker(session: Session, instance: str) -> None:
    """The worker stopped cleanly."""
    session.execute(delete(WorkerRecord).where(WorkerRecord.instance == instance))


def live_workers(session: Session) -> list[WorkerRecord]:
    """The workers that said they run within WORKER_STALE_SECONDS."""
    cutoff = utcnow() - timedelta(seconds=WORKER_STALE_SECONDS)
    rows = list(session.scalars(select(WorkerRecord).order_by(WorkerRecord.instance)))
    return [row for row in rows if row.heartbeat_at >= cutoff]
