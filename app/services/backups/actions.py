"""What can be done with a backup: which statuses allow verify, restore (as a new guest or in
place) and delete, which its chain still allows (no restore while a backup it builds on is gone
or corrupt, no delete while others build on it), and who may. The services refuse the rest;
the pages show only these."""

from app.models import Backup
from app.models.backup import BACKUP_STATES
from app.services.auth import Permission, Principal
from app.services.backups.chains import Chain

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


def chain_actions(status: str, chain: Chain) -> tuple[str, ...]:
    """The actions a backup in this status and place in its chain allows, whoever asks."""
    ruled_out = set()
    if not chain.restorable:
        ruled_out |= {RESTORE, RESTORE_IN_PLACE}
    if chain.dependents:
        ruled_out.add(DELETE)
    return tuple(action for action in status_actions(status) if action not in ruled_out)


def may(principal: Principal, action: str) -> bool:
    """Whether principal's role is enough for the action."""
    return principal.allows(_RULES[action][1])


def backup_actions(backup: Backup, principal: Principal | None, chain: Chain) -> tuple[str, ...]:
    """The actions principal may take on the backup now (none for no one)."""
    if principal is None:
        return ()
    return tuple(action for action in chain_actions(backup.status, chain) if may(principal, action))
