"""KSM (kernel same-page merging) readings: whether it runs, from libvirt's flag or its counters."""

from datetime import datetime, timedelta
from typing import Any

from app.services.overcommit.model import Ksm
from app.virt.overcommit import KsmReading

# Without a "run" flag from libvirt, KSM counts as running while its counters move.
KSM_QUIET = timedelta(minutes=10)


def ksm_state(reading: KsmReading, previous: dict[str, Any] | None, now: datetime) -> dict:
    """The KSM reading with "running": libvirt's run flag, else whether its counters move."""
    counters = list(reading.counters)
    seen_since = (previous or {}).get("seen_since") or now.isoformat()
    changed_at = (previous or {}).get("changed_at")
    if previous is not None and previous.get("counters") != counters:
        changed_at = now.isoformat()
    if reading.run is not None:
        running: bool | None = reading.run == 1
    elif changed_at and now - datetime.fromisoformat(changed_at) < KSM_QUIET:
        running = True
    elif not any(counters) or now - datetime.fromisoformat(seen_since) >= KSM_QUIET:
        running = False  # it never scanned anything, or nothing moved for a while
    else:
        running = None
    return {
        "running": running,
        "pages_shared": reading.pages_shared,
        "pages_sharing": reading.pages_sharing,
        "page_kib": reading.page_kib,
        "counters": counters,
        "seen_since": seen_since,
        "changed_at": changed_at,
    }


def stored_ksm(stats: dict[str, Any]) -> Ksm | None:
    """The KSM part of a host's stored readings, with the memory it saves."""
    ksm = stats.get("ksm")
    if not ksm:
        return None
    sharing, page_kib = ksm.get("pages_sharing"), ksm.get("page_kib")
    saved = sharing * page_kib if sharing is not None and page_kib else None
    return Ksm(ksm.get("running"), ksm.get("pages_shared"), sharing, saved)
