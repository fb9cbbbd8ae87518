"""Timestamp rule (SPEC rule 5): UTC-normalized, preserved, millisecond precision.

One parser for both transports: the PostgreSQL source reads timestamp columns as text
(``::text`` with ``DateStyle=ISO``, so ``infinity``, BC dates and years past 9999 arrive
as strings instead of failing ``fetchall()``), and the CRM HTTP API sends strings; both go
through ``to_utc``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone

DEFAULT_EARLIEST = datetime(1970, 1, 1)
DEFAULT_AHEAD = timedelta(days=1)

# RFC 3339 §5.6 date-time (T, t or space between date and time; Z or z), plus PostgreSQL's
# ISO output, whose offset may be hours only (`+07`) and may carry seconds (`+05:53:28`).
_DATE_TIME = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})[Tt ]"
    r"(?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})(?:\.(?P<frac>\d{1,32}))?"
    r"(?:(?P<z>[Zz])|(?P<sign>[+-])(?P<oh>\d{2})(?::?(?P<om>\d{2})(?::(?P<os>\d{2}))?)?)",
    re.ASCII,
)


class InvalidTimestamp(ValueError):
    """A timestamp that cannot be migrated; the message names the field and the kind only."""


@dataclass(frozen=True)
class TimestampWindow:
    """Plausible UTC instants, inclusive (naive datetimes in UTC)."""

    earliest: datetime
    latest: datetime

    @classmethod
    def default(cls, now: datetime | None = None) -> TimestampWindow:
        """``[1970-01-01, now + 1 day]`` (SPEC rule 5 default)."""
        current = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
        return cls(DEFAULT_EARLIEST, current + DEFAULT_AHEAD)


def _parse_text(text: str, field: str) -> datetime:
    """An aware datetime from an RFC 3339 / PostgreSQL ISO string; leap second 60 → 59.999."""
    match = _DATE_TIME.fullmatch(text.strip())
    if match is None:
        lowered = text.strip().lower()
        kind = "infinite" if lowered.endswith("infinity") else "unparsable"
        if lowered.endswith(" bc"):
            kind = "before_common_era"
        raise InvalidTimestamp(f"{field} {kind}")
    g = match.groupdict()
    second = int(g["s"])
    micro = int((g["frac"] or "0")[:6].ljust(6, "0"))
    if second == 60:  # RFC 3339 leap second: the closest instant datetime can hold
        second, micro = 59, 999_000
    if g["z"]:
        offset = timedelta(0)
    else:
        hours, minutes, seconds = int(g["oh"]), int(g["om"] or 0), int(g["os"] or 0)
        if hours > 23 or minutes > 59 or seconds > 59:
            raise InvalidTimestamp(f"{field} bad_offset")
        offset = timedelta(hours=hours, minutes=minutes, seconds=seconds)
        offset = -offset if g["sign"] == "-" else offset
    try:
        return datetime(
            int(g["y"]),
            int(g["mo"]),
            int(g["d"]),
            int(g["h"]),
            int(g["mi"]),
            second,
            micro,
            tzinfo=timezone(offset),
        )
    except ValueError:
        raise InvalidTimestamp(f"{field} out_of_range") from None


def to_utc(value: object, field: str, window: TimestampWindow | None = None) -> datetime:
    """Return ``value`` as a naive UTC datetime truncated to milliseconds (BSON precision).

    ``value``: an aware ``datetime`` or an RFC 3339 string (PostgreSQL's ISO text output
    too). Raises ``InvalidTimestamp`` — and nothing else — when it is missing, of another
    type, unparsable, infinite, BC, past year 9999, offset-less, overflows on conversion to
    UTC, or lies outside ``window`` (default ``TimestampWindow.default()``).
    """
    if value is None:
        raise InvalidTimestamp(f"{field} missing")
    if isinstance(value, str):
        parsed = _parse_text(value, field)
    elif isinstance(value, datetime):
        parsed = value
    else:
        kind = "date_without_time" if isinstance(value, date) else "wrong_type"
        raise InvalidTimestamp(f"{field} {kind}")
    try:
        offset = parsed.utcoffset()
    except (ValueError, TypeError):
        raise InvalidTimestamp(f"{field} bad_offset") from None
    if offset is None:
        raise InvalidTimestamp(f"{field} has no UTC offset")
    try:
        utc = (parsed.replace(tzinfo=None) - offset).replace(
            microsecond=parsed.microsecond // 1000 * 1000
        )
    except OverflowError:
        raise InvalidTimestamp(f"{field} out_of_range") from None
    window = window or TimestampWindow.default()
    if not window.earliest <= utc <= window.latest:
        raise InvalidTimestamp(f"{field} outside_window")
    return utc
