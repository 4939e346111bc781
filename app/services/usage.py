"""What each running guest uses, from two readings of its counters (app.virt.usage): stored on
its row for the lists, and as samples for the charts: one a reading, kept a day, and one an hour
(the average of its readings), kept 30 days; the same for its host's guests together (the host
page's chart). A guest not running, or on a host not connected, has no current figures."""

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from app.errors import Invalid
from app.models import Guest, HostUsageSample, UsageSample
from app.models.base import utcnow
from app.services.guests import get_guest
from app.services.hosts import clear_figures, get_host
from app.virt.usage import Counters

READINGS_KEPT = timedelta(hours=24)
HOURS_KEPT = timedelta(days=30)
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Usage:
    """A guest's use over the interval between two readings."""

    cpu_percent: float
    memory_used_kib: int | None
    memory_source: str | None
    disk_bps: int
    net_bps: int


def usage_between(before: Counters, after: Counters) -> Usage | None:
    """The use between two readings of one guest; None if they are no interval apart or a
    counter went back (the guest restarted in between)."""
    seconds = after.at - before.at
    moved = [after.cpu_ns - before.cpu_ns, after.disk_read - before.disk_read,
             after.disk_write - before.disk_write, after.net_rx - before.net_rx,
             after.net_tx - before.net_tx]  # fmt: skip
    if seconds <= 0 or min(moved) < 0:
        return None
    cpu, read, write, rx, tx = moved
    return Usage(
        cpu_percent=round(min(100.0, 100 * cpu / (seconds * 1e9 * after.vcpus)), 1),
        memory_used_kib=after.memory_kib,
        memory_source=after.memory_source,
        disk_bps=round((read + write) / seconds),
        net_bps=round((rx + tx) / seconds),
    )


def record_usage(
    session: Session,
    host_id: int,
    before: dict[str, Counters],
    after: dict[str, Counters],
    *,
    now: datetime,
    roll_up: bool,
) -> int:
    """Store what the host's running guests used between two readings (by UUID) on their rows
    and as samples, and their sum as the host's sample; clear the figures of its guests no
    longer running; with roll_up (the first reading of an hour), average the readings of the
    hour that ended into hourly samples and drop the expired ones. How many guests had
    figures."""
    guests = dict(
        session.execute(
            select(Guest.uuid, Guest.id).where(Guest.host_id == host_id, Guest.gone_at.is_(None))
        ).all()
    )
    figures = {
        guests[uuid]: (usage, counters.vcpus)
        for uuid, counters in after.items()
        if uuid in guests and uuid in before
        if (usage := usage_between(before[uuid], counters)) is not None
    }
    clear_figures(session, host_id, Guest.id.not_in(figures))
    if figures:  # one executemany by primary key
        session.execute(
            update(Guest),
            [{"id": gid, **vars(usage), "usage_at": now} for gid, (usage, _) in figures.items()],
        )
        session.add(_host_sample(host_id, figures.values(), now=now))
    session.add_all(
        UsageSample(guest_id=guest_id, hourly=False, at=now, cpu_percent=usage.cpu_percent,
                    memory_used_kib=usage.memory_used_kib, disk_bps=usage.disk_bps,
                    net_bps=usage.net_bps)
        for guest_id, (usage, _) in figures.items()
    )  # fmt: skip
    if roll_up:
        _roll_up(session, host_id, list(guests.values()), now=now)
    return len(figures)


def _host_sample(
    host_id: int, figures: Collection[tuple[Usage, int]], *, now: datetime
) -> HostUsageSample:
    """The sum of the guests' (usage, vCPUs) of one reading, as the host's sample."""
    memory = [usage.memory_used_kib for usage, _ in figures if usage.memory_used_kib is not None]
    return HostUsageSample(
        host_id=host_id, hourly=False, at=now,
        cpus_used=round(sum(usage.cpu_percent * vcpus / 100 for usage, vcpus in figures), 3),
        memory_used_kib=sum(memory) if memory else None,
        disk_bps=sum(usage.disk_bps for usage, _ in figures),
        net_bps=sum(usage.net_bps for usage, _ in figures),
        guests=len(figures),
    )  # fmt: skip


def hour_of(at: datetime) -> datetime:
    """The start of the hour at lies in."""
    return at.replace(minute=0, second=0, microsecond=0)


def _roll_up(session: Session, host_id: int, guest_ids: list[int], *, now: datetime) -> None:
    """Average each guest's readings of the hour that just ended, and the host's, into one
    hourly sample each (in the database: one grouped query of that hour's readings), unless
    there is one already (the host's lease moved to another instance meanwhile); drop every
    reading older than a day and hourly sample older than 30 days (gone guests' too)."""
    hour = hour_of(now) - HOUR
    in_hour = (UsageSample.hourly.is_(False), UsageSample.at >= hour, UsageSample.at < hour + HOUR)
    done = set(
        session.scalars(
            select(UsageSample.guest_id).where(
                UsageSample.guest_id.in_(guest_ids), UsageSample.hourly, UsageSample.at == hour
            )
        )
    )
    averages = session.execute(
        select(
            UsageSample.guest_id,
            func.avg(UsageSample.cpu_percent),
            func.avg(UsageSample.memory_used_kib),
            func.avg(UsageSample.disk_bps),
            func.avg(UsageSample.net_bps),
        )
        .where(UsageSample.guest_id.in_(guest_ids), *in_hour)
        .group_by(UsageSample.guest_id)
    ).all()
    # (PostgreSQL averages integers as numeric: Decimal.)
    session.add_all(
        UsageSample(guest_id=guest_id, hourly=True, at=hour, cpu_percent=round(float(cpu), 1),
                    memory_used_kib=_rounded(memory), disk_bps=round(float(disk)),
                    net_bps=round(float(net)))
        for guest_id, cpu, memory, disk, net in averages
        if guest_id not in done
    )  # fmt: skip
    _roll_up_host(session, host_id, hour)
    for model in (UsageSample, HostUsageSample):
        for hourly, kept in ((False, READINGS_KEPT), (True, HOURS_KEPT)):
            session.execute(delete(model).where(model.hourly.is_(hourly), model.at < now - kept))


def _roll_up_host(session: Session, host_id: int, hour: datetime) -> None:
    """The host's hourly sample: the average of its readings in the hour (unless it has one)."""
    of_host = (HostUsageSample.host_id == host_id, HostUsageSample.at >= hour)
    done = select(HostUsageSample.id).where(
        *of_host, HostUsageSample.hourly, HostUsageSample.at == hour
    )
    if session.scalar(done) is not None:
        return
    count, cpus, memory, disk, net, guests = session.execute(
        select(
            func.count(),
            func.avg(HostUsageSample.cpus_used),
            func.avg(HostUsageSample.memory_used_kib),
            func.avg(HostUsageSample.disk_bps),
            func.avg(HostUsageSample.net_bps),
            func.max(HostUsageSample.guests),
        ).where(*of_host, HostUsageSample.hourly.is_(False), HostUsageSample.at < hour + HOUR)
    ).one()
    if count:
        session.add(
            HostUsageSample(host_id=host_id, hourly=True, at=hour,
                            cpus_used=round(float(cpus), 3), memory_used_kib=_rounded(memory),
                            disk_bps=round(float(disk)), net_bps=round(float(net)), guests=guests)
        )  # fmt: skip


def _rounded(value) -> int | None:
    """An average of integers (a Decimal on PostgreSQL) as an integer; None stays None."""
    return None if value is None else round(float(value))


# The span of a list's sparklines: the last hour of readings.
SPARK_SPAN = timedelta(hours=1)
# The charts' spans: the last day of readings, the last 30 days of hourly samples.
PERIODS = {"day": (False, READINGS_KEPT), "month": (True, HOURS_KEPT)}


def _period(period: str) -> tuple[bool, timedelta]:
    """Whether the period's samples are hourly, and its span; 422 naming `period` for another."""
    if period not in PERIODS:
        raise Invalid(f"period: must be one of {', '.join(PERIODS)}", field="period")
    return PERIODS[period]


def history(session: Session, uuid: str, *, period: str, now: datetime) -> list[UsageSample]:
    """A guest's samples over the period ("day": each reading; "month": each hour), oldest
    first; 404 for an unknown guest, 422 for another period."""
    hourly, span = _period(period)
    guest = get_guest(session, uuid)
    return list(
        session.scalars(
            select(UsageSample)
            .where(
                UsageSample.guest_id == guest.id,
                UsageSample.hourly.is_(hourly),
                UsageSample.at >= now - span,
            )
            .order_by(UsageSample.at)
        )
    )


@dataclass(frozen=True)
class HostSample:
    """What a host's running guests used together at one reading (or on average over an hour):
    their CPU time as a share of the host's online CPUs, their memory in use as a share of its
    memory (None where unknown)."""

    at: datetime
    cpu_percent: float | None
    memory_percent: float | None


def host_history(session: Session, host_id: int, *, period: str, now: datetime) -> list[HostSample]:
    """The host's guests' use over the period (its own samples: the sum of its guests' at each
    reading), oldest first; 404 for an unknown host, 422 for another period."""
    hourly, span = _period(period)
    host = get_host(session, host_id)
    rows = session.execute(
        select(HostUsageSample.at, HostUsageSample.cpus_used, HostUsageSample.memory_used_kib)
        .where(
            HostUsageSample.host_id == host_id,
            HostUsageSample.hourly.is_(hourly),
            HostUsageSample.at >= now - span,
        )
        .order_by(HostUsageSample.at)
    ).all()
    return [
        HostSample(
            at=at,
            cpu_percent=min(100.0, 100 * cpus / host.cpus_online) if host.cpus_online else None,
            memory_percent=(
                min(100.0, 100 * memory / host.memory_kib)
                if host.memory_kib and memory is not None
                else None
            ),
        )
        for at, cpus, memory in rows
    ]


def interval(period: str, usage_interval: float) -> timedelta:
    """The time between two of a period's samples: a reading every usage_interval seconds
    (settings), or an hour."""
    return HOUR if PERIODS[period][0] else timedelta(seconds=usage_interval)


# Samples further apart than this many intervals have a gap between them (nothing was read):
# more than 2, as a reading waits for the worker's next pass and may come a pass late.
GAP_INTERVALS = 2.5


def gap(period: str, usage_interval: float) -> timedelta:
    """How far apart two of a period's samples are when nothing was read between them (the
    guest was off, its host or virtdeck down): where a chart's line breaks."""
    return GAP_INTERVALS * interval(period, usage_interval)


def recent_cpu(
    session: Session, guest_ids: list[int], *, now: datetime
) -> dict[int, list[tuple[datetime, float]]]:
    """Each guest's CPU readings over the last SPARK_SPAN, oldest first, by guest id (one query
    for a page of a list)."""
    found: dict[int, list[tuple[datetime, float]]] = {}
    if not guest_ids:
        return found
    rows = session.execute(
        select(UsageSample.guest_id, UsageSample.at, UsageSample.cpu_percent)
        .where(
            UsageSample.guest_id.in_(guest_ids),
            UsageSample.hourly.is_(False),
            UsageSample.at >= now - SPARK_SPAN,
        )
        .order_by(UsageSample.at)
    )
    for guest_id, at, cpu in rows:
        found.setdefault(guest_id, []).append((at, cpu))
    return found


@dataclass(frozen=True)
class Sparks:
    """The CPU readings a page of a list draws as sparklines, and the span they end at now."""

    points: dict[int, list[tuple[datetime, float]]]
    now: datetime
    gap: timedelta  # a line breaks between readings further apart (see gap())
    span: timedelta = SPARK_SPAN


def sparks(session: Session, guest_ids: list[int], *, usage_interval: float) -> Sparks:
    """A list page's sparklines: its guests' CPU readings over the last SPARK_SPAN (read every
    usage_interval seconds)."""
    now = utcnow()
    return Sparks(recent_cpu(session, guest_ids, now=now), now, gap("day", usage_interval))
