"""Against the real `virtdeck serve`: a guest's own activity topic reaches open /events streams
when it is created or deleted, and a stream whose token is revoked ends within the login check's
interval even while topics keep arriving."""

import queue
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from app.web.live import CHECK_SECONDS
from tests.conftest import node_uri
from tests.events import event_stream, read_events, wait_for
from tests.serve import Server, running_server, virtdeck

QUIET = {"VIRTDECK_DEFAULT_HOST_URI": ""}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("streams"), QUIET) as running:
        yield running


def test_creating_and_deleting_a_guest_publish_its_activity_topic(server: Server) -> None:
    host_id = server.add_host(f"alpha-{uuid.uuid4().hex[:6]}", node_uri("node-alpha.xml"))
    body = {"host_id": host_id, "name": f"live-{uuid.uuid4().hex[:6]}", "vcpus": 1}
    with event_stream(server) as events:
        created = server.api("POST", "/guests", json={**body, "memory_mib": 64})
        assert created.status_code == 201, created.text
        guest = created.json()["uuid"]
        wait_for(events, f"activity-{guest}", 5)

        deleted = server.api("DELETE", f"/guests/{guest}")
        assert deleted.status_code == 200, deleted.text
        wait_for(events, f"activity-{guest}", 5)
    assert server.api("DELETE", f"/hosts/{host_id}").status_code == 204


def test_a_revoked_token_ends_its_stream_while_topics_keep_arriving(server: Server) -> None:
    name = f"stream-{uuid.uuid4().hex[:6]}"
    secret = virtdeck("create-token", "admin", "--name", name, env=server.env)
    token_id = next(t["id"] for t in server.api("GET", "/tokens").json() if t["name"] == name)
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    threading.Thread(
        target=read_events, args=(server.url, secret, events, stop), daemon=True
    ).start()
    wait_for(events, "status 200", 10)
    busy = threading.Event()

    def keep_busy() -> None:
        """A refused request a quarter second: each writes an audit row, an `activity` topic."""
        while not busy.is_set():
            server.api("POST", "/hosts", json={"name": "busy", "uri": "xen:///system"})
            time.sleep(0.25)

    threading.Thread(target=keep_busy, daemon=True).start()
    try:
        wait_for(events, "activity", 5)
        assert server.api("DELETE", f"/tokens/{token_id}").status_code == 204
        revoked_at = time.monotonic()

        ended_at = wait_for(events, "ended", CHECK_SECONDS + 3)
    finally:
        busy.set()
        stop.set()
    assert ended_at - revoked_at <= CHECK_SECONDS + 3
