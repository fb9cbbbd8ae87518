"""MigrationSettings: thresholds, scope and limits, configurable per deployment or run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field, field_validator

from notes_pipeline.core.timestamps import TimestampWindow, to_utc

MAX_BATCH_SIZE = 1000
_ANY_INSTANT = TimestampWindow(datetime.min, datetime.max)


class MigrationSettings(dg.ConfigurableResource):
    """Rules the PRD leaves to configuration (OQ-4 note types, thresholds, per-CID flag)."""

    allowed_note_type_ids: list[int] = Field(
        default=[1, 6], description="crm_note_type_id values in scope (default Notes, Documents)."
    )
    batch_size: int = Field(default=500, description="Notes per write batch (max 1,000).")
    failure_threshold_pct: float = Field(default=1.0, description="Halt/gate above this rate.")
    match_threshold_pct: float = Field(default=99.0, description="Validation match gate.")
    coverage_threshold_pct: float = Field(default=99.0, description="Contact coverage gate.")
    attachment_success_threshold_pct: float = Field(default=95.0)
    enabled_cids: str = Field(
        default="",
        description="Per-CID enable flag (crm_notes_migration_enabled): comma-separated CIDs, "
        "or '*' for all. Default off.",
    )
    attachment_max_bytes: int = Field(
        default=25 * 1024 * 1024,
        gt=0,
        description="Cap on an attachment's bytes, both as received and as decoded (SPEC).",
    )
    attachment_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Per-operation timeout in seconds (connect, one read, one write); the "
        "whole download is bounded by attachment_deadline_s.",
    )
    attachment_deadline_s: float = Field(
        default=10.0,
        gt=0,
        description="Deadline in seconds for one whole attachment download: DNS, connect, "
        "every read and every redirect hop (SPEC '10 s deadline').",
    )
    attachment_allowed_hosts: str = Field(
        default="", description="Comma-separated host or host:port allowed for CRM downloads."
    )
    attachment_workers: int = Field(default=8, description="Parallel attachment copies.")
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
    cdp_proxy_base_url: str = Field(
        default="https://cdp.qontak.com/attachments",
        description="Base of the company-scoped CDP proxy URL stored on notes.",
    )

    @field_validator("batch_size")
    @classmethod
    def _batch_size_in_range(cls, value: int) -> int:
        if not 1 <= value <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be within 1..{MAX_BATCH_SIZE}")
        return value

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

    def is_enabled(self, cid: str) -> bool:
        """The per-CID flag; off unless listed (or '*')."""
        listed = {item.strip() for item in self.enabled_cids.split(",") if item.strip()}
        return "*" in listed or cid in listed

    def allowed_hosts(self) -> frozenset[str]:
        return frozenset(
            host.strip().lower()
            for host in self.attachment_allowed_hosts.split(",")
            if host.strip()
        )
