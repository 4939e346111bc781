"""The delete service: the confirmation, the lock, and the inventory row it leaves behind."""

import threading

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.errors import Conflict, Invalid, NotFound
from app.models import Guest
from app.services import guest_delete

DB_1 = "a1000000-0000-4000-8000-000000000003"  # shut off, on alpha


def row(client: TestClient, uuid: str) -> Guest:
    """The guest's row as stored now."""
    with client.app.state.sessions() as session:
        return session.scalars(select(Guest).where(Guest.uuid == uuid)).one()


@pytest.mark.parametrize("typed", ["", "db-2", "DB-1", "db-1x"])
def test_the_confirmation_must_be_the_guest_name(client: TestClient, two_hosts, typed) -> None:
    guest = row(client, DB_1)

    with pytest.raises(Invalid) as refused:
        guest_delete.check_confirmation(guest, typed)

    assert refused.value.field == "confirm"
    assert refused.value.message == "confirm: type the guest's name, db-1, to delete it"
    guest_delete.check_confirmation(guest, " db-1 ")  # surrounding blanks do not count


def test_the_row_is_gone_and_unlocked_right_after_the_delete(client: TestClient, two_hosts) -> None:
    state = client.app.state

    deletion = guest_delete.delete_guest(
        state.sessions, state.sync, uuid=DB_1, remove_storage=False, force=False
    )

    after = row(client, DB_1)
    assert deletion.name == "db-1"
    assert after.gone_at is not None
    assert (after.busy_action, after.busy_since) == (None, None)


def test_two_deletes_at_once_delete_once(client: TestClient, two_hosts) -> None:
    state = client.app.state
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def attempt() -> None:
        barrier.wait()
        try:
            outcomes.append(
                guest_delete.delete_guest(
                    state.sessions, state.sync, uuid=DB_1, remove_storage=False, force=False
                )
            )
        except (Conflict, NotFound) as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    refusals = [o.message for o in outcomes if isinstance(o, Conflict | NotFound)]
    assert len(outcomes) == 2 and len(refusals) == 1
    # Refused while the first holds the lock, or after it: by the row, or by the host.
    assert refusals[0] in (
        "db-1 is busy: delete in progress",
        f"guest db-1 ({DB_1}) is gone",
        "guest db-1 no longer exists on its host",
    )
