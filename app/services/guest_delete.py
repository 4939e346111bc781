"""Delete a guest from its host, optionally with the disks it owns, and mark it gone at once."""

from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.errors import Invalid, NotFound
from app.models import Guest
from app.services.guest_actions import guest_lock
from app.services.guests import get_guest
from app.services.hosts import require_connected
from app.services.inventory import mark_gone
from app.services.ports import HostCalls
from app.virt import teardown
from app.virt.teardown import Deletion, KeptDisk, StoragePlan

__all__ = ["Deletion", "KeptDisk"]  # what the routers show of a delete

DELETE_ACTION = "delete"


def present_guest(sessions: sessionmaker[Session], uuid: str) -> Guest:
    """The guest with its host loaded; NotFound if unknown or gone, 503 if its host is down."""
    with sessions() as session:
        guest = get_guest(session, uuid)
    if guest.gone_at is not None:
        raise NotFound(f"guest {guest.name} ({guest.uuid}) is gone")
    require_connected(guest.host)
    return guest


def check_confirmation(guest: Guest, typed: str) -> None:
    """The name typed to confirm must be the guest's: 422 on the field `confirm` otherwise."""
    if typed.strip() != guest.name:
        raise Invalid(
            f"confirm: type the guest's name, {guest.name}, to delete it", field="confirm"
        )


def disks_owned(
    sessions: sessionmaker[Session], sync: HostCalls, uuid: str
) -> tuple[Guest, StoragePlan]:
    """The guest, and which disks deleting it with its storage would remove and keep."""
    guest = present_guest(sessions, uuid)
    return guest, sync.call(guest.host_id, lambda conn: teardown.plan_storage(conn, guest.uuid))


def _mark_gone(sessions: sessionmaker[Session], guest_id: int) -> None:
    with transaction(sessions) as session:
        mark_gone(session, guest_id)


def delete_guest(
    sessions: sessionmaker[Session],
    sync: HostCalls,
    *,
    uuid: str,
    remove_storage: bool,
    force: bool,
) -> Deletion:
    """Under the guest's lock: force off if asked, undefine, remove its disks, mark it gone."""
    guest = present_guest(sessions, uuid)
    with guest_lock(sessions, guest, DELETE_ACTION):
        try:
            deletion = sync.call(
                guest.host_id,
                lambda conn: teardown.delete_guest(
                    conn, guest.uuid, remove_storage=remove_storage, force=force
                ),
            )
        except NotFound as exc:
            _mark_gone(sessions, guest.id)  # the host no longer has it: nothing left to delete
            raise NotFound(f"guest {guest.name} no longer exists on its host") from exc
        _mark_gone(sessions, guest.id)
    return deletion
