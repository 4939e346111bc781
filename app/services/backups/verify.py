"""Verifying a backup: its files and manifest against the digests recorded when it was taken,
and whether it can still be restored (an incremental one needs every backup it builds on: one
that is gone or corrupt, or whose files have gone from the backup directory, rules it out)."""

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import transaction
from app.errors import Conflict
from app.models import Backup
from app.models.base import utcnow
from app.services.backups.actions import VERIFY, status_actions
from app.services.backups.catalog import get_backup
from app.services.backups.chains import Chain, chains
from app.services.backups.files import backup_root, mismatches
from app.services.backups.webhook import report_failure


@dataclass(frozen=True)
class Verified:
    """A backup as verifying left it, and its place in its chain now."""

    backup: Backup
    chain: Chain


def verify_backup(sessions: sessionmaker[Session], settings: Settings, backup_id: int) -> Verified:
    """Recompute every checksum: corrupt (naming the files) on a mismatch, else verified now.
    An ancestor whose files have gone is marked corrupt too (what verifying it would find)."""
    with sessions() as session:
        backup = get_backup(session, backup_id)
        if VERIFY not in status_actions(backup.status):
            raise Conflict(
                f"backup {backup_id} is {backup.status}: nothing to verify",
                extra={"status": backup.status},
            )
        recorded, relative, digest = list(backup.files), backup.path, backup.manifest_sha256
    root = backup_root(settings)
    bad = mismatches(root / relative, recorded, manifest_sha256=digest)
    with transaction(sessions) as session:
        backup = get_backup(session, backup_id)
        backup.verified_at = utcnow()
        backup.status = "corrupt" if bad else "succeeded"
        backup.error = f"checksum mismatch: {', '.join(bad)}" if bad else None
        vanished = _mark_vanished_ancestors(session, root, backup)
        session.flush()
        chain = chains(session, [backup])[backup_id]
        session.expunge(backup)
    for failed_id in ([backup_id] if bad else []) + vanished:
        report_failure(sessions, settings, failed_id, event="verify.failed")
    return Verified(backup, chain)


def _mark_vanished_ancestors(session: Session, root: Path, backup: Backup) -> list[int]:
    """Mark corrupt each backup this one builds on that is missing a file (a cheap look, no
    checksums: those are each backup's own verification); their ids."""
    marked, parent_id = [], backup.parent_id
    while parent_id is not None and (parent := session.get(Backup, parent_id)) is not None:
        gone = [e["name"] for e in parent.files if not (root / parent.path / e["name"]).is_file()]
        if gone and parent.status == "succeeded":
            parent.status, parent.verified_at = "corrupt", utcnow()
            parent.error = f"missing: {', '.join(gone)} (found by verifying backup {backup.id})"
            marked.append(parent.id)
        parent_id = parent.parent_id
    return marked


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
