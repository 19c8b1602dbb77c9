"""Timestamp parsing and calendar buckets in IANA zones, across real DST changes."""

from __future__ import annotations

import functools
import itertools
import math
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glowing_fiesta.model import Interval, Resolution
from glowing_fiesta.timeutil import (
    bucket_floor,
    bucket_next,
    bucket_starts,
    parse_time,
    tiling_resolution,
    zone,
)


def at(text: str) -> int:
    """Unix seconds of an ISO time written in UTC, e.g. "2024-03-31T01:00"."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def local(t: int, name: str) -> datetime:
    return datetime.fromtimestamp(t, ZoneInfo(name))


# --- parse_time -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1732872000, 1732872000.0),
        (1732872000.5, 1732872000.5),
        (0, 0.0),
        (-86400, -86400.0),
        ("1732872000", 1732872000.0),
        ("1732872000.5", 1732872000.5),
        ("-1.25", -1.25),
        ("2024-11-29T10:00:00Z", 1732874400.0),
        ("2024-11-29t10:00:00z", 1732874400.0),
        ("2024-11-29 10:00:00Z", 1732874400.0),
        ("2024-11-29T15:30:00+05:30", 1732874400.0),
        ("2024-11-29T05:00:00-05:00", 1732874400.0),
        ("2024-11-29T10:00:00.25Z", 1732874400.25),
        ("2024-11-29T10:00:00.000001+00:00", 1732874400.000001),
        ("2024-02-29T00:00:00Z", 1709164800.0),
        ("2016-12-31T23:59:60Z", 1483228800.0),  # leap second reads as the next second
        ("1969-12-31T23:59:59Z", -1.0),
        ("0001-01-01T00:00:00Z", -62135596800.0),
        ("9999-12-31T23:59:59Z", 253402300799.0),
    ],
)
def test_parse_time_accepts(raw: object, expected: float) -> None:
    assert parse_time(raw) == pytest.approx(expected, abs=1e-6)
    assert isinstance(parse_time(raw), float)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (math.nan, "finite"),
        (math.inf, "finite"),
        (-math.inf, "finite"),
        (True, "Unix seconds or an RFC 3339"),
        (False, "Unix seconds or an RFC 3339"),
        (None, "Unix seconds or an RFC 3339"),
        ([1732872000], "Unix seconds or an RFC 3339"),
        (b"1732872000", "Unix seconds or an RFC 3339"),
        ("", "Unix seconds or an RFC 3339"),
        ("yesterday", "Unix seconds or an RFC 3339"),
        ("nan", "Unix seconds or an RFC 3339"),
        ("inf", "Unix seconds or an RFC 3339"),
        ("1e9", "Unix seconds or an RFC 3339"),
        (" 1732872000", "Unix seconds or an RFC 3339"),
        ("1732872000.", "Unix seconds or an RFC 3339"),
        ("١٧٣٢٨٧٢٠٠٠", "Unix seconds or an RFC 3339"),  # Arabic-Indic digits
        ("2024-11-29T10:00:00", "UTC offset or Z"),
        ("2024-11-29 10:00", "UTC offset or Z"),
        ("2024-11-29", "UTC offset or Z"),
        ("2024-11-29T10:00Z", "Unix seconds or an RFC 3339"),
        ("2024-11-29T10:00:00+0530", "Unix seconds or an RFC 3339"),
        ("2024-11-29T10:00:00 Z", "Unix seconds or an RFC 3339"),
        ("2024-11-29T10:00:00.Z", "Unix seconds or an RFC 3339"),
        ("2024-02-30T00:00:00Z", "valid calendar date"),
        ("2023-02-29T00:00:00Z", "valid calendar date"),
        ("2024-13-01T00:00:00Z", "valid calendar date"),
        ("2024-11-29T24:00:00Z", "valid time of day"),
        ("2024-11-29T10:60:00Z", "valid time of day"),
        ("2024-11-29T10:00:00+24:00", "invalid UTC offset"),
        ("2024-11-29T10:00:00+05:60", "invalid UTC offset"),
        ("0000-01-01T00:00:00Z", "valid calendar date"),
        ("0001-01-01T00:00:00+00:01", "out of range"),
        ("9999-12-31T23:59:59-00:01", "out of range"),
        (10**20, "out of range"),
        (10**400, "out of range"),
        (-1e12, "out of range"),
        ("99999999999999999999", "out of range"),
        ("1" * 65, "Unix seconds or an RFC 3339"),
    ],
)
def test_parse_time_rejects_with_a_sentence(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_time(raw)
    # The caller prefixes "timestamp ", so the message starts with a lowercase verb.
    assert str(caught.value)[0].islower()


@given(st.integers(min_value=-62135596800, max_value=253402300799), st.integers(0, 999))
def test_parse_time_reads_what_isoformat_writes(seconds: int, millis: int) -> None:
    text = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
    assert parse_time(text) == seconds
    with_fraction = text.replace("+00:00", f".{millis:03d}Z")
    assert parse_time(with_fraction) == pytest.approx(seconds + millis / 1000, abs=1e-6)


# --- zone -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires", "Etc/GMT+5", "GMT-0"]
)
def test_zone_returns_the_named_zone_and_caches_it(name: str) -> None:
    tz = zone(name)
    assert isinstance(tz, ZoneInfo)
    assert tz.key == name
    assert zone(name) is tz


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Mars/Olympus_Mons",
        "Europe/Berlin_",
        "../etc/passwd",
        "Europe/../Europe/Berlin",
        "./UTC",
        "/etc/localtime",
        "/usr/share/zoneinfo/UTC",
        "Europe/Berlin/",
        "Europe//Berlin",
        "America",  # a directory of zones
        "zone.tab",
        "leapseconds",  # a tzdata file that is not a zone
        "localtime",  # the server's own zone, whatever it is set to
        "posixrules",
        "right/UTC",  # counts leap seconds: ~27 s off Unix time
        "posix/Europe/Berlin",
        "UTC\x00",
        "Europe/Berlin ",
        "x" * 300,
    ],
)
def test_zone_rejects_bad_names_with_value_error(name: str) -> None:
    with pytest.raises(ValueError, match=r"^unknown time zone '") as caught:
        zone(name)
    assert repr(name) in str(caught.value)


# --- bucket_floor / bucket_next: worked examples ------------------------------------------

D, W, M = Interval.DAY, Interval.WEEK, Interval.MONTH
H, MIN, MIN5 = Interval.HOUR, Interval.MINUTE, Interval.FIVE_MINUTE


@pytest.mark.parametrize(
    ("interval", "tz", "t", "floor", "next_start"),
    [
        # Europe/Berlin, 2024-03-31: 02:00 CET -> 03:00 CEST, a 23-hour day.
        (D, "Europe/Berlin", "2024-03-31T12:00", "2024-03-30T23:00", "2024-03-31T22:00"),
        (D, "Europe/Berlin", "2024-03-30T23:00", "2024-03-30T23:00", "2024-03-31T22:00"),
        (D, "Europe/Berlin", "2024-03-30T22:59:59", "2024-03-29T23:00", "2024-03-30T23:00"),
        (H, "Europe/Berlin", "2024-03-31T00:59:59", "2024-03-31T00:00", "2024-03-31T01:00"),
        (H, "Europe/Berlin", "2024-03-31T01:00", "2024-03-31T01:00", "2024-03-31T02:00"),
        # Europe/Berlin, 2024-10-27: 03:00 CEST -> 02:00 CET, a 25-hour day.
        (D, "Europe/Berlin", "2024-10-27T12:00", "2024-10-26T22:00", "2024-10-27T23:00"),
        (H, "Europe/Berlin", "2024-10-27T00:30", "2024-10-27T00:00", "2024-10-27T01:00"),
        (H, "Europe/Berlin", "2024-10-27T01:30", "2024-10-27T01:00", "2024-10-27T02:00"),
        # America/New_York, 2024-03-10: 02:00 EST -> 03:00 EDT.
        (D, "America/New_York", "2024-03-10T12:00", "2024-03-10T05:00", "2024-03-11T04:00"),
        (H, "America/New_York", "2024-03-10T06:59", "2024-03-10T06:00", "2024-03-10T07:00"),
        (H, "America/New_York", "2024-03-10T07:00", "2024-03-10T07:00", "2024-03-10T08:00"),
        # America/New_York, 2024-11-03: the 01:00 hour happens twice, as two buckets.
        (H, "America/New_York", "2024-11-03T05:30", "2024-11-03T05:00", "2024-11-03T06:00"),
        (H, "America/New_York", "2024-11-03T06:30", "2024-11-03T06:00", "2024-11-03T07:00"),
        (MIN5, "America/New_York", "2024-11-03T06:04", "2024-11-03T06:00", "2024-11-03T06:05"),
        (D, "America/New_York", "2024-11-03T12:00", "2024-11-03T04:00", "2024-11-04T05:00"),
        # Half-hour and 45-minute zones: days and hours start at local :00.
        (D, "Asia/Kolkata", "2024-11-29T10:00", "2024-11-28T18:30", "2024-11-29T18:30"),
        (H, "Asia/Kolkata", "2024-11-29T10:00", "2024-11-29T09:30", "2024-11-29T10:30"),
        (MIN5, "Asia/Kolkata", "2024-11-29T10:03", "2024-11-29T10:00", "2024-11-29T10:05"),
        (D, "Asia/Kathmandu", "2024-11-29T10:00", "2024-11-28T18:15", "2024-11-29T18:15"),
        (H, "Asia/Kathmandu", "2024-11-29T10:00", "2024-11-29T09:15", "2024-11-29T10:15"),
        (MIN5, "Asia/Kathmandu", "2024-11-29T10:01", "2024-11-29T10:00", "2024-11-29T10:05"),
        # America/Santiago skips local midnight 2024-09-08 (00:00 -04 -> 01:00 -03): the day
        # starts at the first instant that exists, 01:00 local.
        (D, "America/Santiago", "2024-09-08T12:00", "2024-09-08T04:00", "2024-09-09T03:00"),
        (D, "America/Santiago", "2024-09-08T03:59", "2024-09-07T04:00", "2024-09-08T04:00"),
        # ... and repeats Saturday 23:00-24:00 on 2024-04-06/07: a 25-hour Saturday.
        (D, "America/Santiago", "2024-04-07T03:30", "2024-04-06T03:00", "2024-04-07T04:00"),
        # Australia/Lord_Howe moves by 30 minutes: the change instant is a bucket boundary.
        (H, "Australia/Lord_Howe", "2024-10-05T15:29", "2024-10-05T14:30", "2024-10-05T15:30"),
        (H, "Australia/Lord_Howe", "2024-10-05T15:40", "2024-10-05T15:30", "2024-10-05T16:00"),
        (H, "Australia/Lord_Howe", "2024-04-06T15:10", "2024-04-06T15:00", "2024-04-06T15:30"),
        # Pacific/Chatham changes at local 02:45 (+12:45 <-> +13:45), inside an hour slot.
        (H, "Pacific/Chatham", "2024-09-28T13:30", "2024-09-28T13:15", "2024-09-28T14:00"),
        (H, "Pacific/Chatham", "2024-09-28T14:05", "2024-09-28T14:00", "2024-09-28T14:15"),
        (H, "Pacific/Chatham", "2024-04-06T13:30", "2024-04-06T13:15", "2024-04-06T14:00"),
        (H, "Pacific/Chatham", "2024-04-06T14:10", "2024-04-06T14:00", "2024-04-06T14:15"),
        # America/Toronto, 1919-03-30: 23:30 EST -> 00:30 EDT skips midnight mid-gap, so
        # March 31 starts at the change, local 00:30.
        (D, "America/Toronto", "1919-03-31T12:00", "1919-03-31T04:30", "1919-04-01T04:00"),
        (D, "America/Toronto", "1919-03-31T04:29", "1919-03-30T05:00", "1919-03-31T04:30"),
        # Month ends and leap day.
        (M, "UTC", "2024-01-31T23:59:59", "2024-01-01T00:00", "2024-02-01T00:00"),
        (M, "UTC", "2024-02-29T12:00", "2024-02-01T00:00", "2024-03-01T00:00"),
        (M, "UTC", "2023-02-28T12:00", "2023-02-01T00:00", "2023-03-01T00:00"),
        (M, "UTC", "2024-12-31T23:00", "2024-12-01T00:00", "2025-01-01T00:00"),
        (M, "Europe/Berlin", "2024-03-15T00:00", "2024-02-29T23:00", "2024-03-31T22:00"),
        (M, "Europe/Berlin", "2024-12-31T23:30", "2024-12-31T23:00", "2025-01-31T23:00"),
        (D, "UTC", "2024-02-29T23:59:59", "2024-02-29T00:00", "2024-03-01T00:00"),
        # ISO weeks across a year: 2024-12-30 is the Monday of week 1 of 2025, and
        # 2021-01-01 is in the week that starts on Monday 2020-12-28.
        (W, "UTC", "2024-12-31T12:00", "2024-12-30T00:00", "2025-01-06T00:00"),
        (W, "UTC", "2025-01-05T23:59:59", "2024-12-30T00:00", "2025-01-06T00:00"),
        (W, "UTC", "2021-01-01T12:00", "2020-12-28T00:00", "2021-01-04T00:00"),
        # A week with a DST change in Berlin is 167 hours.
        (W, "Europe/Berlin", "2024-03-31T12:00", "2024-03-24T23:00", "2024-03-31T22:00"),
        (W, "Europe/Berlin", "2024-10-27T12:00", "2024-10-20T22:00", "2024-10-27T23:00"),
        # Fixed-offset zones take the integer path.
        (D, "Etc/GMT+5", "2024-11-29T03:00", "2024-11-28T05:00", "2024-11-29T05:00"),
        (W, "Etc/GMT-14", "2024-12-29T10:00", "2024-12-29T10:00", "2025-01-05T10:00"),
        (M, "Etc/GMT-14", "2024-12-31T10:00", "2024-12-31T10:00", "2025-01-31T10:00"),
        (MIN, "UTC", "2024-11-29T10:00:59", "2024-11-29T10:00", "2024-11-29T10:01"),
    ],
)
def test_bucket_examples(interval: Interval, tz: str, t: str, floor: str, next_start: str) -> None:
    z = zone(tz)
    assert bucket_floor(interval, z, at(t)) == at(floor)
    assert bucket_next(interval, z, at(floor)) == at(next_start)
    assert bucket_next(interval, z, at(t)) == at(next_start)


def test_fractional_instants_floor_to_whole_seconds() -> None:
    berlin = zone("Europe/Berlin")
    assert bucket_floor(Interval.MINUTE, zone("UTC"), 119.999) == 60
    assert bucket_floor(Interval.DAY, berlin, at("2024-03-30T22:59:59") + 0.999) == at(
        "2024-03-29T23:00"
    )
    result = bucket_floor(Interval.HOUR, berlin, at("2024-10-27T01:30") + 0.5)
    assert type(result) is int


def test_midnight_that_happens_twice_starts_the_day_at_the_first() -> None:
    # America/Havana fell back from 01:00 CDT to 00:00 CST on 2024-11-03, so local
    # midnight occurred at 04:00 UTC and again at 05:00 UTC.
    havana = zone("America/Havana")
    assert local(at("2024-11-03T04:00"), "America/Havana").utcoffset() == timedelta(hours=-4)
    assert local(at("2024-11-03T05:00"), "America/Havana").hour == 0
    assert bucket_floor(Interval.DAY, havana, at("2024-11-03T12:00")) == at("2024-11-03T04:00")
    assert bucket_next(Interval.DAY, havana, at("2024-11-02T12:00")) == at("2024-11-03T04:00")


@pytest.mark.parametrize("t", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin"])
def test_bucket_floor_rejects_non_finite_times(t: float, tz: str) -> None:
    with pytest.raises(ValueError, match="finite instant"):
        bucket_floor(Interval.DAY, zone(tz), t)


def test_bucket_functions_report_instants_outside_the_calendar_as_value_error() -> None:
    first_instant = -62135596800  # 0001-01-01T00:00Z is still year 0 in New York
    with pytest.raises(ValueError, match="years 1-9999"):
        bucket_floor(Interval.DAY, zone("America/New_York"), first_instant)
    with pytest.raises(ValueError, match="years 1-9999"):
        bucket_next(Interval.MONTH, zone("UTC"), at("9999-12-15T00:00"))


# --- bucket_floor / bucket_next: properties ----------------------------------------------

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Pacific/Chatham",
]
SLOT_MINUTES = {Interval.MINUTE: 1, Interval.FIVE_MINUTE: 5, Interval.HOUR: 60}
T_2000 = at("2000-01-01T00:00")
T_2035 = at("2035-01-01T00:00")


def bucket_key(interval: Interval, tz: ZoneInfo, t: int) -> object:
    """What every instant of one bucket shares, computed straight from the wall clock."""
    wall = datetime.fromtimestamp(t, tz)
    if interval is Interval.DAY:
        return wall.date()
    if interval is Interval.WEEK:
        return wall.isocalendar()[:2]
    if interval is Interval.MONTH:
        return wall.year, wall.month
    minutes = wall.hour * 60 + wall.minute
    # Sub-day buckets never span a change of UTC offset, hence the offset in the key.
    return wall.date(), minutes - minutes % SLOT_MINUTES[interval], wall.utcoffset()


def offset_changes_at(tz: ZoneInfo, t: int) -> bool:
    before = datetime.fromtimestamp(t - 1, tz).utcoffset()
    return before != datetime.fromtimestamp(t, tz).utcoffset()


@functools.cache
def transitions(name: str) -> list[int]:
    """Instants in 2000-2035 at which the zone's UTC offset changes (found by probing)."""
    tz = ZoneInfo(name)

    def offset(t: int) -> timedelta | None:
        return datetime.fromtimestamp(t, tz).utcoffset()

    found = []
    for t in range(T_2000, T_2035, 43200):  # no zone changes offset twice within 12 hours
        if offset(t) != offset(t + 43200):
            lo, hi = t, t + 43200
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if offset(mid) == offset(lo) else (lo, mid)
            found.append(hi)
    return found


@st.composite
def zoned_instants(draw: st.DrawFn) -> tuple[str, int]:
    """A zone and an instant: anywhere in 2000-2035, or within two days of an offset change
    (where the bugs live; uniform sampling would hit a 45-minute window once in a blue moon).
    """
    name = draw(st.sampled_from(ZONES))
    changes = transitions(name)
    near_a_change = draw(st.booleans())
    if changes and near_a_change:
        near = draw(st.sampled_from(changes))
        return name, near + draw(st.integers(min_value=-2 * 86400, max_value=2 * 86400))
    return name, draw(st.integers(min_value=T_2000, max_value=T_2035))


def test_probed_transitions_include_known_changes() -> None:
    assert at("2024-03-31T01:00") in transitions("Europe/Berlin")
    assert at("2024-10-05T15:30") in transitions("Australia/Lord_Howe")
    assert at("2024-09-28T14:00") in transitions("Pacific/Chatham")
    assert transitions("UTC") == []
    assert transitions("Asia/Kolkata") == []


@settings(max_examples=3000, deadline=None)
@given(
    zoned_instants(),
    st.sampled_from(list(Interval)),
    st.sampled_from([0.0, 0.25, 0.999]),
)
def test_buckets_partition_time_at_local_calendar_boundaries(
    zoned: tuple[str, int], interval: Interval, fraction: float
) -> None:
    name, seconds = zoned
    tz = zone(name)
    t = seconds + fraction
    start = bucket_floor(interval, tz, t)
    end = bucket_next(interval, tz, start)

    assert start <= t < end
    assert bucket_floor(interval, tz, start) == start
    assert bucket_floor(interval, tz, end) == end
    assert bucket_floor(interval, tz, end - 1) == start
    assert bucket_next(interval, tz, seconds) == end

    # The bucket is exactly the run of instants that share t's local label.
    key = bucket_key(interval, tz, seconds)
    assert bucket_key(interval, tz, start) == key
    assert bucket_key(interval, tz, end - 1) == key
    assert bucket_key(interval, tz, start - 1) != key
    assert bucket_key(interval, tz, end) != key

    wall = datetime.fromtimestamp(start, tz)
    if interval in SLOT_MINUTES:
        on_grid = wall.second == 0 and wall.minute % SLOT_MINUTES[interval] == 0
        assert on_grid or offset_changes_at(tz, start)
        assert 0 < end - start <= SLOT_MINUTES[interval] * 60
    else:
        midnight = wall.time() == datetime.min.time()
        # Where local midnight does not exist the day starts at the offset change.
        assert midnight or (offset_changes_at(tz, start) and wall.hour < 3)
        if interval is Interval.DAY:
            assert 22 * 3600 <= end - start <= 26 * 3600
        if interval is Interval.WEEK:
            assert wall.weekday() == 0
        if interval is Interval.MONTH:
            assert wall.day == 1


# --- bucket_starts -----------------------------------------------------------------------


def test_bucket_starts_first_bucket_contains_start() -> None:
    starts = bucket_starts(Interval.MINUTE, zone("UTC"), 90, 300, 100)
    assert starts == [60, 120, 180, 240]


def test_bucket_starts_end_is_exclusive() -> None:
    assert bucket_starts(Interval.MINUTE, zone("UTC"), 0, 180, 100) == [0, 60, 120]
    assert bucket_starts(Interval.MINUTE, zone("UTC"), 0, 180.5, 100) == [0, 60, 120, 180]


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin"])
def test_bucket_starts_returns_at_most_limit_plus_one(tz: str) -> None:
    z = zone(tz)
    sixty = bucket_starts(Interval.MINUTE, z, 0, 3600, 60)
    assert len(sixty) == 60
    over = bucket_starts(Interval.MINUTE, z, 0, 3600, 59)
    assert over == sixty
    assert len(over) == 60  # limit + 1 tells the caller it is over the limit
    assert bucket_starts(Interval.MINUTE, z, 0, 3600, 10) == sixty[:11]
    assert bucket_starts(Interval.MINUTE, z, 0, 3600, 0) == [0]
    huge = bucket_starts(Interval.MINUTE, z, 0, 1e12, 1000)
    assert len(huge) == 1001
    assert bucket_starts(Interval.DAY, z, 0, math.inf, 3)[-1] < 5 * 86400


@pytest.mark.parametrize(("start", "end"), [(100, 100), (200, 100)])
def test_bucket_starts_is_empty_for_an_empty_range(start: float, end: float) -> None:
    assert bucket_starts(Interval.HOUR, zone("UTC"), start, end, 10) == []


def test_bucket_starts_rejects_a_negative_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        bucket_starts(Interval.HOUR, zone("UTC"), 0, 10, -1)


def test_bucket_starts_across_berlin_changes() -> None:
    berlin = zone("Europe/Berlin")
    days = bucket_starts(D, berlin, at("2024-03-30T12:00"), at("2024-04-01T12:00"), 10)
    assert days == [at("2024-03-29T23:00"), at("2024-03-30T23:00"), at("2024-03-31T22:00")]
    hours = bucket_starts(H, berlin, at("2024-10-26T23:30"), at("2024-10-27T02:00"), 10)
    # Local 01:00, 02:00 (CEST), 02:00 (CET): the repeated hour is two buckets.
    assert hours == [at("2024-10-26T23:00"), at("2024-10-27T00:00"), at("2024-10-27T01:00")]
    assert [local(h, "Europe/Berlin").hour for h in hours] == [1, 2, 2]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(ZONES),
    st.sampled_from(list(Interval)),
    st.integers(min_value=T_2000, max_value=T_2035),
    st.integers(min_value=1, max_value=40 * 86400),
)
def test_bucket_starts_agrees_with_floor_and_next(
    name: str, interval: Interval, start: int, length: int
) -> None:
    tz = zone(name)
    starts = bucket_starts(interval, tz, start, start + length, 50)
    assert starts[0] == bucket_floor(interval, tz, start)
    assert all(bucket_next(interval, tz, a) == b for a, b in itertools.pairwise(starts))
    if len(starts) <= 50:
        assert bucket_next(interval, tz, starts[-1]) >= start + length


# --- tiling_resolution -------------------------------------------------------------------


def boundaries(interval: Interval, tz: str, start: str, end: str) -> list[int]:
    z = zone(tz)
    starts = bucket_starts(interval, z, at(start), at(end), 20_000)
    return [*starts, bucket_next(interval, z, starts[-1])]


@pytest.mark.parametrize(
    ("interval", "tz", "expected"),
    [
        (Interval.DAY, "UTC", Resolution.DAY),
        (Interval.DAY, "Europe/Berlin", Resolution.HOUR),
        (Interval.DAY, "America/New_York", Resolution.HOUR),
        (Interval.HOUR, "UTC", Resolution.HOUR),
        (Interval.HOUR, "Europe/Berlin", Resolution.HOUR),
        (Interval.HOUR, "Asia/Kolkata", Resolution.QUARTER_HOUR),
        (Interval.DAY, "Asia/Kolkata", Resolution.QUARTER_HOUR),
        (Interval.FIVE_MINUTE, "Asia/Kolkata", Resolution.MINUTE),
        (Interval.DAY, "Asia/Kathmandu", Resolution.QUARTER_HOUR),
        (Interval.FIVE_MINUTE, "UTC", Resolution.MINUTE),
        (Interval.MINUTE, "UTC", Resolution.MINUTE),
        (Interval.WEEK, "UTC", Resolution.DAY),
        (Interval.MONTH, "UTC", Resolution.DAY),
        (Interval.WEEK, "Europe/Berlin", Resolution.HOUR),
        (Interval.MONTH, "Europe/Berlin", Resolution.HOUR),
        (Interval.HOUR, "Australia/Lord_Howe", Resolution.QUARTER_HOUR),
    ],
)
def test_tiling_resolution_examples(interval: Interval, tz: str, expected: Resolution) -> None:
    # All of 2024, so both DST changes of either hemisphere are inside the range (minute
    # and 5minute ranges are cut at the bucket limit, which is enough for UTC).
    bounds = boundaries(interval, tz, "2024-01-01T00:00", "2025-01-01T00:00")
    assert tiling_resolution(interval, zone(tz), bounds) is expected


def test_tiling_resolution_is_none_for_local_mean_time_offsets() -> None:
    # Berlin kept local mean time (+00:53:28) until 1893: days start at :06:32 UTC.
    bounds = boundaries(Interval.DAY, "Europe/Berlin", "1890-06-01T00:00", "1890-06-05T00:00")
    assert tiling_resolution(Interval.DAY, zone("Europe/Berlin"), bounds) is None


def test_tiling_resolution_never_exceeds_the_interval_width() -> None:
    # A single boundary at midnight says nothing about hour buckets beyond the hour.
    assert tiling_resolution(Interval.HOUR, zone("UTC"), [at("2024-01-01T00:00")]) is (
        Resolution.HOUR
    )
    assert tiling_resolution(Interval.FIVE_MINUTE, zone("UTC"), [0, 86400]) is (Resolution.MINUTE)


def test_tiling_resolution_checks_every_boundary() -> None:
    day = 86400
    assert tiling_resolution(Interval.DAY, zone("UTC"), [0, day, 2 * day + 60]) is (
        Resolution.MINUTE
    )
    assert tiling_resolution(Interval.DAY, zone("UTC"), [0, day, 2 * day + 1]) is None


def test_examples_dates_are_what_the_comments_say() -> None:
    # Guards the worked examples above against a typo in a date.
    assert date(2024, 12, 30).isocalendar()[:3] == (2025, 1, 1)
    assert date(2021, 1, 1).isocalendar()[:2] == (2020, 53)
    assert date(2020, 12, 28).weekday() == 0
