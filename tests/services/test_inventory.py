"""The inventory sync writes only what changed and never leaves a vanished guest looking alive."""

import dataclasses

from sqlalchemy import event, select

from app.models import Guest, Host
from app.virt.types import Disk, GuestInfo
from tests.inventory import guests_from, new_host, sync


def count_writes(engine) -> list[str]:
    """Record every INSERT/UPDATE/DELETE on the guests table."""
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _record(_conn, _cursor, statement, *_args) -> None:
        verb = statement.lstrip().split(" ", 1)[0].upper()
        if verb in {"INSERT", "UPDATE", "DELETE"} and "guests" in statement.split("(")[0]:
            seen.append(verb)

    return seen


def test_unchanged_resync_writes_no_guest_rows(sessions) -> None:
    host_id = new_host(sessions)
    guests = guests_from("node-alpha.xml")
    first = sync(sessions, host_id, guests)
    writes = count_writes(sessions.kw["bind"])

    again = sync(sessions, host_id, guests)

    assert (first.inserted, first.updated, first.gone) == (3, 0, 0)
    assert again.rows_written == 0
    assert writes == []


def test_a_changed_guest_is_rewritten_alone(sessions) -> None:
    host_id = new_host(sessions)
    guests = guests_from("node-alpha.xml")
    sync(sessions, host_id, guests)
    stopped = GuestInfo(guests[0].spec, "shutoff", False, True, guests[0].xml)

    result = sync(sessions, host_id, [stopped, *guests[1:]])

    assert (result.inserted, result.updated, result.gone) == (0, 1, 0)
    with sessions() as session:
        row = session.scalars(select(Guest).where(Guest.name == "web-1")).one()
        assert row.state == "shutoff"


def test_a_vanished_guest_is_marked_gone_and_returns_when_seen_again(sessions) -> None:
    host_id = new_host(sessions)
    guests = guests_from("node-alpha.xml")
    sync(sessions, host_id, guests)

    vanished = sync(sessions, host_id, guests[1:])
    again = sync(sessions, host_id, guests[1:])
    back = sync(sessions, host_id, guests)

    assert vanished.gone == 1 and again.rows_written == 0
    assert back.updated == 1
    with sessions() as session:
        row = session.scalars(select(Guest).where(Guest.name == "web-1")).one()
        assert row.gone_at is None


def test_a_gone_guest_keeps_the_time_it_was_last_seen(sessions) -> None:
    host_id = new_host(sessions)
    guests = guests_from("node-alpha.xml")
    sync(sessions, host_id, guests)
    with sessions() as session:
        synced_at = session.get(Host, host_id).last_sync_at

    sync(sessions, host_id, guests[1:])

    with sessions() as session:
        row = session.scalars(select(Guest).where(Guest.name == "web-1")).one()
        assert row.gone_at is not None and row.gone_at > synced_at
        assert row.last_seen_at == synced_at


def test_a_new_guest_reads_back_as_it_was_stored(sessions) -> None:
    host_id = new_host(sessions)
    model = guests_from("node-alpha.xml")[0]
    # What a COPY (PostgreSQL) must escape: tabs, line breaks, backslashes, quotes, non-ASCII.
    xml = model.xml.replace(
        "</domain>", "<description>a\tb\nc\\d 'e' \"f\" é ☃</description></domain>"
    )
    spec = dataclasses.replace(
        model.spec,
        disks=(*model.spec.disks, Disk("vdz", "disk", "/var/lib/x\\y z.qcow2", "qcow2", None)),
    )
    sync(sessions, host_id, [GuestInfo(spec, "running", True, False, xml)])

    with sessions() as session:
        row = session.scalars(select(Guest).where(Guest.uuid == spec.uuid)).one()
        assert row.domain_xml == xml
        assert row.disks == [dict(vars(d)) for d in spec.disks]
        assert row.nics == [dict(vars(n)) for n in spec.nics]
        assert (row.state, row.autostart, row.persistent) == ("running", True, False)
        assert (row.vcpus, row.memory_max_kib) == (spec.vcpus, spec.memory_max_kib)
        assert row.first_seen_at.tzinfo is not None
        assert row.first_seen_at == row.changed_at == row.last_seen_at
        assert row.gone_at is None and row.busy_action is None
