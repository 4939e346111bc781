"""Benchmark a fleet of remote hosts served by a real `virtdeck serve`; prints tables, not a test.

Each of --hosts fake remote hosts is a test-driver libvirtd listening on TCP in a network
namespace of its own (tests/netns.py) and serves a node file of --guests guests
(test+tcp://<address>/<node file>, the files written under the server's test_driver_dir). One more
such host is used on /default: the test driver gives every connection to a node file a private
copy, so only /default, shared inside its libvirtd, shows virtdeck a change this script makes.

`virtdeck serve` runs as `make run` starts it (a subprocess, --host 127.0.0.1 --port P) with
VIRTDECK_* settings: the database, the node files' directory, no default host; an admin and a
token made with `virtdeck create-user` and `virtdeck create-token`. Everything is measured over
its whole process tree (it and its descendants, from /proc), so a worker process it starts counts.

Per run (fleet size x database), after the live host has synced:
- the hosts are registered through POST /api/v1/hosts one after the other, as a script would,
  and timed until GET /api/v1/guests counts every guest (its `total`), with the CPU that
  virtdeck, the hosts' libvirtds and PostgreSQL used meanwhile; beside it, the time virtdeck's
  libvirt layer alone takes to read the same guests (bare_read: this machine's floor, measured
  just before);
- the CPU of the process tree over --idle seconds while nothing changes (% of one core, from
  utime + stime in /proc/<pid>/stat), after SETTLE seconds;
- median and p95 of GET /api/v1/guests?limit=100 (token), and of the overview, the Guests page
  (by name; by memory and by CPU, largest first; filtered by a tag and by a state), a host page
  and its overcommit page (a logged-in browser session), with the workers running: --requests
  GETs of each, fewer when they have taken --page-seconds (slow pages would make a run long);
- --changes suspends and resumes of the live host's guest "test" through this script's own
  libvirt connection: from the libvirt event (as that connection sees it) to the guest-<uuid>
  message on /events;
- the RSS of the process tree at the end.

Default runs: 10 x 500 and 50 x 500, each on SQLite and on PostgreSQL. Run it as root (network
namespaces) and under the machine's libvirtd lock, with `make bench`, or:

    flock /tmp/virtdeck-libvirtd.lock .venv/bin/python bench/scale.py --hosts 10 --guests 500 \\
        --database-url sqlite \\
        --database-url postgresql+psycopg://virtdeck:virtdeck@127.0.0.1:5432/postgres

A PostgreSQL URL names the server: a temporary database is created on it per run and dropped at
the end; `sqlite` is a temporary SQLite file. Namespaces, libvirtds, files and databases are
removed on failure, Ctrl-C and SIGTERM too. Missed targets still exit 0; only a crash exits
non-zero.
"""

import argparse
import contextlib
import os
import queue
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
from tests.databases import POSTGRES_ADMIN_URL  # noqa: E402
from tests.events import drain, event_stream, wait_for  # noqa: E402
from tests.netns import FakeHost, available, fake_host  # noqa: E402
from tests.serve import ADMIN_PASSWORD, Server, running_server  # noqa: E402

SIZES = (10, 50)  # hosts, when --hosts is not given
SETTLE = 5.0  # seconds between all guests visible and the idle window
# The guest count is polled every POLL seconds, or every POLL_SHARE of the time waited so far
# when that is longer: ten counts a second of 25,000 guests cost the server and PostgreSQL more
# than a second of CPU over a 10 s wait, CPU the workers then lacked.
POLL = 0.1
POLL_SHARE = 0.025
VISIBLE_TIMEOUT = 300.0
LIVE_GUEST = "test"  # the guest test:///default always has, running
STARTERS = 4  # fake hosts started at once
# Targets on the 2-core reference machine (issue 14): the first pair up to 5,000 guests, the
# second up to 25,000.
VISIBLE_TARGETS = ((5_000, 2.0, 5.0), (25_000, 10.0, 15.0))  # guests, seconds, idle % of a core
PAGE_TARGET_MS = 50.0
API_P95_TARGET_MS = 100.0
EVENT_TARGET = 1.0
RSS_TARGET_MIB = 300.0
RSS_TARGET_GUESTS = 25_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- the process tree ------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat from field 3 (state) on; the command name may hold spaces."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """root and every process descended from it (parents from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError):
                parent = int(_stat_fields(int(entry.name))[1])
                children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending += children.get(pid, [])
    return found


def cpu_ticks(root: int) -> dict[int, int]:
    """utime + stime of each process of the tree, in clock ticks."""
    ticks = {}
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            fields = _stat_fields(pid)
            ticks[pid] = int(fields[11]) + int(fields[12])
    return ticks


def cpu_seconds(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU seconds the tree used between two cpu_ticks() readings (new processes whole)."""
    return sum(t - before.get(pid, 0) for pid, t in after.items()) / CLOCK_TICKS


def role(pid: int, root: int) -> str:
    """ "web" for the server itself, "worker" for a `virtdeck worker`, else "other"."""
    if pid == root:
        return "web"
    with contextlib.suppress(OSError):
        if b"worker" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
            return "worker"
    return "other"


def by_role(root: int, before: dict[int, int], after: dict[int, int]) -> dict[str, float]:
    """CPU seconds of each role (web, worker) between two cpu_ticks() readings of root's tree."""
    spent: dict[str, float] = {}
    for pid in after:
        used = cpu_seconds({pid: before.get(pid, 0)}, {pid: after[pid]})
        spent[role(pid, root)] = spent.get(role(pid, root), 0.0) + used
    return spent


def rss_mib(root: int) -> dict[str, float]:
    """The resident memory of the tree's processes by role (web, worker), in MiB."""
    by_role: dict[str, float] = {}
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    name = role(pid, root)
                    by_role[name] = by_role.get(name, 0.0) + int(line.split()[1]) / 1024
    return by_role


# --- the fleet -------------------------------------------------------------------------------


@dataclass
class Fleet:
    """The fake hosts: node-file URIs, one per node host, and the live host's /default URI;
    the node hosts' libvirtd process ids."""

    node_uris: list[str]
    live_uri: str
    node_pids: list[int]


def _enter(manager: contextlib.AbstractContextManager[FakeHost]) -> tuple[object, FakeHost]:
    return manager, manager.__enter__()


def start_hosts(stack: contextlib.ExitStack, count: int) -> list[FakeHost]:
    """count fake hosts, a few started at once; each is removed when the stack closes, also
    those started while another failed or the run was interrupted."""
    with ThreadPoolExecutor(STARTERS) as pool:
        futures = [pool.submit(_enter, fake_host()) for _ in range(count)]
        hosts, failure = [], None
        for future in futures:
            # Every future is waited for, so no host started after a failure escapes cleanup.
            try:
                manager, host = future.result()
            except BaseException as exc:  # re-raised once all are collected
                failure = failure or exc
                continue
            stack.push(manager.__exit__)
            hosts.append(host)
    if failure is not None:
        raise failure
    return hosts


@contextlib.contextmanager
def fleet(count: int, guests: int, nodes: Path) -> Iterator[Fleet]:
    """count node hosts of `guests` guests each (files in nodes) and the live host."""
    for index in range(count):
        path = nodes / f"node-{index:02d}.xml"
        write_node(path, index, guests)
        path.chmod(0o644)  # the libvirtds run as nobody
    with contextlib.ExitStack() as stack:
        live, *hosts = start_hosts(stack, count + 1)
        uris = [
            f"test+tcp://{host.address}:{host.port}{nodes / f'node-{index:02d}.xml'}"
            for index, host in enumerate(hosts)
        ]
        yield Fleet(node_uris=uris, live_uri=live.uri, node_pids=[h.pid for h in hosts])


def bare_read(uris: list[str]) -> float:
    """Seconds for virtdeck's libvirt layer alone (app.virt: no database, no web, no worker), a
    thread per host, to open every host and read and parse every guest's XML: this machine's
    floor under "all guests in the API"."""

    def read(uri: str) -> int:
        conn = HostConnection(uri, keepalive=(5, 3), on_close=lambda _reason: None)
        try:
            return len(conn.guests())
        finally:
            conn.close()

    started = time.monotonic()
    with ThreadPoolExecutor(len(uris)) as pool:
        list(pool.map(read, uris))
    return time.monotonic() - started


# --- one run ---------------------------------------------------------------------------------


@dataclass
class Run:
    """What one fleet size on one database measured."""

    hosts: int
    guests: int
    registered: float = 0.0  # seconds for the POSTs
    visible: float | None = None  # seconds to every guest counted; None: not within the timeout
    floor: float = 0.0  # seconds for app.virt alone to read them all (bare_read)
    seen: int = 0  # guests counted at the end of the wait
    busy_cpu: float = 0.0  # CPU seconds from the first POST to every guest counted
    busy_by: dict[str, float] = field(default_factory=dict)  # the same by process role
    hosts_cpu: float = 0.0  # and the node hosts' libvirtds' CPU seconds meanwhile
    postgres_cpu: float = 0.0  # and PostgreSQL's processes' (0 on SQLite)
    idle_cpu: float = 0.0  # % of one core
    processes: int = 0
    pages: dict[str, list[float]] | None = None  # milliseconds, by page
    lags: list[float] | None = None  # seconds, libvirt event -> SSE message
    missed: int = 0  # changes whose message did not come
    rss: float = 0.0  # MiB
    rss_by: dict[str, float] = field(default_factory=dict)  # MiB by process role
    idle_by: dict[str, float] = field(default_factory=dict)  # % of one core by process role


def _total(client: httpx.Client) -> int:
    response = client.get("/api/v1/guests", params={"limit": 1})
    response.raise_for_status()
    return response.json()["total"]


def _ticks(pids: list[int]) -> dict[int, int]:
    """utime + stime of these processes, in clock ticks."""
    ticks = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = _stat_fields(pid)
            ticks[pid] = int(fields[11]) + int(fields[12])
    return ticks


def postgres_pids() -> list[int]:
    """The PostgreSQL server's processes on this machine (its backends are started per
    connection, so they are looked up again at the end of a measure)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().startswith("postgres"):
                    found.append(int(entry.name))
    return found


def register(server: Server, run: Run, fleet: Fleet, expected: int, *, postgres: bool) -> None:
    """POST every node host, then wait until the API counts `expected` guests (with `postgres`,
    the run's database is PostgreSQL, whose CPU is counted too)."""
    headers = {"Authorization": f"Bearer {server.token}"}
    assert server.pid is not None
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as api:
        before, hosts_before = cpu_ticks(server.pid), _ticks(fleet.node_pids)
        postgres_before = _ticks(postgres_pids()) if postgres else {}
        started = time.monotonic()
        for index, uri in enumerate(fleet.node_uris):
            api.post(
                "/api/v1/hosts", json={"name": f"node-{index:02d}", "uri": uri}
            ).raise_for_status()
        run.registered = time.monotonic() - started
        while (elapsed := time.monotonic() - started) < VISIBLE_TIMEOUT:
            run.seen = _total(api)
            if run.seen >= expected:
                run.visible = elapsed
                break
            time.sleep(max(POLL, elapsed * POLL_SHARE))
        after = cpu_ticks(server.pid)
        run.busy_cpu = cpu_seconds(before, after)
        run.busy_by = by_role(server.pid, before, after)
        run.hosts_cpu = cpu_seconds(hosts_before, _ticks(fleet.node_pids))
        if postgres:
            run.postgres_cpu = cpu_seconds(postgres_before, _ticks(postgres_pids()))


def time_pages(server: Server, host_id: int, args: argparse.Namespace) -> dict[str, list[float]]:
    """Milliseconds of the API guest list (token) and three pages (a browser's session):
    args.requests GETs of each, fewer once they have taken args.page_seconds."""
    limits = {"requests": args.requests, "budget": args.page_seconds}
    ok = httpx.Response.raise_for_status

    def hundred(response: httpx.Response) -> None:
        response.raise_for_status()
        if len(response.json()["items"]) != 100:
            raise RuntimeError("GET /api/v1/guests?limit=100 did not give 100 guests")

    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as api:
        pages = {"GET /api/v1/guests?limit=100": time_get(
            api, "/api/v1/guests?limit=100", check=hundred, **limits
        )}  # fmt: skip
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        login = post_login(browser, "admin", ADMIN_PASSWORD)
        if SESSION_COOKIE not in browser.cookies:
            raise RuntimeError(f"log in failed: {login.status_code}")
        for label, path in (
            ("GET / (overview)", "/"),
            ("GET /guests (every host's guests)", "/guests"),
            ("GET /guests?sort=-memory", "/guests?sort=-memory"),
            ("GET /guests?tag=db (one guest in 8)", "/guests?tag=db"),
            ("GET /guests?state=running", "/guests?state=running"),
            ("GET /guests?sort=-cpu", "/guests?sort=-cpu"),
            ("GET /hosts/{id}", f"/hosts/{host_id}"),
            ("GET /hosts/{id}/overcommit", f"/hosts/{host_id}/overcommit"),
        ):
            pages[label] = time_get(browser, path, check=ok, **limits)
    return pages


def time_changes(server: Server, run: Run, uri: str, uuid: str, changes: int, pause: float) -> None:
    """Suspend and resume the live guest alternately; each change's libvirt event -> SSE
    message delay."""
    seen: queue.Queue = queue.Queue()

    def on_event(event_uuid: str, _kind: str) -> None:
        if event_uuid == uuid:
            seen.put(time.monotonic())

    watcher = HostConnection(uri, keepalive=(5, 3), on_close=lambda _reason: None)
    run.lags = []
    try:
        watcher.watch(on_event)
        with event_stream(server) as events:
            for index in range(changes):
                drain(seen, events)
                watcher.act(uuid, ("suspend", "resume")[index % 2])
                try:
                    arrived = wait_for(events, f"guest-{uuid}", 10)
                    run.lags.append(arrived - seen.get(timeout=10))
                except (AssertionError, queue.Empty):
                    run.missed += 1
                time.sleep(pause)
    finally:
        # The guest is left running for the next run, also when a change failed half-way.
        with contextlib.suppress(Exception):
            watcher.act(uuid, "resume")
        watcher.close()


def bench_run(
    args: argparse.Namespace, workdir: Path, nodes: Path, hosts: Fleet, db_url: str | None
) -> Run:
    """One `virtdeck serve` on a fresh database with the first args.hosts node hosts."""
    run = Run(hosts=len(hosts.node_uris), guests=args.guests, floor=bare_read(hosts.node_uris))
    env = {"VIRTDECK_DEFAULT_HOST_URI": "", "VIRTDECK_TEST_DRIVER_DIR": str(nodes)}
    with (
        database(db_url, workdir) as url,
        running_server(workdir, {**env, "VIRTDECK_DATABASE_URL": url}) as server,
    ):
        assert server.pid is not None
        live_id = server.add_host("live", hosts.live_uri)
        found = server.api("GET", "/guests", params={"host_id": live_id, "q": LIVE_GUEST})
        uuid = found.json()["items"][0]["uuid"]
        register(server, run, hosts, run.hosts * run.guests + 1, postgres=db_url is not None)
        time.sleep(SETTLE)
        before = cpu_ticks(server.pid)
        time.sleep(args.idle)
        after = cpu_ticks(server.pid)
        run.idle_cpu = cpu_seconds(before, after) / args.idle * 100
        run.idle_by = {
            name: spent / args.idle * 100
            for name, spent in by_role(server.pid, before, after).items()
        }
        node_id = next(
            h["id"] for h in server.api("GET", "/hosts").json() if h["name"] == "node-00"
        )
        run.pages = time_pages(server, node_id, args)
        time_changes(server, run, hosts.live_uri, uuid, args.changes, args.pause)
        run.processes = len(process_tree(server.pid))
        run.rss_by = rss_mib(server.pid)
        run.rss = sum(run.rss_by.values())
    return run


# --- the table -------------------------------------------------------------------------------


def _limit(measure: str, value: str, target: float | None, unit: str, ok: bool) -> Row:
    """A row checked against target (in unit) when the run's size has one."""
    if target is None:
        return Row(measure, value)
    return Row(measure, value, f"≤ {target:g} {unit}", ok)


def run_rows(run: Run) -> list[Row]:
    """The rows of one run's table, with the targets that apply to its size."""
    total = run.hosts * run.guests
    visible_target, idle_target = next(
        ((s, c) for limit, s, c in VISIBLE_TARGETS if total <= limit), (None, None)
    )
    if run.visible is None:
        visible = f"> {VISIBLE_TIMEOUT:g} s ({run.seen} seen)"
    else:
        visible = f"{run.visible:.2f} s"
    in_time = run.visible is not None and run.visible <= (visible_target or 0)
    processes = f"{run.processes} process{'' if run.processes == 1 else 'es'}"
    rows = [
        Row(f"POST /api/v1/hosts x{run.hosts}", f"{run.registered:.2f} s"),
        _limit(f"all {total} guests in the API", visible, visible_target, "s", in_time),
        Row("  the same read by app.virt alone", f"{run.floor:.2f} s"),
        Row("  CPU used meanwhile", f"{run.busy_cpu:.1f} s"),
        *(Row(f"    {name} process", f"{cpu:.1f} s") for name, cpu in sorted(run.busy_by.items())),
        Row(f"    the {run.hosts} hosts' libvirtds", f"{run.hosts_cpu:.1f} s"),
        *([Row("    PostgreSQL", f"{run.postgres_cpu:.1f} s")] if run.postgres_cpu else []),
        _limit(f"idle CPU ({processes})", f"{run.idle_cpu:.1f} % of a core",
               idle_target, "%", run.idle_cpu <= (idle_target or 0)),
    ]  # fmt: skip
    rows += [Row(f"  {name} process", f"{cpu:.1f} %") for name, cpu in sorted(run.idle_by.items())]
    for label, samples in (run.pages or {}).items():
        median, high = statistics.median(samples), p95(samples)
        rows.append(
            _limit(f"{label} median", f"{median:.1f} ms", PAGE_TARGET_MS, "ms",
                   median <= PAGE_TARGET_MS)
        )  # fmt: skip
        p95_target = API_P95_TARGET_MS if label.startswith("GET /api") else None
        rows.append(
            _limit(
                f"{label} p95 ({len(samples)} GETs)",
                f"{high:.1f} ms",
                p95_target,
                "ms",
                high <= API_P95_TARGET_MS,
            )
        )
    if run.lags:
        rows += [
            Row(f"event -> SSE p50 ({len(run.lags)} changes)",
                f"{statistics.median(run.lags):.3f} s"),
            _limit("event -> SSE p95", f"{p95(run.lags):.3f} s", EVENT_TARGET, "s",
                   p95(run.lags) <= EVENT_TARGET),
        ]  # fmt: skip
    rows.append(Row("  changes with no message in 10 s", str(run.missed), "0", run.missed == 0))
    rss_target = RSS_TARGET_MIB if total <= RSS_TARGET_GUESTS else None
    rows.append(
        _limit(f"RSS ({processes})", f"{run.rss:.0f} MiB", rss_target, "MiB",
               run.rss <= RSS_TARGET_MIB)
    )  # fmt: skip
    rows += [Row(f"  {name} process", f"{mib:.0f} MiB") for name, mib in sorted(run.rss_by.items())]
    return rows


# --- the command -----------------------------------------------------------------------------


def _label(url: str | None) -> str:
    return "SQLite" if url is None else "PostgreSQL"


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, help="remote hosts (default: runs of 10 and 50)")
    parser.add_argument("--guests", type=int, default=500, help="guests per host")
    parser.add_argument(
        "--database-url", action="append", dest="databases",
        help="PostgreSQL server URL, or 'sqlite'; repeat for several "
        "(default: sqlite and the tests' PostgreSQL server)",
    )  # fmt: skip
    parser.add_argument("--requests", type=int, default=50, help="timed GETs per page")
    parser.add_argument(
        "--page-seconds", type=float, default=15.0,
        help="fewer GETs of a page once they have taken this long",
    )  # fmt: skip
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU measured")
    parser.add_argument("--changes", type=int, default=50, help="suspends and resumes")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between changes")
    args = parser.parse_args()
    urls = args.databases or ["sqlite", POSTGRES_ADMIN_URL]
    args.databases = [None if u == "sqlite" else u for u in urls]
    args.sizes = [args.hosts] if args.hosts else list(SIZES)
    return args


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    """Run every size on every database and print a table per run; exits 0 unless it crashed."""
    args = parse_args()
    if why := available():
        sys.exit(f"bench/scale.py cannot run: {why}")
    # The cleanup in the finally blocks also runs when the run is told to stop.
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGHUP, _interrupted)
    workdir = Path(tempfile.mkdtemp(prefix="virtdeck-scale-"))
    nodes = workdir / "nodes"
    nodes.mkdir()
    for path in (workdir, nodes):
        path.chmod(0o755)  # the libvirtds run as nobody and read the node files
    try:
        started = time.monotonic()
        with fleet(max(args.sizes), args.guests, nodes) as hosts:
            print(f"{max(args.sizes) + 1} fake hosts up in {time.monotonic() - started:.1f} s",
                  flush=True)  # fmt: skip
            for count in args.sizes:
                for index, db_url in enumerate(args.databases):
                    sub = Fleet(
                        node_uris=hosts.node_uris[:count],
                        live_uri=hosts.live_uri,
                        node_pids=hosts.node_pids[:count],
                    )
                    rundir = workdir / f"run-{count}-{index}"
                    rundir.mkdir()
                    run = bench_run(args, rundir, nodes, sub, db_url)
                    rows = run_rows(run)
                    print(f"\nvirtdeck scale bench: {count} remote hosts x {args.guests} guests "
                          f"(+1 live host), {_label(db_url)}, up to {args.requests} GETs per page, "
                          f"{args.idle:g} s idle")  # fmt: skip
                    print_table(("measure", "value", "target", "ok"), rows)
                    print_targets(rows)
                    sys.stdout.flush()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
