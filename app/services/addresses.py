"""A guest's IP addresses: asked of its host now (app.virt.addresses) for its page, and as the
worker last read them, stored on its row for the lists (which never ask a host)."""

from dataclasses import asdict
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.models import Guest
from app.services.guests import get_guest
from app.services.ports import HostCalls
from app.services.states import RESOURCE_STATES
from app.virt.addresses import Address, guest_addresses

# What one read of a host's addresses takes at most (each guest costs a few libvirt calls, and
# libvirt has no call for many): those never read first, then those read longest ago. A guest's
# reading is renewed after STALE_AFTER, and at every read in its first BOOTING after it came up
# (its DHCP lease comes while it boots). Both queries read models.guest's index
# ix_guests_present_addresses alone, never the wide rows.
READS_PER_PASS = 10
STALE_AFTER = timedelta(minutes=30)
BOOTING = timedelta(minutes=3)


def addresses(session: Session, sync: HostCalls, uuid: str) -> list[Address]:
    """The guest's addresses with their sources; HostUnreachable when its host is not
    connected."""
    guest = get_guest(session, uuid)
    return sync.call(guest.host_id, lambda conn: guest_addresses(conn, uuid))


def due_for_addresses(session: Session, host_id: int, *, now: datetime) -> list[str]:
    """The UUIDs of the host's guests that are up and due a read of their addresses (see
    READS_PER_PASS), at most READS_PER_PASS of them."""
    return list(
        session.scalars(
            select(Guest.uuid)
            .where(
                Guest.host_id == host_id,
                Guest.gone_at.is_(None),
                Guest.state.in_(RESOURCE_STATES),
                Guest.addresses_at.is_(None)
                | (Guest.addresses_at < now - STALE_AFTER)
                | (Guest.running_since > now - BOOTING),
            )
            .order_by(Guest.addresses_at.is_not(None), Guest.addresses_at)
            .limit(READS_PER_PASS)
        )
    )


def record_addresses(
    session: Session, host_id: int, found: dict[str, list[Address]], *, now: datetime
) -> None:
    """Store the addresses read of the host's guests (by UUID), and forget those of its guests
    no longer up."""
    session.execute(
        update(Guest)
        .where(
            Guest.host_id == host_id,
            Guest.gone_at.is_(None),  # a gone guest shows none (app.services.guests)
            Guest.addresses_at.is_not(None),
            Guest.state.not_in(RESOURCE_STATES),
        )
        .values(addresses=None, addresses_at=None)
    )
    if not found:
        return
    ids = dict(
        session.execute(
            select(Guest.uuid, Guest.id).where(
                Guest.host_id == host_id, Guest.uuid.in_(found), Guest.gone_at.is_(None)
            )
        ).all()
    )
    rows = [
        {"id": ids[uuid], "addresses": [asdict(a) for a in listed], "addresses_at": now}
        for uuid, listed in found.items()
        if uuid in ids
    ]
    if rows:  # one executemany by primary key
        session.execute(update(Guest), rows)
