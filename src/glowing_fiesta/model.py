"""Value types shared by every layer: metrics, points, batches, keys, query terms."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import msgspec


class MetricType(enum.StrEnum):
    """A metric's type is fixed when its first point creates it."""

    COUNTER = "counter"
    VALUE = "value"


class Interval(enum.StrEnum):
    """Bucket widths a query may ask for; all align to calendar boundaries in a zone."""

    MINUTE = "minute"
    FIVE_MINUTE = "5minute"
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class Agg(enum.StrEnum):
    """Aggregates a query may ask for."""

    SUM = "sum"
    AVG = "avg"
    MIN = "min"
    MAX = "max"
    COUNT = "count"
    P50 = "p50"
    P90 = "p90"
    P95 = "p95"
    P99 = "p99"

    @property
    def quantile(self) -> float | None:
        """The quantile in [0, 1] for a percentile aggregate, else None."""
        if self.value.startswith("p"):
            return int(self.value[1:]) / 100
        return None


class Fill(enum.StrEnum):
    """What an empty bucket shows: zero, null, or nothing at all."""

    ZERO = "zero"
    NULL = "null"
    NONE = "none"


class Resolution(enum.IntEnum):
    """Rollup cell widths in seconds. Cells are aligned to multiples of their width in UTC.

    Quarter-hour cells exist for the zones whose offset is not a whole hour (India
    +05:30, Nepal +05:45, Chatham +12:45 ...): every zone in use today is a multiple of
    15 minutes, so their hour and day buckets tile with quarter-hour cells, which are
    kept as long as hour and day cells.
    """

    MINUTE = 60
    QUARTER_HOUR = 900
    HOUR = 3600
    DAY = 86400


class Scope(enum.StrEnum):
    WRITE = "write"
    READ = "read"
    ADMIN = "admin"


class Point(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One accepted observation: timestamp in Unix seconds (may be fractional).

    A msgspec Struct rather than a frozen dataclass: a 1,000-point batch builds 1,000 of
    them per request, and a frozen dataclass's `__init__` took ~0.6 ms of that; as
    arrays they also cross to the writer process in fewer bytes. Not tracked by the
    garbage collector (`gc=False`: a point holds only a string, an enum and floats, so
    it can be in no cycle): the writer process decoding a 2,000-point request spent
    half its 1.4 ms in collections triggered by the points themselves.
    """

    metric: str
    type: MetricType
    value: float
    timestamp: float


@dataclass(slots=True)
class PointBatch:
    """Points validated together, accepted or rejected as one unit.

    `batch_id` is unique per batch; the writer uses it to make a redelivered batch a
    no-op (it is recorded in the same transaction as the points).
    """

    batch_id: str
    points: list[Point] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Metric:
    id: int
    name: str
    type: MetricType
    stat_key: str
    created_at: float
    last_point_at: float | None


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as stored: never the secret, only its hash and visible prefix."""

    id: int
    name: str
    prefix: str
    secret_hash: str
    scopes: frozenset[Scope]
    rate_limit: int | None
    created_at: float
    last_used_at: float | None
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None
