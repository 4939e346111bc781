"""Host leases: with several virtdeck instances on one database, each host is synced by the one
instance holding its lease. A lease is renewed every few seconds; once its owner stops renewing
it (the instance died or was stopped), another instance takes it when it expires."""

from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from app.models import Host
from app.models.base import utcnow


def claim(session: Session, owner: str, *, ttl: float) -> set[int]:
    """Renew this owner's leases, take free or expired ones; the host ids it now holds."""
    now = utcnow()
    session.execute(
        update(Host)
        .where(
            or_(
                Host.lease_owner == owner,
                Host.lease_owner.is_(None),
                Host.lease_expires_at.is_(None),
                Host.lease_expires_at < now,
            )
        )
        .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=ttl))
        .execution_options(synchronize_session=False)
    )
    return set(session.scalars(select(Host.id).where(Host.lease_owner == owner)))


def release(session: Session, owner: str) -> None:
    """Give up every lease of this owner (a clean stop: another instance takes over at once)."""
    session.execute(
        update(Host)
        .where(Host.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


def owners(session: Session) -> dict[int, str | None]:
    """Which instance holds each host's live lease (None when nobody does)."""
    now = utcnow()
    return {
        host_id: owner if expires is not None and expires >= now else None
        for host_id, owner, expires in session.execute(
            select(Host.id, Host.lease_owner, Host.lease_expires_at)
        )
    }
