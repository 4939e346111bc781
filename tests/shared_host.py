"""test:///default (shared by every connection of this process) registered, with our own
connection to it and a prefix for what the test makes there, removed afterwards."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.virt.connection import HostConnection
from tests.conftest import add_host, post_guest
from tests.storage import TEST_DEFAULT, remove_prefixed, unique_name


@dataclass(frozen=True)
class Shared:
    """Our own connection to test:///default, the prefix of what the test makes, the host."""

    lv: Any
    prefix: str
    host: dict

    def make_guests(self, client: TestClient, count: int) -> list[dict]:
        """count shut-off guests <prefix>-00, -01, ... (no disks), as the API answered."""
        made = [post_guest(client, self.host, f"{self.prefix}-{i:02}") for i in range(count)]
        assert [r.status_code for r in made] == [201] * count, made[0].text
        return [r.json() for r in made]


@pytest.fixture
def shared(client: TestClient) -> Iterator[Shared]:
    """test:///default registered, with a memory policy its own 8 GiB guest fits."""
    conn = HostConnection(TEST_DEFAULT, keepalive=(3, 3), on_close=lambda _reason: None)
    prefix = unique_name()
    try:
        host = add_host(client, "shared", TEST_DEFAULT)
        client.put(f"/api/v1/hosts/{host['id']}/policy", json={"memory": 4.0})
        yield Shared(conn.lv, prefix, host)
    finally:
        remove_prefixed(conn.lv, prefix)
        conn.close()
