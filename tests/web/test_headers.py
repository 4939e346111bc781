"""Every response carries the security headers (a CSP with no inline script, no framing,
nosniff, a referrer policy; HSTS only over TLS, also behind a trusted proxy), no page holds inline
script, handlers or styles, and /docs works offline from vendored assets."""

import re
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.htmx import HTMX
from tests.serve import running_server

WEB_1 = "a1000000-0000-4000-8000-000000000001"
INLINE = [
    re.compile(r"<script(?![^>]*\ssrc=)[^>]*>"),  # a script element without src
    re.compile(r"<[^>]+\son[a-z]+\s*=", re.I),  # onclick= and the like
    re.compile(r"<[^>]+\shx-on"),  # htmx's hx-on: runs code through Function()
    re.compile(r"<[^>]+\sstyle\s*="),  # style attributes
    re.compile(r"<style"),
]


def pages(two_hosts) -> list[str]:
    alpha, _ = two_hosts
    host = alpha["id"]
    return [
        "/",
        f"/hosts/{host}",
        f"/hosts/{host}/overcommit",
        f"/guests/{WEB_1}",
        f"/guests/{WEB_1}/delete",
        "/guests/new",
        "/backups",
        "/users",
        "/tokens",
        "/audit",
        "/login",
        "/docs",
    ]


def assert_security_headers(response: httpx.Response, *, tls: bool) -> None:
    headers = response.headers
    policy = dict(
        [*part.strip().split(" ", 1), ""][:2]
        for part in headers["content-security-policy"].split(";")
    )
    where = f"{response.request.method} {response.request.url.path}"
    assert policy["script-src"] == "'self'", where
    assert policy["style-src"] == "'self'", where
    assert policy["default-src"] == "'self'", where
    assert policy["frame-ancestors"] == "'none'", where
    assert policy["object-src"] == "'none'", where
    assert "unsafe" not in headers["content-security-policy"], where
    assert headers["x-frame-options"] == "DENY", where
    assert headers["x-content-type-options"] == "nosniff", where
    assert headers["referrer-policy"] == "same-origin", where
    if tls:
        assert headers["strict-transport-security"] == "max-age=31536000", where
    else:
        assert "strict-transport-security" not in headers, where


def test_every_page_has_the_headers_and_no_inline_script_or_style(
    client: TestClient, two_hosts
) -> None:
    for path in pages(two_hosts):
        response = client.get(path)
        assert response.status_code == 200, path
        assert_security_headers(response, tls=False)
        inline = [m.group(0) for pattern in INLINE for m in pattern.finditer(response.text)]
        assert inline == [], path


def test_api_errors_static_files_and_fragments_have_the_headers_too(
    client: TestClient, make_client, two_hosts
) -> None:
    anonymous = make_client(role=None)
    responses = [
        client.get("/api/v1/hosts"),
        client.get("/static/app.js"),
        client.get("/healthz"),
        client.get("/no-such-page"),
        client.get(f"/guests/{WEB_1}/backups", headers=HTMX),
        anonymous.get("/api/v1/hosts"),
        anonymous.post("/api/v1/hosts", content=b"x" * (1024 * 1024 + 1)),
    ]

    for response in responses:
        assert_security_headers(response, tls=False)
    assert [r.status_code for r in responses] == [200, 200, 200, 404, 200, 401, 413]


def test_the_setup_page_has_them_and_hsts_is_sent_over_tls_only(make_client) -> None:
    plain = make_client(role=None)  # no users yet: the setup page shows (at a loopback name)
    plain.base_url = httpx.URL("http://localhost")
    tls = make_client(role=None)
    tls.base_url = httpx.URL("https://testserver")

    setup = plain.get("/setup")

    assert setup.status_code == 200
    assert [m.group(0) for pattern in INLINE for m in pattern.finditer(setup.text)] == []
    assert_security_headers(setup, tls=False)
    assert_security_headers(tls.get("/login"), tls=True)


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted-proxy", "other-proxy"])
def test_hsts_behind_a_proxy_follows_its_forwarded_proto_only_if_trusted(
    tmp_path: Path, trusted: bool
) -> None:
    env = {
        "VIRTDECK_DEFAULT_HOST_URI": "",
        "VIRTDECK_FORWARDED_ALLOW_IPS": "127.0.0.1" if trusted else "192.0.2.1",
    }
    with running_server(tmp_path, env, admin=None) as server:
        forwarded = httpx.get(f"{server.url}/login", headers={"X-Forwarded-Proto": "https"})
        direct = httpx.get(f"{server.url}/login")

    assert_security_headers(forwarded, tls=trusted)
    assert_security_headers(direct, tls=False)


def same_origin_assets(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


def test_docs_load_swagger_ui_from_this_server_only(client: TestClient) -> None:
    page = client.get("/docs")
    assets = same_origin_assets(page.text)
    fetched = {url: client.get(url) for url in assets}

    assert page.status_code == 200
    assert "swagger-ui" in page.text
    assert assets and all(url.startswith("/") and not url.startswith("//") for url in assets)
    assert {url: r.status_code for url, r in fetched.items()} == {url: 200 for url in assets}
    kinds = sorted(r.headers["content-type"].split(";")[0] for r in fetched.values())
    assert kinds == ["text/css", "text/javascript", "text/javascript"]
    assert "SwaggerUIBundle" in "".join(r.text for r in fetched.values())
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/redoc").status_code == 404
