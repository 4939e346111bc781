"""Restoring a backup, in place or as a new guest, as a job: everything is checked first (the
files against their recorded digests, the images with qemu-img), and each step leaves an undo
behind, so that a failure puts the host back as it was. An incremental backup's disks are first
rebuilt, in a private directory under the backup directory, from its full backup's images and
every delta of the chain up to it, and uploaded from there; so is a disk a full backup kept as
extents (a running guest's)."""

import posixpath
import shutil
import tempfile
import uuid as uuid_module
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import transaction
from app.errors import Conflict, Invalid, VirtdeckError
from app.models import Guest
from app.models.base import utcnow
from app.services import jobs as job_service
from app.services.auth import Forbidden, Principal
from app.services.backups.actions import RESTORE, RESTORE_IN_PLACE, may, status_actions
from app.services.backups.catalog import get_backup
from app.services.backups.deltas import DELTA, EXTENTS, materialize
from app.services.backups.files import backup_root, mismatches, read_checked, read_manifest
from app.services.backups.images import check_image
from app.services.backups.restore_plan import (
    RESTORE_MODES,
    Ancestor,
    RestoreJob,
    RestoreRequest,
    ancestors,
    check_in_place,
    check_new,
    check_record,
)
from app.services.backups.streams import Meter, Throttle, checked_segments, segments
from app.services.backups.verify import check_manifest
from app.services.backups.work import Started, connect, release
from app.services.guest_actions import GuestLock
from app.services.guest_create import check_guest_name
from app.services.hosts import get_host, require_connected
from app.services.job_work import JobEnv, store_work
from app.services.ports import HostCalls, JobQueue, Reporter
from app.virt import backups as virt
from app.virt import checkpoints, domains, volumes
from app.virt.connection import HostConnection


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
    if request.mode == "in_place" and not may(principal, RESTORE_IN_PLACE):
        raise Forbidden(
            "mode: only an admin may restore in place (it replaces disks)", field="mode"
        )
    with sessions() as session:
        backup = get_backup(session, backup_id)
        if RESTORE not in status_actions(backup.status):
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
        inputs = RestoreJob.of(backup, host, request, ancestors(session, backup))
        session.expunge_all()
    check_record(inputs)
    if request.mode == "new":
        check_guest_name(request.name)
        sync.call(inputs.host_id, partial(check_new, job=inputs))
    else:
        sync.call(inputs.host_id, partial(check_in_place, job=inputs))
    for record in (*inputs.chain, inputs):
        check_manifest(settings, path=record.path, manifest_sha256=record.manifest_sha256)
    lock = GuestLock(sessions, guest, "restore") if guest is not None else None
    env = JobEnv(sessions, settings, sync, lock)
    with env.released_on_error(), transaction(sessions) as session:
        job = job_service.create_job(
            session,
            kind=job_service.JobKind.RESTORE,
            host_id=inputs.host_id,
            guest_uuid=inputs.guest_uuid,
            created_by=principal.username,
        )
        store_work(job, inputs, lock)
        session.flush()
        session.expunge(job)
    jobs.submit(job.id)
    return Started(backup=backup, job=job)


def run_restore(job: RestoreJob, env: JobEnv, report: Reporter) -> dict[str, Any]:
    """Restore, free the guest, and sync its host so that the inventory shows the result."""
    try:
        result = _Restore(job).run(env.sessions, env.settings, report)
    finally:
        env.release()
    env.sync.refresh(job.host_id)
    return result


class _Restore:
    """One restore's steps, each of which leaves an undo behind."""

    def __init__(self, job: RestoreJob) -> None:
        self.job = job
        self.disks = job.disks
        self.directory = Path()
        # {target: (image file, its format, its recorded entry)}: what each disk is restored
        # from; no entry for an image rebuilt here from a chain (nobody else can write it).
        self.images: dict[str, tuple[Path, str, dict[str, Any] | None]] = {}
        self.undo: list[Callable[[], None]] = []
        self.safety: list[str] = []

    def run(
        self, sessions: sessionmaker[Session], settings: Settings, report: Reporter
    ) -> dict[str, Any]:
        """Verify, check the images, then restore; a failure undoes every step taken."""
        root = backup_root(settings)
        self.directory = root / self.job.path
        report(0.0, "verifying checksums")
        # domain.xml is read once, here, and defined from these bytes; the disks are hashed
        # again as they are streamed (checked_segments): whatever changes in the backup
        # directory after this check is never used.
        xml_entry = next((e for e in self.job.files if e["kind"] == "domain-xml"), None)
        if xml_entry is None:  # a record without its domain XML cannot be restored
            xml, bad = None, ["domain.xml (missing)"]
        else:
            xml = read_checked(self.directory / xml_entry["name"], xml_entry)
            bad = [] if xml is not None else [xml_entry["name"]]
        bad += mismatches(
            self.directory,
            [e for e in self.job.files if e is not xml_entry],
            manifest_sha256=self.job.manifest_sha256,
        )
        _mark_verified(sessions, self.job.backup_id, bad)
        if bad:
            raise Conflict(f"the backup is corrupt ({', '.join(bad)}); nothing was restored")
        for ancestor in self.job.chain:
            _check_ancestor(sessions, root, ancestor)
        sources = self._sources(root)
        for target, [(image, entry), *deltas] in sources.items():
            if not deltas and entry["format"] != EXTENTS:  # an image, uploaded as it is
                check_image(image, entry["format"])
                self.images[target] = (image, entry["format"], self._entry(target))
        capacity = self._disks()
        throttle = Throttle(settings.backup_bandwidth_mib * 1024 * 1024)
        work = Path(tempfile.mkdtemp(prefix=".virtdeck-restore-", dir=root))
        try:
            rebuilt = {t: pieces for t, pieces in sources.items() if t not in self.images}
            self._rebuild(rebuilt, work, capacity, report)
            upload_from = 0.5 if rebuilt else 0.0
            meter = Meter(
                sum(e["size"] if e else p.stat().st_size for p, _, e in self.images.values()),
                report,
                start=upload_from,
                span=1.0 - upload_from,
            )
            conn, restored = connect(self.job.uri, settings), False
            try:
                try:
                    result = self._restore(conn, xml.decode(), capacity, meter, throttle)
                except BaseException:
                    for step in reversed(self.undo):
                        with suppress(VirtdeckError):
                            step()
                    raise
                for path in self.safety:
                    with suppress(VirtdeckError):
                        volumes.delete_volume_at(conn, path)
                restored = True
            finally:
                release(self.job.uri, conn, keep=restored)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        report(1.0, "done")
        return result

    def _entry(self, target: str) -> dict[str, Any]:
        return next(e for e in self.disks if e["target"] == target)

    def _sources(self, root: Path) -> dict[str, list[tuple[Path, dict[str, Any]]]]:
        """{target: [(file, its entry), ...] oldest first}: the newest full backup's file of each
        disk in the chain (an image or extents) and the deltas recorded after it."""
        records = [(root / a.path, a.files) for a in self.job.chain]
        records.append((self.directory, self.job.files))
        sources = {}
        for entry in self.disks:
            target, pieces = entry["target"], []
            for directory, files in reversed(records):
                found = next(
                    (e for e in files if e["kind"] == "disk" and e["target"] == target), None
                )
                if found is None:
                    break
                pieces.append((directory / found["name"], found))
                if found["format"] != DELTA:
                    sources[target] = pieces[::-1]
                    break
            if target not in sources:
                raise Conflict(
                    f"backup {self.job.backup_id} cannot be restored: no full backup of "
                    f"{target} comes before it"
                )
        return sources

    def _rebuild(
        self,
        rebuilt: dict[str, list[tuple[Path, dict[str, Any]]]],
        work: Path,
        disks: dict[str, dict[str, Any]],
        report: Reporter,
    ) -> None:
        """Each disk kept as extents, or of a chain as it was at this backup, as a qcow2 image in
        work."""
        meter = Meter(
            sum(
                2 * disks[t]["capacity"] + sum(entry["size"] for _, entry in pieces)
                for t, pieces in rebuilt.items()
            ),
            report,
            span=0.5,
        )
        for index, (target, pieces) in enumerate(rebuilt.items()):
            out = work / f"disk-{index}.qcow2"
            what = f"rebuilding {target}"
            materialize(
                pieces,
                out,
                capacity=disks[target]["capacity"],
                out_fmt="qcow2",
                on_bytes=lambda n, what=what: meter.add(n, what),
            )
            self.images[target] = (out, "qcow2", None)

    def _disks(self) -> dict[str, dict[str, Any]]:
        """{target: where the disk was (path, pool, capacity)}: from the database record; backups
        taken before it kept that have only their manifest to say (restored as new guests only,
        see check_record)."""
        if all("path" in entry for entry in self.disks):
            return {entry["target"]: entry for entry in self.disks}
        return {d["target"]: d for d in read_manifest(self.directory)["disks"]}

    def _restore(
        self,
        conn: HostConnection,
        xml: str,
        disks: dict[str, dict[str, Any]],
        meter: Meter,
        throttle: Throttle,
    ) -> dict[str, Any]:
        paths: dict[str, str] = {}
        if self.job.request.mode == "in_place":
            uuid, name = self.job.guest_uuid, self.job.guest_name
            check_in_place(conn, self.job)
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
                self._upload(conn, disk["path"], entry["target"], meter, throttle)
            xml = virt.restored_in_place(xml, disks=self._formats(paths))
        else:
            uuid, name = str(uuid_module.uuid4()), self.job.request.name or ""
            for entry in self.disks:
                disk = disks[entry["target"]]
                fmt = self.images[entry["target"]][1]
                volume = f"{name}-{entry['target']}.{fmt}"
                pool = self.job.request.pool or disk["pool"]
                path = volumes.create_volume(
                    conn, pool, volume, capacity=disk["capacity"], fmt=fmt
                ).path
                self.undo.append(lambda p=path: volumes.delete_volume_at(conn, p))
                paths[entry["target"]] = path
                self._upload(conn, path, entry["target"], meter, throttle)
            xml = virt.as_new_guest(xml, name=name, uuid=uuid, disks=self._formats(paths))
            self.undo.append(lambda: domains.undefine(conn, uuid, keep_nvram=True))
        meter.add(0, "defining the guest")
        domains.define(conn, xml)
        if self.job.request.mode == "in_place":
            # The restored disks carry no bitmaps: the guest's checkpoints no longer describe
            # them, and the next backup must be a full one.
            checkpoints.discard_all(conn, uuid)
        return {"guest_uuid": uuid, "name": name, "host_id": self.job.host_id, "disks": paths}

    def _formats(self, paths: dict[str, str]) -> dict[str, tuple[str, str]]:
        """{target: (path, the format of the image it was restored from)}."""
        return {target: (path, self.images[target][1]) for target, path in paths.items()}

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
                f"no active pool on {self.job.host_name} holds {posixpath.dirname(path)}; "
                f"define one to restore {entry['target']} in place"
            )
        fmt = self.images[entry["target"]][1]
        volumes.create_volume(conn, pool, volume, capacity=disk["capacity"], fmt=fmt)
        self.undo.append(lambda: volumes.delete_volume_at(conn, path))

    def _upload(
        self, conn: HostConnection, path: str, target: str, meter: Meter, throttle: Throttle
    ) -> None:
        """The disk's image into the volume at path: a backup file hashed again as it is sent,
        an image rebuilt here as it is."""
        image, _, entry = self.images[target]
        what = f"restoring {target}"

        def on_bytes(count: int) -> None:
            meter.add(count, what)

        volumes.upload(
            conn,
            path,
            segments(image, on_bytes=on_bytes, throttle=throttle)
            if entry is None
            else checked_segments(image, entry, on_bytes=on_bytes, throttle=throttle),
        )


def _mark_verified(sessions: sessionmaker[Session], backup_id: int, bad: list[str]) -> None:
    """Record that the backup's files were checked now, and corrupt (naming them) if bad."""
    with transaction(sessions) as session:
        row = get_backup(session, backup_id)
        row.verified_at = utcnow()
        if bad:
            row.status, row.error = "corrupt", f"checksum mismatch: {', '.join(bad)}"


def _check_ancestor(sessions: sessionmaker[Session], root: Path, ancestor: Ancestor) -> None:
    """409 (and the ancestor marked corrupt) when a file of a backup the restore builds on is
    not the one recorded."""
    bad = mismatches(
        root / ancestor.path, list(ancestor.files), manifest_sha256=ancestor.manifest_sha256
    )
    _mark_verified(sessions, ancestor.backup_id, bad)
    if bad:
        raise Conflict(
            f"backup {ancestor.backup_id}, which this one builds on, is corrupt "
            f"({', '.join(bad)}); nothing was restored"
        )
