"""The HTMX pages: whole pages, fragments for htmx, and the add-host form."""

import json

from fastapi.testclient import TestClient

from tests.conftest import node_uri
from tests.htmx import HTMX, htmx_to
from tests.markup import parse


def host_cards(html: str) -> list[str]:
    """The hosts of the overview's cards, in order."""
    return [card.get("data-host") for card in parse(html).find_all("div", data_host=True)]


def guest_names(html: str) -> list[str]:
    """The guests of the guest table, top to bottom."""
    return [row.find("a").text for row in parse(html).find_all("tr", data_uuid=True)]


def test_overview_shows_a_card_per_host_with_guest_totals(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    page = client.get("/")

    assert page.status_code == 200
    assert "<html" in page.text
    assert host_cards(page.text) == ["alpha", "beta"]
    assert "2 running / 3" in page.text and "1 running / 4" in page.text
    assert "/static/vendor/htmx-2.0.11.min.js" in page.text


def test_overview_refresh_returns_only_the_cards(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    fragment = client.get("/", headers=htmx_to("host-cards"))

    assert "<html" not in fragment.text
    assert fragment.text.lstrip().startswith('<div id="host-cards"')
    assert "alpha" in fragment.text


def test_host_page_searches_and_filters_guests(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    alpha, _ = two_hosts
    full = client.get(f"/hosts/{alpha['id']}")
    search = client.get(
        f"/hosts/{alpha['id']}", params={"q": "web"}, headers=htmx_to("guest-table")
    )
    stopped = client.get(
        f"/hosts/{alpha['id']}",
        params={"state": "shutoff"},
        headers=htmx_to("guest-table"),
    )

    assert "16 GiB" in full.text and "NUMA topology (virNodeGetInfo)" in full.text
    assert guest_names(full.text) == ["db-1", "web-1", "web-2"]
    assert "<html" not in search.text
    assert guest_names(search.text) == ["web-1", "web-2"]
    assert guest_names(stopped.text) == ["db-1"]
    assert "badge-shutoff" in stopped.text


def test_guest_page_shows_the_domain_xml_escaped(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    page = client.get("/guests/a1000000-0000-4000-8000-000000000001?section=xml")

    assert page.status_code == 200
    assert "&lt;domain" in page.text and "<domain" not in page.text
    assert "/var/lib/libvirt/images/web-1.qcow2" in page.text
    assert "52:54:00:a1:00:01" in page.text


def test_add_host_form_shows_the_field_error_and_stores_nothing(client: TestClient) -> None:
    response = client.post(
        "/hosts", data={"name": "evil", "uri": "qemu+ssh://x/system?command=sh"}, headers=HTMX
    )

    assert response.status_code == 422
    assert 'data-field="uri"' in response.text
    assert "query parameter &#39;command&#39; is not allowed" in response.text
    assert 'value="evil"' in response.text
    assert client.get("/api/v1/hosts").json() == []


def test_add_host_form_redirects_to_the_new_host(client: TestClient) -> None:
    htmx = client.post(
        "/hosts", data={"name": "alpha", "uri": node_uri("node-alpha.xml")}, headers=HTMX
    )
    plain = client.post(
        "/hosts", data={"name": "beta", "uri": node_uri("node-beta.xml")}, follow_redirects=False
    )

    hosts = {h["name"]: h["id"] for h in client.get("/api/v1/hosts").json()}
    assert htmx.status_code == 204
    assert htmx.headers["HX-Redirect"] == f"/hosts/{hosts['alpha']}"
    assert plain.status_code == 303
    assert plain.headers["location"] == f"/hosts/{hosts['beta']}"


def test_removing_a_host_in_the_page_returns_to_the_overview(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    alpha, _ = two_hosts
    response = client.post(f"/hosts/{alpha['id']}/delete", headers=HTMX)

    assert response.headers["HX-Redirect"] == "/"
    assert host_cards(client.get("/").text) == ["beta"]


def test_unknown_pages_say_what_is_missing(client: TestClient) -> None:
    page = client.get("/hosts/999")
    toast = client.post("/hosts/999/delete", headers=HTMX)

    assert page.status_code == 404 and "host 999 not found" in page.text
    assert toast.status_code == 404 and toast.headers["HX-Retarget"] == "#toasts"


def test_guest_rows_show_the_buttons_their_state_allows(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    alpha, _ = two_hosts
    page = client.get(f"/hosts/{alpha['id']}")

    def buttons(uuid: str) -> list[str]:
        row = parse(page.text).find("tr", data_uuid=uuid)
        return [button.get("data-action") for button in row.find_all(data_action=True)]

    assert buttons("a1000000-0000-4000-8000-000000000003") == ["start", "autostart_on"]
    assert buttons("a1000000-0000-4000-8000-000000000001") == [
        "shutdown", "reboot", "suspend", "force_off", "autostart_on"
    ]  # fmt: skip


def test_a_button_replaces_its_row_and_the_action_shows_in_the_activity_list(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    uuid = "a1000000-0000-4000-8000-000000000003"
    response = client.post(f"/guests/{uuid}/actions/start", headers=htmx_to(f"guest-row-{uuid}"))
    page = client.get(f"/guests/{uuid}?section=activity")

    assert response.status_code == 200
    assert response.text.lstrip().startswith(f'<tr id="guest-row-{uuid}"')
    assert "badge-running" in response.text
    assert json.loads(response.headers["HX-Trigger"]) == {"toast": {"message": "db-1: start done"}}
    activity = parse(page.text).find("section", id="guest-activity")
    done = activity.find("tr", data_action="guest.start")
    assert done.has("span", class_="badge-ok")


def test_a_refused_button_shows_an_error_toast(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    uuid = "a1000000-0000-4000-8000-000000000003"
    response = client.post(f"/guests/{uuid}/actions/resume", headers=htmx_to("guest-status"))

    assert response.status_code == 409
    assert response.headers["HX-Retarget"] == "#toasts"
    assert "cannot resume db-1: it is shut off" in response.text
