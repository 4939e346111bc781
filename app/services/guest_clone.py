"""Clone a guest as a job: a new guest on the same host with a new name, UUID and MAC addresses,
each of its own disks copied into a new volume of the chosen pool.

A shut-off guest's volumes are streamed byte for byte over the connection (remote hosts too); a
running guest's disks are copied as they are at one instant by a push-mode backup job straight
into the new volumes (qcow2), so the copy is consistent while the guest runs. CD-ROMs, ISOs,
read-only and shareable disks are not copied: the clone uses the same media. A shut-off guest
whose disk has a backing file is refused (a byte copy would share the backing image with the
source); cloned while it runs, the chain is flattened into the copy. Everything is checked
before the first byte; a failure or a cancel removes the volumes made, and the guest is defined
last, so nothing is left half made.
"""

import uuid as uuid_lib
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import transaction
from app.errors import Conflict, Invalid, VirtdeckError
from app.models import Job
from app.services import jobs as job_service
from app.services.auth import Principal
from app.services.backups.streams import Meter
from app.services.backups.work import connect, release
from app.services.guest_actions import GuestLock
from app.services.guest_create import check_guest_name
from app.services.guest_create.on_host import usable_pool
from app.services.guest_create.request import MAX_REF
from app.services.guest_delete import present_guest
from app.services.inventory import record_guest
from app.services.job_work import JobEnv, store_work
from app.services.ports import HostCalls, JobQueue, Reporter
from app.units import human_bytes
from app.virt import backups as virt
from app.virt import domains, volumes
from app.virt.connection import HostConnection
from app.virt.types import GuestInfo


@dataclass(frozen=True)
class CloneJob:
    """What a clone job works from, as plain values: the source, the new guest, where."""

    source_uuid: str
    uuid: str
    name: str
    pool: str
    host_id: int
    uri: str


def _volume_name(clone: str, disk: virt.DiskCopy, *, running: bool) -> str:
    """The name of the clone's copy of a disk: a running guest's copies are always qcow2."""
    return f"{clone}-{disk.target}.{'qcow2' if running else disk.format}"


def _check(conn: HostConnection, job: CloneJob) -> virt.GuestSource:
    """What the clone copies, once the name, the pool and its space are right (on the host)."""
    source = virt.read_source(conn, job.source_uuid, action="clone")
    if domains.name_taken(conn, job.name):
        raise Conflict(
            f"name: a guest called '{job.name}' already exists on this host", field="name"
        )
    pool = usable_pool(conn, job.pool, field="pool")
    needed = sum(d.allocation for d in source.disks)
    if needed > pool.available:
        raise Invalid(
            f"pool: the copies need {human_bytes(needed)}; pool '{job.pool}' has "
            f"{human_bytes(pool.available)} free",
            field="pool",
        )
    for disk in source.disks:
        name = _volume_name(job.name, disk, running=source.running)
        if volumes.volume_exists(conn, job.pool, name):
            raise Conflict(f"name: pool '{job.pool}' already has a volume '{name}'", field="name")
    return source


def start_clone(
    sessions: sessionmaker[Session],
    sync: HostCalls,
    jobs: JobQueue,
    settings: Settings,
    *,
    uuid: str,
    name: str,
    pool: str,
    principal: Principal,
) -> Job:
    """Check the clone, lock the source guest and run the copy as a job."""
    check_guest_name(name)
    if not pool or len(pool) > MAX_REF:
        raise Invalid("pool: choose a storage pool", field="pool")
    guest = present_guest(sessions, uuid)
    job_inputs = CloneJob(
        source_uuid=guest.uuid,
        uuid=str(uuid_lib.uuid4()),
        name=name,
        pool=pool,
        host_id=guest.host_id,
        uri=guest.host.uri,
    )
    env = JobEnv(sessions, settings, sync, GuestLock(sessions, guest, "clone"))
    with env.released_on_error():
        sync.call(guest.host_id, lambda conn: _check(conn, job_inputs))
        with transaction(sessions) as session:
            job = job_service.create_job(
                session,
                kind=job_service.JobKind.GUEST_CLONE,
                host_id=guest.host_id,
                guest_uuid=guest.uuid,
                created_by=principal.username,
            )
            store_work(job, job_inputs, env.lock)
            session.flush()
            session.expunge(job)
    jobs.submit(job.id)
    return job


def run_clone(job: CloneJob, env: JobEnv, report: Reporter) -> dict[str, Any]:
    """Copy and define on the host (on a connection of the job's own), then record the clone."""
    try:
        conn, cloned = connect(job.uri, env.settings), False
        try:
            info, paths = _Clone(conn, job, env.renewing(report)).run()
            cloned = True
        finally:
            release(job.uri, conn, keep=cloned)
    finally:
        env.release()
    with transaction(env.sessions) as session:
        record_guest(session, job.host_id, info)
    return {"guest_uuid": job.uuid, "name": job.name, "disks": paths}


class _Clone:
    """One clone's work on its host; the volumes it made are removed again if it fails."""

    def __init__(self, conn: HostConnection, job: CloneJob, report: Reporter) -> None:
        self.conn, self.job, self.report = conn, job, report
        self.made: list[str] = []

    def run(self) -> tuple[GuestInfo, dict[str, str]]:
        """The copies, then the new guest: its state and {target: copy's path}."""
        job = self.job
        source = _check(self.conn, job)  # again: the host may have changed meanwhile
        try:
            disks = self._push(source) if source.running else self._copy(source)
            self.report(0.99, "defining the guest")
            xml = virt.as_new_guest(source.xml, name=job.name, uuid=job.uuid, disks=disks)
            domains.define(self.conn, xml)
        except BaseException:  # a cancel too
            for path in reversed(self.made):
                with suppress(VirtdeckError):
                    volumes.delete_volume_at(self.conn, path)
            raise
        return self.conn.guest(job.uuid), {t: path for t, (path, _fmt) in disks.items()}

    def _copy(self, source: virt.GuestSource) -> dict[str, tuple[str, str]]:
        """A shut-off guest's volumes streamed byte for byte: {target: (copy's path, format)}."""
        meter = Meter(sum(d.allocation for d in source.disks), self.report, span=0.98)
        disks = {}
        for disk in source.disks:
            what = f"copying {disk.target}"
            path = volumes.clone_volume(
                self.conn,
                disk.path,
                _volume_name(self.job.name, disk, running=False),
                pool=self.job.pool,
                on_bytes=lambda count, what=what: meter.add(count, what),
            )
            self.made.append(path)
            disks[disk.target] = (path, disk.format)
        return disks

    def _push(self, source: virt.GuestSource) -> dict[str, tuple[str, str]]:
        """A running guest's disks copied at one instant into new qcow2 volumes by a push-mode
        backup job: {target: (copy's path, qcow2)}."""
        targets = {}
        for disk in source.disks:
            name = _volume_name(self.job.name, disk, running=True)
            volume = volumes.create_volume(self.conn, self.job.pool, name, capacity=disk.capacity)
            self.made.append(volume.path)
            targets[disk.target] = volume.path
        if targets:  # a guest with no disk of its own has nothing to copy
            meter = Meter(sum(d.capacity for d in source.disks), self.report, span=0.98)
            virt.push_into(
                self.conn,
                source.uuid,
                targets,
                lambda done, _total: meter.add(done - meter.done, "point-in-time copy"),
            )
        return {target: (path, "qcow2") for target, path in targets.items()}
