"""The gates (SPEC "Asset checks"): specs declared on the assets, evaluated as pure functions.

Checks run inside their asset's step (one step per asset keeps a CID's run short); the two
normalization gates are blocking, so a failing CID never reaches cdp_notes_loaded.
"""

from __future__ import annotations

import dagster as dg

from notes_pipeline.contact_notes import reason_codes as rc
from notes_pipeline.contact_notes.load import failure_rate
from notes_pipeline.contact_notes.records import LoadResult, ValidationReport
from notes_pipeline.contact_notes.validation import pct
from notes_pipeline.core.partitions import cid_partitions
from notes_pipeline.core.resources.settings import MigrationSettings

WORST = 20  # offending ids shown in check metadata
ERROR = dg.AssetCheckSeverity.ERROR


def _spec(asset: str, name: str, description: str, blocking: bool = False) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        name,
        asset=asset,
        description=description,
        blocking=blocking,
        partitions_def=cid_partitions,
    )


NORMALIZED_CHECKS = [
    _spec(
        "normalized_notes",
        "contact_coverage",
        "≥ 99 % of in-scope notes map to a CDP contact; blocks the load otherwise.",
        True,
    ),
    _spec(
        "normalized_notes",
        "normalization_failure_rate",
        "Normalization failures ≤ 1 % of in-scope notes; blocks the load otherwise.",
        True,
    ),
]
LOADED_CHECKS = [
    _spec(
        "cdp_notes_loaded",
        "load_failure_rate",
        "Write failures ≤ 1 % of the notes attempted; fails when the load halted.",
    ),
]
REPORT_CHECKS = [
    _spec("validation_report", "match", "match_pct ≥ 99 % (CDP count vs CRM in-scope recount)."),
    _spec("validation_report", "failure_rate", "All failures ≤ 1 % of migrated+skipped+failed."),
    _spec("validation_report", "no_duplicates", "0 duplicate (company_sso_id, legacy id)."),
    _spec("validation_report", "fidelity", "Each migrated note equals its plan."),
    _spec("validation_report", "attachments", "≥ 95 % of attachments re-linked (WARN)."),
]


def _ids(ids: list[str]) -> dg.MetadataValue:
    return dg.MetadataValue.json(ids[:WORST])


def _result(asset: str, name: str, passed: bool, metadata: dict, severity=ERROR):
    return dg.AssetCheckResult(
        asset_key=asset, check_name=name, passed=bool(passed), severity=severity, metadata=metadata
    )


def normalized_checks(normalized, settings: MigrationSettings) -> list[dg.AssetCheckResult]:
    """contact_coverage and normalization_failure_rate for a NormalizedNotes."""
    misses, in_scope, failures = (
        normalized.contact_misses,
        normalized.in_scope,
        normalized.failures,
    )
    coverage = pct(in_scope - len(misses), in_scope)
    rate = pct(len(failures), in_scope) if in_scope else 0.0
    by_reason: dict[str, int] = {}
    for plan in failures:
        by_reason[plan.reason_code] = by_reason.get(plan.reason_code, 0) + 1
    return [
        _result(
            "normalized_notes",
            "contact_coverage",
            coverage >= settings.coverage_threshold_pct,
            {
                "coverage_pct": coverage,
                "threshold_pct": settings.coverage_threshold_pct,
                "in_scope_notes": in_scope,
                "unmapped_notes": len(misses),
                "unmapped_note_ids": _ids(misses),
                "reason_code": rc.CONTACT_NOT_MAPPED,
            },
        ),
        _result(
            "normalized_notes",
            "normalization_failure_rate",
            rate <= settings.failure_threshold_pct,
            {
                "failure_rate_pct": rate,
                "threshold_pct": settings.failure_threshold_pct,
                "failed": len(failures),
                "in_scope_notes": in_scope,
                "failed_by_reason": dg.MetadataValue.json(by_reason),
                "failed_note_ids": _ids([p.legacy_crm_note_id for p in failures]),
            },
        ),
    ]


def loaded_checks(load: LoadResult, settings: MigrationSettings) -> list[dg.AssetCheckResult]:
    failed = [o.legacy_crm_note_id for o in load.outcomes if o.outcome == rc.FAILED]
    migrated = sum(1 for o in load.outcomes if o.outcome == rc.MIGRATED)
    skipped = sum(1 for o in load.outcomes if o.outcome == rc.SKIPPED)
    rate = round(failure_rate(len(failed), migrated, skipped) * 100, 3)
    passed = rate <= settings.failure_threshold_pct and load.status != rc.HALTED
    return [
        _result(
            "cdp_notes_loaded",
            "load_failure_rate",
            passed,
            {
                "load_failure_rate_pct": rate,
                "threshold_pct": settings.failure_threshold_pct,
                "status": load.status,
                "failed_note_ids": _ids(failed),
            },
        )
    ]


def report_checks(report: ValidationReport, settings: MigrationSettings) -> list:
    match = report.match_pct
    return [
        _result(
            "validation_report",
            "match",
            match is not None and match >= settings.match_threshold_pct,
            {
                "match_pct": match if match is not None else -1.0,
                "threshold_pct": settings.match_threshold_pct,
                "source_count": report.source_count if report.source_count is not None else -1,
                "target_count": report.target_count if report.target_count is not None else -1,
                "validation_skipped": report.validation_skipped,
            },
        ),
        _result(
            "validation_report",
            "failure_rate",
            report.failure_rate_pct <= settings.failure_threshold_pct,
            {
                "failure_rate_pct": report.failure_rate_pct,
                "threshold_pct": settings.failure_threshold_pct,
                "failed_by_reason": dg.MetadataValue.json(report.failed_by_reason),
            },
        ),
        _result(
            "validation_report",
            "no_duplicates",
            not report.duplicate_legacy_ids,
            {
                "duplicates": len(report.duplicate_legacy_ids),
                "duplicate_legacy_ids": _ids(report.duplicate_legacy_ids),
            },
        ),
        _result(
            "validation_report",
            "fidelity",
            not report.fidelity_mismatches,
            {
                "mismatches": len(report.fidelity_mismatches),
                "worst": dg.MetadataValue.json(report.fidelity_mismatches[:WORST]),
            },
        ),
        _result(
            "validation_report",
            "attachments",
            report.attachment_success_pct >= settings.attachment_success_threshold_pct,
            {
                "attachment_success_pct": report.attachment_success_pct,
                "threshold_pct": settings.attachment_success_threshold_pct,
                "copied": report.attachments_copied,
                "planned": report.attachments_planned,
            },
            severity=dg.AssetCheckSeverity.WARN,
        ),
    ]
