"""Taking a backup as a job. On a local host a running guest's disks are read by qemu-img from a
pull-mode NBD export and a shut-off guest's volume files are read directly (app.services.backups
.local_copy); on a remote host a push-mode job copies a running guest's disks into scratch volumes
and volumes are streamed through the libvirt connection. Its files land under temporary names and
are renamed once complete and hashed; any failure removes the directory, so a "succeeded" record
always has every file."""

import posixpath
import re
from collections.abc import Callable
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
from app.services.backups.catalog import get_backup
from app.services.backups.files import backup_root, make_private_dirs, remove_tree, write_manifest
from app.services.backups.local_copy import copy_export, copy_file, readable_file
from app.services.backups.retention import apply_retention
from app.services.backups.streams import HashingWriter, Meter, Throttle, write_bytes
from app.services.backups.webhook import report_failure
from app.services.backups.work import Started, connect
from app.services.guest_actions import GuestLock
from app.services.guest_delete import present_guest
from app.services.hosts import get_host
from app.services.job_work import JobEnv, store_work
from app.services.ports import Cancelled, HostCalls, JobQueue, Reporter
from app.virt import backups as virt
from app.virt import volumes
from app.virt.connection import HostConnection
from app.virt.nbd_exports import NbdExport, nbd_exports
from app.virt.uri import is_local

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
    """Copy, hash, write the manifest, record, apply retention; or clean up."""
    root = backup_root(env.settings)
    try:
        directory = make_private_dirs(root, job.path)
        conn = connect(job.uri, env.settings)
        try:
            manifest = _copy(conn, job, env, directory, report)
        finally:
            conn.close()
        manifest_sha256 = write_manifest(directory, manifest)
    except BaseException as exc:
        remove_tree(root, job.path)
        status = "cancelled" if isinstance(exc, Cancelled) else "failed"
        _finish(env.sessions, job.backup_id, status=status, exc=exc)
        if status == "failed":
            report_failure(env.sessions, env.settings, job.backup_id, event="backup.failed")
        raise
    finally:
        env.release()
    _finish(
        env.sessions,
        job.backup_id,
        status="succeeded",
        manifest=manifest,
        manifest_sha256=manifest_sha256,
    )
    removed = apply_retention(env.sessions, env.settings, job.guest_uuid)
    return {"backup_id": job.backup_id, "size_bytes": manifest["size_bytes"], "removed": removed}


def _copy(
    conn: HostConnection, job: BackupJob, env: JobEnv, directory: Path, report: Reporter
) -> dict[str, Any]:
    """Every file of the backup into directory; the manifest that lists them."""
    source = virt.inspect(conn, job.guest_uuid)
    facts = conn.facts()
    with transaction(env.sessions) as session:
        get_backup(session, job.backup_id).guest_state = "running" if source.running else "shutoff"
    entries = [
        _entry(
            "domain.xml",
            "domain-xml",
            None,
            None,
            write_bytes(directory / "domain.xml", source.xml.encode()),
        )
    ]
    local = is_local(job.uri)
    entries += _disks(
        conn, source, job=job, env=env, directory=directory, report=report, local=local
    )
    if source.nvram and local and Path(source.nvram).is_file():
        entries.append(
            _entry(
                "nvram.fd",
                "nvram",
                None,
                "raw",
                write_bytes(directory / "nvram.fd", Path(source.nvram).read_bytes()),
            )
        )
    report(1.0, "done")
    return {
        "format": "virtdeck-backup/1",
        "digest": "sha256",
        "guest": {"uuid": source.uuid, "name": source.name, "state": source.state},
        "host": {
            "id": job.host_id,
            "name": job.host_name,
            "uri": job.uri,
            "hostname": facts.hostname,
        },
        "started_at": job.started_at.isoformat(),
        "finished_at": utcnow().isoformat(),
        "libvirt_version": facts.libvirt_version,
        "qemu_version": facts.hypervisor_version,
        "disks": [
            {"target": d.target, "path": d.path, "pool": d.pool, "capacity": d.capacity}
            for d in source.disks
        ],
        "nvram": source.nvram,
        "skipped": list(source.skipped),
        "files": entries,
        "size_bytes": sum(e["size"] for e in entries),
    }


def _disks(
    conn: HostConnection,
    source: virt.GuestSource,
    *,
    job: BackupJob,
    env: JobEnv,
    directory: Path,
    report: Reporter,
    local: bool,
) -> list[dict[str, Any]]:
    """Each disk's image into directory, read the fastest way the host allows; their entries."""
    rate = env.settings.backup_bandwidth_mib * 1024 * 1024
    throttle, reporting, entries = Throttle(rate), env.renewing(report), []
    if source.running and local:
        # Pull mode: qemu-img reads each disk's allocated extents from QEMU into the backup file.
        meter = Meter(sum(d.capacity for d in source.disks), reporting)
        with nbd_exports(conn, source) as exports:
            for disk in source.disks:
                entries.append(_pull(exports[disk.target], disk, directory, meter, rate))
    elif source.running:
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
                    fill=fill, copied_by="file" if direct else "stream",
                )
            )  # fmt: skip
        if local and virt.inspect(conn, job.guest_uuid).running:
            # Its files were read behind libvirt's back: they are only a backup if it stayed off.
            raise VirtdeckError(f"{source.name} was started while it was backed up; try again")
    return entries


def _stream(conn: HostConnection, path: str, writer: HashingWriter) -> None:
    """The volume at path through the libvirt connection into writer (holes stay holes)."""
    volumes.download(conn, path, writer.write, writer.hole)


def _download(
    disk: virt.DiskCopy,
    fmt: str,
    directory: Path,
    meter: Meter,
    throttle: Throttle,
    *,
    fill: Callable[[HashingWriter], None],
    copied_by: str,
) -> dict[str, Any]:
    """One disk's image (its volume, or a push-mode scratch copy) into directory: fill writes it
    into a writer that hashes it as it comes."""
    name = f"disk-{disk.target}.{fmt}"
    what = f"copying {disk.target}"

    def on_bytes(count: int) -> None:
        throttle.passed(count)
        meter.add(count, what)

    writer = HashingWriter(directory / name, on_bytes=on_bytes)
    try:
        fill(writer)
        return _disk_entry(name, disk, fmt, writer.finish(), copied_by=copied_by)
    except OSError as exc:
        writer.abort()
        raise VirtdeckError(f"writing {name}: {exc.strerror or exc}") from exc
    except BaseException:
        writer.abort()
        raise


def _pull(
    export: NbdExport, disk: virt.DiskCopy, directory: Path, meter: Meter, rate: int
) -> dict[str, Any]:
    """One running disk's pull-mode export into directory as qcow2, hashed once written."""
    name = f"disk-{disk.target}.qcow2"
    try:
        written = copy_export(
            export,
            directory / name,
            capacity=disk.capacity,
            rate=rate,
            on_bytes=lambda count: meter.add(count, f"copying {disk.target}"),
        )
    except OSError as exc:
        raise VirtdeckError(f"writing {name}: {exc.strerror or exc}") from exc
    return _disk_entry(name, disk, "qcow2", written, copied_by="nbd")


def _disk_entry(
    name: str, disk: virt.DiskCopy, fmt: str, written: tuple[int, str], *, copied_by: str
) -> dict[str, Any]:
    """A disk image's manifest entry: where the disk was (kept in the database: a restore in
    place takes it from there) and how its bytes were read (file, nbd or stream)."""
    where = {"path": disk.path, "pool": disk.pool, "capacity": disk.capacity}
    return {**_entry(name, "disk", disk.target, fmt, written), **where, "copied_by": copied_by}


def _finish(
    sessions: sessionmaker[Session],
    backup_id: int,
    *,
    status: str,
    manifest: dict[str, Any] | None = None,
    manifest_sha256: str | None = None,
    exc: BaseException | None = None,
) -> None:
    """Record how the backup ended."""
    with transaction(sessions) as session:
        backup = get_backup(session, backup_id)
        backup.status, backup.finished_at = status, utcnow()
        if manifest is not None:
            backup.files, backup.size_bytes = manifest["files"], manifest["size_bytes"]
            backup.manifest_sha256 = manifest_sha256
            backup.verified_at = backup.finished_at
        elif isinstance(exc, VirtdeckError):
            backup.error = exc.message
        elif isinstance(exc, Cancelled):
            backup.error = "cancelled"
        else:
            backup.error = f"internal error: {type(exc).__name__}"


def _entry(
    name: str, kind: str, target: str | None, fmt: str | None, written: tuple[int, str]
) -> dict[str, Any]:
    size, sha256 = written
    return {
        "name": name,
        "kind": kind,
        "target": target,
        "format": fmt,
        "size": size,
        "sha256": sha256,
    }
