"""A running guest's screen as PNG, for everyone who can see the guest: taken through libvirt
(a stream, any URI) and kept for a moment. One screenshot of a guest is taken at a time; the
pages that ask meanwhile get that one, and a failure is kept as long, so that many open pages
cost the host at most one screenshot per guest every CACHE_SECONDS, and a hung host holds one
call, for at most SCREENSHOT_TIMEOUT."""

import threading
import time
from collections import OrderedDict

from app.errors import VirtdeckError
from app.models import Guest
from app.services.consoles import check_live
from app.services.ports import HostCalls
from app.virt.consoles import screenshot

CACHE_SECONDS = 2.0
CACHE_GUESTS = 64
SCREENSHOT_TIMEOUT = 5.0
# The largest screen converted (QEMU's is at most 2560 x 1600 by default; 16 Mpx is generous).
MAX_PIXELS = 4096 * 4096

_lock = threading.Lock()
# By guest UUID: when taken, and the PNG or the error.
_cache: OrderedDict[str, tuple[float, bytes | VirtdeckError]] = OrderedDict()
_taking: dict[str, threading.Lock] = {}


def guest_screenshot(calls: HostCalls, guest: Guest) -> bytes:
    """The guest's screen as PNG; Conflict when it is not running, ConsoleUnavailable when it
    has no screen, HostUnreachable when its host does not answer in time."""
    check_live(guest)
    uuid, host_id = guest.uuid, guest.host_id
    with _lock:
        taking = _taking.setdefault(uuid, threading.Lock())
    with taking:  # one at a time per guest; who waited gets what the first one took
        outcome = _cached(uuid)
        if outcome is None:
            try:
                outcome = calls.call(
                    host_id,
                    lambda conn: screenshot(conn, uuid, max_pixels=MAX_PIXELS),
                    timeout=SCREENSHOT_TIMEOUT,
                )
            except VirtdeckError as exc:
                outcome = exc
            _keep(uuid, outcome)
    if isinstance(outcome, VirtdeckError):  # a fresh one: each answer has its own traceback
        raise type(outcome)(outcome.message, field=outcome.field, extra=outcome.extra)
    return outcome


def _cached(uuid: str) -> bytes | VirtdeckError | None:
    with _lock:
        found = _cache.get(uuid)
    if found is not None and time.monotonic() - found[0] < CACHE_SECONDS:
        return found[1]
    return None


def _keep(uuid: str, outcome: bytes | VirtdeckError) -> None:
    with _lock:
        _cache[uuid] = (time.monotonic(), outcome)
        _cache.move_to_end(uuid)
        while len(_cache) > CACHE_GUESTS:
            gone, _ = _cache.popitem(last=False)
            _taking.pop(gone, None)
