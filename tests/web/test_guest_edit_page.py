"""The guest page's Edit section: the settings as the host has them, what applies at next start,
a refusal next to its field, and only for operators."""

import json
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from tests.conftest import add_host, node_uri
from tests.htmx import HTMX, toast
from tests.markup import parse

WEB_1 = "a1000000-0000-4000-8000-000000000001"  # running on alpha: 2 vCPUs, 1536 of 2048 MiB
DB_1 = "a1000000-0000-4000-8000-000000000003"  # shut off on alpha
FORM = {
    "vcpus": "2", "vcpus_max": "2", "memory_mib": "1536", "memory_max_mib": "2048",
    "description": "",
}  # fmt: skip


@pytest.fixture
def alpha(client: TestClient) -> dict:
    return add_host(client, "alpha", node_uri("node-alpha.xml"))


def field(html: str, name: str) -> str | None:
    return parse(html).find("input", name=name).get("value")


def test_the_section_shows_the_settings_the_host_has(client: TestClient, alpha) -> None:
    section = client.get(f"/guests/{WEB_1}/edit", headers=HTMX)

    assert section.status_code == 200
    assert [field(section.text, n) for n in ("vcpus", "vcpus_max", "memory_mib")] == [
        "2", "2", "1536",
    ]  # fmt: skip
    assert "vCPUs up to 2" in parse(section.text).text


def test_a_new_maximum_on_a_running_guest_is_saved_for_its_next_start(
    client: TestClient, alpha
) -> None:
    saved = client.post(f"/guests/{WEB_1}/edit", data={**FORM, "vcpus_max": "4"}, headers=HTMX)

    assert saved.status_code == 200, saved.text
    assert toast(saved) == "web-1: saved; maximum vCPUs at next start"
    assert "Applies at next start: maximum vCPUs." in parse(saved.text).text
    assert field(saved.text, "vcpus_max") == "4"


def test_more_vcpus_than_the_maximum_is_refused_next_to_the_field(
    client: TestClient, alpha
) -> None:
    refused = client.post(f"/guests/{WEB_1}/edit", data={**FORM, "vcpus": "3"}, headers=HTMX)
    page = parse(refused.text)

    assert refused.status_code == 422
    assert page.find(id="edit-vcpus-error").text == "vcpus: must be 1 to the maximum, 2"
    assert field(refused.text, "vcpus") == "3"  # what was typed stays
    assert client.get(f"/api/v1/guests/{WEB_1}/settings").json()["vcpus"] == 2


def test_a_viewer_gets_no_edit_section(make_client: Callable[..., TestClient], alpha) -> None:
    viewer = make_client(role="viewer")

    assert viewer.get(f"/guests/{WEB_1}/edit", headers=HTMX).status_code == 403
    assert not parse(viewer.get(f"/guests/{WEB_1}?section=hardware").text).has(id="guest-edit")


def test_a_shut_off_guest_is_renamed_from_its_page_and_a_taken_name_is_refused(
    client: TestClient, alpha
) -> None:
    section = parse(client.get(f"/guests/{DB_1}/edit", headers=HTMX).text)
    taken = client.post(f"/guests/{DB_1}/rename", data={"name": "web-1"}, headers=HTMX)
    renamed = client.post(f"/guests/{DB_1}/rename", data={"name": "db-primary"}, headers=HTMX)

    assert section.find("input", name="name").get("value") == "db-1"
    assert taken.status_code == 409
    error = parse(taken.text).find(id="edit-name-error").text
    assert error == "name: a guest called 'web-1' is already on this host"
    assert renamed.status_code == 204 and toast(renamed) == "renamed to db-primary"
    # Back to the section the rename form is in.
    assert json.loads(renamed.headers["HX-Location"])["path"] == f"/guests/{DB_1}?section=hardware"
    assert client.get(f"/api/v1/guests/{DB_1}").json()["name"] == "db-primary"


def test_a_memory_maximum_past_any_host_is_refused_next_to_its_field(
    client: TestClient, alpha
) -> None:
    huge = {**FORM, "memory_max_mib": str(2**40)}  # the form takes any integer
    refused = client.post(f"/guests/{WEB_1}/edit", data=huge, headers=HTMX)

    assert refused.status_code == 422
    error = parse(refused.text).find(id="edit-memory_max_mib-error").text
    assert error == "memory_max_mib: must be 64 to 16777216 MiB"
