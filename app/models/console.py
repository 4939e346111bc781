"""Console tickets (single use, short-lived) and the console sessions they opened."""

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow


class ConsoleTicket(Base):
    """Leave for one user to open one console of one guest once, soon; the WebSocket carries
    the secret, the table only its SHA-256."""

    __tablename__ = "console_tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    guest_uuid: Mapped[str] = mapped_column(String(36))
    # vnc or serial
    kind: Mapped[str] = mapped_column(String(8))
    # A serial ticket that may take the console over from whoever holds it.
    takeover: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ConsoleSession(Base):
    """A console someone has (or had) open: who, which guest, since when, and how it ended.
    The relay stamps seen_at while it runs, so a session of a process that died goes stale."""

    __tablename__ = "console_sessions"
    __table_args__ = (Index("ix_console_sessions_guest_kind", "guest_uuid", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guest_uuid: Mapped[str] = mapped_column(String(36))
    guest_name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(8))
    # No foreign key: the record outlives the user it names.
    user_id: Mapped[int | None] = mapped_column(Integer)
    username: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_reason: Mapped[str | None] = mapped_column(String(255))
