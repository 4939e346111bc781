"""Benchmark the inventory sync and the pages that read it; prints a table, not a test.

N test-driver hosts x M guests (default 10 x 500) are synced into a fresh database the way a
host worker does it (HostConnection.guests() then apply_sync in one transaction per host),
then the app is served by uvicorn and the guest list, the overview, a host page and its
overcommit page are timed.

Run it with `make bench`, or:

    .venv/bin/python bench/sync.py --hosts 10 --guests 500
    .venv/bin/python bench/sync.py \
        --database-url postgresql+psycopg://virtdeck:virtdeck@127.0.0.1:5432/postgres

A PostgreSQL URL names the server: a temporary database is created on it and dropped at the
end. Without --database-url a temporary SQLite file is used. Missed targets still exit 0; only a
crash exits non-zero.
"""

import argparse
import contextlib
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy import Engine, update
from sqlalchemy import text as sql
from sqlalchemy.orm import Session, sessionmaker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.config import Settings  # noqa: E402
from app.db import make_engine, make_session_factory, transaction  # noqa: E402
from app.deps import SESSION_COOKIE  # noqa: E402
from app.main import create_app  # noqa: E402
from app.models import Guest  # noqa: E402
from app.services.auth import start_session  # noqa: E402
from app.services.hosts import add_host, record_facts  # noqa: E402
from app.services.inventory import SyncResult, apply_sync  # noqa: E402
from app.services.users import create_user  # noqa: E402
from app.virt.connection import HostConnection  # noqa: E402
from app.virt.domain_xml import TAGS_NAMESPACE  # noqa: E402
from bench.common import Row, database, p95, print_table, print_targets  # noqa: E402

TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
ROLES = ("web", "db", "cache", "worker", "ci", "batch", "proxy", "mail")
SHUTOFF = "5"
# Targets on the 2-core reference machine, in seconds.
FIRST_SYNC_TARGET = 2.0
RESYNC_TARGET = 0.5
PAGE_TARGET_MS = 50.0


# --- the hosts -------------------------------------------------------------------------------


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def _domain(node: ET.Element, host: int, index: int) -> None:
    """A guest with a disk, a NIC, sometimes a CD-ROM, its role as a tag (and every tenth one
    "backup"); every third one shut off."""
    role = ROLES[index % len(ROLES)]
    name = f"{role}-h{host:02d}-{index:04d}"
    memory_mib = (512, 1024, 2048, 4096)[index % 4]
    domain = _sub(node, "domain", type="test")
    _sub(domain, "name", name)
    _sub(domain, "uuid", f"{host:08x}-0000-4000-8000-{index:012x}")
    _sub(domain, "memory", str(memory_mib), unit="MiB")
    _sub(domain, "currentMemory", str(memory_mib // (2 if index % 5 == 0 else 1)), unit="MiB")
    _sub(domain, "vcpu", str(1 + index % 4))
    _sub(_sub(domain, "os"), "type", "hvm")
    tags = _sub(_sub(domain, "metadata"), f"{{{TAGS_NAMESPACE}}}tags")
    for tag in (role, "backup") if index % 10 == 0 else (role,):
        _sub(tags, f"{{{TAGS_NAMESPACE}}}tag", tag)
    devices = _sub(domain, "devices")
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "source", file=f"/var/lib/libvirt/images/{name}.qcow2")
    _sub(disk, "driver", name="qemu", type="qcow2")
    _sub(disk, "target", dev="vda", bus="virtio")
    if index % 7 == 0:
        cdrom = _sub(devices, "disk", type="file", device="cdrom")
        _sub(cdrom, "source", file="/var/lib/libvirt/images/debian-12.iso")
        _sub(cdrom, "driver", name="qemu", type="raw")
        _sub(cdrom, "target", dev="sda", bus="sata")
    nic = _sub(devices, "interface", type="network")
    _sub(nic, "mac", address=f"52:54:00:{host:02x}:{index >> 8:02x}:{index & 0xFF:02x}")
    _sub(nic, "source", network="default")
    _sub(nic, "model", type="virtio")
    if index % 3 == 2:
        _sub(domain, f"{{{TEST_NS}}}runstate", SHUTOFF)


def write_node(path: Path, host: int, guests: int) -> None:
    """A test-driver node file with this many guests."""
    ET.register_namespace("test", TEST_NS)
    node = ET.Element("node")
    cpu = _sub(node, "cpu")
    for tag, text in (("mhz", "2400"), ("model", "x86_64"), ("nodes", "1"), ("sockets", "2"),
                      ("cores", "16"), ("threads", "2")):  # fmt: skip
        _sub(cpu, tag, text)
    _sub(node, "memory", str(512 * 1024 * 1024))  # KiB: 512 GiB
    for index in range(guests):
        _domain(node, host, index)
    ET.ElementTree(node).write(path, encoding="unicode", xml_declaration=True)


# --- the sync --------------------------------------------------------------------------------


@dataclass
class SyncTimes:
    """One pass over every host: wall time, its libvirt and database parts, rows written."""

    total: float = 0.0
    read: float = 0.0
    write: float = 0.0
    rows: int = 0


def connect(
    sessions: sessionmaker[Session], hosts: list[tuple[int, str]]
) -> list[tuple[int, HostConnection]]:
    """Open each host and record its facts, as a worker does after connecting."""
    opened = []
    for host_id, uri in hosts:
        conn = HostConnection(uri, keepalive=(3, 3), on_close=lambda _reason: None)
        opened.append((host_id, conn))
        facts = conn.facts()
        with transaction(sessions) as session:
            record_facts(session, host_id, facts)
    return opened


def sync_all(
    sessions: sessionmaker[Session], connections: list[tuple[int, HostConnection]]
) -> SyncTimes:
    """Read every host and apply its guests, one host after the other."""
    times = SyncTimes()
    began = time.perf_counter()
    for host_id, conn in connections:
        started = time.perf_counter()
        guests = conn.guests()
        read_done = time.perf_counter()
        with transaction(sessions) as session:
            result: SyncResult = apply_sync(
                session, host_id, guests, sync_ms=(read_done - started) * 1000
            )
        times.read += read_done - started
        times.write += time.perf_counter() - read_done
        times.rows += result.rows_written
    times.total = time.perf_counter() - began
    return times


def disturb(sessions: sessionmaker[Session], every: int) -> int:
    """Make every n-th guest row stale in the database so the next sync must rewrite it."""
    with transaction(sessions) as session:
        result = session.execute(update(Guest).where(Guest.id % every == 0).values(state="paused"))
        return result.rowcount


# --- the pages -------------------------------------------------------------------------------


def settle(engine: Engine) -> bool:
    """VACUUM ANALYZE on PostgreSQL, as autovacuum does a minute or so after a bulk sync, so the
    pages are timed with planner statistics and a visibility map (index-only counts) as a
    running server has them; this machine's test server runs with autovacuum off. Whether it
    ran (SQLite needs nothing)."""
    if engine.dialect.name != "postgresql":
        return False
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sql("VACUUM ANALYZE"))
    return True


@contextlib.contextmanager
def serve(database_url: str) -> Iterator[str]:
    """The app under uvicorn in a background thread; yields its base URL."""
    settings = Settings(database_url=database_url, sync_enabled=False, default_host_uri="")
    # proto must be IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets, and without it
    # keep-alive responses written in two parts wait ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def time_get(
    client: httpx.Client,
    path: str,
    *,
    requests: int,
    check: Callable,
    budget: float = float("inf"),
) -> list[float]:
    """Milliseconds of each of `requests` GETs of path, after a warm-up; fewer when the timed
    GETs have taken `budget` seconds (at least two are made)."""
    for _ in range(max(5, requests // 10)):
        check(client.get(path))
    samples: list[float] = []
    deadline = time.perf_counter() + budget
    for _ in range(requests):
        if len(samples) >= 2 and time.perf_counter() > deadline:
            break
        started = time.perf_counter()
        response = client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        check(response)
    return samples


def page_rows(label: str, samples: list[float]) -> list[Row]:
    """Median (with the target) and p95 rows for one page."""
    median = statistics.median(samples)
    return [
        Row(f"{label} median", f"{median:.1f} ms", f"≤ {PAGE_TARGET_MS:.0f} ms",
            median <= PAGE_TARGET_MS),
        Row(f"{label} p95", f"{p95(samples):.1f} ms"),
    ]  # fmt: skip


def _ok(expected_items: int) -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        response.raise_for_status()
        if expected_items and len(response.json()["items"]) != expected_items:
            raise RuntimeError(f"expected {expected_items} guests from {response.url}")

    return check


# --- the run ---------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path) -> list[Row]:
    """Build hosts, sync them, time the pages; the rows of the table."""
    rows: list[Row] = []
    total_guests = args.hosts * args.guests
    started = time.perf_counter()
    uris = []
    for host in range(args.hosts):
        path = workdir / f"node-{host:02d}.xml"
        write_node(path, host, args.guests)
        uris.append(f"test://{path}")
    rows.append(Row("generate node XML", f"{time.perf_counter() - started:.2f} s"))

    nodes = str(workdir)
    with database(args.database_url, workdir) as url:
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        try:
            with transaction(sessions) as session:
                hosts = []
                for i, uri in enumerate(uris):  # the node files are allowed where written
                    host = add_host(session, name=f"bench-{i:02d}", uri=uri, test_driver_dir=nodes)
                    hosts.append((host.id, uri))
            started = time.perf_counter()
            connections = connect(sessions, hosts)
            rows.append(
                Row(f"connect {args.hosts} hosts (not in sync)",
                    f"{time.perf_counter() - started:.2f} s")
            )  # fmt: skip
            try:
                rows += sync_rows(sessions, connections, total_guests, args.disturb_every)
            finally:
                for _, conn in connections:
                    conn.close()
            with transaction(sessions) as session:
                viewer = create_user(
                    session, name="bench", password="bench password", role="viewer"
                )
                cookie = start_session(session, viewer)[0]
            if settle(engine):
                rows.append(Row("VACUUM ANALYZE before the pages (as autovacuum would)", "done"))
            rows += page_timings(
                url, hosts[0][0], args.requests, min(100, total_guests), cookie=cookie
            )
        finally:
            engine.dispose()
    return rows


def sync_rows(
    sessions: sessionmaker[Session],
    connections: list[tuple[int, HostConnection]],
    total_guests: int,
    disturb_every: int,
) -> list[Row]:
    """First sync, unchanged resync and a resync after stale rows."""
    first = sync_all(sessions, connections)
    again = sync_all(sessions, connections)
    stale = disturb(sessions, disturb_every) if disturb_every else 0
    changed = sync_all(sessions, connections) if stale else None
    rows = [
        Row(f"first full sync ({total_guests} guests)", f"{first.total:.2f} s",
            f"≤ {FIRST_SYNC_TARGET:g} s", first.total <= FIRST_SYNC_TARGET),
        Row("  libvirt read / db write", f"{first.read:.2f} s / {first.write:.2f} s"),
        Row("  rows written", str(first.rows), str(total_guests), first.rows == total_guests),
        Row("unchanged resync", f"{again.total:.2f} s", f"≤ {RESYNC_TARGET:g} s",
            again.total <= RESYNC_TARGET),
        Row("  libvirt read / db write", f"{again.read:.2f} s / {again.write:.2f} s"),
        Row("  rows written", str(again.rows), "0", again.rows == 0),
    ]  # fmt: skip
    if changed is not None:
        rows += [
            Row(f"resync with {stale} stale rows", f"{changed.total:.2f} s"),
            Row("  rows written", str(changed.rows), str(stale), changed.rows == stale),
        ]
    return rows


def page_timings(
    url: str, host_id: int, requests: int, page_items: int, *, cookie: str
) -> list[Row]:
    """Median and p95 of the guest list, the overview, a host page and its overcommit page."""
    rows: list[Row] = []
    cookies = {SESSION_COOKIE: cookie}
    with serve(url) as base, httpx.Client(base_url=base, timeout=30, cookies=cookies) as client:
        pages = (
            ("GET /api/v1/guests?limit=100", "/api/v1/guests?limit=100", _ok(page_items)),
            ("GET / (overview)", "/", _ok(0)),
            (f"GET /hosts/{host_id} (100 guests)", f"/hosts/{host_id}", _ok(0)),
            (f"GET /hosts/{host_id}/overcommit", f"/hosts/{host_id}/overcommit", _ok(0)),
        )
        for label, path, check in pages:
            rows += page_rows(label, time_get(client, path, requests=requests, check=check))
    return rows


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10, help="test-driver hosts")
    parser.add_argument("--guests", type=int, default=500, help="guests per host")
    parser.add_argument("--requests", type=int, default=200, help="timed GETs per page")
    parser.add_argument(
        "--database-url",
        help="SQLite file (must not exist) or PostgreSQL server URL; default: temporary SQLite",
    )
    parser.add_argument(
        "--disturb-every", type=int, default=10,
        help="make every n-th guest row stale before a third sync (0: skip it)",
    )  # fmt: skip
    return parser.parse_args()


def main() -> int:
    """Run the benchmark and print the table; always exits 0."""
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="virtdeck-bench-"))
    try:
        rows = run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"virtdeck sync bench: {args.hosts} hosts x {args.guests} guests, "
          f"{args.requests} requests per page")  # fmt: skip
    print_table(("measure", "value", "target", "ok"), rows)
    print_targets(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
