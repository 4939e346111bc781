"""Carry out a checked plan: make the volume, define and start the guest, taking back what was
made when a step fails; as a job when a new volume must be allocated."""

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
from app.services.guest_create.on_host import (
    CreatePlan,
    check_on_host,
)
from app.services.guest_create.request import (
    CreateRequest,
    check_request,
)
from app.services.guests import get_guest
from app.services.inventory import record_guest
from app.services.job_work import JobEnv, store_work
from app.services.ports import HostCalls, JobQueue, Reporter
from app.virt import build, teardown, volumes
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
        return sync.call(
            host.id, lambda conn: check_on_host(conn, request, host.id, known_cpu=known_cpu)
        )
    except HostUnreachable as exc:
        raise HostUnreachable(f"host_id: {host.name}: {exc.message}", field="host_id") from exc


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


def build_guest(conn: HostConnection, plan: CreatePlan, *, report: Reporter = _quiet) -> GuestInfo:
    """Make the volume, define the guest and start it; a failure takes back what was made."""
    guest = plan.guest
    undo: list[tuple[str, Callable[[], object]]] = []
    try:
        if plan.new_disk is not None:
            pool, size = plan.new_disk.pool, plan.new_disk.size_gib
            report(0.1, f"making a {size} GiB volume in pool {pool}")
            volume = volumes.create_volume(
                conn, pool, plan.volume_name, capacity=size * volumes.GIB
            )
            undo.append(
                (f"volume {volume.path}", lambda: volumes.delete_volume(conn, pool, volume.name))
            )
            guest = replace(guest, disk=DiskSource(path=volume.path, kind=volume.kind))
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
