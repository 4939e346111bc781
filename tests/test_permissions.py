"""Every route declares a permission, and each role gets exactly what its permission allows.

The table is the app's own route list: a new route without a declared permission fails here.
"""

import re
import uuid
from collections.abc import Iterator

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from starlette.routing import Mount

from app.db import make_engine, make_session_factory, transaction
from app.deps import CSRF_HEADER, SESSION_COOKIE, UNGUARDED_PATHS, Needs
from app.main import MACHINE_PATHS
from app.models import User
from app.services.auth import Permission, create_token, start_session
from app.services.users import create_user
from app.web import live
from tests.conftest import PASSWORD, websocket_closed

ROLES = ("viewer", "operator", "admin")
RANK = {None: -1, "viewer": 0, "operator": 1, "admin": 2}
LOWEST = {Permission.VIEW: 0, Permission.OPERATE: 1, Permission.ADMIN: 2}
PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")
PUBLIC, VIEW, OPERATE, ADMIN = (
    Permission.PUBLIC, Permission.VIEW, Permission.OPERATE, Permission.ADMIN,
)  # fmt: skip
# What each route must require. A route missing here, or declaring something else, fails.
EXPECTED = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): VIEW,
    ("GET", "/events"): VIEW,
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("GET", "/setup"): PUBLIC,
    ("POST", "/setup"): PUBLIC,
    ("POST", "/logout"): VIEW,
    ("GET", "/"): VIEW,
    ("GET", "/hosts/{host_id}"): VIEW,
    ("GET", "/guests"): VIEW,
    ("GET", "/guests/{uuid}"): VIEW,
    ("GET", "/guests/{uuid}/console"): VIEW,
    ("WS", "/guests/{uuid}/console/{kind}/ws"): OPERATE,
    ("POST", "/api/v1/guests/{uuid}/console/tickets"): OPERATE,
    ("GET", "/api/v1/guests/{uuid}/screenshot"): VIEW,
    ("GET", "/api/v1/guests/{uuid}/settings"): VIEW,
    ("PATCH", "/api/v1/guests/{uuid}/settings"): OPERATE,
    ("GET", "/guests/{uuid}/edit"): OPERATE,
    ("POST", "/api/v1/guests/{uuid}/rename"): OPERATE,
    ("POST", "/guests/{uuid}/rename"): OPERATE,
    ("POST", "/guests/{uuid}/edit"): OPERATE,
    ("GET", "/api/v1/guests/{uuid}/hardware"): VIEW,
    ("POST", "/api/v1/guests/{uuid}/disks"): OPERATE,
    ("DELETE", "/api/v1/guests/{uuid}/disks/{target}"): OPERATE,
    ("POST", "/api/v1/guests/{uuid}/disks/{target}/grow"): OPERATE,
    ("POST", "/api/v1/guests/{uuid}/nics"): OPERATE,
    ("DELETE", "/api/v1/guests/{uuid}/nics/{mac}"): OPERATE,
    ("PUT", "/api/v1/guests/{uuid}/media/{target}"): OPERATE,
    ("DELETE", "/api/v1/guests/{uuid}/media/{target}"): OPERATE,
    ("GET", "/guests/{uuid}/hardware"): OPERATE,
    ("POST", "/guests/{uuid}/disks"): OPERATE,
    ("POST", "/guests/{uuid}/disks/{target}/detach"): OPERATE,
    ("POST", "/guests/{uuid}/disks/{target}/grow"): OPERATE,
    ("POST", "/guests/{uuid}/nics"): OPERATE,
    ("POST", "/guests/{uuid}/nics/{mac}/detach"): OPERATE,
    ("POST", "/guests/{uuid}/media/{target}"): OPERATE,
    ("POST", "/guests/{uuid}/media/{target}/eject"): OPERATE,
    ("POST", "/api/v1/guests/{uuid}/clone"): OPERATE,
    ("GET", "/guests/{uuid}/clone"): OPERATE,
    ("POST", "/guests/{uuid}/clone"): OPERATE,
    ("POST", "/hosts"): ADMIN,
    ("POST", "/hosts/{host_id}/delete"): ADMIN,
    ("GET", "/api/v1/hosts"): VIEW,
    ("GET", "/api/v1/hosts/{host_id}"): VIEW,
    ("POST", "/api/v1/hosts"): ADMIN,
    ("DELETE", "/api/v1/hosts/{host_id}"): ADMIN,
    ("PATCH", "/api/v1/hosts/{host_id}"): ADMIN,
    ("POST", "/hosts/{host_id}/console-address"): ADMIN,
    ("POST", "/api/v1/hosts/{host_id}/refresh"): OPERATE,
    ("GET", "/api/v1/guests"): VIEW,
    ("GET", "/api/v1/guests/{uuid}"): VIEW,
    ("DELETE", "/api/v1/guests/{uuid}"): ADMIN,
    ("GET", "/api/v1/guests/{uuid}/disks-owned"): ADMIN,
    ("GET", "/guests/{uuid}/delete"): ADMIN,
    ("POST", "/guests/{uuid}/delete"): ADMIN,
    ("POST", "/api/v1/guests/{uuid}/actions/{action}"): OPERATE,
    ("POST", "/guests/{uuid}/actions/{action}"): OPERATE,
    ("PUT", "/api/v1/guests/{uuid}/tags"): OPERATE,
    ("POST", "/guests/{uuid}/tags"): OPERATE,
    ("POST", "/api/v1/guests/bulk"): OPERATE,
    ("POST", "/guests/bulk"): OPERATE,
    ("POST", "/api/v1/guests"): OPERATE,
    ("GET", "/api/v1/jobs/{job_id}"): VIEW,
    ("GET", "/api/v1/hosts/{host_id}/pools"): VIEW,
    ("GET", "/api/v1/hosts/{host_id}/pools/{pool}/volumes"): VIEW,
    ("GET", "/api/v1/hosts/{host_id}/networks"): VIEW,
    ("POST", "/api/v1/hosts/{host_id}/pools"): ADMIN,
    ("GET", "/api/v1/guests/{uuid}/usage"): VIEW,
    ("GET", "/api/v1/guests/{uuid}/addresses"): VIEW,
    ("POST", "/api/v1/hosts/{host_id}/pools/{pool}/{switch}"): ADMIN,
    ("POST", "/api/v1/hosts/{host_id}/networks/{network}/{switch}"): ADMIN,
    ("PUT", "/api/v1/hosts/{host_id}/pools/{pool}/volumes/{name}"): OPERATE,
    ("GET", "/hosts/{host_id}/upload"): OPERATE,
    ("GET", "/hosts/{host_id}/storage"): VIEW,
    ("GET", "/hosts/{host_id}/usage"): VIEW,
    ("GET", "/guests/{uuid}/usage"): VIEW,
    ("GET", "/guests/{uuid}/addresses"): VIEW,
    ("GET", "/hosts/{host_id}/pools/{pool}/volumes"): VIEW,
    ("POST", "/hosts/{host_id}/pools"): ADMIN,
    ("POST", "/hosts/{host_id}/pools/{pool}/{switch}"): ADMIN,
    ("POST", "/hosts/{host_id}/networks/{network}/{switch}"): ADMIN,
    ("GET", "/guests/new"): OPERATE,
    ("GET", "/guests/new/choices"): VIEW,
    ("POST", "/guests/new"): OPERATE,
    ("GET", "/guests/new/profile"): OPERATE,
    ("POST", "/guests/new/profile"): OPERATE,
    ("GET", "/api/v1/profiles"): VIEW,
    ("GET", "/api/v1/profiles/{profile_id}"): VIEW,
    ("POST", "/api/v1/profiles"): OPERATE,
    ("PUT", "/api/v1/profiles/{profile_id}"): OPERATE,
    ("DELETE", "/api/v1/profiles/{profile_id}"): OPERATE,
    ("POST", "/api/v1/profiles/{profile_id}/guests"): OPERATE,
    ("GET", "/jobs/{job_id}"): VIEW,
    ("GET", "/api/v1/me"): VIEW,
    ("GET", "/api/v1/tokens"): VIEW,
    ("POST", "/api/v1/tokens"): VIEW,
    ("DELETE", "/api/v1/tokens/{token_id}"): VIEW,
    ("GET", "/api/v1/users"): ADMIN,
    ("POST", "/api/v1/users"): ADMIN,
    ("PATCH", "/api/v1/users/{user_id}"): ADMIN,
    ("DELETE", "/api/v1/users/{user_id}"): ADMIN,
    ("GET", "/api/v1/audit"): ADMIN,
    ("GET", "/tokens"): VIEW,
    ("POST", "/tokens"): VIEW,
    ("POST", "/tokens/{token_id}/revoke"): VIEW,
    ("GET", "/users"): ADMIN,
    ("POST", "/users"): ADMIN,
    ("POST", "/users/{user_id}"): ADMIN,
    ("POST", "/users/{user_id}/delete"): ADMIN,
    ("GET", "/audit"): ADMIN,
    ("GET", "/api/v1/hosts/{host_id}/overcommit"): VIEW,
    ("GET", "/api/v1/hosts/{host_id}/overcommit/samples"): VIEW,
    ("GET", "/api/v1/overcommit"): VIEW,
    ("GET", "/api/v1/policy"): VIEW,
    ("PUT", "/api/v1/policy"): ADMIN,
    ("PUT", "/api/v1/hosts/{host_id}/policy"): ADMIN,
    ("GET", "/hosts/{host_id}/overcommit"): VIEW,
    ("POST", "/overcommit/policy"): ADMIN,
    ("POST", "/hosts/{host_id}/overcommit/policy"): ADMIN,
    ("GET", "/api/v1/guests/{uuid}/snapshots"): VIEW,
    ("POST", "/api/v1/guests/{uuid}/snapshots"): OPERATE,
    ("POST", "/api/v1/guests/{uuid}/snapshots/{name}/revert"): OPERATE,
    ("DELETE", "/api/v1/guests/{uuid}/snapshots/{name}"): OPERATE,
    ("POST", "/guests/{uuid}/snapshots"): OPERATE,
    ("POST", "/guests/{uuid}/snapshots/{name}/revert"): OPERATE,
    ("POST", "/guests/{uuid}/snapshots/{name}/delete"): OPERATE,
    ("GET", "/api/v1/backups"): VIEW,
    ("GET", "/api/v1/backups/overview"): VIEW,
    ("GET", "/api/v1/backups/{backup_id}"): VIEW,
    ("POST", "/api/v1/guests/{uuid}/backups"): OPERATE,
    ("POST", "/api/v1/backups/{backup_id}/verify"): OPERATE,
    ("POST", "/api/v1/backups/{backup_id}/restore"): OPERATE,
    ("DELETE", "/api/v1/backups/{backup_id}"): ADMIN,
    ("POST", "/api/v1/jobs/{job_id}/cancel"): OPERATE,
    ("GET", "/guests/{uuid}/backups"): VIEW,
    ("POST", "/guests/{uuid}/backups"): OPERATE,
    ("GET", "/guests/{uuid}/backups/jobs/{job_id}"): VIEW,
    ("POST", "/jobs/{job_id}/cancel"): OPERATE,
    ("GET", "/backups"): VIEW,
    ("GET", "/backups/overview"): VIEW,
    ("GET", "/backups/{backup_id}"): VIEW,
    ("GET", "/backups/{backup_id}/jobs/{job_id}"): VIEW,
    ("POST", "/backups/{backup_id}/verify"): OPERATE,
    ("POST", "/backups/{backup_id}/restore"): OPERATE,
    ("GET", "/backups/{backup_id}/restore/pools"): OPERATE,
    ("POST", "/backups/{backup_id}/delete"): ADMIN,
    ("GET", "/api/v1/backup-schedules"): VIEW,
    ("GET", "/api/v1/backup-schedules/preview"): VIEW,
    ("GET", "/api/v1/backup-schedules/{schedule_id}"): VIEW,
    ("POST", "/api/v1/backup-schedules"): ADMIN,
    ("PUT", "/api/v1/backup-schedules/{schedule_id}"): ADMIN,
    ("DELETE", "/api/v1/backup-schedules/{schedule_id}"): ADMIN,
    ("GET", "/backup-schedules"): VIEW,
    ("GET", "/backup-schedules/preview"): VIEW,
    ("GET", "/backup-schedules/{schedule_id}"): VIEW,
    ("POST", "/backup-schedules"): ADMIN,
    ("POST", "/backup-schedules/{schedule_id}"): ADMIN,
    ("POST", "/backup-schedules/{schedule_id}/delete"): ADMIN,
}


def declared_permission(dependant) -> Permission | None:
    """The Needs a route's dependency tree declares, if any."""
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, Needs):
            return dependency.call.permission
        found = declared_permission(dependency)
        if found is not None:
            return found
    return None


def app_routes(app) -> Iterator[tuple[str, str, Permission | None]]:
    """(method, path, permission) for every route of the app; None where undeclared."""
    for context in iter_route_contexts(app.routes):
        if isinstance(context.route, Mount) or context.path in UNGUARDED_PATHS:
            continue
        if context.methods is None:  # a WebSocket: it checks the login itself
            yield "WS", context.path_format, getattr(context.route.endpoint, "permission", None)
            continue
        permission = (
            declared_permission(context.dependant) if hasattr(context, "dependant") else None
        )
        for method in sorted(context.methods - {"HEAD"}):
            yield method, context.path_format, permission


def socket_refused(client: TestClient, url: str, headers: dict[str, str]) -> bool:
    """Whether a WebSocket (with no ticket, for a guest that does not exist) was refused for
    who asked, rather than for the guest or the missing ticket."""
    code, reason = websocket_closed(client, url, {**headers, "Origin": "http://testserver"})
    return code in (4401, 4403) and "ticket" not in reason


def concrete(path: str) -> str:
    """The path with ids that exist nowhere, so allowed requests change nothing."""
    examples = {
        "uuid": str(uuid.uuid4()), "action": "start", "switch": "stop", "kind": "vnc",
        "target": "vdz", "mac": "52:54:00:98:76:54",
    }  # fmt: skip
    return PARAM.sub(lambda m: examples.get(m.group(1), "987654"), path)


def refused(response, *, api: bool) -> bool:
    """Whether the permission layer turned the request away (not a later 404 or 422)."""
    if api:
        detail = response.json().get("detail") if response.status_code in (401, 403) else ""
        return isinstance(detail, str) and (
            detail.startswith("log in first") or detail.startswith("your role")
        )
    if response.status_code == 303:
        return response.headers["location"].startswith("/login?next=")
    return response.status_code == 403 and "does not allow this" in response.text


@pytest.fixture
def principals(client: TestClient, database_url: str) -> dict:
    """For each role: an API token, and a way to open a fresh cookie session."""
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    tokens, users = {}, {}
    with transaction(sessions) as session:
        for role in ROLES:
            user = create_user(session, name=f"matrix-{role}", password=PASSWORD, role=role)
            users[role] = user.id
            tokens[role] = create_token(session, user, name="matrix")[0]

    def cookie(role: str) -> tuple[str, str]:
        with transaction(sessions) as session:
            secret, login = start_session(session, session.get(User, users[role]))
            return secret, login.csrf_token

    yield {"token": tokens, "cookie": cookie}
    engine.dispose()


def test_every_route_declares_the_permission_the_table_expects(client: TestClient) -> None:
    declared = {(m, p): permission for m, p, permission in app_routes(client.app)}
    undeclared = [route for route, permission in declared.items() if permission is None]

    assert undeclared == []
    assert declared == EXPECTED


def test_each_role_gets_exactly_what_each_route_allows(
    client: TestClient, principals: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test client reads whole bodies: an allowed event stream must end at once.
    monkeypatch.setattr(live, "STREAM_SECONDS", 0.0)
    client.headers.pop("Authorization")
    checked = 0
    mistakes = []
    for method, path, permission in app_routes(client.app):
        api = path.startswith("/api/") or path in MACHINE_PATHS
        url = concrete(path)
        for role in (None, *ROLES):
            allowed = permission is Permission.PUBLIC or (
                role is not None and RANK[role] >= LOWEST[permission]
            )
            ways = ["anonymous"] if role is None else ["token", "cookie"]
            for way in ways:
                headers, cookies = {}, {}
                if way == "token":
                    headers["Authorization"] = f"Bearer {principals['token'][role]}"
                elif way == "cookie":
                    secret, csrf = principals["cookie"](role)
                    cookies[SESSION_COOKIE] = secret
                    headers[CSRF_HEADER] = csrf
                client.cookies.clear()
                for name, value in cookies.items():
                    client.cookies.set(name, value)
                checked += 1
                if method == "WS":
                    if socket_refused(client, url, headers) == allowed:
                        mistakes.append(f"WS {path} as {role or 'anonymous'} by {way}")
                    continue
                response = client.request(method, url, headers=headers, follow_redirects=False)
                if refused(response, api=api) == allowed:
                    mistakes.append(f"{method} {path} as {role or 'anonymous'} by {way}: "
                                    f"{response.status_code} (allowed={allowed})")  # fmt: skip
    assert mistakes == []
    assert checked > 100


def test_a_viewer_cannot_power_off_remove_or_add_anything(
    make_client, two_hosts: tuple[dict, dict]
) -> None:
    viewer = make_client(role="viewer")
    alpha, _ = two_hosts

    removal = viewer.delete(f"/api/v1/hosts/{alpha['id']}")
    addition = viewer.post("/api/v1/hosts", json={"name": "x", "uri": "test:///default"})
    refresh = viewer.post(f"/api/v1/hosts/{alpha['id']}/refresh")

    assert (removal.status_code, addition.status_code, refresh.status_code) == (403, 403, 403)
    assert removal.json()["detail"] == "your role (viewer) does not allow this; it needs admin"
    assert refresh.json()["detail"] == "your role (viewer) does not allow this; it needs operator"
    assert [h["name"] for h in viewer.get("/api/v1/hosts").json()] == ["alpha", "beta"]
