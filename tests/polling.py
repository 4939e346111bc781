"""Waiting in tests: until a condition holds, until a job ends; both fail loudly on timeout."""

import time
from collections.abc import Callable

import httpx

from tests.serve import Server

# A job in one of these states runs no more (the API's statuses).
ENDED = ("succeeded", "failed", "cancelled")


def until(
    condition: Callable[[], object], *, timeout: float, interval: float = 0.05, what: str = ""
) -> float:
    """Seconds until condition() is truthy; fails after timeout seconds, saying what."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout:g} s: {what or condition.__doc__ or ''}")
        time.sleep(interval)
    return time.monotonic() - started


def finished_job(client: httpx.Client | Server, job_id: int, *, timeout: float = 15) -> dict:
    """The job as the API shows it once it has ended; fails with its last state after timeout
    seconds. The client is a test client (or any httpx client on the app) or a served app."""
    deadline = time.monotonic() + timeout
    while True:
        job = _job(client, job_id)
        if job["status"] in ENDED:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout:g} s: {job}")
        time.sleep(0.05)


def _job(client: httpx.Client | Server, job_id: int) -> dict:
    if isinstance(client, Server):
        return client.api("GET", f"/jobs/{job_id}").json()
    return client.get(f"/api/v1/jobs/{job_id}").json()
