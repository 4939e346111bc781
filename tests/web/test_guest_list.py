"""The Guests page: every guest of every host in one table, searched by name, filtered by host
and state, sorted by any column either way, a hundred a page, with each guest's uptime and IP
addresses; and the API's sort."""

import time
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db import transaction
from app.models import Guest
from app.models.base import utcnow
from tests.conftest import add_host, node_uri, post_guest
from tests.htmx import htmx_to
from tests.markup import parse

WEB_1 = "a1000000-0000-4000-8000-000000000001"  # on alpha
DB_1 = "a1000000-0000-4000-8000-000000000003"  # on alpha, shut off


def rows(html: str) -> list[tuple[str, str]]:
    """(guest, host) of each row, top to bottom."""
    found = []
    for row in parse(html).find_all("tr", data_uuid=True):
        guest, host = (cell.find("a").text for cell in row.find_all("td")[:2])
        found.append((guest, host))
    return found


def names(html: str) -> list[str]:
    """The guests of the table, top to bottom."""
    return [guest for guest, _ in rows(html)]


def test_every_guest_of_every_host_is_listed_by_name_with_its_host(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    page = client.get("/guests")

    assert page.status_code == 200
    assert rows(page.text) == [
        ("build-1", "beta"), ("build-2", "beta"), ("db-1", "alpha"), ("idle-3", "beta"),
        ("web-1", "alpha"), ("web-2", "alpha"), ("web-9", "beta"),
    ]  # fmt: skip
    assert "7 guests" in parse(page.text).find("div", class_="pager").text
    assert parse(page.text).find("nav").find("a", href="/guests").text == "Guests"
    db_1 = parse(page.text).find("tr", data_uuid=DB_1)
    assert db_1.has("span", class_="badge-shutoff")
    assert [b.get("data-action") for b in db_1.find_all(data_action=True)] == [
        "start", "autostart_on"
    ]  # fmt: skip


def test_search_host_and_state_filters_narrow_the_table_across_hosts(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    _, beta = two_hosts
    table = htmx_to("fleet-guests")

    web = client.get("/guests", params={"q": "WEB"}, headers=table)
    on_beta = client.get("/guests", params={"host": beta["id"]}, headers=table)
    shut_off = client.get("/guests", params={"state": "shutoff"}, headers=table)
    both = client.get("/guests", params={"q": "web", "host": beta["id"]}, headers=table)
    none = client.get("/guests", params={"q": "nothing-like-it"}, headers=table)

    assert web.text.lstrip().startswith('<div id="fleet-guests"')
    assert "<html" not in web.text
    assert names(web.text) == ["web-1", "web-2", "web-9"]
    assert names(on_beta.text) == ["build-1", "build-2", "idle-3", "web-9"]
    assert "db-1" in names(shut_off.text) and "web-1" not in names(shut_off.text)
    assert names(both.text) == ["web-9"]
    assert "No guests match." in none.text


def test_any_column_sorts_either_way_and_its_heading_says_so(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    by_vcpus = client.get("/guests", params={"sort": "-vcpus"})
    by_host = client.get("/guests", params={"sort": "host"})
    by_host_back = client.get("/guests", params={"sort": "-host"})
    by_memory = client.get("/guests", params={"sort": "memory", "q": "web"})
    by_name_back = client.get("/guests", params={"sort": "-name"})
    gone_by_host = client.get("/guests", params={"sort": "host", "state": "gone"})

    assert names(by_vcpus.text)[0] == "db-1"  # 4 vCPUs, the most
    # Ties go the same way, by name: one walk of the column's index.
    assert names(by_vcpus.text)[1:4] == ["web-2", "web-1", "idle-3"]  # 2 vCPUs each
    assert [host for _, host in rows(by_host.text)] == ["alpha"] * 3 + ["beta"] * 4
    assert rows(by_host_back.text)[:2] == [("web-9", "beta"), ("idle-3", "beta")]
    assert [host for _, host in rows(by_host_back.text)] == ["beta"] * 4 + ["alpha"] * 3
    assert names(by_host.text)[:3] == ["db-1", "web-1", "web-2"]  # by name within a host
    assert names(by_memory.text) == ["web-9", "web-1", "web-2"]  # 512 MiB, 1.5 GiB, 2 GiB
    assert names(by_name_back.text)[0] == "web-9"
    assert gone_by_host.status_code == 200 and "No guests match." in gone_by_host.text
    # The sorted column's heading says which way, and its link sorts it the other way,
    # keeping the filters.
    heading = parse(by_memory.text).find("th", aria_sort="ascending")
    assert heading.find("a").get("data-sort") == "memory"
    assert heading.find("a").get("href") == "?q=web&host=&state=&sort=-memory"
    other = parse(by_memory.text).find("a", data_sort="vcpus")
    assert other.get("href") == "?q=web&host=&state=&sort=vcpus"
    assert (
        parse(by_vcpus.text)
        .find("th", aria_sort="descending")
        .find("a")
        .get("href")
        .endswith("sort=vcpus")
    )


def test_a_sort_that_is_no_column_is_refused_naming_the_field(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    page = client.get("/guests", params={"sort": "domain_xml"})
    api = client.get("/api/v1/guests", params={"sort": "-evil"})

    assert page.status_code == 422
    assert "sort: must be one of name, host, state, vcpus, memory, cpu" in page.text
    assert api.status_code == 422
    assert "sort" in api.text and "name, host, state, vcpus, memory, cpu" in api.text


def test_a_host_that_is_no_row_id_is_refused_naming_the_field(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    for bad in ("99999999999999999999", "beta", "-1"):
        page = client.get("/guests", params={"host": bad})

        assert page.status_code == 422
        assert "host: choose a host from the list" in page.text


def test_a_search_or_tag_too_long_is_refused_naming_the_field(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    search = client.get("/guests", params={"q": "w" * 256})
    tag = client.get("/guests", params={"tag": "t" * 65})

    assert (search.status_code, tag.status_code) == (422, 422)
    assert "q: String should have at most 255 characters" in search.text
    assert "tag: String should have at most 64 characters" in tag.text


def test_the_api_sorts_too(client: TestClient, two_hosts: tuple[dict, dict]) -> None:
    listed = client.get("/api/v1/guests", params={"sort": "-memory", "limit": 2})

    assert listed.status_code == 200
    assert [g["name"] for g in listed.json()["items"]] == ["db-1", "web-2"]
    assert listed.json()["total"] == 7


def test_a_button_in_the_table_replaces_its_row_with_the_host_still_shown(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    response = client.post(f"/guests/{DB_1}/actions/start", headers=htmx_to(f"fleet-row-{DB_1}"))

    assert response.status_code == 200
    assert response.text.lstrip().startswith(f'<tr id="fleet-row-{DB_1}"')
    assert rows(response.text) == [("db-1", "alpha")]
    assert parse(response.text).find("tr").has("span", class_="badge-running")
    assert parse(response.text).find_all("button", hx_target=f"#fleet-row-{DB_1}")


def test_a_fleet_of_many_guests_shows_a_hundred_a_page_keeping_sort_and_filters(
    make_client, tmp_path: Path
) -> None:
    client = make_client(test_driver_dir=str(tmp_path))
    domains = "".join(
        f"""<domain type="test"><name>g-{i:03d}</name>
        <uuid>c3000000-0000-4000-8000-{i:012d}</uuid><memory unit="MiB">{64 + i}</memory>
        <vcpu>1</vcpu><os><type>hvm</type></os></domain>"""
        for i in range(150)
    )
    node = tmp_path / "many.xml"
    node.write_text(f"<node><cpu><mhz>2000</mhz></cpu>{domains}</node>")
    add_host(client, "many", f"test://{node}")

    first = client.get("/guests", params={"sort": "-memory", "q": "g-"})
    second = client.get("/guests", params={"sort": "-memory", "q": "g-", "page": 2})

    expected = [f"g-{i:03d}" for i in reversed(range(150))]
    assert names(first.text) == expected[:100]
    assert names(second.text) == expected[100:]
    pager = parse(first.text).find("div", class_="pager")
    assert "150 guests · page 1 of 2" in " ".join(pager.text.split())
    assert [a.get("href") for a in pager.find_all("a")] == [
        "?q=g-&host=&state=&sort=-memory&page=2"
    ]
    # The table re-polls the page it shows.
    assert "hx-vals='{\"page\": 2}'" in second.text


def cells(html: str, uuid: str) -> dict[str, str]:
    """The cells of a guest's row by their column heading, as a user reads them."""
    page = parse(html)
    headings = [th.text.split("▲")[0].split("▼")[0].strip() for th in page.find_all("th")]
    row = page.find("tr", data_uuid=uuid)
    return {
        h: " ".join(td.text.split()) for h, td in zip(headings, row.find_all("td"), strict=False)
    }


def facts(html: str) -> dict[str, str]:
    """The guest page's Resources list, each fact's text by its term, as a user reads them."""
    listed = parse(html).find(id="guest-details").find("dl")
    return {
        dt.text.strip(): " ".join(dd.text.split())
        for dt, dd in zip(listed.find_all("dt"), listed.find_all("dd"), strict=True)
    }


def test_uptime_shows_in_human_units_for_guests_up_and_sorts_either_way(
    client: TestClient, two_hosts: tuple[dict, dict], sessions
) -> None:
    seen_up = client.get("/api/v1/guests", params={"q": "web-1"}).json()["items"][0]
    now = utcnow()
    with transaction(sessions) as session:
        for name, ago in (("web-1", timedelta(hours=3, minutes=12, seconds=40)),
                          ("web-2", timedelta(days=2, hours=4, minutes=5))):  # fmt: skip
            guest = session.scalars(select(Guest).where(Guest.name == name)).one()
            guest.running_since = now - ago

    page = client.get("/guests")
    overview = {uuid: facts(client.get(f"/guests/{uuid}").text) for uuid in (WEB_1, DB_1)}
    by_uptime = client.get("/guests", params={"sort": "uptime", "host": two_hosts[0]["id"]})
    longest = client.get("/guests", params={"sort": "-uptime", "host": two_hosts[0]["id"]})
    api = {g["name"]: g for g in client.get("/api/v1/guests").json()["items"]}

    # A guest already up when first seen counts from then: its uptime is never claimed longer.
    assert seen_up["running_since"] is not None and seen_up["uptime_seconds"] < 60
    assert cells(page.text, WEB_1)["Uptime"] == "3 h 12 min"
    assert (
        parse(page.text)
        .find("tr", data_uuid=WEB_1)
        .find("td", class_="uptime")
        .find("span")
        .get("title")
        .startswith("Up since ")
    )
    assert "2 d 4 h" in [cells(page.text, g["uuid"])["Uptime"] for g in api.values()]
    assert cells(page.text, DB_1)["Uptime"] == "—"  # shut off
    # The guest's page says it too, with the time it counts from.
    assert overview[WEB_1]["Uptime"].startswith("3 h 12 min (up since ")
    assert overview[DB_1]["Uptime"] == "not running"
    assert api["db-1"]["uptime_seconds"] is None and api["db-1"]["running_since"] is None
    assert 3 * 3600 + 12 * 60 <= api["web-1"]["uptime_seconds"] < 3 * 3600 + 14 * 60
    # Not up first (no time at all), then the shortest; the other way the longest first.
    assert names(by_uptime.text) == ["db-1", "web-1", "web-2"]
    assert names(longest.text) == ["web-2", "web-1", "db-1"]
    assert (
        parse(by_uptime.text).find("th", aria_sort="ascending").find("a").text.startswith("Uptime")
    )
    api_sorted = client.get("/api/v1/guests", params={"sort": "-uptime", "limit": 2}).json()
    assert [g["name"] for g in api_sorted["items"]] == ["web-2", "web-1"]


def test_a_guest_started_counts_its_uptime_from_then_and_loses_it_when_off(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    started = client.post(f"/api/v1/guests/{DB_1}/actions/start")
    up = client.get("/guests", params={"q": "db-1"})
    client.post(f"/api/v1/guests/{DB_1}/actions/force_off")
    off = client.get("/api/v1/guests", params={"q": "db-1"}).json()["items"][0]

    assert started.status_code == 200 and started.json()["uptime_seconds"] < 60
    assert cells(up.text, DB_1)["Uptime"] == "< 1 min"
    assert off["running_since"] is None and off["uptime_seconds"] is None


def test_a_running_guests_addresses_show_in_the_table_with_their_source(make_client) -> None:
    client = make_client(sync_interval=0.2, usage_interval=0.2)
    host = add_host(client, "storage", node_uri("node-storage.xml"))
    made = post_guest(client, host, "web-lan", network="lan", start=True)
    assert made.status_code == 201, made.text
    uuid = made.json()["uuid"]

    # A pass reads them within a second here; CI's two loaded cores once needed more than 10 s.
    deadline = time.monotonic() + 30
    while not (listed := client.get("/api/v1/guests", params={"q": "web-lan"}).json())["items"][0][
        "addresses"
    ]:
        assert time.monotonic() < deadline, "the worker read no address"
        time.sleep(0.1)
    page = client.get("/guests", params={"q": "web-lan"})

    (address,) = listed["items"][0]["addresses"]
    assert address["address"].startswith("192.168.150.") and address["source"] == "DHCP lease"
    assert listed["items"][0]["addresses_at"] is not None
    assert cells(page.text, uuid)["IP addresses"] == f"{address['address']} DHCP lease"
    assert client.get(f"/api/v1/guests/{uuid}").json()["addresses"] == [address]

    client.post(f"/api/v1/guests/{uuid}/actions/force_off")
    off = client.get("/guests", params={"q": "web-lan"})
    assert cells(off.text, uuid)["IP addresses"] == "—"
    deadline = time.monotonic() + 10
    while client.get(f"/api/v1/guests/{uuid}").json()["addresses_at"] is not None:
        assert time.monotonic() < deadline, "a shut-off guest kept its addresses"
        time.sleep(0.1)
