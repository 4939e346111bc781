"""The backups overview: each present guest with its last successful backup, how its newest
finished backup ended and its next scheduled run, a page at a time from a few queries (never one
per guest); and the backup figures per guest for /metrics."""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, Subquery, case, func, select, type_coerce
from sqlalchemy.orm import Session

from app.models import Backup, Guest, Host
from app.models.base import UTCDateTime
from app.services.backups.schedules import next_runs
from app.services.paging import check_page

# The overview's filters: guests without a successful backup, guests whose newest finished
# backup failed (or was found corrupt since).
NO_BACKUP = "none"
LAST_FAILED = "failed"
SHOWS = (NO_BACKUP, LAST_FAILED)
FAILED = ("failed", "corrupt")


@dataclass(frozen=True)
class GuestBackups:
    """One guest's line of the overview."""

    uuid: str
    name: str
    host_name: str
    last_success_id: int | None
    last_success_at: datetime | None  # when it finished
    last_id: int | None  # the newest finished backup, whatever its status
    last_status: str | None
    last_error: str | None
    next_run_at: datetime | None  # its next scheduled backup (UTC), None if none covers it
    next_run_schedule: str | None  # the schedule of that run

    @property
    def last_failed(self) -> bool:
        """Whether the newest finished backup failed or was found corrupt."""
        return self.last_status in FAILED


@dataclass(frozen=True)
class Totals:
    """How many present guests there are, have no successful backup, and whose last failed."""

    guests: int
    no_backup: int
    last_failed: int


def _newest(*statuses: str) -> Subquery:
    """Each guest's newest backup with one of these statuses (or any finished one)."""
    rank = func.row_number().over(
        partition_by=Backup.guest_uuid, order_by=(Backup.started_at.desc(), Backup.id.desc())
    )
    query = select(
        Backup.id, Backup.guest_uuid, Backup.status, Backup.error, Backup.finished_at,
        rank.label("rank"),
    )  # fmt: skip
    query = query.where(Backup.status.in_(statuses) if statuses else Backup.status != "running")
    ranked = query.subquery()
    return select(ranked).where(ranked.c.rank == 1).subquery()


def _lines() -> tuple[Select, Subquery, Subquery]:
    """Present guests joined with their last success and their newest finished backup."""
    ok, last = _newest("succeeded"), _newest()
    query = (
        select(
            Guest.uuid,
            Guest.name,
            Host.name.label("host_name"),
            ok.c.id,
            ok.c.finished_at,
            last.c.id,
            last.c.status,
            last.c.error,
            Guest.host_id,
        )
        .join(Host, Guest.host_id == Host.id)
        .outerjoin(ok, ok.c.guest_uuid == Guest.uuid)
        .outerjoin(last, last.c.guest_uuid == Guest.uuid)
        .where(Guest.gone_at.is_(None))
    )
    return query, ok, last


def _flags(ok: Subquery, last: Subquery) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """The conditions of the two filters, on the query's joined backups."""
    return ok.c.id.is_(None), last.c.status.in_(FAILED)


def totals(session: Session) -> Totals:
    """How many present guests there are, have no successful backup, and whose last failed."""
    query, ok, last = _lines()
    no_backup, failed = _flags(ok, last)
    guests, none, bad = session.execute(
        query.with_only_columns(
            func.count(),
            func.coalesce(func.sum(case((no_backup, 1), else_=0)), 0),
            func.coalesce(func.sum(case((failed, 1), else_=0)), 0),
        )
    ).one()
    return Totals(guests=guests, no_backup=none, last_failed=bad)


def overview(
    session: Session, *, show: str | None = None, limit: int = 100, offset: int = 0
) -> tuple[list[GuestBackups], int, Totals]:
    """A page of guests by name (show: only those with no backup, or whose last failed), how
    many match, and the totals over every present guest."""
    check_page(limit=limit, offset=offset, max_limit=500)
    query, ok, last = _lines()
    no_backup, failed = _flags(ok, last)
    counted = totals(session)
    total = counted.guests
    if show == NO_BACKUP:
        query, total = query.where(no_backup), counted.no_backup
    elif show == LAST_FAILED:
        query, total = query.where(failed), counted.last_failed
    rows = session.execute(
        query.order_by(Guest.name, Host.name, Guest.uuid).offset(offset).limit(limit)
    ).all()
    upcoming = next_runs(session, [(row.uuid, row.host_id) for row in rows])
    lines = []
    for *columns, _host_id in rows:
        soonest = upcoming.get(columns[0])
        at, schedule = (soonest.at, soonest.schedule) if soonest else (None, None)
        lines.append(GuestBackups(*columns, next_run_at=at, next_run_schedule=schedule))
    return lines, total, counted


@dataclass(frozen=True)
class GuestFigures:
    """A guest's backup figures for /metrics: every guest with a backup on record, gone or not."""

    uuid: str
    name: str
    last_success_at: datetime | None
    failed: int
    corrupt: int


def guest_figures(session: Session) -> list[GuestFigures]:
    """Per guest with backups: when its last successful backup finished, and how many of its
    backups on record failed or were found corrupt; one grouped query."""

    def count(status: str) -> ColumnElement[int]:
        return func.coalesce(func.sum(case((Backup.status == status, 1), else_=0)), 0)

    last_success = func.max(case((Backup.status == "succeeded", Backup.finished_at)))
    rows = session.execute(
        select(
            Backup.guest_uuid,
            func.max(Backup.guest_name),
            type_coerce(last_success, UTCDateTime),
            count("failed"),
            count("corrupt"),
        )
        .group_by(Backup.guest_uuid)
        .order_by(Backup.guest_uuid)
    )
    return [GuestFigures(*row) for row in rows]
