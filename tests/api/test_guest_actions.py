"""Lifecycle actions: the state table, the 409s, and one action at a time per guest."""

import threading

import pytest
from fastapi.testclient import TestClient

from app.db import make_engine, make_session_factory, transaction
from app.models import Guest
from app.services.guest_actions import guest_lock
from app.services.hosts import record_unreachable
from app.services.states import GuestState
from tests.conftest import add_host

WEB_1 = "a1000000-0000-4000-8000-000000000001"
DB_1 = "a1000000-0000-4000-8000-000000000003"
TEST_DEFAULT = "6695eb01-f6a4-8304-79aa-97f2502e193f"  # the running guest of test:///default


def act(client: TestClient, uuid: str, action: str):
    return client.post(f"/api/v1/guests/{uuid}/actions/{action}")


def test_each_state_offers_only_its_actions(client: TestClient, two_hosts) -> None:
    running = client.get(f"/api/v1/guests/{WEB_1}").json()
    stopped = client.get(f"/api/v1/guests/{DB_1}").json()

    assert running["actions"] == ["shutdown", "reboot", "suspend", "force_off", "autostart_on"]
    assert stopped["actions"] == ["start", "autostart_on"]


def test_a_guest_goes_through_its_lifecycle(client: TestClient, two_hosts) -> None:
    started = act(client, DB_1, "start")
    suspended = act(client, DB_1, "suspend")
    resumed = act(client, DB_1, "resume")
    autostart = act(client, DB_1, "autostart_on")
    forced = act(client, DB_1, "force_off")

    assert started.status_code == 200 and started.json()["status"] == "running"
    assert suspended.json()["status"] == "paused"
    assert suspended.json()["actions"] == ["resume", "force_off", "autostart_on"]
    assert resumed.json()["status"] == "running"
    assert autostart.json()["autostart"] is True
    assert forced.json()["status"] == "shutoff"
    assert client.get(f"/api/v1/guests/{DB_1}").json()["status"] == "shutoff"


def test_shutdown_ends_in_shutoff(client: TestClient, two_hosts) -> None:
    response = act(client, WEB_1, "shutdown")  # the test driver completes it at once
    assert response.status_code == 200
    assert response.json()["status"] == "shutoff"


@pytest.mark.parametrize(
    ("uuid", "action", "state"),
    [(DB_1, "shutdown", "shutoff"), (DB_1, "resume", "shutoff"), (WEB_1, "start", "running")],
)
def test_an_action_the_state_does_not_allow_is_409_with_the_state(
    client: TestClient, two_hosts, uuid: str, action: str, state: str
) -> None:
    response = act(client, uuid, action)

    assert response.status_code == 409
    assert response.json()["state"] == state
    # The state's value for machines, its words for people.
    assert f"it is {GuestState(state).label}" in response.json()["detail"]


def test_unknown_actions_and_guests_get_clear_errors(client: TestClient, two_hosts) -> None:
    unknown_action = act(client, WEB_1, "explode")
    unknown_guest = act(client, "00000000-0000-4000-8000-00000000dead", "start")

    assert unknown_action.status_code == 422
    assert unknown_action.json()["detail"].startswith("action: ")
    assert unknown_guest.status_code == 404


def test_actions_on_an_unreachable_host_are_503(client: TestClient, two_hosts, sessions) -> None:
    alpha, _ = two_hosts
    with transaction(sessions) as session:
        record_unreachable(session, alpha["id"], "host stopped answering (keepalive)")

    response = act(client, DB_1, "start")

    assert response.status_code == 503
    assert "unreachable" in response.json()["detail"]


def test_a_busy_guest_refuses_a_second_action_naming_the_first(
    client: TestClient, two_hosts, sessions
) -> None:
    with sessions() as session:
        guest = session.query(Guest).filter_by(uuid=DB_1).one()
    with guest_lock(sessions, guest, "start"):
        refused = act(client, DB_1, "start")
    afterwards = act(client, DB_1, "start")

    assert refused.status_code == 409
    assert refused.json()["detail"] == "db-1 is busy: start in progress"
    assert refused.json()["busy_action"] == "start"
    assert afterwards.status_code == 200


def fire_together(clients: list[TestClient], uuid: str, action: str) -> list[int]:
    """Send the same action from each client at the same moment; their status codes."""
    barrier = threading.Barrier(len(clients))
    codes: list[int] = [0] * len(clients)

    def send(index: int) -> None:
        barrier.wait()
        codes[index] = act(clients[index], uuid, action).status_code

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return sorted(codes)


def test_two_simultaneous_actions_in_one_process_let_exactly_one_through(
    client: TestClient, two_hosts
) -> None:
    assert fire_together([client, client], DB_1, "start") == [200, 409]


def test_two_app_instances_on_one_database_let_exactly_one_through(
    make_client, database_url: str
) -> None:
    first = make_client()
    host = add_host(first, "shared", "test:///default")
    second = make_client()  # a second app on the same database: its own worker and connection
    assert (
        second.post(f"/api/v1/hosts/{host['id']}/refresh", params={"wait": 15}).status_code == 200
    )
    try:
        assert fire_together([first, second], TEST_DEFAULT, "force_off") == [200, 409]
    finally:  # test:///default is shared by the whole test process: put its guest back
        # (forced: its 8 GiB on the driver's 3 GiB is over the default memory policy)
        first.post(f"/api/v1/guests/{TEST_DEFAULT}/actions/start", params={"force": True})
    engine = make_engine(database_url)
    with transaction(make_session_factory(engine)) as session:
        row = session.query(Guest).filter_by(uuid=TEST_DEFAULT).one()
        assert row.busy_action is None
    engine.dispose()
