"""Fuzzing the JSON API from its OpenAPI schema (schemathesis) against a real `virtdeck serve`
whose hosts are the machine's libvirtd (qemu:///system) and the test driver's test:///default.

Every answer must be below 500, and every 4xx a JSON body whose `detail` says what is wrong.

The fuzz must never change what it did not make on the real host: reads go anywhere, but a
request that could change something is steered away from the real host and its guests (to the
test-driver host, or to ids that do not exist), host URIs that would reach a real libvirtd are
swapped for test:///default, and the fuzz's own admin and token are never edited or deleted.
Bounded: MAX_EXAMPLES cases per operation, derandomized, so a run takes the same cases each
time (about a minute here).
"""

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from pydantic import TypeAdapter, ValidationError

from app.errors import Invalid
from app.virt.uri import validate_uri
from tests.serve import Server, running_server

pytestmark = pytest.mark.libvirtd

MAX_EXAMPLES = 50
SYSTEM_URI = "qemu:///system"
SAFE = {"GET", "HEAD", "OPTIONS"}
NOWHERE = 2_000_000_000  # an id that no row has


class Fuzzed:
    """The server under fuzz and what must stay untouched on it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        hosts = {h["uri"]: h["id"] for h in server.api("GET", "/hosts").json()}
        self.real_host = hosts[SYSTEM_URI]
        self.test_host = server.add_host("fuzz", "test:///default")
        synced = server.api("POST", f"/hosts/{self.real_host}/refresh", params={"wait": 15})
        assert synced.status_code == 200, synced.text
        listed = server.api("GET", "/guests", params={"host_id": self.real_host, "limit": 500})
        self.real_guests = {g["uuid"] for g in listed.json()["items"]}
        self.admin = server.api("GET", "/me").json()["user_id"]
        self.tokens = {t["id"] for t in server.api("GET", "/tokens").json()}

    def confine(self, case: schemathesis.Case) -> None:
        """Steer a case that could change something away from what the fuzz did not make.
        Values are compared as the server reads them ("01", " 1" and 1.0 are all 1)."""
        if case.method.upper() in SAFE:
            return
        path, body = case.path_parameters or {}, case.body
        if isinstance(body, dict):
            if as_id(body.get("host_id")) == self.real_host:
                body["host_id"] = self.test_host
            if isinstance(body.get("uri"), str) and reaches_libvirtd(body["uri"]):
                body["uri"] = "test:///default"
        host = as_id(path.get("host_id"))
        if host == self.real_host or (case.method.upper() == "DELETE" and host == self.test_host):
            path["host_id"] = NOWHERE
        if str(path.get("uuid", "")).strip().lower() in self.real_guests:
            path["uuid"] = str(uuid.uuid4())
        if as_id(path.get("user_id")) == self.admin:
            path["user_id"] = NOWHERE
        if as_id(path.get("token_id")) in self.tokens:
            path["token_id"] = NOWHERE


def as_id(value: object) -> int | None:
    """The integer the server makes of a parameter (pydantic's lax parsing), if any."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return TypeAdapter(int).validate_python(value if isinstance(value, str) else str(value))
    except ValidationError:
        return None


def reaches_libvirtd(uri: str) -> bool:
    """Whether virtdeck would accept the URI as one of a real (not test-driver) libvirtd."""
    try:
        return not validate_uri(uri).startswith("test")
    except Invalid:
        return False


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    """`virtdeck serve` with the real libvirtd as its default host, and test:///default."""
    env = {"VIRTDECK_DEFAULT_HOST_URI": SYSTEM_URI, "VIRTDECK_SYNC_INTERVAL": "300"}
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    with running_server(workdir, env) as server:
        yield Fuzzed(server)


@pytest.fixture(scope="module")
def api_schema(fuzzed: Fuzzed) -> schemathesis.BaseSchema:
    """The server's own OpenAPI schema: /api/v1 and /healthz, /readyz, /metrics."""
    return schemathesis.openapi.from_url(f"{fuzzed.server.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_request_gets_a_server_error_and_every_refusal_says_why(
    case: schemathesis.Case, fuzzed: Fuzzed
) -> None:
    fuzzed.confine(case)
    headers = {"Authorization": f"Bearer {fuzzed.server.token}"}
    response = case.call(headers=headers, timeout=30)

    where = f"{case.method} {case.formatted_path} -> {response.status_code}"
    assert response.status_code < 500, f"{where}: {response.text[:500]}"
    if 400 <= response.status_code < 500:
        content_type = response.headers.get("content-type", [""])[0]
        assert content_type.startswith("application/json"), f"{where}: {response.text[:500]}"
        detail = response.json().get("detail")
        assert isinstance(detail, str) and detail.strip(), f"{where}: {response.text[:500]}"
