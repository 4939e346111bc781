"""Read the guest inventory: filters, pages and one guest."""

from dataclasses import dataclass

from sqlalchemy import Row, Select, func, select
from sqlalchemy.orm import Session, contains_eager

from app.errors import Invalid, NotFound
from app.models import Guest, Host
from app.services.paging import check_page
from app.services.states import LIBVIRT_STATES, GuestState

STATE_FILTERS = (*LIBVIRT_STATES, GuestState.GONE)
MAX_PAGE = 500
# What a list shows of a guest: every column but the domain XML (one guest's page shows that),
# read as plain rows: building ORM objects was most of a page's time.
LIST_COLUMNS = tuple(column for column in Guest.__table__.c if column.key != "domain_xml")
# What a list needs of each guest's host: its name and what status() and last_seen() ask.
LIST_HOST_COLUMNS = (Host.id, Host.name, Host.connection, Host.last_sync_at)
# What a list sorts by (sort=<key>, or -<key> for the other way), then by name and host.
SORTS = {
    "name": Guest.name,
    "host": Host.name,
    "state": Guest.state,
    "vcpus": Guest.vcpus,
    "memory": Guest.memory_current_kib,
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


def _filtered(query: Select, *, host_id: int | None, state: str | None, q: str | None) -> Select:
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
    return query


def _sorted(query: Select, sort: str) -> Select:
    """query in the order sort asks for (see list_guests); Invalid naming the field for another
    key."""
    key = sort.removeprefix("-")
    column = SORTS.get(key)
    if column is None:
        raise Invalid(
            f"sort: must be one of {', '.join(SORTS)}, with - first for the other way",
            field="sort",
        )
    if key == "host":  # only then: the name order comes from an index of guests alone
        query = query.join(Host, Guest.host_id == Host.id)
    # Ties go the same way (name, then host): one walk of the column's index, either way. With
    # name ascending under a descending column, 25,000 guests of one size were sorted in full.
    way = (lambda c: c.desc()) if sort.startswith("-") else (lambda c: c.asc())
    then = [Guest.host_id] if key == "name" else [Guest.name, Guest.host_id]
    return query.order_by(way(column), *(way(c) for c in then))


def list_guests(
    session: Session,
    *,
    host_id: int | None = None,
    state: str | None = None,
    q: str | None = None,
    limit: int = 100,
    offset: int = 0,
    sort: str = "name",
) -> GuestPage:
    """Guests matching the filters (gone ones only when state='gone'), in the order sort names
    (one of SORTS, with "-" first for the other way), then by name (the same way)."""
    if state and state not in STATE_FILTERS:
        raise Invalid(f"state: must be one of {', '.join(STATE_FILTERS)}", field="state")
    check_page(limit=limit, offset=offset, max_limit=MAX_PAGE)
    q = (q or "").strip() or None
    ordered = _sorted(_filtered(select(*LIST_COLUMNS), host_id=host_id, state=state, q=q), sort)
    # count(*), not count(id): PostgreSQL then counts from an index alone (see models.guest).
    total = session.scalar(
        _filtered(select(func.count()).select_from(Guest), host_id=host_id, state=state, q=q)
    )
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
