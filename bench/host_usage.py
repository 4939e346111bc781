"""Benchmark the host page's usage chart: time to render it with a host's full history; prints a
table.

A test-driver host with N guests (default 500, made as bench/sync.py makes them) is synced into a
fresh database; each guest gets a sample a minute for the last day and one an hour for the last
30 days (for 500 guests 720,000 and 360,000 rows), and the host the samples that the worker
writes with them (their sum, one row a reading or an hour). The chart's panel, GET
/hosts/{id}/usage for the day and for the month, is then timed over HTTP.

    .venv/bin/python bench/host_usage.py --guests 500 [--database-url postgresql://...]
"""

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.db import insert_many, make_engine, make_session_factory, transaction  # noqa: E402
from app.deps import SESSION_COOKIE  # noqa: E402
from app.models import Guest, HostUsageSample, UsageSample  # noqa: E402
from app.models.base import utcnow  # noqa: E402
from app.services.auth import start_session  # noqa: E402
from app.services.hosts import add_host  # noqa: E402
from app.services.users import create_user  # noqa: E402
from bench.common import Row, database, p95, print_table  # noqa: E402
from bench.sync import connect, serve, settle, sync_all, time_get, write_node  # noqa: E402

# The spans and steps of the two charts: a reading a minute for a day, an hour for 30 days.
PERIODS = {"day": (False, timedelta(minutes=1), 24 * 60), "month": (True, timedelta(hours=1), 720)}


def cpu(guest_id: int, n: int) -> float:
    """A guest's CPU percent at the n-th time back: varied, so that no two rows are alike."""
    return float((guest_id * 7 + n) % 100)


def fill(sessions, host_id: int) -> int:
    """Give every guest of the host a day of readings and a month of hourly samples, and the
    host their sums; how many guest samples."""
    with sessions() as session:
        guests = session.execute(
            select(Guest.id, Guest.vcpus).where(Guest.host_id == host_id)
        ).all()
    now = utcnow()
    count = 0
    for hourly, step, steps in PERIODS.values():
        for first in range(0, steps, 60):  # a batch of 60 times at once
            times = [(n, now - step * (n + 1)) for n in range(first, min(first + 60, steps))]
            rows = [
                {"guest_id": guest_id, "hourly": hourly, "at": at, "cpu_percent": cpu(guest_id, n),
                 "memory_used_kib": 256 * 1024, "disk_bps": 4096, "net_bps": 1024}
                for n, at in times
                for guest_id, _ in guests
            ]  # fmt: skip
            sums = [
                {"host_id": host_id, "hourly": hourly, "at": at,
                 "cpus_used": sum(cpu(guest_id, n) * vcpus / 100 for guest_id, vcpus in guests),
                 "memory_used_kib": 256 * 1024 * len(guests), "disk_bps": 4096 * len(guests),
                 "net_bps": 1024 * len(guests), "guests": len(guests)}
                for n, at in times
            ]  # fmt: skip
            with transaction(sessions) as session:
                insert_many(session, UsageSample.__table__, rows)
                insert_many(session, HostUsageSample.__table__, sums)
            count += len(rows)
    return count


def run(args: argparse.Namespace, workdir: Path) -> list[Row]:
    """Build the host and its history, time the chart; the rows of the table."""
    node = workdir / "node.xml"
    write_node(node, 0, args.guests)
    with database(args.database_url, workdir) as url:
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        try:
            with transaction(sessions) as session:
                host_id = add_host(
                    session, name="bench", uri=f"test://{node}", test_driver_dir=str(workdir)
                ).id
            ((_, conn),) = connections = connect(sessions, [(host_id, f"test://{node}")])
            sync_all(sessions, connections)
            conn.close()
            started = time.perf_counter()
            samples = fill(sessions, host_id)
            rows = [
                Row("guests on the host", str(args.guests)),
                Row("guest samples stored", f"{samples:,}"),
                Row("fill time", f"{time.perf_counter() - started:.1f} s"),
            ]
            with transaction(sessions) as session:
                viewer = create_user(session, name="bench", password="bench password",
                                     role="viewer")  # fmt: skip
                cookie = start_session(session, viewer)[0]
            settle(engine)
            with (
                serve(url) as base,
                httpx.Client(base_url=base, timeout=60, cookies={SESSION_COOKIE: cookie}) as client,
            ):
                for period in PERIODS:
                    times = time_get(
                        client, f"/hosts/{host_id}/usage?period={period}",
                        requests=args.requests, check=httpx.Response.raise_for_status,
                    )  # fmt: skip
                    rows.append(
                        Row(f"GET /hosts/{host_id}/usage?period={period}, median / p95",
                            (f"{statistics.median(times):.1f} ms", f"{p95(times):.1f} ms"))
                    )  # fmt: skip
        finally:
            engine.dispose()
    return rows


def main() -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=500)
    parser.add_argument("--requests", type=int, default=20, help="timed GETs per period")
    parser.add_argument(
        "--database-url",
        help="SQLite file (must not exist) or PostgreSQL server URL; default: temporary SQLite",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="virtdeck-bench-"))
    try:
        rows = run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(("measure", "value", "p95"), rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
