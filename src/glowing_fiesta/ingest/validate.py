"""The one home of the point rules (SPEC §1) and the JSON bodies of the ingest API.

`Rules.point()` checks one point from any ingress (JSON API, StatHat, StatsD). The
`decode_*` functions turn a request body into a validated `PointBatch`, checking the
body whole: every problem is reported with its index and field, and a body with any
problem is rejected whole.

The typed msgspec decode is the fast path; only when it fails do we walk the generic
JSON to name every bad field.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import secrets
import time
import unicodedata
from array import array
from dataclasses import dataclass
from typing import Any

import msgspec

from glowing_fiesta.errors import (
    BadRequest,
    Detail,
    PayloadTooLarge,
    TypeConflict,
    ValidationError,
)
from glowing_fiesta.model import MetricType, Point, PointBatch, PointColumns
from glowing_fiesta.timeutil import parse_time

MAX_NAME = 255
_BAD_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
# Unicode White_Space. Plain str.strip() also drops U+001C-U+001F, which are control
# characters (Cc), not white space: a name carrying them must be rejected, not trimmed.
_WHITE_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_TOO_DEEP = "the body is nested too deeply to be a metrics request"

TimeIn = float | str | None


# A batch id is this process's random 64-bit prefix and a counter: unique across
# processes and hosts like a uuid4, without a getrandom call per request (7% of a
# single write's time in `serve`).
_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count()


def _new_prefix() -> None:
    global _ID_PREFIX  # noqa: PLW0603 - per-process state, reset in a forked child
    _ID_PREFIX = secrets.token_hex(8)


# A forked child must not repeat its parent's ids: the Redis writer would skip them.
os.register_at_fork(after_in_child=_new_prefix)


def new_batch_id() -> str:
    """A unique id for a validated batch (the Redis writer de-duplicates on it)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


# Not tracked by the garbage collector (`gc=False`): they hold only strings, numbers and
# an enum (a batch, its list of points), so they can be in no cycle. Tracked, the 1,000
# points of a bench batch set off collections that made its decoding take ~45% longer.


class CounterIn(msgspec.Struct, gc=False):
    metric: str
    value: float = 1
    timestamp: TimeIn = None


class ValueIn(msgspec.Struct, gc=False):
    metric: str
    value: float
    timestamp: TimeIn = None


class BatchPointIn(msgspec.Struct, gc=False):
    metric: str
    type: MetricType
    value: float | None = None
    timestamp: TimeIn = None


class BatchIn(msgspec.Struct, gc=False):
    points: list[BatchPointIn]


class Accepted(msgspec.Struct):
    accepted: int


_counter_decoder = msgspec.json.Decoder(CounterIn)
_value_decoder = msgspec.json.Decoder(ValueIn)
_batch_decoder = msgspec.json.Decoder(BatchIn)
# The slow path parses out-of-range literals (1e999) to infinity so that they are
# reported as a bad field (422) rather than as malformed JSON.
_generic_decoder = msgspec.json.Decoder(float_hook=float)


def trim(name: str) -> str:
    """A metric name without surrounding white space (Unicode White_Space only)."""
    return name.strip(_WHITE_SPACE)


def clean_name(raw: object) -> str:
    """The trimmed metric name, or raise ValueError with the rule it breaks."""
    if not isinstance(raw, str):
        raise ValueError("must be a string")
    name = trim(raw)
    if not name:
        raise ValueError("must not be empty")
    if len(name) > MAX_NAME:
        raise ValueError(f"must be at most {MAX_NAME} characters (got {len(name)})")
    if not name.isprintable() and any(unicodedata.category(ch) in _BAD_CATEGORIES for ch in name):
        raise ValueError("must not contain control characters")
    return name


def check_number(raw: object) -> float:
    """A finite JSON number (not a boolean, not a string), or raise ValueError."""
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError("must be a number")
    try:
        value = float(raw)
    except OverflowError:  # an integer literal beyond the float range
        raise ValueError("must be a finite number") from None
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


@dataclass(frozen=True, slots=True)
class Rules:
    """Limits that depend on settings; the bootstrap builds one from them."""

    retention_seconds: float = 90 * 86400
    clock_skew_seconds: float = 300
    max_batch_points: int = 1000

    def timestamp(self, raw: object, now: float) -> float:
        """When the point happened: `now` if absent, else within the window."""
        if raw is None:
            return now
        t = parse_time(raw)
        if t < now - self.retention_seconds:
            raise ValueError(
                f"is older than the retention window ({self.retention_seconds / 86400:g} days)"
            )
        if t > now + self.clock_skew_seconds:
            raise ValueError(f"is more than {self.clock_skew_seconds:g} seconds in the future")
        return t

    def point(
        self,
        metric: object,
        mtype: MetricType,
        value: object,
        timestamp: object,
        *,
        now: float,
        index: int | None = None,
    ) -> Point | list[Detail]:
        """One point, or the details of everything wrong with it."""
        problems: list[Detail] = []
        name = num = t = None
        try:
            name = clean_name(metric)
        except ValueError as exc:
            problems.append(Detail(f"metric {exc}", field="metric", index=index))
        if value is None and mtype is MetricType.COUNTER:
            value = 1
        if value is None:
            problems.append(
                Detail("value is required for a value metric", field="value", index=index)
            )
        else:
            try:
                num = check_number(value)
            except ValueError as exc:
                problems.append(Detail(f"value {exc}", field="value", index=index))
        try:
            t = self.timestamp(timestamp, now)
        except ValueError as exc:
            problems.append(Detail(f"timestamp {exc}", field="timestamp", index=index))
        if problems:
            return problems
        assert name is not None  # noqa: S101
        assert num is not None  # noqa: S101
        assert t is not None  # noqa: S101
        return Point(name, mtype, num, t)

    def batch(self, points: list[Point | list[Detail]]) -> PointBatch:
        """Collect checked points into a batch, or raise with every problem found."""
        if len(points) > self.max_batch_points:
            raise PayloadTooLarge(
                f"a batch holds at most {self.max_batch_points} points (got {len(points)})"
            )
        details = [d for p in points if isinstance(p, list) for d in p]
        if details:
            noun = "problem" if len(details) == 1 else "problems"
            raise ValidationError(f"{len(details)} {noun}: {details[0].message}", details)
        good = [p for p in points if isinstance(p, Point)]
        _check_types_within(good)
        return PointBatch(new_batch_id(), good)


def _check_types_within(points: list[Point]) -> None:
    seen: dict[str, MetricType] = {}
    details = []
    for i, p in enumerate(points):
        first = seen.setdefault(p.metric, p.type)
        if first is not p.type:
            details.append(
                Detail(
                    f"metric {p.metric!r} is sent both as {first.value} and {p.type.value}",
                    field="type",
                    index=i,
                )
            )
    if details:
        raise TypeConflict(details[0].message, details)


def _shape_error(expected: str) -> BadRequest:
    return BadRequest(f"the body must be a JSON object {expected}")


# The \\uXXXX escape of a UTF-16 high surrogate that no \\u escape follows (an escaped
# backslash before it is not an escape): msgspec calls that "Input data was truncated".
_LONE_HIGH_SURROGATE = re.compile(rb"(?<!\\)(?:\\\\)*(\\u[dD][89abAB][0-9a-fA-F]{2})(?!\\u)")


def _not_json(body: bytes, exc: msgspec.DecodeError) -> BadRequest:
    """400 for a body msgspec cannot parse, saying why."""
    if str(exc) == "Input data was truncated":
        lone = _LONE_HIGH_SURROGATE.search(body)
        if lone is not None:
            return BadRequest(
                f"the body is not valid JSON: {lone.group(1).decode('ascii')} is half of "
                "a UTF-16 surrogate pair, not a character"
            )
    return BadRequest(f"the body is not valid JSON: {exc}")


def _generic(body: bytes) -> Any:
    try:
        return _generic_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise _not_json(body, exc) from None
    except RecursionError:
        raise BadRequest(_TOO_DEEP) from None


def decode_single(
    body: bytes, mtype: MetricType, rules: Rules, now: float | None = None
) -> PointBatch:
    """Body of POST /api/metrics/counter or /value."""
    now = time.time() if now is None else now
    decoder = _counter_decoder if mtype is MetricType.COUNTER else _value_decoder
    try:
        item = decoder.decode(body)
        fields: dict[str, Any] = {
            "metric": item.metric,
            "value": item.value,
            "timestamp": item.timestamp,
        }
    except msgspec.ValidationError:
        raw = _generic(body)
        if not isinstance(raw, dict):
            raise _shape_error('like {"metric": "signups", "value": 1}') from None
        fields = {k: raw.get(k, _MISSING) for k in ("metric", "value", "timestamp")}
    except msgspec.DecodeError as exc:
        raise _not_json(body, exc) from None
    except RecursionError:
        raise BadRequest(_TOO_DEEP) from None
    checked = _check_fields(fields, mtype, rules, now, None)
    if isinstance(checked, list):
        raise ValidationError(checked[0].message, checked)
    return PointBatch(new_batch_id(), columns=PointColumns.one(checked))


def decode_batch(body: bytes, rules: Rules, now: float | None = None) -> PointBatch:
    """Body of POST /api/metrics/batch: validated whole."""
    now = time.time() if now is None else now
    try:
        parsed = _batch_decoder.decode(body)
    except msgspec.ValidationError:
        return _decode_batch_slow(body, rules, now)
    except msgspec.DecodeError as exc:
        raise _not_json(body, exc) from None
    except RecursionError:
        raise BadRequest(_TOO_DEEP) from None
    _check_count(len(parsed.points), rules)
    fast = _valid_batch(parsed.points, rules, now)
    if fast is not None:
        return fast
    return rules.batch(
        [
            rules.point(p.metric, p.type, p.value, p.timestamp, now=now, index=i)
            for i, p in enumerate(parsed.points)
        ]
    )


def _valid_batch(items: list[BatchPointIn], rules: Rules, now: float) -> PointBatch | None:
    """The batch when every point passes `Rules.point` as the common case (numeric or
    absent timestamp, no two types for one name), else None for the full check to name
    every problem. The same points as `Rules.point` would give, for a third of its time:
    a batch repeats a few names, checked once each (measured 1.9 ms of a 1,000-point
    bench batch before, with names checked per point). Built as columns, not `Point`s:
    the writer takes columns, and a batch accepted in bulk is never needed as points."""
    positions: dict[str, int] = {}  # by the name as sent
    slots: dict[str, int] = {}  # by the trimmed name: " a" and "a" are one metric
    names: list[str] = []
    kinds: list[MetricType] = []
    index, times, values = array("i"), array("d"), array("d")
    oldest = now - rules.retention_seconds
    newest = now + rules.clock_skew_seconds
    isfinite = math.isfinite
    counter = MetricType.COUNTER
    for p in items:
        k = positions.get(p.metric)
        if k is None:
            try:
                name = clean_name(p.metric)
            except ValueError:
                return None
            k = slots.get(name)
            if k is None:
                k = slots[name] = len(names)
                names.append(name)
                kinds.append(p.type)
            positions[p.metric] = k
        if kinds[k] is not p.type:
            return None
        value = p.value
        if value is None:
            if p.type is not counter:
                return None
            value = 1.0
        elif not isfinite(value):
            return None
        t = p.timestamp
        if t is None:
            t = now
        elif type(t) is not float or not oldest <= t <= newest:
            return None
        index.append(k)
        times.append(t)
        values.append(value)
    columns = PointColumns(names, kinds, index.tobytes(), times.tobytes(), values.tobytes())
    return PointBatch(new_batch_id(), columns=columns)


def _check_count(n: int, rules: Rules) -> None:
    if n == 0:
        raise ValidationError(
            "a batch needs at least one point",
            [Detail(f"must hold 1 to {rules.max_batch_points} points", field="points")],
        )
    if n > rules.max_batch_points:
        raise PayloadTooLarge(f"a batch holds at most {rules.max_batch_points} points (got {n})")


def _decode_batch_slow(body: bytes, rules: Rules, now: float) -> PointBatch:
    raw = _generic(body)
    if not isinstance(raw, dict) or not isinstance(raw.get("points"), list):
        raise _shape_error('with a "points" array')
    items = raw["points"]
    _check_count(len(items), rules)
    checked: list[Point | list[Detail]] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            checked.append([Detail("must be an object", field=None, index=i)])
            continue
        mtype_raw = item.get("type", _MISSING)
        try:
            mtype = MetricType(mtype_raw)
        except ValueError:
            what = "is required" if mtype_raw is _MISSING else "must be 'counter' or 'value'"
            checked.append([Detail(f"type {what}", field="type", index=i)])
            continue
        fields = {k: item.get(k, _MISSING) for k in ("metric", "value", "timestamp")}
        checked.append(_check_fields(fields, mtype, rules, now, i))
    return rules.batch(checked)


class _Missing:
    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return "<missing>"


_MISSING: Any = _Missing()


def _check_fields(
    fields: dict[str, Any], mtype: MetricType, rules: Rules, now: float, index: int | None
) -> Point | list[Detail]:
    missing = []
    if fields["metric"] is _MISSING:
        missing.append(Detail("metric is required", field="metric", index=index))
    if fields["value"] is _MISSING:
        if mtype is MetricType.VALUE:
            missing.append(
                Detail("value is required for a value metric", field="value", index=index)
            )
        fields["value"] = None
    if fields["timestamp"] is _MISSING:
        fields["timestamp"] = None
    if missing:
        return missing
    return rules.point(
        fields["metric"], mtype, fields["value"], fields["timestamp"], now=now, index=index
    )


def encode_accepted(n: int) -> bytes:
    return msgspec.json.encode(Accepted(n))
