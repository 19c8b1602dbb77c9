"""The real `glowing-fiesta` command (SPEC §4) run as a subprocess on a SQLite file."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from glowing_fiesta.auth import keys as tokens
from glowing_fiesta.model import ApiKey, MetricType, Point, PointBatch, Scope
from glowing_fiesta.storage import migrate
from glowing_fiesta.storage.base import WriteItem
from glowing_fiesta.storage.sql import SqlStorage
from tests.system.conftest import EXE

pytestmark = pytest.mark.system

TOKEN_RE = re.compile(r"gf_[A-Za-z0-9]{8}_[A-Za-z0-9_-]{43}")
DAY = 86400


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return tmp_path / "state" / "gf.db"


@pytest.fixture
def env(tmp_path: Path, db_file: Path) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.upper().startswith("GF_")}
    out["GF_DATABASE_URL"] = f"sqlite:///{db_file}"
    out["GF_LOG_FORMAT"] = "console"
    return out


@pytest.fixture
def url(db_file: Path) -> str:
    return f"sqlite:///{db_file}"


def run(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args], env=env, capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )


def ok(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = run(env, *args)
    assert done.returncode == 0, f"glowing-fiesta {' '.join(args)}: {done.stderr}"
    assert "Traceback" not in done.stderr
    return done


def fails(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = run(env, *args)
    assert done.returncode != 0, f"glowing-fiesta {' '.join(args)} succeeded: {done.stdout}"
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stdout == ""
    return done


def create(env: dict[str, str], name: str, *options: str) -> str:
    done = ok(env, "keys", "create", name, *options)
    return done.stdout.strip()


def stored_keys(url: str) -> dict[str, ApiKey]:
    async def go() -> dict[str, ApiKey]:
        storage = SqlStorage(url)
        try:
            return {k.name: k for k in await storage.list_keys()}
        finally:
            await storage.close()

    return asyncio.run(go())


# -- keys create ----------------------------------------------------------------------


def test_keys_create_prints_only_the_key(env: dict[str, str], url: str, db_file: Path) -> None:
    assert not db_file.exists()
    done = ok(env, "keys", "create", "ci")
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    token = lines[0]
    assert TOKEN_RE.fullmatch(token), token
    assert done.stdout == token + "\n"
    # Messages go to stderr, and never carry the secret.
    assert "ci" in done.stderr
    assert token not in done.stderr
    assert token.split("_", 2)[2] not in done.stderr
    # The key is real: stored under its prefix, only as a hash, with the default scopes.
    key = stored_keys(url)["ci"]
    assert key.prefix == tokens.prefix_of(token)
    assert key.secret_hash != token
    assert tokens.matches(token, key.secret_hash)
    assert key.scopes == frozenset({Scope.WRITE, Scope.READ})
    assert key.rate_limit is None
    assert key.active


def test_each_key_is_new(env: dict[str, str], url: str) -> None:
    a, b = create(env, "a"), create(env, "b")
    assert a != b
    assert tokens.prefix_of(a) != tokens.prefix_of(b)
    assert set(stored_keys(url)) == {"a", "b"}


def test_a_duplicate_name_fails_and_keeps_the_first_key(env: dict[str, str], url: str) -> None:
    first = create(env, "deploy")
    done = fails(env, "keys", "create", "deploy")
    assert "deploy" in done.stderr
    assert "already exists" in done.stderr
    assert first not in done.stderr
    keys = stored_keys(url)
    assert list(keys) == ["deploy"]
    assert tokens.matches(first, keys["deploy"].secret_hash)


def test_names_are_trimmed_and_case_sensitive(env: dict[str, str], url: str) -> None:
    create(env, "  Deploy  ")
    fails(env, "keys", "create", "Deploy")
    create(env, "deploy")
    assert set(stored_keys(url)) == {"Deploy", "deploy"}


@pytest.mark.parametrize("name", ["", "   ", "k" * 256, "tab\there", "bell\a"])
def test_a_blank_long_or_unprintable_name_is_refused(env: dict[str, str], name: str) -> None:
    done = fails(env, "keys", "create", name)
    assert "NAME" in done.stderr


def test_a_name_of_255_characters_is_taken(env: dict[str, str], url: str) -> None:
    create(env, "k" * 255)
    assert set(stored_keys(url)) == {"k" * 255}


@pytest.mark.parametrize(
    ("option", "scopes"),
    [
        ("write", {Scope.WRITE}),
        ("read", {Scope.READ}),
        ("admin", {Scope.ADMIN}),
        ("read,admin", {Scope.READ, Scope.ADMIN}),
        (" write , read , admin ", {Scope.WRITE, Scope.READ, Scope.ADMIN}),
        ("write,write", {Scope.WRITE}),
    ],
)
def test_scopes_are_stored(env: dict[str, str], url: str, option: str, scopes: set[Scope]) -> None:
    create(env, "k", "--scopes", option)
    assert stored_keys(url)["k"].scopes == scopes


@pytest.mark.parametrize("option", ["bogus", "write,delete", "write;read", ",", "", " "])
def test_bad_scopes_are_refused_and_create_nothing(
    env: dict[str, str], db_file: Path, option: str
) -> None:
    done = fails(env, "keys", "create", "k", "--scopes", option)
    assert "--scopes" in done.stderr
    assert not db_file.exists() or "k" not in stored_keys(f"sqlite:///{db_file}")


def test_rate_limit_is_stored_and_listed(env: dict[str, str], url: str) -> None:
    create(env, "slow", "--rate-limit", "5")
    create(env, "default")
    keys = stored_keys(url)
    assert keys["slow"].rate_limit == 5
    assert keys["default"].rate_limit is None
    rows = {line.split()[0]: line.split() for line in ok(env, "keys", "list").stdout.splitlines()}
    assert "5" in rows["slow"]
    assert "6000" in rows["default"]  # GF_RATE_LIMIT_PER_MINUTE's default


@pytest.mark.parametrize("limit", ["0", "-1", "ten", "1.5", "2147483648", "9" * 30])
def test_a_bad_rate_limit_is_refused(env: dict[str, str], db_file: Path, limit: str) -> None:
    done = fails(env, "keys", "create", "k", "--rate-limit", limit)
    assert "--rate-limit" in done.stderr
    assert not db_file.exists() or stored_keys(f"sqlite:///{db_file}") == {}
    assert "Traceback" not in done.stderr


def test_the_largest_rate_limit_is_stored(env: dict[str, str], url: str) -> None:
    create(env, "fast", "--rate-limit", "2147483647")
    assert stored_keys(url)["fast"].rate_limit == 2147483647


# -- keys list / revoke ---------------------------------------------------------------


def test_keys_list_shows_names_and_prefixes_never_secrets(env: dict[str, str]) -> None:
    made = {
        name: create(env, name, "--scopes", scopes)
        for name, scopes in [
            ("ci", "write"),
            ("dashboard", "read"),
            ("ops", "admin,read"),
        ]
    }
    done = ok(env, "keys", "list")
    listing = done.stdout + done.stderr
    for name, token in made.items():
        prefix = tokens.prefix_of(token)
        assert prefix is not None
        row = next(line for line in done.stdout.splitlines() if line.startswith(name + " "))
        assert prefix in row
        assert "active" in row
        assert token not in listing
        assert token.split("_", 2)[2] not in listing
    assert "write" in next(line for line in done.stdout.splitlines() if line.startswith("ci "))


def test_keys_list_on_an_empty_database(env: dict[str, str]) -> None:
    done = ok(env, "keys", "list")
    assert not any(TOKEN_RE.search(line) for line in done.stdout.splitlines())


def test_keys_revoke_by_name(env: dict[str, str], url: str) -> None:
    create(env, "old")
    create(env, "new")
    done = ok(env, "keys", "revoke", "old")
    assert "revoked" in done.stderr
    keys = stored_keys(url)
    assert not keys["old"].active
    assert keys["new"].active
    row = next(line for line in ok(env, "keys", "list").stdout.splitlines() if "old" in line)
    assert "revoked" in row


def test_keys_revoke_by_prefix(env: dict[str, str], url: str) -> None:
    token = create(env, "laptop")
    create(env, "server")
    prefix = tokens.prefix_of(token)
    assert prefix is not None
    ok(env, "keys", "revoke", prefix)
    keys = stored_keys(url)
    assert not keys["laptop"].active
    assert keys["server"].active


def test_keys_revoke_by_the_whole_key_never_prints_it(env: dict[str, str], url: str) -> None:
    token = create(env, "leaked")
    create(env, "server")
    prefix = tokens.prefix_of(token)
    assert prefix is not None
    # Another secret under the same prefix is not that key: refused, and not echoed.
    forged = f"{prefix}_{'x' * 43}"
    done = fails(env, "keys", "revoke", forged)
    assert prefix in done.stderr
    assert forged not in done.stdout + done.stderr
    assert stored_keys(url)["leaked"].active
    done = ok(env, "keys", "revoke", token)
    assert token not in done.stdout + done.stderr
    keys = stored_keys(url)
    assert not keys["leaked"].active
    assert keys["server"].active
    done = fails(env, "keys", "revoke", token)  # revoked already
    assert token not in done.stdout + done.stderr


@pytest.mark.parametrize("target", ["nobody", "gf_AAAAAAAA", "lap"])
def test_revoking_an_unknown_key_fails(env: dict[str, str], url: str, target: str) -> None:
    create(env, "laptop")
    done = fails(env, "keys", "revoke", target)
    assert target in done.stderr
    assert stored_keys(url)["laptop"].active


def test_revoking_twice_fails_the_second_time(env: dict[str, str]) -> None:
    create(env, "once")
    ok(env, "keys", "revoke", "once")
    done = fails(env, "keys", "revoke", "once")
    assert "once" in done.stderr


# -- db upgrade ---------------------------------------------------------------------------


def test_db_upgrade_creates_a_fresh_database(env: dict[str, str], url: str, db_file: Path) -> None:
    assert not db_file.parent.exists()
    done = ok(env, "db", "upgrade")
    assert db_file.is_file()
    assert migrate.is_current(url)
    assert done.stdout == ""
    assert done.stderr.strip()
    ok(env, "db", "upgrade")  # again: nothing to do, still fine
    assert migrate.is_current(url)


@pytest.mark.parametrize(
    "command", [["serve", "--port", "0"], ["worker"], ["db", "upgrade"], ["keys", "list"]]
)
def test_a_command_that_cannot_migrate_its_database_stops_saying_why(
    env: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    # `serve` and `worker` migrate in a child process (to keep Alembic out of their
    # memory), the others in-process; either way a failure stops them with the reason,
    # not a traceback.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {
        **env,
        "GF_DATABASE_URL": f"sqlite:///{blocker}/gf.db",
        "GF_REDIS_URL": "redis://127.0.0.1:6379/0",
    }
    done = fails(env, *command)
    assert "could not bring the database to the newest schema" in done.stderr
    assert "a-file" in done.stderr
    assert blocker.read_text() == ""


# -- retention --------------------------------------------------------------------------


def seed(url: str, days_ago: list[float]) -> None:
    """Points written straight through the real storage, as the writer would."""
    now = time.time()

    async def go() -> None:
        storage = SqlStorage(url)
        try:
            points = [Point("old", MetricType.COUNTER, 1.0, now - d * DAY) for d in days_ago]
            assert await storage.apply([WriteItem(PointBatch("seed", points))]) == [None]
        finally:
            await storage.close()

    asyncio.run(go())


def retention(env: dict[str, str], *args: str) -> tuple[str, int, int]:
    """Run `retention run`; its stdout is one line: the verb and the two counts."""
    out = ok(env, "retention", "run", *args).stdout
    assert out.endswith("\n")
    assert len(out.splitlines()) == 1, out
    m = re.fullmatch(
        r"(would delete|deleted) (\d+) raw block\(s\) and (\d+) rollup row\(s\)\n", out
    )
    assert m, out
    return m[1], int(m[2]), int(m[3])


def test_retention_run_on_an_empty_database(env: dict[str, str]) -> None:
    assert retention(env, "--dry-run") == ("would delete", 0, 0)
    assert retention(env) == ("deleted", 0, 0)


def test_retention_dry_run_counts_and_run_deletes(env: dict[str, str], url: str) -> None:
    ok(env, "db", "upgrade")
    seed(url, [3, 3.5])
    env = {**env, "GF_RETENTION_DAYS": "1"}
    verb, blocks, cells = retention(env, "--dry-run")
    assert verb == "would delete"
    assert blocks >= 1
    assert cells >= 2  # the minute cells go with the raw points
    # A dry run deletes nothing: it counts the same again.
    assert retention(env, "--dry-run") == ("would delete", blocks, cells)
    assert retention(env) == ("deleted", blocks, cells)
    assert retention(env, "--dry-run") == ("would delete", 0, 0)
    assert retention(env) == ("deleted", 0, 0)


def test_retention_keeps_points_inside_the_window(env: dict[str, str], url: str) -> None:
    ok(env, "db", "upgrade")
    seed(url, [1, 80])
    assert retention(env, "--dry-run") == ("would delete", 0, 0)
    assert retention(env) == ("deleted", 0, 0)


# -- settings -------------------------------------------------------------------------------


COMMANDS = [
    ("keys", "create", "ci"),
    ("keys", "list"),
    ("keys", "revoke", "ci"),
    ("db", "upgrade"),
    ("retention", "run", "--dry-run"),
    ("retention", "run"),
]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_bad_setting_stops_every_command_naming_it(
    env: dict[str, str], db_file: Path, args: tuple[str, ...]
) -> None:
    done = fails({**env, "GF_RETENTION_DAYS": "-1"}, *args)
    assert "GF_RETENTION_DAYS" in done.stderr
    assert not db_file.exists()  # nothing was touched


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("GF_RETENTION_DAYS", "forever"),
        ("GF_RATE_LIMIT_PER_MINUTE", "0"),
        ("GF_LOG_LEVEL", "chatty"),
        ("GF_DATABASE_URL", "oracle://db/gf"),
        ("GF_DATABASE_URL", "sqlite"),
    ],
)
def test_each_bad_setting_is_named(
    env: dict[str, str], db_file: Path, var: str, value: str
) -> None:
    done = fails({**env, var: value}, "keys", "create", "ci")
    assert var in done.stderr
    assert not db_file.exists()


def test_settings_come_from_a_dotenv_file(env: dict[str, str], tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / ".env").write_text("GF_RETENTION_DAYS=-1\n", encoding="utf-8")
    done = run(env, "keys", "list", cwd=work)
    assert done.returncode != 0
    assert "GF_RETENTION_DAYS" in done.stderr


@pytest.mark.parametrize("port", ["-1", "65536", "84800"])
def test_serve_refuses_a_port_outside_0_to_65535(env: dict[str, str], port: str) -> None:
    # 84800 used to bind 84800 - 65536 = 19264, while the log said 84800.
    done = fails(env, "serve", "--port", port)
    assert "--port" in done.stderr
