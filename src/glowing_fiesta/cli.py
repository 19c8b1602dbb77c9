"""The `glowing-fiesta` command: serve, keys, db, retention.

`keys create` prints the new key and nothing else on standard output, so that
`KEY=$(glowing-fiesta keys create ci)` works; everything else goes to standard error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import click

from glowing_fiesta.settings import Settings, SettingsError, load_settings

T = TypeVar("T")


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.ClickException(f"bad setting: {exc}") from None


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _storage(settings: Settings) -> Any:
    from glowing_fiesta.storage.sql import SqlStorage

    return SqlStorage(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)


_SCHEMA_FAILED = "could not bring the database to the newest schema"


def _ensure_schema(settings: Settings) -> None:
    from glowing_fiesta.storage import migrate

    try:
        migrate.upgrade(settings.database_url)
    except Exception as exc:  # an unreachable or unwritable database: say why, no traceback
        raise click.ClickException(f"{_SCHEMA_FAILED}: {migrate.describe(exc)}") from None


def _ensure_schema_aside(settings: Settings) -> None:
    """`_ensure_schema` in a child process, for the commands that run for weeks: Alembic
    and the migration scripts, once imported, stay resident (~11 MB of `serve`'s memory,
    measured), while a child gives them back when it exits."""
    done = subprocess.run(
        [sys.executable, "-m", "glowing_fiesta.storage.migrate"],
        input=settings.database_url,
        text=True,
        stderr=subprocess.PIPE,
        check=False,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        reason = lines[-1]
        raise click.ClickException(f"{_SCHEMA_FAILED}: {reason}")


@click.group()
@click.version_option(package_name="glowing-fiesta")
def main() -> None:
    """Glowing Fiesta: record named numbers over HTTP, read time-bucketed aggregates."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to bind."
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Server processes. They share rate limits through Redis or a SQLite file.",
)
@click.option("--access-log/--no-access-log", default=False, show_default=True)
def serve(host: str, port: int, workers: int, access_log: bool) -> None:
    """Serve the HTTP API (and, in the embedded layout, the writer)."""
    import uvicorn

    from glowing_fiesta.logs import configure

    settings = _settings()
    configure(settings.log_level, settings.log_format)
    _ensure_schema_aside(settings)
    # On a SQLite file the processes share the counts in a file beside it.
    if workers > 1 and not settings.redis_url and settings.sqlite_path() is None:
        import structlog

        structlog.get_logger(__name__).warning(
            "rate_limits_per_process",
            reason="without GF_REDIS_URL each server process keeps its own rate limit counts",
        )
    with _shared_metrics(workers):
        uvicorn.run(
            "glowing_fiesta.bootstrap:app_factory",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            access_log=access_log,
            log_config=None,
            loop="uvloop",
            http="glowing_fiesta.http_protocol:OneWriteHttpToolsProtocol",
            timeout_graceful_shutdown=10,
        )


@contextlib.contextmanager
def _shared_metrics(workers: int) -> Iterator[None]:
    """With several processes, a fresh directory where they all keep their metrics, so
    that `/metrics` answers the totals whichever process it reaches (telemetry.py).
    Never one inherited from elsewhere: its old counts would be added in."""
    if workers == 1:
        yield
        return
    from glowing_fiesta.telemetry import PROMETHEUS_DIR_ENV, SHARED_DIR_ENV

    names = (SHARED_DIR_ENV, PROMETHEUS_DIR_ENV)
    inherited = {name: os.environ.get(name) for name in names}
    with tempfile.TemporaryDirectory(prefix="glowing-fiesta-metrics-") as shared:
        os.environ.update(dict.fromkeys(names, shared))
        try:
            yield
        finally:
            for name, value in inherited.items():
                if value is None:
                    del os.environ[name]
                else:
                    os.environ[name] = value


@main.command()
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Serve this worker's Prometheus metrics on this port (0: off).",
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
def worker(metrics_port: int, metrics_host: str) -> None:
    """Consume the Redis queue and write to the database (production layout)."""
    import signal

    from glowing_fiesta.bootstrap import build, run_worker
    from glowing_fiesta.logs import configure

    settings = _settings()
    if not settings.redis_url:
        raise click.ClickException(
            "the worker consumes the Redis queue: set GF_REDIS_URL (without it, "
            "`serve` writes by itself)"
        )
    configure(settings.log_level, settings.log_format)
    _ensure_schema_aside(settings)

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        components = build(settings)
        if metrics_port:
            from prometheus_client import start_http_server

            start_http_server(
                metrics_port, addr=metrics_host, registry=components.telemetry.registry
            )
        await run_worker(components, stop)

    _run(go())


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply schema migrations."""
    settings = _settings()
    _ensure_schema(settings)
    click.echo("database is at the newest schema", err=True)


@main.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.argument("name")
@click.option(
    "--scopes", default="write,read", show_default=True, help="Comma-separated: write, read, admin."
)
@click.option(
    "--rate-limit",
    # The column is a 32-bit INTEGER on PostgreSQL and MariaDB: one bound on every engine.
    type=click.IntRange(1, 2**31 - 1),
    default=None,
    help="Requests per minute (default: GF_RATE_LIMIT_PER_MINUTE).",
)
def keys_create(name: str, scopes: str, rate_limit: int | None) -> None:
    """Create a key and print it (shown once, stored only as a hash)."""
    from glowing_fiesta.auth import keys as tokens
    from glowing_fiesta.errors import ValidationError
    from glowing_fiesta.ingest.validate import clean_name
    from glowing_fiesta.model import Scope

    try:  # a key's name follows a metric name's rules: 1-255 characters, printable
        name = clean_name(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    try:
        chosen = frozenset(Scope(s.strip()) for s in scopes.split(",") if s.strip())
    except ValueError:
        raise click.BadParameter(
            "scopes are write, read and admin", param_hint="--scopes"
        ) from None
    if not chosen:
        raise click.BadParameter("at least one scope is needed", param_hint="--scopes")
    settings = _settings()
    _ensure_schema(settings)
    token, prefix = tokens.generate()

    async def create() -> None:
        storage = _storage(settings)
        try:
            await storage.create_key(
                name=name,
                prefix=prefix,
                secret_hash=tokens.hash_token(token),
                scopes=chosen,
                rate_limit=rate_limit,
                now=time.time(),
            )
        finally:
            await storage.close()

    try:
        _run(create())
    except ValidationError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(token)
    click.echo(
        f"created key {name!r} ({prefix}…) with scopes "
        f"{','.join(sorted(s.value for s in chosen))}; it is shown only once",
        err=True,
    )


@keys.command("list")
def keys_list() -> None:
    """List keys: name, visible prefix, scopes, limit, times. Never the secret."""
    from datetime import UTC, datetime

    settings = _settings()
    _ensure_schema(settings)

    async def fetch() -> list[Any]:
        storage = _storage(settings)
        try:
            return list(await storage.list_keys())
        finally:
            await storage.close()

    def when(t: float | None) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else "-"

    rows = _run(fetch())
    click.echo(
        f"{'NAME':<24} {'PREFIX':<12} {'SCOPES':<18} {'LIMIT/MIN':>9} "
        f"{'CREATED':<20} {'LAST USED':<20} STATUS"
    )
    for k in rows:
        scopes = ",".join(sorted(s.value for s in k.scopes))
        status = f"revoked {when(k.revoked_at)}" if k.revoked_at else "active"
        click.echo(
            f"{k.name:<24} {k.prefix:<12} {scopes:<18} "
            f"{k.rate_limit or settings.rate_limit_per_minute:>9} "
            f"{when(k.created_at):<20} {when(k.last_used_at):<20} {status}"
        )


@keys.command("revoke")
@click.argument("name_or_prefix")
def keys_revoke(name_or_prefix: str) -> None:
    """Revoke a key by its name, its visible prefix, or the whole key (effective
    everywhere within 10 s)."""
    from glowing_fiesta.auth import keys as tokens

    settings = _settings()
    _ensure_schema(settings)
    target = name_or_prefix.strip()
    prefix = tokens.prefix_of(target)
    # A whole key (say, one found leaked) is revoked by its prefix, once its hash shows
    # it is that key; it is never repeated in what is printed.
    whole = prefix if prefix is not None and prefix != target else None

    async def revoke() -> int:
        storage = _storage(settings)
        try:
            if whole is not None:
                key = await storage.key_by_prefix(whole)
                if key is None or not tokens.matches(target, key.secret_hash):
                    return 0
            n: int = await storage.revoke_keys(whole or target, time.time())
            return n
        finally:
            await storage.close()

    n = _run(revoke())
    if n == 0 and whole is not None:
        raise click.ClickException(f"no active key is the key given (prefix {whole})")
    if n == 0:
        raise click.ClickException(f"no active key named or prefixed {name_or_prefix!r}")
    click.echo(f"revoked {n} key(s)", err=True)


@main.command()
@click.option("--url", default=None, help="A running service; default: start an embedded one.")
@click.option("--key", default=None, help="A write,read key for --url.")
@click.option(
    "--workload",
    "workloads",
    multiple=True,
    type=click.Choice(["ingest", "single", "query"]),
    help="Repeat to choose several; default: all.",
)
@click.option("--runs", default=3, show_default=True, type=click.IntRange(1, 20))
@click.option("--points", default=3_000_000, show_default=True, type=click.IntRange(1000))
@click.option("--metrics", default=100, show_default=True, type=click.IntRange(2, 10_000))
@click.option("--connections", default=4, show_default=True, type=click.IntRange(1, 256))
@click.option("--single-seconds", default=10.0, show_default=True, type=float)
@click.option("--open-rate", default=1000.0, show_default=True, type=float)
@click.option("--open-seconds", default=10.0, show_default=True, type=float)
@click.option("--query-repeats", default=30, show_default=True, type=click.IntRange(1, 1000))
@click.option("--server-workers", default=1, show_default=True, type=click.IntRange(1, 16))
@click.option(
    "--synchronous",
    default="NORMAL",
    show_default=True,
    type=click.Choice(["NORMAL", "FULL"]),
    help="SQLite durability (embedded).",
)
@click.option(
    "--json",
    "json_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Also write the full report as JSON here.",
)
def bench(  # noqa: PLR0917 - one parameter per command-line option
    url: str | None,
    key: str | None,
    workloads: tuple[str, ...],
    runs: int,
    points: int,
    metrics: int,
    connections: int,
    single_seconds: float,
    open_rate: float,
    open_seconds: float,
    query_repeats: int,
    server_workers: int,
    synchronous: str,
    json_path: str | None,
) -> None:
    """Measure ingest rate, single-write rate and latency, query latency, disk and memory."""
    import json

    import aiohttp

    from glowing_fiesta.bench.load import BenchError
    from glowing_fiesta.bench.runner import WORKLOADS, Options, run, table

    if (url is None) != (key is None):
        raise click.UsageError("--url and --key go together")
    if url is not None and not url.startswith(("http://", "https://")):
        raise click.BadParameter("must be an http:// or https:// URL", param_hint="--url")
    if workloads and "query" in workloads and "ingest" not in workloads:
        # Each run writes under a metric prefix of its own (or to a new server).
        raise click.UsageError("--workload query reads what ingest writes: choose ingest too")
    opts = Options(
        url=url.rstrip("/") if url else None,
        key=key,
        workloads=workloads or WORKLOADS,
        runs=runs,
        points=points,
        metrics=metrics,
        connections=connections,
        single_seconds=single_seconds,
        open_rate=open_rate,
        open_seconds=open_seconds,
        query_repeats=query_repeats,
        server_workers=server_workers,
        synchronous=synchronous,
    )
    try:
        report = run(opts)
    except BenchError as exc:
        raise click.ClickException(str(exc)) from None
    except aiohttp.ClientError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from None
    click.echo(table(report["summary"]))
    if json_path:
        with open(json_path, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=2)
        click.echo(f"report written to {json_path}", err=True)


@main.group()
def retention() -> None:
    """Retention of raw points and rollups."""


@retention.command("run")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
def retention_run(dry_run: bool) -> None:
    """Delete raw points older than GF_RETENTION_DAYS, in small chunks."""
    from glowing_fiesta.bootstrap import build
    from glowing_fiesta.logs import configure

    settings = _settings()
    _ensure_schema(settings)
    # Retention logs what it deletes: to standard error, which keeps stdout for the counts.
    configure(settings.log_level, settings.log_format)

    async def go() -> Any:
        components = build(settings)
        try:
            return await components.retention.run(dry_run=dry_run)
        finally:
            await components.storage.close()

    report = _run(go())
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {report.raw_blocks} raw block(s) and {report.cells} rollup row(s)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
