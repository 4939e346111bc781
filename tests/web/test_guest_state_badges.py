"""Guest state badges: every state the pages show has a CSS class that the stylesheet colours."""

import re

from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.models import Guest
from app.models.base import utcnow

HTMX = {"HX-Request": "true"}


def asking_for_shutdown(sessions: sessionmaker[Session], name: str) -> str:
    """Mark the running guest as we do after an ACPI shutdown it has not answered yet."""
    with sessions() as session, session.begin():
        uuid = session.scalar(select(Guest.uuid).where(Guest.name == name))
        session.execute(
            update(Guest)
            .where(Guest.uuid == uuid)
            .values(transition="shutting down", transition_since=utcnow())
        )
    return uuid


def styled(client: TestClient, css_class: str) -> bool:
    return re.search(rf"\.{css_class}\b[^{{]*\{{", client.get("/static/app.css").text) is not None


def test_a_guest_shutting_down_has_a_styled_badge_and_keeps_its_api_status(
    client: TestClient, two_hosts: tuple[dict, dict], sessions: sessionmaker[Session]
) -> None:
    uuid = asking_for_shutdown(sessions, "web-1")

    row = client.get(f"/guests/{uuid}", headers={**HTMX, "HX-Target": f"guest-row-{uuid}"})
    panel = client.get(f"/guests/{uuid}")
    api = client.get(f"/api/v1/guests/{uuid}").json()

    badge = '<span class="badge badge-shutting-down">shutting down</span>'
    assert badge in row.text and 'data-state="shutting down"' in row.text
    assert badge in panel.text
    assert 'hx-trigger="every 2s"' in row.text  # it settles: the row polls until it is off
    assert styled(client, "badge-shutting-down")
    lifecycle = [action for action in api["actions"] if not action.startswith("autostart")]
    assert api["status"] == "shutting down" and lifecycle == ["force_off"]


def test_every_state_a_guest_list_can_show_is_styled(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    alpha, beta = two_hosts
    shown = set()
    for host in (alpha, beta):
        page = client.get(f"/hosts/{host['id']}").text
        shown |= set(re.findall(r'class="badge badge-([\w-]+)"', page))

    assert shown and all(styled(client, f"badge-{state}") for state in shown)
