"""A worker's job runner: a small thread pool that runs jobs and records how they went."""

import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor

from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.errors import VirtdeckError
from app.services import jobs as job_service
from app.services.ports import Cancelled, Work

log = logging.getLogger(__name__)
# After a stop's grace, the jobs still running are told to end (as on a cancel, undoing what they
# began) and get this much longer.
HALT_GRACE = 3.0


class Interrupted(VirtdeckError):
    """Raised inside a job's work when its worker stops before the job ends: it fails, undoing
    what it began, with the message the jobs of a dead worker get."""

    def __init__(self) -> None:
        super().__init__(job_service.INTERRUPTED)


class Progress:
    """The Reporter a job's work gets: writes progress at most every `every` seconds (and when
    the message's phase, the text before any ':', changes), raises Cancelled once a cancel was
    requested, from any instance, and Interrupted once `halt` is set."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        job_id: int,
        every: float = 0.5,
        halt: threading.Event | None = None,
    ) -> None:
        self._sessions = sessions
        self._job_id = job_id
        self._every = every
        self._last = (0.0, "")
        self._halt = halt or threading.Event()

    def __call__(self, progress: float, message: str) -> None:
        """Record progress (throttled); raise Cancelled or Interrupted if the job should stop
        (not once it says it is done: what it did may be past undoing, a restore's guest)."""
        if self._halt.is_set() and progress < 1:
            raise Interrupted
        now = time.monotonic()
        phase = message.partition(":")[0]  # "copying vda: 1.2 GiB of ..." changes every chunk
        if phase == self._last[1] and now - self._last[0] < self._every and progress < 1:
            return
        self._last = (now, phase)
        with transaction(self._sessions) as session:
            job_service.record_progress(session, self._job_id, progress=progress, message=message)
            cancel = job_service.cancel_requested(session, self._job_id)
        if cancel:
            raise Cancelled


class JobRunner:
    """Runs submitted work in a few threads, keeping each job's row up to date."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        workers: int = 4,
        after_reap: Callable[[], object] | None = None,
    ) -> None:
        self._sessions = sessions
        self._after_reap = after_reap
        self._threads = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="job")
        self._pending: dict[int, Future] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._halt = threading.Event()  # the running jobs are to end now
        self._heart = threading.Thread(target=self._beat, name="job-heartbeat", daemon=True)

    def start(self) -> None:
        """Fail the jobs whose instance died (no heartbeat for a while); keep ours beating."""
        self._reap()
        self._heart.start()

    def _reap(self) -> None:
        with transaction(self._sessions) as session:
            count = job_service.fail_abandoned(session)
        if count:
            log.warning("marked %d job(s) of a stopped instance as interrupted", count)
        if self._after_reap is not None:
            self._after_reap()

    def _beat(self) -> None:
        """Every few seconds: say our jobs still run, and fail those nobody runs any more."""
        while not self._stopping.wait(job_service.HEARTBEAT_SECONDS):
            try:
                with self._lock:
                    running = list(self._pending)
                with transaction(self._sessions) as session:
                    job_service.beat(session, running)
                self._reap()
            except Exception:
                log.exception("job heartbeat failed")

    @property
    def running(self) -> int:
        """How many jobs this runner has (running or about to)."""
        with self._lock:
            return len(self._pending)

    @property
    def free(self) -> int:
        """How many more jobs it can begin at once (a worker takes no more than that)."""
        return max(0, self._threads - self.running)

    def submit(self, job_id: int, work: Work) -> Future:
        """Run work for a job whose row is committed as queued and taken by this instance
        (app.services.work_requests.take_jobs)."""
        with self._lock:
            future = self._executor.submit(self._run, job_id, work)
            self._pending[job_id] = future
        future.add_done_callback(lambda _f: self._forget(job_id))
        return future

    def _forget(self, job_id: int) -> None:
        with self._lock:
            self._pending.pop(job_id, None)

    def _run(self, job_id: int, work: Work) -> None:
        with transaction(self._sessions) as session:
            job_service.mark_running(session, job_id)
        try:
            result = work(Progress(self._sessions, job_id, halt=self._halt))
        except Cancelled:
            with transaction(self._sessions) as session:
                job_service.mark_cancelled(session, job_id)
        except VirtdeckError as exc:
            self._fail(job_id, exc.message)
        except Exception as exc:
            log.exception("job %s failed", job_id)
            self._fail(job_id, f"internal error: {type(exc).__name__}")
        else:
            with transaction(self._sessions) as session:
                job_service.mark_succeeded(session, job_id, result)

    def _fail(self, job_id: int, error: str) -> None:
        with transaction(self._sessions) as session:
            job_service.mark_failed(session, job_id, error)

    def stop(self, *, grace: float = 5.0) -> None:
        """Stop taking work; jobs not yet begun are marked failed, running ones get grace seconds
        to end, then are told to (Interrupted at their next progress report) and get HALT_GRACE.

        A job still running after that is marked interrupted once its heartbeat is stale.
        """
        self._stopping.set()
        with self._lock:
            pending = dict(self._pending)
        self._executor.shutdown(wait=False, cancel_futures=True)
        for job_id, future in pending.items():
            if future.cancelled():
                self._fail(job_id, job_service.INTERRUPTED)
        running = [f for f in pending.values() if not f.cancelled()]
        if futures.wait(running, timeout=grace).not_done:
            self._halt.set()
            futures.wait(running, timeout=HALT_GRACE)
