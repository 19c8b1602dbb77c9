"""Turn client timestamps into Unix seconds and cut time into calendar buckets in IANA zones.

Every function here is pure (the only state is memoisation) and DST-correct.

A bucket is a maximal run of instants that share one local calendar label in the zone: the
local minute, 5-minute slot (local :00, :05, ...), hour, date, ISO week (Monday 00:00) or
month (the 1st, 00:00). Consequences that callers can rely on:

* A local day is 23 or 25 hours long across a one-hour DST change; a week or month
  containing a change is shorter or longer by the size of the change.
* When clocks fall back, the repeated local hour is two buckets of 3600 s each, because a
  minute/5minute/hour bucket never spans a change of UTC offset.
* When a change of UTC offset is not a multiple of the bucket width (Australia/Lord_Howe
  shifts by 30 minutes, Pacific/Chatham changes at local 02:45), the change instant is a
  bucket boundary too, so a bucket may be shorter than its nominal width.
* When local midnight does not exist (America/Santiago springs forward at 24:00), the
  day, week or month starts at the first instant that does exist after it. When local
  midnight happens twice, the bucket starts at the earlier one.

Bucket starts are whole Unix seconds (`int`): tzdata offsets and transitions are whole
seconds, so every boundary is too.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from glowing_fiesta.model import Interval, Resolution

__all__ = [
    "EARLIEST",
    "END",
    "bucket_floor",
    "bucket_next",
    "bucket_starts",
    "parse_time",
    "tiling_resolution",
    "zone",
]

_DAY = 86400
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_ONE_SECOND = timedelta(seconds=1)

# What RFC 3339 can express: 0001-01-01T00:00:00Z up to (not including) year 10000.
_MIN_SECONDS = (date(1, 1, 1).toordinal() - _EPOCH_ORDINAL) * _DAY
_END_SECONDS = (date(9999, 12, 31).toordinal() + 1 - _EPOCH_ORDINAL) * _DAY
# The same, for modules that check instants they did not parse (a queue entry's).
EARLIEST, END = _MIN_SECONDS, _END_SECONDS

# Widths of the intervals that are a fixed number of seconds on a fixed-offset clock.
_WIDTH: dict[Interval, int] = {
    Interval.MINUTE: 60,
    Interval.FIVE_MINUTE: 300,
    Interval.HOUR: 3600,
    Interval.DAY: _DAY,
}

# The coarsest rollup cell that can possibly tile each interval's buckets.
_COARSEST_CELL: dict[Interval, Resolution] = {
    Interval.MINUTE: Resolution.MINUTE,
    Interval.FIVE_MINUTE: Resolution.MINUTE,
    Interval.HOUR: Resolution.HOUR,
    Interval.DAY: Resolution.DAY,
    Interval.WEEK: Resolution.DAY,
    Interval.MONTH: Resolution.DAY,
}

# [0-9] rather than \d: \d also matches other scripts' digits, which int() would accept.
_NUMBER_RE = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
_RFC3339_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
_NAIVE_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[Tt ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?)?"
)
_TWO_DIGITS = {f"{i:02d}": i for i in range(100)}
# Long enough for any valid input (nanosecond fractions included); stops pathological input.
_MAX_TEXT = 64

_NOT_A_TIME = "must be Unix seconds or an RFC 3339 time with an offset"
_OUT_OF_RANGE = "is out of range (years 0001 to 9999)"
_OUT_OF_CALENDAR = "time must be a finite instant within years 1-9999"


def parse_time(value: object) -> float:
    """Return the Unix seconds that a client-supplied timestamp denotes.

    Accepted:

    * an `int` or `float` (not `bool`) that is finite: Unix seconds;
    * a string holding a plain decimal number of Unix seconds ("1732872000",
      "1732872000.5", optionally signed; no exponent, no surrounding spaces);
    * an RFC 3339 string with a mandatory offset: "2024-11-29T10:00:00Z",
      "2024-11-29 15:30:00.25+05:30", lowercase "t"/"z" allowed. A leap second
      (":60") is read as the first second of the next minute.

    The instant must lie in years 0001-9999 UTC. Anything else raises `ValueError`
    whose message reads well after the word "timestamp" (the caller prefixes it).
    """
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return _in_range(value)
    if not isinstance(value, str):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(_NOT_A_TIME)
        # Compared as int so a huge int cannot overflow float() first.
        if not _MIN_SECONDS <= value < _END_SECONDS:
            raise ValueError(_OUT_OF_RANGE)
        return float(value)
    if len(value) > _MAX_TEXT:
        raise ValueError(_NOT_A_TIME)
    if _NUMBER_RE.fullmatch(value):
        return _in_range(float(value))
    m = _RFC3339_RE.fullmatch(value)
    if m is None:
        if _NAIVE_RE.fullmatch(value):
            raise ValueError("needs a UTC offset or Z, as in 2024-11-29T10:00:00Z")
        raise ValueError(_NOT_A_TIME)
    year, mo, d, h, mi, sec, fraction, sign, off_hour, off_minute = m.groups()
    # The regex guarantees two ASCII digits; a table lookup is several times cheaper than
    # int() and this runs for every string timestamp written.
    two = _TWO_DIGITS
    month, day, hour, minute, second = two[mo], two[d], two[h], two[mi], two[sec]
    if hour > 23 or minute > 59 or second > 60:
        raise ValueError("is not a valid time of day")
    try:
        days = date(int(year), month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise ValueError("is not a valid calendar date") from None
    seconds = days * _DAY + hour * 3600 + minute * 60 + second
    if sign is not None:
        oh, om = two[off_hour], two[off_minute]
        if oh > 23 or om > 59:
            raise ValueError("has an invalid UTC offset")
        offset = oh * 3600 + om * 60
        seconds += -offset if sign == "+" else offset
    if not _MIN_SECONDS <= seconds < _END_SECONDS:
        raise ValueError(_OUT_OF_RANGE)
    # Whole seconds stay exact as int; the fraction is added once, as float.
    return seconds + float(fraction) if fraction else float(seconds)


def _in_range(seconds: float) -> float:
    if not _MIN_SECONDS <= seconds < _END_SECONDS:
        raise ValueError(_OUT_OF_RANGE)
    return seconds


# A zone key is one or more path segments of letters, digits, "_", "+", "-": that is every
# tzdata name, and it excludes ".", "..", absolute paths and NUL before the filesystem is
# consulted.
_ZONE_NAME_RE = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")
# Files of the system's zoneinfo that are not IANA zone names: "localtime" is whatever
# zone the server is set to, "posixrules" a default for POSIX TZ strings, and the
# "right/" copies count leap seconds, which Unix time does not (their hours start ~27 s
# off), with "posix/" copies beside them.
_NOT_ZONES = frozenset({"localtime", "posixrules"})
_NOT_ZONE_DIRS = ("right/", "posix/")


@functools.lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """Return the IANA zone called `name` ("Europe/Berlin", "UTC", "Etc/GMT+5").

    Raises `ValueError("unknown time zone 'name'")` for a name that is not a zone,
    including empty names, absolute paths, names with "." or ".." segments, directory
    names such as "America", and the system's aliases that are not zones ("localtime").
    Results are cached; failures are not.
    """
    if (
        not isinstance(name, str)
        or len(name) > 255
        or not _ZONE_NAME_RE.fullmatch(name)
        or name in _NOT_ZONES
        or name.startswith(_NOT_ZONE_DIRS)
    ):
        raise ValueError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    # zoneinfo reports bad keys as KeyError, ValueError, OSError (directories, permissions)
    # and, for a corrupt file, whatever its parser raises; callers must only see ValueError.
    except Exception as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


# ---------------------------------------------------------------------------------------
# Memos. They only remember answers (each entry is correct forever for its key), so the
# functions stay pure; plain dict reads and writes are atomic, so they are thread-safe.
# Sizes are bounded because ZoneInfo.no_cache() can mint any number of distinct zones.

_MEMO_LIMIT = 20_000

# Fixed UTC offset of a zone that never changes offset, else None.
_FIXED_OFFSET: dict[ZoneInfo, int | None] = {}
_UTC_KEYS = frozenset(
    {"UTC", "UCT", "GMT", "GMT0", "GMT+0", "GMT-0", "Greenwich", "Universal", "Zulu"}
)

# One local day: (first instant, first instant of the next day, the UTC offset in force
# for the whole day or None when it changes during the day, proleptic Gregorian ordinal).
_Span = tuple[int, int, int | None, int]
_SPAN_BY_DAY: dict[tuple[ZoneInfo, int], _Span] = {}
# Per zone, the day last asked about: consecutive points usually share a day, and this
# saves the instant-to-local-date conversion for them.
_LAST_SPAN: dict[ZoneInfo, _Span] = {}


def _fixed_offset(tz: ZoneInfo) -> int | None:
    try:
        return _FIXED_OFFSET[tz]
    except KeyError:
        return _learn_fixed_offset(tz)


def _learn_fixed_offset(tz: ZoneInfo) -> int | None:
    key = tz.key
    # Only the UTC aliases and the Etc/ area are fixed by tzdata's definition; any other
    # zone may have history (Asia/Kolkata was +06:30 in 1942), so it takes the general path.
    if key is not None and (key in _UTC_KEYS or key.startswith("Etc/")):
        offset: int | None = _offset_at(tz, 0)
    else:
        offset = None
    if len(_FIXED_OFFSET) >= _MEMO_LIMIT:
        _FIXED_OFFSET.clear()
    _FIXED_OFFSET[tz] = offset
    return offset


def _offset_at(tz: ZoneInfo, t: int) -> int:
    """UTC offset in seconds in force at instant `t`."""
    return _seconds(datetime.fromtimestamp(t, tz).utcoffset())


def _seconds(offset: timedelta | None) -> int:
    if offset is None:  # never for a ZoneInfo and an aware datetime; keeps the types honest
        raise ValueError("time zone has no UTC offset")
    return offset // _ONE_SECOND


def _first_with_offset(tz: ZoneInfo, lo: int, hi: int, target: int) -> int:
    """Smallest instant in (lo, hi] from which the offset is `target`.

    Requires offset(lo) != target == offset(hi) and a single transition in between, which
    holds for every tzdata zone over the spans used here (at most a day).
    """
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset_at(tz, mid) == target:
            hi = mid
        else:
            lo = mid
    return hi


def _local_midnight(tz: ZoneInfo, ordinal: int) -> int:
    """The instant at which the local date with this ordinal begins in `tz`.

    An ambiguous midnight gives the earlier instant; a skipped one gives the transition,
    which is the first instant after the missing midnight.
    """
    local = (ordinal - _EPOCH_ORDINAL) * _DAY
    d = date.fromordinal(ordinal)
    wall = datetime(d.year, d.month, d.day, tzinfo=tz)
    # PEP 495: in a gap fold=0 uses the offset before the change and fold=1 the one after,
    # so before < after exactly when midnight is skipped. In a fold, fold=0 (the larger,
    # earlier offset) is the earlier instant, which is the one wanted.
    before = _seconds(wall.utcoffset())
    after = _seconds(wall.replace(fold=1).utcoffset())
    if before >= after:
        return local - before
    return _first_with_offset(tz, local - after, local - before, after)


def _span_of_day(tz: ZoneInfo, ordinal: int) -> _Span:
    key = (tz, ordinal)
    span = _SPAN_BY_DAY.get(key)
    if span is None:
        start = _local_midnight(tz, ordinal)
        end = _local_midnight(tz, ordinal + 1)
        offset = _offset_at(tz, start)
        steady = _offset_at(tz, end - 1) == offset
        span = (start, end, offset if steady else None, ordinal)
        if len(_SPAN_BY_DAY) >= _MEMO_LIMIT:
            _SPAN_BY_DAY.clear()
        _SPAN_BY_DAY[key] = span
    return span


def _day_span(tz: ZoneInfo, t: int) -> _Span:
    """The local day of `tz` that contains instant `t`."""
    span = _LAST_SPAN.get(tz)
    if span is not None and span[0] <= t < span[1]:
        return span
    span = _span_of_day(tz, datetime.fromtimestamp(t, tz).toordinal())
    if len(_LAST_SPAN) >= _MEMO_LIMIT:
        _LAST_SPAN.clear()
    _LAST_SPAN[tz] = span
    return span


def _first_day(interval: Interval, ordinal: int) -> int:
    """Ordinal of the first local date of the week or month containing `ordinal`."""
    if interval is Interval.WEEK:
        return ordinal - (ordinal - 1) % 7  # ordinal 1 (0001-01-01) was a Monday
    return date.fromordinal(ordinal).replace(day=1).toordinal()


def _first_day_after(interval: Interval, ordinal: int) -> int:
    """Ordinal of the first local date of the week or month after the one of `ordinal`."""
    if interval is Interval.WEEK:
        return _first_day(interval, ordinal) + 7
    d = date.fromordinal(ordinal)
    following = date(d.year + 1, 1, 1) if d.month == 12 else date(d.year, d.month + 1, 1)
    return following.toordinal()


def _changing_floor(tz: ZoneInfo, width: int, t: int) -> int:
    """Sub-day floor on a local day during which the UTC offset changes."""
    offset = _offset_at(tz, t)
    start = t - (t + offset) % width
    if start == t or _offset_at(tz, start) == offset:
        return start
    # The offset changed inside the local slot: the bucket begins at the change.
    return _first_with_offset(tz, start, t, offset)


def _changing_next(tz: ZoneInfo, width: int, t: int) -> int:
    """Sub-day next start on a local day during which the UTC offset changes."""
    offset = _offset_at(tz, t)
    end = t - (t + offset) % width + width
    last = end - 1
    later = _offset_at(tz, last)
    if later == offset:
        return end
    # The offset changes before the slot ends: the change starts the next bucket.
    return _first_with_offset(tz, t, last, later)


def bucket_floor(interval: Interval, tz: ZoneInfo, t: float) -> int:
    """Start (Unix seconds) of the `interval` bucket in zone `tz` that contains instant `t`.

    Contract: `bucket_floor(t) <= t < bucket_next(bucket_floor(t))`, and the result is its
    own floor. `t` must be finite (as `parse_time` returns); an instant whose local date
    falls outside years 1-9999 (or a non-finite `t`) raises `ValueError`.

    Cost: UTC and the other fixed-offset zones (the `Etc/` area) are pure integer
    arithmetic. Other zones resolve the local day once (memoised) and then use integer
    arithmetic on that day's UTC offset; only on a day when the offset changes does a
    sub-day interval look offsets up, with a binary search if a change falls inside the
    bucket.
    """
    try:
        ti = math.floor(t)
        # _fixed_offset() inlined: a function call is a measurable share of this path.
        try:
            offset = _FIXED_OFFSET[tz]
        except KeyError:
            offset = _learn_fixed_offset(tz)
        width = _WIDTH.get(interval)
        if offset is None:
            span = _day_span(tz, ti)
            if width is None:
                return _span_of_day(tz, _first_day(interval, span[3]))[0]
            if width == _DAY:
                return span[0]
            offset = span[2]
            if offset is None:
                return _changing_floor(tz, width, ti)
        elif width is None:
            local_ordinal = (ti + offset) // _DAY + _EPOCH_ORDINAL
            return (_first_day(interval, local_ordinal) - _EPOCH_ORDINAL) * _DAY - offset
        return ti - (ti + offset) % width
    # NaN, infinities and instants whose local date is outside years 1-9999 surface from
    # math and datetime as OverflowError or ValueError with implementation wording.
    except (OverflowError, ValueError) as exc:
        raise ValueError(_OUT_OF_CALENDAR) from exc


def bucket_next(interval: Interval, tz: ZoneInfo, start: int) -> int:
    """Start of the bucket that follows the bucket containing instant `start`.

    Meant for `start` values returned by `bucket_floor`, but defined for any instant: the
    result is always `> start` and is the exclusive end of `start`'s bucket. Same range
    rules and cost profile as `bucket_floor`.
    """
    try:
        ti = math.floor(start)
        # _fixed_offset() inlined: a function call is a measurable share of this path.
        try:
            offset = _FIXED_OFFSET[tz]
        except KeyError:
            offset = _learn_fixed_offset(tz)
        width = _WIDTH.get(interval)
        if offset is None:
            span = _day_span(tz, ti)
            if width is None:
                return _span_of_day(tz, _first_day_after(interval, span[3]))[0]
            if width == _DAY:
                return span[1]
            offset = span[2]
            if offset is None:
                return _changing_next(tz, width, ti)
        elif width is None:
            local_ordinal = (ti + offset) // _DAY + _EPOCH_ORDINAL
            return (_first_day_after(interval, local_ordinal) - _EPOCH_ORDINAL) * _DAY - offset
        return ti - (ti + offset) % width + width
    # NaN, infinities and instants whose local date is outside years 1-9999 surface from
    # math and datetime as OverflowError or ValueError with implementation wording.
    except (OverflowError, ValueError) as exc:
        raise ValueError(_OUT_OF_CALENDAR) from exc


def bucket_starts(
    interval: Interval, tz: ZoneInfo, start: float, end: float, limit: int
) -> list[int]:
    """Starts of the buckets that intersect [start, end), ascending.

    The first item is the bucket containing `start` (it may be < `start`). At most
    `limit + 1` items are returned, so a caller detects "more than `limit` buckets" by
    `len(result) > limit` without materialising a huge range. Returns [] when
    `start >= end`; raises `ValueError` for a negative `limit`.
    """
    if limit < 0:
        raise ValueError("limit must not be negative")
    if not start < end:
        return []
    first = bucket_floor(interval, tz, start)
    offset = _fixed_offset(tz)
    width = _WIDTH.get(interval) if offset is not None else None
    if width is not None:
        stop = first + (limit + 1) * width
        if end < stop:  # also keeps an infinite `end` away from math.ceil
            stop = math.ceil(end)
        return list(range(first, stop, width))
    starts = [first]
    current = first
    while len(starts) <= limit:
        current = bucket_next(interval, tz, current)
        if current >= end:
            break
        starts.append(current)
    return starts


def tiling_resolution(
    interval: Interval, tz: ZoneInfo, boundaries: Sequence[int]
) -> Resolution | None:
    """Coarsest UTC-aligned rollup cell width that tiles the given buckets exactly.

    `boundaries` are a query's bucket starts followed by the end of its last bucket. The
    answer is the largest `Resolution` whose width divides every boundary and is no wider
    than the interval's nominal width (a minute query is never served from hour cells),
    or None when not even minute cells fit (historical local mean time offsets with
    seconds). `tz` is not needed: the boundaries already carry the zone's offsets; it is
    accepted so every bucket function has the same leading arguments.
    """
    cap = _COARSEST_CELL[interval]
    # A width divides every boundary iff it divides their gcd (one C call instead of a
    # Python test per bucket: 0.2 ms of a day-of-minutes query).
    common = math.gcd(*boundaries)
    for resolution in sorted(Resolution, reverse=True):
        if resolution <= cap and common % resolution == 0:
            return resolution
    return None
