"""Live updates over a real server: a `virsh` change on the real libvirtd reaches an open SSE
stream within a second or so, without any sync in between (sync_interval is long)."""

import queue
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.events import read_events, wait_for
from tests.libvirtd import SYSTEM_URI, throwaway_guest, virsh
from tests.serve import running_server

pytestmark = pytest.mark.libvirtd


def test_virsh_destroy_and_start_reach_an_open_event_stream(tmp_path: Path) -> None:
    env = {"VIRTDECK_DEFAULT_HOST_URI": SYSTEM_URI, "VIRTDECK_SYNC_INTERVAL": "300"}
    with throwaway_guest(tmp_path) as guest, running_server(tmp_path, env) as server:
        host = server.api("GET", "/hosts").json()[0]
        assert (
            server.api("POST", f"/hosts/{host['id']}/refresh", params={"wait": 15}).status_code
            == 200
        )
        events: queue.Queue = queue.Queue()
        stop = threading.Event()
        reader = threading.Thread(
            target=read_events, args=(server.url, server.token, events, stop), daemon=True
        )
        reader.start()
        assert wait_for(events, "status 200", 10)

        virsh("start", guest.uuid)  # QEMU takes its own time to start: not the lag measured
        started = time.monotonic()
        arrived = wait_for(events, f"guest-{guest.uuid}", 5)
        running = server.api("GET", f"/guests/{guest.uuid}").json()["state"]
        virsh("destroy", guest.uuid)
        destroyed_at = time.monotonic()
        gone_at = wait_for(events, f"guest-{guest.uuid}", 5)
        shown = server.api("GET", f"/guests/{guest.uuid}").json()
        stop.set()

        assert arrived - started < 2.0
        assert running == "running"
        assert gone_at - destroyed_at < 2.0
        assert shown["state"] == "shutoff"
        metrics = httpx.get(
            f"{server.url}/metrics", headers={"Authorization": f"Bearer {server.token}"}
        ).text
        assert 'virtdeck_hosts{state="connected"} 1' in metrics
        assert 'virtdeck_event_lag_seconds_count{host="local"}' in metrics
        assert "virtdeck_event_streams" in metrics
