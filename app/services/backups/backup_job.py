"""Taking a backup as a job. On a local host a running guest's disks are read from a pull-mode NBD
export, only their extents that may hold data (app.services.backups.deltas), and a shut-off
guest's volume files are read directly (.local_copy); on a qemu+ssh host a running guest's disks
come from the same export forwarded through SSH (.ssh_exports); on
other remote hosts a push-mode job copies a running guest's disks into scratch volumes and volumes
are streamed through the libvirt connection. Its files land under temporary names and
are renamed once complete and hashed; any failure removes the directory, so a "succeeded" record
always has every file.

A pull-mode backup begins a libvirt checkpoint; the next one, if its chain is sound
(app.services.backups.backup_kind), is incremental: it copies only the blocks changed since that
checkpoint, as one delta file per disk (app.services.backups.deltas). Once it has succeeded the
older checkpoints go (the guest keeps one bitmap); if it fails its own goes, so the previous
backup's stays good for the next try."""

import getpass
import posixpath
import re
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import transaction
from app.errors import VirtdeckError
from app.models import Backup, Host
from app.models.base import utcnow
from app.services import jobs as job_service
from app.services.auth import Principal
from app.services.backups.backup_kind import Plan, plan_backup
from app.services.backups.catalog import get_backup
from app.services.backups.deltas import DELTA, EXTENTS, copy_extents
from app.services.backups.digests import backup_hash
from app.services.backups.files import backup_root, make_private_dirs, remove_tree, write_manifest
from app.services.backups.local_copy import copy_file, readable_file
from app.services.backups.retention import apply_retention
from app.services.backups.streams import HashingWriter, Meter, Throttle, write_bytes
from app.services.backups.webhook import report_failure
from app.services.backups.work import Started, connect, release
from app.services.guest_actions import GuestLock
from app.services.guest_delete import present_guest
from app.services.hosts import get_host
from app.services.job_work import JobEnv, store_work
from app.services.ports import Cancelled, HostCalls, JobQueue, Reporter
from app.units import human_bytes
from app.virt import backups as virt
from app.virt import checkpoints, volumes
from app.virt.connection import HostConnection
from app.virt.nbd_exports import IncrementalRefused, NbdExport, end_leftover, nbd_exports
from app.virt.uri import is_local, ssh_target, transport

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class BackupJob:
    """What a backup job works from: its record, the guest and the host, as plain values."""

    backup_id: int
    guest_uuid: str
    path: str  # under the backup directory
    started_at: datetime
    host_id: int
    host_name: str
    uri: str

    @classmethod
    def of(cls, backup: Backup, host: Host) -> "BackupJob":
        """The inputs, copied out of the rows (the job never sees a row)."""
        return cls(
            backup_id=backup.id,
            guest_uuid=backup.guest_uuid,
            path=backup.path,
            started_at=backup.started_at,
            host_id=host.id,
            host_name=host.name,
            uri=host.uri,
        )


def start_backup(
    sessions: sessionmaker[Session],
    sync: HostCalls,
    jobs: JobQueue,
    settings: Settings,
    *,
    uuid: str,
    principal: Principal,
) -> Started:
    """Check the guest can be backed up, lock it, record the backup and run it as a job."""
    guest = present_guest(sessions, uuid)
    env = JobEnv(sessions, settings, sync, GuestLock(sessions, guest, "backup"))
    with env.released_on_error():
        sync.call(guest.host_id, lambda conn: virt.inspect(conn, uuid))  # 409s before any job
        with transaction(sessions) as session:
            host = get_host(session, guest.host_id)
            started = utcnow()
            backup = Backup(
                host_id=host.id,
                host_name=host.name,
                guest_uuid=guest.uuid,
                guest_name=guest.name,
                started_by=principal.username,
                started_at=started,
                status="running",
                path=posixpath.join(
                    _SAFE.sub("_", host.name), guest.uuid, started.strftime("%Y%m%dT%H%M%S.%fZ")
                ),
                files=[],
            )
            session.add(backup)
            job = job_service.create_job(
                session,
                kind=job_service.JobKind.BACKUP,
                host_id=host.id,
                guest_uuid=guest.uuid,
                created_by=principal.username,
            )
            backup.job_id = job.id
            session.flush()
            store_work(job, BackupJob.of(backup, host), env.lock)
            session.flush()
            session.expunge_all()
    jobs.submit(job.id)
    return Started(backup=backup, job=job)


def run_backup(job: BackupJob, env: JobEnv, report: Reporter) -> dict[str, Any]:
    """Copy, hash, write the manifest, record, drop the checkpoints it supersedes, apply
    retention; or clean up (its own checkpoint too)."""
    root = backup_root(env.settings)
    conn: HostConnection | None = None
    succeeded = False
    try:
        try:
            directory = make_private_dirs(root, job.path)
            conn = connect(job.uri, env.settings)
            manifest, plan = _copy(conn, job, env, directory, report)
            manifest_sha256 = write_manifest(directory, manifest)
        except BaseException as exc:
            remove_tree(root, job.path)
            if conn is not None:
                with suppress(VirtdeckError):
                    checkpoints.delete(
                        conn, job.guest_uuid, checkpoints.name_of(job.backup_id, job.started_at)
                    )
            status = "cancelled" if isinstance(exc, Cancelled) else "failed"
            _finish(env.sessions, job.backup_id, status=status, exc=exc)
            if status == "failed":
                report_failure(env.sessions, env.settings, job.backup_id, event="backup.failed")
            raise
        _finish(
            env.sessions,
            job.backup_id,
            status="succeeded",
            manifest=manifest,
            manifest_sha256=manifest_sha256,
            plan=plan,
        )
        if plan.checkpoint is not None:
            checkpoints.delete_others(conn, job.guest_uuid, plan.checkpoint)
        succeeded = True
    finally:
        if conn is not None:
            release(job.uri, conn, keep=succeeded)
        env.release()
    removed = apply_retention(env.sessions, env.settings, job.guest_uuid)
    return {
        "backup_id": job.backup_id,
        "size_bytes": manifest["size_bytes"],
        "kind": plan.kind,
        "changed_bytes": _changed_bytes(manifest, plan),
        "removed": removed,
    }


def _copy(
    conn: HostConnection, job: BackupJob, env: JobEnv, directory: Path, report: Reporter
) -> tuple[dict[str, Any], Plan]:
    """Every file of the backup into directory; the manifest that lists them, and how the
    backup was taken (full or incremental)."""
    source = virt.inspect(conn, job.guest_uuid)
    hostname, qemu_version, libvirt_version = conn.versions()
    with transaction(env.sessions) as session:
        get_backup(session, job.backup_id).guest_state = "running" if source.running else "shutoff"
    local = is_local(job.uri)
    if source.running and _pulls(job.uri):
        # Before planning: the left job holds the checkpoint the plan may drop.
        end_leftover(conn, job.guest_uuid)
    plan = plan_backup(
        conn,
        env.sessions,
        env.settings,
        source,
        backup_id=job.backup_id,
        checkpoint=checkpoints.name_of(job.backup_id, job.started_at),
        pull=_pulls(job.uri),
    )
    algorithm = backup_hash(env.settings).algorithm  # one for all its files
    entries = [
        _entry(
            "domain.xml",
            "domain-xml",
            None,
            None,
            write_bytes(directory / "domain.xml", source.xml.encode(), algorithm=algorithm),
            algorithm=algorithm,
        )
    ]
    disk_entries, plan = _disks(
        conn, source, plan, job=job, env=env, directory=directory, report=report, local=local,
        algorithm=algorithm,
    )  # fmt: skip
    entries += disk_entries
    if source.nvram and local and Path(source.nvram).is_file():
        entries.append(
            _entry(
                "nvram.fd",
                "nvram",
                None,
                "raw",
                write_bytes(
                    directory / "nvram.fd", Path(source.nvram).read_bytes(), algorithm=algorithm
                ),
                algorithm=algorithm,
            )
        )
    report(1.0, "done")
    manifest = {
        "format": "virtdeck-backup/1",
        "digest": algorithm,
        "guest": {"uuid": source.uuid, "name": source.name, "state": source.state},
        "host": {
            "id": job.host_id,
            "name": job.host_name,
            "uri": job.uri,
            "hostname": hostname,
        },
        "started_at": job.started_at.isoformat(),
        "finished_at": utcnow().isoformat(),
        "libvirt_version": libvirt_version,
        "qemu_version": qemu_version,
        "disks": [
            {"target": d.target, "path": d.path, "pool": d.pool, "capacity": d.capacity}
            for d in source.disks
        ],
        "nvram": source.nvram,
        "skipped": list(source.skipped),
        "files": entries,
        "size_bytes": sum(e["size"] for e in entries),
        "kind": plan.kind,
        "parent": plan.parent,
        "checkpoint": plan.checkpoint,
    }
    return manifest, plan


def _disks(
    conn: HostConnection,
    source: virt.GuestSource,
    plan: Plan,
    *,
    job: BackupJob,
    env: JobEnv,
    directory: Path,
    report: Reporter,
    local: bool,
    algorithm: str,
) -> tuple[list[dict[str, Any]], Plan]:
    """Each disk's image (or an incremental backup's delta) into directory, read the fastest way
    the host allows; their entries, and the plan as it was carried out (an incremental one
    libvirt refused is taken in full)."""
    rate = env.settings.backup_bandwidth_mib * 1024 * 1024
    throttle, reporting, entries = Throttle(rate), env.renewing(report), []
    if source.running and _pulls(job.uri):
        pull = partial(
            _pull_all, conn, source, job=job, env=env, directory=directory,
            reporting=reporting, throttle=throttle, algorithm=algorithm,
        )  # fmt: skip
        try:
            entries = pull(plan)
        except IncrementalRefused as exc:
            plan = plan.as_full(exc.message)
            entries = pull(plan)
    elif source.running:
        # qemu+tcp/tls, or qemu+ssh without root: no tunnel to an export; the push job's
        # scratch volumes are streamed.
        pushed = Meter(sum(d.capacity for d in source.disks), reporting, span=0.5)
        with virt.push_backup(
            conn, source, lambda done, _total: pushed.add(done - pushed.done, "backup job")
        ) as scratch:
            sizes = {t: volumes.allocation(conn, p) for t, p in scratch.items()}
            meter = Meter(sum(sizes.values()), reporting, start=0.5, span=0.5)
            for disk in source.disks:
                entries.append(
                    _download(
                        disk, "qcow2", directory, meter, throttle,
                        fill=partial(_stream, conn, scratch[disk.target]), copied_by="stream",
                        algorithm=algorithm,
                    )
                )  # fmt: skip
    else:
        meter = Meter(sum(d.allocation for d in source.disks), reporting)
        for disk in source.disks:
            direct = local and readable_file(disk.path)
            fill = partial(copy_file, disk.path) if direct else partial(_stream, conn, disk.path)
            entries.append(
                _download(
                    disk, disk.format, directory, meter, throttle,
                    fill=fill, copied_by="file" if direct else "stream", algorithm=algorithm,
                )
            )  # fmt: skip
        if local and virt.inspect(conn, job.guest_uuid).running:
            # Its files were read behind libvirt's back: they are only a backup if it stayed off.
            raise VirtdeckError(f"{source.name} was started while it was backed up; try again")
    return entries, plan


def _pulls(uri: str) -> bool:
    """Whether a running guest's disks on the host at uri are read from a pull-mode export (a
    local host's, or a qemu+ssh host's whose login is root: the export's directory on the host
    must belong to QEMU's user); else a push-mode job copies them."""
    if transport(uri) == "ssh":
        return (ssh_target(uri).user or getpass.getuser()) == "root"
    return is_local(uri)


def _pull_all(
    conn: HostConnection,
    source: virt.GuestSource,
    plan: Plan,
    *,
    job: BackupJob,
    env: JobEnv,
    directory: Path,
    reporting: Callable[[float, str], None],
    throttle: Throttle,
    algorithm: str,
) -> list[dict[str, Any]]:
    """Pull mode: each disk read from the job's NBD export (a qemu+ssh host's forwarded here
    through SSH), beginning the plan's checkpoint: in full (the extents that may hold data), or
    for an incremental plan only the extents changed since its parent's."""
    begin = partial(nbd_exports, conn, source, checkpoint=plan.checkpoint, incremental=plan.since)
    if is_local(job.uri):
        exports = begin()
    else:
        # Imported by the first backup of a qemu+ssh host: asyncssh and cryptography would
        # otherwise hold about 15 MiB of every worker's memory.
        from app.services.backups.ssh_exports import exports_over_ssh

        exports = exports_over_ssh(job.uri, env.settings, begin)
    changed = None if plan.since is None else plan.changed
    # A full copy counts each disk's capacity until its export says what may hold data.
    meter = Meter(
        sum(d.capacity if changed is None else changed[d.target] for d in source.disks),
        reporting,
    )
    with exports as opened:
        return [
            _pull(
                opened[d.target],
                d,
                directory,
                meter,
                throttle,
                changed=changed,
                algorithm=algorithm,
            )
            for d in source.disks
        ]


def _stream(conn: HostConnection, path: str, writer: HashingWriter) -> None:
    """The volume at path through the libvirt connection into writer (holes stay holes)."""
    volumes.download(conn, path, writer.write, writer.hole)


def _counting(meter: Meter, throttle: Throttle, what: str) -> Callable[[int], None]:
    """A copy's on_bytes: count bytes on meter, at throttle's rate (listening while it waits)."""

    def on_bytes(count: int) -> None:
        throttle.passed(count, lambda: meter.add(0, what))
        meter.add(count, what)

    return on_bytes


def _download(
    disk: virt.DiskCopy,
    fmt: str,
    directory: Path,
    meter: Meter,
    throttle: Throttle,
    *,
    fill: Callable[[HashingWriter], None],
    copied_by: str,
    algorithm: str,
) -> dict[str, Any]:
    """One disk's image (its volume, or a push-mode scratch copy) into directory: fill writes it
    into a writer that hashes it as it comes."""
    name = f"disk-{disk.target}.{fmt}"
    what = f"copying {disk.target}"
    on_bytes = _counting(meter, throttle, what)

    writer = HashingWriter(directory / name, on_bytes=on_bytes, algorithm=algorithm)
    try:
        fill(writer)
        written = writer.finish()
        return _disk_entry(name, disk, fmt, written, copied_by=copied_by, algorithm=algorithm)
    except OSError as exc:
        writer.abort()
        raise VirtdeckError(f"writing {name}: {exc.strerror or exc}") from exc
    except BaseException:
        writer.abort()
        raise


def _pull(
    export: NbdExport,
    disk: virt.DiskCopy,
    directory: Path,
    meter: Meter,
    throttle: Throttle,
    *,
    changed: dict[str, int] | None,
    algorithm: str,
) -> dict[str, Any]:
    """One running disk from the job's export into directory: all its extents that may hold
    data (changed None), or those changed since the parent's checkpoint (changed: bytes per
    target); its entry lists the extents."""
    fmt = EXTENTS if changed is None else DELTA
    name = f"disk-{disk.target}.{fmt}"
    what = f"copying {disk.target}"
    if changed is not None:
        what += f", {human_bytes(changed[disk.target])} changed"
    on_bytes = _counting(meter, throttle, what)

    try:
        extents, size, digest = copy_extents(
            export.socket,
            export.name,
            export.context,
            directory / name,
            capacity=disk.capacity,
            on_bytes=on_bytes,
            algorithm=algorithm,
            on_plan=(lambda count: meter.resize(count - disk.capacity)) if changed is None
            else (lambda _count: None),
        )  # fmt: skip
    except OSError as exc:
        raise VirtdeckError(f"writing {name}: {exc.strerror or exc}") from exc
    entry = _disk_entry(name, disk, fmt, (size, digest), copied_by="nbd", algorithm=algorithm)
    return {**entry, "extents": extents}


def _changed_bytes(manifest: dict[str, Any], plan: Plan) -> int | None:
    """An incremental backup's changed bytes: its delta files' sizes (None for a full one)."""
    if plan.parent is None:
        return None
    return sum(f["size"] for f in manifest["files"] if f.get("format") == DELTA)


def _disk_entry(
    name: str,
    disk: virt.DiskCopy,
    fmt: str,
    written: tuple[int, str],
    *,
    copied_by: str,
    algorithm: str,
) -> dict[str, Any]:
    """A disk image's manifest entry: where the disk was (kept in the database: a restore in
    place takes it from there) and how its bytes were read (file, nbd or stream)."""
    where = {"path": disk.path, "pool": disk.pool, "capacity": disk.capacity}
    entry = _entry(name, "disk", disk.target, fmt, written, algorithm=algorithm)
    return {**entry, **where, "copied_by": copied_by}


def _finish(
    sessions: sessionmaker[Session],
    backup_id: int,
    *,
    status: str,
    manifest: dict[str, Any] | None = None,
    manifest_sha256: str | None = None,
    plan: Plan | None = None,
    exc: BaseException | None = None,
) -> None:
    """Record how the backup ended (and for a succeeded one, how it was taken)."""
    with transaction(sessions) as session:
        backup = get_backup(session, backup_id)
        backup.status, backup.finished_at = status, utcnow()
        if manifest is not None and plan is not None:
            backup.files, backup.size_bytes = manifest["files"], manifest["size_bytes"]
            backup.manifest_sha256 = manifest_sha256
            backup.verified_at = backup.finished_at
            backup.kind, backup.parent_id = plan.kind, plan.parent
            backup.checkpoint, backup.full_reason = plan.checkpoint, plan.full_reason
            backup.changed_bytes = _changed_bytes(manifest, plan)
        elif isinstance(exc, VirtdeckError):
            backup.error = exc.message
        elif isinstance(exc, Cancelled):
            backup.error = "cancelled"
        else:
            backup.error = f"internal error: {type(exc).__name__}"


def _entry(
    name: str,
    kind: str,
    target: str | None,
    fmt: str | None,
    written: tuple[int, str],
    *,
    algorithm: str,
) -> dict[str, Any]:
    """A file's manifest entry; its digest under the algorithm's name (sha256 or blake3)."""
    size, digest = written
    return {
        "name": name,
        "kind": kind,
        "target": target,
        "format": fmt,
        "size": size,
        algorithm: digest,
    }
