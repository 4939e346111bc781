"""How a backup or a restore runs as a job: the same shape for both, its inputs a frozen dataclass
of plain values and its work one `run(inputs, env, report)` function, submitted the same way."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.models import Backup, Job
from app.services.guest_actions import GuestLock
from app.services.hosts import open_connection
from app.services.ports import HostCalls, JobQueue, Reporter
from app.virt.connection import HostConnection

Inputs = TypeVar("Inputs")


@dataclass(frozen=True)
class Started:
    """A backup or restore that is now running as a job."""

    backup: Backup
    job: Job


@dataclass(frozen=True)
class JobEnv:
    """What a backup or restore job runs with besides its inputs: the database, the settings,
    the hosts, and the guest's lock (None when the inventory no longer has the guest)."""

    sessions: sessionmaker[Session]
    settings: Settings
    sync: HostCalls
    lock: GuestLock | None

    def renew(self) -> None:
        """Tell the lock the job still works (so that it never looks stale)."""
        if self.lock is not None:
            self.lock.renew()

    def release(self) -> None:
        """Free the guest for other actions."""
        if self.lock is not None:
            self.lock.release()

    @contextmanager
    def released_on_error(self) -> Iterator[None]:
        """Until the job is queued, a failure frees the guest (after that, the job does)."""
        try:
            yield
        except BaseException:
            self.release()
            raise


def submit(
    jobs: JobQueue,
    job_id: int,
    run: Callable[[Inputs, JobEnv, Reporter], dict[str, Any]],
    inputs: Inputs,
    env: JobEnv,
) -> None:
    """Queue run(inputs, env, report) as the job's work."""
    jobs.submit(job_id, partial(run, inputs, env))


def connect(uri: str, settings: Settings) -> HostConnection:
    """A connection of the job's own, so that a long stream never delays the host's sync."""
    return open_connection(uri, settings, on_close=lambda _reason: None)
