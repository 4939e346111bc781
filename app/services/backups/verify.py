"""Verifying a backup: its files and manifest against the digests recorded when it was taken."""

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import transaction
from app.errors import Conflict
from app.models import Backup
from app.models.base import utcnow
from app.services.backups.actions import VERIFY, status_actions
from app.services.backups.catalog import get_backup
from app.services.backups.files import backup_root, mismatches
from app.services.backups.webhook import report_failure


def verify_backup(sessions: sessionmaker[Session], settings: Settings, backup_id: int) -> Backup:
    """Recompute every checksum: corrupt (naming the files) on a mismatch, else verified now."""
    with sessions() as session:
        backup = get_backup(session, backup_id)
        if VERIFY not in status_actions(backup.status):
            raise Conflict(
                f"backup {backup_id} is {backup.status}: nothing to verify",
                extra={"status": backup.status},
            )
        recorded, relative, digest = list(backup.files), backup.path, backup.manifest_sha256
    bad = mismatches(backup_root(settings) / relative, recorded, manifest_sha256=digest)
    with transaction(sessions) as session:
        backup = get_backup(session, backup_id)
        backup.verified_at = utcnow()
        backup.status = "corrupt" if bad else "succeeded"
        backup.error = f"checksum mismatch: {', '.join(bad)}" if bad else None
        session.flush()
        session.expunge(backup)
    if bad:
        report_failure(sessions, settings, backup_id, event="verify.failed")
    return backup


def check_manifest(settings: Settings, *, path: str, manifest_sha256: str | None) -> None:
    """409 when the backup's manifest.json is not the one written when it was taken."""
    if manifest_sha256 is None:  # taken before the digest was recorded
        return
    bad = mismatches(backup_root(settings) / path, [], manifest_sha256=manifest_sha256)
    if bad:
        raise Conflict(
            f"the backup's {bad[0]} is not the one written when it was taken (someone changed "
            "the backup directory); nothing was restored"
        )
