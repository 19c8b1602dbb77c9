"""One storage fixture per engine: every contract test runs on each of them.

Only SQLite exists today; PostgreSQL and MariaDB join this list with the scale-out work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from glowing_fiesta.storage import migrate
from glowing_fiesta.storage.sql import SqlStorage


@pytest.fixture(params=["sqlite"])
def engine_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'contract.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture
def store(engine_url: str) -> Iterator[SqlStorage]:
    s = SqlStorage(engine_url)
    yield s
    asyncio.run(s.close())
