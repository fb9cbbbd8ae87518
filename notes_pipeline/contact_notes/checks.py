"""The gates (SPEC "Asset checks"): specs declared on the assets, evaluated as pure functions.

Checks run inside their asset's step (one step per asset keeps a CID's run short); the two
normalization gates are blocking, so a failing CID never reaches cdp_notes_loaded.
"""

from __future__ import annotations

import dagster as dg

from notes_pipeline.contact_notes.reason_codes import FidelityCode, NoteCode
from notes_pipeline.contact_notes.records import LoadResult, NormalizedNotes, ValidationReport
from notes_pipeline.contact_notes.settings import MigrationSettings
from notes_pipeline.core.partitions import cid_partitions
from notes_pipeline.core.rates import exceeds_failure_threshold
from notes_pipeline.core.vocabulary import LoadStatus, Outcome

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
    _spec(
        "validation_report",
        "fidelity",
        "Each migrated note equals the plan of its unchanged CRM source (write path).",
    ),
    _spec("validation_report", "attachments", "≥ 95 % of attachments re-linked (WARN)."),
    _spec(
        "validation_report",
        "source_drift",
        "No migrated note whose CRM source changed after migration (WARN: for Ops review; "
        "never overwritten).",
    ),
]


def _ids(ids: list[str]) -> dg.MetadataValue:
    return dg.MetadataValue.json(ids[:WORST])


def _result(asset: str, name: str, passed: bool, metadata: dict, severity=ERROR):
    return dg.AssetCheckResult(
        asset_key=asset, check_name=name, passed=bool(passed), severity=severity, metadata=metadata
    )


def normalized_checks(
    normalized: NormalizedNotes, settings: MigrationSettings
) -> list[dg.AssetCheckResult]:
    """SPEC gates 1-2 (blocking): contact_coverage and normalization_failure_rate."""
    misses, failures = normalized.contact_misses, normalized.failures
    coverage = normalized.contact_coverage_pct
    rate = normalized.normalization_failure_rate_pct
    return [
        _result(
            "normalized_notes",
            "contact_coverage",
            coverage >= settings.coverage_threshold_pct,
            {
                "coverage_pct": coverage,
                "threshold_pct": settings.coverage_threshold_pct,
                "in_scope_notes": normalized.in_scope,
                "unmapped_notes": len(misses),
                "unmapped_note_ids": _ids(misses),
                "reason_code": str(NoteCode.CONTACT_NOT_MAPPED),
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
                "in_scope_notes": normalized.in_scope,
                "failed_by_reason": dg.MetadataValue.json(dict(normalized.failed_by_reason)),
                "failed_note_ids": _ids([p.legacy_crm_note_id for p in failures]),
            },
        ),
    ]


def loaded_checks(load: LoadResult, settings: MigrationSettings) -> list[dg.AssetCheckResult]:
    """SPEC gate 3: the load's write failures within the halt rule, and not halted."""
    halted = exceeds_failure_threshold(
        len(load.failed),
        load.count(Outcome.MIGRATED),
        load.count(Outcome.SKIPPED),
        settings.failure_threshold_pct,
    )
    return [
        _result(
            "cdp_notes_loaded",
            "load_failure_rate",
            not halted and load.status != LoadStatus.HALTED,
            {
                "load_failure_rate_pct": load.load_failure_rate_pct,
                "threshold_pct": settings.failure_threshold_pct,
                "status": str(load.status),
                "failed_note_ids": _ids([o.legacy_crm_note_id for o in load.failed]),
            },
        )
    ]


def report_checks(
    report: ValidationReport, settings: MigrationSettings
) -> list[dg.AssetCheckResult]:
    """SPEC gates 4-8 on the report: match, failure rate, duplicates, fidelity (write-path
    mismatches, ERROR), attachments (WARN); and source_drift (WARN, issue #12 item 2)."""
    match = report.match_pct
    counts = report.outcomes
    return [
        _result(
            "validation_report",
            "match",
            match is not None and match >= settings.match_threshold_pct,
            {
                key: value
                for key, value in {
                    "match_pct": match,
                    "threshold_pct": settings.match_threshold_pct,
                    "source_count": report.source_count,
                    "target_count": report.target_count,
                    "validation_skipped": report.validation_skipped,
                }.items()
                if value is not None
            },
        ),
        _result(
            "validation_report",
            "failure_rate",
            not exceeds_failure_threshold(
                counts.get(Outcome.FAILED, 0),
                counts.get(Outcome.MIGRATED, 0),
                counts.get(Outcome.SKIPPED, 0),
                settings.failure_threshold_pct,
            ),
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
                "reason_code": str(FidelityCode.FIDELITY_MISMATCH),
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
                "repaired": report.attachments_repaired,
                "unavailable": report.attachments_unavailable,
            },
            severity=dg.AssetCheckSeverity.WARN,
        ),
        _result(
            "validation_report",
            "source_drift",
            not report.source_drift,
            {
                "drift": len(report.source_drift),
                "worst": dg.MetadataValue.json(report.source_drift[:WORST]),
                "reason_code": str(FidelityCode.SOURCE_DRIFT),
            },
            severity=dg.AssetCheckSeverity.WARN,
        ),
    ]
