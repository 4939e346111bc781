"""Run the real `virtdeck serve` as a subprocess for end-to-end tests."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from app.workers.process import STOP_GRACE

STARTUP_TIMEOUT = 20.0
DATA = Path(__file__).resolve().parent / "data"
ADMIN_PASSWORD = "admin password for tests"


@dataclass(frozen=True)
class Server:
    """A running `virtdeck serve`."""

    url: str
    log: Path
    token: str | None = None
    # The environment it runs with (its database among it), for the command line.
    env: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    # The server's process id, to read its memory use from /proc.
    pid: int | None = field(default=None, compare=False)

    def api(self, method: str, path: str, **kwargs) -> httpx.Response:
        """Call the server's JSON API, with the admin's token when there is one."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.request(
            method, f"{self.url}/api/v1{path}", timeout=20, headers=headers, **kwargs
        )

    def add_host(self, name: str, uri: str) -> int:
        """Register a host through the API, wait for its first sync; its id."""
        created = self.api("POST", "/hosts", json={"name": name, "uri": uri})
        assert created.status_code == 201, created.text
        host_id = created.json()["id"]
        synced = self.api("POST", f"/hosts/{host_id}/refresh", params={"wait": 15})
        assert synced.status_code == 200, synced.text
        return host_id


def virtdeck(*args: str, env: dict[str, str], stdin: str = "") -> str:
    """Run the virtdeck command line and return what it printed."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "virtdeck"), *args],
        input=stdin, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def create_admin(name: str, *, env: dict[str, str]) -> str:
    """Make the admin `name` (password ADMIN_PASSWORD) with the command line; a token of theirs."""
    virtdeck("create-user", name, "--role", "admin", env=env, stdin=ADMIN_PASSWORD)
    return virtdeck("create-token", name, "--name", "tests", env=env)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_GRACE + 5)  # the server's own wait for its worker, then some
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _full_env(workdir: Path, env: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        "VIRTDECK_DATABASE_URL": f"sqlite:///{workdir / 'v.db'}",
        # the node files of tests/data (a test writing its own passes its directory)
        "VIRTDECK_TEST_DRIVER_DIR": str(DATA),
        **env,
    }


@contextmanager
def running_worker(workdir: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """`virtdeck worker` on the database env names (SQLite in workdir by default); stopped
    afterwards, always. Its output is appended to workdir/worker.log."""
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / "worker.log").open("ab") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "virtdeck"), "worker"],
            cwd=workdir, env=_full_env(workdir, env), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield process
    finally:
        _stop(process)


@contextmanager
def running_server(
    workdir: Path,
    env: dict[str, str],
    *,
    admin: str | None = "admin",
    port: int | None = None,
    worker: str = "process",
) -> Iterator[Server]:
    """`virtdeck serve` on a free port (or this one) with SQLite in workdir, and its worker as a
    child `process` (as `make run`), `inside` its process, or `none`; stopped afterwards,
    always. Its output is appended to workdir/serve.log.

    With `admin`, that admin user (password ADMIN_PASSWORD) and a token of theirs are made
    with the command line first.
    """
    script = Path(sys.executable).parent / "virtdeck"
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    full_env = _full_env(workdir, env)
    token = create_admin(admin, env=full_env) if admin else None
    log = workdir / "serve.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(script), "serve", "--host", "127.0.0.1", "--port", str(port)]
            + {"process": [], "inside": ["--worker-inside"], "none": ["--no-worker"]}[worker],
            cwd=workdir,  # away from any .env in the checkout
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        running = Server(
            url=f"http://127.0.0.1:{port}", log=log, token=token, env=full_env, pid=process.pid
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"virtdeck serve exited with {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{running.url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                waited = f"virtdeck serve did not answer in {STARTUP_TIMEOUT} s"
                pytest.fail(f"{waited}:\n{log.read_text()}")
            time.sleep(0.2)
        yield running
    finally:
        _stop(process)
