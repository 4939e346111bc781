"""SSH to a qemu+ssh host from this process, as its URI says (user, port, key and known_hosts;
host keys checked): an asyncio connection (consoles reach a guest's screen through it), and a
blocking session for job threads that holds a shell command on the host or forwards one of the
host's unix sockets to a local one (a backup reads a pull-mode NBD export through it)."""

import asyncio
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager, suppress
from typing import TypeVar

import asyncssh

from app.config import Settings
from app.errors import HostUnreachable, VirtdeckError
from app.virt.failures import one_line
from app.virt.uri import ssh_target

CONNECT_TIMEOUT = 10.0
# A command on the host (mktemp, chown, rm) answers at once unless the host is in trouble.
COMMAND_TIMEOUT = 60.0
MAX_LINE = 4096  # characters of a held command's first line read from the host
# AES-GCM first (asyncssh's defaults after it): with AES-NI its cipher runs about twice as fast
# as chacha20-poly1305, asyncssh's first choice, and a backup's bytes all pass through it.
CIPHERS = "^aes128-gcm@openssh.com,aes256-gcm@openssh.com"
log = logging.getLogger(__name__)
# asyncssh logs every channel at INFO: the server's log gets its warnings only.
logging.getLogger("asyncssh").setLevel(logging.WARNING)

T = TypeVar("T")


async def ssh_connection(
    uri: str, settings: Settings, *, refused: type[VirtdeckError] = VirtdeckError
) -> asyncssh.SSHClientConnection:
    """An SSH connection as the URI says (user, port, key, known_hosts), host key checked; an
    unknown host key or a refused login raises `refused`, anything else HostUnreachable."""
    target = ssh_target(uri)
    options = {"port": target.port} if target.port else {}
    try:
        return await asyncio.wait_for(
            asyncssh.connect(
                target.host,
                username=target.user or (),
                client_keys=[target.keyfile] if target.keyfile else (),
                known_hosts=target.known_hosts or (),
                keepalive_interval=settings.keepalive_interval,
                keepalive_count_max=settings.keepalive_count,
                agent_path=None,
                encryption_algs=CIPHERS,
                **options,
            ),
            CONNECT_TIMEOUT,
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        raise refused(f"the SSH host key of {target.host} is unknown or changed: refused") from exc
    except asyncssh.PermissionDenied as exc:
        raise refused(
            f"{target.host} refused the SSH login of {target.user or 'this user'}"
        ) from exc
    except (OSError, TimeoutError, asyncssh.Error) as exc:
        raise HostUnreachable(
            f"cannot reach {target.host} over SSH: {one_line(str(exc) or 'timed out', 80)}"
        ) from exc


class SshSession:
    """One SSH connection used from a blocking thread; its asyncio loop runs in a thread of its
    own, and the local sockets it forwards live in a directory private to this process."""

    def __init__(self, uri: str, settings: Settings) -> None:
        self.host = ssh_target(uri).host
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"ssh-{self.host}", daemon=True
        )
        self._thread.start()
        self._directory = tempfile.mkdtemp(prefix="virtdeck-ssh-")
        self._forwarded = 0  # local sockets made so far (each has a name of its own)
        try:
            self._connection = self._call(ssh_connection(uri, settings))
        except BaseException:
            self._stop()
            raise

    def _call(self, work: Awaitable[T]) -> T:
        """Await work in the session's loop (asyncssh's calls are awaitables, not always
        coroutines) and wait for its result."""

        async def awaited() -> T:
            return await work

        return asyncio.run_coroutine_threadsafe(awaited(), self._loop).result()

    @contextmanager
    def holding(self, script: str) -> Iterator[str]:
        """Run the shell script on the host while the block runs: yields the first line it
        prints; then its stdin is closed (its cue to finish) and its exit awaited. One channel
        for both ends, and should this process die, the closed connection is the same cue."""
        what = f"a command on {self.host} over SSH"

        async def started() -> tuple[asyncssh.SSHClientProcess, str]:
            process = await self._connection.create_process(script)
            return process, await asyncio.wait_for(_first_line(process.stdout), COMMAND_TIMEOUT)

        async def ended(process: asyncssh.SSHClientProcess) -> asyncssh.SSHCompletedProcess:
            process.stdin.write_eof()
            return await process.wait(check=False, timeout=COMMAND_TIMEOUT)

        try:
            process, line = self._call(started())
        except (OSError, TimeoutError, asyncssh.Error) as exc:
            raise HostUnreachable(f"{what}: {one_line(str(exc) or 'timed out', 80)}") from exc
        try:
            if not line:  # it ended before it said anything: its errors say why
                done = self._call(ended(process))
                said = one_line(str(done.stderr or "") or f"exit status {done.exit_status}", 200)
                raise VirtdeckError(f"{what} failed: {said}")
            yield str(line).strip()
        finally:
            with suppress(OSError, TimeoutError, asyncssh.Error):
                done = self._call(ended(process))
                if done.exit_status != 0:
                    log.warning("%s ended with %s: %s", what, done.exit_status,
                                one_line(str(done.stderr or ""), 200))  # fmt: skip

    @contextmanager
    def forwarding(self, remote_path: str) -> Iterator[str]:
        """A local unix socket, while the block runs, whose every connection reaches remote_path
        on the host through a direct-streamlocal channel of this connection."""
        self._forwarded += 1
        local = os.path.join(self._directory, f"{self._forwarded}.sock")
        try:
            listener = self._call(self._connection.forward_local_path(local, remote_path))
        except (OSError, asyncssh.Error) as exc:
            raise HostUnreachable(f"forwarding a socket of {self.host}: {exc}") from exc

        async def closed() -> None:  # not waited for: connections still open end on their own
            listener.close()

        try:
            yield local
        finally:
            # In the session's loop: asyncio's server is not thread-safe, and closing it from
            # this thread while the loop woke its waiters failed a backup ("'NoneType' object is
            # not iterable").
            with suppress(OSError, TimeoutError, asyncssh.Error):
                self._call(closed())
            with suppress(OSError):
                os.unlink(local)

    def alive(self) -> bool:
        """Whether the connection is still open."""
        return not self._connection.is_closed()

    def close(self) -> None:
        """Close the connection and its loop."""
        try:
            self._connection.close()
            self._call(self._connection.wait_closed())
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        shutil.rmtree(self._directory, ignore_errors=True)


async def _first_line(stream: asyncssh.SSHReader) -> str:
    """What the host printed up to its first newline, at most MAX_LINE characters of it ("" if
    it printed nothing before it ended): the host's output is not trusted to be short."""
    read = ""
    while "\n" not in read and len(read) < MAX_LINE:
        chunk = await stream.read(MAX_LINE - len(read))
        if not chunk:
            break
        read += str(chunk)
    return read.partition("\n")[0]
