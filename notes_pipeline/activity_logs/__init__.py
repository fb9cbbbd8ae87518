"""Activity-log family (SPEC-activity-logs): CRM ``audits`` → CDP ``activity_logs``, per CID.

This package holds the pure rules (``rules/``), the records and code vocabulary
(``records``) and the settings resource (``settings``, imported on its own: it needs Dagster).
"""

from notes_pipeline.activity_logs.rules.changes import (
    InvalidAuditedChanges,
    extract_changes,
    parse_audited_changes,
)

__all__ = ["InvalidAuditedChanges", "extract_changes", "parse_audited_changes"]
