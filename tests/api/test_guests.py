"""Reading the guest inventory through /api/v1/guests."""

from fastapi.testclient import TestClient

from app.db import transaction
from app.services.hosts import record_unreachable

WEB_1 = "a1000000-0000-4000-8000-000000000001"


def names(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [g["name"] for g in response.json()["items"]]


def test_all_guests_of_all_hosts_are_listed_by_name(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    response = client.get("/api/v1/guests")

    assert names(response) == ["build-1", "build-2", "db-1", "idle-3", "web-1", "web-2", "web-9"]
    assert response.json()["total"] == 7


def test_guests_filter_by_host_state_and_name(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    alpha, beta = two_hosts

    assert names(client.get("/api/v1/guests", params={"host_id": alpha["id"]})) == [
        "db-1",
        "web-1",
        "web-2",
    ]
    assert names(client.get("/api/v1/guests", params={"state": "shutoff"})) == [
        "build-2",
        "db-1",
        "web-9",
    ]
    assert names(client.get("/api/v1/guests", params={"state": "paused"})) == ["idle-3"]
    assert names(client.get("/api/v1/guests", params={"q": "WEB"})) == ["web-1", "web-2", "web-9"]
    both = {"q": "web", "host_id": beta["id"], "state": "shutoff"}
    assert names(client.get("/api/v1/guests", params=both)) == ["web-9"]
    assert names(client.get("/api/v1/guests", params={"q": "%"})) == []


def test_guests_are_paginated_with_a_total(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    first = client.get("/api/v1/guests", params={"limit": 3}).json()
    second = client.get("/api/v1/guests", params={"limit": 3, "offset": 3}).json()
    last = client.get("/api/v1/guests", params={"limit": 3, "offset": 6}).json()

    assert [g["name"] for g in first["items"]] == ["build-1", "build-2", "db-1"]
    assert [g["name"] for g in second["items"]] == ["idle-3", "web-1", "web-2"]
    assert [g["name"] for g in last["items"]] == ["web-9"]
    assert first["total"] == second["total"] == last["total"] == 7
    assert (second["limit"], second["offset"]) == (3, 3)


def test_a_guest_shows_its_resources_devices_and_xml(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    guest = client.get(f"/api/v1/guests/{WEB_1}").json()

    assert guest["name"] == "web-1"
    assert guest["host_name"] == "alpha"
    assert (guest["state"], guest["status"]) == ("running", "running")
    assert guest["vcpus"] == 2
    assert (guest["memory_max_kib"], guest["memory_current_kib"]) == (2048 * 1024, 1536 * 1024)
    assert guest["persistent"] is True
    assert guest["autostart"] is False
    assert guest["disks"] == [
        {
            "target": "vda",
            "device": "disk",
            "source": "/var/lib/libvirt/images/web-1.qcow2",
            "format": "qcow2",
            "bus": "virtio",
        }
    ]
    assert guest["nics"] == [
        {"mac": "52:54:00:a1:00:01", "type": "network", "source": "default", "model": "virtio"}
    ]
    assert f"<uuid>{WEB_1}</uuid>" in guest["domain_xml"]
    assert guest["gone_at"] is None


def test_bad_filters_and_unknown_guests_get_clear_errors(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    bad_state = client.get("/api/v1/guests", params={"state": "exploded"})
    bad_limit = client.get("/api/v1/guests", params={"limit": 0})
    unknown = client.get("/api/v1/guests/00000000-0000-4000-8000-00000000dead")

    assert bad_state.status_code == 422
    assert bad_state.json()["detail"].startswith("state: ")
    assert bad_limit.status_code == 422
    assert bad_limit.json()["detail"].startswith("limit: ")
    assert unknown.status_code == 404
    assert "not found" in unknown.json()["detail"]


def test_guests_of_an_unreachable_host_show_unknown_with_their_last_state(
    client: TestClient, two_hosts: tuple[dict, dict], sessions
) -> None:
    alpha, _ = two_hosts
    with transaction(sessions) as session:
        record_unreachable(session, alpha["id"], "host stopped answering (keepalive)")

    guest = client.get(f"/api/v1/guests/{WEB_1}").json()
    page = client.get(f"/hosts/{alpha['id']}")

    assert (guest["status"], guest["state"]) == ("unknown", "running")
    assert "badge-unknown" in page.text and "last running" in page.text
