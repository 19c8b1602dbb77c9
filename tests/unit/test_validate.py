"""The point rules of SPEC §1, checked on the decoders the ingest API uses."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glowing_fiesta.errors import (
    BadRequest,
    GlowingFiestaError,
    PayloadTooLarge,
    TypeConflict,
    ValidationError,
)
from glowing_fiesta.ingest.validate import Rules, decode_batch, decode_single
from glowing_fiesta.model import MetricType, Point, PointColumns

NOW = 1_750_000_000.0  # 2025-06-15T15:06:40Z
DAY = 86400
RULES = Rules()
COUNTER = MetricType.COUNTER
VALUE = MetricType.VALUE


def body(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def one(obj: object, mtype: MetricType = VALUE, rules: Rules = RULES) -> Point:
    batch = decode_single(body(obj), mtype, rules, now=NOW)
    assert len(batch.points) == 1
    return batch.points[0]


def rejected(
    raw: bytes, mtype: MetricType = VALUE, rules: Rules = RULES
) -> list[tuple[int | None, str | None]]:
    """Decode a body that must fail with 422; return its (index, field) details."""
    with pytest.raises(ValidationError) as info:
        decode_single(raw, mtype, rules, now=NOW)
    assert info.value.message
    assert all(d.message for d in info.value.details)
    return [(d.index, d.field) for d in info.value.details]


def batch_error(points: object, rules: Rules = RULES) -> GlowingFiestaError:
    with pytest.raises(GlowingFiestaError) as info:
        decode_batch(body({"points": points}), rules, now=NOW)
    return info.value


# -- names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("signups", "signups"),
        ("checkout latency ms", "checkout latency ms"),
        ("  padded  ", "padded"),
        ("\t\nlines around\r\n", "lines around"),
        ("\u00a0\u3000ideographic and nbsp\u2003", "ideographic and nbsp"),
        ("naïve ✓ 東京", "naïve ✓ 東京"),
        ("emoji 🚀🔥", "emoji 🚀🔥"),
        ("family 👨\u200d👩\u200d👧", "family 👨\u200d👩\u200d👧"),
        ("a/b.c-d_e:f|g@h#i%j", "a/b.c-d_e:f|g@h#i%j"),
        ("inner  spaces kept", "inner  spaces kept"),
        ("x", "x"),
        ("x" * 255, "x" * 255),
        ("   " + "y" * 255 + "   ", "y" * 255),
        ("🚀" * 255, "🚀" * 255),
    ],
)
def test_valid_names_are_trimmed_and_otherwise_kept(raw: str, stored: str) -> None:
    assert one({"metric": raw, "value": 1}).metric == stored


def test_names_are_case_sensitive_and_not_one_metric() -> None:
    batch = decode_batch(
        body(
            {
                "points": [
                    {"metric": "Signups", "type": "counter"},
                    {"metric": "signups", "type": "value", "value": 2},
                ]
            }
        ),
        RULES,
        now=NOW,
    )
    assert [(p.metric, p.type) for p in batch.points] == [("Signups", COUNTER), ("signups", VALUE)]


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("\t\n\r ", id="only-white-space"),
        pytest.param("x" * 256, id="256-chars"),
        pytest.param("🚀" * 256, id="256-emoji"),
        pytest.param("a\x00b", id="NUL"),
        pytest.param("a\nb", id="inner-newline"),
        pytest.param("a\tb", id="inner-tab"),
        pytest.param("a\x1bb", id="ESC"),
        pytest.param("a\x7fb", id="DEL"),
        pytest.param("a\x85b", id="NEL-C1"),
        pytest.param("a\x9fb", id="C1"),
        pytest.param("a\u2028b", id="line-separator"),
        pytest.param("a\u2029b", id="paragraph-separator"),
        pytest.param("\x1cleading", id="leading-FS-is-control-not-space"),
        pytest.param("trailing\x1f", id="trailing-US-is-control-not-space"),
        pytest.param("\x00", id="only-NUL"),
    ],
)
def test_bad_names_are_422_on_the_metric_field(raw: str) -> None:
    assert rejected(body({"metric": raw, "value": 1})) == [(None, "metric")]


@pytest.mark.parametrize("raw", [None, 5, 1.5, True, ["a"], {"name": "a"}])
def test_a_name_must_be_a_string(raw: object) -> None:
    assert rejected(body({"metric": raw, "value": 1})) == [(None, "metric")]


def test_a_missing_name_is_422() -> None:
    assert rejected(b'{"value": 1}') == [(None, "metric")]


# -- values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"0", 0.0),
        (b"-3", -3.0),
        (b"182.5", 182.5),
        (b"1e-300", 1e-300),
        (b"-1.7976931348623157e308", -1.7976931348623157e308),
        (b"123456789012345678901234567890", 1.2345678901234568e29),
    ],
)
@pytest.mark.parametrize("mtype", [COUNTER, VALUE])
def test_finite_numbers_are_accepted(raw: bytes, expected: float, mtype: MetricType) -> None:
    point = decode_single(b'{"metric": "m", "value": ' + raw + b"}", mtype, RULES, now=NOW)
    assert point.points[0].value == expected
    assert point.points[0].type is mtype


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"1e999", id="overflow-literal"),
        pytest.param(b"-1e999", id="negative-overflow"),
        pytest.param(b"9" * 400, id="huge-integer"),
        pytest.param(b"-" + b"9" * 400, id="huge-negative-integer"),
        pytest.param(b"true", id="true"),
        pytest.param(b"false", id="false"),
        pytest.param(b'"5"', id="numeric-string"),
        pytest.param(b'"1.5"', id="numeric-string-float"),
        pytest.param(b'"NaN"', id="NaN-string"),
        pytest.param(b'"Infinity"', id="Infinity-string"),
        pytest.param(b"[1]", id="array"),
        pytest.param(b'{"v": 1}', id="object"),
    ],
)
@pytest.mark.parametrize("mtype", [COUNTER, VALUE])
def test_non_finite_or_non_numeric_values_are_422(raw: bytes, mtype: MetricType) -> None:
    assert rejected(b'{"metric": "m", "value": ' + raw + b"}", mtype) == [(None, "value")]


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_json_number_literals_are_400(literal: bytes) -> None:
    with pytest.raises(BadRequest):
        decode_single(b'{"metric": "m", "value": ' + literal + b"}", VALUE, RULES, now=NOW)


@pytest.mark.parametrize("raw", [b'{"metric": "m"}', b'{"metric": "m", "value": null}'])
def test_a_value_metric_needs_a_value(raw: bytes) -> None:
    assert rejected(raw, VALUE) == [(None, "value")]


@pytest.mark.parametrize("raw", [b'{"metric": "m"}', b'{"metric": "m", "value": null}'])
def test_a_counter_value_defaults_to_1(raw: bytes) -> None:
    point = decode_single(raw, COUNTER, RULES, now=NOW).points[0]
    assert (point.metric, point.type, point.value) == ("m", COUNTER, 1.0)


def test_a_counter_keeps_the_value_it_is_given() -> None:
    assert one({"metric": "m", "value": 7}, COUNTER).value == 7.0


# -- timestamps -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1_749_999_000, 1_749_999_000.0),
        (1_749_999_000.25, 1_749_999_000.25),
        ("2025-06-15T15:00:00Z", 1_749_999_600.0),
        ("2025-06-15T15:00:00z", 1_749_999_600.0),
        ("2025-06-15T17:00:00+02:00", 1_749_999_600.0),
        ("2025-06-15T09:30:00-05:30", 1_749_999_600.0),
        ("2025-06-15T15:00:00.5Z", 1_749_999_600.5),
        ("2025-06-15 15:00:00+00:00", 1_749_999_600.0),
    ],
)
def test_accepted_timestamps(raw: object, expected: float) -> None:
    assert one({"metric": "m", "value": 1, "timestamp": raw}).timestamp == expected


@pytest.mark.parametrize("raw", [b"", b', "timestamp": null'])
def test_an_absent_timestamp_is_now(raw: bytes) -> None:
    point = decode_single(b'{"metric": "m", "value": 1' + raw + b"}", VALUE, RULES, now=NOW)
    assert point.points[0].timestamp == NOW


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("2025-06-15T15:00:00", id="naive-rfc3339"),
        pytest.param("2025-06-15", id="date-only"),
        pytest.param("yesterday", id="garbage"),
        pytest.param("", id="empty-string"),
        pytest.param("2025-02-30T00:00:00Z", id="no-such-date"),
        pytest.param("2025-06-15T25:00:00Z", id="no-such-hour"),
        pytest.param("15/06/2025 15:00", id="other-format"),
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param([NOW], id="array"),
        pytest.param({"t": NOW}, id="object"),
    ],
)
def test_bad_timestamps_are_422(raw: object) -> None:
    assert rejected(body({"metric": "m", "value": 1, "timestamp": raw})) == [(None, "timestamp")]


@pytest.mark.parametrize("literal", [b"1e999", b"9" * 400])
def test_out_of_range_timestamp_numbers_are_422(literal: bytes) -> None:
    raw = b'{"metric": "m", "value": 1, "timestamp": ' + literal + b"}"
    assert rejected(raw) == [(None, "timestamp")]


@pytest.mark.parametrize(
    ("offset", "ok"),
    [
        (-90 * DAY - 1, False),
        (-90 * DAY, True),
        (-89 * DAY, True),
        (300, True),
        (300.5, False),
        (3600, False),
    ],
)
def test_timestamp_window_defaults_to_90_days_back_and_5_minutes_ahead(
    offset: float, ok: bool
) -> None:
    raw = body({"metric": "m", "value": 1, "timestamp": NOW + offset})
    if ok:
        assert decode_single(raw, VALUE, RULES, now=NOW).points[0].timestamp == NOW + offset
    else:
        assert rejected(raw) == [(None, "timestamp")]


def test_the_window_follows_the_rules_given() -> None:
    rules = Rules(retention_seconds=3600, clock_skew_seconds=0)
    assert one({"metric": "m", "value": 1, "timestamp": NOW - 3600}, rules=rules)
    assert one({"metric": "m", "value": 1, "timestamp": NOW}, rules=rules)
    for t in (NOW - 3601, NOW + 1):
        assert rejected(body({"metric": "m", "value": 1, "timestamp": t}), rules=rules) == [
            (None, "timestamp")
        ]


def test_every_bad_field_of_one_point_is_reported() -> None:
    raw = body({"metric": "", "value": "x", "timestamp": "soon"})
    assert rejected(raw) == [(None, "metric"), (None, "value"), (None, "timestamp")]


# -- bodies of the single-point endpoints ------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b'{"metric": "m", "value": 1', id="truncated"),
        pytest.param(b"null", id="null"),
        pytest.param(b"[1, 2]", id="array"),
        pytest.param(b'"signups"', id="string"),
        pytest.param(b"42", id="number"),
        pytest.param(b"[" * 100_000, id="deeply-nested"),
        pytest.param(
            b'{"metric": "m", "value": 1, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            id="deeply-nested-unknown-field",
        ),
    ],
)
@pytest.mark.parametrize("mtype", [COUNTER, VALUE])
def test_bodies_that_are_not_a_json_object_are_400(raw: bytes, mtype: MetricType) -> None:
    with pytest.raises(BadRequest) as info:
        decode_single(raw, mtype, RULES, now=NOW)
    assert info.value.message


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (rb'{"metric": "a\ud800b"}', "\\ud800 is half of a UTF-16 surrogate pair"),
        (rb'{"metric": "a\\\uDBFF"}', "\\uDBFF is half of a UTF-16 surrogate pair"),
        # an escaped backslash and the letters "ud800": not an escape, the body is cut off
        (rb'{"metric": "a\\ud800', "Input data was truncated"),
        (rb'{"metric": "ab', "Input data was truncated"),
    ],
)
def test_a_lone_surrogate_escape_is_named_not_called_truncation(raw: bytes, says: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(says)):
        decode_single(raw, VALUE, RULES, now=NOW)
    with pytest.raises(BadRequest, match=re.escape(says)):
        decode_batch(b'{"points": [' + raw + b"]}", RULES, now=NOW)


def test_unknown_fields_are_ignored() -> None:
    assert one({"metric": "m", "value": 2, "unit": "ms"}).value == 2.0


def test_each_decode_is_a_new_batch() -> None:
    raw = body({"metric": "m", "value": 1})
    first = decode_single(raw, VALUE, RULES, now=NOW)
    second = decode_single(raw, VALUE, RULES, now=NOW)
    assert first.batch_id != second.batch_id


# -- batches -------------------------------------------------------------------------------


def test_a_batch_keeps_order_types_and_defaults() -> None:
    batch = decode_batch(
        body(
            {
                "points": [
                    {"metric": " signups ", "type": "counter"},
                    {"metric": "signups", "type": "counter", "value": 3, "timestamp": NOW - 60},
                    {
                        "metric": "temp",
                        "type": "value",
                        "value": 21.5,
                        "timestamp": "2025-06-15T15:00:00Z",
                    },
                ]
            }
        ),
        RULES,
        now=NOW,
    )
    assert batch.points == [
        Point("signups", COUNTER, 1.0, NOW),
        Point("signups", COUNTER, 3.0, NOW - 60),
        Point("temp", VALUE, 21.5, 1_749_999_600.0),
    ]


@pytest.mark.parametrize("n", [1, 1000])
def test_a_batch_holds_1_to_1000_points(n: int) -> None:
    assert (
        len(
            decode_batch(
                body({"points": [{"metric": "m", "type": "counter"}] * n}), RULES, now=NOW
            ).points
        )
        == n
    )


def test_an_empty_batch_is_422() -> None:
    err = batch_error([])
    assert isinstance(err, ValidationError)
    assert [d.field for d in err.details] == ["points"]


@pytest.mark.parametrize(
    "points",
    [
        pytest.param([{"metric": "m", "type": "counter"}] * 1001, id="1001-good"),
        pytest.param([{"metric": "m", "type": "counter"}] * 1000 + ["junk"], id="1001-with-junk"),
        pytest.param([{"metric": "", "type": "gauge"}] * 1500, id="1500-bad"),
    ],
)
def test_a_batch_over_1000_points_is_payload_too_large(points: list[object]) -> None:
    assert isinstance(batch_error(points), PayloadTooLarge)


def test_the_batch_limit_follows_the_rules_given() -> None:
    rules = Rules(max_batch_points=2)
    assert (
        len(
            decode_batch(
                body({"points": [{"metric": "m", "type": "counter"}] * 2}), rules, now=NOW
            ).points
        )
        == 2
    )
    assert isinstance(batch_error([{"metric": "m", "type": "counter"}] * 3, rules), PayloadTooLarge)


def test_every_bad_point_is_reported_with_its_index_and_field() -> None:
    err = batch_error(
        [
            {"metric": "ok", "type": "counter"},
            {"metric": "", "type": "counter"},
            {"metric": "v", "type": "value"},
            {"metric": "t", "type": "counter", "timestamp": "yesterday"},
            {"metric": "b", "type": "counter", "value": True},
            {"metric": "s", "type": "value", "value": "5"},
            {"metric": "g", "type": "gauge", "value": 1},
            {"metric": "n", "value": 1},
            {"type": "counter"},
            {"metric": "f", "type": "value", "value": 1, "timestamp": NOW + 3600},
            {"metric": "ok2", "type": "value", "value": 2},
            {"metric": "", "type": "value", "value": None, "timestamp": True},
        ]
    )
    assert isinstance(err, ValidationError)
    assert [(d.index, d.field) for d in err.details] == [
        (1, "metric"),
        (2, "value"),
        (3, "timestamp"),
        (4, "value"),
        (5, "value"),
        (6, "type"),
        (7, "type"),
        (8, "metric"),
        (9, "timestamp"),
        (11, "metric"),
        (11, "value"),
        (11, "timestamp"),
    ]
    assert all(d.message for d in err.details)


def test_a_point_that_is_not_an_object_is_reported_by_index() -> None:
    err = batch_error([{"metric": "ok", "type": "counter"}, 5, "x", None])
    assert isinstance(err, ValidationError)
    assert [d.index for d in err.details] == [1, 2, 3]


def test_a_batch_with_one_bad_point_is_rejected_whole() -> None:
    err = batch_error(
        [{"metric": "ok", "type": "counter"}] * 999 + [{"metric": "x", "type": "value"}]
    )
    assert isinstance(err, ValidationError)
    assert [(d.index, d.field) for d in err.details] == [(999, "value")]


def test_a_type_conflict_inside_one_batch_names_the_point() -> None:
    err = batch_error(
        [
            {"metric": "x", "type": "counter"},
            {"metric": "y", "type": "value", "value": 1},
            {"metric": " x ", "type": "value", "value": 2},
            {"metric": "x", "type": "counter"},
            {"metric": "y", "type": "counter"},
        ]
    )
    assert isinstance(err, TypeConflict)
    assert [(d.index, d.field) for d in err.details] == [(2, "type"), (4, "type")]
    assert "'x'" in err.details[0].message


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b"[]", id="array"),
        pytest.param(b"null", id="null"),
        pytest.param(b"{}", id="no-points"),
        pytest.param(b'{"points": null}', id="points-null"),
        pytest.param(b'{"points": "m"}', id="points-string"),
        pytest.param(b'{"points": {"metric": "m"}}', id="points-object"),
        pytest.param(b'{"metric": "m", "type": "counter"}', id="single-point-body"),
        pytest.param(b'{"points": ' + b"[" * 100_000, id="deeply-nested"),
        pytest.param(
            b'{"points": [{"metric": "m", "type": "counter", "x": '
            + b"[" * 100_000
            + b"]" * 100_000
            + b"}]}",
            id="deeply-nested-unknown-field",
        ),
    ],
)
def test_a_batch_body_of_the_wrong_shape_is_400(raw: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        decode_batch(raw, RULES, now=NOW)
    assert info.value.message


def test_batch_ids_are_unique_in_a_process_and_in_a_forked_child() -> None:
    import os

    from glowing_fiesta.ingest.validate import new_batch_id

    ids = {new_batch_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write, new_batch_id().encode())
        os._exit(0)
    os.close(write)
    child_id = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    assert child_id not in ids
    assert child_id[:16] != next(iter(ids))[:16]  # a fresh random prefix, not the parent's


# Mostly good points, so that whole batches pass often; now and then one bad field.
_names = st.sampled_from(["a", " a ", "b", "é"] * 6 + ["a\x01", "", "x" * 256, "c\u2028d"])
_values = st.one_of(
    st.none(), st.integers(-(10**6), 10**6), st.floats(allow_nan=False, allow_infinity=False)
)
_offsets = st.one_of(
    st.none(),
    st.floats(-89 * 86400, 299, allow_nan=False),
    st.floats(-89 * 86400, 299, allow_nan=False),
    st.sampled_from([-91 * 86400.0, 301.0, "x", "10"]),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(_names, st.sampled_from(["counter", "value"]), _values, _offsets),
        min_size=1,
        max_size=12,
    )
)
def test_a_batch_gets_what_each_point_alone_gets(
    rows: list[tuple[str, str, object, object]],
) -> None:
    """decode_batch's shortcut for the common case agrees with `Rules.point` point by
    point: the same points when all pass, and a rejection when any fails."""
    now = NOW
    rules = Rules()
    items = []
    for name, kind, value, offset in rows:
        item: dict[str, object] = {"metric": name, "type": kind}
        if value is not None:
            item["value"] = value
        if isinstance(offset, float):
            item["timestamp"] = now + offset
        elif offset is not None:
            item["timestamp"] = offset
        items.append(item)
    expected = [
        rules.point(it["metric"], MetricType(kind), it.get("value"), it.get("timestamp"), now=now)
        for it, (_, kind, _, _) in zip(items, rows, strict=True)
    ]
    body = json.dumps({"points": items}).encode()
    good = [p for p in expected if isinstance(p, Point)]
    kinds: dict[str, MetricType] = {}
    clash = any(kinds.setdefault(p.metric, p.type) is not p.type for p in good)
    if len(good) < len(expected) or clash:
        with pytest.raises((ValidationError, TypeConflict)):
            decode_batch(body, rules, now=now)
    else:
        batch = decode_batch(body, rules, now=now)
        assert batch.points == good
        assert batch.columns == PointColumns.of(good)  # names once each, as trimmed
