"""Identifiers in URLs are checked when the route is matched: a malformed one is a 404 before
anything is authenticated, recorded or published; live topics never carry a line break; what
anonymous refused requests write to the audit log is bounded."""

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from app.db import make_engine
from app.live import LiveBus
from tests.events import event_stream, wait_for
from tests.serve import Server, running_server

# An SSE frame smuggled into a guest UUID: each %0A is a line break once decoded.
ATTACK = "x%0A%0Aevent:%20injected%0Adata:%20pwned"
ATTACKS = [
    ("POST", f"/guests/{ATTACK}/delete"),
    ("POST", f"/guests/{ATTACK}/snapshots/a/revert"),
    ("POST", f"/api/v1/guests/{ATTACK}/actions/start"),
    ("DELETE", f"/api/v1/guests/{ATTACK}"),
    ("GET", f"/api/v1/guests/{ATTACK}"),
    ("POST", f"/hosts/{ATTACK}/delete"),
    ("GET", f"/api/v1/hosts/1/pools/{ATTACK}/volumes"),
    ("POST", "/api/v1/guests/a1000000-0000-4000-8000-000000000001/snapshots/x%0Ay/revert"),
    ("POST", "/api/v1/guests/a1000000-0000-4000-8000-000000000001/actions/x%0Ay"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        tmp_path_factory.mktemp("paths"), {"VIRTDECK_DEFAULT_HOST_URI": ""}
    ) as running:
        yield running


def test_a_line_break_in_a_guest_uuid_is_a_404_that_is_neither_recorded_nor_published(
    server: Server,
) -> None:
    with event_stream(server) as events:
        answers = [
            httpx.request(method, f"{server.url}{path}", follow_redirects=False)
            for method, path in ATTACKS
        ]
        # Something real afterwards: once its event is here, the attacks' would be too.
        marker = server.api("POST", "/hosts", json={"name": "marker", "uri": "xen:///system"})
        assert marker.status_code == 422
        wait_for(events, "activity", 10)
        arrived = []
        while not events.empty():
            arrived.append(events.get()[1])

    audit = server.api("GET", "/audit", params={"limit": 500}).json()["items"]
    assert not [name for name in arrived if "injected" in name or "pwned" in name]
    assert not [e for e in audit if "injected" in str(e) or "\n" in str(e)]
    assert [(a.request.url.path, a.status_code) for a in answers] == [
        (a.request.url.path, 404) for a in answers
    ]
    assert [a.headers["content-type"] for a in answers[2:5]] == ["application/json"] * 3
    assert answers[2].json() == {"detail": "not found", "field": None}


def test_a_topic_with_a_line_break_never_reaches_a_subscriber(database_url: str) -> None:
    engine = make_engine(database_url)
    bus = LiveBus(engine)
    bus.start()
    assert bus.listening.wait(10)

    async def publish_and_listen() -> set[str]:
        subscriber = bus.subscribe(asyncio.get_running_loop())
        await asyncio.to_thread(
            bus.publish,
            {"guest-x\n\nevent: injected", "host-1\rdata: pwned", "job-2\r\n", "hosts"},
        )
        topics = await subscriber.next(5)
        await asyncio.sleep(0.3)  # anything later would also have come by now
        return topics | await subscriber.next(0.1)

    try:
        topics = asyncio.run(publish_and_listen())
    finally:
        bus.stop()
        engine.dispose()
    assert topics == {"hosts"}


@pytest.mark.parametrize(
    ("path", "send", "status", "result"),
    [
        ("/api/v1/hosts", {"json": {"name": "h", "uri": "test:///default"}}, 401, "denied"),
        # a form that fails validation (a 65-character name) on a public route
        ("/login", {"data": {"name": "n" * 65, "password": "x"}}, 422, "failed"),
    ],
    ids=["refused", "invalid-form"],
)
def test_anonymous_requests_are_recorded_up_to_a_budget_a_minute(
    make_client, path: str, send: dict, status: int, result: str
) -> None:
    admin = make_client()
    anonymous = make_client(role=None, audit_anonymous_per_minute=3)

    answers = [anonymous.post(path, follow_redirects=False, **send) for _ in range(8)]

    ids = {a.headers["X-Request-ID"] for a in answers}
    items = admin.get("/api/v1/audit", params={"limit": 500}).json()["items"]
    recorded = [e for e in items if e["request_id"] in ids]
    assert {a.status_code for a in answers} == {status}
    assert len(recorded) == 3
    assert {(e["result"], e["auth"]) for e in recorded} == {(result, "anonymous")}


def test_an_id_too_large_for_the_database_is_a_404(client: TestClient) -> None:
    answer = client.get("/api/v1/hosts/99999999999999999999")

    assert answer.status_code == 404
    assert answer.json() == {"detail": "not found", "field": None}


def test_unknown_pages_get_the_error_page(client: TestClient) -> None:
    answer = client.get("/no-such-page")

    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/html")
    assert "Error 404" in answer.text


def test_guest_uuids_in_capitals_find_the_guest(client: TestClient, two_hosts) -> None:
    uuid = "a1000000-0000-4000-8000-000000000001"

    answer = client.get(f"/api/v1/guests/{uuid.upper()}")

    assert answer.status_code == 200, answer.text
    assert answer.json()["uuid"] == uuid
