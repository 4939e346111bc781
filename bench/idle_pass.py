"""Benchmark one idle periodic pass of a host worker: libvirt calls and wall time; prints a table.

A test-driver host with N guests (default 500, made as bench/sync.py makes them) is synced by a
real HostWorker into a fresh SQLite database. Once its first passes are over, nothing changes on
the host and the next passes are measured: their wall time (the worker's own figure) and, in a
second run of the same, the libvirt API calls they made, counted from libvirt's own debug log
(every public API call logs its name; those answered inside the client library, such as
virDomainGetName, are left out: the rest are one RPC each on a remote host). The log slows the
calls down, hence two runs.

    .venv/bin/python bench/idle_pass.py --guests 500
"""

import os
import subprocess
import sys
import tempfile

COUNTING = "--count-calls" in sys.argv
LOG = os.environ.get("VIRTDECK_BENCH_LIBVIRT_LOG", "")
if COUNTING:  # libvirt reads its log settings once, when the library is first initialised
    os.environ["LIBVIRT_LOG_FILTERS"] = "1:libvirt 4:*"
    os.environ["LIBVIRT_LOG_OUTPUTS"] = f"1:file:{LOG}"

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.config import Settings  # noqa: E402
from app.db import make_engine, make_session_factory, transaction  # noqa: E402
from app.services.hosts import add_host  # noqa: E402
from app.workers.host_worker import HostWorker  # noqa: E402
from bench.common import Row, database, print_table  # noqa: E402
from bench.sync import write_node  # noqa: E402

# API calls the client library answers itself (no round trip to the host).
LOCAL = {"virDomainFree", "virDomainRef", "virDomainGetName", "virDomainGetUUID",
         "virDomainGetUUIDString", "virDomainGetConnect", "virConnectRef"}  # fmt: skip
CALL = re.compile(r": debug : (vir[A-Za-z]+):\d+ :")


def calls_since(offset: int) -> tuple[Counter, int]:
    """The remote API calls logged after this byte offset, by name, and the new offset."""
    with open(LOG, encoding="utf-8", errors="replace") as log:
        log.seek(offset)
        text = log.read()
        end = log.tell()
    names = Counter(m.group(1) for m in CALL.finditer(text))
    return Counter({n: c for n, c in names.items() if n not in LOCAL}), end


def wait_passes(worker: HostWorker, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while worker.stats.syncs < count:
        if time.monotonic() > deadline:
            sys.exit(f"the worker made no progress ({worker.stats.syncs} passes)")
        time.sleep(0.005)


def measure(guests: int, passes: int) -> tuple[list[float], Counter]:
    """Idle passes of a worker on a host of this many guests: wall times, calls (if counting)."""
    with tempfile.TemporaryDirectory() as tmp, database(None, Path(tmp)) as url:
        node = Path(tmp) / "node.xml"
        write_node(node, 1, guests)
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        with transaction(sessions) as session:
            host_id = add_host(session, name="bench", uri=f"test://{node}", test_driver_dir=tmp).id
        settings = Settings(
            database_url=url, sync_interval=0.5, reconcile_interval=3600, test_driver_dir=tmp
        )
        worker = HostWorker(host_id, f"test://{node}", sessions=sessions, settings=settings)
        worker.lead(True)
        worker.start()
        wait_passes(worker, 3)  # the first reconcile and the CPU reading are behind us
        seconds, totals = [], Counter()
        offset = calls_since(0)[1] if COUNTING else 0
        for n in range(passes):
            wait_passes(worker, 4 + n)
            seconds.append(worker.stats.last_sync_seconds)
            if COUNTING:
                calls, offset = calls_since(offset)
                totals += calls
        worker.stop()
        worker.join(timeout=5)
        engine.dispose()
    return seconds, totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=500)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--count-calls", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if COUNTING:
        print(json.dumps(measure(args.guests, args.passes)[1]))
        return
    seconds, _ = measure(args.guests, args.passes)
    with tempfile.NamedTemporaryFile(prefix="virtdeck-libvirt-", suffix=".log") as log:
        counted = subprocess.run(
            [sys.executable, __file__, "--count-calls", "--guests", str(args.guests),
             "--passes", str(args.passes)],
            env={**os.environ, "VIRTDECK_BENCH_LIBVIRT_LOG": log.name},
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    totals = json.loads(counted.stdout.strip().splitlines()[-1])
    per_pass = {name: count / args.passes for name, count in Counter(totals).most_common()}
    rows = [
        Row("guests on the host", str(args.guests)),
        Row("libvirt calls per idle pass", f"{sum(per_pass.values()):g}"),
        *(Row(f"  {name}", f"{count:g}") for name, count in per_pass.items()),
        Row("idle pass wall time, median", f"{statistics.median(seconds) * 1000:.1f} ms"),
    ]
    print_table(("measure", "value"), rows)


if __name__ == "__main__":
    main()
