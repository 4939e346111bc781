"""Against the real `virtdeck serve`: the printed setup code, parallel setups and logins, and the
sessions, tokens and event streams that end when their user's credentials change."""

import queue
import re
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import form_token, post_login
from tests.events import read_events, wait_for
from tests.serve import ADMIN_PASSWORD, Server, running_server, virtdeck

QUIET = {"VIRTDECK_DEFAULT_HOST_URI": "", "VIRTDECK_SYNC_ENABLED": "false"}
PRINTED_CODE = re.compile(r"setup code: (\S+)")
USER_PASSWORD = "a user's long password"


def at_once(count: int, send: Callable[[int], httpx.Response]) -> list[httpx.Response]:
    """send(0) … send(count - 1), each from its own thread, released together."""
    start = threading.Barrier(count)

    def released(n: int) -> httpx.Response:
        start.wait()
        return send(n)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(released, range(count)))


def setup_form(client: httpx.Client, name: str, code: str) -> dict[str, str]:
    return {
        "name": name,
        "password": ADMIN_PASSWORD,
        "password_again": ADMIN_PASSWORD,
        "setup_code": code,
        "csrf_token": form_token(client, "/setup"),
    }


def test_serve_prints_the_setup_code_that_creates_the_first_admin(tmp_path: Path) -> None:
    with (
        running_server(tmp_path, QUIET, admin=None) as server,
        httpx.Client(base_url=server.url) as browser,
    ):
        printed = PRINTED_CODE.search(server.log.read_text())
        assert printed, "virtdeck serve printed no setup code"
        without = browser.post("/setup", data=setup_form(browser, "ada", ""))

        created = browser.post(
            "/setup", data=setup_form(browser, "ada", printed.group(1)), follow_redirects=False
        )

        assert without.status_code == 403
        assert created.status_code == 303
        assert browser.get("/api/v1/me").json()["username"] == "ada"


def test_two_parallel_setups_make_exactly_one_admin(tmp_path: Path) -> None:
    code = uuid.uuid4().hex
    env = {**QUIET, "VIRTDECK_SETUP_CODE": code}
    names = [f"first-{n}" for n in range(6)]
    with running_server(tmp_path, env, admin=None) as server:
        browsers = [httpx.Client(base_url=server.url, timeout=60) for _ in names]
        forms = [setup_form(b, name, code) for b, name in zip(browsers, names, strict=True)]

        answers = at_once(
            len(names), lambda n: browsers[n].post("/setup", data=forms[n], follow_redirects=False)
        )

        statuses = [a.status_code for a in answers]
        assert statuses.count(303) == 1, statuses
        assert all(400 <= s < 500 for s in statuses if s != 303), statuses
        winner = names[statuses.index(303)]
        token = virtdeck("create-token", winner, "--name", "check", env=server.env)
        users = httpx.get(
            f"{server.url}/api/v1/users", headers={"Authorization": f"Bearer {token}"}
        ).json()
        assert [u["name"] for u in users] == [winner]
        for browser in browsers:
            browser.close()


def test_parallel_wrong_logins_are_checked_only_as_often_as_allowed_and_the_admin_gets_in(
    tmp_path: Path,
) -> None:
    allowed, tries = 3, 30
    env = {
        **QUIET,
        "VIRTDECK_LOGIN_THROTTLE_AFTER": str(allowed),
        "VIRTDECK_LOGIN_THROTTLE_ADDRESS_AFTER": "100",
        "VIRTDECK_LOGIN_THROTTLE_BASE": "300",
    }
    # The server believes X-Forwarded-For from 127.0.0.1 (settings.forwarded_allow_ips).
    stranger = {"X-Forwarded-For": "203.0.113.7"}
    with running_server(tmp_path, env) as server:
        browsers = [
            httpx.Client(base_url=server.url, headers=stranger, timeout=60) for _ in range(tries)
        ]
        forms = [
            {"name": "admin", "password": "a wrong guess", "csrf_token": form_token(b)}
            for b in browsers
        ]

        answers = at_once(tries, lambda n: browsers[n].post("/login", data=forms[n]))

        statuses = [a.status_code for a in answers]
        # Tries at the same moment each see the others: none is checked beyond the allowed.
        assert statuses.count(401) <= allowed, statuses
        assert statuses.count(429) == tries - statuses.count(401), statuses
        with httpx.Client(
            base_url=server.url, headers={"X-Forwarded-For": "198.51.100.9"}
        ) as admin:
            assert post_login(admin, "admin", ADMIN_PASSWORD).status_code == 303
        for browser in browsers:
            browser.close()


def user_with_access(server: Server) -> tuple[int, httpx.Client, str]:
    """A new viewer: their id, a browser logged in as them, and an API token of theirs."""
    name = f"vic-{uuid.uuid4().hex[:6]}"
    created = server.api(
        "POST", "/users", json={"name": name, "password": USER_PASSWORD, "role": "viewer"}
    )
    assert created.status_code == 201, created.text
    browser = httpx.Client(base_url=server.url)
    assert post_login(browser, name, USER_PASSWORD).status_code == 303
    token = virtdeck("create-token", name, "--name", "theirs", env=server.env)
    return created.json()["id"], browser, token


@pytest.mark.parametrize(
    "change", [{"disabled": True}, {"password": "a new long password"}], ids=["disable", "password"]
)
def test_a_credential_change_ends_the_users_sessions_tokens_and_event_streams(
    tmp_path: Path, change: dict
) -> None:
    with running_server(tmp_path, QUIET) as server:
        user_id, browser, token = user_with_access(server)
        by_cookie, by_token = queue.Queue(), queue.Queue()
        stop = threading.Event()
        readers = [
            threading.Thread(
                target=read_events,
                args=(server.url, None, by_cookie, stop),
                kwargs={"cookies": dict(browser.cookies)},
                daemon=True,
            ),
            threading.Thread(
                target=read_events, args=(server.url, token, by_token, stop), daemon=True
            ),
        ]
        for reader in readers:
            reader.start()
        wait_for(by_cookie, "status 200", 10)
        wait_for(by_token, "status 200", 10)
        try:
            changed = server.api("PATCH", f"/users/{user_id}", json=change)
            assert changed.status_code == 200, changed.text

            wait_for(by_cookie, "ended", 5)
            wait_for(by_token, "ended", 5)
            assert browser.get("/api/v1/me").status_code == 401
            me = httpx.get(f"{server.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 401
        finally:
            stop.set()
            browser.close()


def test_setup_refuses_a_host_header_that_is_not_a_loopback_name(tmp_path: Path) -> None:
    code = uuid.uuid4().hex
    with (
        running_server(tmp_path, {**QUIET, "VIRTDECK_SETUP_CODE": code}, admin=None) as server,
        httpx.Client(base_url=server.url) as browser,
    ):
        answers = []
        for host in ("evil.example:8000", "evil.example", "127.0.0.1.evil.example"):
            # DNS rebinding: the page's origin is the attacker's name, resolved to 127.0.0.1.
            forged = {"Host": host, "Origin": f"http://{host}"}
            form = setup_form(browser, "mallory", code)
            answers.append(browser.get("/setup", headers=forged))
            answers.append(
                browser.post("/setup", data=form, headers=forged, follow_redirects=False)
            )
        by_name = browser.get("/setup", headers={"Host": "localhost"})
        created = browser.post(
            "/setup", data=setup_form(browser, "ada", code), follow_redirects=False
        )

        assert [a.status_code for a in answers] == [403] * 6, answers[1].text
        assert all("loopback" in a.text and "Traceback" not in a.text for a in answers)
        assert by_name.status_code == 200
        assert created.status_code == 303
        assert browser.get("/api/v1/me").json()["username"] == "ada"
