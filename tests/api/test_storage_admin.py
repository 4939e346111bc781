"""An admin makes a directory pool and starts and stops pools and virtual networks through the
API, on a test-driver host of its own; bad input is refused naming the field, a network that a
running guest uses is not stopped, and each change is audited."""

from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import update

from app.db import transaction
from app.models import Guest
from tests.conftest import add_host, node_uri, post_guest
from tests.markup import parse

POOL_DIR = "/var/lib/virtdeck-test/more"


def _pools(client: TestClient, host: dict) -> dict[str, dict]:
    return {p["name"]: p for p in client.get(f"/api/v1/hosts/{host['id']}/pools").json()}


def _networks(client: TestClient, host: dict) -> dict[str, dict]:
    return {n["name"]: n for n in client.get(f"/api/v1/hosts/{host['id']}/networks").json()}


def test_a_directory_pool_is_made_started_and_set_to_autostart(client: TestClient) -> None:
    host = add_host(client, "storage", node_uri("node-storage.xml"))

    made = client.post(f"/api/v1/hosts/{host['id']}/pools", json={"name": "more", "path": POOL_DIR})

    assert made.status_code == 201, made.text
    assert (made.json()["name"], made.json()["active"], made.json()["autostart"]) == (
        "more", True, True,
    )  # fmt: skip
    listed = _pools(client, host)["more"]
    assert (listed["type"], listed["path"], listed["active"]) == ("dir", POOL_DIR, True)


def test_a_bad_name_and_path_are_refused_together_naming_each_field(client: TestClient) -> None:
    host = add_host(client, "storage", node_uri("node-storage.xml"))
    url = f"/api/v1/hosts/{host['id']}/pools"

    both = client.post(url, json={"name": "-x", "path": "var/lib/x"})
    system = client.post(url, json={"name": "ok", "path": "/etc/libvirt"})
    dotted = client.post(url, json={"name": "ok", "path": "/srv/a/../b"})
    doubled = client.post(url, json={"name": "ok", "path": "//etc"})
    taken = client.post(url, json={"name": "images", "path": POOL_DIR})

    assert both.status_code == 422
    assert set(both.json()["errors"]) == {"name", "path"}
    assert system.status_code == 422 and "system directory" in system.json()["detail"]
    assert dotted.status_code == 422 and "/srv/b" in dotted.json()["detail"]
    assert doubled.status_code == 422 and doubled.json()["field"] == "path"
    assert taken.status_code == 409 and "already has a storage pool" in taken.json()["detail"]
    assert set(_pools(client, host)) == {"images"}


def test_a_pool_is_stopped_and_started_again(client: TestClient) -> None:
    host = add_host(client, "storage", node_uri("node-storage.xml"))
    base = f"/api/v1/hosts/{host['id']}/pools/images"

    stopped = client.post(f"{base}/stop")
    volumes_meanwhile = client.get(f"{base}/volumes")
    started = client.post(f"{base}/start")

    assert (stopped.status_code, stopped.json()["active"]) == (200, False)
    assert volumes_meanwhile.status_code == 409
    assert (started.status_code, started.json()["active"]) == (200, True)
    assert client.post(f"{base}/explode").status_code == 422
    assert client.post(f"/api/v1/hosts/{host['id']}/pools/nope/stop").status_code == 404


def test_a_network_a_running_guest_uses_is_not_stopped(client: TestClient) -> None:
    host = add_host(client, "storage", node_uri("node-storage.xml"))
    guest = post_guest(client, host, "web-net", network="lan", start=True)
    assert guest.status_code == 201, guest.text
    client.post(f"/api/v1/hosts/{host['id']}/refresh", params={"wait": 15})
    url = f"/api/v1/hosts/{host['id']}/networks/lan"

    refused = client.post(f"{url}/stop")

    assert refused.status_code == 409
    assert "in use by web-net" in refused.json()["detail"]
    assert _networks(client, host)["lan"]["active"] is True


def test_a_network_whose_bridge_a_running_guest_is_plugged_into_is_not_stopped(
    client: TestClient, sessions
) -> None:
    host = add_host(client, "storage", node_uri("node-storage.xml"))
    guest = post_guest(client, host, "web-bridged", start=True)
    assert guest.status_code == 201, guest.text
    client.post(f"/api/v1/hosts/{host['id']}/refresh", params={"wait": 15})
    # The test driver cannot attach a NIC: the inventory is told the guest has one on lan's
    # bridge (virbr10), as a sync of such a guest records it.
    with transaction(sessions) as session:
        session.execute(
            update(Guest)
            .where(Guest.uuid == guest.json()["uuid"])
            .values(nics=[{"mac": "52:54:00:00:00:10", "type": "bridge", "source": "virbr10"}])
        )
    url = f"/api/v1/hosts/{host['id']}/networks/lan"

    refused = client.post(f"{url}/stop")

    assert refused.status_code == 409
    assert "in use by web-bridged" in refused.json()["detail"]
    assert _networks(client, host)["lan"]["active"] is True


def test_a_network_no_guest_uses_is_stopped_and_started(client: TestClient) -> None:
    host = add_host(client, "storage", node_uri("node-storage.xml"))
    url = f"/api/v1/hosts/{host['id']}/networks/lan"

    stopped = client.post(f"{url}/stop")
    started = client.post(f"{url}/start")

    assert (stopped.status_code, stopped.json()["active"]) == (200, False)
    assert (started.status_code, started.json()["active"]) == (200, True)


def test_operators_cannot_change_storage_and_changes_are_audited(
    client: TestClient, make_client: Callable[..., TestClient]
) -> None:
    host = add_host(client, "storage", node_uri("node-storage.xml"))
    operator = make_client(role="operator")

    forbidden = operator.post(f"/api/v1/hosts/{host['id']}/pools/images/stop")
    client.post(f"/api/v1/hosts/{host['id']}/pools/images/stop")

    assert forbidden.status_code == 403
    assert _pools(client, host)["images"]["active"] is False
    entry = client.get("/api/v1/audit", params={"action": "pool.stop"}).json()["items"][0]
    assert (entry["result"], entry["target"]) == ("ok", f"host:{host['id']} (storage), pool:images")
    assert entry["targets"] == [
        {"kind": "host", "id": str(host["id"]), "name": "storage"},
        {"kind": "pool", "id": "images", "name": None},
    ]


def test_a_pool_whose_volume_a_running_guest_uses_is_not_stopped(client: TestClient) -> None:
    host = add_host(client, "storage", node_uri("node-storage.xml"))
    golden = {"pool": "images", "volume": "golden.qcow2", "format": "qcow2"}
    made = post_guest(client, host, "web-disk", disk=golden, start=True)
    assert made.status_code == 201, made.text
    client.post(f"/api/v1/hosts/{host['id']}/refresh", params={"wait": 15})

    refused = client.post(f"/api/v1/hosts/{host['id']}/pools/images/stop")

    assert refused.status_code == 409
    assert "holds disks of web-disk" in refused.json()["detail"]
    assert _pools(client, host)["images"]["active"] is True


def test_a_stopped_network_or_pool_is_marked_in_the_wizard_and_refused_for_a_guest(
    client: TestClient,
) -> None:
    host = add_host(client, "storage", node_uri("node-storage.xml"))
    client.post(f"/api/v1/hosts/{host['id']}/networks/lan/stop").raise_for_status()
    client.post(f"/api/v1/hosts/{host['id']}/pools/images/stop").raise_for_status()
    golden = {"pool": "images", "volume": "golden.qcow2", "format": "qcow2"}

    choices = parse(client.get("/guests/new/choices", params={"host_id": host["id"]}).text)
    to_start = post_guest(client, host, "net-off", network="lan", start=True)
    on_a_stopped_pool = post_guest(client, host, "pool-off", disk=golden)
    names = [
        g["name"]
        for g in client.get("/api/v1/guests", params={"host_id": host["id"]}).json()["items"]
    ]

    assert choices.find("option", value="lan").text == "lan (inactive)"
    assert to_start.status_code == 422 and to_start.json()["field"] == "network"
    assert "network 'lan' is not active" in to_start.json()["detail"]
    assert on_a_stopped_pool.status_code == 422
    assert on_a_stopped_pool.json()["field"] == "disk.pool"
    assert "net-off" not in names and "pool-off" not in names  # nothing left on the host
