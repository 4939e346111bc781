"""Read the guest inventory: filters, pages and one guest."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Row, Select, func, literal_column, select
from sqlalchemy.orm import Session, contains_eager

from app.errors import Invalid, NotFound
from app.models import Guest, Host
from app.models.guest import CPU_SORT, NOT_UP
from app.services.paging import check_page
from app.services.states import LIBVIRT_STATES, GuestState
from app.services.tag_rules import RULE, TAG, tag_pattern

STATE_FILTERS = (*LIBVIRT_STATES, GuestState.GONE)
MAX_PAGE = 500
# What a list shows of a guest: every column but the domain XML and the last error (one
# guest's page shows those), read as plain rows: building ORM objects was most of a page's time.
LIST_COLUMNS = tuple(
    column for column in Guest.__table__.c if column.key not in ("domain_xml", "last_error")
)
# What a list needs of each guest's host: its name and what status() and last_seen() ask.
LIST_HOST_COLUMNS = (Host.id, Host.name, Host.connection, Host.last_sync_at)
# What a list sorts by (sort=<key>, or -<key> for the other way), then by name and host: each
# key's expressions, each with whether it goes up as the key does. Each walks an index of
# models.guest (the CPU and uptime keys are its index expressions, word for word).
SORTS: dict[str, tuple[tuple[ColumnElement, bool], ...]] = {
    "name": ((Guest.name, True),),
    "host": ((Host.name, True),),
    "state": ((Guest.state, True),),
    "vcpus": ((Guest.vcpus, True),),
    "memory": ((Guest.memory_current_kib, True),),
    "cpu": ((literal_column(CPU_SORT.text), True),),
    # Not up first, then the latest start (the shortest uptime).
    "uptime": ((literal_column(NOT_UP.text), False), (Guest.running_since, False)),
}


@dataclass(frozen=True)
class GuestPage:
    """One page of guests (rows of LIST_COLUMNS), their hosts (rows of LIST_HOST_COLUMNS, by
    id) and how many guests match in all."""

    items: list[Row]
    hosts: dict[int, Row]
    total: int
    limit: int
    offset: int


def status(guest: Guest, host: Host) -> GuestState:
    """What to show: gone, unknown (host unreachable), a pending transition, or libvirt's state."""
    if guest.gone_at is not None:
        return GuestState.GONE
    if host.connection == "unreachable":
        return GuestState.UNKNOWN
    state = GuestState.of(guest.state)
    if guest.transition and state.executing:
        return GuestState.of(guest.transition)
    return state


def uptime(guest: Guest | Row, shown: GuestState, *, now: datetime) -> timedelta | None:
    """How long the guest has been up as the inventory saw it (since it saw it start, or first
    saw it up); None when it is off, gone or on a host out of reach (shown: its status)."""
    if guest.running_since is None or not shown.actionable:
        return None
    return max(timedelta(0), now - guest.running_since)


def known_addresses(guest: Guest | Row, shown: GuestState) -> list[dict]:
    """The guest's IP addresses as the worker last read them while it was up (dicts of
    app.virt.addresses.Address's fields); none when it is off, gone or out of reach (shown: its
    status)."""
    if guest.running_since is None or not shown.actionable:
        return []
    return guest.addresses or []


@dataclass(frozen=True)
class GuestFilter:
    """What a list of guests is narrowed to: a host, a state (or gone), part of the name, a tag."""

    host_id: int | None = None
    state: str | None = None
    q: str | None = None
    tag: str | None = None

    @classmethod
    def checked(
        cls, *, host_id: int | None, state: str | None, q: str | None, tag: str | None
    ) -> "GuestFilter":
        """The filter, its words trimmed (and the tag in lower case); Invalid naming the field
        for a state or tag that is none."""
        if state and state not in STATE_FILTERS:
            raise Invalid(f"state: must be one of {', '.join(STATE_FILTERS)}", field="state")
        tag = (tag or "").strip().lower() or None
        if tag is not None and not TAG.fullmatch(tag):
            raise Invalid(f"tag: a tag is {RULE}", field="tag")
        return cls(host_id=host_id, state=state or None, q=(q or "").strip() or None, tag=tag)


def _filtered(query: Select, where: GuestFilter) -> Select:
    host_id, state, q = where.host_id, where.state, where.q
    if host_id is not None:
        query = query.where(Guest.host_id == host_id)
    if state == GuestState.GONE:
        query = query.where(Guest.gone_at.is_not(None))
    else:
        query = query.where(Guest.gone_at.is_(None))
        if state:
            query = query.where(Guest.state == state)
    if q:
        escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Guest.name.ilike(f"%{escaped}%", escape="\\"))
    if where.tag:
        query = query.where(Guest.tags.like(tag_pattern(where.tag), escape="\\"))
    return query


def _sorted(query: Select, sort: str) -> Select:
    """query in the order sort asks for (see list_guests); Invalid naming the field for another
    key."""
    key = sort.removeprefix("-")
    keys = SORTS.get(key)
    if keys is None:
        raise Invalid(
            f"sort: must be one of {', '.join(SORTS)}, with - first for the other way",
            field="sort",
        )
    if key == "host":  # only then: the name order comes from an index of guests alone
        query = query.join(Host, Guest.host_id == Host.id)
    # Ties go the same way (name, then host): one walk of the key's index, either way. With
    # name ascending under a descending column, 25,000 guests of one size were sorted in full.
    forward = not sort.startswith("-")
    then = [(Guest.host_id, True)] if key == "name" else [(Guest.name, True), (Guest.host_id, True)]
    return query.order_by(
        *(column.asc() if up == forward else column.desc() for column, up in (*keys, *then))
    )


def list_guests(
    session: Session,
    *,
    host_id: int | None = None,
    state: str | None = None,
    q: str | None = None,
    tag: str | None = None,
    limit: int = 100,
    offset: int = 0,
    sort: str = "name",
) -> GuestPage:
    """Guests matching the filters (gone ones only when state='gone'; with the tag, if one),
    in the order sort names (one of SORTS, with "-" first for the other way), then by name (the
    same way)."""
    where = GuestFilter.checked(host_id=host_id, state=state, q=q, tag=tag)
    check_page(limit=limit, offset=offset, max_limit=MAX_PAGE)
    ordered = _sorted(_filtered(select(*LIST_COLUMNS), where), sort)
    # count(*), not count(id): PostgreSQL then counts from an index alone (see models.guest).
    total = session.scalar(_filtered(select(func.count()).select_from(Guest), where))
    rows = session.execute(ordered.limit(limit).offset(offset)).all()
    host_ids = {row.host_id for row in rows}
    hosts = (
        session.execute(select(*LIST_HOST_COLUMNS).where(Host.id.in_(host_ids))).all()
        if host_ids
        else []
    )
    return GuestPage(
        items=rows,
        hosts={host.id: host for host in hosts},
        total=total or 0,
        limit=limit,
        offset=offset,
    )


def get_guest(session: Session, uuid: str) -> Guest:
    """The guest with this UUID, preferring a present one over a gone one; else NotFound."""
    guest = session.scalars(
        select(Guest)
        .join(Guest.host)
        .options(contains_eager(Guest.host))
        .where(Guest.uuid == uuid.lower())
        .order_by(Guest.gone_at.is_not(None), Guest.changed_at.desc())
        .limit(1)
    ).first()
    if guest is None:
        raise NotFound(f"guest {uuid} not found")
    return guest
