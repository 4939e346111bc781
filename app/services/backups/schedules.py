"""Backup schedules: checking, saving and removing them, when their slots fall, which guests
they cover, each guest's next scheduled run, and the preview of what their retention policy
would remove."""

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime, time, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.errors import Conflict, Invalid, NotFound
from app.models import BackupSchedule, Guest, Host, ScheduleRun
from app.models.backup_schedule import FREQUENCIES, SCOPES
from app.models.base import utcnow
from app.services.backups.retention import KEEPS, Policy, Verdict, guest_backups, prune

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")
_TIME = re.compile(r"([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?")
MAX_JITTER_MINUTES = 720
MAX_PARALLEL = 32
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# A change to these moves the slots: those before the change do not run.
_TIMING = ("enabled", "frequency", "weekday", "at_seconds")


@dataclass(frozen=True)
class ScheduleIn:
    """A schedule as asked for (API body or form), before it is checked."""

    name: str
    scope: str
    frequency: str
    time: str
    guest_uuid: str | None = None
    host_id: int | None = None
    weekday: int | None = None
    jitter_minutes: int = 0
    max_parallel: int = 1
    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    enabled: bool = True


@dataclass(frozen=True)
class Scope:
    """Which guests a schedule covers."""

    scope: str
    guest_uuid: str | None = None
    host_id: int | None = None


def parse_time(raw: str) -> int:
    """HH:MM or HH:MM:SS (UTC) as seconds into the day; 422 on `time` otherwise."""
    match = _TIME.fullmatch(raw.strip())
    if match is None:
        raise Invalid("time: HH:MM or HH:MM:SS, UTC (00:00 to 23:59:59)", field="time")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def format_time(at_seconds: int) -> str:
    """Seconds into the day as HH:MM, or HH:MM:SS when it has seconds."""
    shown = time(at_seconds // 3600, at_seconds // 60 % 60, at_seconds % 60)
    return shown.strftime("%H:%M:%S" if at_seconds % 60 else "%H:%M")


def check_scope(session: Session, scope: Scope) -> Scope:
    """The scope with only the id it needs; 422 naming the field that is missing or unknown."""
    if scope.scope not in SCOPES:
        raise Invalid(f"scope: one of {', '.join(SCOPES)}", field="scope")
    if scope.scope == "guest":
        uuid = (scope.guest_uuid or "").strip().lower()
        if not session.scalar(select(Guest.id).where(Guest.uuid == uuid, Guest.gone_at.is_(None))):
            raise Invalid("guest_uuid: no guest with this UUID", field="guest_uuid")
        return Scope("guest", guest_uuid=uuid)
    if scope.scope == "host":
        if scope.host_id is None or session.get(Host, scope.host_id) is None:
            raise Invalid("host_id: no such host", field="host_id")
        return Scope("host", host_id=scope.host_id)
    return Scope("all")


def _checked(session: Session, asked: ScheduleIn) -> dict[str, object]:
    """The schedule's columns from what was asked; 422 naming the first field at fault."""
    name = asked.name.strip()
    if not _NAME.fullmatch(name):
        raise Invalid(
            "name: 1 to 64 letters, digits, spaces, '.', '_' or '-', starting with a letter "
            "or digit",
            field="name",
        )
    scope = check_scope(session, Scope(asked.scope, asked.guest_uuid, asked.host_id))
    if asked.frequency not in FREQUENCIES:
        raise Invalid(f"frequency: one of {', '.join(FREQUENCIES)}", field="frequency")
    weekly = asked.frequency == "weekly"
    if weekly and (asked.weekday is None or not 0 <= asked.weekday <= 6):
        raise Invalid("weekday: 0 (Monday) to 6 (Sunday) for a weekly schedule", field="weekday")
    at_seconds = parse_time(asked.time)
    if not 0 <= asked.jitter_minutes <= MAX_JITTER_MINUTES:
        raise Invalid(f"jitter_minutes: 0 to {MAX_JITTER_MINUTES}", field="jitter_minutes")
    if not 1 <= asked.max_parallel <= MAX_PARALLEL:
        raise Invalid(f"max_parallel: 1 to {MAX_PARALLEL}", field="max_parallel")
    policy = Policy.checked(**{name: getattr(asked, name) for name in KEEPS})
    return {
        "name": name,
        "enabled": asked.enabled,
        "scope": scope.scope,
        "guest_uuid": scope.guest_uuid,
        "host_id": scope.host_id,
        "frequency": asked.frequency,
        "weekday": asked.weekday if weekly else None,
        "at_seconds": at_seconds,
        "jitter_minutes": asked.jitter_minutes,
        "max_parallel": asked.max_parallel,
        **{f.name: getattr(policy, f.name) for f in fields(Policy)},
    }


def _name_free(session: Session, name: str, schedule_id: int | None = None) -> None:
    taken = session.scalar(select(BackupSchedule.id).where(BackupSchedule.name == name))
    if taken is not None and taken != schedule_id:
        raise Conflict(f"name: a schedule named {name} exists", field="name")


def create_schedule(
    session: Session, asked: ScheduleIn, *, created_by: str | None
) -> BackupSchedule:
    """Check and save a new schedule; its first slot is the next one to come."""
    values = _checked(session, asked)
    _name_free(session, str(values["name"]))
    schedule = BackupSchedule(**values, created_by=created_by, not_before=utcnow())
    session.add(schedule)
    session.flush()
    return schedule


def update_schedule(session: Session, schedule_id: int, asked: ScheduleIn) -> BackupSchedule:
    """Check and save a schedule's new values; a change of timing skips the slots before it."""
    schedule = get_schedule(session, schedule_id)
    values = _checked(session, asked)
    _name_free(session, str(values["name"]), schedule_id)
    if any(values[name] != getattr(schedule, name) for name in _TIMING):
        schedule.not_before = utcnow()
    for name, value in values.items():
        setattr(schedule, name, value)
    session.flush()
    return schedule


def get_schedule(session: Session, schedule_id: int) -> BackupSchedule:
    """The schedule, or NotFound."""
    schedule = session.get(BackupSchedule, schedule_id)
    if schedule is None:
        raise NotFound(f"backup schedule {schedule_id} not found")
    return schedule


def list_schedules(session: Session) -> list[BackupSchedule]:
    """Every schedule, by name."""
    return list(session.scalars(select(BackupSchedule).order_by(BackupSchedule.name)))


def delete_schedule(session: Session, schedule_id: int) -> BackupSchedule:
    """Remove the schedule and its runs' records (backups it made stay)."""
    schedule = get_schedule(session, schedule_id)
    session.delete(schedule)
    return schedule


def recent_runs(session: Session, schedule_id: int, limit: int = 20) -> list[ScheduleRun]:
    """The schedule's latest runs, newest slot first."""
    return list(
        session.scalars(
            select(ScheduleRun)
            .where(ScheduleRun.schedule_id == schedule_id)
            .order_by(ScheduleRun.slot.desc(), ScheduleRun.guest_name)
            .limit(limit)
        )
    )


def latest_slot(schedule: BackupSchedule, now: datetime) -> datetime | None:
    """The schedule's latest slot at or before now, if it is not before the schedule's timing
    was set (a missed slot runs once; older missed ones never)."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    slot = today + timedelta(seconds=schedule.at_seconds)
    if slot > now:
        slot -= timedelta(days=1)
    if schedule.frequency == "weekly":
        slot -= timedelta(days=(slot.weekday() - (schedule.weekday or 0)) % 7)
    return slot if slot >= schedule.not_before else None


def next_slot(schedule: BackupSchedule, now: datetime) -> datetime:
    """The schedule's first slot after now."""
    period = timedelta(days=7 if schedule.frequency == "weekly" else 1)
    slot = latest_slot(schedule, now + period)
    return slot if slot is not None and slot > now else now + period


def jitter(schedule: BackupSchedule, guest_uuid: str) -> timedelta:
    """The guest's fixed offset into the schedule's jitter window (the same at every slot, so
    its backups stay a period apart, and spread over the window across guests)."""
    window = schedule.jitter_minutes * 60
    digest = hashlib.sha256(f"{schedule.id}:{guest_uuid}".encode()).digest()
    return timedelta(seconds=int.from_bytes(digest[:8], "big") % (window + 1))


@dataclass(frozen=True)
class NextRun:
    """When a guest's next scheduled backup is due (UTC, its jitter included), and by which
    schedule."""

    at: datetime
    schedule: str


def _next_due(schedule: BackupSchedule, guest_uuid: str, now: datetime) -> datetime:
    """When the schedule next backs the guest up: its latest slot plus the guest's jitter if
    that is still to come or the slot is not claimed yet (a missed one runs at once), else the
    next slot plus the jitter."""
    offset = jitter(schedule, guest_uuid)
    latest = latest_slot(schedule, now)
    if latest is not None and (
        latest + offset > now or schedule.last_slot is None or schedule.last_slot < latest
    ):
        return latest + offset
    return next_slot(schedule, now) + offset


def next_runs(
    session: Session, guests: Sequence[tuple[str, int]], now: datetime | None = None
) -> dict[str, NextRun]:
    """For each guest (uuid, host id) an enabled schedule covers (as guest, its host or all), or
    that has a run waiting: its next scheduled run, the soonest of them. Two queries whatever
    the number of guests; guests with none are left out."""
    if not guests:
        return {}
    now = now or utcnow()
    uuids = {uuid for uuid, _ in guests}
    found: dict[str, NextRun] = {}

    def offer(uuid: str, at: datetime, name: str) -> None:
        if uuid not in found or at < found[uuid].at:
            found[uuid] = NextRun(at, name)

    # Runs claimed and not yet started (waiting for their jitter, a free slot or their host).
    waiting = session.execute(
        select(ScheduleRun.guest_uuid, func.min(ScheduleRun.due_at), BackupSchedule.name)
        .join(BackupSchedule, BackupSchedule.id == ScheduleRun.schedule_id)
        .where(ScheduleRun.status == "pending", ScheduleRun.guest_uuid.in_(uuids))
        .group_by(ScheduleRun.guest_uuid, BackupSchedule.name)
    )
    for uuid, due_at, name in waiting:
        offer(uuid, due_at, name)
    for schedule in session.scalars(select(BackupSchedule).where(BackupSchedule.enabled)):
        for uuid, host_id in guests:
            if (
                schedule.scope == "all"
                or (schedule.scope == "guest" and schedule.guest_uuid == uuid)
                or (schedule.scope == "host" and schedule.host_id == host_id)
            ):
                offer(uuid, _next_due(schedule, uuid, now), schedule.name)
    return found


def guests_in(session: Session, scope: Scope) -> list[Guest]:
    """The present guests the scope covers, by name."""
    query = select(Guest).where(Guest.gone_at.is_(None)).order_by(Guest.name, Guest.uuid)
    if scope.scope == "guest":
        query = query.where(Guest.uuid == scope.guest_uuid)
    elif scope.scope == "host":
        query = query.where(Guest.host_id == scope.host_id)
    return list(session.scalars(query))


def scope_of(schedule: BackupSchedule) -> Scope:
    """The guests a saved schedule covers."""
    return Scope(schedule.scope, guest_uuid=schedule.guest_uuid, host_id=schedule.host_id)


def preview(session: Session, scope: Scope, policy: Policy) -> list[tuple[Guest, list[Verdict]]]:
    """For each guest the scope covers: the policy's verdict on each of its backups."""
    guests = guests_in(session, check_scope(session, scope))
    backups = guest_backups(session, [g.uuid for g in guests])
    return [(guest, prune(backups[guest.uuid], policy)) for guest in guests]
