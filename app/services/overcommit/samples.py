"""The host readings the worker stores, and the minute-by-minute samples of its running ratios."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.models import Host, OvercommitSample
from app.models.base import utcnow
from app.services.hosts import GuestSums, get_host, guest_sums
from app.services.overcommit.ksm import ksm_state
from app.services.overcommit.ratios import share
from app.virt.overcommit import HostStats

SAMPLE_EVERY = timedelta(minutes=1)
SAMPLES_KEPT = timedelta(hours=25)


@dataclass(frozen=True)
class Sample:
    """A host's running allocation ratios at one moment."""

    at: datetime
    cpu_ratio: float | None
    memory_ratio: float | None


def record_stats(session: Session, host_id: int, stats: HostStats) -> None:
    """Store a host's latest readings, and a sample of its ratios at most once a minute."""
    host = session.get(Host, host_id)
    if host is None:
        return
    now = utcnow()
    previous = (host.stats or {}).get("ksm")
    host.stats = {
        "memory": None if stats.memory is None else dict(vars(stats.memory)),
        "ksm": None if stats.ksm is None else ksm_state(stats.ksm, previous, now),
        "guests": {uuid: dict(vars(g)) for uuid, g in stats.guests.items()},
        "balloons": dict(stats.balloons),
    }
    host.stats_at = now
    record_sample(session, host, now)


def record_sample(session: Session, host: Host, now: datetime) -> None:
    """Add a sample of the host's running ratios unless one is younger than a minute."""
    last = session.scalar(
        select(OvercommitSample.at)
        .where(OvercommitSample.host_id == host.id)
        .order_by(OvercommitSample.at.desc())
        .limit(1)
    )
    if last is not None and now - last < SAMPLE_EVERY:
        return
    # The running ratios from sums an index answers: the whole picture (build_one) builds a
    # row for each guest, a fifth of the worker's CPU while it first read 5,000 guests.
    sums = guest_sums(session, [host.id]).get(host.id, GuestSums())
    session.add(
        OvercommitSample(
            host_id=host.id,
            at=now,
            cpu_ratio=share(sums.vcpus_active, host.cpus_online),
            memory_ratio=share(sums.memory_active_kib, host.memory_kib),
        )
    )
    session.execute(
        delete(OvercommitSample).where(
            OvercommitSample.host_id == host.id, OvercommitSample.at < now - SAMPLES_KEPT
        )
    )


def samples(session: Session, host_id: int, *, hours: float = 24) -> list[Sample]:
    """The host's samples of the last hours, oldest first."""
    get_host(session, host_id)
    since = utcnow() - timedelta(hours=hours)
    rows = session.execute(
        select(OvercommitSample.at, OvercommitSample.cpu_ratio, OvercommitSample.memory_ratio)
        .where(OvercommitSample.host_id == host_id, OvercommitSample.at >= since)
        .order_by(OvercommitSample.at)
    )
    return [Sample(*row) for row in rows]
