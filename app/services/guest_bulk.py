"""One action on many guests: each guest's action runs on its own, as the guest's own button
would run it (its state, lock and policy checks), and each gets a result; one guest refused or
failing never stops the others."""

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import transaction
from app.errors import Invalid, VirtdeckError
from app.models import Guest
from app.models.audit import audit_target
from app.services import audit
from app.services.auth import Principal
from app.services.backups import start_backup
from app.services.guest_actions import run_action
from app.services.guests import MAX_PAGE, status
from app.services.ports import HostCalls, JobQueue

# What a bulk action may be, with its button's words, in the order the buttons show.
BULK_ACTIONS = {"start": "start", "shutdown": "shut down", "force_off": "force off",
                "backup": "back up"}  # fmt: skip
OUTCOMES = ("ok", "refused", "failed")
MAX_GUESTS = MAX_PAGE  # a page of the Guests page at most
UUID_LENGTH = 36
# Hosts acted on at once; a host's guests go one after another (a start's overcommit check
# sees the guests started before it).
MAX_HOSTS_AT_ONCE = 8
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BulkResult:
    """How one guest's action ended: ok, refused (its state, lock, policy or permission said
    no) or failed (its host, or libvirt), in a plain sentence."""

    uuid: str
    name: str
    outcome: str
    message: str


@dataclass(frozen=True)
class BulkRun:
    """What the bulk action runs with, and whose request it is (for the audit rows)."""

    sessions: sessionmaker[Session]
    sync: HostCalls
    jobs: JobQueue
    settings: Settings
    principal: Principal
    request_id: str
    path: str


def _wanted(action: str, uuids: list[str]) -> list[str]:
    """The UUIDs, each once, in lower case; Invalid naming the field otherwise."""
    if action not in BULK_ACTIONS:
        raise Invalid(f"action: must be one of {', '.join(BULK_ACTIONS)}", field="action")
    wanted = list(dict.fromkeys(u.strip().lower() for u in uuids if u.strip()))
    if not wanted:
        raise Invalid("uuids: choose at least one guest", field="uuids")
    if len(wanted) > MAX_GUESTS:
        raise Invalid(f"uuids: at most {MAX_GUESTS} guests at once", field="uuids")
    if any(len(uuid) > UUID_LENGTH for uuid in wanted):
        raise Invalid(f"uuids: a guest's UUID has {UUID_LENGTH} characters", field="uuids")
    return wanted


def _act(run: BulkRun, action: str, uuid: str) -> str:
    """Run the action on one guest; what became of it, in words."""
    if action == "backup":
        started = start_backup(run.sessions, run.sync, run.jobs, run.settings, uuid=uuid,
                               principal=run.principal)  # fmt: skip
        return f"backup started (job {started.job.id})"
    guest = run_action(run.sessions, run.sync, uuid=uuid, action=action, principal=run.principal)
    return f"now {status(guest, guest.host).label}"


def _one(run: BulkRun, action: str, uuid: str, name: str) -> tuple[BulkResult, int]:
    """One guest's result, and the HTTP status its own request would have had."""
    try:
        return BulkResult(uuid, name, "ok", _act(run, action, uuid)), 200
    except VirtdeckError as exc:
        outcome = "refused" if exc.status_code < 500 else "failed"
        return BulkResult(uuid, name, outcome, exc.message), exc.status_code
    except Exception:  # one guest's bug must not cost the others their results
        log.exception("bulk %s of guest %s failed", action, uuid)
        return BulkResult(uuid, name, "failed", "internal error (see the server's log)"), 500


def _names(sessions: sessionmaker[Session], uuids: list[str]) -> dict[str, tuple[str, int]]:
    """The present guests among these UUIDs: name and host id by UUID."""
    with sessions() as session:
        rows = session.execute(
            select(Guest.uuid, Guest.name, Guest.host_id).where(
                Guest.uuid.in_(uuids), Guest.gone_at.is_(None)
            )
        )
        return {row.uuid: (row.name, row.host_id) for row in rows}


def _audit(run: BulkRun, action: str, done: list[tuple[BulkResult, int]]) -> None:
    """One audit row a guest, under the bulk request's id: the guest's activity shows it."""
    name = "backup.create" if action == "backup" else f"guest.{action}"
    with transaction(run.sessions) as session:
        for result, status_code in done:
            audit.record(
                session, request_id=run.request_id, principal=run.principal, method="POST",
                path=run.path, action=name, target=audit_target("guest", result.uuid, result.name),
                status_code=status_code, denied=False,
                error=None if result.outcome == "ok" else result.message,
            )  # fmt: skip


def run_bulk(run: BulkRun, *, action: str, uuids: list[str]) -> list[BulkResult]:
    """Run the action on each guest (hosts side by side, a host's guests in turn); a result
    each, in the order asked."""
    wanted = _wanted(action, uuids)
    known = _names(run.sessions, wanted)
    by_host: dict[int, list[str]] = {}
    for uuid in wanted:
        if uuid in known:
            by_host.setdefault(known[uuid][1], []).append(uuid)

    def host_turn(host_uuids: list[str]) -> list[tuple[BulkResult, int]]:
        return [_one(run, action, uuid, known[uuid][0]) for uuid in host_uuids]

    done: dict[str, tuple[BulkResult, int]] = {}
    if by_host:
        with ThreadPoolExecutor(max_workers=min(MAX_HOSTS_AT_ONCE, len(by_host))) as pool:
            for turn in pool.map(host_turn, by_host.values()):
                done.update((result.uuid, (result, code)) for result, code in turn)
    for uuid in wanted:
        if uuid not in done:
            done[uuid] = (BulkResult(uuid, uuid, "refused", f"guest {uuid} not found"), 404)
    ordered = [done[uuid] for uuid in wanted]
    _audit(run, action, ordered)
    return [result for result, _code in ordered]


def summary(results: list[BulkResult], action: str) -> str:
    """One line for a toast: how the action went, counted by outcome ("Start: 18 ok, 2 refused")."""
    counts = {o: sum(r.outcome == o for r in results) for o in OUTCOMES}
    said = ", ".join(f"{n} {o}" for o, n in counts.items() if n)
    return f"{BULK_ACTIONS[action].capitalize()}: {said}"
