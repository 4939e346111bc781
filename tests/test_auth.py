"""Sessions, CSRF, API tokens, login throttling and first-admin setup."""

import hashlib
import time
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import inspect, select, text

from app.db import make_engine
from app.deps import BACKGROUND_HEADER, CSRF_HEADER, SESSION_COOKIE
from app.models import ApiToken
from tests.conftest import PASSWORD, login, make_user, node_uri


def cookie_client(make_client, database_url: str, role: str = "admin", **settings):
    """A client logged in through the form as a new user of this role; returns it and CSRF."""
    client = make_client(role=None, **settings)
    name = f"{role}-web"
    make_user(database_url, name, role)
    return client, login(client, name)


def test_cookie_requests_need_the_csrf_token(make_client, database_url: str) -> None:
    client, csrf = cookie_client(make_client, database_url)
    body = {"name": "alpha", "uri": node_uri("node-alpha.xml")}

    missing = client.post("/api/v1/hosts", json=body)
    wrong = client.post("/api/v1/hosts", json=body, headers={CSRF_HEADER: "x" + csrf})
    right = client.post("/api/v1/hosts", json=body, headers={CSRF_HEADER: csrf})

    assert (missing.status_code, wrong.status_code) == (403, 403)
    assert missing.json()["detail"] == "missing or wrong CSRF token"
    assert right.status_code == 201
    assert [h["name"] for h in client.get("/api/v1/hosts").json()] == ["alpha"]


def test_token_requests_need_no_csrf_token(client: TestClient) -> None:
    response = client.post("/api/v1/hosts", json={"name": "a", "uri": node_uri("node-beta.xml")})
    assert response.status_code == 201


def test_session_cookie_is_httponly_lax_and_secure_only_over_https(
    make_client, database_url: str
) -> None:
    make_user(database_url, "carol", "viewer")
    plain = make_client(role=None)
    tls = make_client(role=None)
    tls.base_url = tls.base_url.copy_with(scheme="https")

    over_http = plain.post(
        "/login", data={"name": "carol", "password": PASSWORD}, follow_redirects=False
    )
    over_https = tls.post(
        "/login", data={"name": "carol", "password": PASSWORD}, follow_redirects=False
    )

    cookie = over_http.headers["set-cookie"].lower()
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
    assert "secure" not in cookie
    assert "secure" in over_https.headers["set-cookie"].lower()


def test_wrong_password_is_refused_without_saying_which_part(
    make_client, database_url: str
) -> None:
    make_user(database_url, "dave", "viewer")
    client = make_client(role=None)

    wrong_password = client.post("/login", data={"name": "dave", "password": "nope nope nope"})
    no_such_user = client.post("/login", data={"name": "erin", "password": "nope nope nope"})

    assert wrong_password.status_code == no_such_user.status_code == 401
    assert "wrong user name or password" in wrong_password.text
    assert "wrong user name or password" in no_such_user.text
    assert SESSION_COOKIE not in client.cookies


def test_failed_logins_slow_down_that_user(make_client, database_url: str) -> None:
    make_user(database_url, "frank", "viewer")
    client = make_client(role=None, login_throttle_after=3, login_throttle_base=1.0)
    for _ in range(3):
        assert client.post("/login", data={"name": "frank", "password": "bad"}).status_code == 401

    throttled = client.post("/login", data={"name": "frank", "password": PASSWORD})
    time.sleep(1.2)
    later = client.post(
        "/login", data={"name": "frank", "password": PASSWORD}, follow_redirects=False
    )

    assert throttled.status_code == 429
    assert "too many failed logins" in throttled.text
    assert int(throttled.headers["Retry-After"]) >= 1
    assert later.status_code == 303


def test_failed_logins_slow_down_that_address(make_client, database_url: str) -> None:
    make_user(database_url, "grace", "viewer")
    client = make_client(role=None, login_throttle_address_after=4, login_throttle_base=30)
    for n in range(4):
        client.post("/login", data={"name": f"guess-{n}", "password": "bad"})

    from_same_address = client.post("/login", data={"name": "grace", "password": PASSWORD})
    other = TestClient(client.app, client=("127.0.0.2", 1))
    from_elsewhere = other.post(
        "/login", data={"name": "grace", "password": PASSWORD}, follow_redirects=False
    )

    assert from_same_address.status_code == 429
    assert from_elsewhere.status_code == 303


def test_idle_sessions_expire_and_background_polling_does_not_keep_them(
    make_client, database_url: str
) -> None:
    client, _ = cookie_client(make_client, database_url, session_idle_minutes=3 / 60)
    background = {"HX-Request": "true", "HX-Target": "host-cards", BACKGROUND_HEADER: "1"}

    time.sleep(1.5)
    polled = client.get("/", headers=background)
    time.sleep(1.8)
    after_idle = client.get("/", follow_redirects=False)

    assert polled.status_code == 200
    assert after_idle.status_code == 303
    assert after_idle.headers["location"] == "/login?next=/"


def test_user_activity_keeps_a_session_alive_until_its_absolute_limit(
    make_client, database_url: str
) -> None:
    idle, absolute = 1.2, 2.5
    before_login = time.monotonic()
    client, _ = cookie_client(
        make_client, database_url,
        session_idle_minutes=idle / 60, session_absolute_hours=absolute / 3600,
    )  # fmt: skip
    logged_in = time.monotonic()
    statuses = []
    while time.monotonic() - logged_in < absolute + 1.5 and 303 not in statuses:
        time.sleep(0.4)  # well inside the idle limit
        statuses.append(client.get("/", follow_redirects=False).status_code)
    expired_at = time.monotonic()

    assert statuses[:3] == [200, 200, 200]
    assert statuses[-1] == 303
    assert expired_at - before_login >= absolute
    assert expired_at - logged_in < absolute + 1.0


def test_logout_ends_the_session(make_client, database_url: str) -> None:
    client, csrf = cookie_client(make_client, database_url)
    secret = client.cookies[SESSION_COOKIE]

    client.post("/logout", headers={CSRF_HEADER: csrf})
    client.cookies.set(SESSION_COOKIE, secret)

    assert client.get("/", follow_redirects=False).status_code == 303


def test_token_is_shown_once_and_stored_only_as_its_hash(make_client, database_url: str) -> None:
    client, csrf = cookie_client(make_client, database_url)
    created = client.post(
        "/api/v1/tokens", json={"name": "nightly", "role": "viewer"}, headers={CSRF_HEADER: csrf}
    )
    secret = created.json()["token"]
    listed = client.get("/api/v1/tokens")

    assert created.status_code == 201 and secret.startswith("vd_")
    assert secret not in listed.text and "nightly" in listed.text
    engine = make_engine(database_url)
    with engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            rows = conn.execute(text(f"SELECT * FROM {table}")).all()
            assert secret not in repr(rows), f"plain token found in {table}"
        stored = conn.execute(select(ApiToken.secret_hash).where(ApiToken.name == "nightly"))
        assert stored.scalar_one() == hashlib.sha256(secret.encode()).hexdigest()
    engine.dispose()


def test_token_roles_never_exceed_the_user(make_client, database_url: str) -> None:
    operator, csrf = cookie_client(make_client, database_url, role="operator")

    too_high = operator.post(
        "/api/v1/tokens", json={"name": "x", "role": "admin"}, headers={CSRF_HEADER: csrf}
    )
    lower = operator.post(
        "/api/v1/tokens", json={"name": "ro", "role": "viewer"}, headers={CSRF_HEADER: csrf}
    ).json()
    as_viewer = TestClient(operator.app, headers={"Authorization": f"Bearer {lower['token']}"})

    assert too_high.status_code == 422 and too_high.json()["field"] == "role"
    assert as_viewer.get("/api/v1/me").json()["role"] == "viewer"
    assert as_viewer.post(f"/api/v1/hosts/{1}/refresh").status_code == 403


def test_tokens_cannot_mint_tokens(client: TestClient) -> None:
    response = client.post("/api/v1/tokens", json={"name": "child"})

    assert response.status_code == 403
    assert "browser session or the command line" in response.json()["detail"]
    assert [t["name"] for t in client.get("/api/v1/tokens").json()] == [
        client.get("/api/v1/me").json()["token_name"]
    ]


def test_expired_and_revoked_tokens_are_refused(make_client, database_url: str) -> None:
    client, csrf = cookie_client(make_client, database_url)
    headers = {CSRF_HEADER: csrf}
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    expiring = client.post(
        "/api/v1/tokens", json={"name": "brief", "expires_at": soon}, headers=headers
    ).json()
    revoked = client.post("/api/v1/tokens", json={"name": "gone"}, headers=headers).json()
    client.delete(f"/api/v1/tokens/{revoked['id']}", headers=headers)
    time.sleep(1.2)

    for secret in (expiring["token"], revoked["token"]):
        response = TestClient(client.app).get(
            "/api/v1/hosts", headers={"Authorization": f"Bearer {secret}"}
        )
        assert response.status_code == 401
        assert response.json()["detail"] == "the API token is invalid, expired or revoked"
    past = client.post(
        "/api/v1/tokens", json={"name": "old", "expires_at": "2001-01-01T00:00Z"}, headers=headers
    )
    assert past.status_code == 422 and past.json()["field"] == "expires_at"


def test_disabled_users_lose_their_tokens_and_the_last_admin_stays(
    client: TestClient, make_client
) -> None:
    viewer = make_client(role="viewer")
    me = viewer.get("/api/v1/me").json()
    admin_id = client.get("/api/v1/me").json()["user_id"]

    disabled = client.patch(f"/api/v1/users/{me['user_id']}", json={"disabled": True})
    demote_self = client.patch(f"/api/v1/users/{admin_id}", json={"role": "viewer"})

    assert disabled.status_code == 200
    assert viewer.get("/api/v1/hosts").status_code == 401
    assert demote_self.status_code == 409
    assert "last active admin" in demote_self.json()["detail"]


def test_first_admin_is_created_from_localhost_only_and_only_once(make_client) -> None:
    local = make_client(role=None)
    remote = TestClient(local.app, client=("remote-peer", 1))

    assert remote.get("/setup").status_code == 404
    assert local.get("/", follow_redirects=True).url.path == "/setup"
    created = local.post(
        "/setup",
        data={"name": "root-admin", "password": PASSWORD, "password_again": PASSWORD},
        follow_redirects=False,
    )
    again = local.post(
        "/setup", data={"name": "second", "password": PASSWORD, "password_again": PASSWORD}
    )

    assert created.status_code == 303 and SESSION_COOKIE in local.cookies
    assert local.get("/api/v1/me").json()["username"] == "root-admin"
    assert again.status_code == 404
    assert local.get("/setup", follow_redirects=False).headers["location"] == "/login"


def test_setup_form_names_the_bad_field(make_client) -> None:
    local = make_client(role=None)
    response = local.post(
        "/setup", data={"name": "a", "password": PASSWORD, "password_again": "different!!"}
    )
    assert response.status_code == 422
    assert 'data-field="password_again"' in response.text
