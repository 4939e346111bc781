"""A guest's hardware through the API on test-driver hosts: what the host has is shown, and every
change that cannot be is refused naming the field before anything changes (the test driver
cannot attach devices, so the changes themselves are proven on the real libvirtd, in
tests/test_real_libvirtd_guest_hardware.py)."""

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from tests.conftest import add_host, node_uri, post_guest

WEB_1 = "a1000000-0000-4000-8000-000000000001"  # running on alpha, NIC 52:54:00:a1:00:01
WEB_2 = "a1000000-0000-4000-8000-000000000002"  # on alpha


@pytest.fixture
def alpha(client: TestClient) -> dict:
    return add_host(client, "alpha", node_uri("node-alpha.xml"))


@pytest.fixture
def with_cd(client: TestClient) -> str:
    """A shut-off guest on the storage host with a CD-ROM holding its ISO; its UUID."""
    host = add_host(client, "storage", node_uri("node-storage.xml"))
    cdrom = {"pool": "images", "volume": "debian-12.iso"}
    made = post_guest(client, host, "cd-guest", cdrom=cdrom, network="lan")
    assert made.status_code == 201, made.text
    return made.json()["uuid"]


def hardware(client: TestClient, uuid: str) -> dict:
    shown = client.get(f"/api/v1/guests/{uuid}/hardware")
    assert shown.status_code == 200, shown.text
    return shown.json()


def test_the_hardware_shows_each_disk_drive_and_nic_as_the_host_has_it(
    client: TestClient, alpha, with_cd: str
) -> None:
    web = hardware(client, WEB_1)
    cd = hardware(client, with_cd)

    assert web["running"] is True
    assert [(d["target"], d["device"], d["format"]) for d in web["disks"]] == [
        ("vda", "disk", "qcow2")
    ]
    assert web["disks"][0]["source"] == "/var/lib/libvirt/images/web-1.qcow2"
    assert [(n["mac"], n["type"], n["source"]) for n in web["nics"]] == [
        ("52:54:00:a1:00:01", "network", "default")
    ]
    drive = next(d for d in cd["disks"] if d["device"] == "cdrom")
    assert (drive["pool"], drive["volume"], drive["readonly"]) == ("images", "debian-12.iso", True)
    assert [n["source"] for n in cd["nics"]] == ["lan"]


@pytest.mark.parametrize(
    ("disk", "status", "field"),
    [
        ({"pool": "nowhere", "size_gib": 1}, 422, "disk.pool"),
        ({"pool": "images", "size_gib": 0}, 422, "disk.size_gib"),
        ({"pool": "images", "size_gib": 1, "volume": "golden.qcow2"}, 422, "disk.volume"),
        ({"pool": "images", "volume": "golden.qcow2"}, 422, "disk.format"),  # qcow2, not raw
        ({"pool": "images", "volume": "nothing.img"}, 422, "disk.volume"),
    ],
)
def test_a_disk_that_cannot_be_added_is_refused_naming_the_field(
    client: TestClient, with_cd: str, disk: dict, status: int, field: str
) -> None:
    before = hardware(client, with_cd)
    refused = client.post(f"/api/v1/guests/{with_cd}/disks", json={"disk": disk})

    assert refused.status_code == status and refused.json()["field"] == field, refused.text
    assert hardware(client, with_cd) == before


@pytest.mark.parametrize(
    ("target", "size_gib", "status", "field"),
    [
        ("vdq", 10, 404, "target"),  # no such disk
        ("vda", 0, 422, "size_gib"),
        ("vda", 10**6, 422, "size_gib"),
    ],
)
def test_a_disk_that_cannot_grow_is_refused_naming_the_field(
    client: TestClient, alpha, target: str, size_gib: int, status: int, field: str
) -> None:
    refused = client.post(
        f"/api/v1/guests/{WEB_1}/disks/{target}/grow", json={"size_gib": size_gib}
    )

    assert refused.status_code == status and refused.json()["field"] == field, refused.text


def test_a_cd_drive_cannot_grow_and_a_disk_takes_no_media(
    client: TestClient, alpha, with_cd: str
) -> None:
    drive = next(d for d in hardware(client, with_cd)["disks"] if d["device"] == "cdrom")
    iso = {"cdrom": {"pool": "images", "volume": "debian-12.iso"}}

    grow = client.post(
        f"/api/v1/guests/{with_cd}/disks/{drive['target']}/grow", json={"size_gib": 9}
    )
    into_disk = client.put(f"/api/v1/guests/{WEB_1}/media/vda", json=iso)
    qcow2_cd = client.put(
        f"/api/v1/guests/{with_cd}/media/{drive['target']}",
        json={"cdrom": {"pool": "images", "volume": "golden.qcow2"}},
    )

    assert grow.status_code == 409 and grow.json()["field"] == "target", grow.text
    assert into_disk.status_code == 409 and into_disk.json()["field"] == "target", into_disk.text
    assert qcow2_cd.status_code == 422 and qcow2_cd.json()["field"] == "cdrom.volume"


@pytest.mark.parametrize(
    ("nic", "status", "field"),
    [
        ({"network": "default", "mac": "52:54:00:a1:00:01"}, 409, "mac"),  # web-1's
        ({"network": "default", "mac": "52:54:00:A1:00:01"}, 409, "mac"),  # in capitals
        ({"network": "default", "mac": "01:00:5e:00:00:01"}, 422, "mac"),  # multicast
        ({"network": "default", "mac": "52-54-00-00-00-01"}, 422, "mac"),
        ({"network": "nowhere"}, 422, "network"),
        ({"network": "default", "bridge": "br0"}, 422, "network"),
        ({}, 422, "network"),
        ({"bridge": "br0; reboot"}, 422, "bridge"),
        ({"network": "default", "model": "ne2k"}, 422, "model"),
    ],
)
def test_a_nic_that_cannot_be_attached_is_refused_naming_the_field(
    client: TestClient, alpha, nic: dict, status: int, field: str
) -> None:
    before = hardware(client, WEB_2)
    refused = client.post(f"/api/v1/guests/{WEB_2}/nics", json=nic)

    assert refused.status_code == status and refused.json()["field"] == field, refused.text
    assert hardware(client, WEB_2) == before


def test_a_nic_or_disk_the_guest_does_not_have_is_not_found(client: TestClient, alpha) -> None:
    nic = client.delete(f"/api/v1/guests/{WEB_1}/nics/52:54:00:00:00:99")
    disk = client.delete(f"/api/v1/guests/{WEB_1}/disks/vdq")

    assert nic.status_code == 404 and nic.json()["field"] == "mac", nic.text
    assert disk.status_code == 404 and disk.json()["field"] == "target", disk.text


@pytest.mark.parametrize("order", [["hd", "hd"], ["floppy"], []])
def test_a_boot_order_of_unknown_or_repeated_devices_is_refused(
    client: TestClient, alpha, order: list[str]
) -> None:
    refused = client.patch(f"/api/v1/guests/{WEB_2}/settings", json={"boot_order": order})

    assert refused.status_code == 422 and refused.json()["field"] == "boot_order", refused.text


def test_a_shut_off_guests_boot_order_is_saved_and_its_firmware_shown(
    client: TestClient, with_cd: str
) -> None:
    saved = client.patch(
        f"/api/v1/guests/{with_cd}/settings", json={"boot_order": ["cdrom", "hd", "network"]}
    )
    now = client.get(f"/api/v1/guests/{with_cd}/settings").json()

    assert saved.status_code == 200, saved.text
    assert (saved.json()["live"], saved.json()["next_start"]) == ([], [])
    assert (now["boot_order"], now["firmware"]) == (["cdrom", "hd", "network"], "bios")


def test_a_viewer_sees_the_hardware_but_may_not_change_it(
    make_client: Callable[..., TestClient], alpha
) -> None:
    viewer = make_client(role="viewer")

    assert viewer.get(f"/api/v1/guests/{WEB_1}/hardware").status_code == 200
    denied = viewer.post(f"/api/v1/guests/{WEB_1}/nics", json={"network": "default"})
    assert denied.status_code == 403
