"""The new-guest wizard: the host's choices, refusals next to their field, and what follows."""

import re
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.models import Job
from tests.conftest import add_host, node_uri
from tests.htmx import HTMX
from tests.markup import field_error, options, parse


@pytest.fixture
def storage_host(client: TestClient) -> dict:
    """A test-driver host with the pool "images" (an ISO, a qcow2 image) and the network "lan"."""
    return add_host(client, "store", node_uri("node-storage.xml"))


def form(host: dict, **fields) -> dict:
    values = {"host_id": str(host["id"]), "name": "web-3", "vcpus": "2", "memory_mib": "256",
              "disk": "none", "network": "lan", "firmware": "bios"}  # fmt: skip
    return {**values, **fields}


def test_operators_find_the_wizard_from_the_host_page_and_viewers_do_not(
    make_client, storage_host: dict
) -> None:
    operator, viewer = make_client(role="operator"), make_client(role="viewer")
    link = f'href="/guests/new?host_id={storage_host["id"]}"'

    assert link in operator.get(f"/hosts/{storage_host['id']}").text
    assert 'href="/guests/new"' in operator.get("/").text
    assert link not in viewer.get(f"/hosts/{storage_host['id']}").text
    assert viewer.get("/guests/new").status_code == 403


def test_the_wizard_offers_the_chosen_hosts_pools_images_isos_and_networks(
    client: TestClient, storage_host: dict
) -> None:
    page = client.get("/guests/new", params={"host_id": storage_host["id"]})

    assert page.status_code == 200
    chosen = parse(page.text).find("select", name="host_id").find("option", selected=True)
    assert chosen.get("value") == str(storage_host["id"])
    assert options(page.text, "disk_pool") == ["images"]
    pool = parse(page.text).find("select", name="disk_pool").find("option").text
    assert re.fullmatch(r"images \(9\d\.\d GiB free\)", pool)  # 100 GiB less the images
    assert options(page.text, "disk_volume") == ["images/golden.qcow2"]
    assert options(page.text, "cdrom") == ["", "images/debian-12.iso"]
    assert options(page.text, "network") == ["", "lan"]
    assert "UEFI (not offered by this host)" in page.text


def test_choosing_another_host_fetches_its_choices(
    client: TestClient, storage_host: dict, two_hosts: tuple[dict, dict]
) -> None:
    alpha, _ = two_hosts

    nothing = client.get("/guests/new/choices", headers=HTMX)
    bare = client.get("/guests/new/choices", params={"host_id": alpha["id"]}, headers=HTMX)
    stored = client.get("/guests/new/choices", params={"host_id": storage_host["id"]}, headers=HTMX)

    assert nothing.text.lstrip().startswith('<div id="guest-choices"')
    assert "Choose a host" in nothing.text
    assert "no active directory pool" in bare.text and "debian-12.iso" not in bare.text
    assert "debian-12.iso" in stored.text and "<html" not in stored.text


def test_a_host_that_cannot_be_read_says_so_in_place_of_its_choices(
    client: TestClient, silent_listener: int
) -> None:
    uri = f"test+tcp://127.0.0.1:{silent_listener}/default"
    host = client.post("/api/v1/hosts", json={"name": "mute", "uri": uri}).json()

    fragment = client.get("/guests/new/choices", params={"host_id": host["id"]}, headers=HTMX)

    assert "Cannot read the host's storage and networks" in fragment.text
    assert "not connected" in fragment.text


def test_a_refused_field_shows_its_reason_next_to_it_with_every_value_kept(
    client: TestClient, storage_host: dict
) -> None:
    typed = form(storage_host, name="-rf", disk="new", disk_pool="images", disk_size_gib="3",
                 cdrom="images/debian-12.iso")  # fmt: skip

    response = client.post("/guests/new", data=typed, headers=HTMX)

    assert response.status_code == 422
    assert field_error(response.text, "name").startswith("1-64 letters")
    assert 'value="-rf"' in response.text and 'aria-invalid="true"' in response.text
    assert 'name="disk_size_gib" type="number" min="1" value="3"' in response.text
    assert '<option value="images/debian-12.iso" selected>' in response.text
    assert '<option value="lan" selected>' in response.text
    assert client.get("/api/v1/guests", params={"host_id": storage_host["id"]}).json()["total"] == 0


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"vcpus": "two"}, "vcpus", "a whole number"),
        ({"vcpus": "5"}, "vcpus", "the host has 4 CPUs"),
        ({"memory_mib": "9000"}, "memory_mib", "to 8192 MiB"),
        ({"disk": "new", "disk_pool": "images", "disk_size_gib": "500"}, "disk.size_gib",
         "does not fit"),
        ({"disk": "existing", "disk_volume": "images/gone.qcow2"}, "disk.volume", "no volume"),
        ({"disk": "existing", "disk_volume": "images/golden.qcow2"}, "disk.format",
         "is a qcow2 image; give format qcow2"),
        ({"disk": "existing", "disk_volume": "images/golden.qcow2", "disk_format": "vmdk"},
         "disk.format", "raw or qcow2"),
        ({"firmware": "uefi"}, "firmware", "no UEFI"),
        ({"host_id": ""}, "host_id", "choose"),
    ],
)  # fmt: skip
def test_each_refused_field_is_named_in_the_form(
    client: TestClient, storage_host: dict, fields: dict, field: str, reason: str
) -> None:
    response = client.post("/guests/new", data=form(storage_host, **fields), headers=HTMX)

    assert response.status_code == 422
    assert reason in field_error(response.text, field)


def test_every_refused_field_is_named_at_once_not_one_per_submit(
    client: TestClient, storage_host: dict
) -> None:
    typed = form(storage_host, name="-rf", vcpus="5", memory_mib="9000", firmware="uefi")

    page = client.post("/guests/new", data=typed, headers=HTMX)
    api = client.post("/api/v1/guests", json={
        "host_id": storage_host["id"], "name": "-rf", "vcpus": 5, "memory_mib": 9000,
    })  # fmt: skip

    assert page.status_code == 422
    assert field_error(page.text, "name").startswith("1-64 letters")
    assert "the host has 4 CPUs" in field_error(page.text, "vcpus")
    assert "to 8192 MiB" in field_error(page.text, "memory_mib")
    assert api.status_code == 422
    errors = api.json()["errors"]
    assert set(errors) == {"name", "vcpus", "memory_mib"}
    assert errors["memory_mib"].startswith("memory_mib: from 64 MiB to 8192 MiB")
    assert client.get("/api/v1/guests", params={"host_id": storage_host["id"]}).json()["total"] == 0


def test_a_guest_without_a_new_volume_opens_its_page_at_once(
    client: TestClient, storage_host: dict
) -> None:
    typed = form(storage_host, name="web-3", disk="existing", disk_volume="images/golden.qcow2",
                 disk_format="qcow2", start="on")  # fmt: skip

    response = client.post("/guests/new", data=typed, headers=HTMX)

    assert response.status_code == 204
    page = client.get(response.headers["HX-Redirect"])
    xml = client.get(response.headers["HX-Redirect"], params={"section": "xml"})
    assert "<h1>web-3</h1>" in page.text
    assert "/var/lib/virtdeck-test/images/golden.qcow2" in xml.text
    assert "badge-running" in page.text


def test_a_new_volume_shows_the_jobs_progress_which_then_opens_the_guest(
    client: TestClient, storage_host: dict
) -> None:
    typed = form(storage_host, name="db-3", disk="new", disk_pool="images", disk_size_gib="4")

    response = client.post("/guests/new", data=typed, headers=HTMX)

    assert response.status_code == 202
    job = parse(response.text).find("div", class_="job")
    job_id = job.get("id").removeprefix("job-")
    assert 'hx-get="/jobs/' in response.text and 'value="db-3"' in response.text
    # Create is off while the job runs; the job is asked for once more as soon as it is shown
    # (a short one ends before the page hears of it), and stays in the wizard.
    assert job.get("data-status") == "queued"
    assert parse(response.text).find("button", id="create-submit").get("disabled") is not None
    assert job.get("hx-trigger").startswith("load, sse:job-")
    assert job.get("hx-vals") == '{"wizard": "1"}'
    deadline = time.monotonic() + 15
    while (poll := client.get(f"/jobs/{job_id}", headers=HTMX)).status_code == 200:
        assert time.monotonic() < deadline, poll.text
        time.sleep(0.05)
    guest = client.get("/api/v1/guests", params={"q": "db-3"}).json()["items"][0]
    assert poll.headers["HX-Redirect"] == f"/guests/{guest['uuid']}"
    assert guest["disks"][0]["source"] == "/var/lib/virtdeck-test/images/db-3.qcow2"
    page = client.get(f"/jobs/{job_id}")
    assert "badge-succeeded" in page.text and f'href="/guests/{guest["uuid"]}"' in page.text


def test_a_failed_create_gives_the_wizard_its_create_button_back(
    client: TestClient, sessions: sessionmaker[Session]
) -> None:
    with transaction(sessions) as session:
        job = Job(kind="guest.create", status="failed", progress=0.3, error="no space left")
        session.add(job)
        session.flush()
        job_id = job.id

    in_wizard = client.get(f"/jobs/{job_id}", params={"wizard": "1"}, headers=HTMX)
    elsewhere = client.get(f"/jobs/{job_id}", headers=HTMX)

    button = parse(in_wizard.text).find("button", id="create-submit")
    assert button.get("hx-swap-oob") == "true" and button.get("disabled") is None
    assert button.text == "Create guest"
    assert "no space left" in in_wizard.text
    assert "create-submit" not in elsewhere.text  # the job's own page has no such button


TOO_LARGE = "99999999999999999999"


def test_a_host_id_too_large_for_the_database_is_refused_naming_the_field(
    client: TestClient, storage_host: dict
) -> None:
    page = client.get("/guests/new", params={"host_id": TOO_LARGE})
    choices = client.get("/guests/new/choices", params={"host_id": TOO_LARGE}, headers=HTMX)
    posted = client.post("/guests/new", data=form(storage_host, host_id=TOO_LARGE), headers=HTMX)
    audited = client.get("/api/v1/audit", params={"action": "guest.create"}).json()["items"][0]

    assert (page.status_code, choices.status_code) == (200, 200)
    assert "host_id: choose a host from the list" in page.text
    assert "host_id: choose a host from the list" in choices.text
    assert posted.status_code == 422
    assert field_error(posted.text, "host_id") == "choose a host from the list"
    assert audited["request_id"] == posted.headers["X-Request-ID"]
    assert audited["target"] is None
