"""Retention: a guest keeps its newest `backup_keep` succeeded backups; older ones go."""

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import transaction
from app.models import Backup
from app.services.backups.files import backup_root, remove_tree


def apply_retention(sessions: sessionmaker[Session], settings: Settings, guest_uuid: str) -> int:
    """Delete the guest's succeeded or corrupt backups past the newest backup_keep succeeded
    ones, files first; returns how many went."""
    with transaction(sessions) as session:
        kept = session.scalars(
            select(Backup.started_at)
            .where(Backup.guest_uuid == guest_uuid, Backup.status == "succeeded")
            .order_by(Backup.started_at.desc())
            .offset(settings.backup_keep - 1)
            .limit(1)
        ).first()
        if kept is None:
            return 0
        old = session.scalars(
            select(Backup).where(
                Backup.guest_uuid == guest_uuid,
                Backup.status.in_(("succeeded", "corrupt")),
                Backup.started_at < kept,
            )
        ).all()
        root = backup_root(settings)
        for backup in old:
            remove_tree(root, backup.path)
            session.delete(backup)
        return len(old)
