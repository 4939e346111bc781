"""libvirt events reach the inventory without a sync, a periodic pass reads only what changed,
a reconcile catches a missed event; /metrics; host leases between instances."""

import re
import time
import xml.etree.ElementTree as ET
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update

from app.db import transaction
from app.models import Host
from app.models.base import utcnow
from app.services import leases
from tests.conftest import add_host, node_uri
from tests.polling import until

WEB_1 = "a1000000-0000-4000-8000-000000000001"
DB_1 = "a1000000-0000-4000-8000-000000000003"  # shut off
BUILD_1 = "b2000000-0000-4000-8000-000000000001"


def wait_for_state(client: TestClient, uuid: str, state: str, timeout: float = 3) -> float:
    """Seconds until the API shows the guest in state."""
    started = time.monotonic()
    while client.get(f"/api/v1/guests/{uuid}").json()["state"] != state:
        assert time.monotonic() - started < timeout, f"{uuid} not {state} after {timeout} s"
        time.sleep(0.02)
    return time.monotonic() - started


def figure(client: TestClient, name: str, **labels: str) -> float:
    """One sample of /metrics (host alpha's), 0 if absent."""
    wanted = {"host": "alpha", **labels}
    for line in client.get("/metrics").text.splitlines():
        found = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if found and dict(re.findall(r'(\w+)="([^"]*)"', found.group(1))) == wanted:
            return float(found.group(2))
    return 0.0


def test_a_change_made_outside_virtdeck_arrives_by_event_not_by_sync(
    client: TestClient, two_hosts
) -> None:
    alpha = two_hosts[0]
    synced = client.get(f"/api/v1/hosts/{alpha['id']}").json()["last_sync_at"]

    client.app.state.sync.call(alpha["id"], lambda conn: conn.domain(WEB_1).destroy())
    seconds = wait_for_state(client, WEB_1, "shutoff")
    client.app.state.sync.call(alpha["id"], lambda conn: conn.domain(WEB_1).create())
    wait_for_state(client, WEB_1, "running")

    assert seconds < 1.0
    # sync_interval is 60 s in tests: no sync ran in between, the events did it.
    assert client.get(f"/api/v1/hosts/{alpha['id']}").json()["last_sync_at"] == synced
    # The worker reports its figures every few seconds.
    until(lambda: figure(client, "virtdeck_domains_refreshed_total", by="event") >= 2, timeout=5)
    assert figure(client, "virtdeck_events_received_total") >= 2
    assert figure(client, "virtdeck_domains_refreshed_total", by="pass") == 0


def test_a_periodic_pass_reads_the_xml_of_new_or_changed_guests_only(make_client) -> None:
    client = make_client(sync_interval=0.1)
    alpha = add_host(client, "alpha", node_uri("node-alpha.xml"))
    sync = client.app.state.sync
    sync.call(alpha["id"], lambda conn: conn.unwatch())  # no events: only the passes see it
    passes = figure(client, "virtdeck_sync_duration_seconds_count")
    deadline = time.monotonic() + 5
    while figure(client, "virtdeck_sync_duration_seconds_count") < passes + 5:
        assert time.monotonic() < deadline, "no periodic passes"
        time.sleep(0.05)
    idle = figure(client, "virtdeck_domains_refreshed_total", by="pass")

    # A full reconcile between the change and the next pass would read it instead (on a loaded
    # machine the lease can lapse and be taken again, which reconciles): then the change is
    # made again, the other way.
    for state, change in [("shutoff", "destroy"), ("running", "create")] * 2:
        read = {by: figure(client, "virtdeck_domains_refreshed_total", by=by) for by in BY}
        sync.call(alpha["id"], lambda conn, change=change: getattr(conn.domain(WEB_1), change)())
        wait_for_state(client, WEB_1, state)
        until(lambda read=read: _refreshed(client, read), timeout=5)
        if figure(client, "virtdeck_domains_refreshed_total", by="reconcile") == read["reconcile"]:
            break

    assert idle == 0
    assert figure(client, "virtdeck_domains_refreshed_total", by="pass") == read["pass"] + 1
    assert figure(client, "virtdeck_domains_refreshed_total", by="event") == 0


BY = ("pass", "event", "reconcile")


def _refreshed(client: TestClient, before: dict[str, float]) -> bool:
    """Whether a pass or a reconcile read a guest's XML since `before` was read."""
    return any(figure(client, "virtdeck_domains_refreshed_total", by=by) > before[by] for by in BY)


def test_a_change_whose_event_was_missed_is_caught_by_the_reconcile(make_client) -> None:
    client = make_client(reconcile_interval=1.0)  # and sync_interval 60: no periodic pass
    alpha = add_host(client, "alpha", node_uri("node-alpha.xml"))
    sync = client.app.state.sync
    sync.call(alpha["id"], lambda conn: conn.unwatch())

    def more_vcpus(conn) -> None:  # same state: only the XML tells
        domain = ET.fromstring(conn.domain(DB_1).XMLDesc(0))
        domain.find("vcpu").text = "3"
        conn.lv.defineXML(ET.tostring(domain, encoding="unicode"))

    sync.call(alpha["id"], more_vcpus)
    deadline = time.monotonic() + 5
    while client.get(f"/api/v1/guests/{DB_1}").json()["vcpus"] != 3:
        assert time.monotonic() < deadline, "the reconcile did not catch the change"
        time.sleep(0.05)
    host = client.get(f"/api/v1/hosts/{alpha['id']}").json()
    page = client.get(f"/hosts/{alpha['id']}").text

    until(lambda: figure(client, "virtdeck_last_reconcile_timestamp_seconds") > time.time() - 5,
          timeout=5)  # fmt: skip

    assert host["last_reconcile_at"] > alpha["last_reconcile_at"]
    assert figure(client, "virtdeck_domains_refreshed_total", by="event") == 0
    assert figure(client, "virtdeck_domains_refreshed_total", by="reconcile") >= 6
    assert re.search(r"last full reconcile: \d+ s ago", page)


def test_an_undefined_guest_is_marked_gone_by_its_event(client: TestClient, two_hosts) -> None:
    beta = two_hosts[1]

    def undefine(conn) -> None:
        dom = conn.domain(BUILD_1)
        dom.destroy()
        dom.undefine()

    client.app.state.sync.call(beta["id"], undefine)
    deadline = time.monotonic() + 3
    while client.get(f"/api/v1/guests/{BUILD_1}").json()["status"] != "gone":
        assert time.monotonic() < deadline, "not marked gone"
        time.sleep(0.02)


def test_metrics_count_hosts_guests_and_jobs(client: TestClient, make_client, two_hosts) -> None:
    viewer = make_client(role="viewer")
    anonymous = make_client(role=None)

    refused = anonymous.get("/metrics")
    text = viewer.get("/metrics")

    assert refused.status_code == 401
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    lines = set(text.text.splitlines())
    assert 'virtdeck_hosts{state="connected"} 2' in lines
    assert {
        'virtdeck_guests{state="running"} 3',
        'virtdeck_guests{state="shutoff"} 3',
        'virtdeck_guests{state="paused"} 1',
    } <= lines
    # Sync figures come from the workers' reports in the database: the viewer's instance tells
    # those of the first app's worker, which syncs both hosts (the viewer's own syncs none).

    leader: set[str] = set()

    def reported() -> bool:
        """the workers' sync figures in /metrics"""
        leader.clear()
        leader.update(viewer.get("/metrics").text.splitlines())
        return any(
            line.startswith('virtdeck_sync_duration_seconds_count{host="alpha"}') for line in leader
        )

    until(reported, timeout=10)
    assert "# TYPE virtdeck_sync_duration_seconds summary" in leader
    assert any(line.startswith("virtdeck_host_leases{") and line.endswith(" 2") for line in leader)
    assert any(line.startswith("virtdeck_host_leases{") and line.endswith(" 0") for line in leader)
    assert "virtdeck_job_queue_depth 0" in leader


def test_a_lease_is_held_by_one_owner_until_it_expires(sessions, two_hosts) -> None:
    with transaction(sessions) as session:
        session.execute(update(Host).values(lease_owner=None, lease_expires_at=None))
        first = leases.claim(session, "instance-a", ttl=15)
    with transaction(sessions) as session:
        second = leases.claim(session, "instance-b", ttl=15)
        renewed = leases.claim(session, "instance-a", ttl=15)
    with transaction(sessions) as session:  # instance-a stops renewing: its leases run out
        session.execute(update(Host).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        taken_over = leases.claim(session, "instance-b", ttl=15)
        owners = leases.owners(session)
    with transaction(sessions) as session:
        leases.release(session, "instance-b")
        released = leases.owners(session)

    ids = {two_hosts[0]["id"], two_hosts[1]["id"]}
    assert first == ids and second == set() and renewed == ids
    assert taken_over == ids and set(owners.values()) == {"instance-b"}
    assert set(released.values()) == {None}
