"""Lifecycle actions on guests: which states allow which action, one action at a time."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.errors import Conflict, VirtdeckError
from app.models import Guest, Host
from app.models.base import utcnow
from app.services.auth import Principal
from app.services.guest_failures import clear_failure, record_failure
from app.services.guests import get_guest, status
from app.services.hosts import require_connected
from app.services.inventory import record_guest
from app.services.overcommit import check_force, check_start_policy
from app.services.ports import HostCalls
from app.services.states import GuestState

ACTION_LABELS = {  # in the order the buttons show
    "start": "start",
    "resume": "resume",
    "shutdown": "shut down",
    "reboot": "reboot",
    "suspend": "suspend",
    "force_off": "force off",
    "autostart_on": "enable autostart",
    "autostart_off": "disable autostart",
}
ACTIONS = tuple(ACTION_LABELS)
_ON = frozenset({"shutdown", "force_off", "reboot", "suspend"})
_RESUMABLE = frozenset({"resume", "force_off"})
_FORCE_OFF = frozenset({"force_off"})
# The one table of what each state allows (autostart is checked apart, below).
ALLOWED_BY_STATE: dict[GuestState, frozenset[str]] = {
    GuestState.SHUTOFF: frozenset({"start"}),
    GuestState.CRASHED: _FORCE_OFF,
    GuestState.RUNNING: _ON,
    GuestState.BLOCKED: _ON,
    GuestState.PAUSED: _RESUMABLE,
    GuestState.PMSUSPENDED: _RESUMABLE,
    GuestState.SHUTDOWN: _FORCE_OFF,
    GuestState.SHUTTING_DOWN: _FORCE_OFF,
    GuestState.NOSTATE: _FORCE_OFF,
}
# A lock older than this belongs to a process that died while holding it.
LOCK_STALE = timedelta(minutes=10)


def _allows(action: str, state: GuestState, *, persistent: bool, autostart: bool) -> bool:
    if not state.actionable:
        return False
    if action.startswith("autostart_"):
        return persistent and (action == "autostart_on") != autostart
    return action in ALLOWED_BY_STATE.get(state, frozenset())


@cache
def _allowed(state: GuestState, persistent: bool, autostart: bool) -> tuple[str, ...]:
    """The actions, in ACTIONS' order, for each of the few combinations (lists show hundreds)."""
    return tuple(
        action
        for action in ACTIONS
        if _allows(action, state, persistent=persistent, autostart=autostart)
    )


def allowed_actions(guest: Guest, host: Host) -> list[str]:
    """The actions the guest's state allows, in a stable order; none while it is busy."""
    if guest.busy_action is not None:
        return []
    return list(_allowed(status(guest, host), bool(guest.persistent), bool(guest.autostart)))


def _check_allowed(guest: Guest, action: str, state: GuestState) -> None:
    if not _allows(action, state, persistent=guest.persistent, autostart=guest.autostart):
        raise Conflict(
            f"cannot {ACTION_LABELS[action]} {guest.name}: it is {state.label}",
            field="state",
            extra={"state": state},
        )


class GuestLock:
    """A held guest lock; long jobs renew it so that it never looks stale while they work."""

    def __init__(self, sessions: sessionmaker[Session], guest: Guest, action: str) -> None:
        """Take the guest's lock for this action: 409 naming the action in progress."""
        self._sessions, self.guest_id, self.action = sessions, guest.id, action
        self._since = utcnow()
        with transaction(sessions) as session:
            taken = session.execute(
                update(Guest)
                .where(
                    Guest.id == guest.id,
                    or_(Guest.busy_action.is_(None), Guest.busy_since < self._since - LOCK_STALE),
                )
                .values(busy_action=action, busy_since=self._since)
                .execution_options(synchronize_session=False)
            ).rowcount
            holder = (
                None
                if taken
                else session.scalar(select(Guest.busy_action).where(Guest.id == guest.id))
            )
        if not taken:
            raise Conflict(
                f"{guest.name} is busy: {holder or 'another action'} in progress",
                extra={"busy_action": holder},
            )

    @classmethod
    def held(cls, sessions: sessionmaker[Session], record: dict[str, Any]) -> "GuestLock":
        """The lock another process took (as_record's words), for the job that now holds it."""
        lock = cls.__new__(cls)
        lock._sessions, lock.guest_id, lock.action = sessions, record["guest_id"], record["action"]
        lock._since = datetime.fromisoformat(record["since"])
        return lock

    def as_record(self) -> dict[str, Any]:
        """The lock in plain values, stored with a job's inputs."""
        return {"guest_id": self.guest_id, "action": self.action, "since": self._since.isoformat()}

    def _move(self, to: datetime | None) -> None:
        with transaction(self._sessions) as session:
            session.execute(
                update(Guest)
                .where(
                    Guest.id == self.guest_id,
                    Guest.busy_action == self.action,
                    Guest.busy_since == self._since,
                )
                .values(busy_action=self.action if to else None, busy_since=to)
                .execution_options(synchronize_session=False)
            )
        if to is not None:
            self._since = to

    def renew(self) -> None:
        """Still working: push the lock's staleness further away."""
        self._move(utcnow())

    def release(self) -> None:
        """Let the next action have the guest."""
        self._move(None)


@contextmanager
def guest_lock(sessions: sessionmaker[Session], guest: Guest, action: str) -> Iterator[None]:
    """Hold the guest's lock for the block (409 naming the action in progress)."""
    lock = GuestLock(sessions, guest, action)
    try:
        yield
    finally:
        lock.release()


def run_action(
    sessions: sessionmaker[Session],
    sync: HostCalls,
    *,
    uuid: str,
    action: str,
    principal: Principal,
    force: bool = False,
) -> Guest:
    """Check the state (and a start's overcommit unless an admin forces it), lock, act, record
    the guest; libvirt's refusal stays on the guest's row until an action succeeds."""
    if force:
        check_force(principal, "a start over the overcommit policy")
    with sessions() as session:
        guest = get_guest(session, uuid)
        host = guest.host
        if guest.gone_at is None:
            require_connected(host)
        _check_allowed(guest, action, status(guest, host))
        if action == "start" and not force:
            check_start_policy(
                session, guest, vcpus=guest.vcpus, memory_kib=guest.memory_max_kib, action="start"
            )
    with guest_lock(sessions, guest, action):
        now = sync.call(host.id, lambda conn: conn.guest(guest.uuid))
        # libvirt's word, not the last sync's
        _check_allowed(guest, action, GuestState.of(now.state))
        try:
            sync.call(host.id, lambda conn: conn.act(guest.uuid, action))
        except VirtdeckError as exc:
            record_failure(sessions, guest.id, action=action, error=exc)
            raise
        after = sync.call(host.id, lambda conn: conn.guest(guest.uuid))
        shutting = action == "shutdown" and after.state == GuestState.RUNNING
        pending = GuestState.SHUTTING_DOWN if shutting else None
        with transaction(sessions) as session:
            clear_failure(record_guest(session, host.id, after, transition=pending))
    with sessions() as session:
        return get_guest(session, uuid)
