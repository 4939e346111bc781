"""How a job's work crosses from the process that asked for it to a worker process: its inputs,
a frozen dataclass of plain values, are stored as JSON in the job's row together with the guest
lock the job holds; a worker rebuilds `run(inputs, env, report)` from them (app.services.job_runs)
and runs it with an environment of its own."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.models import Job
from app.services.guest_actions import GuestLock
from app.services.ports import HostCalls, Reporter

# A job renews its guest's lock this often (it turns stale after ten minutes).
RENEW_SECONDS = 60.0


@dataclass(frozen=True)
class JobEnv:
    """What a job runs with besides its inputs: the database, the settings, the hosts, and the
    guest's lock (None when the job locks no guest)."""

    sessions: sessionmaker[Session]
    settings: Settings
    sync: HostCalls
    lock: GuestLock | None = None

    def renew(self) -> None:
        """Tell the lock the job still works (so that it never looks stale)."""
        if self.lock is not None:
            self.lock.renew()

    def renewing(self, report: Reporter) -> Reporter:
        """report, that also renews the lock once a minute at most while the work goes on."""
        renewed = [time.monotonic()]

        def reporting(progress: float, message: str) -> None:
            report(progress, message)
            if time.monotonic() - renewed[0] > RENEW_SECONDS:
                self.renew()
                renewed[0] = time.monotonic()

        return reporting

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


def store_work(job: Job, inputs: Any, lock: GuestLock | None = None) -> None:
    """Put the job's work in its row, in the transaction that creates the row: a worker takes
    a queued job only together with its work (the caller then tells the queue)."""
    job.inputs = {
        "inputs": TypeAdapter(type(inputs)).dump_python(inputs, mode="json"),
        "lock": lock.as_record() if lock is not None else None,
    }


def inputs_of(record: dict[str, Any], kind: type) -> Any:
    """The inputs a job's row holds, as the dataclass they were stored from."""
    return TypeAdapter(kind).validate_python(record["inputs"])


def env_of(
    record: dict[str, Any], *, sessions: sessionmaker[Session], settings: Settings, sync: HostCalls
) -> JobEnv:
    """The environment a worker runs a stored job with: the lock its requester took."""
    lock = record.get("lock")
    return JobEnv(
        sessions, settings, sync, GuestLock.held(sessions, lock) if lock is not None else None
    )
