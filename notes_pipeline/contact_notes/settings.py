"""MigrationSettings: the contact-notes family's thresholds, scope and limits (SPEC.md)."""

from __future__ import annotations

from pydantic import Field, field_validator

from notes_pipeline.core.resources.settings import SettingsBase

MAX_BATCH_SIZE = 1000


class MigrationSettings(SettingsBase):
    """Rules the PRD leaves to configuration (OQ-4 note types, thresholds, per-CID flag)."""

    allowed_note_type_ids: list[int] = Field(
        default=[1, 6], description="crm_note_type_id values in scope (default Notes, Documents)."
    )
    batch_size: int = Field(default=500, description="Notes per write batch (max 1,000).")
    chunk_size: int = Field(
        default=5000,
        ge=1,
        description="Records per stored chunk between assets (crm_notes_raw, normalized_notes): "
        "a run holds about one chunk at a time, whatever the CID's size.",
    )
    contact_preload_max: int = Field(
        default=250_000,
        ge=0,
        description="normalized_notes preloads the company's contacts (crm_data.id → _id, one "
        "streamed company-scoped query per run, about 200 bytes each) when it has at most this "
        "many; otherwise each batch looks its contacts up with `$in` (0: always `$in`).",
    )
    failure_threshold_pct: float = Field(default=1.0, description="Halt/gate above this rate.")
    match_threshold_pct: float = Field(default=99.0, description="Validation match gate.")
    coverage_threshold_pct: float = Field(default=99.0, description="Contact coverage gate.")
    attachment_success_threshold_pct: float = Field(default=95.0)
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

    def allowed_hosts(self) -> frozenset[str]:
        """``attachment_allowed_hosts`` as lower-case ``host`` / ``host:port`` entries."""
        return frozenset(
            host.strip().lower()
            for host in self.attachment_allowed_hosts.split(",")
            if host.strip()
        )
