"""Overcommit through the API: ratios and states per host, the policy, and its enforcement.

node-alpha: 8 CPUs, 16 GiB; running web-1 (2 vCPUs, 2 GiB) and web-2 (2, 2 GiB), db-1 off (4, 8).
node-gamma: 2 CPUs, 4 GiB; running big-1 (4 vCPUs, 1 GiB), mid-1 (2, 2 GiB), one-1 (1, 1.5 GiB,
no balloon), one-2 (1, 0.5 GiB), spare-1 off (2, 1 GiB).
"""

import xml.etree.ElementTree as ET

import pytest
from fastapi.testclient import TestClient

from tests.conftest import add_host, make_user, node_uri

GIB = 1024 * 1024  # in KiB
SPARE_1 = "c1000000-0000-4000-8000-000000000004"
DB_1 = "a1000000-0000-4000-8000-000000000003"


@pytest.fixture
def gamma(client: TestClient) -> dict:
    """The crowded host, synced."""
    return add_host(client, "gamma", node_uri("node-gamma.xml"))


def overcommit(client: TestClient, host: dict) -> dict:
    response = client.get(f"/api/v1/hosts/{host['id']}/overcommit")
    assert response.status_code == 200, response.text
    return response.json()


def ratio(item: dict) -> tuple:
    return item["allocated"], item["capacity"], item["ratio"], item["policy"], item["state"]


def guidance(item: dict) -> dict[str, dict]:
    return {g["rule"].split(" ")[0] + g["rule"].split(" ")[2]: g for g in item["guidance"]}


def test_alpha_shows_its_running_and_defined_ratios(client: TestClient, two_hosts) -> None:
    alpha, _beta = two_hosts

    item = overcommit(client, alpha)

    assert (item["cpus"], item["vcpus_running"], item["vcpus_defined"]) == (8, 4, 8)
    assert ratio(item["cpu_running"]) == (4, 8, 0.5, 4.0, "ok")
    assert ratio(item["cpu_defined"]) == (8, 8, 1.0, 4.0, "ok")
    assert ratio(item["memory_running"]) == (4 * GIB, 16 * GIB, 0.25, 1.0, "ok")
    assert ratio(item["memory_defined"]) == (12 * GIB, 16 * GIB, 0.75, 1.0, "ok")
    assert item["memory_running_current_kib"] == 3.5 * GIB  # web-1 is ballooned to 1.5 GiB
    assert item["memory_source"] == "NUMA topology (virNodeGetInfo)"
    assert (item["policy_cpu"], item["policy_memory"], item["policy_source"]) == (4, 1, "global")
    # The test driver reports no host memory, KSM or balloon figures (and libvirt no swap).
    assert (item["free_kib"], item["rss_kib"], item["ksm"]) == (None,) * 3
    assert "swap_kib" not in item
    assert item["stats_at"] is not None
    assert [(g["name"], g["running"], g["vcpus_over_host"]) for g in item["guests"]] == [
        ("db-1", False, False),
        ("web-1", True, False),
        ("web-2", True, False),
    ]
    assert [g["status"] for g in item["guidance"]] == ["ok", "ok", "info", "info"]


def test_a_crowded_host_is_near_on_cpu_over_on_memory_and_flags_a_wide_guest(
    client: TestClient, gamma: dict
) -> None:
    item = overcommit(client, gamma)

    assert ratio(item["cpu_running"]) == (8, 2, 4.0, 4.0, "near")  # at the policy is not over
    assert ratio(item["cpu_defined"]) == (10, 2, 5.0, 4.0, "over")
    assert ratio(item["memory_running"]) == (5 * GIB, 4 * GIB, 1.25, 1.0, "over")
    assert ratio(item["memory_defined"]) == (6 * GIB, 4 * GIB, 1.5, 1.0, "over")
    assert item["largest_guest_vcpus"] == 4
    guests = {g["name"]: g for g in item["guests"]}
    assert [n for n, g in guests.items() if g["vcpus_over_host"]] == ["big-1"]
    assert {n: g["has_balloon"] for n, g in guests.items()} == {
        "big-1": True, "mid-1": True, "one-1": False, "one-2": True, "spare-1": False,
    }  # fmt: skip
    single, wide, loaded, memory = item["guidance"]
    assert (single["status"], single["detail"]) == (
        "ok", "2 of 5 guests have one vCPU (2 of 4 running).",
    )  # fmt: skip
    assert wide["status"] == "warn" and "big-1 (4)" in wide["detail"]
    assert loaded["status"] == "warn" and "8 vCPUs on 2 CPUs (4.00:1)" in loaded["detail"]
    assert memory["status"] == "warn"
    assert "big-1, mid-1, one-2 (3 of 5 guests)" in memory["detail"]
    assert (
        "KSM: not reported" in memory["detail"]
        and "swap: not reported by libvirt" in memory["detail"]
    )


def test_the_fleet_view_sums_every_host(client: TestClient, two_hosts, gamma: dict) -> None:
    response = client.get("/api/v1/overcommit")

    assert response.status_code == 200
    body = response.json()
    assert [h["host_name"] for h in body["hosts"]] == ["alpha", "beta", "gamma"]
    totals = body["totals"]
    assert (totals["hosts"], totals["cpus"], totals["memory_kib"]) == (3, 14, 28 * GIB)
    # alpha 4 + beta (build-1 1, idle-3 2 paused) 3 + gamma 8
    assert totals["vcpus_running"] == 15
    assert totals["cpu_ratio"] == pytest.approx(15 / 14)
    assert (totals["hosts_over"], totals["hosts_near"]) == (1, 0)


def test_the_policy_is_validated_and_a_host_override_wins(
    client: TestClient, make_client, gamma: dict
) -> None:
    operator = make_client(role="operator")
    path = f"/api/v1/hosts/{gamma['id']}/policy"

    too_low = client.put("/api/v1/policy", json={"cpu": 0.05, "memory": 1.0})
    too_high = client.put("/api/v1/policy", json={"cpu": 4.0, "memory": 101})
    missing = client.put("/api/v1/policy", json={"cpu": 4.0})
    host_bad = client.put(path, json={"cpu": -1, "memory": None})
    by_operator = operator.put("/api/v1/policy", json={"cpu": 8.0, "memory": 1.5})
    assert [(r.status_code, r.json()["field"]) for r in (too_low, too_high, missing, host_bad)] == [
        (422, "cpu"), (422, "memory"), (422, "memory"), (422, "cpu"),
    ]  # fmt: skip
    assert too_low.json()["detail"] == "cpu: a ratio from 0.1 to 100"
    assert by_operator.status_code == 403
    assert operator.get("/api/v1/policy").json() == {
        "cpu": 4.0, "memory": 1.0, "memory_presets": [1.0, 1.5, 2.0],
    }  # fmt: skip

    assert client.put("/api/v1/policy", json={"cpu": 3.0, "memory": 1.5}).status_code == 200
    globally = overcommit(client, gamma)
    overridden = client.put(path, json={"cpu": 8.0, "memory": None}).json()
    cleared = client.put(path, json={"cpu": None, "memory": None}).json()

    assert ratio(globally["cpu_running"])[3:] == (3.0, "over")
    assert ratio(globally["memory_running"])[3:] == (1.5, "ok")
    assert ratio(overridden["cpu_running"])[3:] == (8.0, "ok")
    assert (overridden["policy_memory"], overridden["policy_source"]) == (1.5, "host")
    assert (cleared["policy_cpu"], cleared["policy_source"]) == (3.0, "global")


def test_a_start_over_the_policy_is_refused_unless_an_admin_forces_it(
    client: TestClient, make_client, gamma: dict
) -> None:
    operator = make_client(role="operator")
    assert operator.post(f"/api/v1/hosts/{gamma['id']}/refresh", params={"wait": 15}).is_success
    path = f"/api/v1/guests/{SPARE_1}/actions/start"

    refused = operator.post(path)
    operator_forced = operator.post(path, params={"force": True})
    admin_forced = client.post(path, params={"force": True})

    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"] == (
        "vcpus: start would put 10 vCPUs on 2 CPUs (5.00:1), over the policy of 4.00:1; "
        "start would put 6.0 GiB of guest memory on 4.0 GiB (1.50:1), over the policy of 1.00:1; "
        "an admin can force it"
    )
    assert refused.json()["overcommit"]["cpu"]["ratio"] == 5.0
    assert operator_forced.status_code == 403
    assert operator_forced.json()["detail"].startswith("force: only an admin")
    assert (admin_forced.status_code, admin_forced.json()["status"]) == (200, "running")
    assert ratio(overcommit(client, gamma)["cpu_running"])[2::2] == (5.0, "over")


def test_a_revert_that_starts_the_guest_is_refused_over_the_policy_as_a_start_is(
    client: TestClient, database_url: str, gamma: dict
) -> None:
    # The operator calls the same app: another app would open its own private copy of gamma.
    operator = {"Authorization": f"Bearer {make_user(database_url, 'op-revert', 'operator')}"}
    guest = f"/api/v1/guests/{SPARE_1}"
    # spare-1 snapshotted while running (an admin forced its start), then off again
    assert client.post(f"{guest}/actions/start", params={"force": True}).status_code == 200
    assert client.post(f"{guest}/snapshots", json={"name": "warm"}).json()["state"] == "running"
    assert client.post(f"{guest}/actions/force_off").status_code == 200

    start = client.post(f"{guest}/actions/start", headers=operator)
    refused = client.post(f"{guest}/snapshots/warm/revert", headers=operator)
    operator_forced = client.post(
        f"{guest}/snapshots/warm/revert", params={"force": True}, headers=operator
    )
    still_off = client.get(guest).json()["status"]
    admin_forced = client.post(f"{guest}/snapshots/warm/revert", params={"force": True})

    assert start.status_code == 409
    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"] == (
        "vcpus: revert would put 10 vCPUs on 2 CPUs (5.00:1), over the policy of 4.00:1; "
        "revert would put 6.0 GiB of guest memory on 4.0 GiB (1.50:1), over the policy of 1.00:1; "
        "an admin can force it"
    )
    assert refused.json()["overcommit"] == start.json()["overcommit"]
    assert operator_forced.status_code == 403
    assert operator_forced.json()["detail"].startswith("force: only an admin")
    assert still_off == "shutoff"
    assert (admin_forced.status_code, admin_forced.json()["status"]) == (200, "running")


def test_a_create_over_the_policy_is_refused_unless_an_admin_forces_it(
    client: TestClient, make_client, gamma: dict
) -> None:
    operator = make_client(role="operator")
    assert operator.post(f"/api/v1/hosts/{gamma['id']}/refresh", params={"wait": 15}).is_success
    body = {"host_id": gamma["id"], "name": "extra-1", "vcpus": 1, "memory_mib": 64}

    refused = operator.post("/api/v1/guests", json=body)
    operator_forced = operator.post("/api/v1/guests", json={**body, "force": True})
    admin_forced = client.post("/api/v1/guests", json={**body, "force": True})

    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"].startswith(
        "vcpus: create would put 9 vCPUs on 2 CPUs (4.50:1), over the policy of 4.00:1; "
    )
    assert "create would put 5.1 GiB of guest memory on 4.0 GiB" in refused.json()["detail"]
    assert operator_forced.status_code == 403
    assert operator_forced.json()["field"] == "force"
    assert (admin_forced.status_code, admin_forced.json()["name"]) == (201, "extra-1")


def test_a_create_within_the_policy_needs_no_force(client: TestClient, two_hosts) -> None:
    alpha, _beta = two_hosts
    body = {"host_id": alpha["id"], "name": "fits-1", "vcpus": 4, "memory_mib": 4096}

    created = client.post("/api/v1/guests", json={**body, "start": True})

    assert created.status_code == 201, created.text
    assert ratio(overcommit(client, alpha)["cpu_running"])[2::2] == (1.0, "ok")


def test_the_host_summary_carries_the_running_ratios(client: TestClient, gamma: dict) -> None:
    listed = client.get("/api/v1/hosts").json()[0]

    assert (listed["cpu_running_ratio"], listed["cpu_state"]) == (4.0, "near")
    assert (listed["memory_running_ratio"], listed["memory_state"]) == (1.25, "over")
    assert client.get(f"/api/v1/hosts/{gamma['id']}").json()["memory_state"] == "over"


def test_samples_hold_the_running_ratios(client: TestClient, two_hosts) -> None:
    alpha, _beta = two_hosts
    path = f"/api/v1/hosts/{alpha['id']}/overcommit/samples"

    day = client.get(path)
    too_long = client.get(path, params={"hours": 26})
    unknown = client.get("/api/v1/hosts/987654/overcommit/samples")

    assert day.status_code == 200
    assert [(s["cpu_ratio"], s["memory_ratio"]) for s in day.json()] == [(0.5, 0.25)]
    assert too_long.status_code == 422
    assert unknown.status_code == 404


def test_a_revert_is_checked_with_the_snapshots_own_vcpus_not_the_current_definitions(
    client: TestClient,
) -> None:
    alpha = add_host(client, "alpha", node_uri("node-alpha.xml"))
    guest = f"/api/v1/guests/{DB_1}"
    # 8 CPUs at 0.75:1 allow 6 vCPUs; web-1 and web-2 run 4.
    policy = client.put(f"/api/v1/hosts/{alpha['id']}/policy", json={"cpu": 0.75})
    assert policy.status_code == 200, policy.text
    # db-1 snapshotted running with its 4 vCPUs (forced), then off and shrunk to 1 vCPU
    assert client.post(f"{guest}/actions/start", params={"force": True}).status_code == 200
    assert client.post(f"{guest}/snapshots", json={"name": "wide"}).json()["state"] == "running"
    assert client.post(f"{guest}/actions/force_off").status_code == 200

    def shrink(conn) -> None:
        domain = ET.fromstring(conn.domain(DB_1).XMLDesc(0))
        domain.find("vcpu").text = "1"
        conn.lv.defineXML(ET.tostring(domain, encoding="unicode"))

    client.app.state.sync.call(alpha["id"], shrink)
    refresh = client.post(f"/api/v1/hosts/{alpha['id']}/refresh", params={"wait": 15})
    assert refresh.status_code == 200, refresh.text
    shrunk = client.get(guest).json()["vcpus"]

    refused = client.post(f"{guest}/snapshots/wide/revert")
    still_off = client.get(guest).json()["status"]
    started = client.post(f"{guest}/actions/start")

    assert shrunk == 1
    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"].startswith(
        "vcpus: revert would put 8 vCPUs on 8 CPUs (1.00:1), over the policy of 0.75:1"
    )
    assert still_off == "shutoff"
    assert started.status_code == 200, started.text
