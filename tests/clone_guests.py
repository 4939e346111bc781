"""The guest the clone tests clone on test:///default (shared by every connection of this
process): shut off, its qcow2 disk a volume of default-pool. What a test makes there is named
with the source's prefix and removed afterwards."""

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.virt.connection import HostConnection
from tests.conftest import add_host, post_guest
from tests.storage import DEFAULT_POOL, TEST_DEFAULT, remove_prefixed, unique_name


@dataclass(frozen=True)
class Source:
    """Our own connection to test:///default, the prefix of what the test makes, the guest."""

    lv: Any
    prefix: str
    guest: dict


def make_volume(lv: Any, name: str) -> None:
    """A 64 MiB qcow2 volume in default-pool."""
    xml = ET.Element("volume")
    ET.SubElement(xml, "name").text = name
    ET.SubElement(xml, "capacity", unit="MiB").text = "64"
    ET.SubElement(ET.SubElement(xml, "target"), "format", type="qcow2")
    lv.storagePoolLookupByName(DEFAULT_POOL).createXML(ET.tostring(xml, encoding="unicode"), 0)


@pytest.fixture
def clone_source(client: TestClient) -> Iterator[Source]:
    """test:///default registered (with a memory policy its own 8 GiB guest fits) and a
    shut-off guest <prefix>-src on it whose disk is the volume <prefix>-src.qcow2."""
    conn = HostConnection(TEST_DEFAULT, keepalive=(3, 3), on_close=lambda _reason: None)
    prefix = unique_name()
    try:
        host = add_host(client, "shared", TEST_DEFAULT)
        client.put(f"/api/v1/hosts/{host['id']}/policy", json={"memory": 4.0})
        make_volume(conn.lv, f"{prefix}-src.qcow2")
        disk = {"pool": DEFAULT_POOL, "volume": f"{prefix}-src.qcow2", "format": "qcow2"}
        created = post_guest(client, host, f"{prefix}-src", disk=disk)
        assert created.status_code == 201, created.text
        yield Source(conn.lv, prefix, created.json())
    finally:
        remove_prefixed(conn.lv, prefix)
        conn.close()
