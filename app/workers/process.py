"""The worker as a process: `virtdeck worker` runs one until SIGTERM, and `virtdeck serve` keeps
one running beside the web server (started with it, started again if it dies, stopped with it,
and ended by the kernel if the server itself is killed)."""

import contextlib
import ctypes
import faulthandler
import logging
import os
import signal
import subprocess
import sys
import threading

from app.config import Settings
from app.db import make_engine, make_session_factory
from app.live import LiveBus
from app.workers.memory import collect_less
from app.workers.worker import Worker, instance_name

log = logging.getLogger(__name__)
# A worker that died is started again after this long, doubling up to RESTART_MAX.
RESTART_MIN = 1.0
RESTART_MAX = 30.0
# A worker asked to stop gets this long to end its jobs and hand back its leases.
STOP_GRACE = 15.0
# ...and ends itself after this long if its stop still hangs, before its server would kill it.
STOP_LIMIT = STOP_GRACE - 1.0
PR_SET_PDEATHSIG = 1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _wake_on_stdin(worker: Worker) -> None:
    """Wake the worker for each byte the server that started it writes (a request is waiting)."""
    while os.read(0, 64):
        worker.wake()


def run_worker(settings: Settings, *, wake_stdin: bool = False) -> None:
    """Run a worker in this process until SIGTERM or SIGINT, then end the process (within
    STOP_LIMIT seconds); with wake_stdin, the server that started it wakes it through its stdin
    (else it finds requests at its next poll)."""
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    LiveBus(engine).attach(sessions)  # what it commits reaches every web process's streams
    worker = Worker(sessions=sessions, settings=settings, instance=instance_name())
    collect_less()
    # A stop signal is written to a pipe by Python's C-level handler, whichever thread it lands
    # on, and the main thread reads it there. The Python-level handler does nothing: one that
    # set an Event deadlocked when a second signal arrived while the first's set() held its
    # lock (workers ran on for hours, deaf to SIGTERM).
    signalled, wakeup = os.pipe()
    os.set_blocking(wakeup, False)
    signal.set_wakeup_fd(wakeup, warn_on_full_buffer=False)
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda _sig, _frame: None)
    worker.start()
    if wake_stdin:
        threading.Thread(target=_wake_on_stdin, args=(worker,), daemon=True).start()
    log.info("worker %s started", worker.instance)
    while os.read(signalled, 1)[0] not in STOP_SIGNALS:
        pass
    log.info("worker %s stopping", worker.instance)
    # A stop that hangs (a job thread in a libvirt call that never returns) must not leave a
    # worker running schedules for a server that is gone; its stacks say where it hung.
    limit = threading.Timer(STOP_LIMIT, _end_stuck, args=(worker.instance,))
    limit.daemon = True
    limit.start()
    worker.stop()
    engine.dispose()
    logging.shutdown()
    # Not the interpreter's exit: it would wait for every job thread, however stuck.
    os._exit(0)


def _end_stuck(instance: str) -> None:
    try:
        log.error("worker %s did not stop in %.0f s; ending it. Its threads:", instance, STOP_LIMIT)
        faulthandler.dump_traceback(all_threads=True)
        logging.shutdown()
    finally:  # even with no stderr to write to
        os._exit(1)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the server that started it dies (even kill -9)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class WorkerChild:
    """A `virtdeck worker` child process of the server, kept running."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="worker-child", daemon=True)

    @property
    def pid(self) -> int | None:
        """The running child's process id."""
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the worker and keep it running."""
        self._spawn()
        self._thread.start()

    def wake(self) -> None:
        """Tell the worker a request is waiting (a sync, a job, a new host)."""
        process = self._process
        if process is None or process.stdin is None:
            return
        with contextlib.suppress(OSError):  # full (it will look anyway) or gone (restarting)
            os.write(process.stdin.fileno(), b".")

    def _spawn(self) -> None:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--wake-stdin"],
            stdin=subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        os.set_blocking(process.stdin.fileno(), False)  # a wake never blocks a request
        self._process = process

    def _keep(self) -> None:
        delay = RESTART_MIN
        while not self._stopping.is_set():
            code = self._process.wait()
            if self._stopping.is_set():
                return
            log.error("the worker process ended (exit status %s); starting it again", code)
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, RESTART_MAX)
            self._spawn()

    def stop(self) -> None:
        """Stop the worker: SIGTERM, then SIGKILL after STOP_GRACE seconds."""
        self._stopping.set()
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
