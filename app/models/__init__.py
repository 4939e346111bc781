"""All models, imported so that Base.metadata knows every table."""

from app.models.audit import AuditEntry
from app.models.backup import BACKUP_STATES, Backup
from app.models.backup_schedule import BackupSchedule, ScheduleRun
from app.models.base import Base
from app.models.console import ConsoleSession, ConsoleTicket
from app.models.guest import Guest
from app.models.host import Host
from app.models.job import JOB_STATES, Job
from app.models.overcommit import OvercommitPolicy, OvercommitSample
from app.models.profile import Profile
from app.models.snapshot import Snapshot
from app.models.usage import HostUsageSample, UsageSample
from app.models.user import ROLES, ApiToken, LoginFailure, LoginSession, SetupClaim, User
from app.models.worker import LiveOutbox, WorkerRecord

__all__ = [
    "BACKUP_STATES",
    "JOB_STATES",
    "ROLES",
    "ApiToken",
    "AuditEntry",
    "Backup",
    "BackupSchedule",
    "Base",
    "ConsoleSession",
    "ConsoleTicket",
    "Guest",
    "Host",
    "HostUsageSample",
    "Job",
    "LiveOutbox",
    "LoginFailure",
    "LoginSession",
    "OvercommitPolicy",
    "OvercommitSample",
    "Profile",
    "ScheduleRun",
    "SetupClaim",
    "Snapshot",
    "UsageSample",
    "User",
    "WorkerRecord",
]
