"""Two `virtdeck serve` processes on one PostgreSQL database: each host is synced by exactly one
of them and the other takes every host over when it stops; a click on a page of one instance
shows on an open page of the other; a job runs on the instance it was started on and another
instance starting up leaves it alone."""

import dataclasses
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from app.db import make_engine, make_session_factory, transaction
from app.models import Job
from app.models.base import utcnow
from app.services import leases
from app.services.jobs import INTERRUPTED
from tests.browser import admin_tabs, chromium, shows, wait_for_stream
from tests.conftest import node_uri
from tests.databases import throwaway_postgresql
from tests.events import event_stream, wait_for
from tests.libvirtd import SYSTEM_URI, throwaway_guest, virsh
from tests.polling import finished_job, until
from tests.serve import Server, running_server

NODES = ("node-alpha.xml", "node-beta.xml", "node-storage.xml")
TAKEOVER_LIMIT = 30.0


def env_for(url: str, **extra: str) -> dict[str, str]:
    """The environment of an instance on this database, with no default host."""
    return {"VIRTDECK_DATABASE_URL": url, "VIRTDECK_DEFAULT_HOST_URI": "", **extra}


@contextmanager
def second_instance(workdir: Path, env: dict[str, str], first: Server) -> Iterator[Server]:
    """Another `virtdeck serve` on the first one's database, called with the first's token."""
    with running_server(workdir, env, admin=None) as server:
        yield dataclasses.replace(server, token=first.token)


def metrics(server: Server) -> str:
    """The instance's /metrics text."""
    headers = {"Authorization": f"Bearer {server.token}"}
    response = httpx.get(f"{server.url}/metrics", headers=headers, timeout=10)
    response.raise_for_status()
    return response.text


def lease_gauge(server: Server) -> tuple[str, int]:
    """The instance's id and how many host leases it says it holds."""
    found = re.search(r'^virtdeck_host_leases\{instance="([^"]+)"\} (\S+)$', metrics(server), re.M)
    assert found, "no virtdeck_host_leases in /metrics"
    return found.group(1), int(float(found.group(2)))


def synced_by(server: Server) -> set[str]:
    """The names of the hosts whose syncs the instance reports (those it syncs)."""
    return set(
        re.findall(r'^virtdeck_sync_last_duration_seconds\{host="([^"]+)"\}', metrics(server), re.M)
    )


def lease_owners(url: str) -> dict[int, str | None]:
    """Each host's live lease owner, from the database."""
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            return leases.owners(session)
    finally:
        engine.dispose()


def test_each_host_is_synced_by_one_instance_and_the_other_takes_all_when_it_stops(
    tmp_path: Path,
) -> None:
    with throwaway_postgresql() as url, ExitStack() as first:
        env = env_for(url, VIRTDECK_SYNC_INTERVAL="2")
        a = first.enter_context(running_server(tmp_path / "a", env))
        with second_instance(tmp_path / "b", env, a) as b:
            names = {f"{n.split('.')[0]}-{i}": node_uri(n) for i, n in enumerate(NODES)}
            for name, uri in names.items():
                a.add_host(name, uri)
            # Settled once the leases both instances report cover every host and each host's
            # syncs are reported by one of them.
            until(lambda: lease_gauge(a)[1] + lease_gauge(b)[1] == len(names), timeout=10)
            until(lambda: synced_by(a) | synced_by(b) == set(names), timeout=10)
            (a_id, a_held), (b_id, b_held) = lease_gauge(a), lease_gauge(b)
            owners = lease_owners(url)
            by_a, by_b = synced_by(a), synced_by(b)

            assert a_id != b_id
            assert sorted(owners.values()) == sorted([a_id] * a_held + [b_id] * b_held)
            assert a_held + b_held == len(names)
            assert by_a | by_b == set(names) and not by_a & by_b
            assert len(by_a) == a_held

            stopping = time.monotonic()
            first.close()  # instance A stops (SIGTERM) and its process ends
            until(lambda: lease_gauge(b)[1] == len(names), timeout=TAKEOVER_LIMIT)
            took_over = time.monotonic() - stopping
            until(lambda: synced_by(b) == set(names), timeout=TAKEOVER_LIMIT)
            syncing = time.monotonic() - stopping
            print(f"\nA held {a_held} of {len(names)} hosts, B {b_held}; after A stopped B held "
                  f"all in {took_over:.1f} s and synced all in {syncing:.1f} s")  # fmt: skip

            assert lease_gauge(b) == (b_id, len(names))
            assert set(lease_owners(url).values()) == {b_id}
            assert synced_by(b) == set(names)
            assert syncing < TAKEOVER_LIMIT


@pytest.mark.libvirtd
@pytest.mark.browser
def test_a_click_on_a_page_of_one_instance_shows_on_a_page_of_the_other(tmp_path: Path) -> None:
    """Instance A syncs qemu:///system (it registered it before B started) and B only serves
    pages: B learns of the change only through PostgreSQL's NOTIFY."""
    with throwaway_guest(tmp_path) as guest, throwaway_postgresql() as url:
        virsh("start", guest.uuid)
        env = env_for(url, VIRTDECK_SYNC_INTERVAL="300")
        with running_server(tmp_path / "a", env) as a:
            a.add_host("local", SYSTEM_URI)
            with (
                second_instance(tmp_path / "b", env, a) as b,
                chromium() as browser,
                admin_tabs(browser, a, 1) as (tab_a,),
                admin_tabs(browser, b, 1) as (tab_b,),
                event_stream(b) as events,
            ):
                assert set(lease_owners(url).values()) == {lease_gauge(a)[0]}
                for tab, server in ((tab_a, a), (tab_b, b)):
                    tab.goto(f"{server.url}/guests/{guest.uuid}")
                    shows(tab, "#guest-status", "running", timeout=5)
                    wait_for_stream(tab)

                tab_a.on("dialog", lambda dialog: dialog.accept())
                button = tab_a.locator('#guest-status button[data-action="force_off"]')
                with tab_a.expect_request(lambda r: r.method == "POST") as request:
                    clicked = time.monotonic()
                    button.click()
                shows(tab_a, "#guest-status", "shutoff", timeout=10)
                on_a = time.monotonic() - clicked
                shows(tab_b, "#guest-status", "shutoff", timeout=3)
                on_b = time.monotonic() - clicked
                streamed = wait_for(events, f"guest-{guest.uuid}", 3) - clicked
                print(f"\nForce off clicked on A: shut off on A's page {on_a:.2f} s, on B's page "
                      f"{on_b:.2f} s, guest-<uuid> on B's stream {streamed:.2f} s")  # fmt: skip

                assert b.api("GET", f"/guests/{guest.uuid}").json()["state"] == "shutoff"
                assert on_b - on_a < 1.0
                # A click is the user's own action: it counts as activity for the session.
                assert "x-virtdeck-background" not in request.value.headers
                assert request.value.url.endswith(f"/guests/{guest.uuid}/actions/force_off")


def test_a_job_runs_where_it_was_started_and_a_starting_instance_leaves_live_jobs_alone(
    tmp_path: Path,
) -> None:
    with throwaway_postgresql() as url:
        env = env_for(url)
        with running_server(tmp_path / "a", env) as a:
            a_id = lease_gauge(a)[0]
            host_id = a.add_host("shared", "test:///default")
            # test:///default's own guest has 8 GiB on a 3 GiB host: a memory policy it fits.
            policy = a.api("PUT", f"/hosts/{host_id}/policy", json={"memory": 4.0})
            assert policy.status_code == 200, policy.text
            body = {"host_id": host_id, "name": "made-by-a", "vcpus": 1, "memory_mib": 64,
                    "disk": {"pool": "default-pool", "size_gib": 1}}  # fmt: skip
            created = a.api("POST", "/guests", json=body)
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]
            finished_job(a, job_id)

            engine = make_engine(url)
            sessions = make_session_factory(engine)
            with transaction(sessions) as session:
                # A long job of A's between two heartbeats, and one of an instance gone long ago.
                alive = Job(kind="backup", status="running", progress=0.5, owner=a_id,
                            heartbeat_at=utcnow() - timedelta(seconds=30))  # fmt: skip
                dead = Job(kind="backup", status="running", progress=0.5, owner="gone-instance",
                           heartbeat_at=utcnow() - timedelta(minutes=2))  # fmt: skip
                session.add_all([alive, dead])
                session.flush()
                alive_id, dead_id = alive.id, dead.id
            try:
                with event_stream(a) as events, second_instance(tmp_path / "b", env, a) as b:
                    b_id = lease_gauge(b)[0]
                    with sessions() as session:
                        jobs = {j.id: j for j in session.scalars(select(Job))}
                    # B failed the dead job at its start: A's pages following it hear of it.
                    wait_for(events, f"job-{dead_id}", 5)
            finally:
                engine.dispose()

    made = jobs[job_id]
    assert (made.status, made.owner, made.error) == ("succeeded", a_id, None)
    assert b_id != a_id
    assert (jobs[alive_id].status, jobs[alive_id].error) == ("running", None)
    assert (jobs[dead_id].status, jobs[dead_id].error) == ("failed", INTERRUPTED)
    assert len(jobs) == 3
