"""Several virtdeck instances on one PostgreSQL database: each host is synced by exactly one
worker and another takes every host over when it stops or is killed (with the job it was
running settled); a click on a page of one instance shows on an open page of the other; a job
runs on the worker that took it and a worker starting up leaves live jobs alone."""

import dataclasses
import re
import time
from collections import Counter
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
from app.workers.process import STOP_GRACE
from tests.browser import admin_tabs, chromium, shows, wait_for_stream
from tests.conftest import node_uri
from tests.databases import throwaway_postgresql
from tests.events import event_stream, wait_for
from tests.libvirtd import IMAGES, SYSTEM_URI, qemu_io, throwaway_guest, virsh
from tests.polling import finished_job, until
from tests.serve import Server, running_server, running_worker
from tests.storage import throwaway_pool

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


def lease_gauges(server: Server) -> dict[str, int]:
    """How many host leases each running worker holds, as the instance's /metrics tells (every
    instance tells the same: the workers report through the database)."""
    found = re.findall(r'^virtdeck_host_leases\{instance="([^"]+)"\} (\S+)$', metrics(server), re.M)
    return {instance: int(float(count)) for instance, count in found}


def synced(server: Server) -> set[str]:
    """The names of the hosts whose syncs the workers report."""
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


def sole_owner(url: str) -> str | None:
    """The one instance that holds every host's lease, if one does."""
    owners = set(lease_owners(url).values())
    return owners.pop() if len(owners) == 1 else None


def test_each_host_is_synced_by_one_worker_and_another_takes_all_when_it_stops(
    tmp_path: Path,
) -> None:
    with throwaway_postgresql() as url, ExitStack() as first:
        env = env_for(url, VIRTDECK_SYNC_INTERVAL="2")
        a = first.enter_context(running_server(tmp_path / "a", env))
        with second_instance(tmp_path / "b", env, a) as b:
            names = {f"{n.split('.')[0]}-{i}": node_uri(n) for i, n in enumerate(NODES)}
            for name, uri in names.items():
                a.add_host(name, uri)
            # Settled once both workers report, their leases cover every host and every host's
            # syncs are reported.
            until(lambda: len(lease_gauges(a)) == 2, timeout=10)
            until(lambda: sum(lease_gauges(a).values()) == len(names), timeout=10)
            until(lambda: synced(a) == set(names), timeout=10)
            gauges, owners = lease_gauges(a), lease_owners(url)

            assert lease_gauges(b) == gauges  # every instance tells the same
            assert Counter(owners.values()) == Counter(
                {instance: held for instance, held in gauges.items() if held}
            )

            stopping = time.monotonic()
            first.close()  # instance A stops (SIGTERM): its worker ends and hands back its leases
            until(lambda: sole_owner(url) is not None, timeout=TAKEOVER_LIMIT)
            took_over = time.monotonic() - stopping
            survivor = sole_owner(url)
            until(lambda: lease_gauges(b) == {survivor: len(names)}, timeout=TAKEOVER_LIMIT)
            print(f"\nworkers held {sorted(gauges.values())} of {len(names)} hosts; after A "
                  f"stopped B's worker held all in {took_over:.1f} s")  # fmt: skip

            assert survivor in gauges
            assert synced(b) == set(names)
            assert took_over < TAKEOVER_LIMIT


@pytest.mark.libvirtd
def test_a_killed_worker_has_its_hosts_and_its_running_backup_taken_over(tmp_path: Path) -> None:
    """kill -9 of the worker that syncs the hosts and runs a backup (slowed to 1 MiB/s): the
    other worker holds every host and the backup's job is failed as interrupted within
    TAKEOVER_LIMIT seconds; the server answers throughout."""
    with (
        throwaway_pool() as pool,
        throwaway_guest(tmp_path, directory=IMAGES / pool, size="32M") as guest,
        throwaway_postgresql() as url,
    ):
        written = qemu_io(guest.disk, "write -P 0x5a 0 32M")
        assert written.returncode == 0, written.stderr
        env = env_for(url, VIRTDECK_BACKUP_BANDWIDTH_MIB="1",
                      VIRTDECK_BACKUP_DIR=str(tmp_path / "backups"))  # fmt: skip
        with (
            running_server(tmp_path / "web", env, worker="none") as web,
            running_worker(tmp_path / "w1", env) as first,
        ):
            host_id = web.add_host("local", SYSTEM_URI)
            web.add_host("alpha", node_uri("node-alpha.xml"))
            started = web.api("POST", f"/guests/{guest.uuid}/backups")
            assert started.status_code == 202, started.text
            job_id = started.json()["job"]["id"]
            until(lambda: web.api("GET", f"/jobs/{job_id}").json()["progress"] > 0, timeout=30)
            (killed,) = set(lease_owners(url).values())
            with running_worker(tmp_path / "w2", env):
                until(lambda: len(lease_gauges(web)) == 2, timeout=10)
                (other,) = set(lease_gauges(web)) - {killed}
                first.kill()
                killed_at = time.monotonic()
                until(lambda: set(lease_owners(url).values()) == {other}, timeout=TAKEOVER_LIMIT)
                hosts_moved = time.monotonic() - killed_at
                job = finished_job(web, job_id, timeout=TAKEOVER_LIMIT)
                settled = time.monotonic() - killed_at
                backup = web.api("GET", f"/backups/{started.json()['backup']['id']}").json()
                host = web.api("GET", f"/hosts/{host_id}").json()
        print(f"\nworker killed: hosts taken over in {hosts_moved:.1f} s, "
              f"its backup settled in {settled:.1f} s")  # fmt: skip

    assert (job["status"], job["error"]) == ("failed", INTERRUPTED)
    assert backup["status"] == "failed"
    assert host["connection"] == "connected"
    assert settled < TAKEOVER_LIMIT


@pytest.mark.libvirtd
def test_a_stopped_worker_fails_its_running_backup_removes_its_files_and_exits_in_time(
    tmp_path: Path,
) -> None:
    """SIGTERM to the worker running a backup (slowed to 1 MiB/s: 32 s of copying): it tells
    the job to end after its grace, so the backup fails as interrupted with none of its files
    left, and the process is gone within STOP_GRACE (before its server would kill it)."""
    with (
        throwaway_pool() as pool,
        throwaway_guest(tmp_path, directory=IMAGES / pool, size="32M") as guest,
    ):
        written = qemu_io(guest.disk, "write -P 0x5a 0 32M")
        assert written.returncode == 0, written.stderr
        stored = tmp_path / "backups"
        env = env_for(f"sqlite:///{tmp_path / 'v.db'}", VIRTDECK_BACKUP_BANDWIDTH_MIB="1",
                      VIRTDECK_BACKUP_DIR=str(stored))  # fmt: skip
        with (
            running_server(tmp_path / "web", env, worker="none") as web,
            running_worker(tmp_path / "worker", env) as worker,
        ):
            web.add_host("local", SYSTEM_URI)
            started = web.api("POST", f"/guests/{guest.uuid}/backups")
            assert started.status_code == 202, started.text
            job_id = started.json()["job"]["id"]
            until(lambda: web.api("GET", f"/jobs/{job_id}").json()["progress"] > 0, timeout=30)
            stopping = time.monotonic()
            worker.terminate()
            code = worker.wait(timeout=STOP_GRACE + 10)
            stopped = time.monotonic() - stopping
            job = web.api("GET", f"/jobs/{job_id}").json()
            backup = web.api("GET", f"/backups/{started.json()['backup']['id']}").json()
        print(f"\nworker stopped in {stopped:.1f} s")

    assert (code, stopped < STOP_GRACE) == (0, True)
    assert (job["status"], job["error"]) == ("failed", INTERRUPTED)
    assert (backup["status"], backup["error"]) == ("failed", INTERRUPTED)
    assert [p for p in stored.rglob("*") if not p.is_dir()] == []


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
                assert len(set(lease_owners(url).values())) == 1  # A's worker syncs it
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


def test_a_job_runs_on_the_worker_that_took_it_and_a_starting_worker_leaves_live_jobs_alone(
    tmp_path: Path,
) -> None:
    with throwaway_postgresql() as url:
        env = env_for(url)
        with running_server(tmp_path / "a", env) as a:
            host_id = a.add_host("shared", "test:///default")
            (a_id,) = set(lease_owners(url).values())  # A's worker
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
                # A long job of A's between two heartbeats, and one of a worker gone long ago.
                alive = Job(kind="backup", status="running", progress=0.5, owner=a_id,
                            heartbeat_at=utcnow() - timedelta(seconds=8))  # fmt: skip
                dead = Job(kind="backup", status="running", progress=0.5, owner="gone-instance",
                           heartbeat_at=utcnow() - timedelta(minutes=2))  # fmt: skip
                session.add_all([alive, dead])
                session.flush()
                alive_id, dead_id = alive.id, dead.id
            try:
                with event_stream(a) as events, second_instance(tmp_path / "b", env, a) as b:
                    # B's worker failed the dead job at its start: A's pages hear of it.
                    wait_for(events, f"job-{dead_id}", 5)
                    until(lambda: len(lease_gauges(b)) == 2, timeout=10)
                    (b_id,) = set(lease_gauges(b)) - {a_id}
                    with sessions() as session:
                        jobs = {j.id: j for j in session.scalars(select(Job))}
            finally:
                engine.dispose()

    made = jobs[job_id]
    assert (made.status, made.owner, made.error) == ("succeeded", a_id, None)
    assert b_id != a_id
    assert (jobs[alive_id].status, jobs[alive_id].error) == ("running", None)
    assert (jobs[dead_id].status, jobs[dead_id].error) == ("failed", INTERRUPTED)
    assert len(jobs) == 3
