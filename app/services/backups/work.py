"""How a backup or a restore runs as a job: the same shape for both, its inputs a frozen dataclass
of plain values and its work one `run(inputs, env, report)` function, queued the same way
(app.services.job_work); and the job's own libvirt connection, which the next job on the same host
can use again (app.services.idle_pool)."""

from dataclasses import dataclass

from app.config import Settings
from app.models import Backup, Job
from app.services.hosts import open_connection
from app.services.idle_pool import IdlePool
from app.virt.connection import HostConnection

_connections: IdlePool[HostConnection] = IdlePool(
    close=HostConnection.close, usable=HostConnection.answers
)


@dataclass(frozen=True)
class Started:
    """A backup or restore that is now running as a job."""

    backup: Backup
    job: Job


def connect(uri: str, settings: Settings) -> HostConnection:
    """A connection of the job's own, so that a long stream never delays the host's sync: one an
    earlier job gave back (if it still answers), else a new one. Give it back with release()."""
    return _connections.take(
        uri, lambda: open_connection(uri, settings, on_close=lambda _reason: None)
    )


def release(uri: str, conn: HostConnection, *, keep: bool) -> None:
    """The job is done with conn: kept for the next job on the host at uri (keep: the job went
    well), else closed."""
    _connections.give(uri, conn, keep=keep)
