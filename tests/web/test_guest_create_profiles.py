"""The new-guest wizard's disk from a base image with cloud-init, and its profiles: the form saved
as a profile, a profile filling the form, refusals next to their field, no password echoed."""

import pytest
from fastapi.testclient import TestClient

from tests.conftest import add_host, node_uri
from tests.htmx import HTMX
from tests.markup import field_error, options, parse, selected
from tests.polling import finished_job

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHp0ZXN0a2V5Zm9ydmlydGRlY2tjbG91ZGluaXQxMjM0 ops@desk"
PASSWORD = "never shown again"


@pytest.fixture
def host(client: TestClient) -> dict:
    """A host with the pool images (golden.qcow2, layered.qcow2, plain.img) and the network lan."""
    return add_host(client, "images", node_uri("node-images.xml"))


def form(host: dict, **fields) -> dict:
    """The wizard's fields for a 10 GiB overlay on golden.qcow2 with the cloud-init user ops."""
    values = {"host_id": str(host["id"]), "name": "web-5", "vcpus": "2", "memory_mib": "256",
              "disk": "image", "disk_pool": "images", "disk_size_gib": "10",
              "image_volume": "images/golden.qcow2", "image_format": "qcow2",
              "image_mode": "overlay", "network": "lan", "firmware": "bios",
              "cloud_init_user": "ops", "cloud_init_password": PASSWORD,
              "ssh_keys": KEY}  # fmt: skip
    return {**values, **fields}


def test_the_wizard_offers_base_images_and_cloud_init(client: TestClient, host: dict) -> None:
    page = client.get("/guests/new", params={"host_id": host["id"]})

    assert 'value="image"' in page.text
    assert options(page.text, "image_volume") == [
        "images/golden.qcow2", "images/layered.qcow2", "images/plain.img",
    ]  # fmt: skip
    assert options(page.text, "image_mode") == ["copy", "overlay"]
    for name in ("cloud_init_user", "cloud_init_password", "hostname"):
        assert parse(page.text).find("input", name=name) is not None
    assert parse(page.text).find("textarea", name="ssh_keys") is not None


def test_a_bad_base_image_is_refused_next_to_its_field_without_echoing_the_password(
    client: TestClient, host: dict
) -> None:
    typed = form(host, image_volume="images/layered.qcow2")

    response = client.post("/guests/new", data=typed, headers=HTMX)

    assert response.status_code == 422
    assert "backing file" in field_error(response.text, "image.volume")
    assert selected(response.text, "image_volume") == "images/layered.qcow2"
    assert PASSWORD not in response.text
    assert KEY in response.text


def test_a_guest_from_an_image_is_made_by_a_job_shown_in_the_form(
    client: TestClient, host: dict
) -> None:
    response = client.post("/guests/new", data=form(host, cloud_init_user=""), headers=HTMX)

    assert response.status_code == 202, response.text
    job_id = parse(response.text).find("div", class_="job").get("id").removeprefix("job-")
    assert finished_job(client, int(job_id))["status"] == "succeeded"
    [guest] = client.get("/api/v1/guests", params={"q": "web-5"}).json()["items"]
    assert guest["disks"][0]["source"] == "/var/lib/virtdeck-test/images/web-5.qcow2"
    assert "/var/lib/virtdeck-test/images/golden.qcow2" in client.get(
        f"/api/v1/guests/{guest['uuid']}").json()["domain_xml"]  # fmt: skip


def test_the_form_saved_as_a_profile_fills_the_next_form(client: TestClient, host: dict) -> None:
    saved = client.post(
        "/guests/new/profile", data=form(host, profile_name="small-debian"), headers=HTMX
    )

    assert saved.status_code == 200, saved.text
    assert "Saved profile small-debian." in saved.text
    [profile] = client.get("/api/v1/profiles").json()
    assert (profile["name"], profile["vcpus"], profile["host_id"]) == (
        "small-debian",
        2,
        host["id"],
    )
    assert profile["image"] == {"pool": "images", "volume": "golden.qcow2", "format": "qcow2",
                                "mode": "overlay"}  # fmt: skip
    assert profile["cloud_init"] == {"user": "ops", "ssh_keys": [KEY]}
    assert PASSWORD not in saved.text
    assert selected(saved.text, "profile_id") == str(profile["id"])

    filled = client.get("/guests/new/profile", params={"profile_id": profile["id"]}, headers=HTMX)

    assert filled.text.lstrip().startswith('<form id="guest-form"')
    assert selected(filled.text, "host_id") == str(host["id"])
    assert selected(filled.text, "image_volume") == "images/golden.qcow2"
    assert selected(filled.text, "image_mode") == "overlay"
    assert selected(filled.text, "network") == "lan"
    html = parse(filled.text)
    assert html.find("input", name="vcpus").get("value") == "2"
    assert html.find("input", name="cloud_init_user").get("value") == "ops"
    assert html.find("textarea", name="ssh_keys").text == KEY
    assert html.find("input", name="disk", value="image").get("checked") is not None


def test_a_profile_name_in_use_is_refused_next_to_the_profile_name(
    client: TestClient, host: dict
) -> None:
    client.post("/guests/new/profile", data=form(host, profile_name="p1"), headers=HTMX)

    again = client.post("/guests/new/profile", data=form(host, profile_name="p1"), headers=HTMX)
    no_disk = client.post(
        "/guests/new/profile", data=form(host, profile_name="p2", disk="none"), headers=HTMX
    )

    assert again.status_code == 409
    assert "already exists" in field_error(again.text, "profile_name")
    assert field_error(again.text, "name") is None
    assert no_disk.status_code == 422 and field_error(no_disk.text, "disk")
    assert [p["name"] for p in client.get("/api/v1/profiles").json()] == ["p1"]
