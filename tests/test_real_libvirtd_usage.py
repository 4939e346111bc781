"""What a running guest uses, read from the real local libvirtd: a tiny KVM (or TCG) guest that
spins its one vCPU shows above half its CPU within two reading intervals, on its row and in its
day's samples, with the host's sum on the host page's chart; and a guest shut off has no figures
as soon as the worker sees it so."""

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import add_host
from tests.console_guest import console_guest
from tests.htmx import HTMX
from tests.libvirtd import SYSTEM_URI, virsh
from tests.markup import parse

pytestmark = pytest.mark.libvirtd
INTERVAL = 1.0  # seconds between readings (and passes) here


def _figures(client: TestClient, uuid: str) -> dict:
    return client.get(f"/api/v1/guests/{uuid}").json()


def test_a_guest_spinning_its_cpu_shows_above_half_within_two_intervals(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(sync_interval=INTERVAL, usage_interval=INTERVAL)
    host = add_host(client, "local", SYSTEM_URI)
    with console_guest(tmp_path, burn=True) as guest:
        running = time.monotonic()
        client.post(f"/api/v1/hosts/{host['id']}/refresh", params={"wait": 15})
        # Two readings: the first after the guest ran, the second a rate over an interval.
        while (figures := _figures(client, guest.uuid))["cpu_percent"] is None:
            assert time.monotonic() - running < 2 * INTERVAL + 3, figures
            time.sleep(0.1)
        deadline = time.monotonic() + 2 * INTERVAL + 1
        while figures["cpu_percent"] <= 50 and time.monotonic() < deadline:
            time.sleep(0.2)
            figures = _figures(client, guest.uuid)
        day = client.get(f"/api/v1/guests/{guest.uuid}/usage", params={"period": "day"}).json()

        assert figures["cpu_percent"] > 50, figures
        assert figures["memory_used_kib"] > 0 and figures["memory_source"] in ("guest", "host")
        assert figures["usage_at"] is not None
        assert any(sample["cpu_percent"] > 50 for sample in day)
        panel = parse(client.get(f"/guests/{guest.uuid}/usage", headers=HTMX).text)
        shown = panel.definition("CPU").text
        assert float(shown.split(" %")[0]) > 50 and "of its 1 vCPU" in shown
        assert panel.find_all("polyline", data_series="cpu")
        # The worker stored the host's sum with the same reading: the host page draws it.
        host_panel = parse(client.get(f"/hosts/{host['id']}/usage", headers=HTMX).text)
        assert host_panel.find_all("polyline", data_series="cpu")

        virsh("destroy", guest.uuid)
        client.post(f"/api/v1/hosts/{host['id']}/refresh", params={"wait": 15})
        # Cleared when the worker saw it shut off, not at the next reading.
        assert _figures(client, guest.uuid)["cpu_percent"] is None, "a shut-off guest kept them"
    month = client.get(f"/api/v1/guests/{guest.uuid}/usage", params={"period": "year"})
    assert month.status_code == 422 and "period" in month.json()["detail"]
