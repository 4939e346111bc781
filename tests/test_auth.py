"""Sessions, CSRF, API tokens, login throttling and first-admin setup."""

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select, text, update

from app.config import Settings
from app.db import make_engine, make_session_factory
from app.deps import BACKGROUND_HEADER, CSRF_HEADER, SESSION_COOKIE
from app.errors import NotFound, VirtdeckError
from app.models import ApiToken, LoginSession, User
from app.services.setup import ALREADY_DONE, create_first_admin
from app.services.users import authenticate
from tests.conftest import PASSWORD, form_token, login, make_user, node_uri, post_login
from tests.htmx import htmx_to


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

    over_http = post_login(plain, "carol")
    over_https = post_login(tls, "carol")

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

    wrong_password = post_login(client, "dave", "nope nope nope")
    no_such_user = post_login(client, "erin", "nope nope nope")

    assert wrong_password.status_code == no_such_user.status_code == 401
    assert "wrong user name or password" in wrong_password.text
    assert "wrong user name or password" in no_such_user.text
    assert SESSION_COOKIE not in client.cookies


def test_failed_logins_slow_down_that_user(make_client, database_url: str) -> None:
    make_user(database_url, "frank", "viewer")
    client = make_client(role=None, login_throttle_after=3, login_throttle_base=1.0)
    for _ in range(3):
        assert post_login(client, "frank", "bad").status_code == 401

    throttled = post_login(client, "frank")
    time.sleep(1.2)
    later = post_login(client, "frank")

    assert throttled.status_code == 429
    assert "too many failed logins" in throttled.text
    assert int(throttled.headers["Retry-After"]) >= 1
    assert later.status_code == 303


def test_failed_logins_slow_down_that_address(make_client, database_url: str) -> None:
    make_user(database_url, "grace", "viewer")
    client = make_client(role=None, login_throttle_address_after=4, login_throttle_base=30)
    for n in range(4):
        post_login(client, f"guess-{n}", "bad")

    from_same_address = post_login(client, "grace")
    other = TestClient(client.app, client=("127.0.0.2", 1))
    from_elsewhere = post_login(other, "grace")

    assert from_same_address.status_code == 429
    assert from_elsewhere.status_code == 303


def test_idle_sessions_expire_and_background_polling_does_not_keep_them(
    make_client, database_url: str
) -> None:
    # 6 s idle: logging in must fit in it with room to spare on a busy machine.
    client, _ = cookie_client(make_client, database_url, session_idle_minutes=6 / 60)
    background = {**htmx_to("host-cards"), BACKGROUND_HEADER: "1"}

    time.sleep(3)
    polled = client.get("/", headers=background)
    time.sleep(3.5)
    after_idle = client.get("/", follow_redirects=False)

    assert polled.status_code == 200
    assert after_idle.status_code == 303
    assert after_idle.headers["location"] == "/login?next=/"


def test_page_views_write_the_session_activity_at_most_once_a_minute(
    make_client, database_url: str
) -> None:
    client, _ = cookie_client(make_client, database_url)
    mine = (
        LoginSession.secret_hash
        == hashlib.sha256(client.cookies[SESSION_COOKIE].encode()).hexdigest()
    )
    engine = make_engine(database_url)

    def last_active() -> datetime:
        with engine.connect() as conn:
            return conn.execute(select(LoginSession.last_active_at).where(mine)).scalar_one()

    at_login = last_active()
    client.get("/")
    after_a_view = last_active()
    with engine.begin() as conn:
        conn.execute(
            update(LoginSession).where(mine).values(last_active_at=at_login - timedelta(minutes=2))
        )
    client.get("/")
    after_a_pause = last_active()
    engine.dispose()

    assert after_a_view == at_login
    assert after_a_pause > at_login


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


SETUP_CODE = "setup code for tests"


def setup_client(make_client) -> TestClient:
    """A browser on this machine before there are users, at http://localhost (the setup page
    answers at a loopback name only)."""
    client = make_client(role=None, setup_code=SETUP_CODE)
    client.base_url = httpx.URL("http://localhost")
    return client


def post_setup(
    client: TestClient, name: str, *, code: str = SETUP_CODE, headers: dict | None = None
):
    """Send the first-admin form as a browser does (its token), with this setup code."""
    data = {
        "name": name,
        "password": PASSWORD,
        "password_again": PASSWORD,
        "setup_code": code,
        "csrf_token": form_token(client, "/setup"),
    }
    return client.post("/setup", data=data, headers=headers or {}, follow_redirects=False)


def test_first_admin_is_created_from_localhost_only_and_only_once(make_client) -> None:
    local = setup_client(make_client)
    remote = TestClient(local.app, client=("remote-peer", 1))

    assert remote.get("/setup").status_code == 404
    assert local.get("/", follow_redirects=True).url.path == "/setup"
    created = post_setup(local, "root-admin")
    again = post_setup(local, "second")

    assert created.status_code == 303 and SESSION_COOKIE in local.cookies
    assert local.get("/api/v1/me").json()["username"] == "root-admin"
    assert again.status_code == 404
    assert local.get("/setup", follow_redirects=False).headers["location"] == "/login"


def test_setup_form_names_the_bad_field(make_client) -> None:
    local = setup_client(make_client)
    data = {
        "name": "a",
        "password": PASSWORD,
        "password_again": "different!!",
        "setup_code": SETUP_CODE,
        "csrf_token": form_token(local, "/setup"),
    }
    response = local.post("/setup", data=data)
    assert response.status_code == 422
    assert 'data-field="password_again"' in response.text


def test_setup_needs_the_setup_code_and_says_where_to_find_it(make_client) -> None:
    local = setup_client(make_client)

    page = local.get("/setup")
    missing = post_setup(local, "no-code", code="")
    wrong = post_setup(local, "wrong-code", code=SETUP_CODE + "x")

    assert 'name="setup_code"' in page.text and "printed by virtdeck serve" in page.text
    for refused in (missing, wrong):
        assert refused.status_code == 403
        assert 'data-field="setup_code"' in refused.text
        assert "wrong setup code" in refused.text
    assert local.get("/setup", follow_redirects=False).status_code == 200  # still no admin
    assert post_setup(local, "right-code").status_code == 303


def test_setup_from_another_site_is_refused_even_with_the_code(make_client) -> None:
    local = setup_client(make_client)

    forged = post_setup(local, "evil-admin", headers={"Origin": "http://evil.example"})
    same_site = post_setup(local, "good-admin", headers={"Origin": "http://localhost"})

    assert forged.status_code == 403
    assert "another site" in forged.text
    assert same_site.status_code == 303
    assert local.get("/api/v1/me").json()["username"] == "good-admin"


def test_login_from_another_site_is_refused(make_client, database_url: str) -> None:
    make_user(database_url, "mallory-target", "viewer")
    browser = make_client(role=None)
    data = {"name": "mallory-target", "password": PASSWORD, "csrf_token": form_token(browser)}

    forged = browser.post(
        "/login", data=data, headers={"Origin": "http://evil.example"}, follow_redirects=False
    )

    assert forged.status_code == 403
    assert "another site" in forged.text
    assert SESSION_COOKIE not in browser.cookies


def test_login_without_the_form_token_is_refused_with_a_plain_message(
    make_client, database_url: str
) -> None:
    make_user(database_url, "tokenless", "viewer")
    browser = make_client(role=None)
    data = {"name": "tokenless", "password": PASSWORD}

    no_token = browser.post("/login", data=data, follow_redirects=False)
    wrong = browser.post(
        "/login", data={**data, "csrf_token": form_token(browser) + "x"}, follow_redirects=False
    )

    for refused in (no_token, wrong):
        assert refused.status_code == 403
        assert "reload the page" in refused.text
        assert SESSION_COOKIE not in browser.cookies
    assert post_login(browser, "tokenless").status_code == 303


def test_changing_your_own_password_keeps_this_session_under_a_new_cookie_and_ends_the_rest(
    make_client, database_url: str
) -> None:
    token = make_user(database_url, "pat", "admin")
    here = make_client(role=None)
    there = make_client(role=None)
    csrf = login(here, "pat")
    login(there, "pat")
    old_secret = here.cookies[SESSION_COOKIE]
    me = here.get("/api/v1/me").json()

    changed = here.patch(
        f"/api/v1/users/{me['user_id']}",
        json={"password": "a brand new password"},
        headers={CSRF_HEADER: csrf},
    )
    with_token = TestClient(here.app, headers={"Authorization": f"Bearer {token}"})
    stale = TestClient(here.app, cookies={SESSION_COOKIE: old_secret})

    assert changed.status_code == 200
    assert here.cookies[SESSION_COOKIE] != old_secret
    assert here.get("/api/v1/me").status_code == 200
    assert stale.get("/api/v1/me").status_code == 401
    assert there.get("/api/v1/me").status_code == 401
    assert with_token.get("/api/v1/me").status_code == 401
    assert post_login(make_client(role=None), "pat", "a brand new password").status_code == 303


def test_a_role_change_takes_effect_on_the_next_request(
    client: TestClient, make_client, database_url: str
) -> None:
    browser, csrf = cookie_client(make_client, database_url, role="viewer")
    user_id = browser.get("/api/v1/me").json()["user_id"]
    body = {"name": "gamma", "uri": node_uri("node-alpha.xml")}

    as_viewer = browser.post("/api/v1/hosts", json=body, headers={CSRF_HEADER: csrf})
    client.patch(f"/api/v1/users/{user_id}", json={"role": "admin"})
    as_admin = browser.post("/api/v1/hosts", json=body, headers={CSRF_HEADER: csrf})
    client.patch(f"/api/v1/users/{user_id}", json={"role": "viewer"})
    demoted = browser.delete(f"/api/v1/hosts/{as_admin.json()['id']}", headers={CSRF_HEADER: csrf})

    assert as_viewer.status_code == 403
    assert as_admin.status_code == 201
    assert demoted.status_code == 403
    assert browser.get("/api/v1/me").json()["role"] == "viewer"


def test_re_enabling_a_user_brings_back_neither_their_sessions_nor_their_tokens(
    client: TestClient, make_client, database_url: str
) -> None:
    token = make_user(database_url, "quinn", "viewer")
    browser = make_client(role=None)
    login(browser, "quinn")
    user_id = browser.get("/api/v1/me").json()["user_id"]
    with_token = TestClient(client.app, headers={"Authorization": f"Bearer {token}"})

    client.patch(f"/api/v1/users/{user_id}", json={"disabled": True})
    client.patch(f"/api/v1/users/{user_id}", json={"disabled": False})

    assert browser.get("/api/v1/me").status_code == 401
    assert with_token.get("/api/v1/me").status_code == 401
    assert post_login(make_client(role=None), "quinn").status_code == 303


def test_two_setups_at_once_make_one_admin_on_each_database(database_url: str) -> None:
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    start = threading.Barrier(2)

    def setup(name: str) -> str:
        start.wait()
        with sessions() as session:
            try:
                create_first_admin(session, name=name, password=PASSWORD)
                session.commit()
            except NotFound as exc:
                return exc.message
            return "created"

    with ThreadPoolExecutor(2) as pool:
        results = sorted(pool.map(setup, ["first-a", "first-b"]))
    with sessions() as session:
        admins = session.scalars(select(User.name)).all()
    engine.dispose()

    assert results == ["created", ALREADY_DONE]
    assert len(admins) == 1


def test_parallel_wrong_logins_get_only_the_allowed_checks_on_each_database(
    database_url: str,
) -> None:
    make_user(database_url, "target", "admin")
    settings = Settings(database_url=database_url, login_throttle_after=3, login_throttle_base=300)
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    tries = 12
    start = threading.Barrier(tries)

    def guess(address: str, password: str) -> str:
        with sessions() as session:
            try:
                authenticate(
                    session, name="target", password=password, address=address, settings=settings
                )
                session.commit()
            except VirtdeckError as exc:
                return type(exc).__name__
            return "logged in"

    def stranger(_n: int) -> str:
        start.wait()
        return guess("203.0.113.7", "a wrong guess")

    with ThreadPoolExecutor(tries) as pool:
        results = list(pool.map(stranger, range(tries)))
    from_elsewhere = guess("198.51.100.9", PASSWORD)
    engine.dispose()

    # Attempts at the same moment each see the others: none may be checked beyond the three.
    assert results.count("LoginFailed") <= 3, results
    assert results.count("LoginThrottled") == tries - results.count("LoginFailed"), results
    assert from_elsewhere == "logged in"
