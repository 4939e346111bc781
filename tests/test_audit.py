"""Every request that changes something or is refused leaves one append-only audit row."""

import logging

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from app.db import make_engine
from app.deps import CSRF_HEADER
from tests.conftest import PASSWORD, add_host, login, make_user, node_uri, post_login
from tests.markup import parse


def entry_for(client: TestClient, response) -> dict:
    """The audit row of a response, found by its request id."""
    request_id = response.headers["X-Request-ID"]
    rows = [e for e in client.get("/api/v1/audit", params={"limit": 500}).json()["items"]
            if e["request_id"] == request_id]  # fmt: skip
    assert len(rows) == 1, f"expected one audit row for {request_id}, got {rows}"
    return rows[0]


def test_an_allowed_change_is_recorded_with_who_how_and_what(client: TestClient) -> None:
    response = client.post(
        "/api/v1/hosts", json={"name": "alpha", "uri": node_uri("node-alpha.xml")}
    )

    row = entry_for(client, response)
    me = client.get("/api/v1/me").json()
    assert row["result"] == "ok" and row["status_code"] == 201
    assert row["action"] == "host.add"
    assert row["target"] == f"host:{response.json()['id']} (alpha)"
    assert (row["username"], row["auth"], row["token_name"]) == (
        me["username"],
        "token",
        me["token_name"],
    )
    assert row["error"] is None
    assert row["at"].endswith("Z")


def test_a_refused_change_is_recorded_with_the_reason(
    client: TestClient, make_client, two_hosts: tuple[dict, dict]
) -> None:
    viewer = make_client(role="viewer")
    alpha, _ = two_hosts

    response = viewer.delete(f"/api/v1/hosts/{alpha['id']}")

    row = entry_for(client, response)
    assert row["result"] == "denied" and row["status_code"] == 403
    assert row["action"] == "host.remove" and row["target"] == f"host:{alpha['id']} (alpha)"
    assert row["username"].startswith("viewer-")
    assert row["error"] == "your role (viewer) does not allow this; it needs admin"


def test_a_failed_change_is_recorded_with_the_error(client: TestClient) -> None:
    response = client.post("/api/v1/hosts", json={"name": "bad", "uri": "xen:///system"})

    row = entry_for(client, response)
    assert row["result"] == "failed" and row["status_code"] == 422
    assert row["error"].startswith("uri: scheme 'xen' is not supported")


def test_anonymous_reads_and_missing_csrf_tokens_are_recorded_as_denied(
    client: TestClient, make_client, database_url: str
) -> None:
    anonymous = make_client(role=None)
    read = anonymous.get("/api/v1/hosts")
    make_user(database_url, "web-admin", "admin")
    login(anonymous, "web-admin")
    forged = anonymous.post("/api/v1/hosts", json={"name": "x", "uri": "test:///default"})

    read_row, forged_row = entry_for(client, read), entry_for(client, forged)
    assert (read_row["result"], read_row["auth"], read_row["status_code"]) == (
        "denied",
        "anonymous",
        401,
    )
    assert read_row["action"] == "GET /api/v1/hosts"
    assert (forged_row["result"], forged_row["auth"]) == ("denied", "cookie")
    assert forged_row["error"] == "missing or wrong CSRF token"


def test_logins_are_recorded_without_the_password(
    client: TestClient, make_client, database_url: str
) -> None:
    make_user(database_url, "heidi", "viewer")
    browser = make_client(role=None)

    failed = post_login(browser, "heidi", "secret-guess-123")
    ok = post_login(browser, "heidi")

    failed_row, ok_row = entry_for(client, failed), entry_for(client, ok)
    assert (failed_row["action"], failed_row["result"]) == ("login", "denied")
    assert failed_row["target"] == "user:heidi"
    assert failed_row["error"] == "wrong user name or password"
    assert (ok_row["action"], ok_row["result"]) == ("login", "ok")
    everything = client.get("/api/v1/audit", params={"limit": 500}).text
    assert "secret-guess-123" not in everything and PASSWORD not in everything


def test_secrets_never_reach_the_logs_or_api_answers(
    client: TestClient, make_client, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    make_user(database_url, "ivan", "operator")
    browser = make_client(role=None)
    csrf = login(browser, "ivan")
    created = browser.post("/api/v1/tokens", json={"name": "ci"}, headers={CSRF_HEADER: csrf})
    secret = created.json()["token"]
    TestClient(client.app).get("/api/v1/hosts", headers={"Authorization": f"Bearer {secret}"})

    answers = [
        client.get("/api/v1/audit", params={"limit": 500}).text,
        client.get("/api/v1/users").text,
        client.get("/api/v1/tokens", params={"all": True}).text,
        browser.get("/api/v1/tokens").text,
    ]
    for text_seen in [caplog.text, *answers]:
        assert secret not in text_seen
        assert PASSWORD not in text_seen
        assert "argon2" not in text_seen  # no password hash either


def test_audit_log_filters_by_user_action_and_result(client: TestClient, make_client) -> None:
    viewer = make_client(role="viewer")
    add_host(client, "alpha", node_uri("node-alpha.xml"))
    viewer.post("/api/v1/hosts", json={"name": "x", "uri": "test:///default"})
    viewer_name = viewer.get("/api/v1/me").json()["username"]

    denied = client.get("/api/v1/audit", params={"result": "denied", "username": viewer_name})
    admin_name = client.get("/api/v1/me").json()["username"]
    host_actions = client.get(
        "/api/v1/audit", params={"action": "host.", "username": admin_name}
    ).json()["items"]
    bad = client.get("/api/v1/audit", params={"result": "maybe"})

    assert [(e["action"], e["result"]) for e in denied.json()["items"]] == [("host.add", "denied")]
    assert {e["action"] for e in host_actions} == {"host.add", "host.refresh"}
    assert bad.status_code == 422 and bad.json()["field"] == "result"
    assert viewer.get("/api/v1/audit").status_code == 403


def row_of(page, response):
    """The audit page's row of a response (other tests' rows share the database)."""
    request_id = response.headers["X-Request-ID"]
    (row,) = [r for r in page.find_all("tr") if r.has("code", title=request_id)]
    return row


def test_entries_name_their_guests_and_hosts_and_link_those_that_still_exist(
    client: TestClient,
) -> None:
    host = add_host(client, "alpha", node_uri("node-alpha.xml"))
    web_1 = "a1000000-0000-4000-8000-000000000001"
    paused = client.post(f"/api/v1/guests/{web_1}/actions/suspend")
    gone = add_host(client, "beta", node_uri("node-beta.xml"))
    removed = client.delete(f"/api/v1/hosts/{gone['id']}")

    action = entry_for(client, paused)
    about_guest = client.get("/api/v1/audit", params={"target": f"guest:{web_1}"}).json()
    page = parse(client.get("/audit", params={"action": "guest."}).text)
    removal = parse(client.get("/audit", params={"action": "host.remove"}).text)

    # Written with the name the guest had then; found by its UUID alone.
    assert action["target"] == f"guest:{web_1} (web-1)"
    assert action["targets"] == [{"kind": "guest", "id": web_1, "name": "web-1"}]
    assert paused.headers["X-Request-ID"] in [e["request_id"] for e in about_guest["items"]]
    cell = row_of(page, paused).find("td", class_="target")
    assert cell.find("a", href=f"/guests/{web_1}").text == "web-1"
    assert f"guest {web_1}" in cell.text
    # A removed host keeps its name in the log, with no link to a page that is gone.
    assert removed.status_code == 204
    gone_cell = row_of(removal, removed).find("td", class_="target")
    assert gone_cell.find_all("a") == [] and gone_cell.text.strip().startswith("beta")
    refresh = client.get("/api/v1/audit", params={"target": f"host:{host['id']}"}).json()
    assert {e["targets"][0]["id"] for e in refresh["items"]} == {str(host["id"])}
    assert "alpha" in {e["targets"][0]["name"] for e in refresh["items"]}


def test_the_database_refuses_to_change_or_delete_audit_rows(
    client: TestClient, database_url: str
) -> None:
    client.post("/api/v1/hosts", json={"name": "bad", "uri": "xen:///system"})
    engine = make_engine(database_url)
    for statement in ("UPDATE audit_log SET result = 'ok'", "DELETE FROM audit_log"):
        with engine.connect() as conn, pytest.raises(DatabaseError, match="append-only"):
            conn.execute(text(statement))
    engine.dispose()
