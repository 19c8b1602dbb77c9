"""A mergeable quantile sketch with relative-error guarantees, stored in every rollup cell.

The sketch follows DDSketch (Masson, Rim, Lee, VLDB 2019): a value v with |v| above a tiny
threshold goes to logarithmic bin ``i = ceil(log|v| / log(gamma))`` with
``gamma = (1 + a) / (1 - a)``, so bin i holds the magnitudes in (gamma^(i-1), gamma^i] and
its representative ``2 * gamma^i / (gamma + 1)`` is within relative error ``a`` of every
value in it. Positive and negative values have separate bin stores; |v| <= 1e-9 counts as
zero. Bin counts are exact, so merging two sketches gives exactly the sketch of the union
of their values, in any order and grouping.
"""

from __future__ import annotations

import heapq
import math
import re
import struct
import sys
from collections import Counter
from collections.abc import Iterable
from itertools import accumulate, repeat
from operator import mul, sub
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "FLAG_MAX",
    "FLAG_MIN",
    "FLAG_NEGATIVE",
    "FLAG_POSITIVE",
    "FLAG_ZERO",
    "MAX_BINS",
    "VERSION",
    "ZERO_THRESHOLD",
    "Sketch",
    "indices",
    "parse_header",
]

_RELATIVE_ACCURACY = 0.005
_GAMMA = (1 + _RELATIVE_ACCURACY) / (1 - _RELATIVE_ACCURACY)
# add() and add_many() must both use this same product (not a division by log(gamma)):
# a value on a bin edge could otherwise land in different bins and break exact merging.
_INV_LOG_GAMMA = 1 / math.log(_GAMMA)
_REPRESENTATIVE = 2 / (_GAMMA + 1)
_ZERO_THRESHOLD = 1e-9
_MAX_BINS = 2048
# Smallest and largest bin an accepted finite value can reach; from_bytes rejects others.
_MIN_INDEX = math.ceil(math.log(_ZERO_THRESHOLD) * _INV_LOG_GAMMA)
_MAX_INDEX = math.ceil(math.log(sys.float_info.max) * _INV_LOG_GAMMA)

_VERSION = 1
_HAS_MIN = 1
_HAS_MAX = 2  # only when max differs from min, so single-value cells stay small
_HAS_ZERO = 4
_HAS_POSITIVE = 8
_HAS_NEGATIVE = 16
_KNOWN_FLAGS = _HAS_MIN | _HAS_MAX | _HAS_ZERO | _HAS_POSITIVE | _HAS_NEGATIVE
_F64 = struct.Struct("<d")


def _index(magnitude: float) -> int:
    return math.ceil(math.log(magnitude) * _INV_LOG_GAMMA)


ZERO_THRESHOLD = _ZERO_THRESHOLD
MAX_BINS = _MAX_BINS
# The layout's version byte and flags, for writers of the bytes in bulk (rollup._encode).
VERSION = _VERSION
FLAG_MIN = _HAS_MIN
FLAG_MAX = _HAS_MAX
FLAG_ZERO = _HAS_ZERO
FLAG_POSITIVE = _HAS_POSITIVE
FLAG_NEGATIVE = _HAS_NEGATIVE
# A product this close to an integer is a bin edge, where numpy's log and libm's may
# round apart: |log * 1/log(gamma)| < 8e4, so they differ by far less than this.
_EDGE = 1e-6


def indices(magnitudes: NDArray[np.float64]) -> NDArray[np.int64]:
    """The bin of each magnitude (> ZERO_THRESHOLD), exactly as `Sketch.add` computes it.

    numpy's log may differ from libm's in the last place; that only changes a bin for a
    value on a bin edge, and those few are recomputed with math.log, so a value lands in
    the same bin whichever path added it (merging stays exact).
    """
    scaled = np.log(magnitudes) * _INV_LOG_GAMMA
    keys = np.ceil(scaled).astype(np.int64)
    for i in np.flatnonzero(np.abs(scaled - np.rint(scaled)) < _EDGE).tolist():
        keys[i] = _index(float(magnitudes[i]))
    return keys


def parse_header(data: bytes) -> tuple[float, float, int, int] | None:
    """(min, max, flags, offset of the varints) of a non-empty version-1 sketch's bytes;
    None for anything else (an empty sketch, another version, unknown flags), which
    callers leave to `Sketch.from_bytes` to read or reject."""
    if len(data) < 10 or data[0] != _VERSION:
        return None
    flags = data[1]
    if flags & ~_KNOWN_FLAGS or not flags & _HAS_MIN:
        return None
    low = _F64.unpack_from(data, 2)[0]
    if flags & _HAS_MAX:
        if len(data) < 18:
            return None
        return low, _F64.unpack_from(data, 10)[0], flags, 18
    return low, low, flags, 10


def has_zero(flags: int) -> bool:
    return bool(flags & _HAS_ZERO)


def store_signs(flags: int) -> list[int]:
    """The stores a sketch's bytes hold, in order: 0 positive, 1 negative."""
    return [sign for sign, flag in ((0, _HAS_POSITIVE), (1, _HAS_NEGATIVE)) if flags & flag]


def _collapse(store: Counter[int]) -> None:
    """Fold the lowest-magnitude bins into the lowest kept one until at most _MAX_BINS remain.

    The result only depends on the set of bins ever seen, not on when collapsing
    happened, which is what keeps merge exact (associative and commutative) after it.
    """
    excess = len(store) - _MAX_BINS
    if excess <= 0:
        return
    lowest = heapq.nsmallest(excess + 1, store)
    kept = lowest[-1]
    store[kept] += sum(store.pop(key) for key in lowest[:-1])


def _put_varints(out: bytearray, numbers: list[int]) -> None:
    """Append non-negative ints as LEB128 varints."""
    if max(numbers, default=0) < 0x80:  # usual for bin bodies: one byte each, done in C
        out += bytes(numbers)
        return
    for number in numbers:
        n = number
        while n > 0x7F:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)


# One multi-byte varint: continuation bytes, then a final byte.
_MULTI_BYTE_VARINT = re.compile(rb"[\x80-\xff]+[\x00-\x7f]")
_MAX_VARINT_BYTES = 10


def _read_varints(data: bytes, start: int) -> list[int]:
    """Decode every varint in data[start:]; ValueError if one is cut short or over-long.

    Runs of one-byte varints (nearly all of a sketch) are copied in C; only multi-byte
    ones are decoded in Python.
    """
    if len(data) > start and data[-1] & 0x80:
        raise ValueError("sketch bytes are truncated")
    numbers: list[int] = []
    pos = start
    for match in _MULTI_BYTE_VARINT.finditer(data, start):
        numbers += data[pos : match.start()]
        chunk = match.group()
        if len(chunk) > _MAX_VARINT_BYTES:
            raise ValueError("sketch bytes hold an over-long varint")
        value = 0
        for i, byte in enumerate(chunk):
            value |= (byte & 0x7F) << (7 * i)
        numbers.append(value)
        pos = match.end()
    numbers += data[pos:]
    return numbers


def _put_store(out: bytearray, store: Counter[int]) -> None:
    """Append a store: bin count, zigzag first index, then count, gap, count, gap, ...

    Indexes ascend, so every gap (difference to the previous index) is >= 1 and small.
    """
    keys = sorted(store)
    first = keys[0]
    body: list[int] = [0] * (2 * len(keys) - 1)
    body[0::2] = map(store.__getitem__, keys)
    body[1::2] = map(sub, keys[1:], keys)
    # The header often needs two bytes; kept apart so the body can take the C fast path.
    _put_varints(out, [len(keys), (first << 1) ^ (first >> 63)])  # zigzag keeps -1 short
    _put_varints(out, body)


def _take_store(numbers: list[int], pos: int) -> tuple[Counter[int], int]:
    """Inverse of `_put_store`, reading decoded varints at numbers[pos:].

    Returns the store and the position after it.
    """
    if pos + 2 > len(numbers):
        raise ValueError("sketch bytes are truncated")
    nbins, zigzag = numbers[pos], numbers[pos + 1]
    if not 1 <= nbins <= _MAX_BINS:
        raise ValueError("sketch bytes hold an invalid bin count")
    end = pos + 2 * nbins + 1
    if end > len(numbers):
        raise ValueError("sketch bytes are truncated")
    body = numbers[pos + 2 : end]
    counts = body[0::2]
    if min(counts) < 1:
        raise ValueError("sketch bytes hold an empty bin")
    gaps = body[1::2]
    if gaps and min(gaps) < 1:
        raise ValueError("sketch bytes hold bins out of order")
    first = (zigzag >> 1) ^ -(zigzag & 1)
    keys = list(accumulate(gaps, initial=first))
    if keys[0] < _MIN_INDEX or keys[-1] > _MAX_INDEX:  # keys ascend: the ends suffice
        raise ValueError("sketch bytes hold a bin out of range")
    return Counter(dict(zip(keys, counts, strict=True))), end


class Sketch:
    """Quantiles of a stream of finite floats, within 0.5% relative error, mergeable.

    Quantile definition: ``quantile(q)`` estimates the element of 0-based rank
    ``floor(q * (n - 1))`` (computed in float arithmetic) of the n values sorted
    ascending, the "lower" rank; no interpolation. Ranks 0 and n - 1 return the exact
    minimum and maximum, which the sketch keeps. Any other rank returns the
    representative of the bin its element is in, clamped to [min, max]. So for |x| > 1e-9
    the estimate is within ``RELATIVE_ACCURACY`` (0.5%) of the exact element x,
    ``quantile(0)`` and ``quantile(1)`` are exact, and a sketch of a single value or of
    equal values returns that value exactly. Values with |v| <= 1e-9 are counted as
    zero (their estimate is 0.0 unless clamped to min or max).

    Size bound: each sign's store keeps at most 2048 non-empty bins (a dynamic range of
    about 8e8 at full density). Beyond that the lowest-magnitude bins are folded together,
    so accuracy still holds for the largest magnitudes (the upper quantiles of positive
    values, the lower quantiles of negative ones) while estimates for the folded values
    become too large in magnitude. Merge stays exact after folding.

    Not thread-safe for concurrent mutation; instances are cheap, so give each writer its
    own and merge.
    """

    RELATIVE_ACCURACY: ClassVar[float] = _RELATIVE_ACCURACY

    __slots__ = ("_count", "_max", "_min", "_negative", "_positive", "_zero")

    def __init__(self) -> None:
        self._positive: Counter[int] = Counter()
        self._negative: Counter[int] = Counter()
        self._zero = 0
        self._count = 0
        self._min = math.inf
        self._max = -math.inf

    def __repr__(self) -> str:
        if not self._count:
            return "Sketch(count=0)"
        return f"Sketch(count={self._count}, min={self._min!r}, max={self._max!r})"

    @property
    def count(self) -> int:
        """Number of values added (weights included), merged sketches included."""
        return self._count

    def add(self, value: float, count: int = 1) -> None:
        """Add `value` `count` times. Raises ValueError for a non-finite value or count < 1."""
        if count < 1:
            raise ValueError("count must be at least 1")
        if not math.isfinite(value):
            raise ValueError("sketch values must be finite")
        value = float(value) + 0.0  # + 0.0 turns -0.0 into 0.0: bounds must not depend on order
        if -_ZERO_THRESHOLD <= value <= _ZERO_THRESHOLD:
            self._zero += count
        else:
            if value > 0:
                store, key = self._positive, _index(value)
            else:
                store, key = self._negative, _index(-value)
            store[key] += count
            if len(store) > _MAX_BINS:
                _collapse(store)
        self._count += count
        self._min = min(self._min, value)
        self._max = max(self._max, value)

    def add_many(self, values: Iterable[float]) -> None:
        """Add each value once; the fast path for a batch (bins are counted in C).

        Validates the whole batch first: on a non-finite value it raises ValueError and
        the sketch is unchanged.
        """
        batch = values if isinstance(values, list) else list(values)
        if not batch:
            return
        # One C-level sum detects NaN/inf cheaply; only then look for the culprit (a
        # finite batch can also overflow the sum, which is fine).
        if not math.isfinite(sum(batch)) and not all(map(math.isfinite, batch)):
            raise ValueError("sketch values must be finite")
        low = float(min(batch)) + 0.0  # + 0.0: see add()
        high = float(max(batch)) + 0.0
        if low > _ZERO_THRESHOLD:
            positive, negative, zeros = batch, [], 0
        else:
            positive = [v for v in batch if v > _ZERO_THRESHOLD]
            negative = [-v for v in batch if v < -_ZERO_THRESHOLD]
            zeros = len(batch) - len(positive) - len(negative)
        for store, magnitudes in ((self._positive, positive), (self._negative, negative)):
            if magnitudes:
                # Same arithmetic as _index(), composed from C builtins.
                logs = map(math.log, magnitudes)
                store.update(map(math.ceil, map(mul, logs, repeat(_INV_LOG_GAMMA))))
                if len(store) > _MAX_BINS:
                    _collapse(store)
        self._zero += zeros
        self._count += len(batch)
        self._min = min(self._min, low)
        self._max = max(self._max, high)

    def merge(self, other: Sketch) -> None:
        """Add all of `other`'s values to this sketch, in place (`other` is unchanged).

        Exact: the result equals the sketch built from both value streams, whatever the
        order or grouping of merges. Merging a sketch into itself doubles every count.
        """
        if not other._count:
            return
        for mine, theirs in ((self._positive, other._positive), (self._negative, other._negative)):
            if theirs:
                mine.update(theirs)
                if len(mine) > _MAX_BINS:
                    _collapse(mine)
        self._zero += other._zero
        self._count += other._count
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    @classmethod
    def from_bins(
        cls,
        low: float,
        high: float,
        zero: int,
        positive: dict[int, int],
        negative: dict[int, int],
    ) -> Sketch:
        """The sketch with these bounds and bins, folded to at most MAX_BINS per store."""
        sketch = cls()
        sketch._positive, sketch._negative = Counter(positive), Counter(negative)
        for store in (sketch._positive, sketch._negative):
            _collapse(store)
        sketch._zero = zero
        sketch._count = zero + sum(positive.values()) + sum(negative.values())
        sketch._min, sketch._max = low, high
        return sketch

    def quantile(self, q: float) -> float | None:
        """Estimate of the lower-rank q-quantile (see the class docstring); None when empty.

        Raises ValueError unless 0 <= q <= 1.
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError("quantile must be between 0 and 1")
        if not self._count:
            return None
        last = self._count - 1
        rank = math.floor(q * last)
        # The extreme ranks are known exactly: clamping alone would not fix a bin
        # representative that lies inside (min, max) but below max or above min.
        if rank == 0:
            return self._min
        if rank == last:
            return self._max
        negatives = self._negative.total()
        if rank < negatives:
            # Most negative first: the largest magnitudes come first in ascending order.
            estimate = -self._bin_value(self._negative, rank, reverse=True)
        elif rank < negatives + self._zero:
            estimate = 0.0
        else:
            rank -= negatives + self._zero
            estimate = self._bin_value(self._positive, rank, reverse=False)
        return min(max(estimate, self._min), self._max)

    @staticmethod
    def _bin_value(store: Counter[int], rank: int, *, reverse: bool) -> float:
        seen = 0
        for key in sorted(store, reverse=reverse):
            seen += store[key]
            if seen > rank:
                try:
                    return _REPRESENTATIVE * _GAMMA**key
                except OverflowError:  # top bin near float max; the caller clamps to max
                    return math.inf
        raise AssertionError("rank beyond the store's count")  # pragma: no cover

    def to_bytes(self) -> bytes:
        """Compact serialization; `from_bytes` restores an identical sketch.

        Format (version 1): a version byte, a flags byte, then as flagged: min and max as
        little-endian float64 (max omitted when equal to min), the zero count as a varint,
        the positive then the negative store as varint bin count, zigzag-varint first bin
        index, and per bin a varint count and (after the first) a varint index gap. An empty
        sketch is 2 bytes; a sketch of one repeated value is about 14.
        """
        out = bytearray((_VERSION, 0))
        if not self._count:
            return bytes(out)
        flags = _HAS_MIN
        low = _F64.pack(self._min)
        out += low
        high = _F64.pack(self._max)
        # Compared as bytes, not floats, so the round trip is bit-exact even for -0.0.
        if high != low:
            flags |= _HAS_MAX
            out += high
        if self._zero:
            flags |= _HAS_ZERO
            _put_varints(out, [self._zero])
        if self._positive:
            flags |= _HAS_POSITIVE
            _put_store(out, self._positive)
        if self._negative:
            flags |= _HAS_NEGATIVE
            _put_store(out, self._negative)
        out[1] = flags
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> Sketch:
        """Rebuild a sketch from `to_bytes` output.

        Raises ValueError (never another exception type) for bytes that `to_bytes` could
        not have produced: wrong version, unknown flags, truncation, trailing bytes,
        out-of-range bins, or bounds that contradict the bins.
        """
        if len(data) < 2 or data[0] != _VERSION:
            raise ValueError("not a version 1 sketch")
        flags = data[1]
        if flags & ~_KNOWN_FLAGS:
            raise ValueError("sketch bytes have unknown flags")
        sketch = cls()
        if not flags:
            if len(data) != 2:
                raise ValueError("sketch bytes have trailing data")
            return sketch
        if not flags & _HAS_MIN or not flags & (_HAS_ZERO | _HAS_POSITIVE | _HAS_NEGATIVE):
            raise ValueError("sketch bytes have inconsistent flags")
        pos = 10 if flags & _HAS_MAX else 2
        pos += 8
        if len(data) < pos:
            raise ValueError("sketch bytes are truncated")
        low = _F64.unpack_from(data, 2)[0]
        high = _F64.unpack_from(data, 10)[0] if flags & _HAS_MAX else low
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError("sketch bytes hold a non-finite bound")
        numbers = _read_varints(data, pos)
        at = 0
        if flags & _HAS_ZERO:
            if not numbers or numbers[0] < 1:
                raise ValueError("sketch bytes hold an invalid zero count")
            sketch._zero = numbers[0]
            at = 1
        if flags & _HAS_POSITIVE:
            sketch._positive, at = _take_store(numbers, at)
        if flags & _HAS_NEGATIVE:
            sketch._negative, at = _take_store(numbers, at)
        if at != len(numbers):
            raise ValueError("sketch bytes have trailing data")
        sketch._min, sketch._max = low, high
        if not sketch._bounds_match_bins():
            raise ValueError("sketch bounds contradict its bins")
        sketch._count = sketch._zero + sketch._positive.total() + sketch._negative.total()
        return sketch

    def _bounds_match_bins(self) -> bool:
        """Whether min/max agree with the bins, as they always do for a real sketch.

        The largest magnitudes are never folded, so the top positive bin is the bin of max
        and the top negative bin is the bin of -min.
        """
        low, high, positive, negative = self._min, self._max, self._positive, self._negative
        if low > high:
            return False
        if (high > _ZERO_THRESHOLD) != bool(positive):
            return False
        if (low < -_ZERO_THRESHOLD) != bool(negative):
            return False
        if self._zero and not (low <= _ZERO_THRESHOLD and high >= -_ZERO_THRESHOLD):
            return False
        if positive and max(positive) != _index(high):
            return False
        return not (negative and max(negative) != _index(-low))
