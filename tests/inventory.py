"""The inventory sync driven directly in service tests: guests read from a node file, applied to a
host row of its own."""

import xml.etree.ElementTree as ET
from pathlib import Path

from app.db import transaction
from app.services.hosts import add_host
from app.services.inventory import apply_sync
from app.virt.domain_xml import parse_domain
from app.virt.types import GuestInfo
from tests.conftest import DATA


def guests_from(node_file: str) -> list[GuestInfo]:
    """GuestInfo for the domains of a node file, as the test driver reports them."""
    found = []
    for element in ET.parse(Path(DATA) / node_file).getroot().iter("domain"):
        runstate = element.findtext("{http://libvirt.org/schemas/domain/test/1.0}runstate")
        xml = ET.tostring(element, encoding="unicode")
        state = "shutoff" if runstate == "5" else "running"
        found.append(GuestInfo(parse_domain(xml), state, False, True, xml))
    return found


def sync(sessions, host_id: int, guests: list[GuestInfo]):
    """Apply one sync of these guests to the host, as the host's worker would."""
    with transaction(sessions) as session:
        return apply_sync(session, host_id, guests, sync_ms=1.0)


def new_host(sessions) -> int:
    """A host row named alpha; its id."""
    with transaction(sessions) as session:
        return add_host(session, name="alpha", uri="test:///default").id
