"""A virtdeck worker: syncs the hosts whose lease it holds, runs queued jobs, answers the syncs
web processes ask for, and reports its figures for /metrics.

`virtdeck worker` runs one in its own process (`virtdeck serve` starts one beside the web
server); tests run one inside the web app's process. Either way it hears of new hosts, sync
requests and jobs through the database (app.services.work_requests), polled every POLL seconds
or at once when a caller in the same process wakes it.
"""

import logging
import os
import socket
import threading
import time
import uuid

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import transaction
from app.errors import VirtdeckError
from app.services import backups as backup_service
from app.services import idle_pool, work_requests
from app.services.job_runs import work_of
from app.services.jobs import mark_failed
from app.services.planner import refresh_if_grown
from app.workers.calls import ANSWER_POLL, HostLink
from app.workers.jobs import JobRunner
from app.workers.memory import release_free_memory
from app.workers.reconciles import RECONCILES
from app.workers.sync import SyncManager

log = logging.getLogger(__name__)
# How often the worker looks for new hosts, sync requests and queued jobs.
POLL = 0.25
# How often it writes its figures for /metrics (and says that it runs).
REPORT_EVERY = 2.0
JOB_THREADS = 4
# How often the process hands the memory malloc keeps free back to the system.
TRIM_EVERY = 60.0
# How often it looks whether PostgreSQL's figures of the guests table need refreshing.
MEASURE_EVERY = 5.0
# How often it looks for backups due for their scheduled verification (and whenever the hosts
# whose lease it holds change).
VERIFY_CHECK_EVERY = 300.0


def instance_name() -> str:
    """This process's name among the instances sharing the database (leases, jobs, metrics)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Worker:
    """The host workers, the job runner and the loop that hands them what was asked."""

    def __init__(
        self, *, sessions: sessionmaker[Session], settings: Settings, instance: str
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self.instance = instance
        self.sync = SyncManager(sessions=sessions, settings=settings, instance=instance)
        # Jobs call the hosts on the sync connections where this instance has them.
        self.link = HostLink(
            sessions=sessions, settings=settings, local=self.sync.connection, wake=self.wake
        )
        self.jobs = JobRunner(
            sessions=sessions,
            workers=JOB_THREADS,
            after_reap=lambda: backup_service.settle_orphans(sessions, settings),
        )
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._loop = threading.Thread(target=self._run, name="worker-loop", daemon=True)
        # Sync requests being answered: host -> (request number, generation that answers it).
        self._asked: dict[int, tuple[int, int]] = {}
        self._reported = 0.0
        self._trimmed = time.monotonic()
        self._measured = time.monotonic()
        self._verify_checked = (0.0, frozenset[int]())
        self._scheduled = 0.0  # the first round looks at once: a slot missed while down runs
        self._engine = sessions.kw["bind"]

    def wake(self) -> None:
        """Look for work now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        """Start syncing, running jobs and following requests."""
        self.jobs.start()
        if self._settings.sync_enabled:
            self.sync.start()
        self._loop.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._round()
            except Exception:
                log.exception("worker round failed")
            # A refresh waiting for its answer is looked at again soon.
            self._wake.wait(ANSWER_POLL if self._asked else POLL)
            self._wake.clear()

    def _round(self) -> None:
        # One read a round; a write only when there is something to take or answer (four
        # rounds a second of 50 hosts were a tenth of an idle worker's CPU on PostgreSQL).
        with self._sessions() as session:
            registered = work_requests.registered(session)
            waiting = work_requests.waiting_jobs(session, self.jobs.free)
        if self._settings.sync_enabled:
            self.sync.follow({h: uri for h, (uri, _, _) in registered.items()})
            self._answer(registered)
        if waiting:
            self._take_jobs(waiting)
        if time.monotonic() - self._reported >= REPORT_EVERY:
            self._report()
        if time.monotonic() - self._measured >= MEASURE_EVERY and not RECONCILES.busy():
            self._measured = time.monotonic()  # a failure is tried again in MEASURE_EVERY, too
            refresh_if_grown(self._engine)
        self._queue_verifications()
        if time.monotonic() - self._scheduled >= self._settings.schedule_tick:
            self._scheduled = time.monotonic()
            backup_service.run_schedules(
                self._sessions, self.link, self.link, self._settings, instance=self.instance
            )
        if time.monotonic() - self._trimmed >= TRIM_EVERY:
            release_free_memory()
            self._trimmed = time.monotonic()

    def _answer(self, registered: dict[int, tuple[str, int, int]]) -> None:
        """Ask for the syncs requested since the last answer; record those finished."""
        for host_id, (_uri, requested, done) in registered.items():
            asked = self._asked.get(host_id)
            if requested > done and (asked is None or asked[0] < requested):
                generation = self.sync.ask(host_id)
                if generation is not None:
                    self._asked[host_id] = (requested, generation)
        for host_id, (request, generation) in list(self._asked.items()):
            if host_id not in registered:
                del self._asked[host_id]
            elif self.sync.reached(host_id, generation):
                with transaction(self._sessions) as session:
                    work_requests.answer(session, host_id, request)
                del self._asked[host_id]

    def _queue_verifications(self) -> None:
        """Queue the scheduled verifications due on the hosts this instance holds."""
        held = frozenset(self.sync.leading())
        checked, hosts = self._verify_checked
        if held == hosts and time.monotonic() - checked < VERIFY_CHECK_EVERY:
            return
        self._verify_checked = (time.monotonic(), held)
        if backup_service.queue_due_verifications(self._sessions, self._settings, hosts=set(held)):
            self.wake()

    def _take_jobs(self, job_ids: list[int]) -> None:
        with transaction(self._sessions) as session:
            taken = work_requests.take_jobs(session, self.instance, job_ids)
            session.expunge_all()
        for job in taken:
            try:
                work = work_of(
                    job, sessions=self._sessions, settings=self._settings, sync=self.link
                )
            except VirtdeckError as exc:
                with transaction(self._sessions) as session:
                    mark_failed(session, job.id, exc.message)
                continue
            self.jobs.submit(job.id, work)

    def _report(self) -> None:
        stats = {
            "hosts": {str(h): s.as_dict() for h, s in self.sync.worker_stats().items()},
            "jobs_running": self.jobs.running,
        }
        with transaction(self._sessions) as session:
            work_requests.report_worker(session, self.instance, stats)
        self._reported = time.monotonic()

    def stop(self) -> None:
        """Stop taking work, end the jobs (with grace), hand back the host leases."""
        self._stopping.set()
        self._wake.set()
        self._loop.join(timeout=2)
        self.jobs.stop()
        idle_pool.close_all()  # the connections and SSH sessions kept for the next job
        self.sync.stop()
        self.link.stop()
        try:
            with transaction(self._sessions) as session:
                work_requests.forget_worker(session, self.instance)
        except Exception:
            log.exception("could not remove the worker's record")
