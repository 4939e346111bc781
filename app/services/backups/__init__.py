"""Backups: take one as a job, keep the history, verify, restore in place or as a new guest,
and apply retention. The names routers and workers use are here; each module holds one concern
(docs/architecture.md)."""

from app.services.backups.actions import backup_actions, status_actions
from app.services.backups.backup_job import start_backup
from app.services.backups.catalog import delete_backup, get_backup, list_backups, settle_orphans
from app.services.backups.files import backup_root
from app.services.backups.on_disk import size_on_disk
from app.services.backups.restore import start_restore
from app.services.backups.restore_plan import RESTORE_MODES, RestoreRequest
from app.services.backups.retention import apply_retention
from app.services.backups.scheduled_verify import queue_due as queue_due_verifications
from app.services.backups.scheduler import run_schedules
from app.services.backups.verify import verify_backup
from app.services.backups.work import Started

__all__ = [
    "RESTORE_MODES",
    "RestoreRequest",
    "Started",
    "apply_retention",
    "backup_actions",
    "backup_root",
    "delete_backup",
    "get_backup",
    "list_backups",
    "queue_due_verifications",
    "run_schedules",
    "settle_orphans",
    "size_on_disk",
    "start_backup",
    "start_restore",
    "status_actions",
    "verify_backup",
]
