"""Running backup schedules, once across every instance sharing the database: an instance claims
a schedule's latest due slot by moving the schedule's last_slot forward (one update wins) and
records a pending run per guest; a run starts once its jitter has passed and its host has fewer
backups running than the schedule allows, by the instance holding that host's lease. A run left
`starting` by an instance that died while starting it is taken over once its claim is stale."""

import logging
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import transaction
from app.errors import HostUnreachable, VirtdeckError
from app.models import Backup, BackupSchedule, ScheduleRun
from app.models.base import utcnow
from app.services import leases
from app.services.auth import Principal
from app.services.backups.backup_job import start_backup
from app.services.backups.schedules import guests_in, jitter, latest_slot, scope_of
from app.services.guest_actions import LOCK_STALE
from app.services.ports import HostCalls, JobQueue

log = logging.getLogger(__name__)
# How long a due run waits for its host to answer before it is recorded as failed.
UNREACHABLE_PATIENCE = 600.0
# A run still `starting` this long after it was taken lost its instance between taking it and
# recording the backup it began (that takes seconds: one host call of at most call_timeout); by
# then the guest lock that instance may have left behind is stale too.
STARTING_LEASE = LOCK_STALE + timedelta(minutes=1)


def run_schedules(
    sessions: sessionmaker[Session],
    sync: HostCalls,
    jobs: JobQueue,
    settings: Settings,
    *,
    instance: str,
    now: datetime | None = None,
) -> int:
    """Claim the slots that have come, start the runs that are due; how many started."""
    now = now or utcnow()
    claim_slots(sessions, instance=instance, now=now)
    take_over_stale(sessions, instance=instance, now=now)
    return _start_due(sessions, sync, jobs, settings, instance=instance, now=now)


def claim_slots(sessions: sessionmaker[Session], *, instance: str, now: datetime) -> int:
    """Claim each enabled schedule's latest slot not yet claimed, with a pending run for every
    guest it covers; how many slots this instance won."""
    with sessions() as session:
        due = [
            (schedule.id, slot)
            for schedule in session.scalars(select(BackupSchedule).where(BackupSchedule.enabled))
            if (slot := latest_slot(schedule, now)) is not None
            and (schedule.last_slot is None or schedule.last_slot < slot)
        ]
    won = 0
    for schedule_id, slot in due:
        with transaction(sessions) as session:
            claimed = session.execute(
                update(BackupSchedule)
                .where(
                    BackupSchedule.id == schedule_id,
                    BackupSchedule.enabled,
                    or_(BackupSchedule.last_slot.is_(None), BackupSchedule.last_slot < slot),
                )
                .values(last_slot=slot, updated_at=BackupSchedule.updated_at)
                .execution_options(synchronize_session=False)
            ).rowcount
            if not claimed:
                continue
            won += 1
            schedule = session.get(BackupSchedule, schedule_id)
            for guest in guests_in(session, scope_of(schedule)):
                session.add(
                    ScheduleRun(
                        schedule_id=schedule_id,
                        slot=slot,
                        due_at=slot + jitter(schedule, guest.uuid),
                        guest_uuid=guest.uuid,
                        guest_name=guest.name,
                        host_id=guest.host_id,
                        status="pending",
                        claimed_by=instance,
                    )
                )
    return won


def _by(schedule_name: str) -> Principal:
    """Who a schedule's backups are started by."""
    return Principal(
        user_id=None, username=f"schedule {schedule_name}"[:64], role=None, auth="schedule"
    )


def take_over_stale(sessions: sessionmaker[Session], *, instance: str, now: datetime) -> int:
    """Take over the runs left `starting` for STARTING_LEASE (their instance died starting
    them): one that got as far as its backup is recorded as started with it, the others wait
    to start again; one instance wins each (the update checks the claim it saw). How many."""
    with sessions() as session:
        stale = session.execute(
            select(
                ScheduleRun.id, ScheduleRun.started_at, ScheduleRun.guest_uuid, BackupSchedule.name
            )
            .join(BackupSchedule, BackupSchedule.id == ScheduleRun.schedule_id)
            .where(ScheduleRun.status == "starting", ScheduleRun.started_at < now - STARTING_LEASE)
        ).all()
    taken = 0
    for run_id, taken_at, guest_uuid, name in stale:
        with transaction(sessions) as session:
            begun = session.scalar(
                select(Backup.id)
                .where(
                    Backup.guest_uuid == guest_uuid,
                    Backup.started_by == _by(name).username,
                    Backup.started_at >= taken_at,
                )
                .order_by(Backup.started_at, Backup.id)
                .limit(1)
            )
            won = session.execute(
                update(ScheduleRun)
                .where(
                    ScheduleRun.id == run_id,
                    ScheduleRun.status == "starting",
                    ScheduleRun.started_at == taken_at,
                )
                .values(
                    status="pending" if begun is None else "started",
                    backup_id=begun,
                    claimed_by=instance,
                )
                .execution_options(synchronize_session=False)
            ).rowcount
        if won:
            taken += 1
            log.warning(
                "scheduled run %s of %s was left starting: %s",
                run_id,
                guest_uuid,
                "its backup had begun" if begun else "it starts again",
            )
    return taken


def _start_due(
    sessions: sessionmaker[Session],
    sync: HostCalls,
    jobs: JobQueue,
    settings: Settings,
    *,
    instance: str,
    now: datetime,
) -> int:
    """Start the due runs of the hosts this instance leads (or nobody does) that have room."""
    with sessions() as session:
        runs = session.execute(
            select(
                ScheduleRun.id,
                ScheduleRun.host_id,
                ScheduleRun.guest_uuid,
                ScheduleRun.due_at,
                BackupSchedule.name,
                BackupSchedule.max_parallel,
            )
            .join(BackupSchedule, BackupSchedule.id == ScheduleRun.schedule_id)
            .where(ScheduleRun.status == "pending", ScheduleRun.due_at <= now)
            .order_by(ScheduleRun.due_at, ScheduleRun.id)
        ).all()
        if not runs:
            return 0
        owners = leases.owners(session)
        running = dict(
            session.execute(
                select(Backup.host_id, func.count())
                .where(Backup.status == "running")
                .group_by(Backup.host_id)
            ).all()
        )
    started = 0
    for run_id, host_id, guest_uuid, due_at, name, max_parallel in runs:
        # Over the limit the run waits for a later tick rather than failing.
        if owners.get(host_id) not in (instance, None) or running.get(host_id, 0) >= max_parallel:
            continue
        taken_at = _take(sessions, run_id)
        if taken_at is None:
            continue
        running[host_id] = running.get(host_id, 0) + 1
        settle = partial(_settle, sessions, run_id, taken_at)
        try:
            backup = start_backup(
                sessions, sync, jobs, settings, uuid=guest_uuid, principal=_by(name)
            )
        except HostUnreachable as exc:
            running[host_id] -= 1
            # A host still connecting (as after a restart) gets a while before the run fails.
            waited = now - due_at < timedelta(seconds=UNREACHABLE_PATIENCE)
            settle(status="pending" if waited else "failed", error=exc.message)
        except VirtdeckError as exc:
            running[host_id] -= 1  # refused before it began: it takes no room
            settle(status="failed", error=exc.message)
        except Exception as exc:
            running[host_id] -= 1
            log.exception("scheduled backup of %s could not start", guest_uuid)
            settle(status="failed", error=f"internal error: {type(exc).__name__}")
        else:
            settle(status="started", backup_id=backup.backup.id)
            started += 1
    return started


def _take(sessions: sessionmaker[Session], run_id: int) -> datetime | None:
    """Move the run from pending to starting: when (its claim), or None if another instance
    took it first."""
    taken_at = utcnow()
    with transaction(sessions) as session:
        taken = session.execute(
            update(ScheduleRun)
            .where(ScheduleRun.id == run_id, ScheduleRun.status == "pending")
            .values(status="starting", started_at=taken_at)
            .execution_options(synchronize_session=False)
        ).rowcount
    return taken_at if taken else None


def _settle(
    sessions: sessionmaker[Session],
    run_id: int,
    taken_at: datetime,
    *,
    status: str,
    backup_id: int | None = None,
    error: str | None = None,
) -> None:
    """Record how starting the run went, unless another instance took it over meanwhile (or its
    schedule was removed)."""
    with transaction(sessions) as session:
        session.execute(
            update(ScheduleRun)
            .where(
                ScheduleRun.id == run_id,
                ScheduleRun.status == "starting",
                ScheduleRun.started_at == taken_at,
            )
            .values(status=status, backup_id=backup_id, error=error)
            .execution_options(synchronize_session=False)
        )
