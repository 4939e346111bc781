"""The FastAPI dependencies: settings, a database session, the sync manager."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.config import Settings
from app.workers.sync import SyncManager


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """A session for the request; routes that change something commit it themselves."""
    with request.app.state.sessions() as session:
        yield session


def get_sync(request: Request) -> SyncManager:
    """The sync manager of this process."""
    return request.app.state.sync


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
SyncDep = Annotated[SyncManager, Depends(get_sync)]
