"""Overcommit services: ratio states, policy rules, the worker's readings, samples and pruning."""

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.db import transaction
from app.errors import Conflict, Invalid
from app.models import OvercommitSample
from app.models.base import utcnow
from app.services import overcommit
from app.services.hosts import add_host, get_host, record_facts
from app.services.inventory import apply_sync
from app.virt.connection import HostConnection
from app.virt.overcommit import KsmReading, read_stats
from tests.conftest import DATA, node_uri

GIB = 1024 * 1024  # in KiB


@pytest.fixture
def gamma(sessions) -> Iterator[tuple[int, HostConnection]]:
    """node-gamma registered and synced once, as its worker would, with its connection."""
    conn = HostConnection(node_uri("node-gamma.xml"), keepalive=(3, 3), on_close=lambda _r: None)
    with transaction(sessions) as session:
        host_id = add_host(session, name="gamma", uri=conn.uri, test_driver_dir=str(DATA)).id
    sync(sessions, host_id, conn)
    yield host_id, conn
    conn.close()


def sync(sessions, host_id: int, conn: HostConnection) -> None:
    """One worker sync: facts, guests, then the overcommit readings."""
    guests = conn.guests()
    with transaction(sessions) as session:
        record_facts(session, host_id, conn.facts())
        apply_sync(session, host_id, guests, sync_ms=1.0)
        overcommit.record_stats(
            session, host_id, read_stats(conn, {g.spec.uuid: g.spec.has_balloon for g in guests})
        )


@pytest.mark.parametrize(
    ("ratio", "policy", "state"),
    [(None, 4, "unknown"), (3.59, 4, "ok"), (3.6, 4, "near"), (36 / 8, 4.5, "near"),
     (4.0, 4, "near"), (4.01, 4, "over"), (1.0, 1.0, "near"), (0.89, 1.0, "ok")],
)  # fmt: skip
def test_a_ratio_is_near_from_90_percent_of_the_policy_and_over_above_it(
    ratio, policy, state
) -> None:
    assert overcommit.ratio_state(ratio, policy) == state


@pytest.mark.parametrize("value", [0.09, 100.5, 0, -1, True, "x", None, float("nan")])
def test_a_ratio_outside_0_1_to_100_is_refused_naming_the_field(value) -> None:
    with pytest.raises(Invalid) as refused:
        overcommit.validate_ratio(value, "memory")
    assert (refused.value.field, refused.value.message) == (
        "memory", "memory: a ratio from 0.1 to 100",
    )  # fmt: skip


def test_the_policy_defaults_to_nova_and_a_host_override_wins(sessions, gamma) -> None:
    host_id, _conn = gamma
    with transaction(sessions) as session:
        assert overcommit.get_policy(session) == (4.0, 1.0)
        overcommit.set_policy(session, cpu=2.0, memory=1.5)
        overcommit.set_host_policy(session, host_id, cpu=None, memory=2.0)
    with sessions() as session:
        item = overcommit.host_overcommit(session, host_id)
    assert (item.policy_cpu, item.policy_memory, item.policy_source) == (2.0, 2.0, "host")
    assert (item.cpu_running.state, item.memory_running.state) == ("over", "ok")


def test_a_refused_policy_change_leaves_the_old_one(sessions) -> None:
    with transaction(sessions) as session:
        overcommit.set_policy(session, cpu=5.0, memory=1.5)
    with pytest.raises(Invalid), transaction(sessions) as session:
        overcommit.set_policy(session, cpu=6.0, memory=0)
    with sessions() as session:
        assert overcommit.get_policy(session) == (5.0, 1.5)


def test_check_policy_counts_the_new_guest_as_running(sessions, gamma) -> None:
    host_id, _conn = gamma
    with sessions() as session, pytest.raises(Conflict) as both:
        overcommit.check_policy(session, host_id, add_vcpus=1, add_memory_kib=GIB, action="x")
    with transaction(sessions) as session:
        overcommit.set_host_policy(session, host_id, cpu=None, memory=2.0)
    with sessions() as session:
        overcommit.check_policy(session, host_id, add_vcpus=0, add_memory_kib=GIB)  # at 4.00:1
        with pytest.raises(Conflict) as cpu_only:
            overcommit.check_policy(session, host_id, add_vcpus=1, add_memory_kib=0)

    assert both.value.message == (
        "vcpus: x would put 9 vCPUs on 2 CPUs (4.50:1), over the policy of 4.00:1; "
        "x would put 6.0 GiB of guest memory on 4.0 GiB (1.50:1), over the policy of 1.00:1; "
        "an admin can force it"
    )
    assert (cpu_only.value.field, cpu_only.value.status_code) == ("vcpus", 409)


def test_the_readings_keep_balloons_and_samples_come_once_a_minute(sessions, gamma) -> None:
    host_id, conn = gamma
    old = utcnow() - timedelta(hours=26)
    with transaction(sessions) as session:
        session.add(OvercommitSample(host_id=host_id, at=old, cpu_ratio=1.0, memory_ratio=1.0))

    sync(sessions, host_id, conn)  # within the minute: no new sample, nothing pruned yet

    with sessions() as session:
        kept = session.scalars(select(OvercommitSample.at).order_by(OvercommitSample.at)).all()
        recent = overcommit.samples(session, host_id, hours=1)
        item = overcommit.host_overcommit(session, host_id)
    assert len(kept) == 2
    assert [(s.cpu_ratio, s.memory_ratio) for s in recent] == [(4.0, 1.25)]
    assert item.stats_at is not None and item.ksm is None and item.free_kib is None
    assert [g.name for g in item.guests if g.has_balloon] == ["big-1", "mid-1", "one-2"]


def test_an_old_sample_is_pruned_when_the_next_is_taken(sessions, gamma) -> None:
    host_id, _conn = gamma
    with transaction(sessions) as session:
        for sample in session.scalars(select(OvercommitSample)):
            sample.at -= timedelta(hours=26)

    with transaction(sessions) as session:
        host = get_host(session, host_id)
        overcommit.record_sample(session, host, utcnow())

    with sessions() as session:
        assert len(overcommit.samples(session, host_id, hours=25)) == 1
        assert len(session.scalars(select(OvercommitSample)).all()) == 1


def reading(*counters: int, run: int | None = None) -> KsmReading:
    return KsmReading(run, counters[0], counters[1], counters, 4)


def test_ksm_runs_while_its_counters_move_and_stops_when_they_rest() -> None:
    now = utcnow()
    later = now + overcommit.KSM_QUIET

    never = overcommit.ksm_state(reading(0, 0, 0, 0, 0), None, now)
    first = overcommit.ksm_state(reading(5, 9, 20, 1, 3), None, now)
    moved = overcommit.ksm_state(reading(5, 10, 20, 1, 3), first, now + timedelta(seconds=5))
    rested = overcommit.ksm_state(reading(5, 10, 20, 1, 3), moved, later + timedelta(seconds=6))
    flagged = overcommit.ksm_state(reading(0, 0, 0, 0, 0, run=1), None, now)

    assert [s["running"] for s in (never, first, moved, rested, flagged)] == [
        False, None, True, False, True,
    ]  # fmt: skip
    assert (moved["pages_sharing"], moved["page_kib"]) == (10, 4)
