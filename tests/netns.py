"""Fake remote hosts: a test-driver libvirtd listening on TCP inside a network namespace.

`fake_host()` makes a uniquely named namespace (vdtest-<hex>) joined to this one by a veth pair
with a private /30 from 10.250.0.0/16, and runs its own libvirtd in it: unprivileged (nobody),
with its config, sockets, pid file and runtime dirs in a temporary directory and an empty
driver directory, so it loads no hypervisor driver and never touches the system libvirtd or
/run/libvirt. Its test:///default host has the guest "test" running. Faults: stop() (SIGSTOP,
a hang), kill() (SIGKILL, a crash), drop() (iptables DROP on the namespace's veth, a black
hole). Everything is removed afterwards, also when the test fails.

Needs root, iproute2, iptables and libvirtd (scripts/setup-system.sh --test installs them).
"""

import contextlib
import fcntl
import ipaddress
import os
import random
import select
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PORT = 16509
NOBODY = 65534
LOCK = Path(tempfile.gettempdir()) / "vdtest-netns.lock"
POOL = ipaddress.ip_network("10.250.0.0/16")
# virsh's words for the states, and libvirt's (as virtdeck stores them).
VIRSH_STATES = {
    "running": "running",
    "idle": "blocked",
    "paused": "paused",
    "in shutdown": "shutdown",
    "shut off": "shutoff",
    "crashed": "crashed",
    "pmsuspended": "pmsuspended",
    "no state": "nostate",
}


def available() -> str | None:
    """Why fake hosts cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [t for t in ("ip", "iptables", "libvirtd", "virsh", "setpriv") if not shutil.which(t)]
    if missing:
        return f"missing {', '.join(missing)} (scripts/setup-system.sh --test)"
    return None


def _run(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()}")
    return done


def _free_subnet() -> ipaddress.IPv4Network:
    """A random /30 of the pool that no interface of this namespace uses yet."""
    used = _run("ip", "-o", "-4", "addr", "show").stdout + _run("ip", "-4", "route").stdout
    subnets = list(POOL.subnets(new_prefix=30))[1:-1]
    for _ in range(100):
        subnet = random.choice(subnets)
        if not any(str(a) in used for a in subnet):
            return subnet
    raise RuntimeError("no free /30 in 10.250.0.0/16")


class FakeHost:
    """One fake remote host; made by fake_host(), which also removes it."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:10]
        self.namespace = f"vdtest-{tag}"
        self.host_link = f"vd{tag[:8]}h"  # interface names: at most 15 characters
        self.ns_link = f"vd{tag[:8]}n"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.namespace}-"))
        self.address = ""
        self.peer = ""  # this namespace's end of the veth
        self.port = PORT
        self.process: subprocess.Popen | None = None
        self._keeper: subprocess.Popen | None = None
        self._dropped = False
        self._made_namespace = False

    @property
    def uri(self) -> str:
        """Where virtdeck (outside the namespace) reaches the host."""
        return f"test+tcp://{self.address}:{self.port}/default"

    @property
    def pid(self) -> int:
        """The libvirtd process id."""
        assert self.process is not None
        return self.process.pid

    # --- setting up and tearing down -----------------------------------------------------
    def _create_network(self) -> None:
        _run("ip", "netns", "add", self.namespace)
        self._made_namespace = True
        # Choosing the subnet and taking it are one step for concurrent test sessions.
        with LOCK.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            subnet = _free_subnet()
            self.peer, self.address = str(subnet[1]), str(subnet[2])
            _run("ip", "link", "add", self.host_link, "type", "veth", "peer", "name", self.ns_link)
            _run("ip", "addr", "add", f"{self.peer}/30", "dev", self.host_link)
        _run("ip", "link", "set", self.ns_link, "netns", self.namespace)
        _run("ip", "link", "set", self.host_link, "up")
        self.ns("ip", "addr", "add", f"{self.address}/30", "dev", self.ns_link)
        self.ns("ip", "link", "set", self.ns_link, "up")
        self.ns("ip", "link", "set", "lo", "up")

    def _write_config(self) -> None:
        for name in ("sock", "run", "config", "cache", "data", "home", "drivers"):
            (self.workdir / name).mkdir()
            os.chown(self.workdir / name, NOBODY, NOBODY)
        self.workdir.chmod(0o755)
        (self.workdir / "libvirtd.conf").write_text(
            "listen_tls = 0\n"
            "listen_tcp = 1\n"
            'auth_tcp = "none"\n'
            f'tcp_port = "{self.port}"\n'
            f'listen_addr = "{self.address}"\n'
            f'unix_sock_dir = "{self.workdir / "sock"}"\n'
            'unix_sock_rw_perms = "0700"\n'
            # The daemon never drops a silent client itself; clients' keepalive is under test.
            "keepalive_interval = -1\n"
            'log_outputs = "3:stderr"\n'
        )

    def start(self, timeout: float = 15) -> None:
        """Start libvirtd in the namespace and wait until it answers."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(self.workdir / "home"),
            "XDG_RUNTIME_DIR": str(self.workdir / "run"),
            "XDG_CONFIG_HOME": str(self.workdir / "config"),
            "XDG_CACHE_HOME": str(self.workdir / "cache"),
            "XDG_DATA_HOME": str(self.workdir / "data"),
            # No hypervisor, network or storage driver modules: the test driver is built in.
            "LIBVIRT_DRIVER_DIR": str(self.workdir / "drivers"),
        }
        command = [
            "ip", "netns", "exec", self.namespace,  # execs, so the pid is libvirtd's
            "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
            "libvirtd", "--listen", "--timeout", "0",
            "--config", str(self.workdir / "libvirtd.conf"),
            "--pid-file", str(self.workdir / "run" / "libvirtd.pid"),
        ]  # fmt: skip
        with (self.workdir / "libvirtd.log").open("a") as log:
            self.process = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/"
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"libvirtd in {self.namespace} exited: {self.log()[-2000:]}")
            probe = self.virsh("list", "--all", "--name", check=False, timeout=5)
            if probe.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"libvirtd in {self.namespace} does not answer: {probe.stderr}")
            time.sleep(0.1)
        self._keep()

    def _keep(self) -> None:
        """Hold a connection open from inside the namespace for as long as the daemon runs.

        The test driver frees test:///default when its last connection closes: without this,
        the guests' state would reset whenever virtdeck's connection dies, unlike a real host.
        An interactive virsh without keepalive (-k 0) survives a stop() and a drop().
        """
        self._keeper = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, "virsh", "-q", "-k", "0", "-c", self.uri],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self._keeper.stdin is not None and self._keeper.stdout is not None
        self._keeper.stdin.write("echo kept\n")
        self._keeper.stdin.flush()
        ready, _, _ = select.select([self._keeper.stdout], [], [], 15)
        if not ready or "kept" not in self._keeper.stdout.readline():
            raise RuntimeError(f"the keeper connection to {self.uri} failed")

    def _unkeep(self) -> None:
        if self._keeper is not None:
            with contextlib.suppress(Exception):
                self._keeper.kill()
                self._keeper.wait(timeout=10)
            for pipe in (self._keeper.stdin, self._keeper.stdout):
                with contextlib.suppress(Exception):
                    pipe.close()
            self._keeper = None

    def close(self) -> None:
        """Kill the daemon and remove the namespace, veth and files; tries every step."""
        with contextlib.suppress(Exception):
            self.kill()
        self._unkeep()
        if self._dropped:
            with contextlib.suppress(Exception):
                self.undrop()
        # Deleting the namespace deletes its end of the veth and with it the pair.
        if self._made_namespace:
            _run("ip", "netns", "del", self.namespace, check=False)
        if _run("ip", "link", "show", self.host_link, check=False).returncode == 0:
            _run("ip", "link", "del", self.host_link, check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log(self) -> str:
        """What libvirtd wrote so far."""
        path = self.workdir / "libvirtd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- talking to it -------------------------------------------------------------------
    def ns(
        self, *args: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess:
        """Run a command inside the namespace."""
        return _run("ip", "netns", "exec", self.namespace, *args, check=check, timeout=timeout)

    def virsh(
        self, *args: str, check: bool = True, timeout: float = 10, inside: bool = False
    ) -> subprocess.CompletedProcess:
        """Run virsh on this host; inside=True connects from within the namespace (no veth)."""
        command = ("virsh", "-q", "-c", self.uri, *args)
        if inside:
            return self.ns(*command, check=check, timeout=timeout)
        return _run(*command, check=check, timeout=timeout)

    def inventory(self, *, inside: bool = False) -> dict[str, str]:
        """Guest name to libvirt state (running, shutoff, ...), as the host itself says."""
        names = self.virsh("list", "--all", "--name", inside=inside).stdout.split()
        states = {}
        for name in names:
            said = self.virsh("domstate", name, inside=inside).stdout.strip()
            states[name] = VIRSH_STATES.get(said, said)
        return states

    # --- faults --------------------------------------------------------------------------
    def stop(self) -> None:
        """Hang: SIGSTOP; connections stay open and the kernel still accepts new ones."""
        os.kill(self.pid, signal.SIGSTOP)

    def cont(self) -> None:
        """Undo stop()."""
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        """Crash: SIGKILL, and reap the process."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._unkeep()

    def restart(self) -> None:
        """Start libvirtd again (a fresh test:///default host); kills a running one first."""
        self.kill()
        self.start()

    def _rules(self, action: str) -> None:
        self.ns("iptables", "-w", action, "INPUT", "-i", self.ns_link, "-j", "DROP")
        self.ns("iptables", "-w", action, "OUTPUT", "-o", self.ns_link, "-j", "DROP")

    def drop(self) -> None:
        """Black hole: drop every packet on the namespace's veth, both ways."""
        self._rules("-I")
        self._dropped = True

    def undrop(self) -> None:
        """Undo drop()."""
        self._rules("-D")
        self._dropped = False


@contextmanager
def fake_host() -> Iterator[FakeHost]:
    """A running fake remote host; removed afterwards whatever happened."""
    host = FakeHost()
    try:
        host._create_network()
        host._write_config()
        host.start()
        yield host
    finally:
        host.close()
