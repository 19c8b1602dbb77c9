"""The benchmark's deterministic data set (pure): the same seed gives the same points.

By default 3,000,000 points over 100 metrics: one hot value metric (`hot`) with a third
of them, 1,000,000 points, and 99 others, alternately counters and values, with the
rest. Timestamps advance evenly over `days` days ending at `end`, so every point lies in
the retention window and the hot metric fills 7 days, as a replay of history would.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

HOT = "hot"


@dataclass(frozen=True, slots=True)
class Dataset:
    points: int = 3_000_000
    metrics: int = 100
    days: float = 7.0
    end: float = 0.0
    seed: int = 42
    batch_size: int = 1000
    prefix: str = ""

    @property
    def start(self) -> float:
        return self.end - self.days * 86400

    @property
    def hot_points(self) -> int:
        return len(range(0, self.points, 3))

    def name(self, i: int) -> str:
        return f"{self.prefix}m{i:02d}"

    def kind(self, i: int) -> str:
        return "counter" if i % 2 == 0 else "value"

    def batches(self) -> Iterator[list[tuple[str, str, float, float]]]:
        """Batches of (metric, type, value, timestamp), `batch_size` points each."""
        rng = random.Random(self.seed)  # noqa: S311 - reproducible test data, not secrets
        step = self.days * 86400 / self.points
        others = max(1, self.metrics - 1)
        hot = self.prefix + HOT
        batch: list[tuple[str, str, float, float]] = []
        for idx in range(self.points):
            t = round(self.start + idx * step, 3)
            if idx % 3 == 0:
                # Latency-like: log-normal around 100 ms, so percentiles are interesting.
                batch.append((hot, "value", round(math.exp(rng.gauss(4.6, 0.6)), 3), t))
            else:
                m = (idx // 3) % others
                if m % 2 == 0:
                    batch.append((self.name(m), "counter", float(rng.randint(1, 5)), t))
                else:
                    batch.append((self.name(m), "value", round(rng.gauss(50, 10), 2), t))
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def expected_hot_count(self) -> int:
        return self.hot_points


def json_body(batch: list[tuple[str, str, float, float]]) -> bytes:
    """The /api/metrics/batch body for a batch."""
    import msgspec

    return msgspec.json.encode(
        {"points": [{"metric": m, "type": k, "value": v, "timestamp": t} for m, k, v, t in batch]}
    )


def line_protocol(batch: list[tuple[str, str, float, float]]) -> bytes:
    """The same batch in InfluxDB line protocol (nanosecond timestamps), for peers."""
    return "\n".join(
        f"{m} value={v!r} {round(t * 1000) * 1_000_000}" for m, _, v, t in batch
    ).encode()
