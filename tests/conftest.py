"""Shared fixtures: migrated SQLite and PostgreSQL databases, apps on test-driver hosts."""

import re
import socket
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import delete
from starlette.websockets import WebSocketDisconnect

from app.config import Settings
from app.db import make_engine, make_session_factory, transaction
from app.main import create_app
from app.migrate import upgrade
from app.models import (
    Backup,
    BackupSchedule,
    Guest,
    Host,
    Job,
    LoginFailure,
    OvercommitPolicy,
    Profile,
    ScheduleRun,
    User,
)
from app.services import users
from app.services.auth import create_token
from app.services.users import create_user
from tests.databases import throwaway_postgresql
from tests.libvirtd import SYSTEM_URI, virsh
from tests.sshd import SshHost, sshd_for_libvirt
from tests.storage import remove_guest, remove_pool

DATA = Path(__file__).resolve().parent / "data"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


# Tests that share something machine-wide run one after another in one pytest-xdist worker
# (`make test` runs two): the real libvirtd (some restart or kill it) and the network namespaces
# with their own libvirtd and firewall rules, whose detection times are measured. One group, not
# two: run beside the real libvirtd's tests, the namespaces' hosts dropped off (every fault test
# failed; likely the firewall rules the system libvirtd sets up each time it starts).
ONE_AT_A_TIME = ("libvirtd", "netns")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the tests that share the machine in one xdist group."""
    for item in items:
        if any(item.get_closest_marker(marker) for marker in ONE_AT_A_TIME):
            item.add_marker(pytest.mark.xdist_group("machine"))


@pytest.hookimpl(tryfirst=True)  # a mark seen by the hooks that parametrize
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests on the machine (the real libvirtd, namespaces) run on SQLite unless they choose
    the database: what they prove is the hypervisor's side, and they run one at a time, so each
    counts in `make test`'s time; every route's database side is tested on both with the test
    driver."""
    definition = metafunc.definition
    machine = any(definition.get_closest_marker(m) for m in ONE_AT_A_TIME)
    chosen = any("database_url" in str(m.args[0]) for m in definition.iter_markers("parametrize"))
    if machine and "database_url" in metafunc.fixturenames and not chosen:
        definition.add_marker(pytest.mark.parametrize("database_url", ["sqlite"], indirect=True))


def _ours_on_libvirtd() -> set[str]:
    """The guests and pools on the real libvirtd that tests name (vdtest-...)."""
    listed = virsh("list", "--all", "--name", check=False).split()
    listed += virsh("pool-list", "--all", "--name", check=False).split()
    return {name for name in listed if name.startswith("vdtest-")}


@pytest.fixture(autouse=True)
def nothing_left_on_libvirtd(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test on the real libvirtd leaves none of its guests and pools behind: what it left is
    removed here and named in a warning (these tests run one at a time, so what is new is its)."""
    if request.node.get_closest_marker("libvirtd") is None:
        yield
        return
    before = _ours_on_libvirtd()
    yield
    left = _ours_on_libvirtd() - before
    for name in sorted(left):
        remove_guest(name)
        remove_pool(name)
    if left:
        warnings.warn(f"{request.node.nodeid} left {sorted(left)} on libvirtd", stacklevel=1)


@pytest.fixture(scope="session", autouse=True)
def quick_password_hashes() -> Iterator[None]:
    """Argon2id at its lowest cost in this process: every test makes its users anew, and at the
    library's recommended cost (0.3 s a hash on CI's cores) hashing was a third of the run.
    Hashing and verifying stay real; servers the tests start as processes keep the full cost."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(users, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
        yield


def node_uri(name: str) -> str:
    """The test-driver URI of a node file under tests/data."""
    return f"test://{DATA / name}"


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session, dropped at the end."""
    with throwaway_postgresql() as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite database file for this test session."""
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'virtdeck.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each database test runs on SQLite and on PostgreSQL; rows are removed afterwards."""
    url = request.getfixturevalue(f"{request.param}_url")
    yield url
    clear_rows(url)


def clear_rows(url: str) -> None:
    """Remove what a test stored (audit rows stay: the table is append-only)."""
    engine = make_engine(url)
    with transaction(make_session_factory(engine)) as session:
        # Sessions and tokens go with their users, overcommit samples with their hosts.
        for model in (
            ScheduleRun, BackupSchedule, Backup, Job, Profile, Guest, Host, LoginFailure, User,
            OvercommitPolicy,
        ):  # fmt: skip
            session.execute(delete(model))
    engine.dispose()


@pytest.fixture
def sessions(database_url: str):
    """A session factory on the test database."""
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


PASSWORD = "correct horse battery"


def make_user(database_url: str, name: str, role: str) -> str:
    """Create a user with PASSWORD and return a new API token of theirs."""
    engine = make_engine(database_url)
    with transaction(make_session_factory(engine)) as session:
        user = create_user(session, name=name, password=PASSWORD, role=role)
        secret, _token = create_token(session, user, name=f"{name}-tests")
    engine.dispose()
    return secret


@pytest.fixture
def make_client(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., TestClient]]:
    """Start apps (lifespan and sync workers included) on the test database.

    With `role`, the client sends an API token of a new user with that role.
    """
    clients: list[TestClient] = []

    def start(*, role: str | None = "admin", **overrides) -> TestClient:
        defaults = {
            "default_host_uri": "",
            "sync_interval": 60,
            "reconnect_min": 0.2,
            "backup_dir": str(tmp_path_factory.mktemp("backups")),
            "test_driver_dir": str(DATA),
        }
        settings = Settings(database_url=database_url, **{**defaults, **overrides})
        client = TestClient(create_app(settings), client=("127.0.0.1", 40000))
        client.__enter__()
        clients.append(client)
        if role is not None:
            name = f"{role}-{uuid.uuid4().hex[:6]}"
            client.headers["Authorization"] = f"Bearer {make_user(database_url, name, role)}"
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    """An admin's API client on an app with no hosts yet."""
    return make_client()


FORM_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def form_token(client: httpx.Client, path: str = "/login") -> str:
    """The pre-session CSRF token the login or setup form carries (its cookie stays in the
    client); empty when the form has none."""
    match = FORM_TOKEN.search(client.get(path).text)
    return match.group(1) if match else ""


def post_login(client: httpx.Client, name: str, password: str = PASSWORD) -> httpx.Response:
    """Send the login form as a browser does: with the token of the form it was shown."""
    data = {"name": name, "password": password, "csrf_token": form_token(client)}
    return client.post("/login", data=data, follow_redirects=False)


def login(client: TestClient, name: str, password: str = PASSWORD) -> str:
    """Log in through the form; returns the session's CSRF token."""
    response = post_login(client, name, password)
    assert response.status_code == 303, response.text
    page = client.get("/")
    match = re.search(r'"X-CSRF-Token": "([^"]+)"', page.text)
    assert match, "no CSRF token on the page"
    return match.group(1)


def add_host(client: TestClient, name: str, uri: str) -> dict:
    """Register a host through the API and wait for its first sync."""
    response = client.post("/api/v1/hosts", json={"name": name, "uri": uri})
    assert response.status_code == 201, response.text
    host = response.json()
    sync = client.post(f"/api/v1/hosts/{host['id']}/refresh", params={"wait": 15})
    assert sync.status_code == 200, sync.text
    return client.get(f"/api/v1/hosts/{host['id']}").json()


def post_guest(
    client: httpx.Client, host: dict, name: str, *, memory_mib: int = 128, **fields
) -> httpx.Response:
    """Ask the API for a new guest of one vCPU on the host; the answer, whatever it is."""
    body = {"host_id": host["id"], "name": name, "vcpus": 1, "memory_mib": memory_mib, **fields}
    return client.post("/api/v1/guests", json=body)


@pytest.fixture
def two_hosts(client: TestClient) -> tuple[dict, dict]:
    """Hosts alpha (8 CPUs, 3 guests) and beta (4 CPUs, 4 guests), synced."""
    alpha = add_host(client, "alpha", node_uri("node-alpha.xml"))
    beta = add_host(client, "beta", node_uri("node-beta.xml"))
    return alpha, beta


@pytest.fixture
def local(client: TestClient) -> dict:
    """The machine's real libvirtd (qemu:///system) registered and synced."""
    return add_host(client, "local", SYSTEM_URI)


@pytest.fixture
def made() -> Iterator[list[str]]:
    """Names of the guests a test makes on the real libvirtd: destroyed and undefined after the
    test, before any pool the test asked for first (fixtures end in reverse order)."""
    names: list[str] = []
    yield names
    for name in names:
        remove_guest(name)


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A loopback TCP port that accepts connections and never answers: a hung host."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def websocket_closed(client: TestClient, url: str, headers: dict[str, str]) -> tuple[int, str]:
    """Open a WebSocket of the app and return the code and reason it was closed with."""
    with (
        client.websocket_connect(url, headers=headers) as socket,
        pytest.raises(WebSocketDisconnect) as ended,
    ):
        socket.receive_bytes()
    return ended.value.code, ended.value.reason


@pytest.fixture
def ssh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshHost]:
    """A private sshd on 127.0.0.1 through which this machine's libvirtd is a qemu+ssh host."""
    with sshd_for_libvirt(tmp_path_factory.mktemp("sshd")) as running:
        yield running
