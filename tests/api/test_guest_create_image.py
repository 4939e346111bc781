"""Creating guests from a base image (with cloud-init) through POST /api/v1/guests, on a
test-driver host with base images: the overlay's chain in the guest's XML, and every refusal
naming its field with nothing made. (The test driver streams no volumes, so copies and seeds are
made on the real libvirtd: tests/test_real_libvirtd_cloud_init.py.)"""

import xml.etree.ElementTree as ET

import pytest
from fastapi.testclient import TestClient

from tests.conftest import add_host, node_uri, post_guest
from tests.polling import finished_job

GIB = 1024**3
IMAGES = "/var/lib/virtdeck-test/images"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHp0ZXN0a2V5Zm9ydmlydGRlY2tjbG91ZGluaXQxMjM0 ops@desk"


@pytest.fixture
def host(client: TestClient) -> dict:
    """A host with the pool images (golden.qcow2 8 GiB, layered.qcow2 on it, plain.img raw
    2 GiB) and the network lan."""
    return add_host(client, "images", node_uri("node-images.xml"))


def volumes(client: TestClient, host: dict) -> dict[str, int]:
    """The pool's volumes and their capacities, as the host has them now."""
    listed = client.get(f"/api/v1/hosts/{host['id']}/pools/images/volumes").json()
    return {v["name"]: v["capacity"] for v in listed}


def guest_names(client: TestClient, host: dict) -> list[str]:
    client.post(f"/api/v1/hosts/{host['id']}/refresh", params={"wait": 15})
    listed = client.get("/api/v1/guests", params={"host_id": host["id"]}).json()["items"]
    return [g["name"] for g in listed]


def from_image(volume: str = "golden.qcow2", **image) -> dict:
    """The fields of a 10 GiB disk in images made from the image."""
    return {
        "disk": {"pool": "images", "size_gib": 10},
        "image": {
            "pool": "images",
            "volume": volume,
            "format": "qcow2",
            "mode": "overlay",
            **image,
        },
    }


def test_an_overlay_disk_is_a_new_qcow2_volume_whose_chain_the_guest_names(
    client: TestClient, host: dict
) -> None:
    response = post_guest(client, host, "web-1", network="lan", **from_image())

    assert response.status_code == 202, response.text
    job = finished_job(client, response.json()["id"])
    assert job["status"] == "succeeded", job
    guest = client.get(f"/api/v1/guests/{job['result']['guest_uuid']}").json()
    [disk] = guest["disks"]
    assert (disk["source"], disk["format"]) == (f"{IMAGES}/web-1.qcow2", "qcow2")
    assert volumes(client, host)["web-1.qcow2"] == 10 * GIB
    chain = ET.fromstring(guest["domain_xml"]).find("devices/disk/backingStore")
    assert chain.find("source").get("file") == f"{IMAGES}/golden.qcow2"
    assert chain.find("format").get("type") == "qcow2"
    assert chain.find("backingStore") is not None  # nothing behind the image: no probing


def test_a_cloud_init_create_whose_seed_cannot_be_written_leaves_nothing(
    client: TestClient, host: dict
) -> None:
    before = volumes(client, host)
    cloud_init = {"user": "ops", "password": "secret words"}

    response = post_guest(client, host, "web-2", cloud_init=cloud_init, **from_image())

    assert response.status_code == 202, response.text
    job = finished_job(client, response.json()["id"])
    # The test driver cannot stream volumes: the seed fails after the disk was made.
    assert job["status"] == "failed", job
    assert volumes(client, host) == before
    assert "web-2" not in guest_names(client, host)


REFUSALS = [
    (from_image("layered.qcow2"), "image.volume", "backing file"),
    (from_image(mode="copy") | {"disk": {"pool": "images", "size_gib": 7}}, "disk.size_gib",
     "8.00 GiB"),
    (from_image("nope.qcow2"), "image.volume", "no volume"),
    (from_image(pool="gone"), "image.pool", "no storage pool"),
    (from_image("plain.img"), "image.format", "not a qcow2 image"),
    (from_image(format="vmdk"), "image.format", "raw or qcow2"),
    (from_image(mode="link"), "image.mode", "copy or overlay"),
    (from_image() | {"disk": {"pool": "gone", "size_gib": 10}}, "disk.pool", "no storage pool"),
    (from_image() | {"disk": {"pool": "images", "volume": "plain.img"}}, "disk.size_gib",
     "needs a pool and a size"),
    ({"cloud_init": {"user": "ops", "ssh_keys": [KEY]}}, "image.volume", "cloud image"),
    (from_image() | {"cloud_init": {"user": "ops", "ssh_keys": ["ssh-rsa nope"]}},
     "cloud_init.ssh_keys", "not an OpenSSH public key"),
    (from_image() | {"cloud_init": {"user": "ops"}}, "cloud_init.ssh_keys",
     "SSH keys or a password"),
    (from_image() | {"cloud_init": {"user": "ops", "password": "pw", "user_data": "echo hi"}},
     "cloud_init.user_data", "#cloud-config"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "field", "says"), REFUSALS)
def test_a_bad_image_or_cloud_init_is_refused_naming_the_field_and_nothing_is_made(
    client: TestClient, host: dict, fields: dict, field: str, says: str
) -> None:
    before = volumes(client, host)

    response = post_guest(client, host, "web-3", **fields)

    assert (response.status_code, response.json()["field"]) == (422, field), response.text
    assert response.json()["detail"].startswith(f"{field}: ")
    assert says in response.json()["detail"]
    assert volumes(client, host) == before
    assert "web-3" not in guest_names(client, host)


def test_a_seed_volume_name_in_use_is_a_conflict_on_the_name(
    client: TestClient, host: dict
) -> None:
    cloud_init = {"user": "ops", "ssh_keys": [KEY]}

    response = post_guest(client, host, "taken", cloud_init=cloud_init, **from_image())

    assert (response.status_code, response.json()["field"]) == (409, "name"), response.text
    assert "taken-seed.iso" in response.json()["detail"]
