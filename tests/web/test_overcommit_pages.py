"""The overcommit page, the overview's ratio gauges and fleet totals, and the policy forms."""

import re
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.db import transaction
from app.models import OvercommitSample
from app.models.base import utcnow
from tests.conftest import add_host

HTMX = {"HX-Request": "true"}
TRACK_WIDTH = 330
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
    match = re.search(
        rf"<dt>{label}</dt><dd>[^<]*<span class=\"ratio\" data-ratio=\"([^\"]+)\">"
        rf"[^<]*</span> <span class=\"badge badge-(\w+)\">",
        page,
    )
    assert match, f"no ratio for {label}"
    return match.group(1), match.group(2)


def bar_widths(page: str, section: str) -> dict[str, float]:
    """The width of each bar in a section's bar chart, by the bar's kind."""
    chart = re.search(rf'<section class="panel" id="{section}">.*?</svg>', page, re.S).group(0)
    rows = re.findall(
        r'data-bar="([\w-]+)">.*?class="bar bar-[\w-]+"[^>]*width="([\d.]+)"', chart, re.S
    )
    return {kind: float(width) for kind, width in rows}


def guest_order(html: str) -> list[str]:
    """The guests of the contributions table, top to bottom."""
    return re.findall(r'<tr data-guest="([\w-]+)"', html)


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
    assert all(0 < width <= TRACK_WIDTH for width in cpu.values())
    assert cpu["alloc-ok"] == pytest.approx(cpu["capacity"] / 2, abs=0.2)  # 4 of 8
    assert cpu["defined"] == pytest.approx(cpu["capacity"], abs=0.2)  # 8 of 8
    assert memory["alloc-ok"] == pytest.approx(memory["capacity"] / 4, abs=0.2)  # 4 of 16 GiB
    assert memory["current"] == pytest.approx(memory["capacity"] * 3.5 / 16, abs=0.2)
    assert memory["defined"] == pytest.approx(memory["capacity"] * 3 / 4, abs=0.2)
    # The CPU policy (4:1) sits at 32 vCPUs, four times as far along as the 8 CPUs.
    marks = re.search(r'id="overcommit-cpu">.*?</svg>', page, re.S).group(0)
    capacity = float(re.search(r'mark-capacity">\s*<line x1="([\d.]+)"', marks).group(1))
    policy = float(re.search(r'mark-policy">\s*<line x1="([\d.]+)"', marks).group(1))
    start = 124
    assert policy - start == pytest.approx(4 * (capacity - start), abs=0.5)
    assert ">policy 4.00:1</text>" in marks


def test_the_contributions_table_sorts_by_vcpus_and_by_memory_as_a_fragment(
    client: TestClient, alpha: dict
) -> None:
    url = f"/hosts/{alpha['id']}/overcommit"
    fragment = {**HTMX, "HX-Target": "guest-loads"}

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
    assert re.search(r'aria-sort="descending">\s*<a href="\?sort=memory"', by_memory.text)
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
    fragment = {**HTMX, "HX-Target": "guest-loads"}

    first = client.get(url, params={"sort": "name"})
    second = client.get(url, params={"sort": "name", "page": 2}, headers=fragment)
    by_memory = client.get(url, params={"sort": "memory"}, headers=fragment)
    past_the_end = client.get(url, params={"sort": "name", "page": 9}, headers=fragment)

    names = [f"g-{i:03d}" for i in range(130)]
    assert guest_order(first.text) == names[:100]
    assert guest_order(second.text) == names[100:]
    assert guest_order(by_memory.text) == names[::-1][:100]  # the largest first
    assert guest_order(past_the_end.text) == names[100:]  # the last page
    pager = re.sub(r"\s+", " ", re.search(r'<div class="pager.*?</div>', first.text, re.S)[0])
    assert "130 guests · page 1 of 2" in pager and 'href="?sort=name&amp;page=2">next' in pager
    assert "previous" not in pager
    assert 'href="?sort=name&amp;page=1">previous' in second.text
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

    row = re.search(r'<tr data-guest="wide".*?</tr>', page, re.S).group(0)
    assert "not recommended" in row
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

    chart = re.search(r'<svg class="chart line-chart".*?</svg>', page, re.S).group(0)
    cpu_runs = re.findall(r'data-series="cpu" points="([^"]+)"', chart)
    memory_runs = re.findall(r'data-series="memory" points="([^"]+)"', chart)
    assert len(cpu_runs) == 2  # broken where the CPU ratio was unknown
    assert len(memory_runs) == 1 and len(memory_runs[0].split()) >= 3
    first_x = float(cpu_runs[0].split(",")[0])
    assert first_x == pytest.approx(48 + (1100 - 48 - 16) / 2, abs=2)  # 12 h ago: the middle
    assert 'class="policy policy-cpu"' in chart and 'class="policy policy-memory"' in chart
    assert ">-24 h</text>" in chart and ">now</text>" in chart


def test_the_overview_shows_ratio_gauges_on_each_card_and_the_fleet_totals(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    alpha, _ = two_hosts
    page = client.get("/").text
    refresh = client.get("/", headers={**HTMX, "HX-Target": "host-cards"}).text

    card = re.search(r'<div class="card" data-host="alpha">.*?</a>\s*</div>', page, re.S).group(0)
    assert f'href="/hosts/{alpha["id"]}/overcommit"' in card
    cpu = re.search(r'data-gauge="CPU">.*?</div>', card, re.S).group(0)
    assert 'width="10.0"' in cpu  # 0.5:1 on a scale to 5:1 (policy 4:1 and room)
    assert 'x1="80.0"' in cpu and "0.50:1" in cpu
    assert "0.25:1" in re.search(r'data-gauge="Memory">.*?</div>', card, re.S).group(0)
    fleet = re.search(r'<section id="fleet-totals".*?</section>', page, re.S).group(0)
    # alpha 8 CPUs, 4 vCPUs running; beta 4 CPUs, 3 running (build-1, paused idle-3).
    assert '<span class="fleet-value">12</span><span class="fleet-label">physical CPUs' in fleet
    assert '<span class="fleet-value">7</span><span class="fleet-label">vCPUs running' in fleet
    assert 'data-fleet="cpu-ratio">0.58:1' in fleet
    assert ">24 GiB</span>" in fleet and ">5.5 GiB</span>" in fleet
    assert 'data-fleet="memory-ratio">0.23:1' in fleet
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
    assert re.findall(r'name="memory_preset" value="([\d.]+)"', mine) == ["1.0", "1.5", "2.0"]
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
    form = re.search(r'<form id="policy-host".*?</form>', own, re.S).group(0)
    values = dict(re.findall(r'name="(cpu|memory)"[^>]*?value="([^"]*)"', form, re.S))
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
