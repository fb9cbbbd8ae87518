"""ActivityLogSettings: the activity-log family's configurable defaults (SPEC-activity-logs).

Every proposal of ours ([Nn]) stays configurable per deployment or per run (Launchpad); each
field's description cites the spec section it implements.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from notes_pipeline.activity_logs.rules.categories import (
    DEFAULT_AUDITABLE_KINDS,
    CategoryRules,
    Kind,
)
from notes_pipeline.activity_logs.rules.changes import (
    MAX_ALIASES,
    MAX_BYTES,
    MAX_DEPTH,
    YamlLimits,
)
from notes_pipeline.core.resources.settings import SettingsBase

MAX_BATCH_SIZE = 20  # §6: records[≤20]
MAX_LOOKUP_BATCH = 5_000  # ours: distinct ids per $in and users query


class ActivityLogSettings(SettingsBase):
    """Scope, mapper id-sets, thresholds and limits of the activity-log migration.

    ``is_enabled(cid)`` and ``timestamp_window(now)`` come from the core's ``SettingsBase``;
    its three fields are re-declared here only to cite this family's spec.
    """

    auditable_kinds: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_AUDITABLE_KINDS),
        description="auditable_type → kind (person, deal, task, ticket, join:deal, join:task, "
        "join:ticket). Its keys are the in-scope types; other types never leave the query "
        "(§3, §4.2 [N2][N4]; join class names are OQ-12).",
    )
    won_stage_ids: list[int] = Field(
        default_factory=list,
        description="crm_stage_id values that make a deal update 'deal/won'. Empty by default: "
        "every stage change is 'deal/update' until OQ-12 is answered (§4.2 row 5 [N4]).",
    )
    done_task_status_ids: list[int] = Field(
        default_factory=list,
        description="crm_task_status_id values that make a task update 'task/completed'. Empty "
        "by default (§4.2 row 6 [N4], OQ-12).",
    )
    resolved_ticket_status_ids: list[int] = Field(
        default_factory=list,
        description="crm_ticket_status_id values that make a ticket update 'ticket/resolved'. "
        "Empty by default (§4.2 row 7 [N4], OQ-12).",
    )
    enabled_cids: str = Field(
        default="",
        description="Per-CID flag crm_activity_logs_migration_enabled: comma-separated CIDs, "
        "or '*' for all. Default off; otherwise FLAG_DISABLED (§6 preconditions [N16]).",
    )
    page_size: int = Field(
        default=500,
        ge=1,
        le=5000,
        description="Audits per keyset page on audits.id (§3: LIMIT 500).",
    )
    lookup_batch_size: int = Field(
        default=2_000,
        ge=1,
        le=MAX_LOOKUP_BATCH,
        description="Audits planned per lookup batch: at most one users query, one identity "
        "call and, when the contacts are not preloaded, one $in per kind per batch (§4.3 [N8], "
        "§4.4 [N10]). 2,000: on a server that scans for $in (FerretDB) a quarter of the scans "
        "of 500 (BENCHMARKS.md).",
    )
    contact_preload_max: int = Field(
        default=200_000,
        ge=0,
        le=2_000_000,
        description="A company with at most this many CDP contacts (and crm_contact_id_map "
        "rows) has them read once per run, in one streamed company-scoped query, instead of one "
        "$in per lookup batch; same matches (§4.3 [N8]). About 200 bytes of memory each; 0 = "
        "always the batched $in (§11).",
    )
    batch_size: int = Field(
        default=20,
        ge=1,
        le=MAX_BATCH_SIZE,
        description="Records per write batch, at most 20 (§6: records[≤20]).",
    )
    chunk_size: int = Field(
        default=50_000,
        ge=1,
        le=50_000,
        description="Records held in memory at once, never the whole CID (§11 [N19]).",
    )
    write_concurrency: int = Field(
        default=4,
        ge=1,
        le=32,
        description="Parallel batch writers of ≤ batch_size operations each (§11 [N19]).",
    )
    max_write_rate_per_s: float | None = Field(
        default=None,
        gt=0,
        description="Optional ceiling on records written per second; unset by default, a "
        "production profile may set 500 (§11 [N19]).",
    )
    halt_threshold: float = Field(
        default=0.10,
        ge=0.0,
        le=1.0,
        description="Halt when records_failed / (migrated + skipped + failed) exceeds this, "
        "cumulative, after every batch, no minimum sample (§6 halt [N15]).",
    )
    coverage_threshold_pct: float = Field(
        default=99.0,
        ge=0.0,
        le=100.0,
        description="Blocking contact-coverage gate, audit-weighted (§4.3 Decision 9 [N9]).",
    )
    planned_failure_threshold: float = Field(
        default=0.10,
        ge=0.0,
        le=1.0,
        description="Blocking gate on the planned failure rate, same formula as the halt "
        "(§15 checks).",
    )
    accuracy_threshold_pct: float = Field(
        default=99.0,
        ge=0.0,
        le=100.0,
        description="accuracy_pct pass mark for completed_success (§7 [N20]).",
    )
    contact_not_found_threshold_pct: float = Field(
        default=1.0,
        ge=0.0,
        le=100.0,
        description="contact_not_found must stay below this share for completed_success "
        "(§4.3 success criterion, §6 states).",
    )
    actor_unresolved_alert_pct: float = Field(
        default=20.0,
        ge=0.0,
        le=100.0,
        description="Alert (Slack) when actor cases A3+A4 exceed this share (§9 alerts).",
    )
    unmapped_warn_pct: float = Field(
        default=1.0,
        ge=0.0,
        le=100.0,
        description="WARN check: unmapped_action_type skips above this share of the extracted "
        "audits are flagged for review (ours; §15 'unmapped share, reported').",
    )
    count_unattributable: bool = Field(
        default=True,
        description="Stage-0 probe: count the in-scope audits in the window that no account "
        "owns ([N1] 'unattributable'). One table-wide query per CID run; switch off when the "
        "probe is too slow on a very large table (§3, OQ-2).",
    )
    identity_timeout_s: float = Field(
        default=3.0,
        gt=0,
        description="Timeout of one identity-service (USMAN) call, seconds (§4.4 hop 2).",
    )
    identity_retries: int = Field(
        default=1,
        ge=0,
        le=3,
        description="Retries of a timed-out or failed identity call before the record fails "
        "actor_lookup_failed (§4.4 [N10]).",
    )
    extract_retry_backoff_s: list[float] = Field(
        default_factory=lambda: [1.0, 3.0, 9.0],
        description="Backoff before each retry of a failed extraction page; after the last, "
        "CRM_EXTRACT_FAILED (§3 [N23]).",
    )
    failure_retention_days: int = Field(
        default=30,
        ge=1,
        description="Days final failures stay in crm_activity_log_migration_failures (§6).",
    )
    yaml_max_bytes: int = Field(
        default=MAX_BYTES,
        ge=1,
        le=8 * MAX_BYTES,
        description="Largest audited_changes accepted, UTF-8 bytes; larger → "
        "invalid_audited_changes (§4.1 [N24]: 1 MiB).",
    )
    yaml_max_aliases: int = Field(
        default=MAX_ALIASES,
        ge=0,
        le=10 * MAX_ALIASES,
        description="Most alias expansions in one audited_changes; more → "
        "invalid_audited_changes (§4.1 [N24]: 100).",
    )
    yaml_max_depth: int = Field(
        default=MAX_DEPTH,
        ge=1,
        le=500,
        description="Deepest nesting of collections in one audited_changes (ours, §4.1 [N24] "
        "bound: never a hang or an out-of-memory).",
    )
    timestamp_earliest: str = Field(
        default="1970-01-01T00:00:00Z",
        description="Plausibility window start (RFC 3339); earlier created_at → "
        "invalid_timestamp (§4.5; notes SPEC rule 5 convention).",
    )
    timestamp_ahead_hours: float = Field(
        default=24.0,
        ge=0,
        description="Plausibility window end, hours after the run's start (§4.5; notes "
        "SPEC rule 5 convention).",
    )

    @field_validator("auditable_kinds")
    @classmethod
    def _kinds_known(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted({kind for kind in value.values() if kind not in set(Kind)})
        if unknown:
            raise ValueError(f"unknown kinds {unknown}; allowed: {[k.value for k in Kind]}")
        return value

    @field_validator("extract_retry_backoff_s")
    @classmethod
    def _backoff_non_negative(cls, value: list[float]) -> list[float]:
        if any(delay < 0 for delay in value):
            raise ValueError("extract_retry_backoff_s must be non-negative")
        return value

    def discovery_auditable_kinds(self) -> dict[str, str]:
        """Discovery registers the CIDs owning audits of these types (§15: the union with
        the CIDs with Person notes)."""
        return dict(self.auditable_kinds)

    def in_scope_types(self) -> list[str]:
        """The ``auditable_type`` values of the extraction query, sorted (§3 [N2])."""
        return sorted(self.auditable_kinds)

    def category_rules(self) -> CategoryRules:
        """The CategoryMapper's inputs (§4.2)."""
        return CategoryRules.build(
            self.auditable_kinds,
            self.won_stage_ids,
            self.done_task_status_ids,
            self.resolved_ticket_status_ids,
        )

    def yaml_limits(self) -> YamlLimits:
        """The ChangesExtractor's bounds (§4.1 [N24])."""
        return YamlLimits(self.yaml_max_bytes, self.yaml_max_aliases, self.yaml_max_depth)
