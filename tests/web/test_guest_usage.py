"""The guest page's Usage panel on a test-driver host (whose driver reports no usage): it says
why there are no figures, draws the samples it has for the day or the month (the line broken
where nothing was read), and refuses another period naming it; the figures gone once the host
is lost; the host page's chart of its guests' sum."""

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db import transaction
from app.models import Guest, UsageSample
from app.models.base import utcnow
from app.services.hosts import record_unreachable
from app.services.usage import record_usage
from app.web.charts import LINE_BOTTOM, LINE_HEIGHT, LINE_TOP
from tests.conftest import add_host, node_uri, post_guest
from tests.htmx import HTMX
from tests.inventory import guests_from
from tests.markup import parse
from tests.usage import counters

WEB_1 = "a1000000-0000-4000-8000-000000000001"  # running on alpha


def test_the_panel_loads_with_the_page_and_says_why_there_are_no_figures(
    client: TestClient,
) -> None:
    add_host(client, "alpha", node_uri("node-alpha.xml"))

    page = parse(client.get(f"/guests/{WEB_1}").text)
    panel = parse(client.get(f"/guests/{WEB_1}/usage", headers=HTMX).text)

    assert page.find("section", id="guest-usage").get("hx-get") == f"/guests/{WEB_1}/usage"
    assert "No current figures" in panel.text
    assert "No samples over this period yet" in panel.text
    assert client.get(f"/guests/{WEB_1}/usage", params={"period": "year"}).status_code == 422


def add_samples(sessions, uuid: str, *, ages: tuple[int, ...]) -> None:
    """Samples of the guest at 40 % CPU and 32 MiB in use, each this many units ago: minutes
    in the day's readings, hours in the month's."""
    now = utcnow()
    with transaction(sessions) as session:
        guest_id = session.scalars(select(Guest.id).where(Guest.uuid == uuid)).one()
        session.add_all(
            UsageSample(guest_id=guest_id, hourly=hourly, at=now - unit * age, cpu_percent=40.0,
                        memory_used_kib=32 * 1024, disk_bps=0, net_bps=0)
            for hourly, unit in ((False, timedelta(minutes=1)), (True, timedelta(hours=1)))
            for age in ages
        )  # fmt: skip


def test_the_days_and_the_months_samples_are_drawn(client: TestClient, sessions) -> None:
    add_host(client, "alpha", node_uri("node-alpha.xml"))
    add_samples(sessions, WEB_1, ages=(3, 2, 1))

    day = parse(client.get(f"/guests/{WEB_1}/usage", headers=HTMX).text)
    month = parse(client.get(f"/guests/{WEB_1}/usage?period=month", headers=HTMX).text)

    for panel in (day, month):
        (cpu,) = panel.find_all("polyline", data_series="cpu")
        (memory,) = panel.find_all("polyline", data_series="memory")
        assert len(cpu.get("points").split()) == 3 and len(memory.get("points").split()) == 3
    pressed = [b.text for b in month.find_all("button", aria_pressed="true")]
    assert pressed == ["Last 30 days"]
    assert "-30 d" in month.text and "-24 h" in day.text


def test_the_guests_page_shows_cpu_and_sorts_the_busiest_first(
    client: TestClient, sessions
) -> None:
    add_host(client, "alpha", node_uri("node-alpha.xml"))
    with transaction(sessions) as session:
        for name, cpu in (("web-1", 12.0), ("web-2", 87.5)):
            guest = session.scalars(select(Guest).where(Guest.name == name)).one()
            guest.cpu_percent, guest.usage_at = cpu, utcnow()

    page = parse(client.get("/guests", params={"sort": "-cpu"}).text)
    api = client.get("/api/v1/guests", params={"sort": "-cpu"}).json()["items"]

    rows = [[cell.text for cell in row.find_all("td")] for row in page.find("tbody").find_all("tr")]
    assert [(row[0], row[5]) for row in rows][:2] == [("web-2", "88 %"), ("web-1", "12 %")]
    assert all(row[5] == "—" for row in rows[2:])
    assert [(g["name"], g["cpu_percent"]) for g in api][:2] == [("web-2", 87.5), ("web-1", 12.0)]


def test_a_running_guests_addresses_show_with_their_source(client: TestClient) -> None:
    host = add_host(client, "storage", node_uri("node-storage.xml"))
    made = post_guest(client, host, "web-lan", network="lan", start=True)
    assert made.status_code == 201, made.text
    uuid = made.json()["uuid"]

    panel = parse(client.get(f"/guests/{uuid}/addresses", headers=HTMX).text)
    api = client.get(f"/api/v1/guests/{uuid}/addresses").json()

    rows = [[c.text for c in row.find_all("td")] for row in panel.find("tbody").find_all("tr")]
    # The test driver answers every source with a made-up address in the network's subnet; the
    # DHCP lease is asked first.
    assert len(rows) == len(api) == 1
    address = api[0]
    assert address["address"].startswith("192.168.150.") and address["source"] == "DHCP lease"
    assert rows[0] == [f"{address['address']}/{address['prefix']}", address["interface"],
                       address["mac"], "DHCP lease"]  # fmt: skip


def test_a_shut_off_guest_has_no_address(client: TestClient) -> None:
    add_host(client, "alpha", node_uri("node-alpha.xml"))
    stopped = next(
        g for g in client.get("/api/v1/guests").json()["items"] if g["state"] == "shutoff"
    )

    panel = parse(client.get(f"/guests/{stopped['uuid']}/addresses", headers=HTMX).text)

    assert "No address known" in panel.text
    assert client.get(f"/api/v1/guests/{stopped['uuid']}/addresses").json() == []


def runs(panel, series: str) -> list[list[tuple[float, float]]]:
    """The points of each unbroken run of a chart's line, as drawn."""
    return [
        [tuple(map(float, point.split(","))) for point in line.get("points").split()]
        for line in panel.find_all("polyline", data_series=series)
    ]


def y_of(percent: float) -> float:
    """Where a percentage sits on a usage chart."""
    return round(LINE_TOP + (LINE_HEIGHT - LINE_TOP - LINE_BOTTOM) * (1 - percent / 100), 1)


def test_a_guest_chart_breaks_where_nothing_was_read(client: TestClient, sessions) -> None:
    add_host(client, "alpha", node_uri("node-alpha.xml"))
    # On for three minutes, off for half an hour, on again; hours missing in the month.
    add_samples(sessions, WEB_1, ages=(40, 39, 38, 3, 2, 1))

    for period in ("day", "month"):
        panel = parse(client.get(f"/guests/{WEB_1}/usage?period={period}", headers=HTMX).text)

        assert [len(run) for run in runs(panel, "cpu")] == [3, 3]
        assert [len(run) for run in runs(panel, "memory")] == [3, 3]


def test_the_host_chart_draws_the_sum_of_its_guests_and_breaks_while_it_was_lost(
    client: TestClient, sessions
) -> None:
    host = add_host(client, "alpha", node_uri("node-alpha.xml"))
    now = utcnow()
    web = [g for g in guests_from("node-alpha.xml") if g.spec.name in ("web-1", "web-2")]
    # Each web guest at 50 % of its 2 vCPUs: 2 of the host's CPUs; 512 MiB each. Read for
    # three minutes, then nothing for half an hour (the host lost), then three minutes again.
    previous: dict = {}
    for m in (40, 39, 38, None, 3, 2, 1):
        reading = {} if m is None else {
            g.spec.uuid: counters(3600 - 60 * m, 3600 - 60 * m, vcpus=2) for g in web
        }  # fmt: skip
        if m is not None:
            with transaction(sessions) as session:
                record_usage(session, host["id"], previous, reading,
                             now=now - timedelta(minutes=m), roll_up=False)  # fmt: skip
        previous = reading

    panel = parse(client.get(f"/hosts/{host['id']}/usage", headers=HTMX).text)

    cpu, memory = runs(panel, "cpu"), runs(panel, "memory")
    assert [len(run) for run in cpu] == [len(run) for run in memory] == [2, 2]
    cpu_percent = 100 * 2 / host["cpus_online"]
    memory_percent = 100 * 2 * 512 * 1024 / host["memory_kib"]
    assert {y for run in cpu for _, y in run} == {y_of(cpu_percent)}
    assert {y for run in memory for _, y in run} == {y_of(memory_percent)}


def test_figures_are_gone_once_the_guests_host_is_lost(client: TestClient, sessions) -> None:
    host = add_host(client, "alpha", node_uri("node-alpha.xml"))
    with transaction(sessions) as session:
        guest = session.scalars(select(Guest).where(Guest.uuid == WEB_1)).one()
        guest.cpu_percent, guest.memory_used_kib, guest.usage_at = 30.0, 64 * 1024, utcnow()
        guest.disk_bps = guest.net_bps = 1000
    before = parse(client.get(f"/guests/{WEB_1}/usage", headers=HTMX).text)
    assert "30.0 % of its 2 vCPUs" in before.text

    with transaction(sessions) as session:
        record_unreachable(session, host["id"], "host stopped answering (keepalive)")

    panel = parse(client.get(f"/guests/{WEB_1}/usage", headers=HTMX).text)
    row = parse(client.get("/guests").text).find("tr", data_uuid=WEB_1)
    assert "No current figures" in panel.text and "its host is not connected" in panel.text
    assert "30.0 %" not in panel.text
    assert row.find("td", class_="cpu").text == "—"
    assert client.get(f"/api/v1/guests/{WEB_1}").json()["cpu_percent"] is None


def with_cpu_readings(sessions, readings: dict[int, float]) -> None:
    """web-1 at 30 % now, and a CPU reading `readings[m]` % m minutes ago for each m."""
    now = utcnow()
    with transaction(sessions) as session:
        guest = session.scalars(select(Guest).where(Guest.uuid == WEB_1)).one()
        guest.cpu_percent, guest.usage_at = 30.0, now
        session.add_all(
            UsageSample(guest_id=guest.id, hourly=False, at=now - timedelta(minutes=m),
                        cpu_percent=cpu, disk_bps=0, net_bps=0)
            for m, cpu in readings.items()
        )  # fmt: skip


def test_list_rows_draw_the_last_hours_cpu_as_a_sparkline(client: TestClient, sessions) -> None:
    host = add_host(client, "alpha", node_uri("node-alpha.xml"))
    with_cpu_readings(sessions, {m: 10.0 * m for m in (3, 2, 1)})

    for url in ("/guests", f"/hosts/{host['id']}"):
        page = parse(client.get(url).text)
        busy = page.find("tr", data_uuid=WEB_1).find("td", class_="cpu")
        others = [r for r in page.find("tbody").find_all("tr") if r.get("data-uuid") != WEB_1]

        (line,) = busy.find_all("polyline")
        assert len(line.get("points").split()) == 3 and busy.text == "30 %"
        assert all(r.find_all("svg", class_="spark") == [] for r in others)


def test_a_sparkline_breaks_where_nothing_was_read(client: TestClient, sessions) -> None:
    # Readings every minute (the app's usage_interval is 60 s), none for the quarter of an hour
    # the guest was off: one line before the gap, one after, none across it.
    host = add_host(client, "alpha", node_uri("node-alpha.xml"))
    with_cpu_readings(sessions, {m: float(m) for m in (20, 19, 18, 3, 2, 1)})

    for url in ("/guests", f"/hosts/{host['id']}"):
        cell = parse(client.get(url).text).find("tr", data_uuid=WEB_1).find("td", class_="cpu")
        before, after = cell.find_all("polyline")
        assert len(before.get("points").split()) == 3 and len(after.get("points").split()) == 3
        # The first line ends left of where the second begins: twenty minutes of an hour's 60 px.
        ends = float(before.get("points").split()[-1].split(",")[0])
        begins = float(after.get("points").split()[0].split(",")[0])
        assert begins - ends > 10
