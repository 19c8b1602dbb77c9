"""The storage interface: a handful of batch-shaped operations every engine implements.

Contracts every implementation keeps (the contract suite in tests/contract checks them):

- `apply` writes a sequence of batches in ONE transaction: raw blocks, rollup cells,
  metric creation and `last_point_at`. A batch is all-or-nothing: a batch with a point
  whose metric has the other type is rejected whole (its slot in the result holds the
  `TypeConflict`) while the others are written. A batch whose `batch_id` was already
  applied with `dedupe=True` is skipped, so redelivery never counts twice.
- When `apply` returns, the data is committed with the engine's durability settings.
- Reads see committed data only.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from glowing_fiesta.errors import TypeConflict
from glowing_fiesta.model import ApiKey, Metric, MetricType, PointBatch, Resolution, Scope

# A stored rollup cell: (start, count, sum, min, max, percentile summary or None).
CellRow = tuple[int, int, float, float, float, bytes | None]
# One read of a query: cells of `res` in [start, end), or raw points when res is None.
Read = tuple[Resolution | None, float, float]


@dataclass(frozen=True, slots=True)
class WriteItem:
    batch: PointBatch
    # True for queue entries that may be redelivered (Redis); the inline queue never
    # redelivers, so it skips the bookkeeping row.
    dedupe: bool = False


@dataclass(frozen=True, slots=True)
class StorageStats:
    """What the storage layer was asked for; tests use it to prove query plans."""

    raw_reads: int
    cell_reads: int


class Storage(Protocol):
    async def open(self) -> None:
        """Connect; raise `Unavailable` if the engine does not answer."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise `Unavailable` unless a trivial query succeeds now."""

    async def apply(self, items: Sequence[WriteItem]) -> list[TypeConflict | None]:
        """Write the batches in one transaction; one result per item (None = written)."""

    async def get_metric(self, name: str) -> Metric | None: ...

    async def get_metrics(self, names: Collection[str]) -> dict[str, Metric]:
        """The metrics among `names` that exist, by name."""

    async def ensure_metrics(self, types: dict[str, MetricType]) -> dict[str, Metric]:
        """Create the metrics that do not exist yet with the given types, all or none:
        none when one of them exists with the other type. Return those that exist
        now, as stored (an existing metric keeps its own type)."""

    async def get_metric_by_stat_key(self, stat_key: str) -> Metric | None: ...

    async def list_metrics(self, prefix: str, after: str | None, limit: int) -> list[Metric]:
        """Metrics whose name starts with `prefix`, ordered by name, names > `after`."""

    async def delete_metric(self, name: str) -> bool:
        """Remove the metric, its raw blocks and rollups; False if there was none."""

    async def read_cells(
        self, metric_id: int, res: Resolution, start: int, end: int, *, sketches: bool
    ) -> list[CellRow]:
        """Rollup cells with start in [start, end), ordered by start; the summary (what
        percentiles need, see `aggregate.Cell.stored`) only when `sketches`."""

    async def read_points(
        self, metric_id: int, start: float, end: float
    ) -> list[tuple[float, float]]:
        """Raw (timestamp, value) points in [start, end), ordered by time."""

    async def read_series(
        self, name: str, spans: Sequence[Read], *, sketches: bool
    ) -> tuple[Metric | None, list[list[Any]]]:
        """The metric named `name` and, for each (res, start, end) span, what
        `read_points` (res None) or `read_cells` would return, read in one round trip;
        (None, []) when there is no such metric."""

    async def create_key(
        self,
        *,
        name: str,
        prefix: str,
        secret_hash: str,
        scopes: frozenset[Scope],
        rate_limit: int | None,
        now: float,
    ) -> ApiKey:
        """Store a new key; raise `ValidationError` if the name is taken."""

    async def list_keys(self) -> list[ApiKey]: ...

    async def key_by_prefix(self, prefix: str) -> ApiKey | None: ...

    async def revoke_keys(self, name_or_prefix: str, now: float) -> int:
        """Revoke the active key with that visible prefix or, if no key has that prefix,
        with that name; how many were revoked."""

    async def touch_keys(self, last_used: dict[int, float]) -> None:
        """Record when keys were last used (best effort, batched by the caller)."""

    async def delete_points_before(self, cutoff: float, limit: int) -> int:
        """Delete up to `limit` raw blocks whose newest point is older than `cutoff`."""

    async def delete_claims_before(self, cutoff: float, limit: int) -> int:
        """Forget up to `limit` batch-id claims made before `cutoff` (see `apply`)."""

    async def delete_cells_before(self, res: Resolution, cutoff: float, limit: int) -> int:
        """Delete up to `limit` rollup rows of resolution `res` whose cells all start
        before `cutoff` (a row of minute cells holds a quarter-hour's); the rows deleted."""

    async def count_expired(
        self, raw_cutoff: float, cell_cutoffs: dict[Resolution, float]
    ) -> tuple[int, int]:
        """(raw blocks, rollup rows) that retention would delete with these cutoffs."""

    async def maintain(self) -> None:
        """Housekeeping the engine needs every second or so (SQLite: WAL checkpoints)."""

    def stats(self) -> StorageStats: ...
