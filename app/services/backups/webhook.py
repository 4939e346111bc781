"""The backup webhook: when a backup or a verification fails, a small JSON POST to the URL the
settings name, sent from a background thread so that the job never waits for it."""

import json
import logging
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.models.base import utcnow
from app.services.backups.catalog import get_backup

log = logging.getLogger(__name__)
TIMEOUT_SECONDS = 5.0
# The error as the hook receives it, at most this long (it may quote libvirt at length).
ERROR_CHARS = 2000
# One sender: a burst of failures is posted one after the other, never a thread each.
_SENDER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backup-webhook")


def report_failure(
    sessions: sessionmaker[Session], settings: Settings, backup_id: int, *, event: str
) -> None:
    """Tell the webhook, if one is set, that the backup failed (event backup.failed) or was
    found corrupt (verify.failed); the POST goes in the background."""
    if not settings.backup_webhook_url:
        return
    with sessions() as session:
        backup = get_backup(session, backup_id)
        payload = {
            "event": event,
            "guest": {"uuid": backup.guest_uuid, "name": backup.guest_name},
            "host": backup.host_name,
            "backup_id": backup.id,
            "status": backup.status,
            "error": (backup.error or "")[:ERROR_CHARS],
            "time": utcnow().isoformat(),
        }
    _SENDER.submit(_post, settings.backup_webhook_url, payload)


def _post(url: str, payload: dict[str, Any]) -> None:
    """POST payload as JSON; a failure is logged, never raised."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "virtdeck"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            response.read(1024)
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
        log.warning("backup webhook (%s of backup %s) failed: %s", payload["event"],
                    payload["backup_id"], exc)  # fmt: skip
