"""What the use cases need from the worker side, as small interfaces the workers implement.

Services call a host through `HostCalls`, hand long work to a `JobQueue` and report progress
through a `Reporter`; app/workers provides all three, so services never import the workers.
"""

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from app.virt.connection import HostConnection

T = TypeVar("T")


class Cancelled(Exception):
    """Raised inside a job's work when someone asked to cancel it."""


class Reporter(Protocol):
    """What a job calls to record its progress."""

    def __call__(self, progress: float, message: str) -> None:
        """Record that the job is `progress` (0 to 1) done and doing `message`."""


Work = Callable[[Reporter], dict[str, Any]]


class HostCalls(Protocol):
    """Libvirt calls on a registered host's open connection, and syncs on demand."""

    def call(
        self, host_id: int, fn: Callable[[HostConnection], T], *, timeout: float | None = None
    ) -> T:
        """Run fn on the host's connection; HostUnreachable if none or no answer in time."""

    def refresh(self, host_id: int, *, wait: float = 0.0) -> bool:
        """Sync the host now; with wait, whether the sync finished within that many seconds."""


class JobQueue(Protocol):
    """Runs a job's work in the background; its row is committed as queued before."""

    def submit(self, job_id: int, work: Work) -> object:
        """Start the work of this job."""


class HostStats(Protocol):
    """What /metrics reads of a host's worker: its syncs (periodic passes and reconciles), the
    events libvirt sent, the guests re-read by event (with their lag), by a pass and by a
    reconcile, and when (UNIX time) the last reconcile read every guest."""

    syncs: int
    sync_seconds_total: float
    last_sync_seconds: float
    events_received: int
    refreshed_by_event: int
    event_lag_seconds_total: float
    last_event_lag_seconds: float
    refreshed_by_pass: int
    refreshed_by_reconcile: int
    last_reconcile_at: float | None
