"""The settings every family shares: the per-CID enable flag and the timestamp window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field, field_validator

from notes_pipeline.core.timestamps import TimestampWindow, to_utc

_ANY_INSTANT = TimestampWindow(datetime.min, datetime.max)


class SettingsBase(dg.ConfigurableResource):
    """Base of each family's settings resource: configurable per deployment or run."""

    enabled_cids: str = Field(
        default="",
        description="Per-CID enable flag (crm_notes_migration_enabled): comma-separated CIDs, "
        "or '*' for all. Default off.",
    )
    timestamp_earliest: str = Field(
        default="1970-01-01T00:00:00Z",
        description="Plausibility window start (RFC 3339); earlier timestamps are "
        "INVALID_TIMESTAMP (SPEC rule 5).",
    )
    timestamp_ahead_hours: float = Field(
        default=24.0,
        description="Plausibility window end, in hours after the run's start; later "
        "timestamps are INVALID_TIMESTAMP (SPEC rule 5).",
    )

    @field_validator("timestamp_earliest")
    @classmethod
    def _earliest_is_a_timestamp(cls, value: str) -> str:
        to_utc(value, "timestamp_earliest", _ANY_INSTANT)
        return value

    def timestamp_window(self, now: datetime | None = None) -> TimestampWindow:
        """The plausibility window of SPEC rule 5, as naive UTC datetimes."""
        current = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
        earliest = to_utc(self.timestamp_earliest, "timestamp_earliest", _ANY_INSTANT)
        return TimestampWindow(earliest, current + timedelta(hours=self.timestamp_ahead_hours))

    def discovery_auditable_kinds(self) -> dict[str, str]:
        """``auditable_type`` → kind of the audits that make a CRM account a partition
        (``core.discovery``); none for a family that does not migrate audits."""
        return {}

    def is_enabled(self, cid: str) -> bool:
        """The per-CID flag; off unless listed (or '*')."""
        listed = {item.strip() for item in self.enabled_cids.split(",") if item.strip()}
        return "*" in listed or cid in listed
