"""Set a guest's tags: in its domain XML's metadata first (what a sync reads back), then in the
inventory."""

from collections.abc import Iterable

from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.models import Guest
from app.services.guest_delete import present_guest
from app.services.guests import get_guest
from app.services.inventory import apply_event
from app.services.ports import HostCalls
from app.services.tag_rules import check_tags
from app.virt import tags as virt_tags


def set_tags(
    sessions: sessionmaker[Session], sync: HostCalls, *, uuid: str, tags: Iterable[str]
) -> Guest:
    """Replace the guest's tags (Invalid naming "tags" for a bad one or too many); the guest
    as recorded afterwards."""
    wanted = check_tags(tags)
    guest = present_guest(sessions, uuid)
    sync.call(guest.host_id, lambda conn: virt_tags.set_tags(conn, guest.uuid, wanted))
    after = sync.call(guest.host_id, lambda conn: conn.guest(guest.uuid))
    with transaction(sessions) as session:
        apply_event(session, guest.host_id, guest.uuid, after)
    with sessions() as session:
        return get_guest(session, uuid)
