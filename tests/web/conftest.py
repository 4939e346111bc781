"""Browser fixtures: each browser test module provides its own `server`."""

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page

from tests.browser import admin_tab
from tests.serve import Server


@pytest.fixture
def page(server: Server) -> Iterator[Page]:
    """The admin's tab on the module's server; JavaScript errors fail the test."""
    with admin_tab(server) as tab:
        yield tab
