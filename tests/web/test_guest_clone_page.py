"""The guest page's Clone section, on test:///default: a name and the host's directory pools, a
refusal next to its field, the job's page once submitted, and only for operators."""

from collections.abc import Callable

from fastapi.testclient import TestClient

from tests import clone_guests
from tests.clone_guests import Source
from tests.htmx import HTMX
from tests.markup import parse
from tests.polling import finished_job
from tests.storage import DEFAULT_POOL

clone_source = clone_guests.clone_source  # the fixture


def test_the_section_offers_a_name_and_the_hosts_directory_pools(
    client: TestClient, clone_source: Source
) -> None:
    guest = clone_source.guest

    section = parse(client.get(f"/guests/{guest['uuid']}/clone", headers=HTMX).text)

    assert section.find("input", name="name").get("value") == f"{guest['name']}-clone"
    pools = [o.get("value") for o in section.find("select", name="pool").find_all("option")]
    assert DEFAULT_POOL in pools


def test_a_taken_name_is_refused_next_to_the_field(
    client: TestClient, clone_source: Source
) -> None:
    guest = clone_source.guest
    form = {"name": guest["name"], "pool": DEFAULT_POOL}

    refused = client.post(f"/guests/{guest['uuid']}/clone", data=form, headers=HTMX)

    assert refused.status_code == 409
    error = parse(refused.text).find(id="clone-name-error").text
    assert error == f"name: a guest called '{guest['name']}' already exists on this host"
    assert parse(refused.text).find("input", name="name").get("value") == guest["name"]


def test_a_clone_goes_to_its_jobs_page(client: TestClient, clone_source: Source) -> None:
    form = {"name": f"{clone_source.prefix}-copy", "pool": DEFAULT_POOL}

    started = client.post(f"/guests/{clone_source.guest['uuid']}/clone", data=form, headers=HTMX)

    assert started.status_code == 204, started.text
    url = started.headers["HX-Redirect"]
    assert url.startswith("/jobs/")
    finished_job(client, int(url.rsplit("/", 1)[1]))
    assert parse(client.get(url).text).find("h1").text.endswith(": guest.clone")


def test_a_viewer_gets_no_clone_section(
    make_client: Callable[..., TestClient], clone_source: Source
) -> None:
    uuid = clone_source.guest["uuid"]
    viewer = make_client(role="viewer")

    assert viewer.get(f"/guests/{uuid}/clone", headers=HTMX).status_code == 403
    assert not parse(viewer.get(f"/guests/{uuid}?section=hardware").text).has(id="guest-clone")
    assert parse(make_client().get(f"/guests/{uuid}?section=hardware").text).has(id="guest-clone")
