"""Backups: take one as a job (push-mode for a running guest, a volume copy for a shut-off one),
keep the history, verify, restore in place or as a new guest, and apply retention.

A backup's files land in <backup_dir>/<host>/<guest uuid>/<UTC time>/ under temporary names and
are renamed once complete and hashed; any failure removes the directory, so a "succeeded" record
always has every file. A restore checks everything first and undoes what it did on failure.
"""

import posixpath
import re
import uuid as uuid_module
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import transaction
from app.errors import Conflict, Invalid, NotFound, VirtdeckError
from app.models import Backup, Guest, Host, Job
from app.models.base import utcnow
from app.services import backup_files as files
from app.services import jobs as job_service
from app.services.auth import Forbidden, Permission, Principal
from app.services.guest_actions import GuestLock
from app.services.guest_create import check_guest_name
from app.services.guest_delete import present_guest
from app.services.hosts import get_host, require_connected
from app.services.paging import check_page
from app.services.ports import Cancelled, HostCalls, JobQueue, Reporter
from app.virt import backups as virt
from app.virt import domains, volumes
from app.virt.connection import HostConnection
from app.virt.uri import is_local

RESTORE_MODES = ("in_place", "new")
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Started:
    """A backup or restore that is now running as a job."""

    backup: Backup
    job: Job


@dataclass(frozen=True)
class RestoreRequest:
    """What a restore should make: the same guest again, or a new one."""

    mode: str
    name: str | None = None
    host_id: int | None = None
    pool: str | None = None


def backup_root(settings: Settings) -> Path:
    """The backup directory, made if missing."""
    root = Path(settings.backup_dir).resolve()
    root.mkdir(mode=files.DIR_MODE, parents=True, exist_ok=True)
    return root


def get_backup(session: Session, backup_id: int) -> Backup:
    """The backup, or NotFound."""
    backup = session.get(Backup, backup_id)
    if backup is None:
        raise NotFound(f"backup {backup_id} not found")
    return backup


def list_backups(
    session: Session,
    *,
    host_id: int | None = None,
    guest_uuid: str | None = None,
    guest: str | None = None,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Backup], int]:
    """Backups newest first, filtered (guest: a UUID or part of a name); and how many match."""
    check_page(limit=limit, offset=offset, max_limit=500)
    query = select(Backup)
    if host_id is not None:
        query = query.where(Backup.host_id == host_id)
    if guest_uuid:
        query = query.where(Backup.guest_uuid == guest_uuid)
    if guest:
        query = query.where(
            or_(
                Backup.guest_uuid == guest.lower(),
                Backup.guest_name.contains(guest, autoescape=True),
            )
        )
    if status:
        query = query.where(Backup.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(Backup.started_at.desc(), Backup.id.desc()).offset(offset).limit(limit)
    ).all()
    return list(rows), total


def _connect(host: Host, settings: Settings) -> HostConnection:
    """A connection of the job's own, so that a long stream never delays the host's sync."""
    return HostConnection(
        host.uri,
        keepalive=(settings.keepalive_interval, settings.keepalive_count),
        on_close=lambda _reason: None,
    )


# --- taking a backup --------------------------------------------------------------------------


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
    lock = GuestLock(sessions, guest, "backup")
    try:
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
                kind="backup",
                host_id=host.id,
                guest_uuid=guest.uuid,
                created_by=principal.username,
            )
            backup.job_id = job.id
            session.flush()
            session.expunge_all()
    except BaseException:
        lock.release()
        raise
    work = _BackupWork(sessions, settings, backup.id, lock, host.uri, host.id)
    jobs.submit(job.id, work)
    return Started(backup=backup, job=job)


class _BackupWork:
    """A backup job: copy, hash, write the manifest, record, apply retention; or clean up."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        backup_id: int,
        lock: GuestLock,
        uri: str,
        host_id: int,
    ) -> None:
        self.sessions, self.settings, self.backup_id, self.lock = (
            sessions,
            settings,
            backup_id,
            lock,
        )
        self.uri, self.host_id = uri, host_id

    def __call__(self, report: Reporter) -> dict[str, Any]:
        root = backup_root(self.settings)
        with self.sessions() as session:
            backup = get_backup(session, self.backup_id)
            host = get_host(session, self.host_id)
            session.expunge_all()
        try:
            directory = files.make_private_dirs(root, backup.path)
            conn = _connect(host, self.settings)
            try:
                manifest = self._copy(conn, backup, host, directory, report)
            finally:
                conn.close()
            manifest_sha256 = files.write_manifest(directory, manifest)
        except BaseException as exc:
            files.remove_tree(root, backup.path)
            self._finish(status="cancelled" if isinstance(exc, Cancelled) else "failed", exc=exc)
            raise
        finally:
            self.lock.release()
        self._finish(status="succeeded", manifest=manifest, manifest_sha256=manifest_sha256)
        removed = apply_retention(self.sessions, self.settings, backup.guest_uuid)
        return {"backup_id": backup.id, "size_bytes": manifest["size_bytes"], "removed": removed}

    def _copy(
        self,
        conn: HostConnection,
        backup: Backup,
        host: Host,
        directory: Path,
        report: Reporter,
    ) -> dict[str, Any]:
        source = virt.inspect(conn, backup.guest_uuid)
        facts = conn.facts()
        with transaction(self.sessions) as session:
            get_backup(session, backup.id).guest_state = "running" if source.running else "shutoff"
        throttle = files.Throttle(self.settings.backup_bandwidth_mib * 1024 * 1024)
        renewed = [utcnow()]

        def reporting(progress: float, message: str) -> None:
            report(progress, message)
            if (utcnow() - renewed[0]).total_seconds() > 60:
                self.lock.renew()
                renewed[0] = utcnow()

        entries = [
            _entry(
                "domain.xml",
                "domain-xml",
                None,
                None,
                files.write_bytes(directory / "domain.xml", source.xml.encode()),
            )
        ]
        if source.running:
            job = files.Meter(sum(d.capacity for d in source.disks), reporting, span=0.5)
            with virt.push_backup(
                conn, source, lambda done, _total: job.add(done - job.done, "backup job")
            ) as scratch:
                sizes = {t: volumes.allocation(conn, p) for t, p in scratch.items()}
                meter = files.Meter(sum(sizes.values()), reporting, start=0.5, span=0.5)
                for disk in source.disks:
                    entries.append(
                        self._download(
                            conn, scratch[disk.target], disk, "qcow2", directory, meter, throttle
                        )
                    )
        else:
            meter = files.Meter(sum(d.allocation for d in source.disks), reporting)
            for disk in source.disks:
                entries.append(
                    self._download(conn, disk.path, disk, disk.format, directory, meter, throttle)
                )
        if source.nvram and is_local(host.uri) and Path(source.nvram).is_file():
            entries.append(
                _entry(
                    "nvram.fd",
                    "nvram",
                    None,
                    "raw",
                    files.write_bytes(directory / "nvram.fd", Path(source.nvram).read_bytes()),
                )
            )
        report(1.0, "done")
        return {
            "format": "virtdeck-backup/1",
            "guest": {"uuid": source.uuid, "name": source.name, "state": source.state},
            "host": {"id": host.id, "name": host.name, "uri": host.uri, "hostname": facts.hostname},
            "started_at": backup.started_at.isoformat(),
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

    def _download(
        self,
        conn: HostConnection,
        path: str,
        disk: virt.DiskCopy,
        fmt: str,
        directory: Path,
        meter: files.Meter,
        throttle: files.Throttle,
    ) -> dict[str, Any]:
        name = f"disk-{disk.target}.{fmt}"
        what = f"copying {disk.target}"

        def on_bytes(count: int) -> None:
            throttle.passed(count)
            meter.add(count, what)

        writer = files.HashingWriter(directory / name, on_bytes=on_bytes)
        try:
            volumes.download(conn, path, writer.write, writer.hole)
            # Where the disk was, kept in the database: a restore in place takes it from there.
            where = {"path": disk.path, "pool": disk.pool, "capacity": disk.capacity}
            return {**_entry(name, "disk", disk.target, fmt, writer.finish()), **where}
        except OSError as exc:
            writer.abort()
            raise VirtdeckError(f"writing {name}: {exc.strerror or exc}") from exc
        except BaseException:
            writer.abort()
            raise

    def _finish(
        self,
        *,
        status: str,
        manifest: dict[str, Any] | None = None,
        manifest_sha256: str | None = None,
        exc: BaseException | None = None,
    ) -> None:
        with transaction(self.sessions) as session:
            backup = get_backup(session, self.backup_id)
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


def apply_retention(sessions: sessionmaker[Session], settings: Settings, guest_uuid: str) -> int:
    """Delete the guest's succeeded or corrupt backups past the newest backup_keep succeeded
    ones, files first; returns how many went."""
    with transaction(sessions) as session:
        kept = session.scalars(
            select(Backup.started_at)
            .where(Backup.guest_uuid == guest_uuid, Backup.status == "succeeded")
            .order_by(Backup.started_at.desc())
            .offset(settings.backup_keep - 1)
            .limit(1)
        ).first()
        if kept is None:
            return 0
        old = session.scalars(
            select(Backup).where(
                Backup.guest_uuid == guest_uuid,
                Backup.status.in_(("succeeded", "corrupt")),
                Backup.started_at < kept,
            )
        ).all()
        root = backup_root(settings)
        for backup in old:
            files.remove_tree(root, backup.path)
            session.delete(backup)
        return len(old)


# --- verify and delete ------------------------------------------------------------------------


def verify_backup(sessions: sessionmaker[Session], settings: Settings, backup_id: int) -> Backup:
    """Recompute every checksum: corrupt (naming the files) on a mismatch, else verified now."""
    with sessions() as session:
        backup = get_backup(session, backup_id)
        if backup.status not in ("succeeded", "corrupt"):
            raise Conflict(
                f"backup {backup_id} is {backup.status}: nothing to verify",
                extra={"status": backup.status},
            )
        recorded, relative, digest = list(backup.files), backup.path, backup.manifest_sha256
    bad = files.mismatches(backup_root(settings) / relative, recorded, manifest_sha256=digest)
    with transaction(sessions) as session:
        backup = get_backup(session, backup_id)
        backup.verified_at = utcnow()
        backup.status = "corrupt" if bad else "succeeded"
        backup.error = f"checksum mismatch: {', '.join(bad)}" if bad else None
        session.flush()
        session.expunge(backup)
    return backup


def settle_orphans(sessions: sessionmaker[Session], settings: Settings) -> int:
    """Backups still "running" whose job has ended without them (its instance died): failed,
    with the job's error, and their partial files removed. Returns how many."""
    with transaction(sessions) as session:
        orphans = session.execute(
            select(Backup, Job.error)
            .join(Job, Job.id == Backup.job_id)
            .where(Backup.status == "running", Job.status.not_in(("queued", "running")))
        ).all()
        for backup, error in orphans:
            files.remove_tree(backup_root(settings), backup.path)
            backup.status, backup.finished_at = "failed", utcnow()
            backup.error = error or "its job ended without finishing it"
        return len(orphans)


def delete_backup(sessions: sessionmaker[Session], settings: Settings, backup_id: int) -> None:
    """Remove the backup's files, then its record; 409 while it runs."""
    with transaction(sessions) as session:
        backup = get_backup(session, backup_id)
        if backup.status == "running":
            raise Conflict(
                f"backup {backup_id} is running; cancel it first", extra={"status": backup.status}
            )
        files.remove_tree(backup_root(settings), backup.path)
        session.delete(backup)


# --- restore ----------------------------------------------------------------------------------


def start_restore(
    sessions: sessionmaker[Session],
    sync: HostCalls,
    jobs: JobQueue,
    settings: Settings,
    *,
    backup_id: int,
    request: RestoreRequest,
    principal: Principal,
) -> Started:
    """Check the request, lock the guest (if the inventory still has it) and run the restore."""
    if request.mode not in RESTORE_MODES:
        raise Invalid(f"mode: one of {', '.join(RESTORE_MODES)}", field="mode")
    if request.mode == "in_place" and not principal.allows(Permission.ADMIN):
        raise Forbidden(
            "mode: only an admin may restore in place (it replaces disks)", field="mode"
        )
    with sessions() as session:
        backup = get_backup(session, backup_id)
        if backup.status != "succeeded":
            raise Conflict(
                f"backup {backup_id} is {backup.status}"
                + (f" ({backup.error})" if backup.error else "")
                + "; only a succeeded backup can be restored",
                extra={"status": backup.status},
            )
        host_id = request.host_id if request.mode == "new" and request.host_id else backup.host_id
        host = get_host(session, host_id)
        require_connected(host)
        guest = session.scalars(
            select(Guest).where(Guest.uuid == backup.guest_uuid, Guest.host_id == backup.host_id)
        ).first()
        session.expunge_all()
    plan = _RestorePlan(backup, host, request)
    if request.mode == "new":
        check_guest_name(request.name)
        sync.call(host.id, plan.check_new)
    else:
        sync.call(host.id, plan.check_in_place)
    _check_manifest(settings, backup)
    lock = GuestLock(sessions, guest, "restore") if guest is not None else None
    try:
        with transaction(sessions) as session:
            job = job_service.create_job(
                session,
                kind="restore",
                host_id=host.id,
                guest_uuid=backup.guest_uuid,
                created_by=principal.username,
            )
            session.flush()
            session.expunge(job)
    except BaseException:
        if lock is not None:
            lock.release()
        raise

    def work(report: Reporter) -> dict[str, Any]:
        try:
            result = plan.run(sessions, settings, report)
        finally:
            if lock is not None:
                lock.release()
        sync.refresh(host.id)
        return result

    jobs.submit(job.id, work)
    return Started(backup=backup, job=job)


def _check_manifest(settings: Settings, backup: Backup) -> None:
    """409 when manifest.json is not the one written when the backup was taken."""
    if backup.manifest_sha256 is None:  # taken before the digest was recorded
        return
    bad = files.mismatches(
        backup_root(settings) / backup.path, [], manifest_sha256=backup.manifest_sha256
    )
    if bad:
        raise Conflict(
            f"the backup's {bad[0]} is not the one written when it was taken (someone changed "
            "the backup directory); nothing was restored"
        )


class _RestorePlan:
    """One restore: the checks (also made before the job is queued) and the steps, each of which
    leaves an undo behind so that a failure puts the host back as it was."""

    def __init__(self, backup: Backup, host: Host, request: RestoreRequest) -> None:
        self.backup, self.host, self.request = backup, host, request
        self.disks = [f for f in backup.files if f["kind"] == "disk"]
        self.directory = Path()
        self.undo: list[Callable[[], None]] = []
        self.safety: list[str] = []

    def check_in_place(self, conn: HostConnection) -> None:
        """The guest must be shut off or gone, and its name free for its UUID."""
        state = domains.state(conn, self.backup.guest_uuid)
        if state is not None and state != "shutoff":
            raise Conflict(
                f"{self.backup.guest_name} is {state}; shut it off to restore it in place",
                extra={"state": state},
            )
        if domains.name_taken(conn, self.backup.guest_name, other_than=self.backup.guest_uuid):
            raise Conflict(
                f"another guest on {self.host.name} is named {self.backup.guest_name}",
                field="name",
            )

    def check_new(self, conn: HostConnection) -> None:
        """The new name is free on the host and the pool, if one was named, is there."""
        if domains.name_taken(conn, self.request.name or ""):
            raise Conflict(
                f"name: {self.host.name} already has a guest named {self.request.name}",
                field="name",
            )
        if self.request.pool is not None and not volumes.pool_active(conn, self.request.pool):
            raise Invalid(
                f"pool: {self.host.name} has no active pool {self.request.pool}", field="pool"
            )

    def run(
        self, sessions: sessionmaker[Session], settings: Settings, report: Reporter
    ) -> dict[str, Any]:
        """Verify, check the images, then restore; a failure undoes every step taken."""
        self.directory = backup_root(settings) / self.backup.path
        report(0.0, "verifying checksums")
        bad = files.mismatches(
            self.directory, list(self.backup.files), manifest_sha256=self.backup.manifest_sha256
        )
        with transaction(sessions) as session:
            row = get_backup(session, self.backup.id)
            row.verified_at = utcnow()
            if bad:
                row.status, row.error = "corrupt", f"checksum mismatch: {', '.join(bad)}"
        if bad:
            raise Conflict(f"the backup is corrupt ({', '.join(bad)}); nothing was restored")
        for entry in self.disks:
            files.check_image(self.directory / entry["name"], entry["format"])
        capacity = self._disks()
        meter = files.Meter(sum(e["size"] for e in self.disks), report)
        throttle = files.Throttle(settings.backup_bandwidth_mib * 1024 * 1024)
        conn = _connect(self.host, settings)
        try:
            try:
                result = self._restore(conn, capacity, meter, throttle)
            except BaseException:
                for step in reversed(self.undo):
                    with suppress(VirtdeckError):
                        step()
                raise
            for path in self.safety:
                with suppress(VirtdeckError):
                    volumes.delete_volume_at(conn, path)
        finally:
            conn.close()
        report(1.0, "done")
        return result

    def _disks(self) -> dict[str, dict[str, Any]]:
        """{target: where the disk was (path, pool, capacity)}: from the database record; backups
        taken before it kept that have only their manifest to say."""
        if all("path" in entry for entry in self.disks):
            return {entry["target"]: entry for entry in self.disks}
        return {d["target"]: d for d in files.read_manifest(self.directory)["disks"]}

    def _restore(
        self,
        conn: HostConnection,
        disks: dict[str, dict[str, Any]],
        meter: files.Meter,
        throttle: files.Throttle,
    ) -> dict[str, Any]:
        xml = (self.directory / "domain.xml").read_text()
        paths: dict[str, str] = {}
        if self.request.mode == "in_place":
            uuid, name = self.backup.guest_uuid, self.backup.guest_name
            self.check_in_place(conn)
            if domains.state(conn, uuid) is not None:
                before = domains.definition(conn, uuid)
                self.undo.append(lambda: domains.define(conn, before))
            else:
                self.undo.append(lambda: domains.undefine(conn, uuid, keep_nvram=True))
            tag = uuid_module.uuid4().hex[:8]
            for entry in self.disks:
                disk = disks[entry["target"]]
                paths[entry["target"]] = disk["path"]
                self._replace(conn, disk, entry, tag)
                self._upload(conn, disk["path"], entry, meter, throttle)
        else:
            uuid, name = str(uuid_module.uuid4()), self.request.name or ""
            for entry in self.disks:
                disk = disks[entry["target"]]
                volume = f"{name}-{entry['target']}.{entry['format']}"
                pool = self.request.pool or disk["pool"]
                path = volumes.create_volume(
                    conn, pool, volume, capacity=disk["capacity"], fmt=entry["format"]
                ).path
                self.undo.append(lambda p=path: volumes.delete_volume_at(conn, p))
                paths[entry["target"]] = path
                self._upload(conn, path, entry, meter, throttle)
            xml = virt.as_new_guest(xml, name=name, uuid=uuid, disks=paths)
            self.undo.append(lambda: domains.undefine(conn, uuid, keep_nvram=True))
        meter.add(0, "defining the guest")
        domains.define(conn, xml)
        return {"guest_uuid": uuid, "name": name, "host_id": self.host.id, "disks": paths}

    def _replace(
        self, conn: HostConnection, disk: dict[str, Any], entry: dict[str, Any], tag: str
    ) -> None:
        """Make an empty volume where the disk was, keeping a copy of what was there until the
        restore has succeeded (the undo puts it back)."""
        path = disk["path"]
        volume = posixpath.basename(path)
        if volumes.find_volume(conn, path):
            safety = volumes.clone_volume(conn, path, f".virtdeck-pre-restore-{tag}-{volume}")
            self.safety.append(safety)
            self.undo.append(lambda: volumes.delete_volume_at(conn, safety))
            volumes.delete_volume_at(conn, path)
            self.undo.append(lambda: volumes.clone_volume(conn, safety, volume))
        pool = volumes.pool_by_directory(conn, path)
        if pool is None:
            raise Conflict(
                f"no active pool on {self.host.name} holds {posixpath.dirname(path)}; "
                f"define one to restore {entry['target']} in place"
            )
        volumes.create_volume(conn, pool, volume, capacity=disk["capacity"], fmt=entry["format"])
        self.undo.append(lambda: volumes.delete_volume_at(conn, path))

    def _upload(
        self,
        conn: HostConnection,
        path: str,
        entry: dict[str, Any],
        meter: files.Meter,
        throttle: files.Throttle,
    ) -> None:
        what = f"restoring {entry['target']}"
        volumes.upload(
            conn,
            path,
            files.segments(
                self.directory / entry["name"],
                on_bytes=lambda n: meter.add(n, what),
                throttle=throttle,
            ),
        )
