"""Uploading an image from the host page in headless Chromium into a dir pool of the real
libvirtd: the SHA-256 the page shows is the file's and the volume's; a name taken is refused in
plain words; a cancelled upload leaves no volume; the form passes axe-core and fits a phone and a
desktop."""

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser import (
    accessibility_violations,
    admin_tab,
    admin_tabs,
    chromium,
    logged_in_tab,
    server_with_host,
)
from tests.libvirtd import IMAGES, SYSTEM_URI
from tests.serve import ADMIN_PASSWORD, Server
from tests.storage import pool_volumes, throwaway_pool

pytestmark = [pytest.mark.browser, pytest.mark.libvirtd]
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with server_with_host(tmp_path_factory.mktemp("serve"), "local", SYSTEM_URI) as running:
        yield running


@pytest.fixture
def pool() -> Iterator[str]:
    with throwaway_pool() as name:
        yield name


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 200 MiB file of random bytes."""
    path = tmp_path_factory.mktemp("image") / "image.img"
    with path.open("wb") as out:
        for _ in range(200 // 8):
            out.write(os.urandom(8 * MIB))
    return path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(8 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def open_form(tab: Page, server: Server, pool: str) -> None:
    """The host page with its upload form open and the pool chosen."""
    tab.goto(f"{server.url}/hosts/1")
    tab.get_by_text("Upload an ISO or disk image").click()
    tab.get_by_label("Pool").select_option(pool)


def test_a_200_mib_image_uploaded_from_the_page_shows_the_sha256_of_the_file_and_volume(
    server: Server, pool: str, image: Path
) -> None:
    with admin_tab(server) as tab:
        open_form(tab, server, pool)
        tab.get_by_label("File").set_input_files(image)
        expect(tab.get_by_label("Volume name")).to_have_value("image.img")
        tab.get_by_label("Format").select_option("raw")
        tab.get_by_role("button", name="Upload").click()
        result = tab.locator(".upload-result")
        expect(result).to_contain_text("SHA-256", timeout=60_000)
        shown = tab.locator(".upload-result code.sha256").inner_text()
        text = result.inner_text()
        # Again under the same name: refused from the request's headers, while the file is
        # still being sent, and the page says why.
        tab.get_by_role("button", name="Upload").click()
        expect(result).to_have_text(
            f"Not uploaded: name: pool '{pool}' already has a volume 'image.img'"
        )

    assert shown == sha256(image) == sha256(IMAGES / pool / "image.img")
    assert f"Uploaded image.img (200.0 MiB) into pool {pool}" in text
    assert pool_volumes(pool) == ["image.img"]


def test_a_cancelled_upload_leaves_no_volume(server: Server, pool: str, image: Path) -> None:
    with admin_tab(server) as tab:
        # Slow enough to be cancelled midway.
        network = tab.context.new_cdp_session(tab)
        network.send("Network.enable")
        network.send(
            "Network.emulateNetworkConditions",
            {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 4 * MIB},
        )
        open_form(tab, server, pool)
        tab.get_by_label("File").set_input_files(image)
        tab.get_by_role("button", name="Upload").click()
        expect(tab.locator(".upload-bytes")).to_contain_text(" MiB of 200.0 MiB")
        tab.wait_for_function(
            "() => document.querySelector('.upload-progress progress').value >= 2"
        )
        tab.get_by_role("button", name="Cancel").click()
        expect(tab.locator(".upload-result")).to_have_text("Upload cancelled; nothing was kept.")
        expect(tab.locator(".upload-progress")).to_be_hidden()

    deadline = time.monotonic() + 10
    while pool_volumes(pool) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pool_volumes(pool) == []
    rows = server.api("GET", "/audit", params={"action": "volume.upload"}).json()["items"]
    cut = [r["error"] for r in rows if r["target"].startswith(f"volume:{pool}/image.img ")]
    assert len(cut) == 1 and cut[0].startswith("size: the upload ended after ")


def test_the_upload_form_passes_axe_and_fits_a_phone_and_a_desktop(
    server: Server, pool: str
) -> None:
    widths = {}
    with chromium() as browser:
        checked = logged_in_tab(browser, server, "admin", ADMIN_PASSWORD, bypass_csp=True)
        open_form(checked, server, pool)
        found = accessibility_violations(checked)
        for width in (390, 1440):
            with admin_tabs(browser, server, 1, width=width) as (tab,):
                open_form(tab, server, pool)
                widths[width] = tab.evaluate("document.documentElement.scrollWidth")

    assert found == []
    assert widths[390] <= 390 and widths[1440] <= 1440
