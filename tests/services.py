"""Real PostgreSQL, MariaDB and Redis for the tests: one fresh database (or key prefix)
per use, removed afterwards, even when the test fails.

Where a service does not answer, the tests that need it skip with the reason, except
under CI=true, where a missing service fails the run.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from glowing_fiesta.storage import migrate
from glowing_fiesta.storage.dialects import driver_url

PG_URL = os.environ.get("GF_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MARIADB_URL = os.environ.get("GF_TEST_MARIADB_URL", "mariadb://root@127.0.0.1:3306/mysql")
REDIS_URL = os.environ.get("GF_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def unavailable(what: str, exc: BaseException) -> None:
    """Skip, or fail under CI=true: CI must never pass by skipping a real engine."""
    message = f"{what} is not available ({exc.__class__.__name__}: {exc})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)


@contextmanager
def server_database(admin_url: str) -> Iterator[str]:
    """A new, migrated database on a PostgreSQL or MariaDB server; dropped at exit."""
    name = f"gf_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(driver_url(admin_url), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
    except OperationalError as exc:
        admin.dispose()
        unavailable(admin_url.split(":", 1)[0], exc)
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            if admin.dialect.name == "postgresql":
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


@contextmanager
def redis_prefix() -> Iterator[tuple[str, str]]:
    """(Redis URL, a unique key prefix); every key under the prefix is deleted at exit."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        unavailable("redis", exc)
    prefix = f"gftest-{uuid.uuid4().hex[:12]}"
    try:
        yield REDIS_URL, prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@contextmanager
def private_redis(port: int | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Redis server of our own on a free port (or on `port`, to start one again where
    another was stopped), for tests that take Redis away."""
    import shutil
    import socket
    import time

    import redis

    exe = shutil.which("redis-server")
    if exe is None:
        unavailable("redis-server", FileNotFoundError("redis-server is not installed"))
    assert exe is not None
    if port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield url, proc
    finally:
        client.close()
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
