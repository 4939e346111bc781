"""The host page's Storage pools and networks section, on a test-driver host of its own: every
viewer sees the pools (state, space, autostart, directory), their volumes with the guests using
them, and the networks; admins start and stop them and make a directory pool, with each wrong
field named in the form."""

from collections.abc import Callable

from fastapi.testclient import TestClient

from app.units import human_bytes
from tests.conftest import add_host, node_uri, post_guest
from tests.htmx import HTMX
from tests.markup import parse
from tests.polling import finished_job


def _rows(page, table: int) -> list[list[str]]:
    tables = page.find_all("table")
    rows = tables[table].find("tbody").find_all("tr")
    return [[cell.text for cell in row.find_all("td")] for row in rows]


def test_viewers_see_pools_and_networks_without_buttons(
    client: TestClient, make_client: Callable[..., TestClient]
) -> None:
    host = add_host(client, "storage", node_uri("node-storage.xml"))
    viewer = make_client(role="viewer")

    page = parse(viewer.get(f"/hosts/{host['id']}").text)
    section = parse(viewer.get(f"/hosts/{host['id']}/storage", headers=HTMX).text)

    assert page.find("details", id="storage").get("hx-get") == f"/hosts/{host['id']}/storage"
    (pool,) = viewer.get(f"/api/v1/hosts/{host['id']}/pools").json()
    sizes = [human_bytes(pool[k]) for k in ("allocation", "available", "capacity")]
    assert _rows(section, 0) == [
        ["images", "active", "dir", *sizes, "off", "/var/lib/virtdeck-test/images"]
    ]
    assert _rows(section, 1) == [["lan", "active", "nat", "virbr10", "off"]]
    assert section.find_all("button") == [] and section.find_all("form") == []


def test_a_pools_volumes_show_their_sizes_and_the_guests_using_them(client: TestClient) -> None:
    host = add_host(client, "storage", node_uri("node-storage.xml"))
    made = post_guest(client, host, "web-vol", disk={"pool": "images", "size_gib": 1})
    assert finished_job(client, made.json()["id"])["status"] == "succeeded"
    client.post(f"/api/v1/hosts/{host['id']}/refresh", params={"wait": 15})

    volumes = parse(client.get(f"/hosts/{host['id']}/pools/images/volumes", headers=HTMX).text)

    rows = {row[0]: row[1:] for row in _rows(volumes, 0)}
    assert rows["debian-12.iso"] == ["iso", "630 MiB", "630 MiB", "—"]
    assert rows["golden.qcow2"][:2] == ["qcow2", "8 GiB"]
    assert [users for name, (*_, users) in rows.items() if "web-vol" in name] == ["web-vol"]


def test_an_admin_stops_and_starts_a_pool_with_a_toast(client: TestClient) -> None:
    host = add_host(client, "storage", node_uri("node-storage.xml"))
    url = f"/hosts/{host['id']}/pools/images"

    stopped = client.post(f"{url}/stop", headers=HTMX)
    section = parse(stopped.text)

    assert "Storage pool images stopped" in stopped.headers["HX-Trigger"]
    assert _rows(section, 0)[0][:3] == ["images", "inactive", "dir"]
    assert section.find("button", **{"hx-post": f"{url}/start"}) is not None
    assert "images" in client.get(f"/hosts/{host['id']}/storage", headers=HTMX).text
    started = client.post(f"{url}/start", headers=HTMX)
    assert _rows(parse(started.text), 0)[0][1] == "active"


def test_the_pool_form_names_each_wrong_field_and_keeps_what_was_typed(
    client: TestClient,
) -> None:
    host = add_host(client, "storage", node_uri("node-storage.xml"))

    refused = parse(
        client.post(
            f"/hosts/{host['id']}/pools", data={"name": "-x", "path": "/proc/x"}, headers=HTMX
        ).text
    )
    made = client.post(
        f"/hosts/{host['id']}/pools",
        data={"name": "more", "path": "/var/lib/virtdeck-test/more"},
        headers=HTMX,
    )

    errors = {e.get("data-field"): e.text for e in refused.find_all("span", class_="field-error")}
    assert set(errors) == {"name", "path"} and "system directory" in errors["path"]
    assert refused.find("input", name="path").get("value") == "/proc/x"
    assert "Storage pool more created and started" in made.headers["HX-Trigger"]
    assert [row[:3] for row in _rows(parse(made.text), 0)] == [
        ["images", "active", "dir"], ["more", "active", "dir"],
    ]  # fmt: skip


def test_stopping_a_network_a_running_guest_uses_says_which_guest(client: TestClient) -> None:
    host = add_host(client, "storage", node_uri("node-storage.xml"))
    made = post_guest(client, host, "web-lan", network="lan", start=True)
    assert made.status_code == 201, made.text
    client.post(f"/api/v1/hosts/{host['id']}/refresh", params={"wait": 15})

    refused = parse(client.post(f"/hosts/{host['id']}/networks/lan/stop", headers=HTMX).text)

    assert "network lan is in use by web-lan" in refused.find("p", role="alert").text
    assert _rows(refused, 1)[0][:2] == ["lan", "active"]
