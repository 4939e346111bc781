"""A guest's last failed lifecycle action, kept on its row until an action succeeds, and what
to do about the failures virtdeck knows (a QEMU that cannot set an MSR, a shutdown unanswered)."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.errors import VirtdeckError
from app.models import Guest, Host
from app.models.base import utcnow
from app.services.guests import status
from app.services.states import GuestState
from app.virt.failures import known_cause

# What the page says failed, by action: a plain sentence before libvirt's own words.
FAILED = {
    "start": "{name} did not start",
    "resume": "{name} did not resume",
    "shutdown": "{name} did not shut down",
    "reboot": "{name} did not reboot",
    "suspend": "{name} was not suspended",
    "force_off": "{name} was not forced off",
    "autostart_on": "Autostart of {name} was not enabled",
    "autostart_off": "Autostart of {name} was not disabled",
}
# A guest that answers ACPI is off well within this; one still on after it likely ignores it.
ACPI_PATIENCE = timedelta(seconds=60)


@dataclass(frozen=True)
class Failure:
    """The last action that failed: a plain sentence, what to do if known, libvirt's words."""

    action: str
    at: datetime
    sentence: str
    hint: str | None
    said: str


def record_failure(
    sessions: sessionmaker[Session], guest_id: int, *, action: str, error: VirtdeckError
) -> None:
    """Keep the failed action and libvirt's words on the guest's row (every viewer sees it)."""
    with transaction(sessions) as session:
        guest = session.get(Guest, guest_id)
        if guest is not None:
            guest.last_error = error.extra.get("libvirt_error") or error.message
            guest.last_error_action = action
            guest.last_error_at = utcnow()


def clear_failure(guest: Guest) -> None:
    """An action succeeded: the last failure no longer stands."""
    guest.last_error = guest.last_error_action = guest.last_error_at = None


def last_failure(guest: Guest) -> Failure | None:
    """The guest's last failed action, if no action has succeeded since."""
    if guest.last_error is None or guest.last_error_at is None:
        return None
    action = guest.last_error_action or ""
    sentence = FAILED.get(action, "{name}: " + action.replace("_", " ") + " failed")
    return Failure(
        action=action,
        at=guest.last_error_at,
        sentence=sentence.format(name=guest.name),
        hint=known_cause(guest.last_error),
        said=guest.last_error,
    )


def shutdown_unanswered(guest: Guest, host: Host) -> bool:
    """Whether the ACPI shutdown asked for has had no effect for longer than ACPI_PATIENCE."""
    since = guest.transition_since
    return (
        status(guest, host) is GuestState.SHUTTING_DOWN
        and since is not None
        and utcnow() - since > ACPI_PATIENCE
    )
