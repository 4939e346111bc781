"""Carry out a checked plan: make the volume (new, or from a base image) and the cloud-init seed,
define and start the guest, taking back what was made when a step fails; as a job when a new
volume must be allocated."""

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.errors import HostUnreachable, VirtdeckError
from app.models import Guest, Job
from app.services import jobs as job_service
from app.services.auth import Principal
from app.services.guest_create import cloud_init
from app.services.guest_create.on_host import (
    CreatePlan,
    check_on_host,
)
from app.services.guest_create.request import (
    CreateRequest,
    check_request,
)
from app.services.guest_create.seed_iso import seed_iso
from app.services.guests import get_guest
from app.services.inventory import record_guest
from app.services.job_work import JobEnv, store_work
from app.services.ports import HostCalls, JobQueue, Reporter
from app.virt import build, image_volumes, teardown, volumes
from app.virt.build import DiskSource
from app.virt.connection import HostConnection
from app.virt.cpu import from_record
from app.virt.types import GuestInfo

log = logging.getLogger(__name__)
# A job waits this long for the host to make the volume, define and start the guest.
JOB_TIMEOUT = 900.0


@dataclass(frozen=True)
class Created:
    """What a create gave back: the guest at once, or the job that is making it."""

    guest: Guest | None = None
    job: Job | None = None


def plan_create(
    session: Session, sync: HostCalls, request: CreateRequest, principal: Principal
) -> CreatePlan:
    """Check everything, first here and then on the host; refusals name the field at fault."""
    host = check_request(session, request, principal)
    known_cpu = from_record(host.cpu_probe)
    try:
        plan = sync.call(
            host.id, lambda conn: check_on_host(conn, request, host.id, known_cpu=known_cpu)
        )
    except HostUnreachable as exc:
        raise HostUnreachable(f"host_id: {host.name}: {exc.message}", field="host_id") from exc
    if request.cloud_init is None:
        return plan
    seed = cloud_init.seed(request.cloud_init, guest_name=request.name, instance_id=plan.guest.uuid)
    return replace(plan, seed=seed)


def _quiet(_progress: float, _message: str) -> None:
    """Progress nobody follows."""


def _take_back(undo: list[tuple[str, Callable[[], object]]], error: Exception) -> None:
    """Run the undo steps, newest first; the error says what could not be taken back."""
    failed = []
    for what, step in reversed(undo):
        try:
            step()
        except VirtdeckError as exc:
            log.error("could not take back %s after a failed create: %s", what, exc.message)
            failed.append(f"{what} ({exc.message})")
    if failed and isinstance(error, VirtdeckError):
        error.message = f"{error.message}; could not remove {', '.join(failed)}"


def _make_volume(conn: HostConnection, plan: CreatePlan, capacity: int) -> volumes.Volume:
    """The new disk's volume: empty, a qcow2 overlay on the base image, or a copy of it."""
    pool, name, image = plan.new_disk.pool, plan.volume_name, plan.image
    if image is None:
        return volumes.create_volume(conn, pool, name, capacity=capacity)
    if image.image.mode == "overlay":
        return image_volumes.create_overlay(
            conn, pool, name, capacity=capacity,
            backing_path=image.source.path, backing_format=image.source.format,
        )  # fmt: skip
    volumes.clone_volume(conn, image.source.path, name, pool=pool)
    return volumes.get_volume(conn, pool, name)


def _make_disk(conn: HostConnection, plan: CreatePlan, undo: list, report: Reporter) -> DiskSource:
    """Make the new disk's volume (undone by undo) and say how the guest attaches it."""
    pool, size, image = plan.new_disk.pool, plan.new_disk.size_gib, plan.image
    made_from = f" from {image.image.volume} ({image.image.mode})" if image else ""
    report(0.1, f"making a {size} GiB volume in pool {pool}{made_from}")
    volume = _make_volume(conn, plan, size * volumes.GIB)
    undo.append((f"volume {volume.path}", lambda: volumes.delete_volume(conn, pool, volume.name)))
    if image is None:
        return DiskSource(path=volume.path, kind=volume.kind)
    if image.image.mode == "overlay":
        return DiskSource(path=volume.path, kind=volume.kind, backing=image.source)
    report(0.4, f"growing the copy to {size} GiB")
    fmt = image.source.format
    image_volumes.grow_volume(conn, pool, volume.name, capacity=size * volumes.GIB, fmt=fmt)
    return DiskSource(path=volume.path, kind=volume.kind, format=fmt)


def _write_seed(conn: HostConnection, plan: CreatePlan, undo: list) -> DiskSource:
    """Write the cloud-init seed next to the new disk (undone by undo), attached as raw."""
    pool = plan.new_disk.pool
    volume = image_volumes.write_volume(conn, pool, plan.seed_volume_name, seed_iso(plan.seed))
    undo.append((f"volume {volume.path}", lambda: volumes.delete_volume(conn, pool, volume.name)))
    return DiskSource(path=volume.path, kind=volume.kind, format="raw")


def build_guest(conn: HostConnection, plan: CreatePlan, *, report: Reporter = _quiet) -> GuestInfo:
    """Make the volumes, define the guest and start it; a failure takes back what was made."""
    guest = plan.guest
    undo: list[tuple[str, Callable[[], object]]] = []
    try:
        if plan.new_disk is not None:
            guest = replace(guest, disk=_make_disk(conn, plan, undo, report))
        if plan.seed is not None:
            report(0.5, "writing the cloud-init seed")
            guest = replace(guest, seed=_write_seed(conn, plan, undo))
        report(0.6, "defining the guest")
        build.define_guest(conn, guest)
        undo.append((f"guest {guest.name}", lambda: teardown.delete_guest(
            conn, guest.uuid, remove_storage=False, force=True
        )))  # fmt: skip
        if plan.start:
            report(0.8, "starting the guest")
            conn.act(guest.uuid, "start")
        return conn.guest(guest.uuid)
    except Exception as exc:
        _take_back(undo, exc)
        raise


def run_create(plan: CreatePlan, env: JobEnv, report: Reporter) -> dict[str, Any]:
    """The work of a create job: build on the host, then write the guest into the inventory."""
    info = env.sync.call(
        plan.host_id, lambda conn: build_guest(conn, plan, report=report), timeout=JOB_TIMEOUT
    )
    with transaction(env.sessions) as session:
        record_guest(session, plan.host_id, info)
    return {"guest_uuid": plan.guest.uuid}


def create_guest(
    session: Session,
    *,
    request: CreateRequest,
    principal: Principal,
    sync: HostCalls,
    jobs: JobQueue,
    sessions: sessionmaker[Session],
) -> Created:
    """Create a guest now, or as a job when a new volume must be allocated; commits."""
    plan = plan_create(session, sync, request, principal)
    if plan.new_disk is None:
        info = sync.call(plan.host_id, lambda conn: build_guest(conn, plan))
        record_guest(session, plan.host_id, info)
        session.commit()
        return Created(guest=get_guest(session, plan.guest.uuid))
    job = job_service.create_job(
        session,
        kind=job_service.JobKind.GUEST_CREATE,
        host_id=plan.host_id,
        guest_uuid=plan.guest.uuid,
        created_by=principal.username,
    )
    store_work(job, plan)
    session.commit()  # the row, with its work, exists before a worker takes it
    jobs.submit(job.id)
    return Created(job=job)
