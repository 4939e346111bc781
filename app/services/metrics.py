"""/metrics in the Prometheus text format: hosts and guests by state, jobs and backups by status,
and every running worker's sync durations, event lag, host leases and queue (all from the
database, so every instance tells the same), and this web process's open event streams."""

from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Backup, Guest, Host, Job
from app.services.backups.overview import GuestFigures, guest_figures, totals
from app.services.work_requests import live_workers, queued_jobs


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """A sample's value to 15 digits (`g` alone keeps 6 and rounds UNIX times, large counts)."""
    return f"{value:.15g}"


def _family(
    name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]
) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        shown = _number(value)
        lines.append(f"{name}{{{label_text}}} {shown}" if label_text else f"{name} {shown}")
    return lines


def render(session: Session, *, instance: str, streams: int) -> str:
    """The whole exposition; `instance` names this web process (its event streams)."""
    hosts = {h.id: h for h in session.scalars(select(Host))}
    workers = live_workers(session)
    # Each host's figures from the worker syncing it (a lease moves: the latest report wins).
    stats: dict[int, dict[str, float]] = {}
    for worker in sorted(workers, key=lambda w: w.heartbeat_at):
        for host_id, figures in ((worker.stats or {}).get("hosts") or {}).items():
            stats[int(host_id)] = figures
    host_states: dict[str, int] = {}
    for host in hosts.values():
        host_states[host.connection] = host_states.get(host.connection, 0) + 1
    guest_rows = session.execute(
        select(Host.connection, Guest.state, func.count())
        .join(Host, Guest.host_id == Host.id)
        .where(Guest.gone_at.is_(None))
        .group_by(Host.connection, Guest.state)
    )
    guest_states: dict[str, int] = {}
    for connection, state, count in guest_rows:
        shown = "unknown" if connection == "unreachable" else state
        guest_states[shown] = guest_states.get(shown, 0) + count
    jobs = session.execute(
        select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status)
    )
    backups = session.execute(select(Backup.status, func.count()).group_by(Backup.status))

    def per_host(read: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [
            ({"host": hosts[h].name, **labels}, s[read])
            for h, s in sorted(stats.items())
            if h in hosts and s.get(read) is not None
        ]

    lines: list[str] = []
    lines += _family(
        "virtdeck_hosts", "gauge", "Registered hosts by connection state.",
        [({"state": k}, v) for k, v in sorted(host_states.items())],
    )  # fmt: skip
    lines += _family(
        "virtdeck_guests", "gauge",
        "Guests by state (unknown: their host is unreachable); gone ones are not counted.",
        [({"state": k}, v) for k, v in sorted(guest_states.items())],
    )  # fmt: skip
    lines += _family(
        "virtdeck_jobs", "gauge", "Jobs by kind and status.",
        [({"kind": k, "status": s}, n) for k, s, n in sorted(jobs)],
    )  # fmt: skip
    lines += _family(
        "virtdeck_backups", "gauge", "Backups by status.",
        [({"status": s}, n) for s, n in sorted(backups)],
    )  # fmt: skip
    lines += _backup_watch(session)
    lines += _summary(
        "virtdeck_sync_duration_seconds",
        "Syncs (periodic passes and full reconciles) of the hosts this instance syncs: libvirt "
        "read and database write.",
        per_host("sync_seconds_total"), per_host("syncs"),
    )  # fmt: skip
    lines += _family(
        "virtdeck_sync_last_duration_seconds", "gauge", "The last sync of each host.",
        per_host("last_sync_seconds"),
    )  # fmt: skip
    lines += _family(
        "virtdeck_events_received_total", "counter", "Guest events libvirt sent.",
        per_host("events_received"),
    )  # fmt: skip
    lines += _family(
        "virtdeck_domains_refreshed_total", "counter",
        "Guests whose XML was read again: named by an event, new or changed state at a periodic "
        "pass, or every one at a full reconcile.",
        per_host("refreshed_by_event", by="event") + per_host("refreshed_by_pass", by="pass")
        + per_host("refreshed_by_reconcile", by="reconcile"),
    )  # fmt: skip
    lines += _family(
        "virtdeck_last_reconcile_timestamp_seconds", "gauge",
        "When (UNIX time) the last full reconcile of each host ended.",
        per_host("last_reconcile_at"),
    )  # fmt: skip
    lines += _summary(
        "virtdeck_event_lag_seconds",
        "From a libvirt event to its guest's change committed to the database.",
        per_host("event_lag_seconds_total"), per_host("refreshed_by_event"),
    )  # fmt: skip
    lines += _family(
        "virtdeck_event_last_lag_seconds", "gauge", "The lag of each host's last event.",
        per_host("last_event_lag_seconds"),
    )  # fmt: skip
    lines += _family(
        "virtdeck_host_leases", "gauge", "Hosts whose lease each worker holds (it syncs them).",
        [({"instance": w.instance}, len((w.stats or {}).get("hosts") or {})) for w in workers],
    )  # fmt: skip
    lines += _family(
        "virtdeck_worker_jobs_running", "gauge", "Jobs each worker is running.",
        [({"instance": w.instance}, (w.stats or {}).get("jobs_running", 0)) for w in workers],
    )  # fmt: skip
    lines += _family(
        "virtdeck_job_queue_depth", "gauge", "Queued jobs no worker has taken yet.",
        [({}, queued_jobs(session))],
    )  # fmt: skip
    lines += _family(
        "virtdeck_event_streams", "gauge", "Server-sent event streams open on this instance.",
        [({"instance": instance}, streams)],
    )  # fmt: skip
    return "\n".join(lines) + "\n"


def _backup_watch(session: Session) -> list[str]:
    """Per guest: its last successful backup and its failures; the guests needing a look."""
    figures = guest_figures(session)
    counted = totals(session)

    def guest(f: GuestFigures) -> dict[str, str]:
        return {"uuid": f.uuid, "guest": f.name}

    lines = _family(
        "virtdeck_backup_last_success_timestamp_seconds", "gauge",
        "When (UNIX time) each guest's last successful backup finished (guests with none are "
        "left out).",
        [(guest(f), f.last_success_at.timestamp()) for f in figures if f.last_success_at],
    )  # fmt: skip
    lines += _family(
        "virtdeck_backup_failures", "gauge",
        "Each guest's backups on record that failed, or were found corrupt by a verification.",
        [({**guest(f), "status": "failed"}, f.failed) for f in figures]
        + [({**guest(f), "status": "corrupt"}, f.corrupt) for f in figures],
    )  # fmt: skip
    lines += _family(
        "virtdeck_guests_backup_attention", "gauge",
        "Present guests with no successful backup (none), or whose newest finished backup failed "
        "or is corrupt (last_failed).",
        [({"reason": "none"}, counted.no_backup), ({"reason": "last_failed"}, counted.last_failed)],
    )  # fmt: skip
    return lines


def _summary(
    name: str,
    help_text: str,
    totals: list[tuple[dict[str, str], float]],
    counts: list[tuple[dict[str, str], float]],
) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} summary"]
    for (labels, total), (_, count) in zip(totals, counts, strict=True):
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        lines += [
            f"{name}_sum{{{label_text}}} {_number(total)}",
            f"{name}_count{{{label_text}}} {_number(count)}",
        ]
    return lines
