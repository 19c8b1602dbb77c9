"""Retention: delete raw points (and minute cells) past the raw window, quarter-hour, hour
and day cells past the rollup window, in small chunks so writers are never blocked long."""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog

from glowing_fiesta.model import Resolution
from glowing_fiesta.storage.base import Storage
from glowing_fiesta.telemetry import Telemetry

log = structlog.get_logger(__name__)
CHUNK = 500
# A batch id claim only guards against a redelivery, which happens within seconds of a
# worker's death (GF_QUEUE_CLAIM_IDLE_SECONDS) while any worker runs: a day is ample,
# and keeps the table small at thousands of batches a second.
CLAIM_DAYS = 1.0


@dataclass(frozen=True, slots=True)
class Report:
    raw_blocks: int
    cells: int
    dry_run: bool


class Retention:
    def __init__(
        self, storage: Storage, telemetry: Telemetry, *, raw_days: float, rollup_days: float
    ) -> None:
        self.storage = storage
        self.telemetry = telemetry
        self.raw_days = raw_days
        self.rollup_days = rollup_days

    def cutoffs(self, now: float) -> tuple[float, dict[Resolution, float]]:
        raw = now - self.raw_days * 86400
        rollup = now - self.rollup_days * 86400
        return raw, {
            Resolution.MINUTE: raw,
            Resolution.QUARTER_HOUR: rollup,
            Resolution.HOUR: rollup,
            Resolution.DAY: rollup,
        }

    async def run(self, *, dry_run: bool = False, now: float | None = None) -> Report:
        """Delete everything past its window (or, dry, count it) and report how much."""
        raw_cut, cell_cuts = self.cutoffs(time.time() if now is None else now)
        if dry_run:
            blocks, cells = await self.storage.count_expired(raw_cut, cell_cuts)
            return Report(blocks, cells, dry_run=True)
        blocks = cells = 0
        while (n := await self.storage.delete_points_before(raw_cut, CHUNK)) > 0:
            blocks += n
            self.telemetry.retention_deleted.inc(n)
        for res, cut in cell_cuts.items():
            while (n := await self.storage.delete_cells_before(res, cut, CHUNK)) > 0:
                cells += n
        claim_cut = (time.time() if now is None else now) - CLAIM_DAYS * 86400
        while await self.storage.delete_claims_before(claim_cut, CHUNK * 10) > 0:
            pass
        if blocks or cells:
            log.info("retention_deleted", raw_blocks=blocks, cells=cells)
        return Report(blocks, cells, dry_run=False)
