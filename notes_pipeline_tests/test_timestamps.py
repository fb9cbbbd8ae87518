"""SPEC rule 5: one timestamp parser for both transports; INVALID_TIMESTAMP, never a crash."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notes_pipeline.contact_notes.settings import MigrationSettings
from notes_pipeline.core.resources.crm_api import note_from_api
from notes_pipeline.core.timestamps import InvalidTimestamp, TimestampWindow, to_utc

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
WINDOW = TimestampWindow.default(NOW)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-03-10T02:30:00z", datetime(2024, 3, 10, 2, 30)),  # lower-case z is RFC 3339
        ("2024-03-10t02:30:00Z", datetime(2024, 3, 10, 2, 30)),
        ("2024-03-10 02:30:00+00", datetime(2024, 3, 10, 2, 30)),  # PostgreSQL ISO output
        ("2024-03-10 09:30:00.123456+07", datetime(2024, 3, 10, 2, 30, 0, 123000)),
        ("2024-03-10T08:00:00+05:30", datetime(2024, 3, 10, 2, 30)),
        ("2024-03-09T21:30:00-05:00", datetime(2024, 3, 10, 2, 30)),
        ("2024-03-10T02:30:00.9999999Z", datetime(2024, 3, 10, 2, 30, 0, 999000)),
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, 999000)),  # leap second
        ("1970-01-01T00:00:00Z", datetime(1970, 1, 1)),  # window start is inclusive
        (" 2024-03-10T02:30:00Z\n", datetime(2024, 3, 10, 2, 30)),
        (
            datetime(2024, 3, 10, 9, 30, tzinfo=timezone(timedelta(hours=7))),
            datetime(2024, 3, 10, 2, 30),
        ),
    ],
)
def test_valid_spellings_parse_to_utc_milliseconds(value, expected):
    assert to_utc(value, "created_at", WINDOW) == expected


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (None, "missing"),
        ("infinity", "infinite"),
        ("-infinity", "infinite"),
        ("0044-03-15 00:00:00+00 BC", "before_common_era"),
        ("10000-01-01 00:00:00+00", "unparsable"),  # year past 9999 (PostgreSQL allows it)
        ("9999-12-31T23:00:00-05:00", "out_of_range"),  # UTC conversion overflows
        ("0001-01-01T00:00:00+05:00", "out_of_range"),
        ("9999-12-31T23:59:59Z", "outside_window"),  # psycopg2's rendering of 'infinity'
        ("0001-01-01T00:00:00Z", "outside_window"),  # ... and of '-infinity'
        ("1969-12-31T23:59:59Z", "outside_window"),
        ("2026-11-30T12:00:01Z", "outside_window"),  # later than now + 1 day
        ("2024-02-30T00:00:00Z", "out_of_range"),
        ("2024-03-10T24:00:00Z", "out_of_range"),
        ("2024-03-10T02:30:00+24:00", "bad_offset"),
        ("2024-03-10T02:30:00", "unparsable"),  # no offset
        ("2024-03-10", "unparsable"),
        ("2024-W10-1T00:00Z", "unparsable"),  # ISO 8601 week date: not RFC 3339
        ("20240310T023000Z", "unparsable"),
        ("٢٠٢٤-03-10T02:30:00Z", "unparsable"),  # non-ASCII digits
        ("", "unparsable"),
        (1710037800, "wrong_type"),  # an integer from the API
        (1710037800.5, "wrong_type"),
        (True, "wrong_type"),
        ({"$date": "2024-03-10T02:30:00Z"}, "wrong_type"),
        (date(2024, 3, 10), "date_without_time"),
        (datetime(2024, 3, 10, 2, 30), "has no UTC offset"),
        (datetime.max.replace(tzinfo=UTC), "outside_window"),
        (datetime.min.replace(tzinfo=UTC), "outside_window"),
        (datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))), "out_of_range"),
    ],
)
def test_invalid_values_raise_invalid_timestamp_only(value, kind):
    with pytest.raises(InvalidTimestamp) as raised:
        to_utc(value, "created_at", WINDOW)
    assert str(raised.value) == f"created_at {kind}"


def test_window_is_configurable_in_settings():
    settings_ = MigrationSettings(
        timestamp_earliest="2000-01-01T00:00:00Z", timestamp_ahead_hours=0
    )
    window = settings_.timestamp_window(NOW)
    assert window == TimestampWindow(datetime(2000, 1, 1), datetime(2026, 11, 29, 12, 0))
    with pytest.raises(InvalidTimestamp):
        to_utc("1999-12-31T23:59:59Z", "created_at", window)
    with pytest.raises(InvalidTimestamp):
        to_utc("2026-11-29T12:00:01Z", "created_at", window)
    assert MigrationSettings().timestamp_window(NOW) == WINDOW


def test_settings_refuse_an_unparsable_window_start():
    with pytest.raises(Exception, match="timestamp_earliest"):
        MigrationSettings(timestamp_earliest="last tuesday")


def test_both_transports_agree():
    """The same instant, as PostgreSQL's ISO text and as the API's RFC 3339, gives one value."""
    pairs = [
        ("2024-03-10 09:30:00.123+07", "2024-03-10T02:30:00.123Z"),
        ("infinity", "infinity"),
        ("0044-03-15 00:00:00+00 BC", "0044-03-15T00:00:00Z"),  # BC vs a year before 1970
    ]
    for pg_text, api_value in pairs:
        outcomes = []
        for value in (pg_text, api_value):
            try:
                outcomes.append(to_utc(value, "created_at", WINDOW))
            except InvalidTimestamp:
                outcomes.append(InvalidTimestamp)
        assert outcomes[0] == outcomes[1], pg_text


def test_api_note_with_integer_timestamp_is_read_and_fails_at_planning():
    note = note_from_api({"id": 7, "organization_id": 1, "created_at": 1710037800}, 1, "p1i0")
    assert note.created_at == 1710037800
    with pytest.raises(InvalidTimestamp):
        to_utc(note.created_at, "created_at", WINDOW)


_ANYTHING = st.one_of(
    st.none(),
    st.text(),
    st.from_regex(
        r"[0-9]{1,5}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
        r"([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)?( BC)?",
        fullmatch=True,
    ),
    st.integers(),
    st.floats(allow_nan=True),
    st.datetimes(timezones=st.none() | st.timezones()),
    st.dates(),
    st.binary(),
)


@settings(max_examples=400, deadline=None)
@given(_ANYTHING)
def test_to_utc_never_raises_anything_but_invalid_timestamp(value):
    try:
        result = to_utc(value, "created_at", WINDOW)
    except InvalidTimestamp:
        return
    assert WINDOW.earliest <= result <= WINDOW.latest
    assert result.tzinfo is None and result.microsecond % 1000 == 0
