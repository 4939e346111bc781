"""Saved create profiles through /api/v1/profiles (SQLite and PostgreSQL): operators keep them,
viewers read them, a guest is made from one in one call, and a profile naming a pool, image or
network that is gone is refused naming the field with nothing made."""

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from tests.conftest import add_host, node_uri
from tests.polling import finished_job

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHp0ZXN0a2V5Zm9ydmlydGRlY2tjbG91ZGluaXQxMjM0 ops@desk"


@pytest.fixture
def host(client: TestClient) -> dict:
    """A host with the pool images (golden.qcow2, 8 GiB) and the network lan."""
    return add_host(client, "images", node_uri("node-images.xml"))


def profile(host: dict | None = None, **fields) -> dict:
    """A profile body: 1 vCPU, 512 MiB, a 10 GiB overlay on golden.qcow2 in images, lan, the
    cloud-init user ops with a key."""
    body = {
        "name": "small-debian",
        "vcpus": 1,
        "memory_mib": 512,
        "host_id": host["id"] if host else None,
        "disk": {"pool": "images", "size_gib": 10},
        "image": {"pool": "images", "volume": "golden.qcow2", "format": "qcow2", "mode": "overlay"},
        "network": "lan",
        "cloud_init": {"user": "ops", "ssh_keys": [KEY]},
    }
    return {**body, **fields}


def test_operators_keep_profiles_viewers_read_them_and_each_change_is_audited(
    client: TestClient, make_client: Callable[..., TestClient], host: dict
) -> None:
    operator, viewer = make_client(role="operator"), make_client(role="viewer")

    created = operator.post("/api/v1/profiles", json=profile(host))
    assert created.status_code == 201, created.text
    saved = created.json()
    assert saved["created_by"].startswith("operator-")
    assert {k: saved[k] for k in profile(host)} == profile(host)
    assert viewer.get("/api/v1/profiles").json() == [saved]
    assert viewer.get(f"/api/v1/profiles/{saved['id']}").json() == saved
    assert viewer.post("/api/v1/profiles", json=profile(name="other")).status_code == 403

    changed = operator.put(
        f"/api/v1/profiles/{saved['id']}", json=profile(name="big", vcpus=4, image=None,
                                                        cloud_init=None)
    )  # fmt: skip
    assert changed.status_code == 200, changed.text
    assert (changed.json()["name"], changed.json()["vcpus"], changed.json()["image"]) == (
        "big", 4, None,
    )  # fmt: skip
    assert operator.delete(f"/api/v1/profiles/{saved['id']}").status_code == 204
    assert viewer.get(f"/api/v1/profiles/{saved['id']}").status_code == 404

    audit = client.get("/api/v1/audit", params={"action": "profile.", "result": "ok"})
    entries = audit.json()["items"]
    assert [(e["action"], e["target"]) for e in reversed(entries)] == [
        ("profile.create", f"profile:{saved['id']} (small-debian)"),
        ("profile.update", f"profile:{saved['id']} (big)"),
        ("profile.delete", f"profile:{saved['id']} (big)"),
    ]


BAD = [
    ({"name": "-x"}, "name"),
    ({"vcpus": 0}, "vcpus"),
    ({"memory_mib": 8}, "memory_mib"),
    ({"disk": {"pool": "images", "size_gib": 0}}, "disk.size_gib"),
    ({"disk": {"pool": "", "size_gib": 10}}, "disk.pool"),
    ({"disk": {"pool": "a\x00b", "size_gib": 10}}, "disk.pool"),
    ({"network": "lan\n"}, "network"),
    ({"image": {"pool": "images", "volume": "golden\x00.qcow2"}}, "image.volume"),
    ({"host_id": 987654}, "host_id"),
    ({"image": {"pool": "images", "volume": "golden.qcow2", "format": "vmdk"}}, "image.format"),
    ({"image": {"pool": "images", "volume": "golden.qcow2", "mode": "link"}}, "image.mode"),
    ({"image": None}, "image.volume"),
    ({"cloud_init": {"user": "Root", "ssh_keys": [KEY]}}, "cloud_init.user"),
    ({"cloud_init": {"user": "ops", "ssh_keys": ["ssh-ed25519 nope"]}}, "cloud_init.ssh_keys"),
]


@pytest.mark.parametrize(("fields", "field"), BAD)
def test_a_bad_profile_is_refused_naming_the_field_and_not_saved(
    client: TestClient, fields: dict, field: str
) -> None:
    response = client.post("/api/v1/profiles", json=profile(**fields))

    assert (response.status_code, response.json()["field"]) == (422, field), response.text
    assert response.json()["detail"].startswith(f"{field}: ")
    assert client.get("/api/v1/profiles").json() == []


def test_a_profile_name_in_use_is_a_conflict(client: TestClient) -> None:
    first = client.post("/api/v1/profiles", json=profile()).json()
    second = client.post("/api/v1/profiles", json=profile(name="other")).json()

    again = client.post("/api/v1/profiles", json=profile())
    renamed = client.put(f"/api/v1/profiles/{second['id']}", json=profile())

    assert (again.status_code, again.json()["field"]) == (409, "name")
    assert (renamed.status_code, renamed.json()["field"]) == (409, "name")
    assert [p["name"] for p in client.get("/api/v1/profiles").json()] == ["other", first["name"]]


def test_a_guest_is_made_from_a_profile_in_one_call(client: TestClient, host: dict) -> None:
    saved = client.post("/api/v1/profiles", json=profile(host, cloud_init=None)).json()

    response = client.post(f"/api/v1/profiles/{saved['id']}/guests", json={"name": "web-7"})

    assert response.status_code == 202, response.text
    job = finished_job(client, response.json()["id"])
    assert job["status"] == "succeeded", job
    guest = client.get(f"/api/v1/guests/{job['result']['guest_uuid']}").json()
    assert (guest["name"], guest["vcpus"], guest["memory_max_kib"]) == ("web-7", 1, 512 * 1024)
    assert [(n["source"], n["model"]) for n in guest["nics"]] == [("lan", "virtio")]
    assert "/var/lib/virtdeck-test/images/golden.qcow2" in guest["domain_xml"]
    entries = client.get("/api/v1/audit", params={"action": "guest.create"}).json()["items"]
    assert entries[0]["target"] == f"guest:{guest['uuid']} (web-7)"


GONE = [
    ({"disk": {"pool": "gone", "size_gib": 10}}, "disk.pool"),
    ({"image": {"pool": "images", "volume": "gone.qcow2", "format": "qcow2", "mode": "copy"}},
     "image.volume"),
    ({"image": {"pool": "gone", "volume": "golden.qcow2", "format": "qcow2", "mode": "copy"}},
     "image.pool"),
    ({"network": "gone"}, "network"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "field"), GONE)
def test_a_profile_naming_what_is_gone_from_the_host_is_refused_naming_the_field(
    client: TestClient, host: dict, fields: dict, field: str
) -> None:
    saved = client.post("/api/v1/profiles", json=profile(host, **fields)).json()
    volumes = client.get(f"/api/v1/hosts/{host['id']}/pools/images/volumes").json()

    response = client.post(
        f"/api/v1/profiles/{saved['id']}/guests", json={"name": "web-8", "password": "pw"}
    )

    assert (response.status_code, response.json()["field"]) == (422, field), response.text
    assert response.json()["detail"].startswith(f"{field}: ")
    assert client.get(f"/api/v1/hosts/{host['id']}/pools/images/volumes").json() == volumes
    assert client.get("/api/v1/guests", params={"q": "web-8"}).json()["total"] == 0


def test_a_profile_without_a_host_needs_one_named_at_create(client: TestClient) -> None:
    saved = client.post("/api/v1/profiles", json=profile()).json()

    response = client.post(f"/api/v1/profiles/{saved['id']}/guests", json={"name": "web-9"})
    missing = client.post("/api/v1/profiles/987654/guests", json={"name": "web-9"})

    assert (response.status_code, response.json()["field"]) == (422, "host_id")
    assert missing.status_code == 404
