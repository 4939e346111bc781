"""Browser fixtures: a module's `server` is the host alpha's unless the module provides its own."""

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page

from tests.browser import admin_tab, server_with_host
from tests.conftest import node_uri
from tests.serve import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`virtdeck serve` with an admin and the host alpha (8 CPUs, 16 GiB, 3 guests), synced."""
    with server_with_host(
        tmp_path_factory.mktemp("serve"), "alpha", node_uri("node-alpha.xml")
    ) as running:
        yield running


@pytest.fixture
def page(server: Server) -> Iterator[Page]:
    """The admin's tab on the module's server; JavaScript errors fail the test."""
    with admin_tab(server) as tab:
        yield tab
