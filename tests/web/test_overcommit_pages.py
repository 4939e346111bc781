"""The overcommit page, the overview's ratio gauges and fleet totals, and the policy forms."""

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.db import transaction
from app.models import OvercommitSample
from app.models.base import utcnow
from app.web.charts import BAR_TRACK_WIDTH, BAR_TRACK_X, LINE_LEFT, LINE_RIGHT, LINE_WIDTH, gauge
from tests.conftest import add_host
from tests.htmx import HTMX, htmx_to
from tests.markup import parse

WIDE_NODE = """<?xml version="1.0"?>
<node>
  <cpu><mhz>2400</mhz><model>x86_64</model><nodes>1</nodes><sockets>1</sockets>
       <cores>2</cores><threads>1</threads></cpu>
  <memory>4194304</memory>
  <domain type="test">
    <name>wide</name><uuid>c1000000-0000-4000-8000-000000000001</uuid>
    <memory unit="MiB">1024</memory><vcpu>4</vcpu><os><type>hvm</type></os>
  </domain>
</node>
"""


def ratio_shown(page: str, label: str) -> tuple[str, str]:
    """The ratio and its state badge on the line with this label."""
    line = parse(page).definition(label)
    badge = line.find("span", class_="badge")
    return line.find("span", data_ratio=True).get("data-ratio"), badge.text


def bar_widths(page: str, section: str) -> dict[str, float]:
    """The width of each bar in a section's bar chart, by the bar's kind."""
    rows = parse(page).find("section", id=section).find_all("g", data_bar=True)
    return {row.get("data-bar"): float(row.find("rect", class_="bar").get("width")) for row in rows}


def mark_x(page: str, section: str, kind: str) -> float:
    """Where a mark (capacity, policy) crosses a section's bar chart."""
    mark = parse(page).find("section", id=section).find("g", class_=f"mark-{kind}")
    return float(mark.find("line").get("x1"))


def guest_order(html: str) -> list[str]:
    """The guests of the contributions table, top to bottom."""
    return [row.get("data-guest") for row in parse(html).find_all("tr", data_guest=True)]


@pytest.fixture
def alpha(client: TestClient, two_hosts: tuple[dict, dict]) -> dict:
    """Host alpha: 8 CPUs and 16 GiB; web-1 and web-2 running, db-1 shut off."""
    return two_hosts[0]


def test_the_page_shows_cpu_and_memory_ratios_with_their_states(
    client: TestClient, alpha: dict
) -> None:
    page = client.get(f"/hosts/{alpha['id']}/overcommit")

    assert page.status_code == 200
    assert "<h1>Overcommit on alpha</h1>" in page.text
    assert ratio_shown(page.text, "vCPUs running") == ("0.50:1", "ok")
    assert ratio_shown(page.text, "vCPUs defined") == ("1.00:1", "ok")
    assert ratio_shown(page.text, "Running, max") == ("0.25:1", "ok")
    assert ratio_shown(page.text, "All defined") == ("0.75:1", "ok")
    assert "<dt>Physical CPUs</dt><dd>8 online</dd>" in page.text
    assert "<dt>Largest guest</dt><dd>4 vCPUs</dd>" in page.text
    assert '16 GiB <span class="muted small">(NUMA topology (virNodeGetInfo))' in page.text
    assert "<dt>Running, current</dt><dd>3.5 GiB" in page.text
    assert "4.00:1 CPU, 1.00:1 memory" in page.text and "(global)" in page.text
    assert 'id="overcommit-guidance"' in page.text and 'data-status="' in page.text
    assert 'id="overcommit-ksm"' in page.text


def test_the_bars_are_drawn_to_scale_with_the_policy_line(client: TestClient, alpha: dict) -> None:
    page = client.get(f"/hosts/{alpha['id']}/overcommit").text

    cpu = bar_widths(page, "overcommit-cpu")
    memory = bar_widths(page, "overcommit-memory")
    assert set(cpu) == {"alloc-ok", "defined", "capacity"}
    assert all(0 < width <= BAR_TRACK_WIDTH for width in cpu.values())
    assert cpu["alloc-ok"] == pytest.approx(cpu["capacity"] / 2, abs=0.2)  # 4 of 8
    assert cpu["defined"] == pytest.approx(cpu["capacity"], abs=0.2)  # 8 of 8
    assert memory["alloc-ok"] == pytest.approx(memory["capacity"] / 4, abs=0.2)  # 4 of 16 GiB
    assert memory["current"] == pytest.approx(memory["capacity"] * 3.5 / 16, abs=0.2)
    assert memory["defined"] == pytest.approx(memory["capacity"] * 3 / 4, abs=0.2)
    # The CPU policy (4:1) sits at 32 vCPUs, four times as far along as the 8 CPUs.
    capacity = mark_x(page, "overcommit-cpu", "capacity")
    policy = mark_x(page, "overcommit-cpu", "policy")
    assert policy - BAR_TRACK_X == pytest.approx(4 * (capacity - BAR_TRACK_X), abs=0.5)
    chart = parse(page).find("section", id="overcommit-cpu")
    assert chart.find("g", class_="mark-policy").text == "policy 4.00:1"


def test_the_contributions_table_sorts_by_vcpus_and_by_memory_as_a_fragment(
    client: TestClient, alpha: dict
) -> None:
    url = f"/hosts/{alpha['id']}/overcommit"
    fragment = htmx_to("guest-loads")

    by_vcpus = client.get(url, params={"sort": "vcpus"}, headers=fragment)
    by_memory = client.get(url, params={"sort": "memory"}, headers=fragment)
    by_name = client.get(url, params={"sort": "name"}, headers=fragment)
    bogus = client.get(url, params={"sort": "evil"})

    assert by_vcpus.text.lstrip().startswith('<section id="guest-loads"')
    assert "<html" not in by_vcpus.text
    assert guest_order(by_vcpus.text) == ["db-1", "web-1", "web-2"]
    # Equal maxima: the one with more current memory (web-2, no ballooning) first.
    assert guest_order(by_memory.text) == ["db-1", "web-2", "web-1"]
    assert guest_order(by_name.text) == ["db-1", "web-1", "web-2"]
    sorted_by = parse(by_memory.text).find("th", aria_sort="descending")
    assert sorted_by.find("a").get("href") == "?sort=memory"
    # It re-polls in its own order and page.
    assert f'<section id="guest-loads" class="panel" hx-get="{url}?sort=memory&page=1"' in (
        by_memory.text
    )
    assert "1.5 GiB of 2 GiB" in by_vcpus.text
    assert bogus.status_code == 422


def test_a_host_with_many_guests_shows_them_a_hundred_a_page_in_the_chosen_order(
    make_client, tmp_path: Path
) -> None:
    client = make_client(test_driver_dir=str(tmp_path))
    domains = "".join(
        f"""<domain type="test"><name>g-{i:03d}</name>
        <uuid>c2000000-0000-4000-8000-{i:012d}</uuid><memory unit="MiB">{64 + i}</memory>
        <vcpu>{1 + i % 4}</vcpu><os><type>hvm</type></os></domain>"""
        for i in range(130)
    )
    node = tmp_path / "many.xml"
    node.write_text(WIDE_NODE[: WIDE_NODE.index("  <domain")] + domains + "</node>")
    host = add_host(client, "many", f"test://{node}")
    url = f"/hosts/{host['id']}/overcommit"
    fragment = htmx_to("guest-loads")

    first = client.get(url, params={"sort": "name"})
    second = client.get(url, params={"sort": "name", "page": 2}, headers=fragment)
    by_memory = client.get(url, params={"sort": "memory"}, headers=fragment)
    past_the_end = client.get(url, params={"sort": "name", "page": 9}, headers=fragment)

    names = [f"g-{i:03d}" for i in range(130)]
    assert guest_order(first.text) == names[:100]
    assert guest_order(second.text) == names[100:]
    assert guest_order(by_memory.text) == names[::-1][:100]  # the largest first
    assert guest_order(past_the_end.text) == names[100:]  # the last page
    pager = parse(first.text).find("div", class_="pager")
    assert "130 guests · page 1 of 2" in pager.text
    assert [(a.text, a.get("href")) for a in pager.find_all("a")] == [("next", "?sort=name&page=2")]
    back = parse(second.text).find("div", class_="pager").find_all("a")
    assert ("previous", "?sort=name&page=1") in [(a.text, a.get("href")) for a in back]
    assert f'hx-get="{url}?sort=name&page=2"' in second.text  # it re-polls its own page
    # The ratios count every guest, not only the page shown.
    assert f">{sum(1 + i % 4 for i in range(130))} vCPUs<" in first.text


def test_a_guest_wider_than_its_host_is_flagged_not_recommended(
    make_client, tmp_path: Path
) -> None:
    client = make_client(test_driver_dir=str(tmp_path))
    node = tmp_path / "node-wide.xml"
    node.write_text(WIDE_NODE)
    host = add_host(client, "narrow", f"test://{node}")

    page = client.get(f"/hosts/{host['id']}/overcommit").text

    assert "not recommended" in parse(page).find("tr", data_guest="wide").text
    assert 'data-over-host="wide"' in page
    assert ratio_shown(page, "vCPUs running") == ("2.00:1", "ok")


def test_the_ratio_history_is_a_line_chart_with_the_policy_lines(
    client: TestClient, alpha: dict, sessions
) -> None:
    now = utcnow()
    with transaction(sessions) as session:
        for hours, cpu in ((12, 1.0), (6, None)):
            session.add(OvercommitSample(host_id=alpha["id"], at=now - timedelta(hours=hours),
                                         cpu_ratio=cpu, memory_ratio=0.5))  # fmt: skip

    page = client.get(f"/hosts/{alpha['id']}/overcommit").text

    chart = parse(page).find("svg", class_="line-chart")
    cpu_runs = [line.get("points") for line in chart.find_all("polyline", data_series="cpu")]
    memory_runs = [line.get("points") for line in chart.find_all("polyline", data_series="memory")]
    assert len(cpu_runs) == 2  # broken where the CPU ratio was unknown
    assert len(memory_runs) == 1 and len(memory_runs[0].split()) >= 3
    first_x = float(cpu_runs[0].split(",")[0])
    middle = LINE_LEFT + (LINE_WIDTH - LINE_LEFT - LINE_RIGHT) / 2
    assert first_x == pytest.approx(middle, abs=2)  # 12 h ago
    assert chart.has("line", class_="policy-cpu") and chart.has("line", class_="policy-memory")
    axis = [text.text for text in chart.find_all("text", class_="axis")]
    assert "-24 h" in axis and "now" in axis


def test_the_overview_shows_ratio_gauges_on_each_card_and_the_fleet_totals(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    alpha, _ = two_hosts
    page = client.get("/").text
    refresh = client.get("/", headers=htmx_to("host-cards")).text

    card = parse(page).find("div", data_host="alpha")
    assert card.has("a", href=f"/hosts/{alpha['id']}/overcommit")
    cpu = card.find("div", data_gauge="CPU")
    drawn = gauge(0.5, 4.0)  # 0.5:1 against the policy 4:1
    assert float(cpu.find("rect", class_="bar").get("width")) == drawn.fill
    assert float(cpu.find("line", class_="gauge-policy").get("x1")) == drawn.policy
    assert cpu.find("span", class_="gauge-value").text == "0.50:1"
    assert card.find("div", data_gauge="Memory").find("span", class_="gauge-value").text == "0.25:1"
    fleet = parse(page).find("section", id="fleet-totals")
    totals = {
        item.find("span", class_="fleet-label").text: item.find("span", class_="fleet-value").text
        for item in fleet.find_all("div", class_="fleet-item")
    }
    # alpha 8 CPUs, 4 vCPUs running; beta 4 CPUs, 3 running (build-1, paused idle-3).
    assert totals["physical CPUs"] == "12"
    assert [n for label, n in totals.items() if label.startswith("vCPUs running")] == ["7"]
    assert fleet.find("span", data_fleet="cpu-ratio").text == "0.58:1"
    assert totals["physical memory"] == "24 GiB"
    assert [n for label, n in totals.items() if label.startswith("allocated, running")] == [
        "5.5 GiB"
    ]
    assert fleet.find("span", data_fleet="memory-ratio").text == "0.23:1"
    assert '<section id="fleet-totals" class="fleet" hx-swap-oob="true">' in refresh


def test_the_host_page_links_to_its_overcommit_page(client: TestClient, alpha: dict) -> None:
    page = client.get(f"/hosts/{alpha['id']}").text

    assert f'href="/hosts/{alpha["id"]}/overcommit">Overcommit</a>' in page


def test_admins_get_the_policy_forms_and_viewers_only_the_policy(
    make_client, client: TestClient, alpha: dict
) -> None:
    viewer = make_client(role="viewer")

    mine = client.get(f"/hosts/{alpha['id']}/overcommit").text
    theirs = viewer.get(f"/hosts/{alpha['id']}/overcommit").text

    assert 'id="policy-global"' in mine and 'id="policy-host"' in mine
    presets = parse(mine).find_all("button", name="memory_preset")
    assert [button.get("value") for button in presets] == ["1.0", "1.5", "2.0"]
    assert 'id="policy-global"' not in theirs and 'id="policy-host"' not in theirs
    assert "the global policy" in theirs
    assert viewer.post("/overcommit/policy", data={"cpu": "1", "memory": "1"}).status_code == 403


def test_a_global_policy_change_changes_the_states_shown(client: TestClient, alpha: dict) -> None:
    url = f"/hosts/{alpha['id']}/overcommit"
    saved = client.post(
        "/overcommit/policy",
        data={"host_id": alpha["id"], "cpu": "0.5", "memory": "0.8"},
        follow_redirects=False,
    )
    page = client.get(url).text

    assert saved.status_code == 303 and saved.headers["location"] == url
    assert ratio_shown(page, "vCPUs running") == ("0.50:1", "near")
    assert ratio_shown(page, "vCPUs defined") == ("1.00:1", "over")
    assert ratio_shown(page, "Running, max") == ("0.25:1", "ok")
    assert ratio_shown(page, "All defined") == ("0.75:1", "near")

    preset = client.post(
        "/overcommit/policy",
        data={"host_id": alpha["id"], "cpu": "0.5", "memory": "0.8", "memory_preset": "1.5"},
        headers=HTMX,
    )
    assert preset.headers["HX-Redirect"] == url
    assert "0.50:1 CPU, 1.50:1 memory" in client.get(url).text


def test_a_host_override_applies_to_that_host_only_and_clears_back_to_global(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    alpha, beta = two_hosts
    client.post("/overcommit/policy", data={"host_id": alpha["id"], "cpu": "0.5", "memory": "1"})

    client.post(f"/hosts/{alpha['id']}/overcommit/policy", data={"cpu": "8", "memory": ""})
    own = client.get(f"/hosts/{alpha['id']}/overcommit").text
    other = client.get(f"/hosts/{beta['id']}/overcommit").text
    client.post(f"/hosts/{alpha['id']}/overcommit/policy", data={"cpu": "8", "clear": "1"})
    cleared = client.get(f"/hosts/{alpha['id']}/overcommit").text

    assert "8.00:1 CPU, 1.00:1 memory" in own and "this host&#39;s override" in own
    form = parse(own).find("form", id="policy-host")
    values = {
        field.get("name"): field.get("value") for field in form.find_all("input", type="number")
    }
    assert values == {"cpu": "8.0", "memory": ""}  # an empty field follows the global ratio
    assert ratio_shown(own, "vCPUs defined") == ("1.00:1", "ok")
    assert "0.50:1 CPU, 1.00:1 memory" in other
    assert ratio_shown(cleared, "vCPUs defined") == ("1.00:1", "over")
    assert "(global)" in cleared


def test_a_refused_ratio_comes_back_next_to_its_field_and_changes_nothing(
    client: TestClient, alpha: dict
) -> None:
    url = f"/hosts/{alpha['id']}/overcommit"
    globally = client.post(
        "/overcommit/policy",
        data={"host_id": alpha["id"], "cpu": "0", "memory": "1.5"},
        headers=HTMX,
    )
    for_host = client.post(f"{url}/policy", data={"cpu": "2", "memory": "lots<b>"}, headers=HTMX)

    assert globally.status_code == 422
    assert globally.text.lstrip().startswith('<section id="overcommit-policy"')
    assert '<span class="field-error" data-field="cpu">a ratio from 0.1 to 100</span>' in (
        globally.text
    )
    assert 'value="0"' in globally.text and 'value="1.5"' in globally.text
    assert for_host.status_code == 422
    assert 'data-field="memory"' in for_host.text and 'value="lots&lt;b&gt;"' in for_host.text
    assert "4.00:1 CPU, 1.00:1 memory" in client.get(url).text
    assert "(global)" in client.get(url).text


def test_an_unknown_host_has_no_overcommit_page(client: TestClient) -> None:
    assert client.get("/hosts/999/overcommit").status_code == 404
