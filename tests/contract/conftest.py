"""One storage fixture per engine: every contract test runs on each of them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from glowing_fiesta.storage import migrate
from glowing_fiesta.storage.sql import SqlStorage
from tests.services import MARIADB_URL, PG_URL, server_database

ENGINES = ["sqlite", "postgresql", "mariadb"]


@pytest.fixture(params=ENGINES)
def engine_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'contract.db'}"
        migrate.upgrade(url)
        yield url
        return
    with server_database(PG_URL if request.param == "postgresql" else MARIADB_URL) as url:
        yield url


@pytest.fixture
def store(engine_url: str) -> Iterator[SqlStorage]:
    s = SqlStorage(engine_url)
    yield s
    asyncio.run(s.close())
