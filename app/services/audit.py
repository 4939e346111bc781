"""Write and read the audit log."""

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from app.errors import Invalid
from app.models import AuditEntry, Guest, Host
from app.models.audit import audit_target, parse_targets
from app.services.auth import Principal
from app.services.paging import check_page

RESULTS = ("ok", "denied", "failed")
MAX_PAGE = 500
WINDOW_SECONDS = 60.0
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditPage:
    """One page of audit entries, newest first, and how many match in all."""

    items: list[AuditEntry]
    total: int
    limit: int
    offset: int


class RateBudget:
    """At most `per_minute` rows of one kind a minute (in fixed windows); what it turns away is
    counted in the server's log instead."""

    def __init__(self, per_minute: int, *, what: str) -> None:
        self.per_minute = per_minute
        self.what = what
        self._lock = threading.Lock()
        self._window_start = -WINDOW_SECONDS
        self._used = 0
        self._refused = 0

    def take(self) -> bool:
        """Whether one more row fits this minute."""
        now = time.monotonic()
        with self._lock:
            if now - self._window_start >= WINDOW_SECONDS:
                if self._refused:
                    log.warning(
                        "%d %s were not recorded in the audit log", self._refused, self.what
                    )
                self._window_start, self._used, self._refused = now, 0, 0
            if self._used < self.per_minute:
                self._used += 1
                return True
            if not self._refused:
                log.warning(
                    "more than %d %s a minute: the rest of this minute's are not recorded",
                    self.per_minute,
                    self.what,
                )
            self._refused += 1
            return False


def result_of(status_code: int, *, denied: bool) -> str:
    """ok, denied (authentication, permission, CSRF, throttling) or failed."""
    if denied:
        return "denied"
    return "ok" if status_code < 400 else "failed"


def record(
    session: Session,
    *,
    request_id: str,
    principal: Principal,
    method: str,
    path: str,
    action: str,
    target: str | None,
    status_code: int,
    denied: bool,
    error: str | None,
    duration_s: float | None = None,
) -> AuditEntry:
    """Append one entry."""
    entry = AuditEntry(
        request_id=request_id,
        user_id=principal.user_id,
        username=principal.username,
        auth=principal.auth,
        token_id=principal.token_id,
        token_name=principal.token_name,
        method=method,
        path=path[:512],
        action=action[:64],
        target=target[:255] if target else None,
        result=result_of(status_code, denied=denied),
        status_code=status_code,
        error=error,
        duration_s=duration_s,
    )
    session.add(entry)
    return entry


def named(session: Session, kind: str, ident: object) -> str:
    """An audit target for a guest or host named by a path alone, with its name as it is now
    (the row then says which guest it was after the guest is renamed or gone); other kinds,
    and one not found, as they are."""
    name = None
    if kind == "guest":
        name = session.scalar(
            select(Guest.name)
            .where(Guest.uuid == str(ident).lower())
            .order_by(Guest.gone_at.is_not(None), Guest.changed_at.desc())
            .limit(1)
        )
    elif kind == "host" and str(ident).isdigit():
        name = session.scalar(select(Host.name).where(Host.id == int(ident)))
    return audit_target(kind, ident, name)


def within(session: Session, host_id: int, kind: str, name: str) -> str:
    """An audit target for a pool or network of a host: the host with its name, then the thing
    (`host:3 (kvm-1), pool:images`), so each links or filters as what it is."""
    return f"{named(session, 'host', host_id)}, {audit_target(kind, name)}"


def _about(target: str) -> ColumnElement[bool]:
    """Rows whose targets start with this one, whatever name they recorded with it."""
    return or_(
        AuditEntry.target == target, AuditEntry.target.startswith(target + " ", autoescape=True)
    )


def present_targets(session: Session, entries: list[AuditEntry]) -> set[tuple[str, str]]:
    """Which guests and hosts the entries name still exist, as (kind, id): a page links to
    those (two queries for a page of entries)."""
    named = [t for entry in entries for t in parse_targets(entry.target)]
    uuids = {t.id.lower() for t in named if t.kind == "guest"}
    host_ids = {int(t.id) for t in named if t.kind == "host" and t.id.isdigit()}
    found: set[tuple[str, str]] = set()
    if uuids:
        present = select(Guest.uuid).where(Guest.uuid.in_(uuids), Guest.gone_at.is_(None))
        found |= {("guest", uuid) for uuid in session.scalars(present)}
    if host_ids:
        found |= {
            ("host", str(i)) for i in session.scalars(select(Host.id).where(Host.id.in_(host_ids)))
        }
    return found


def list_entries(
    session: Session,
    *,
    username: str | None = None,
    action: str | None = None,
    result: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> AuditPage:
    """Entries matching the filters, newest first."""
    if result and result not in RESULTS:
        raise Invalid(f"result: must be one of {', '.join(RESULTS)}", field="result")
    check_page(limit=limit, offset=offset, max_limit=MAX_PAGE)
    conditions = []
    if username:
        conditions.append(AuditEntry.username == username)
    if action:
        conditions.append(AuditEntry.action.startswith(action, autoescape=True))
    if result:
        conditions.append(AuditEntry.result == result)
    if target:
        conditions.append(_about(target))
    if since:
        conditions.append(AuditEntry.at >= since)
    if until:
        conditions.append(AuditEntry.at < until)
    total = session.scalar(select(func.count(AuditEntry.id)).where(*conditions)) or 0
    rows = session.scalars(
        select(AuditEntry)
        .where(*conditions)
        .order_by(AuditEntry.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return AuditPage(list(rows), total, limit, offset)


def guest_activity(session: Session, uuid: str, *, limit: int = 20) -> list[AuditEntry]:
    """The latest actions on one guest, newest first: its activity list."""
    about = _about(audit_target("guest", uuid))
    return list(
        session.scalars(select(AuditEntry).where(about).order_by(AuditEntry.id.desc()).limit(limit))
    )
