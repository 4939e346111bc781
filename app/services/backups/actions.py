"""What can be done with a backup: which statuses allow verify, restore (as a new guest or in
place) and delete, and who may. The services refuse the rest; the pages show only these."""

from app.models import Backup
from app.models.backup import BACKUP_STATES
from app.services.auth import Permission, Principal

VERIFY = "verify"
RESTORE = "restore"
RESTORE_IN_PLACE = "restore_in_place"
DELETE = "delete"
# The statuses that allow each action, and the least permission it takes.
_RULES: dict[str, tuple[frozenset[str], Permission]] = {
    VERIFY: (frozenset({"succeeded", "corrupt"}), Permission.OPERATE),
    RESTORE: (frozenset({"succeeded"}), Permission.OPERATE),
    RESTORE_IN_PLACE: (frozenset({"succeeded"}), Permission.ADMIN),
    # A running backup's files are still being written: it is cancelled, not deleted.
    DELETE: (frozenset(BACKUP_STATES) - {"running"}, Permission.ADMIN),
}


def status_actions(status: str) -> tuple[str, ...]:
    """The actions a backup in this status allows, whoever asks."""
    return tuple(action for action, (statuses, _) in _RULES.items() if status in statuses)


def may(principal: Principal, action: str) -> bool:
    """Whether principal's role is enough for the action."""
    return principal.allows(_RULES[action][1])


def backup_actions(backup: Backup, principal: Principal | None) -> tuple[str, ...]:
    """The actions principal may take on the backup now (none for no one)."""
    if principal is None:
        return ()
    return tuple(action for action in status_actions(backup.status) if may(principal, action))
