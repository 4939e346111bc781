"""Who may open a guest's console, and the record of who has one open: single-use tickets,
console sessions (one serial console per guest, taken over only on purpose) and their audit
rows (who, when, how long)."""

import hashlib
import secrets
import uuid as uuid_module
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from app.errors import Conflict, Invalid
from app.models import ConsoleSession, ConsoleTicket, Guest
from app.models.audit import audit_target
from app.models.base import utcnow
from app.services import audit
from app.services.auth import Principal
from app.virt.consoles import LIVE_STATE_NAMES

KINDS = ("vnc", "serial")
# A ticket is for the page (or API client) that asked for it, to be used at once.
TICKET_LIFETIME = timedelta(seconds=30)
# A relay stamps its session this often; one not stamped for STALE has died with its process.
STAMP_EVERY = 2.0
STALE = timedelta(seconds=30)
# Tickets and ended sessions are kept this long (for the audit log the rows are enough).
KEEP = timedelta(days=30)


class ConsoleBusy(Conflict):
    """Someone else holds the guest's serial console."""


@dataclass(frozen=True)
class Ticket:
    """A console ticket as handed out: the secret is shown once, here."""

    ticket: str
    kind: str
    guest_uuid: str
    expires_at: datetime
    url: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_kind(kind: str) -> str:
    """vnc or serial, else Invalid naming the field."""
    if kind not in KINDS:
        raise Invalid(f"kind: must be one of {', '.join(KINDS)}", field="kind")
    return kind


def is_live(guest: Guest) -> bool:
    """Whether the guest's QEMU runs (as the inventory last saw it): it has a console."""
    return guest.gone_at is None and guest.state in LIVE_STATE_NAMES


def check_live(guest: Guest) -> None:
    """Conflict unless the guest's QEMU runs (as the inventory last saw it)."""
    if guest.gone_at is not None:
        raise Conflict(f"{guest.name} is no longer on its host", extra={"state": "gone"})
    if guest.state not in LIVE_STATE_NAMES:
        raise Conflict(
            f"{guest.name} is not running ({guest.state}): start it to open its console",
            extra={"state": guest.state},
        )


def holder(
    session: Session, guest_uuid: str, kind: str = "serial", *, other_than: int | None = None
) -> ConsoleSession | None:
    """The live session that holds the guest's console of this kind, if any (other than the
    session other_than)."""
    return session.scalar(
        select(ConsoleSession)
        .where(
            ConsoleSession.guest_uuid == guest_uuid,
            ConsoleSession.kind == kind,
            ConsoleSession.ended_at.is_(None),
            ConsoleSession.seen_at > utcnow() - STALE,
            ConsoleSession.id != (other_than or 0),
        )
        .order_by(ConsoleSession.id.desc())
        .limit(1)
    )


def in_use_message(held: ConsoleSession) -> str:
    """The sentence a second user reads."""
    since = held.started_at.strftime("%H:%M UTC")
    return f"the serial console is in use by {held.username or 'someone'} since {since}"


def refuse_if_held(session: Session, guest_uuid: str, *, kind: str, takeover: bool) -> None:
    """ConsoleBusy when someone holds the guest's serial console and this is no takeover."""
    held = holder(session, guest_uuid, kind) if kind == "serial" and not takeover else None
    if held is not None:
        raise ConsoleBusy(
            in_use_message(held),
            extra={"holder": held.username, "since": held.started_at.isoformat()},
        )


def issue_ticket(
    session: Session, *, principal: Principal, guest: Guest, kind: str, takeover: bool = False
) -> Ticket:
    """A single-use ticket for this principal's user to open the guest's console within
    TICKET_LIFETIME. A serial console someone holds needs takeover."""
    check_kind(kind)
    check_live(guest)
    refuse_if_held(session, guest.uuid, kind=kind, takeover=takeover)
    now = utcnow()
    session.execute(delete(ConsoleTicket).where(ConsoleTicket.expires_at < now - KEEP))
    secret = secrets.token_urlsafe(32)
    row = ConsoleTicket(
        secret_hash=_digest(secret),
        user_id=principal.user_id,
        guest_uuid=guest.uuid,
        kind=kind,
        takeover=takeover and kind == "serial",
        created_at=now,
        expires_at=now + TICKET_LIFETIME,
    )
    session.add(row)
    session.flush()
    return Ticket(
        ticket=secret,
        kind=kind,
        guest_uuid=guest.uuid,
        expires_at=row.expires_at,
        url=f"/guests/{guest.uuid}/console/{kind}/ws?ticket={secret}",
    )


def redeem_ticket(
    session: Session, *, secret: str, user_id: int | None, guest_uuid: str, kind: str
) -> ConsoleTicket | None:
    """The ticket, marked used, when it is this user's, for this guest and kind, unused and
    unexpired; else None. One UPDATE: of two uses at once only one wins."""
    if not secret or len(secret) > 64 or user_id is None:
        return None
    digest = _digest(secret)
    now = utcnow()
    done = session.execute(
        update(ConsoleTicket)
        .where(
            ConsoleTicket.secret_hash == digest,
            ConsoleTicket.user_id == user_id,
            ConsoleTicket.guest_uuid == guest_uuid,
            ConsoleTicket.kind == kind,
            ConsoleTicket.used_at.is_(None),
            ConsoleTicket.expires_at > now,
        )
        .values(used_at=now)
    )
    if done.rowcount != 1:
        return None
    return session.scalar(select(ConsoleTicket).where(ConsoleTicket.secret_hash == digest))


def _audit(
    session: Session,
    *,
    principal: Principal,
    guest_uuid: str,
    guest_name: str,
    action: str,
    status_code: int,
    denied: bool = False,
    error: str | None = None,
    duration_s: float | None = None,
) -> None:
    audit.record(
        session,
        request_id=uuid_module.uuid4().hex,
        principal=principal,
        method="WS",
        path=f"/guests/{guest_uuid}/console",
        action=action,
        target=audit_target("guest", guest_uuid, guest_name),
        status_code=status_code,
        denied=denied,
        error=error,
        duration_s=duration_s,
    )


def record_refusal(
    session: Session, *, principal: Principal, guest: Guest | None, uuid: str, kind: str,
    status_code: int, reason: str, denied: bool,
) -> None:  # fmt: skip
    """An audit row for a console that was not opened, and why."""
    _audit(
        session,
        principal=principal,
        guest_uuid=uuid,
        guest_name=guest.name if guest else uuid,
        action=f"console.{kind}",
        status_code=status_code,
        denied=denied,
        error=reason,
    )


def start(
    session: Session, *, principal: Principal, guest: Guest, kind: str, takeover: bool
) -> ConsoleSession:
    """Record an opened console. A takeover is announced on the holder's session (its console
    ends as libvirt hands the stream over, and then tells why); settle_takeover() ends or
    restores that session once the new console has opened or failed."""
    if takeover:
        session.execute(
            update(ConsoleSession)
            .where(
                ConsoleSession.guest_uuid == guest.uuid,
                ConsoleSession.kind == kind,
                ConsoleSession.ended_at.is_(None),
            )
            .values(end_reason=f"taken over by {principal.username}")
        )
    row = ConsoleSession(
        guest_uuid=guest.uuid,
        guest_name=guest.name,
        kind=kind,
        user_id=principal.user_id,
        username=principal.username,
    )
    session.add(row)
    session.flush()
    _audit(
        session,
        principal=principal,
        guest_uuid=guest.uuid,
        guest_name=guest.name,
        action=f"console.{kind}.open" + (".takeover" if takeover else ""),
        status_code=101,
    )
    return row


def settle_takeover(session: Session, *, session_id: int, opened: bool) -> None:
    """End the sessions a takeover announced itself on (opened), or take the announcement
    back (the new console did not open: the holder keeps theirs)."""
    taker = session.get(ConsoleSession, session_id)
    if taker is None:
        return
    announced = (
        update(ConsoleSession)
        .where(
            ConsoleSession.guest_uuid == taker.guest_uuid,
            ConsoleSession.kind == taker.kind,
            ConsoleSession.ended_at.is_(None),
            ConsoleSession.end_reason.is_not(None),
            ConsoleSession.id != session_id,
        )
        .execution_options(synchronize_session=False)
    )
    session.execute(
        announced.values(ended_at=utcnow()) if opened else announced.values(end_reason=None)
    )


def end_announced(session: Session, session_id: int) -> str | None:
    """Why the session is ending (a takeover announced or done), if it is."""
    row = session.get(ConsoleSession, session_id)
    return None if row is None else row.end_reason


def stamp(session: Session, session_id: int) -> str | None:
    """Mark the session alive; the reason it was ended by someone else (a takeover), if so."""
    row = session.get(ConsoleSession, session_id)
    if row is None:
        return "the console session was removed"
    if row.ended_at is not None:
        return row.end_reason or "the console session was ended"
    row.seen_at = utcnow()
    return None


def finish(session: Session, *, principal: Principal, session_id: int, reason: str) -> None:
    """Record that the console closed, why, and after how long."""
    row = session.get(ConsoleSession, session_id)
    if row is None:
        return
    now = utcnow()
    if row.ended_at is None:
        row.ended_at, row.end_reason = now, reason[:255]
    else:
        reason = row.end_reason or reason
    _audit(
        session,
        principal=principal,
        guest_uuid=row.guest_uuid,
        guest_name=row.guest_name,
        action=f"console.{row.kind}.close",
        status_code=200,
        error=reason[:500],
        duration_s=round((now - row.started_at).total_seconds(), 1),
    )
    session.execute(delete(ConsoleSession).where(ConsoleSession.ended_at < now - KEEP))
