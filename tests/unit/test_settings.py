"""GF_* settings: defaults, the environment, a .env file, errors naming the setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from glowing_fiesta.settings import DEFAULT_DATABASE_URL, Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No GF_* variable from the caller's shell and no .env file from the checkout."""
    for name in list(os.environ):
        if name.upper().startswith("GF_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    s = load_settings()
    assert s.database_url == DEFAULT_DATABASE_URL
    assert s.database_url.startswith("sqlite:///data/")
    assert s.sqlite_path() == Path("data/glowing-fiesta.db")
    assert s.redis_url is None
    assert s.retention_days == 90
    assert s.rate_limit_per_minute == 6000
    assert s.max_body_bytes == 1024 * 1024
    assert s.max_batch_points == 1000
    assert s.clock_skew_seconds == 300
    assert s.statsd_port is None
    assert s.log_level == "INFO"
    assert 0 <= s.key_cache_seconds <= 10


@pytest.mark.parametrize(
    ("var", "raw", "field", "value"),
    [
        (
            "GF_DATABASE_URL",
            "sqlite:////srv/gf/metrics.db",
            "database_url",
            "sqlite:////srv/gf/metrics.db",
        ),
        (
            "GF_DATABASE_URL",
            "postgresql://gf@db:5432/gf",
            "database_url",
            "postgresql://gf@db:5432/gf",
        ),
        ("GF_DATABASE_URL", "postgres://gf@db/gf", "database_url", "postgres://gf@db/gf"),
        ("GF_DATABASE_URL", "mysql://gf@db:3306/gf", "database_url", "mysql://gf@db:3306/gf"),
        ("GF_DATABASE_URL", "mariadb://gf@db/gf", "database_url", "mariadb://gf@db/gf"),
        ("GF_REDIS_URL", "redis://cache:6379/0", "redis_url", "redis://cache:6379/0"),
        ("GF_RETENTION_DAYS", "30", "retention_days", 30),
        ("GF_RATE_LIMIT_PER_MINUTE", "120", "rate_limit_per_minute", 120),
        ("GF_MAX_BODY_BYTES", "2048", "max_body_bytes", 2048),
        ("GF_STATSD_PORT", "8125", "statsd_port", 8125),
        ("GF_LOG_LEVEL", "WARNING", "log_level", "WARNING"),
        ("GF_LOG_LEVEL", "debug", "log_level", "DEBUG"),
        ("GF_CLOCK_SKEW_SECONDS", "0", "clock_skew_seconds", 0),
        ("GF_MAX_BATCH_POINTS", "50", "max_batch_points", 50),
        ("GF_KEY_CACHE_SECONDS", "0", "key_cache_seconds", 0),
        ("GF_SQLITE_SYNCHRONOUS", "FULL", "sqlite_synchronous", "FULL"),
    ],
)
def test_gf_variables_are_read(
    monkeypatch: pytest.MonkeyPatch, var: str, raw: str, field: str, value: object
) -> None:
    monkeypatch.setenv(var, raw)
    assert getattr(load_settings(), field) == value


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("GF_RETENTION_DAYS", "-1"),
        ("GF_RETENTION_DAYS", "0"),
        ("GF_RETENTION_DAYS", "ninety"),
        ("GF_RETENTION_DAYS", "1.5"),
        ("GF_RATE_LIMIT_PER_MINUTE", "0"),
        ("GF_RATE_LIMIT_PER_MINUTE", "-5"),
        ("GF_MAX_BODY_BYTES", "0"),
        ("GF_MAX_BODY_BYTES", "1e9"),
        ("GF_MAX_BATCH_POINTS", "0"),
        ("GF_MAX_BATCH_POINTS", "1001"),
        ("GF_CLOCK_SKEW_SECONDS", "-1"),
        ("GF_STATSD_PORT", "0"),
        ("GF_STATSD_PORT", "65536"),
        ("GF_STATSD_PORT", "udp"),
        ("GF_LOG_LEVEL", "verbose"),
        ("GF_KEY_CACHE_SECONDS", "60"),
        ("GF_SQLITE_SYNCHRONOUS", "OFF"),
        ("GF_DATABASE_URL", "http://db/gf"),
        ("GF_DATABASE_URL", "oracle://db/gf"),
        ("GF_DATABASE_URL", "/var/lib/gf.db"),
        ("GF_DATABASE_URL", "sqlite"),
        ("GF_DATABASE_URL", "sqlite:gf.db"),
        ("GF_DATABASE_URL", ""),
        # No file: a new, empty database in every connection.
        ("GF_DATABASE_URL", "sqlite://"),
        ("GF_DATABASE_URL", "sqlite:///:memory:"),
        # No database: the driver would quietly use a default one.
        ("GF_DATABASE_URL", "mysql://root@127.0.0.1:3306"),
        ("GF_DATABASE_URL", "postgresql://gf@db:5432/"),
        ("GF_DATABASE_URL", "postgresql://gf:pw@db?x=a@b/c"),
        ("GF_REDIS_URL", "http://127.0.0.1:6379"),
        ("GF_REDIS_URL", "localhost:6379"),
    ],
)
def test_a_bad_value_raises_settings_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, raw: str
) -> None:
    monkeypatch.setenv(var, raw)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(f"{var}: ")
    assert len(message) > len(var) + 5


def test_every_bad_setting_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GF_RETENTION_DAYS", "-1")
    monkeypatch.setenv("GF_LOG_LEVEL", "loud")
    monkeypatch.setenv("GF_RETENTION_INTERVAL_SECONDS", "30")  # a good one stays quiet
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "GF_RETENTION_DAYS" in message
    assert "GF_LOG_LEVEL" in message
    assert "GF_RETENTION_INTERVAL_SECONDS" not in message


def test_overrides_are_validated_like_the_environment() -> None:
    with pytest.raises(SettingsError, match=r"^GF_RETENTION_DAYS: "):
        load_settings(retention_days=0)
    assert load_settings(retention_days=7).retention_days == 7


def test_a_dotenv_file_in_the_working_directory_is_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("GF_RETENTION_DAYS=14\nGF_LOG_LEVEL=ERROR\n", encoding="utf-8")
    s = load_settings()
    assert (s.retention_days, s.log_level) == (14, "ERROR")
    monkeypatch.setenv("GF_RETENTION_DAYS", "21")
    assert load_settings().retention_days == 21  # the environment wins over the file


def test_a_bad_value_in_the_dotenv_file_is_named(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("GF_RATE_LIMIT_PER_MINUTE=lots\n", encoding="utf-8")
    with pytest.raises(SettingsError, match=r"^GF_RATE_LIMIT_PER_MINUTE: "):
        load_settings()


def test_rollups_must_outlive_raw_points(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GF_RETENTION_DAYS", "30")
    monkeypatch.setenv("GF_ROLLUP_RETENTION_DAYS", "7")
    with pytest.raises(SettingsError, match=r"^GF_ROLLUP_RETENTION_DAYS \(7\) must not be less"):
        load_settings()
    monkeypatch.setenv("GF_ROLLUP_RETENTION_DAYS", "30")
    assert load_settings().rollup_retention_days == 30


def test_a_dotenv_file_that_is_not_utf8_is_a_settings_error(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes("# café\nGF_RETENTION_DAYS=14\n".encode("latin-1"))
    with pytest.raises(SettingsError, match=r"^\.env: not UTF-8"):
        load_settings()


@pytest.mark.parametrize("kind", ["directory", "broken link"])
def test_a_dotenv_that_is_not_a_file_is_a_settings_error(tmp_path: Path, kind: str) -> None:
    if kind == "directory":
        (tmp_path / ".env").mkdir()
    else:
        (tmp_path / ".env").symlink_to(tmp_path / "gone")
    with pytest.raises(SettingsError, match=r"^\.env: not a readable file"):
        load_settings()


def test_a_password_may_hold_what_separates_a_url_s_parts() -> None:
    for url in (
        "postgresql://gf:pa?ss@db:5432/gf",
        "mysql://gf:a@b@db/gf?charset=utf8mb4",
        "postgresql://gf:pw@db/gf?sslrootcert=/etc/ca@1.pem",
    ):
        assert load_settings(database_url=url).database_url == url


def test_redis_urls_of_every_scheme_redis_takes_are_accepted() -> None:
    for url in ("redis://127.0.0.1:6379/0", "rediss://cache:6380/1", "unix:///run/redis.sock"):
        assert load_settings(redis_url=url).redis_url == url


def test_unrelated_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETENTION_DAYS", "-1")
    monkeypatch.setenv("DATABASE_URL", "oracle://nope")
    monkeypatch.setenv("GF_SOMETHING_NEW", "x")
    assert load_settings().retention_days == 90


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///data/glowing-fiesta.db", Path("data/glowing-fiesta.db")),
        ("sqlite:///gf.db", Path("gf.db")),
        ("sqlite:////var/lib/gf/gf.db", Path("/var/lib/gf/gf.db")),
        ("SQLITE:///Upper.db", Path("Upper.db")),
        ("sqlite+pysqlite:///driver.db", Path("driver.db")),
        ("postgresql://gf@db:5432/gf", None),
        ("mysql://gf@db/gf", None),
        ("mariadb://gf@db/gf", None),
    ],
)
def test_sqlite_path(url: str, path: Path | None) -> None:
    assert Settings(database_url=url).sqlite_path() == path
