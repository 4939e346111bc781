"""How a backup or a restore runs as a job: the same shape for both, its inputs a frozen dataclass
of plain values and its work one `run(inputs, env, report)` function, queued the same way
(app.services.job_work)."""

from dataclasses import dataclass

from app.config import Settings
from app.models import Backup, Job
from app.services.hosts import open_connection
from app.virt.connection import HostConnection


@dataclass(frozen=True)
class Started:
    """A backup or restore that is now running as a job."""

    backup: Backup
    job: Job


def connect(uri: str, settings: Settings) -> HostConnection:
    """A connection of the job's own, so that a long stream never delays the host's sync."""
    return open_connection(uri, settings, on_close=lambda _reason: None)
