"""Benchmark backups against qemu-img convert; prints a table, not a test.

A guest vdbench-<hex> (64 MiB, 1 vCPU, no OS) gets a 2 GiB qcow2 disk whose first 1 GiB is random
data, in a throwaway dir pool on the real libvirtd (qemu:///system, so run it as root). virtdeck
runs as `make run` runs it (`virtdeck serve` and its worker process) on a temporary database and
backup directory with that libvirtd as its host, and each of these is timed --repeat times (the
median and the spread, slowest minus fastest, are printed), the page cache dropped before each:

- a backup of the shut-off guest (on this local host: its volume file read directly);
- a backup of the running guest (on this local host: its extents that may hold data read from
  a pull-mode NBD export by virtdeck's NBD client, hashed and written back as they come);
- the same two with the libvirtd registered as a remote host, `qemu+ssh://root@127.0.0.1:PORT/
  system` through a private sshd with key auth (tests/sshd.py): a volume streamed through the
  libvirt connection, and the pull-mode export read through an SSH forward of its socket;
- after the running guest's full backups: a full backup kept, then --repeat times 64 MiB
  written at random offsets of its disk (1 MiB each, HMP qemu-io) and the next backup, which
  virtdeck takes as an incremental one; its time and size against the full one's (target: at
  most a tenth of each);
- before each of those incrementals, for the floor under them, libvirt's pull-mode job alone
  for the same changes (app.virt's, in this process: begun since the last backup's checkpoint
  and beginning one of its own, every changed extent read from its export and dropped, the job
  ended; its checkpoint then deleted, untimed): what no incremental read through libvirt can
  beat, against the full one's time; then that job again with every extent also written to a
  file beside the backups by a second thread as it comes, and the file fsynced before the job
  ends (no hash, nothing of virtdeck's): what no backup of those changes can beat, since a
  backup is on disk when it ends (on a disk whose reads and writes share one bandwidth, the
  write adds to the read);
- `qemu-img convert -O qcow2` of the same disk into a file, then the fsync of that file (a
  backup is on disk when it ends, so the reference is too): the reference, run right before each
  local backup of the guest shut off or running (so 2 x --repeat times), since this machine's
  speed drifts over minutes and a reference timed apart would skew the ratios;
- for information, that convert followed by `sha256sum` of the copy; then the digest of the
  copy (from the page cache) as a backup takes it (sha256 or blake3: VIRTDECK_BACKUP_HASH, or
  what auto picks on this machine): the floor of any copy that hashes its bytes.

A backup's seconds are its record's duration_seconds: request to record, checksums, fsync and
manifest included. Throughput is the disk's virtual size (2 GiB) over those seconds; the data
rate is the random data (1 GiB) over them. The targets (issue 17), on the local host: a shut-off
guest's backup at least 0.8 times as fast as qemu-img convert, a running guest's at least 0.6
times; the remote ones are printed for their throughput. Each shut-off backup's disk file must
also have the volume's own digest, and each running backup's image the disk's content (qemu-img
compare, not timed; a disk kept as extents is rebuilt as raw for it).

The phases of a backup are read from the files, not from the app: when the disk file appeared in
the backup directory under its temporary name, its last write (the copy's end), when it got its
own name (hashed and synced). The job itself is asked for only every 0.5 s, as a client asking
every 0.05 s made the backups much slower on two cores.

Run it with `make bench`, or:

    .venv/bin/python bench/backup.py

Everything it makes (guest, pool, volumes, files, database) is removed, on failure and Ctrl-C
too. Missed targets still exit 0; only a crash exits non-zero.
"""

import argparse
import contextlib
import json
import os
import queue
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.config import Settings  # noqa: E402
from app.services.backups.deltas import DIRTY, EXTENTS, materialize  # noqa: E402
from app.services.backups.digests import backup_hash, recorded  # noqa: E402
from app.services.backups.files import PART, digest_of  # noqa: E402
from app.services.backups.nbd_client import MAX_READ, NbdClient  # noqa: E402
from app.virt import checkpoints  # noqa: E402
from app.virt.backups import inspect  # noqa: E402
from app.virt.connection import HostConnection  # noqa: E402
from app.virt.nbd_exports import nbd_exports  # noqa: E402
from bench.common import Row, database, print_table, print_targets  # noqa: E402
from tests.libvirtd import IMAGES, SYSTEM_URI, domain_xml, virsh  # noqa: E402
from tests.serve import running_server  # noqa: E402
from tests.sshd import sshd_for_libvirt  # noqa: E402
from tests.storage import remove_guest, throwaway_pool, unique_name  # noqa: E402

MIB = 1 << 20
GIB = 1 << 30
SHUT_OFF, RUNNING = "backup, shut-off guest", "backup, running guest"
INCREMENTAL = "incremental backup after 64 MiB of writes, running guest"
PULL_ALONE = "libvirt's pull job alone for those writes (begin, read, end)"
PULL_WRITTEN = "the same, the changes also written to a file and fsynced"
WRITES = 64  # MiB written at random offsets of the running guest's disk before an incremental
# The guest's vda as qemu-io -d takes it: the virtio-blk device inside libvirt's virtio-disk0
# (the PCI device around it has no block backend).
QDEV = "/machine/peripheral/virtio-disk0/virtio-backend"
INCREMENTAL_TARGET = 0.1  # an incremental's time and size, at most this share of the full's
SSH = " (qemu+ssh)"
# The digest new backups take here (VIRTDECK_BACKUP_HASH, or auto's choice on this machine).
ALGORITHM = backup_hash(Settings()).algorithm
CONVERT, HASHED = "qemu-img convert + fsync", "qemu-img convert + fsync + sha256sum"
TARGETS = {SHUT_OFF: 0.8, RUNNING: 0.6}  # ratio to qemu-img convert, on the local host
JOB_POLL = 0.5  # seconds between requests for the job's state while a backup runs
WATCH = 0.01  # seconds between looks at the files: the phase split is this precise
JOB_TIMEOUT = 600.0
FINAL = frozenset({"succeeded", "failed", "cancelled"})
FLOOR = f"{ALGORITHM} alone, as backups hash"
COPY_PHASE = "copying into the disk file (to its last write)"
HASH_PHASE = f"then {ALGORITHM} and fsync (to its rename)"


@dataclass
class Method:
    """One way of copying the disk: the seconds of each run and of each run's phases."""

    name: str
    seconds: list[float] = field(default_factory=list)
    phases: dict[str, list[float]] = field(default_factory=dict)

    def add(self, seconds: float, **phases: float) -> None:
        """Record one run."""
        self.seconds.append(seconds)
        for phase, spent in phases.items():
            self.phases.setdefault(phase, []).append(spent)

    @property
    def median(self) -> float:
        """The median run."""
        return statistics.median(self.seconds)


@dataclass
class Result:
    """The guest's name, every method's runs, whether each shut-off backup's disk file had the
    disk's own digest (it is a copy of the volume), and whether each running backup's image had
    the disk's content."""

    name: str
    methods: dict[str, Method] = field(
        default_factory=lambda: {
            name: Method(name)
            for name in (
                SHUT_OFF,
                RUNNING,
                SHUT_OFF + SSH,
                RUNNING + SSH,
                INCREMENTAL,
                INCREMENTAL + SSH,
                PULL_ALONE,
                PULL_WRITTEN,
                CONVERT,
                HASHED,
            )
        }
    )
    same_bytes: list[bool] = field(default_factory=list)
    same_content: list[bool] = field(default_factory=list)
    incremental: dict[str, list["Incremental"]] = field(default_factory=dict)


@dataclass(frozen=True)
class Incremental:
    """One backup after the writes, and the full backup its chain began with."""

    kind: str
    seconds: float
    size: int
    full_seconds: float
    full_size: int
    pull_alone: float | None  # libvirt's pull job alone for the same changes (local host only)
    pull_written: float | None  # that job, the changes written and synced too


# --- the guest --------------------------------------------------------------------------------


def run_quietly(*command: str) -> None:
    """Run a command; raise with its stderr if it fails."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")


def make_disk(workdir: Path, pool: str, name: str, disk_mib: int, data_mib: int) -> Path:
    """A qcow2 volume of disk_mib MiB in the pool whose first data_mib MiB are random."""
    raw = workdir / "disk.raw"
    with open(raw, "wb") as handle:
        for _ in range(data_mib // 4):
            handle.write(os.urandom(4 * MIB))
        handle.write(os.urandom((data_mib % 4) * MIB))
        handle.truncate(disk_mib * MIB)
    disk = IMAGES / pool / f"{name}.qcow2"
    try:
        run_quietly("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(disk))
    finally:
        raw.unlink()
    virsh("pool-refresh", pool)
    return disk


@contextlib.contextmanager
def guest(workdir: Path, disk: Path, name: str) -> Iterator[str]:
    """Define the guest on the disk; yields its UUID; stopped and undefined afterwards."""
    guest_uuid = str(uuid.uuid4())
    xml = workdir / f"{name}.xml"
    xml.write_text(domain_xml(name, guest_uuid, disk))
    try:
        virsh("define", str(xml))
        yield guest_uuid
    finally:
        libvirtd_answers()
        remove_guest(name)


def libvirtd_answers(timeout: float = 60) -> None:
    """Wait (a while) until libvirtd answers, so that clean-up is not lost when something else
    restarts it just then (the libvirtd tests do)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(RuntimeError):
            virsh("version")
            return
        time.sleep(0.5)


@contextlib.contextmanager
def libvirtd_up_afterwards() -> Iterator[None]:
    """On the way out, wait until libvirtd answers (for the clean-up of what encloses this)."""
    try:
        yield
    finally:
        libvirtd_answers()


# --- virtdeck ---------------------------------------------------------------------------------


@contextlib.contextmanager
def virtdeck(
    database_url: str, backup_dir: Path, uri: str, workdir: Path, *, chain: int
) -> Iterator[tuple[httpx.Client, Callable]]:
    """`virtdeck serve` with its worker process, as `make run` (its log in workdir), and the
    libvirtd at uri as a synced host: an admin's client, and a function that syncs the host
    again (and waits for it). Its chains hold at least `chain` backups (the default setting
    otherwise), so that each backup after the writes may be incremental."""
    full_every = max(Settings().backup_full_every, chain)
    env = {"VIRTDECK_DATABASE_URL": database_url, "VIRTDECK_DEFAULT_HOST_URI": "",
           "VIRTDECK_BACKUP_DIR": str(backup_dir),
           "VIRTDECK_BACKUP_FULL_EVERY": str(full_every)}  # fmt: skip
    with (
        running_server(workdir, env) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        client.headers["Authorization"] = f"Bearer {server.token}"
        host = expect(client.post("/api/v1/hosts", json={"name": "bench", "uri": uri}))

        def refresh() -> None:
            expect(client.post(f"/api/v1/hosts/{host['id']}/refresh", params={"wait": 10}))

        refresh()
        yield client, refresh


def expect(response: httpx.Response, status: int | None = None) -> dict:
    """The response's JSON; raise with its body unless it is a success (and this status)."""
    if (status is not None and response.status_code != status) or response.is_error:
        raise RuntimeError(f"{response.request.method} {response.url}: {response.text}")
    return response.json() if response.content else {}


# --- the runs ---------------------------------------------------------------------------------


def drop_caches() -> None:
    """Write back and drop the page cache, so that every run reads the disk from the device."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


@dataclass
class Watch:
    """What the files show while a backup runs, looked at without asking the app (on two cores
    frequent requests would slow the backup down): when its disk file appeared in the backup
    directory (under its temporary name), its last write (the copy's end), when it got its own
    name (hashed and synced)."""

    backup_dir: Path
    copying: float | None = None
    written: float | None = None
    renamed: float | None = None

    def look(self) -> None:
        """Look once."""
        if self.renamed is not None:
            return
        for disk in self.backup_dir.rglob("disk-*"):
            if not disk.name.endswith(PART):
                self.renamed = time.time()
                return
            self.copying = self.copying or time.time()
            with contextlib.suppress(FileNotFoundError):  # renamed as we looked
                mtime = disk.stat().st_mtime
                self.written = max(self.written or mtime, mtime)

    def phases(self, start: float, end: float) -> dict[str, float]:
        """The seconds of each phase from start to end (those the files showed)."""
        points = (
            ("until copying began", self.copying),
            (COPY_PHASE, self.written),
            (HASH_PHASE, self.renamed),
            ("manifest and record", end),
        )
        phases, previous = {}, start
        for label, at in points:
            if at is not None:
                at = min(max(at, previous), end)
                phases[label] = at - previous
                previous = at
        return phases


def take(client: httpx.Client, guest_uuid: str, watch: Watch) -> dict:
    """Take a backup, looking at its files meanwhile; its record once it succeeded."""
    began = time.perf_counter()
    started = expect(client.post(f"/api/v1/guests/{guest_uuid}/backups"), 202)
    job_url = f"/api/v1/jobs/{started['job']['id']}"
    next_poll = began
    while True:
        watch.look()
        if time.perf_counter() >= next_poll:
            job = expect(client.get(job_url))
            if job["status"] in FINAL:
                break
            if time.perf_counter() - began > JOB_TIMEOUT:
                raise RuntimeError(f"backup job still {job['status']} after {JOB_TIMEOUT:.0f} s")
            next_poll += JOB_POLL
        time.sleep(WATCH)
    if job["status"] != "succeeded":
        raise RuntimeError(f"backup {job['status']}: {job['error']}")
    return expect(client.get(f"/api/v1/backups/{started['backup']['id']}"))


def back_up(
    client: httpx.Client, guest_uuid: str, watch: Watch, check: Callable[[Path, dict], None]
) -> tuple[float, dict]:
    """Take a backup, check(its disk file, that file's manifest entry) and delete it again: its
    duration_seconds and the seconds of its phases."""
    backup = take(client, guest_uuid, watch)
    directory = watch.backup_dir / backup["path"]
    manifest = json.loads((directory / "manifest.json").read_text())
    disk = next(f for f in manifest["files"] if f["kind"] == "disk")
    check(directory / disk["name"], disk)
    expect(client.delete(f"/api/v1/backups/{backup['id']}"), 204)
    start, end = (
        datetime.fromisoformat(backup[k]).timestamp() for k in ("started_at", "finished_at")
    )
    return backup["duration_seconds"], watch.phases(start, end)


def write_randomly(name: str, disk_mib: int) -> None:
    """WRITES MiB at distinct random MiB offsets of the running guest's disk, through QEMU
    (HMP qemu-io on its virtio disk), then flushed so that its image file is whole."""
    for offset in random.sample(range(disk_mib), WRITES):
        said = virsh("qemu-monitor-command", name, "--hmp",
                     f'qemu-io -d {QDEV} "write -P 0x11 {offset}M 1M"')  # fmt: skip
        if said.strip():  # it says nothing when it wrote
            raise RuntimeError(f"qemu-io write at {offset} MiB: {said.strip()}")
    virsh("qemu-monitor-command", name, "--hmp", f'qemu-io -d {QDEV} "flush"')


def pull_alone(guest_uuid: str, checkpoint: str, into: Path | None = None) -> float:
    """Seconds libvirt's pull-mode job takes for the guest's changes since checkpoint with
    nothing of virtdeck's around it: begun with a checkpoint of its own (as an incremental
    backup begins the next one), every changed extent read from its exports into the same few
    buffers, ended. The extents are dropped, or with into written to that file by a second
    thread as they come and the file fsynced before the job ends. Its checkpoint is deleted
    afterwards, untimed: its bitmap merges into checkpoint's, so the next backup still sees
    these changes."""
    conn = HostConnection(SYSTEM_URI, keepalive=(5, 3), on_close=lambda _reason: None)
    own = unique_name("vdbench-floor")
    free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
    for _ in range(17):  # > reads in flight
        free.put(bytearray(MAX_READ))

    def lend(wait: bool) -> bytearray | None:
        try:
            return free.get(block=wait)
        except queue.Empty:
            return None

    try:
        source = inspect(conn, guest_uuid)
        began = time.perf_counter()
        with nbd_exports(conn, source, checkpoint=own, incremental=checkpoint) as exports:
            for export in exports.values():
                with (
                    NbdClient(export.socket, export.name, context=export.context) as nbd,
                    sink(into, free) as keep,
                ):
                    changed = [
                        (extent.offset, extent.length)
                        for extent in nbd.block_status(0, nbd.size)
                        if extent.flags & DIRTY
                    ]
                    for buffer, length in nbd.read_ranges(changed, lend):
                        keep(buffer, length)
        return time.perf_counter() - began
    finally:
        try:
            checkpoints.delete(conn, guest_uuid, own)
        finally:
            conn.close()
            if into is not None:
                into.unlink(missing_ok=True)


@contextlib.contextmanager
def sink(
    into: Path | None, free: "queue.SimpleQueue[bytearray]"
) -> Iterator[Callable[[bytearray, int], None]]:
    """Where pull_alone's reads go: a function taking (buffer, length) that hands the buffer back
    to free once done with it; into None: at once, else once a second thread wrote it to into,
    which is fsynced when the block ends."""
    if into is None:
        yield lambda buffer, _length: free.put(buffer)
        return
    waiting: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
    failed: list[OSError] = []
    with open(into, "wb") as out:

        def write() -> None:
            # After a failed write the rest are dropped, each buffer still handed back: the
            # reader never waits for one for good, and hears of the failure when it ends.
            while (item := waiting.get()) is not None:
                if not failed:
                    try:
                        out.write(memoryview(item[0])[: item[1]])
                    except OSError as exc:
                        failed.append(exc)
                free.put(item[0])

        writer = threading.Thread(target=write, name="floor-write")
        writer.start()
        try:
            yield lambda buffer, length: waiting.put((buffer, length))
        finally:
            waiting.put(None)
            writer.join()
        if failed:
            raise failed[0]
        out.flush()
        os.fsync(out.fileno())


def drop_checkpoints(guest_uuid: str) -> None:
    """Delete the checkpoints (and their bitmaps) the backups began, so that the next virtdeck,
    on a database of its own, starts from a full backup and the guest leaves no bitmap behind."""
    for name in reversed(virsh("checkpoint-list", guest_uuid, "--name", "--topological").split()):
        virsh("checkpoint-delete", guest_uuid, name)


def same_content(path: Path, entry: dict, disk: Path) -> bool:
    """Whether qemu-img compare finds the backup's disk equal to the disk (in use: -U); a disk
    kept as extents is rebuilt as raw first, next to it."""
    image, fmt = path, entry["format"]
    if fmt == EXTENTS:
        image, fmt = path.with_name(path.name + ".raw"), "raw"
        materialize([(path, entry)], image, capacity=entry["capacity"], out_fmt="raw")
    try:
        done = subprocess.run(
            ["qemu-img", "compare", "-q", "-U", "-f", fmt, "-F", "qcow2", str(image), str(disk)],
            capture_output=True, check=False,
        )  # fmt: skip
    finally:
        if image != path:
            image.unlink(missing_ok=True)
    return done.returncode == 0


def timed(command: list[str]) -> float:
    """Run a command; the seconds it took."""
    started = time.perf_counter()
    run_quietly(*command)
    return time.perf_counter() - started


def convert(disk: Path, workdir: Path, method: Method, hashed: Method) -> None:
    """One qemu-img convert of the disk and the fsync of the copy (a backup is on disk when it
    ends, so the reference is too); then, for reference, sha256sum of the copy."""
    copy = workdir / "convert.qcow2"
    try:
        # -U: the disk may be in use by the running guest (which writes nothing meanwhile).
        copying = timed(
            ["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "qcow2", str(disk), str(copy)]
        )
        started = time.perf_counter()
        with open(copy, "rb") as handle:
            os.fsync(handle.fileno())
        syncing = time.perf_counter() - started
        hashing = timed(["sha256sum", str(copy)])
        started = time.perf_counter()
        digest_of(copy, ALGORITHM)  # as a backup hashes, the copy in the page cache: CPU only
        floor = time.perf_counter() - started
        method.add(copying + syncing, **{"qemu-img convert": copying,
                                         "fsync of the copy": syncing})  # fmt: skip
        hashed.add(copying + syncing + hashing, **{"qemu-img convert + fsync": copying + syncing,
                                                   "sha256sum": hashing, FLOOR: floor})  # fmt: skip
    finally:
        copy.unlink(missing_ok=True)


def repeat(times: int, run: Callable[[], None]) -> None:
    """run() that many times, the page cache dropped before each."""
    for _ in range(times):
        drop_caches()
        run()


def measure(args: argparse.Namespace, workdir: Path) -> Result:
    """Make the pool, disk, guest and sshd, and time every method: on the host as qemu:///system,
    then as qemu+ssh:// (each with a virtdeck of its own)."""
    result = Result(name=unique_name("vdbench"))
    qemu, qemu_hashed = result.methods[CONVERT], result.methods[HASHED]
    with throwaway_pool("vdbench-pool") as pool, libvirtd_up_afterwards():
        disk = make_disk(workdir, pool, result.name, args.disk_mib, args.data_mib)
        with guest(workdir, disk, result.name) as guest_uuid, sshd_for_libvirt(workdir) as ssh:
            bench = Bench(args, result, workdir, disk, guest_uuid)
            bench.back_ups(
                "", SYSTEM_URI, reference=lambda: convert(disk, workdir, qemu, qemu_hashed)
            )
            bench.back_ups(SSH, ssh.uri())
    return result


@dataclass
class Bench:
    """What the backup runs share: the arguments, the results, the guest and its disk."""

    args: argparse.Namespace
    result: Result
    workdir: Path
    disk: Path
    guest_uuid: str
    expected: dict[str, str] = field(default_factory=dict)  # the disk's digest by algorithm

    def back_ups(
        self, suffix: str, uri: str, *, reference: Callable[[], None] | None = None
    ) -> None:
        """Time the backups of the shut-off, then the running guest, with uri as the host; with
        reference, that is run (and timed) right before each of them: this machine's speed
        drifts over minutes, so a reference timed apart from the backups skews their ratio."""
        label = suffix.strip(" ()")
        backup_dir = self.workdir / f"backups{label}"
        with (
            database(self.args.database_url, self.workdir / f"db{label}") as url,
            virtdeck(
                url, backup_dir, uri, self.workdir / f"serve{label}", chain=self.args.repeat + 1
            ) as (client, refresh),
        ):

            def run(method: Method, check: Callable[[Path, dict], None]) -> None:
                if reference is not None:
                    reference()
                    drop_caches()
                seconds, phases = back_up(client, self.guest_uuid, Watch(backup_dir), check)
                method.add(seconds, **phases)

            offline, online = (self.result.methods[m + suffix] for m in (SHUT_OFF, RUNNING))
            repeat(self.args.repeat, lambda: run(offline, self.same_digest))
            virsh("start", self.guest_uuid)
            try:
                refresh()
                repeat(self.args.repeat, lambda: run(online, self.equal_disk))
                self.incrementals(client, backup_dir, suffix)
            finally:
                drop_checkpoints(self.guest_uuid)  # (libvirt 9.0 deletes them from running guests)
                virsh("destroy", self.guest_uuid)
            self.expected.clear()  # (written to since)
            refresh()

    def incrementals(self, client: httpx.Client, backup_dir: Path, suffix: str) -> None:
        """A full backup of the running guest, kept; then, --repeat times, WRITES MiB written
        at random offsets of its disk and the next backup (an incremental one), timed; each
        compared with the full one; all deleted afterwards, newest first."""
        method = self.result.methods[INCREMENTAL + suffix]
        kept: list[dict] = []
        try:
            drop_caches()
            kept.append(take(client, self.guest_uuid, Watch(backup_dir)))
            for _ in range(self.args.repeat):
                write_randomly(self.result.name, self.args.disk_mib)
                alone = written = None
                if not suffix:
                    drop_caches()
                    alone = pull_alone(self.guest_uuid, kept[-1]["checkpoint"])
                    self.result.methods[PULL_ALONE].add(alone)
                    drop_caches()
                    written = pull_alone(
                        self.guest_uuid, kept[-1]["checkpoint"], into=backup_dir / "floor.bin"
                    )
                    self.result.methods[PULL_WRITTEN].add(written)
                drop_caches()
                backup = take(client, self.guest_uuid, Watch(backup_dir))
                kept.append(backup)
                method.add(backup["duration_seconds"])
                self.result.incremental.setdefault(suffix, []).append(
                    Incremental(backup["kind"], backup["duration_seconds"], backup["size_bytes"],
                                kept[0]["duration_seconds"], kept[0]["size_bytes"], alone,
                                written)
                )  # fmt: skip
        finally:
            for backup in reversed(kept):
                expect(client.delete(f"/api/v1/backups/{backup['id']}"), 204)

    def same_digest(self, _path: Path, entry: dict) -> None:
        """Note whether a shut-off backup's image has the volume's own digest."""
        algorithm, digest = recorded(entry)  # (the server's own choice, with auto)
        if algorithm not in self.expected:
            self.expected[algorithm] = digest_of(self.disk, algorithm)
        self.result.same_bytes.append(digest == self.expected[algorithm])

    def equal_disk(self, path: Path, entry: dict) -> None:
        """Note whether a running backup's disk has the disk's content."""
        self.result.same_content.append(same_content(path, entry, self.disk))


# --- the table --------------------------------------------------------------------------------


def spread(runs: list[float]) -> str:
    """The runs' range (slowest minus fastest) and that as a share of their median."""
    width = max(runs) - min(runs)
    median = statistics.median(runs)
    return f"{width:.2f} s ({width / median:.0%})" if median else f"{width:.2f} s"


def result_rows(result: Result, disk_mib: int, data_mib: int) -> list[Row]:
    """One row a method: median seconds, throughputs, ratio to qemu-img convert, target; and
    whether the shut-off backups copied the disk's bytes."""
    reference = result.methods[CONVERT].median

    def cells(runs: list[float]) -> tuple[str, ...]:
        seconds = statistics.median(runs)
        return (
            f"{seconds:.2f} s",
            spread(runs),
            " ".join(f"{s:.2f}" for s in runs),
            f"{disk_mib * MIB / GIB / seconds:.2f}",
            f"{data_mib * MIB / GIB / seconds:.2f}",
            f"{reference / seconds:.2f}",
        )

    rows = []
    for method in result.methods.values():
        target = TARGETS.get(method.name)
        rows.append(
            Row(
                method.name,
                cells(method.seconds),
                f"≥ {target:g}" if target else "",
                reference / method.median >= target if target else None,
            )
        )
    # The hash is one sequential stream: a copy that hashes every byte once can be no faster.
    floor = result.methods[HASHED].phases[FLOOR]
    rows.append(Row(f"{FLOOR} (the floor of any hashed copy)", cells(floor)))
    same = sum(result.same_bytes)
    rows.append(
        Row(
            "shut-off backups with the disk's digest",
            (f"{same} of {len(result.same_bytes)}", "", "", "", "", ""),
            "all",
            same == len(result.same_bytes),
        )
    )
    for suffix, runs in result.incremental.items():
        rows += incremental_rows(suffix, runs)
    equal = sum(result.same_content)
    rows.append(
        Row(
            "running backups equal to the disk",
            (f"{equal} of {len(result.same_content)}", "", "", "", "", ""),
            "all",
            equal == len(result.same_content),
        )
    )
    return rows


def incremental_rows(suffix: str, runs: list[Incremental]) -> list[Row]:
    """Whether the backups after the writes were incremental, and their median time and size
    as shares of the full backup's."""
    blank = ("",) * 5
    incremental = sum(run.kind == "incremental" for run in runs)
    time_share = statistics.median(run.seconds / run.full_seconds for run in runs)
    size_share = statistics.median(run.size / run.full_size for run in runs)
    alone = [run.pull_alone / run.full_seconds for run in runs if run.pull_alone is not None]
    written = [run.pull_written / run.full_seconds for run in runs if run.pull_written is not None]
    floor = [
        Row(f"libvirt's pull job alone / full backup, time{suffix} (the floor under any read)",
            (f"{statistics.median(alone):.3f}", *blank)),
        Row(f"the same, changes written and fsynced / full backup, time{suffix} (the floor under "
            "the next)", (f"{statistics.median(written):.3f}", *blank)),
    ] if alone else []  # fmt: skip
    return [
        Row(f"backups after the writes that were incremental{suffix}",
            (f"{incremental} of {len(runs)}", *blank), "all", incremental == len(runs)),
        *floor,
        Row(f"incremental / full backup, time{suffix}", (f"{time_share:.3f}", *blank),
            f"≤ {INCREMENTAL_TARGET:g}", time_share <= INCREMENTAL_TARGET),
        Row(f"incremental / full backup, size{suffix}", (f"{size_share:.3f}", *blank),
            f"≤ {INCREMENTAL_TARGET:g}", size_share <= INCREMENTAL_TARGET),
    ]  # fmt: skip


def phase_rows(result: Result) -> list[Row]:
    """The median of each phase of each method."""
    rows = []
    for method in result.methods.values():
        rows.append(Row(method.name, ""))
        rows += [
            Row(f"  {phase}", (f"{statistics.median(spent):.3f} s", spread(spent)))
            for phase, spent in method.phases.items()
        ]
    return rows


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each method (median)")
    parser.add_argument("--disk-mib", type=int, default=2048, help="the disk's virtual size")
    parser.add_argument("--data-mib", type=int, default=1024, help="random data at its start")
    parser.add_argument(
        "--database-url",
        help="SQLite file (must not exist) or PostgreSQL server URL; default: temporary SQLite",
    )
    args = parser.parse_args()
    if not 0 < args.data_mib <= args.disk_mib or args.repeat < 1:
        parser.error("need 0 < --data-mib <= --disk-mib and --repeat >= 1")
    return args


def main() -> int:
    """Run the benchmark and print the tables; always exits 0 unless it crashes."""
    args = parse_args()
    if os.geteuid() != 0:
        sys.exit("run it as root: it uses qemu:///system and drops the page cache")
    for stop in (signal.SIGINT, signal.SIGTERM):  # (SIGINT too: a background job ignores it)
        signal.signal(stop, signal.default_int_handler)  # KeyboardInterrupt: clean up and stop
    workdir = Path(tempfile.mkdtemp(prefix="virtdeck-bench-"))
    try:
        result = measure(args, workdir)
    except KeyboardInterrupt:
        print("interrupted; everything the bench made is removed", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"virtdeck backup bench: guest {result.name}, {args.disk_mib / 1024:g} GiB qcow2 disk "
          f"with {args.data_mib / 1024:g} GiB random data; median of {args.repeat} runs (qemu-img "
          "convert: one before each local backup), page cache dropped before each")  # fmt: skip
    print(f"GiB/s: the {args.disk_mib / 1024:g} GiB virtual size over the seconds; data GiB/s: "
          f"the {args.data_mib / 1024:g} GiB of data over them; ratio: qemu-img convert's "
          f"seconds over these (backups include {ALGORITHM} and fsync)")  # fmt: skip
    rows = result_rows(result, args.disk_mib, args.data_mib)
    print_table(
        ("method", "seconds", "spread", "runs", "GiB/s", "data GiB/s", "ratio to qemu-img convert",
         "target", "ok"), rows,
    )  # fmt: skip
    print()
    print(f"where the time goes (medians; backup phases from the files, looked at every {WATCH} s)")
    print_table(("phase", "seconds", "spread"), phase_rows(result))
    print_targets(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
