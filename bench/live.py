"""Benchmark live updates and hung hosts; prints tables, not a test.

Events: a throwaway guest vdtest-<hex> (64 MiB, 1 vCPU, no OS) on the real libvirtd
(qemu:///system, so run it as root) is started and destroyed with virsh, alternately, --changes
times, while `virtdeck serve` (sync interval one hour, so only libvirt events can explain an
update) has /events open. Each change is timed three ways: the virsh command itself; from the
libvirt event (as a second, independent libvirt connection of this script sees it) to the
guest-<uuid> message on the stream, which is virtdeck's own delay; and from virsh's return to
that message. Target: p95 of the event-to-message delay at most 1 s.

Hung hosts: `virtdeck serve` gets --hosts test-driver hosts of --guests guests each; in a second
run --hanging of them are instead loopback TCP listeners that accept and never answer
(test+tcp://127.0.0.1:<port>/default). Both runs report the healthy hosts' syncs (from
/metrics) over --window seconds and the page latency of GET / (a logged-in browser session) and
GET /api/v1/guests?limit=100 (an API token), median and p95 over --requests requests.

Run it with `make bench`, or:

    .venv/bin/python bench/live.py --changes 50 --hosts 20 --hanging 2
    .venv/bin/python bench/live.py \\
        --database-url postgresql+psycopg://virtdeck:virtdeck@127.0.0.1:5432/postgres

A PostgreSQL URL names the server: a temporary database is created on it for each run and
dropped at the end (the events then travel through NOTIFY). Without --database-url each run has
its own temporary SQLite file. Everything made (guest, disk, databases, files) is removed, on
failure too. Missed targets still exit 0; only a crash exits non-zero.
"""

import argparse
import contextlib
import queue
import re
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.deps import SESSION_COOKIE  # noqa: E402
from app.virt.connection import HostConnection  # noqa: E402
from bench.common import Row, database, p95, print_table, print_targets  # noqa: E402
from bench.sync import time_get, write_node  # noqa: E402
from tests.conftest import post_login  # noqa: E402
from tests.events import drain, event_stream, wait_for  # noqa: E402
from tests.libvirtd import SYSTEM_URI, throwaway_guest, virsh  # noqa: E402
from tests.serve import ADMIN_PASSWORD, Server, running_server  # noqa: E402

EVENT_TARGET = 1.0  # seconds, p95 from the libvirt event to the SSE message
SYNC_INTERVAL = 5.0
FIRST_SYNC_TIMEOUT = 120.0
SAMPLE = re.compile(r'^(virtdeck_sync_duration_seconds_(?:sum|count))\{host="([^"]+)"\} (\S+)$')


def _subdir(workdir: Path, name: str) -> Path:
    """A new directory of this name in workdir (each run has its own database and log)."""
    path = workdir / name
    path.mkdir()
    return path


# --- events ----------------------------------------------------------------------------------


@dataclass
class Change:
    """One virsh start or destroy: its seconds, and the seconds to the SSE message."""

    command: float
    from_event: float
    from_return: float


def time_changes(server: Server, uuid: str, changes: int, pause: float) -> dict[str, list[Change]]:
    """Start and destroy the guest alternately; each change's timings by virsh command."""
    seen: queue.Queue = queue.Queue()

    def on_event(event_uuid: str, _kind: str) -> None:
        if event_uuid == uuid:
            seen.put(time.monotonic())

    watcher = HostConnection(SYSTEM_URI, keepalive=(5, 3), on_close=lambda _reason: None)
    timings: dict[str, list[Change]] = {"start": [], "destroy": []}
    try:
        watcher.watch(on_event)
        with event_stream(server) as events:
            for index in range(changes):
                command = ("start", "destroy")[index % 2]
                drain(seen, events)
                began = time.monotonic()
                virsh(command, uuid)
                returned = time.monotonic()
                arrived = wait_for(events, f"guest-{uuid}", 10)
                event_at = seen.get(timeout=10)
                timings[command].append(
                    Change(returned - began, arrived - event_at, arrived - returned)
                )
                time.sleep(pause)
    finally:
        watcher.close()
    return timings


def _seconds(samples: list[float]) -> tuple[str, str]:
    return f"{statistics.median(samples):.3f} s", f"{p95(samples):.3f} s"


def event_rows(timings: dict[str, list[Change]]) -> list[Row]:
    """p50 and p95 of each delay, per command and over all changes (with the target)."""
    rows = []
    for command, changes in timings.items():
        rows += [
            Row(f"virsh {command} x{len(changes)}: the command",
                _seconds([c.command for c in changes])),
            Row("  libvirt event -> SSE message", _seconds([c.from_event for c in changes])),
            Row("  virsh returned -> SSE message", _seconds([c.from_return for c in changes])),
        ]  # fmt: skip
    every = [c.from_event for changes in timings.values() for c in changes]
    rows.append(
        Row(f"all {len(every)} changes: libvirt event -> SSE message", _seconds(every),
            f"p95 ≤ {EVENT_TARGET:g} s", p95(every) <= EVENT_TARGET)
    )  # fmt: skip
    return rows


def bench_events(args: argparse.Namespace, workdir: Path) -> list[Row]:
    """The events table's rows."""
    env = {"VIRTDECK_DEFAULT_HOST_URI": SYSTEM_URI, "VIRTDECK_SYNC_INTERVAL": "3600"}
    workdir = _subdir(workdir, "events")
    with (
        database(args.database_url, workdir) as url,
        throwaway_guest(workdir) as guest,
        running_server(workdir, {**env, "VIRTDECK_DATABASE_URL": url}) as server,
    ):
        host = server.api("GET", "/hosts").json()[0]
        server.api("POST", f"/hosts/{host['id']}/refresh", params={"wait": 15}).raise_for_status()
        timings = time_changes(server, guest.uuid, args.changes, args.pause)
    return event_rows(timings)


# --- hung hosts ------------------------------------------------------------------------------


@contextlib.contextmanager
def hanging_host() -> Iterator[str]:
    """A loopback TCP listener that accepts connections and never answers; yields its URI."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"test+tcp://127.0.0.1:{listener.getsockname()[1]}/default"
    finally:
        stop.set()
        thread.join(timeout=2)
        for sock in [*held, listener]:
            sock.close()


@dataclass
class FleetRun:
    """What one run with some hanging hosts measured."""

    hanging: int
    first_sync: float = 0.0
    sync_means: list[float] = field(default_factory=list)  # seconds, per healthy host
    syncs: list[float] = field(default_factory=list)  # syncs in the window, per healthy host
    hanging_states: list[str] = field(default_factory=list)
    overview: list[float] = field(default_factory=list)  # milliseconds
    guests: list[float] = field(default_factory=list)  # milliseconds


def _sync_totals(server: Server) -> dict[str, dict[str, float]]:
    """Per host name: the sum and count of its syncs, from /metrics."""
    headers = {"Authorization": f"Bearer {server.token}"}
    text = httpx.get(f"{server.url}/metrics", headers=headers, timeout=10).text
    totals: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if found := SAMPLE.match(line):
            name, host, value = found.groups()
            totals.setdefault(host, {})[name.rsplit("_", 1)[1]] = float(value)
    return totals


def _wait_first_syncs(server: Server, healthy: set[str]) -> float:
    """Seconds until every healthy host has synced once."""
    started = time.monotonic()
    while True:
        hosts = server.api("GET", "/hosts").json()
        if all(h["last_sync_at"] for h in hosts if h["name"] in healthy):
            return time.monotonic() - started
        if time.monotonic() - started > FIRST_SYNC_TIMEOUT:
            raise RuntimeError(f"the healthy hosts did not sync within {FIRST_SYNC_TIMEOUT:g} s")
        time.sleep(0.2)


def _page_samples(server: Server, requests: int) -> tuple[list[float], list[float]]:
    """Milliseconds of GET / as a logged-in user and GET /api/v1/guests?limit=100 by token."""
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        login = post_login(browser, "admin", ADMIN_PASSWORD)
        if SESSION_COOKIE not in browser.cookies:
            raise RuntimeError(f"log in failed: {login.status_code}")
        overview = time_get(browser, "/", requests=requests, check=httpx.Response.raise_for_status)
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.url, timeout=30, headers=headers) as api:
        guests = time_get(
            api,
            "/api/v1/guests?limit=100",
            requests=requests,
            check=httpx.Response.raise_for_status,
        )
    return overview, guests


def run_fleet(args: argparse.Namespace, workdir: Path, nodes: list[Path], hanging: int) -> FleetRun:
    """Serve the healthy nodes and `hanging` hung hosts; measure syncs and pages."""
    run = FleetRun(hanging=hanging)
    healthy = {f"node-{i:02d}": f"test://{path}" for i, path in enumerate(nodes)}
    env = {
        "VIRTDECK_DEFAULT_HOST_URI": "",
        "VIRTDECK_SYNC_INTERVAL": f"{SYNC_INTERVAL:g}",
        "VIRTDECK_TEST_DRIVER_DIR": str(workdir),  # where bench_fleet wrote the nodes
    }
    workdir = _subdir(workdir, f"fleet-{hanging}")
    with contextlib.ExitStack() as stack:
        hung = {f"hung-{i}": stack.enter_context(hanging_host()) for i in range(hanging)}
        url = stack.enter_context(database(args.database_url, workdir))
        server = stack.enter_context(running_server(workdir, {**env, "VIRTDECK_DATABASE_URL": url}))
        for name, uri in {**healthy, **hung}.items():
            server.api("POST", "/hosts", json={"name": name, "uri": uri}).raise_for_status()
        run.first_sync = _wait_first_syncs(server, set(healthy))
        before = _sync_totals(server)
        time.sleep(args.window)
        after = _sync_totals(server)
        for name in healthy:
            now, then = after.get(name, {}), before.get(name, {})
            count = now.get("count", 0) - then.get("count", 0)
            run.syncs.append(count)
            if count:
                run.sync_means.append((now["sum"] - then.get("sum", 0)) / count)
        states = {h["name"]: h["connection"] for h in server.api("GET", "/hosts").json()}
        run.hanging_states = sorted(states[name] for name in hung)
        run.overview, run.guests = _page_samples(server, args.requests)
    return run


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def fleet_cells(args: argparse.Namespace, run: FleetRun) -> dict[str, str]:
    """One run's column of the hung-hosts table, by measure."""
    window = f"syncs per healthy host in {args.window:g} s (~{args.window / SYNC_INTERVAL:g})"
    overview, guests = "GET / (overview)", "GET /api/v1/guests?limit=100"
    return {
        "healthy hosts": str(args.hosts - run.hanging),
        "first sync of every healthy host": f"{run.first_sync:.1f} s",
        "healthy sync, median of the hosts' means": _ms(statistics.median(run.sync_means)),
        "healthy sync, slowest host's mean": _ms(max(run.sync_means)),
        window: f"{min(run.syncs):g} to {max(run.syncs):g}",
        "hanging hosts shown as": ", ".join(run.hanging_states) or "—",
        f"{overview} median": f"{statistics.median(run.overview):.1f} ms",
        f"{overview} p95": f"{p95(run.overview):.1f} ms",
        f"{guests} median": f"{statistics.median(run.guests):.1f} ms",
        f"{guests} p95": f"{p95(run.guests):.1f} ms",
    }


def fleet_rows(args: argparse.Namespace, runs: list[FleetRun]) -> list[Row]:
    """The hung-hosts table's rows: one value column per run."""
    columns = [fleet_cells(args, run) for run in runs]
    return [Row(measure, tuple(c[measure] for c in columns)) for measure in columns[0]]


def bench_fleet(args: argparse.Namespace, workdir: Path) -> list[Row]:
    """Both runs: none hanging, then --hanging of --hosts hanging."""
    nodes = []
    for index in range(args.hosts):
        path = workdir / f"node-{index:02d}.xml"
        write_node(path, index, args.guests)
        nodes.append(path)
    runs = [
        run_fleet(args, workdir, nodes, 0),
        run_fleet(args, workdir, nodes[: args.hosts - args.hanging], args.hanging),
    ]
    return fleet_rows(args, runs)


# --- the run ---------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=50, help="virsh starts and destroys")
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between changes")
    parser.add_argument("--hosts", type=int, default=20, help="hosts in the hung-hosts runs")
    parser.add_argument("--hanging", type=int, default=2, help="of them hanging, second run")
    parser.add_argument("--guests", type=int, default=50, help="guests per healthy host")
    parser.add_argument("--window", type=float, default=20.0, help="seconds of syncs observed")
    parser.add_argument("--requests", type=int, default=100, help="timed GETs per page")
    parser.add_argument(
        "--database-url",
        help="PostgreSQL server URL (a temporary database on it per run); default: SQLite",
    )
    return parser.parse_args()


def main() -> int:
    """Run both benchmarks and print their tables; always exits 0."""
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="virtdeck-bench-"))
    try:
        events = bench_events(args, workdir)
        fleet = bench_fleet(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"virtdeck live bench: {args.changes} virsh changes of a real KVM guest, "
          f"sync interval 1 h")  # fmt: skip
    print_table(("measure", "p50", "p95", "target", "ok"), events)
    print()
    print(f"virtdeck hung hosts bench: {args.hosts} test-driver hosts x {args.guests} guests, "
          f"sync interval {SYNC_INTERVAL:g} s, {args.requests} requests per page")  # fmt: skip
    print_table(("measure", "none hanging", f"{args.hanging} of {args.hosts} hanging"), fleet)
    print_targets(events + fleet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
