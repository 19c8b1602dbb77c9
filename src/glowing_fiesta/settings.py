"""Every GF_* setting, typed and validated: the only reader of the environment.

Settings come from environment variables with the `GF_` prefix and an optional `.env`
file in the working directory. A bad value stops start-up with a message that names
the setting, e.g. "GF_RETENTION_DAYS: Input should be greater than 0".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DATABASE_URL = "sqlite:///data/glowing-fiesta.db"


class SettingsError(Exception):
    """A setting has a value the service cannot use; the message names the setting."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GF_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    # Every Redis key the service uses starts with this, so several deployments (or test
    # runs) can share one Redis.
    redis_prefix: str = Field(default="gf", min_length=1, max_length=64)
    queue_max_batches: int = Field(default=10_000, gt=0)
    queue_claim_idle_seconds: float = Field(default=30.0, gt=0)
    retention_days: int = Field(default=90, gt=0, le=36500)
    rollup_retention_days: int = Field(default=3650, gt=0, le=36500)
    rate_limit_per_minute: int = Field(default=6000, gt=0)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0, le=64 * 1024 * 1024)
    # SPEC.md fixes a batch at 1,000 points at most; a deployment may only lower it.
    max_batch_points: int = Field(default=1000, gt=0, le=1000)
    clock_skew_seconds: int = Field(default=300, ge=0)
    statsd_port: int | None = Field(default=None, ge=1, le=65535)
    statsd_host: str = "127.0.0.1"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    # NORMAL loses at most the last commits on power loss (never on a process crash);
    # FULL survives power loss too. SPEC §6: the default must say what it trades.
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    key_cache_seconds: float = Field(default=5.0, ge=0, le=10)
    retention_interval_seconds: float = Field(default=3600.0, gt=0)
    writer_max_points: int = Field(default=20_000, gt=0)
    # Embedded layout on SQLite: journal each write and write its blocks and cells in a
    # rollup process, many writes at a time (storage/journaling.py); false: with the
    # write, on `serve`'s writer thread.
    rollup_process: bool = True

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        scheme, sep, _ = value.partition("://")
        scheme = scheme.split("+", 1)[0].lower()
        if not sep or scheme not in {"sqlite", "postgresql", "postgres", "mysql", "mariadb"}:
            raise ValueError("must be a sqlite:///path, postgresql://, mysql:// or mariadb:// URL")
        return value

    @field_validator("database_url")
    @classmethod
    def _names_a_database(cls, value: str) -> str:
        try:  # the parser the storage uses: a password may hold "?", "/" or "@"
            database = make_url(value).database
        except ArgumentError:
            raise ValueError("is not a valid database URL") from None
        if value.partition("://")[0].split("+", 1)[0].lower() == "sqlite":
            if not database or database == ":memory:":
                # A database in memory would be a new, empty one in every connection.
                raise ValueError("must name a file: sqlite:///relative/path or sqlite:////abs/path")
        elif not database:
            # Drivers would quietly pick a default database (PostgreSQL: "postgres").
            raise ValueError("must name the database: …://user@host:port/DATABASE")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and value.partition("://")[0].lower() not in {
            "redis",
            "rediss",
            "unix",
        }:
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @model_validator(mode="after")
    def _rollups_outlive_raw_points(self) -> Settings:
        # SPEC §5: long-range queries are answered from rollups, never from raw points;
        # minute cells are deleted with the raw points, the coarser ones after this.
        if self.rollup_retention_days < self.retention_days:
            raise ValueError(
                f"GF_ROLLUP_RETENTION_DAYS ({self.rollup_retention_days}) must not be less "
                f"than GF_RETENTION_DAYS ({self.retention_days}): rollups are kept at least "
                "as long as raw points"
            )
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    def sqlite_path(self) -> Path | None:
        """The SQLite file the database URL names, or None for server databases."""
        if self.database_url.split(":", 1)[0].split("+", 1)[0].lower() != "sqlite":
            return None
        path = self.database_url.split(":///", 1)[1] if ":///" in self.database_url else ""
        return Path(path) if path and path != ":memory:" else None


def load_settings(**overrides: object) -> Settings:
    """Read settings once, at the edge; raise SettingsError naming each bad setting."""
    # pydantic-settings reads `.env` only if it is a file and passes over anything else
    # in silence: settings meant for this service would be lost without a word.
    if os.path.lexists(".env") and not os.path.isfile(".env"):
        raise SettingsError(".env: not a readable file (a directory, or a broken link)")
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            if err["loc"]:
                name = "GF_" + "_".join(str(p) for p in err["loc"]).upper()
                problems.append(f"{name}: {err['msg']}")
            else:  # a rule across settings names them itself
                problems.append(str(err["msg"]).removeprefix("Value error, "))
        raise SettingsError("; ".join(problems)) from None
    except UnicodeDecodeError as exc:
        raise SettingsError(f".env: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
