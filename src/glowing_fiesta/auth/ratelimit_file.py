"""The embedded layout's shared rate limiter: counts in a small file beside the SQLite
database, so that they hold across every `serve` process on that database (`serve
--workers N`, or a second `serve` started during a restart), as SPEC §2.4 asks.

The file is memory-mapped: an 8-byte window number, then SLOTS open-addressing slots of
(key hash, count), 16 bytes each. Every hit takes the file's lock (`flock`), starts a new
window by zeroing the table when the minute has changed, finds or claims the key's slot
and counts. Nothing in it outlives its minute, so it never needs cleaning; a crash
mid-way loses at most that minute's counts. (A file deleted while `serve` runs is not
shared with processes started after: they make a new one.)

If more than SLOTS keys write in one minute, the keys that find no slot are let
through, and so is every request when the file cannot be made (fail open, counted and
logged, as the Redis limiter does when Redis is down).
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import time
from collections.abc import Callable
from pathlib import Path

from glowing_fiesta.auth.ratelimit import WINDOW, Decision, FailOpen, decide

SLOTS = 8192
_WORD = 8


def _slot_hash(key: str) -> int:
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1  # 0 marks an empty slot


def path_beside(database: Path) -> Path:
    """The limiter's file for a SQLite database file (named like SQLite's own -wal)."""
    return database.with_name(database.name + "-ratelimit")


class FileRateLimiter:
    def __init__(
        self,
        path: Path,
        *,
        on_error: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
        slots: int = SLOTS,
    ) -> None:
        """`slots` must be the same in every process sharing the file."""
        self._path = path
        self._slots = slots
        self._size = _WORD * (1 + 2 * slots)
        self._clock = clock
        self._fail_open = FailOpen(on_error)
        # Each key's slot, as (minute, index of its word in the file), found once a
        # minute: a slot keeps its key until the table is wiped for the next minute.
        self._slots_of: dict[str, tuple[int, int]] = {}
        self._fd = -1
        self._map: mmap.mmap | None = None
        self._words: memoryview | None = None
        self._empty = memoryview(bytes(self._size)).cast("Q")

    def _open(self) -> memoryview:
        """The mapped file, opened on the first hit (not when the service is built:
        the CLI builds it too, for commands that never count a request)."""
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Every process sizes it the same way; a shorter file (made by a crash
            # mid-create) is grown with zeros, which is an empty table.
            if os.fstat(fd).st_size < self._size:
                os.ftruncate(fd, self._size)
            fcntl.flock(fd, fcntl.LOCK_UN)
            mapped = mmap.mmap(fd, self._size)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._map = mapped
        # The file as 64-bit words: the minute, then (key hash, count) per slot.
        self._words = memoryview(mapped).cast("Q")
        return self._words

    async def hit(self, key: str, limit: int) -> Decision:
        now = self._clock()
        window = math.floor(now / WINDOW)
        try:
            words = self._words if self._words is not None else self._open()
        except OSError as exc:  # e.g. the database's folder is not writable
            self._fail_open(now, "rate_limiter_unavailable", error=str(exc))
            return decide(1, limit, now)
        # Inlined lock and unlock, and the key's slot remembered for the minute: the
        # limiter is on every request's path (3.6 µs a hit with a context manager and a
        # probe each time; the memory limiter's is 1.0).
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            # A new minute: every count starts again. So does a minute from the future
            # (the clock was set back): its counts would hold until the clock caught up,
            # restarts included. A process whose clock read came just before another's
            # start of the next minute counts there rather than wiping it.
            if not window <= words[0] <= window + 1:
                words[:] = self._empty
                words[0] = window
            window = words[0]
            seen, index = self._slots_of.get(key, (-1, -1))
            if seen != window:
                index = self._claim(words, key, window)
            count = 0
            if index >= 0:
                count = words[index + 1] + 1
                words[index + 1] = count
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        if not count:
            self._fail_open(now, "rate_limiter_full", slots=self._slots)
            return decide(1, limit, now)
        # Counted in the next minute (see above): its reset is that minute's end.
        return decide(count, limit, max(now, window * WINDOW))

    def _claim(self, words: memoryview, key: str, window: int) -> int:
        """The index of `key`'s hash word this minute, its slot claimed if new (under the
        lock); -1 if none is left, remembered for the minute too: a full probe is ~0.7 ms
        under the lock every process shares."""
        h = _slot_hash(key)
        start = h % self._slots
        for probe in range(self._slots):
            index = 1 + 2 * ((start + probe) % self._slots)
            slot = words[index]
            if slot == 0:
                words[index] = slot = h
            if slot == h:
                self._slots_of[key] = (window, index)
                return index
        self._slots_of[key] = (window, -1)
        return -1

    async def close(self) -> None:
        if self._words is not None:
            self._words.release()
            self._words = None
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
