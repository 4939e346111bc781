"""The JSON API under /api/v1."""

from fastapi import APIRouter

import app.paths  # noqa: F401  (registers the path types the routes name)
from app.api import (
    accounts,
    audit,
    backup_overview,
    backup_schedules,
    backups,
    consoles,
    guest_bulk,
    guest_clone,
    guest_create,
    guest_delete,
    guest_edit,
    guest_hardware,
    guests,
    hosts,
    jobs,
    overcommit,
    profiles,
    snapshots,
    storage_admin,
    uploads,
    usage,
)

router = APIRouter(prefix="/api/v1")
router.include_router(hosts.router)
router.include_router(guests.router)
router.include_router(guest_bulk.router)
router.include_router(consoles.router)
router.include_router(guest_create.router)
router.include_router(profiles.router)
router.include_router(guest_delete.router)
router.include_router(guest_edit.router)
router.include_router(guest_hardware.router)
router.include_router(guest_clone.router)
router.include_router(snapshots.router)
router.include_router(accounts.router)
router.include_router(audit.router)
router.include_router(overcommit.router)
router.include_router(backup_overview.router)
router.include_router(backups.router)
router.include_router(backup_schedules.router)
router.include_router(jobs.router)
router.include_router(uploads.router)
router.include_router(storage_admin.router)
router.include_router(usage.router)
