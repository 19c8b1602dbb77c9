"""Fixtures shared by every test: real SQLite files, the real app, real keys."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from glowing_fiesta.auth import keys as tokens
from glowing_fiesta.bootstrap import create_app_from
from glowing_fiesta.logs import configure
from glowing_fiesta.model import Scope
from glowing_fiesta.settings import Settings
from glowing_fiesta.storage import migrate
from glowing_fiesta.storage.sql import SqlStorage


def pytest_configure(config: pytest.Config) -> None:
    # The service's own logging, as `serve` configures it, for the in-process tests too:
    # structlog's defaults print a failure's traceback with every frame's locals.
    configure("INFO", "console")


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """A fresh, migrated SQLite database file for one test."""
    url = f"sqlite:///{tmp_path / 'gf.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url, log_format="console", retention_interval_seconds=3600
    )


KeyMaker = Callable[..., str]


@pytest.fixture
def make_key(database_url: str) -> KeyMaker:
    """Create a real API key in the test database; returns the token."""
    counter = iter(range(1_000_000))

    def make(
        scopes: str = "write,read", rate_limit: int | None = None, name: str | None = None
    ) -> str:
        token, prefix = tokens.generate()

        async def create() -> None:
            storage = SqlStorage(database_url)
            try:
                await storage.create_key(
                    name=name or f"key-{next(counter)}",
                    prefix=prefix,
                    secret_hash=tokens.hash_token(token),
                    scopes=frozenset(Scope(s) for s in scopes.split(",")),
                    rate_limit=rate_limit,
                    now=time.time(),
                )
            finally:
                await storage.close()

        asyncio.run(create())
        return token

    return make


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The real application (writer included) on the test database, in process."""
    with TestClient(create_app_from(settings)) as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
