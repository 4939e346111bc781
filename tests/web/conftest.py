"""Browser fixtures: a module's `server` is the host alpha's unless the module provides its own."""

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page

from tests.browser import admin_tab, host_server
from tests.serve import Server

# `virtdeck serve` with an admin and the host alpha (8 CPUs, 16 GiB, 3 guests), synced.
server = host_server("alpha", "node-alpha.xml")


@pytest.fixture
def page(server: Server) -> Iterator[Page]:
    """The admin's tab on the module's server; JavaScript errors fail the test."""
    with admin_tab(server) as tab:
        yield tab
