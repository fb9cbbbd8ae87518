"""Timestamp rule (SPEC rule 5): UTC-normalized, preserved, millisecond precision."""

from __future__ import annotations

from datetime import UTC, datetime


class InvalidTimestamp(ValueError):
    """Missing, unparsable or offset-less timestamp."""


def to_utc(value: datetime | str | None, field: str) -> datetime:
    """Parse an aware timestamp and return it in UTC, truncated to milliseconds (BSON precision)."""
    if value is None:
        raise InvalidTimestamp(f"{field} missing")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidTimestamp(f"{field} unparsable") from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidTimestamp(f"{field} has no UTC offset")
    utc = value.astimezone(UTC)
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000, tzinfo=None)
