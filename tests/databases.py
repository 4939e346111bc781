"""Throwaway PostgreSQL databases, for the tests and the benchmarks."""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy.engine import make_url

from app.migrate import upgrade

POSTGRES_ADMIN_URL = os.environ.get(
    "VIRTDECK_TEST_POSTGRES_URL", "postgresql+psycopg://virtdeck:virtdeck@127.0.0.1:5432/postgres"
)


@contextmanager
def throwaway_postgresql(
    server_url: str = POSTGRES_ADMIN_URL, prefix: str = "virtdeck_test"
) -> Iterator[str]:
    """A fresh, migrated database of its own on the server that server_url names, dropped
    afterwards (even while processes are still connected to it)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = make_url(server_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
