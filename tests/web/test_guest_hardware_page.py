"""The Edit section's hardware part: the disks, drives and NICs the host has, a refusal next to
its field, and the boot order and firmware in the settings part."""

import pytest
from fastapi.testclient import TestClient

from tests.conftest import add_host, node_uri
from tests.htmx import HTMX
from tests.markup import parse

WEB_1 = "a1000000-0000-4000-8000-000000000001"  # running on alpha
DB_1 = "a1000000-0000-4000-8000-000000000003"  # shut off on alpha


@pytest.fixture
def alpha(client: TestClient) -> dict:
    return add_host(client, "alpha", node_uri("node-alpha.xml"))


def test_the_part_lists_the_disks_and_nics_with_their_actions(client: TestClient, alpha) -> None:
    part = parse(client.get(f"/guests/{WEB_1}/hardware", headers=HTMX).text)

    disk = part.find("tr", data_target="vda")
    nic = part.find("tr", data_mac="52:54:00:a1:00:01")
    assert "/var/lib/libvirt/images/web-1.qcow2" in disk.text and "qcow2" in disk.text
    assert disk.find_all("input", name="size_gib")  # grow
    assert "default" in nic.text and nic.find("button").text == "Detach"
    assert "The guest runs" in part.text


def test_a_mac_in_use_is_refused_next_to_its_field_and_kept_in_the_form(
    client: TestClient, alpha
) -> None:
    form = {"network": "default", "mac": "52:54:00:a1:00:01", "model": "virtio"}
    refused = client.post(f"/guests/{DB_1}/nics", data=form, headers=HTMX)
    part = parse(refused.text)

    assert refused.status_code == 409
    assert part.find(id="nic-mac-error").text.startswith("mac: 52:54:00:a1:00:01 is already used")
    assert part.find("input", name="mac").get("value") == "52:54:00:a1:00:01"


def test_the_settings_part_shows_the_boot_order_and_the_firmware(client: TestClient, alpha) -> None:
    section = parse(client.get(f"/guests/{DB_1}/edit", headers=HTMX).text)

    first = section.find("select", id="edit-boot-0").find("option", selected=True)
    assert first.get("value") == "hd"
    assert "Firmware: BIOS" in section.text
    assert section.find(id="guest-hardware").get("hx-get") == f"/guests/{DB_1}/hardware"


def test_a_boot_order_saved_from_the_form_is_what_the_host_has(client: TestClient, alpha) -> None:
    form = {
        "vcpus": "1", "vcpus_max": "1", "memory_mib": "1024", "memory_max_mib": "1024",
        "boot_order": ["network", "hd", ""],
    }  # fmt: skip
    saved = client.post(f"/guests/{DB_1}/edit", data=form, headers=HTMX)

    assert saved.status_code == 200, saved.text
    assert client.get(f"/api/v1/guests/{DB_1}/settings").json()["boot_order"] == ["network", "hd"]
