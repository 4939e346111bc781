"""Which function runs each kind of job, and the work of a stored job rebuilt from its row."""

from functools import partial
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.errors import VirtdeckError
from app.models import Job
from app.services.backups.backup_job import BackupJob, run_backup
from app.services.backups.restore import run_restore
from app.services.backups.restore_plan import RestoreJob
from app.services.backups.scheduled_verify import VerifyJob, run_verify
from app.services.guest_clone import CloneJob, run_clone
from app.services.guest_create.build import run_create
from app.services.guest_create.on_host import CreatePlan
from app.services.job_work import env_of, inputs_of
from app.services.jobs import JobKind
from app.services.ports import HostCalls, Work

RUNS: dict[JobKind, tuple[type, Any]] = {
    JobKind.GUEST_CREATE: (CreatePlan, run_create),
    JobKind.GUEST_CLONE: (CloneJob, run_clone),
    JobKind.BACKUP: (BackupJob, run_backup),
    JobKind.RESTORE: (RestoreJob, run_restore),
    JobKind.BACKUP_VERIFY: (VerifyJob, run_verify),
}


def work_of(
    job: Job, *, sessions: sessionmaker[Session], settings: Settings, sync: HostCalls
) -> Work:
    """The job's work, ready for a Reporter; VirtdeckError if its row cannot say it."""
    try:
        kind, run = RUNS[JobKind(job.kind)]
        inputs = inputs_of(job.inputs, kind)
    except (KeyError, ValueError, TypeError) as exc:  # a row this version cannot read
        raise VirtdeckError(f"this {job.kind} job's inputs cannot be read") from exc
    env = env_of(job.inputs, sessions=sessions, settings=settings, sync=sync)
    return partial(run, inputs, env)
