"""Apply schema migrations (Alembic) to the database a URL names.

`python -m glowing_fiesta.storage.migrate` upgrades the database whose URL it reads on
standard input (not the command line, where other users could read a password)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from glowing_fiesta.storage.dialects import create_sqlite, driver_url

_SCRIPTS = Path(__file__).parent / "migrations"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    return cfg


def _prepare(url: str) -> None:
    parsed = driver_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        create_sqlite(parsed.database)


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to `revision`; safe to run on an up-to-date database."""
    _prepare(url)
    _run(url, command.upgrade, revision)


def downgrade(url: str, revision: str) -> None:
    """Take the schema back to `revision` (each migration's `downgrade`)."""
    _run(url, command.downgrade, revision)


def _run(url: str, step: Callable[[Config, str], None], revision: str) -> None:
    """An Alembic command in one transaction on the database `url` names."""
    engine = create_engine(driver_url(url), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            cfg = _config()
            cfg.attributes["connection"] = conn
            step(cfg, revision)
    finally:
        engine.dispose()


def is_current(url: str) -> bool:
    """True when the database is at the newest migration."""
    engine = create_engine(driver_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    return current == ScriptDirectory.from_config(_config()).get_current_head()


def describe(exc: BaseException) -> str:
    """A failed migration's reason in one line (SQLAlchemy's messages run to several)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _main() -> int:
    try:
        upgrade(sys.stdin.read().strip())
    except Exception as exc:  # the parent shows this line as the reason
        print(describe(exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
