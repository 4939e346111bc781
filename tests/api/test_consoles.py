"""Who may open a console, and with which ticket, on test-driver hosts (the real consoles are in
tests/test_real_libvirtd_consoles.py): a ticket is single use, short-lived, the asker's own and
for one guest and kind; the WebSocket checks the Origin and the login; viewers get the
screenshot only; a held serial console is refused unless taken over; each try is audited."""

import hashlib
from collections.abc import Callable
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from starlette.websockets import WebSocketDisconnect

from app.deps import SESSION_COOKIE
from app.models import ConsoleTicket, LoginSession
from app.models.base import utcnow
from app.services import consoles
from app.services.auth import Principal
from app.services.guests import get_guest
from tests.conftest import add_host, login, make_user, node_uri, websocket_closed

WEB_1 = "a1000000-0000-4000-8000-000000000001"  # running on alpha
DB_1 = "a1000000-0000-4000-8000-000000000003"  # shut off on alpha


@pytest.fixture
def alpha(client: TestClient) -> dict:
    return add_host(client, "alpha", node_uri("node-alpha.xml"))


def ticket(client: TestClient, uuid: str = WEB_1, kind: str = "vnc", **body) -> dict:
    response = client.post(f"/api/v1/guests/{uuid}/console/tickets", json={"kind": kind, **body})
    assert response.status_code == 201, response.text
    return response.json()


def closed(client: TestClient, url: str, **headers) -> tuple[int, str]:
    """Open the console WebSocket and return the code and reason it closed with."""
    return websocket_closed(client, url, headers)


def console_audit(client: TestClient) -> list[dict]:
    """The audit rows of console WebSockets, newest first."""
    entries = client.get("/api/v1/audit", params={"action": "console."}).json()["items"]
    return [e for e in entries if e["method"] == "WS"]


def test_a_ticket_names_its_websocket_and_opens_it_once(client: TestClient, alpha) -> None:
    issued = ticket(client)
    first = closed(client, issued["url"])
    second = closed(client, issued["url"])

    assert issued["kind"] == "vnc" and issued["guest_uuid"] == WEB_1
    assert issued["url"] == f"/guests/{WEB_1}/console/vnc/ws?ticket={issued['ticket']}"
    # Admitted: the test driver then has no screen to hand over, and says so.
    assert first[0] == 4409 and "does not hand over the guest's screen" in first[1]
    assert second == (
        4401,
        "the console ticket is unknown, already used or expired: open the console again",
    )
    audited = console_audit(client)
    assert [(e["action"], e["result"]) for e in audited] == [
        ("console.vnc", "denied"),
        ("console.vnc.close", "ok"),
        ("console.vnc.open", "ok"),
    ]
    assert audited[0]["username"] == audited[2]["username"] and audited[1]["duration_s"] >= 0


def test_an_expired_ticket_or_one_for_another_guest_or_kind_is_refused(
    client: TestClient, alpha, sessions
) -> None:
    expired = ticket(client)
    with sessions() as session:
        session.execute(update(ConsoleTicket).values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    for_vnc = ticket(client)

    assert closed(client, expired["url"])[0] == 4401
    assert closed(client, for_vnc["url"].replace("/vnc/", "/serial/"))[0] == 4401
    other_guest = for_vnc["url"].replace(WEB_1, "a1000000-0000-4000-8000-000000000002")
    assert closed(client, other_guest)[0] == 4401
    # Still unused after those refusals: it opens.
    assert closed(client, for_vnc["url"])[0] == 4409


def test_a_ticket_of_another_user_is_refused(client: TestClient, alpha, database_url: str) -> None:
    issued = ticket(client)
    other = f"Bearer {make_user(database_url, 'other-operator', 'operator')}"

    code, reason = closed(client, issued["url"], authorization=other)

    assert code == 4401 and "ticket" in reason
    assert closed(client, issued["url"])[0] == 4409  # its owner still may


def test_a_viewer_sees_the_screenshot_but_may_not_open_a_console(
    make_client: Callable[..., TestClient], client: TestClient, alpha
) -> None:
    viewer = make_client(role="viewer")
    issued = ticket(client)

    shot = viewer.get(f"/api/v1/guests/{WEB_1}/screenshot")
    refused = viewer.post(f"/api/v1/guests/{WEB_1}/console/tickets", json={"kind": "vnc"})
    code, reason = closed(viewer, issued["url"])

    assert shot.status_code == 200 and shot.headers["content-type"] == "image/png"
    assert shot.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert refused.status_code == 403 and "operator" in refused.json()["detail"]
    assert code == 4403 and "does not allow opening a console" in reason


def test_a_browser_console_needs_this_sites_origin(
    make_client: Callable[..., TestClient], database_url: str, alpha
) -> None:
    browser = make_client(role=None)
    make_user(database_url, "op", "operator")
    csrf = login(browser, "op")
    browser.headers["X-CSRF-Token"] = csrf
    own = "http://testserver"

    def url() -> str:
        response = browser.post(
            f"/api/v1/guests/{WEB_1}/console/tickets", json={"kind": "vnc"},
            headers={"Origin": own},
        )  # fmt: skip
        assert response.status_code == 201, response.text
        return response.json()["url"]

    with pytest.raises(WebSocketDisconnect) as cross_site:
        browser.websocket_connect(url(), headers={"Origin": "http://evil.example"}).__enter__()
    no_origin = closed(browser, url())
    same_site = closed(browser, url(), origin=own)

    assert cross_site.value.code == 1008  # refused before the handshake: HTTP 403
    assert no_origin[0] == 4401 and "Origin" in no_origin[1]
    assert same_site[0] == 4409  # admitted


def test_a_shut_off_guest_has_no_console_or_screenshot(client: TestClient, alpha) -> None:
    refused = client.post(f"/api/v1/guests/{DB_1}/console/tickets", json={"kind": "vnc"})
    shot = client.get(f"/api/v1/guests/{DB_1}/screenshot")

    assert refused.status_code == 409 and "not running" in refused.json()["detail"]
    assert shot.status_code == 409 and "start it" in shot.json()["detail"]


def test_an_unknown_kind_names_the_field(client: TestClient, alpha) -> None:
    response = client.post(f"/api/v1/guests/{WEB_1}/console/tickets", json={"kind": "spice"})

    assert response.status_code == 422 and "kind" in response.json()["detail"]


def test_a_held_serial_console_is_refused_with_who_holds_it_unless_taken_over(
    client: TestClient, alpha, sessions
) -> None:
    with sessions() as session:
        guest = get_guest(session, WEB_1)
        holder = Principal(user_id=None, username="alice", role="operator", auth="cookie")
        consoles.start(session, principal=holder, guest=guest, kind="serial", takeover=False)
        session.commit()

    refused = client.post(f"/api/v1/guests/{WEB_1}/console/tickets", json={"kind": "serial"})
    takeover = client.post(
        f"/api/v1/guests/{WEB_1}/console/tickets", json={"kind": "serial", "takeover": True}
    )
    screen = client.post(f"/api/v1/guests/{WEB_1}/console/tickets", json={"kind": "vnc"})

    assert refused.status_code == 409
    assert refused.json()["detail"].startswith("the serial console is in use by alice since ")
    assert refused.json()["holder"] == "alice"
    assert takeover.status_code == 201
    assert screen.status_code == 201  # the screen is shared
    code, reason = closed(client, takeover.json()["url"])
    # The test driver has no serial console: the takeover failed, so alice keeps hers.
    assert code == 4409 and "serial console" in reason
    with sessions() as session:
        held = consoles.holder(session, WEB_1)
        assert held is not None and held.username == "alice" and held.end_reason is None


def test_the_screenshot_a_guest_page_reloads_does_not_keep_its_login_alive(
    make_client: Callable[..., TestClient], database_url: str, alpha, sessions
) -> None:
    browser = make_client(role=None)
    make_user(database_url, "watcher", "viewer")
    login(browser, "watcher")
    mine = (
        LoginSession.secret_hash
        == hashlib.sha256(browser.cookies[SESSION_COOKIE].encode()).hexdigest()
    )
    long_ago = utcnow() - timedelta(minutes=5)

    def last_active():
        with sessions() as session:
            return session.scalar(select(LoginSession.last_active_at).where(mine))

    with sessions() as session:
        session.execute(update(LoginSession).where(mine).values(last_active_at=long_ago))
        session.commit()
    shots = [browser.get(f"/api/v1/guests/{WEB_1}/screenshot").status_code for _ in range(3)]
    after_shots = last_active()
    browser.get(f"/guests/{WEB_1}")
    after_a_page = last_active()

    assert shots == [200, 200, 200]
    assert after_shots == long_ago
    assert after_a_page > long_ago
