"""The extraction window's start (SPEC-activity-logs §3, REV-11): the trigger parameter
``date_range_start`` as a UTC instant; ``:cutoff = COALESCE(date_range_start, MIN(created_at))``.
"""

from __future__ import annotations

import re
from datetime import datetime

from notes_pipeline.activity_logs.rules.document import audit_created_at
from notes_pipeline.core.timestamps import InvalidTimestamp, TimestampWindow

_DATE_ONLY = re.compile(r"\s*\d{4}-\d{2}-\d{2}\s*", re.ASCII)
_ANY_INSTANT = TimestampWindow(datetime.min, datetime.max)


def parse_date_range_start(value: str | None) -> datetime | None:
    """``date_range_start`` run config → a naive UTC ``datetime`` (None when not given).

    Accepts a date (``2022-01-01``: UTC midnight), an RFC 3339 date-time with an offset, or a
    zone-less date-time (UTC, as audits store it). Raises ``ValueError`` naming the problem
    kind only (the value is not echoed)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if _DATE_ONLY.fullmatch(text):
        text += " 00:00:00"
    try:
        return audit_created_at(text, _ANY_INSTANT)
    except InvalidTimestamp:
        raise ValueError(
            "date_range_start must be a date (YYYY-MM-DD) or an RFC 3339 date-time"
        ) from None
