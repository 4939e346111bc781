"""The JSON API under /api/v1."""

from fastapi import APIRouter

from app.api import guests, hosts

router = APIRouter(prefix="/api/v1")
router.include_router(hosts.router)
router.include_router(guests.router)
