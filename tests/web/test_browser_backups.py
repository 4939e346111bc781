"""A real guest backed up from its page in headless Chromium, the bar watched to 100 %, and the
backup restored as a new guest through its page's form."""

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser import screenshot
from tests.libvirtd import (
    IMAGES,
    SYSTEM_URI,
    ThrowawayGuest,
    holds,
    qemu_io,
    throwaway_guest,
    virsh,
)
from tests.serve import Server, running_server
from tests.storage import throwaway_pool

pytestmark = [pytest.mark.browser, pytest.mark.libvirtd]

# 128 MiB written, copied at 32 MiB/s: about four seconds, so the bar is seen moving.
WRITTEN, BANDWIDTH_MIB = "128M", 32
JOB_TIMEOUT = 30_000
SIZE = r"[\d.]+ (B|KiB|MiB|GiB)"
COPYING = re.compile(rf"^(copying|restoring) vda: {SIZE} of {SIZE}, {SIZE}/s, \d+ s left$")
# Records every state of the bar in the page as htmx swaps it: [percent, message, status].
WATCH_BAR = """(selector) => {
  window.seenBars = [];
  const record = () => {
    const bar = document.querySelector(selector);
    if (!bar) return;
    const seen = [Number(bar.dataset.progress), bar.querySelector(".job-message").textContent,
                  bar.dataset.status];
    const last = window.seenBars[window.seenBars.length - 1];
    if (!last || last.join("|") !== seen.join("|")) window.seenBars.push(seen);
  };
  new MutationObserver(record).observe(document.body, {childList: true, subtree: true});
}"""


@pytest.fixture
def pool() -> Iterator[str]:
    """A throwaway dir pool on the real libvirtd."""
    with throwaway_pool() as name:
        yield name


@pytest.fixture
def guest(tmp_path: Path, pool: str) -> Iterator[ThrowawayGuest]:
    """A shut-off guest whose 256 MiB disk in the pool holds WRITTEN bytes of 0x5a."""
    with throwaway_guest(tmp_path, directory=IMAGES / pool, size="256M") as made:
        written = qemu_io(made.disk, f"write -P 0x5a 0 {WRITTEN}")
        assert written.returncode == 0, written.stderr
        yield made


@pytest.fixture
def server(tmp_path: Path, guest: ThrowawayGuest) -> Iterator[Server]:
    """`virtdeck serve` with the real libvirtd as host "local" and a bandwidth cap, synced."""
    env = {
        "VIRTDECK_DEFAULT_HOST_URI": "",
        "VIRTDECK_SYNC_INTERVAL": "1",
        "VIRTDECK_BACKUP_BANDWIDTH_MIB": str(BANDWIDTH_MIB),
        "VIRTDECK_BACKUP_DIR": str(tmp_path / "backups"),
    }
    with running_server(tmp_path, env) as running:
        created = running.api("POST", "/hosts", json={"name": "local", "uri": SYSTEM_URI})
        assert created.status_code == 201, created.text
        synced = running.api("POST", f"/hosts/{created.json()['id']}/refresh", params={"wait": 15})
        assert synced.status_code == 200, synced.text
        yield running


def seen_bars(page: Page) -> list[tuple[int, str, str]]:
    """The states of the bar the page went through: percent, message, status."""
    return [tuple(bar) for bar in page.evaluate("window.seenBars")]


def assert_moved_to_100(seen: list[tuple[int, str, str]]) -> None:
    """The bar only went forward, stopped somewhere between, and ended at 100 % done."""
    percents = [percent for percent, _message, _status in seen]
    assert percents == sorted(percents), seen
    assert any(0 < p < 100 for p in percents), seen
    assert seen[-1] == (100, "done", "succeeded"), seen
    assert any(COPYING.match(message) for _percent, message, _status in seen), seen


def wait_for_guest(server: Server, uuid: str, timeout: float = 15) -> None:
    """Until virtdeck's inventory has the guest (the host syncs every second)."""
    deadline = time.monotonic() + timeout
    while server.api("GET", f"/guests/{uuid}").status_code != 200:
        assert time.monotonic() < deadline, f"guest {uuid} did not appear in {timeout} s"
        time.sleep(0.2)


def test_back_up_now_shows_the_bar_to_100_then_the_backup_restores_as_a_new_guest(
    server: Server, page: Page, guest: ThrowawayGuest, pool: str
) -> None:
    page.goto(f"{server.url}/guests/{guest.uuid}?section=backups")
    panel = page.locator("#guest-backups")
    expect(panel).to_contain_text(f"No backups of {guest.name} yet.")
    page.evaluate(WATCH_BAR, "#guest-backups .backup-job")

    panel.get_by_role("button", name="Back up now").click()

    expect(panel.locator(".backup-running .backup-job")).to_be_visible()
    finished = panel.locator('.backup-finished .backup-job[data-status="succeeded"]')
    expect(finished).to_be_visible(timeout=JOB_TIMEOUT)
    backup_seen = seen_bars(page)
    print("backup bar (%):", [percent for percent, _message, _status in backup_seen])
    assert_moved_to_100(backup_seen)
    expect(finished.locator("progress")).to_have_attribute("value", "100")
    expect(page.locator(".toast").last).to_contain_text(f"backup of {guest.name} succeeded")
    row = panel.locator("tr[data-backup]")
    expect(row).to_have_count(1)
    expect(row.locator(".badge")).to_have_text("succeeded")
    expect(row).to_contain_text(re.compile(r"12[89]\.\d MiB"))
    screenshot(page, "guest-backup-done.png")

    row.get_by_role("link", name="restore").click()
    page.wait_for_url(re.compile(r"/backups/\d+#backup-restore$"))
    expect(page.locator(".backup-files tr[data-file]")).to_have_count(2)
    form = page.locator("#restore-new-form")
    copy = f"{guest.name}-copy"
    new_disk = IMAGES / pool / f"{copy}-vda.qcow2"
    try:
        form.get_by_label("Name").fill(copy)
        expect(form.get_by_label("Host")).to_have_value(re.compile(r"^\d+$"))
        # The host's pools load into the choice: the guest's pool is among them.
        chosen = form.get_by_label("Pool for the disks")
        expect(chosen.locator(f'option[value="{pool}"]')).to_have_count(1)
        chosen.select_option(pool)
        page.evaluate(WATCH_BAR, "#backup-restore .backup-job")
        form.get_by_role("button", name="Restore as a new guest").click()

        page.wait_for_url(re.compile(r"/backups/\d+/jobs/\d+$"))
        result = page.locator("#backup-restore .restore-result")
        expect(result).to_be_visible(timeout=JOB_TIMEOUT)
        restore_seen = seen_bars(page)
        print("restore bar (%):", [percent for percent, _message, _status in restore_seen])
        assert_moved_to_100(restore_seen)
        link = result.get_by_role("link", name=copy)
        new_uuid = link.get_attribute("href").removeprefix("/guests/")
        assert virsh("domuuid", copy).strip() == new_uuid != guest.uuid
        assert "shut off" in virsh("dominfo", copy)
        assert holds(new_disk, "0x5a", WRITTEN)
        screenshot(page, "backup-restored.png")

        wait_for_guest(server, new_uuid)
        link.click()
        expect(page.locator("h1")).to_have_text(copy)
        expect(page.locator("#guest-status .badge")).to_have_text("shut off")
    finally:
        virsh("undefine", copy, "--nvram", check=False)
        virsh("vol-delete", str(new_disk), check=False)
