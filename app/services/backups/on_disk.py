"""The space a backup's files take on disk now (holes not counted), for the history: what a
backup costs, where its size is what the disks hold."""

from collections.abc import Iterable

from app.config import Settings
from app.models import Backup
from app.services.backups.files import MANIFEST, backup_root

# Statuses whose files are kept (a failed or cancelled backup's directory was removed).
KEPT = frozenset({"succeeded", "corrupt"})
BLOCK = 512  # st_blocks counts 512-byte blocks whatever the filesystem's block size


def size_on_disk(settings: Settings, backups: Iterable[Backup]) -> dict[int, int | None]:
    """Each backup's allocated bytes (its listed files and manifest); None when it keeps no
    files, or none of them is there any more."""
    root = backup_root(settings)
    sizes: dict[int, int | None] = {}
    for backup in backups:
        sizes[backup.id] = None
        if backup.status not in KEPT:
            continue
        directory = root / backup.path
        for name in [entry["name"] for entry in backup.files] + [MANIFEST]:
            try:  # lstat: a link planted in the directory is not followed
                used = (directory / name).lstat().st_blocks * BLOCK
            except OSError:
                continue
            sizes[backup.id] = (sizes[backup.id] or 0) + used
    return sizes
