"""Usage from readings of a guest's counters: rates over the interval as a share of its vCPUs,
none across a restart; the figures on its row and a sample a reading; the readings of an hour
that ended averaged into one hourly sample; expired samples dropped; a stopped guest cleared;
the host's sample the sum of its guests'; no current figures once a guest stops or its host is
lost."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.db import transaction
from app.models import Guest, HostUsageSample, UsageSample
from app.services.hosts import record_unreachable
from app.services.inventory import apply_event
from app.services.usage import record_usage, usage_between
from tests.inventory import guests_from, new_host, sync
from tests.usage import counters

GIB = 1 << 30


def test_the_rate_is_cpu_time_over_the_interval_and_its_vcpus() -> None:
    used = usage_between(counters(10, 5.0, disk=0, net=0), counters(20, 15.0, disk=GIB, net=GIB))

    assert used is not None
    assert used.cpu_percent == 50.0  # 10 s of CPU in 10 s on 2 vCPUs
    assert (used.disk_bps, used.net_bps) == (round(2 * GIB / 10), round(GIB / 10))
    assert (used.memory_used_kib, used.memory_source) == (512 * 1024, "host")
    assert usage_between(counters(10, 50.0), counters(20, 1.0)) is None  # restarted between
    assert usage_between(counters(10, 1.0), counters(10, 2.0)) is None


def test_readings_land_on_the_row_and_as_samples_and_an_hour_rolls_up(sessions) -> None:
    host_id = new_host(sessions)
    guests = guests_from("node-alpha.xml")
    sync(sessions, host_id, guests)
    uuid = guests[0].spec.uuid
    start = datetime(2026, 11, 28, 10, 50, tzinfo=UTC)
    # 60 s of CPU in the first minute on 2 vCPUs (50 %), then 120 s in the next (100 %).
    readings = [(start + timedelta(minutes=m), {uuid: counters(60 * m, cpu)})
                for m, cpu in enumerate((0, 60, 180))]  # fmt: skip

    previous: dict = {}
    for at, reading in readings:
        with transaction(sessions) as session:
            record_usage(session, host_id, previous, reading, now=at, roll_up=False)
        previous = reading
    later = start + timedelta(hours=1, minutes=5)
    with transaction(sessions) as session:
        record_usage(session, host_id, previous, {}, now=later, roll_up=True)

    with sessions() as session:
        row = session.scalars(select(Guest).where(Guest.uuid == uuid)).one()
        samples = session.scalars(select(UsageSample).order_by(UsageSample.at)).all()
    assert row.cpu_percent is None and row.usage_at is None  # stopped at the last reading
    fine = [s for s in samples if not s.hourly]
    hourly = [s for s in samples if s.hourly]
    assert [s.cpu_percent for s in fine] == [50.0, 100.0]
    assert [(h.at, h.cpu_percent) for h in hourly] == [(start.replace(minute=0), 75.0)]


def test_a_running_guest_keeps_its_figures_and_old_samples_expire(sessions) -> None:
    host_id = new_host(sessions)
    guests = guests_from("node-alpha.xml")
    sync(sessions, host_id, guests)
    uuid = guests[0].spec.uuid
    now = datetime(2026, 11, 28, 12, 0, 30, tzinfo=UTC)
    with transaction(sessions) as session:
        guest_id = session.scalars(select(Guest.id).where(Guest.uuid == uuid)).one()
        session.add_all([
            UsageSample(guest_id=guest_id, hourly=False, at=now - timedelta(hours=25),
                        cpu_percent=1, disk_bps=0, net_bps=0),
            UsageSample(guest_id=guest_id, hourly=True, at=now - timedelta(days=31),
                        cpu_percent=1, disk_bps=0, net_bps=0),
            UsageSample(guest_id=guest_id, hourly=True, at=now - timedelta(days=29),
                        cpu_percent=2, disk_bps=0, net_bps=0),
        ])  # fmt: skip

    with transaction(sessions) as session:
        record_usage(session, host_id, {uuid: counters(0, 0)}, {uuid: counters(60, 30)},
                     now=now, roll_up=True)  # fmt: skip

    with sessions() as session:
        row = session.scalars(select(Guest).where(Guest.uuid == uuid)).one()
        kept = session.execute(select(UsageSample.hourly, UsageSample.cpu_percent)).all()
    assert (row.cpu_percent, row.memory_used_kib, row.usage_at) == (25.0, 512 * 1024, now)
    assert sorted(kept) == [(False, 25.0), (True, 2.0)]


def record(sessions, host_id: int, readings: list[tuple[datetime, dict]], *, roll_up=False) -> None:
    """Store each reading's use since the one before it, as the host's worker does."""
    previous: dict = {}
    for at, reading in readings:
        with transaction(sessions) as session:
            record_usage(session, host_id, previous, reading, now=at, roll_up=roll_up)
        previous = reading


def test_the_hosts_sample_is_the_sum_of_its_guests_and_an_hour_rolls_up(sessions) -> None:
    host_id = new_host(sessions)
    web_1, web_2, _db_1 = guests = guests_from("node-alpha.xml")
    sync(sessions, host_id, guests)
    start = datetime(2026, 11, 28, 10, 50, tzinfo=UTC)
    # web-1 busy on 2 vCPUs: 100 % then 50 %; web-2 on 4 vCPUs: 25 % then 50 %; 1 MiB/s each.
    readings = [
        (start + timedelta(minutes=m), {
            web_1.spec.uuid: counters(60 * m, cpu_1, vcpus=2, disk=m * 30 << 20),
            web_2.spec.uuid: counters(60 * m, cpu_2, vcpus=4, net=m * 60 << 20),
        })
        for m, cpu_1, cpu_2 in ((0, 0, 0), (1, 120, 60), (2, 180, 180))
    ]  # fmt: skip
    record(sessions, host_id, readings)
    with transaction(sessions) as session:
        record_usage(session, host_id, readings[-1][1], {}, now=start + timedelta(hours=1),
                     roll_up=True)  # fmt: skip

    with sessions() as session:
        samples = session.scalars(select(HostUsageSample).order_by(HostUsageSample.at)).all()
    fine = [(s.at, s.cpus_used, s.memory_used_kib, s.disk_bps, s.net_bps, s.guests)
            for s in samples if not s.hourly]  # fmt: skip
    # 2 + 1 CPUs' worth of time, then 1 + 2; two guests' 512 MiB; 1 MiB/s of disk and of network.
    assert fine == [
        (start + timedelta(minutes=1), 3.0, 1024 * 1024, 1 << 20, 1 << 20, 2),
        (start + timedelta(minutes=2), 3.0, 1024 * 1024, 1 << 20, 1 << 20, 2),
    ]
    (hourly,) = [s for s in samples if s.hourly]
    assert (hourly.at, hourly.cpus_used, hourly.guests) == (start.replace(minute=0), 3.0, 2)


def test_old_host_samples_expire_with_the_guests(sessions) -> None:
    host_id = new_host(sessions)
    now = datetime(2026, 11, 28, 12, 0, 30, tzinfo=UTC)
    with transaction(sessions) as session:
        session.add_all(
            HostUsageSample(host_id=host_id, hourly=hourly, at=now - age, cpus_used=1.0,
                            disk_bps=0, net_bps=0, guests=1)
            for hourly, age in ((False, timedelta(hours=25)), (False, timedelta(hours=23)),
                                (True, timedelta(days=31)), (True, timedelta(days=29)))
        )  # fmt: skip

    with transaction(sessions) as session:
        record_usage(session, host_id, {}, {}, now=now, roll_up=True)

    with sessions() as session:
        kept = session.execute(select(HostUsageSample.hourly, HostUsageSample.at)).all()
    assert sorted(kept) == [(False, now - timedelta(hours=23)), (True, now - timedelta(days=29))]


def test_a_guest_that_stops_and_the_guests_of_a_lost_host_have_no_current_figures(
    sessions,
) -> None:
    host_id = new_host(sessions)
    web_1, web_2, db_1 = guests = guests_from("node-alpha.xml")
    sync(sessions, host_id, guests)
    now = datetime(2026, 11, 28, 12, tzinfo=UTC)
    running = (web_1, web_2)
    record(sessions, host_id, [
        (now, {g.spec.uuid: counters(0, 0) for g in running}),
        (now + timedelta(minutes=1), {g.spec.uuid: counters(60, 30) for g in running}),
    ])  # fmt: skip

    def figures() -> dict[str, float | None]:
        with sessions() as session:
            return dict(session.execute(select(Guest.name, Guest.cpu_percent)).all())

    assert figures() == {"web-1": 25.0, "web-2": 25.0, "db-1": None}
    # web-1 shuts off (a libvirt event), web-2 by a pass: neither keeps a current figure.
    with transaction(sessions) as session:
        apply_event(session, host_id, web_1.spec.uuid, replace(web_1, state="shutoff"))
    assert figures() == {"web-1": None, "web-2": 25.0, "db-1": None}
    sync(sessions, host_id, [web_1, replace(web_2, state="shutoff"), db_1])
    assert figures() == {"web-1": None, "web-2": None, "db-1": None}

    sync(sessions, host_id, guests)
    record(sessions, host_id, [
        (now, {g.spec.uuid: counters(0, 0) for g in running}),
        (now + timedelta(minutes=1), {g.spec.uuid: counters(60, 30) for g in running}),
    ])  # fmt: skip
    with transaction(sessions) as session:
        record_unreachable(session, host_id, "host stopped answering (keepalive)")
    with sessions() as session:
        rows = session.execute(select(Guest.cpu_percent, Guest.net_bps, Guest.usage_at)).all()
    assert set(rows) == {(None, None, None)}
