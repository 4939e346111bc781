"""The append-only audit log: one row per request that changed something or was refused."""

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow


class AuditEntry(Base):
    """Who did what to which target, when, how it ended, and under which request id."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"), Index("ix_audit_log_username", "username"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    request_id: Mapped[str] = mapped_column(String(32))
    # No foreign keys: the record outlives the users and tokens it names.
    user_id: Mapped[int | None] = mapped_column(Integer)
    username: Mapped[str | None] = mapped_column(String(64))
    # "cookie", "token" or "anonymous"; token_id names the token used.
    auth: Mapped[str] = mapped_column(String(16))
    token_id: Mapped[int | None] = mapped_column(Integer)
    token_name: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(512))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(255))
    # ok, denied (not logged in, not allowed, CSRF, throttled) or failed.
    result: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    # How long it lasted, for what lasts (a console session).
    duration_s: Mapped[float | None] = mapped_column(Float)


def audit_target(kind: str, ident: object, name: str | None = None) -> str:
    """How an audit row names its target: `kind:id`, and the name it had then in brackets."""
    return f"{kind}:{ident} ({name})" if name is not None else f"{kind}:{ident}"


# One target in a row's `target`: kind:id, then the name it had then in brackets (targets are
# joined with ", "; a name holds no brackets, a note may hold commas).
TARGET = re.compile(r"([a-z_]+):([^\s,()]+)(?: \(([^()]*)\))?")


@dataclass(frozen=True)
class Target:
    """One target of an audit row: its kind, its id and the name it had then (if recorded)."""

    kind: str
    id: str
    name: str | None


def parse_targets(target: str | None) -> list[Target]:
    """The targets an audit row names, in order (see audit_target); none when the text is not
    made of them alone (a login typed as `<b>x y</b>`): it is then shown as it is."""
    found = list(TARGET.finditer(target or ""))
    if ", ".join(match.group(0) for match in found) != (target or ""):
        return []
    return [Target(*match.groups()) for match in found]


def target_id(target: str | None, kind: str) -> str | None:
    """The id of a row's first target if it is of this kind (`guest:<uuid> (name), job:7`
    gives the uuid)."""
    first = TARGET.match(target or "")
    return first.group(2) if first and first.group(1) == kind else None
