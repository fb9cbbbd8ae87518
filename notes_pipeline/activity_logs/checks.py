"""The activity-log gates of part 1 (SPEC-activity-logs §15 checks): specs declared on the
assets, results built by pure functions. ``extraction_complete``, ``contact_coverage`` and
``planned_failure_rate`` are blocking (ERROR); ``unmapped_share`` and
``actor_unresolved_share`` are WARN. Metadata: ids, codes, counts and rates only."""

from __future__ import annotations

import dagster as dg

from notes_pipeline.activity_logs.records import (
    AuditExtract,
    FailureCode,
    NormalizedActivityLogs,
    SkipCode,
)
from notes_pipeline.activity_logs.settings import ActivityLogSettings
from notes_pipeline.activity_logs.summary import WORST
from notes_pipeline.core.partitions import cid_partitions
from notes_pipeline.core.rates import pct
from notes_pipeline.core.vocabulary import RunCode

EXTRACT_ASSET = "crm_audits_raw"
NORMALIZED_ASSET = "normalized_activity_logs"
LOADED_ASSET = "cdp_activity_logs_loaded"
REPORT_ASSET = "activity_log_validation_report"
ERROR = dg.AssetCheckSeverity.ERROR
WARN = dg.AssetCheckSeverity.WARN


def _spec(asset: str, name: str, description: str, blocking: bool = False) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        name,
        asset=asset,
        description=description,
        blocking=blocking,
        partitions_def=cid_partitions,
    )


EXTRACT_CHECKS = [
    _spec(
        EXTRACT_ASSET,
        "extraction_complete",
        "Audits extracted = the Stage-0 COUNT (≤ high-water id, ≥ cutoff); blocks otherwise.",
        True,
    )
]
NORMALIZED_CHECKS = [
    _spec(
        NORMALIZED_ASSET,
        "contact_coverage",
        "≥ 99 % of in-scope audits resolve to a CDP contact (audit-weighted; the "
        "person-weighted source_id figure is reported); blocks otherwise.",
        True,
    ),
    _spec(
        NORMALIZED_ASSET,
        "planned_failure_rate",
        "Planned failures ≤ 10 % of planned audits (the halt formula); blocks otherwise.",
        True,
    ),
    _spec(
        NORMALIZED_ASSET,
        "unmapped_share",
        "unmapped_action_type skips within the reviewed share of extracted audits (WARN).",
    ),
    _spec(
        NORMALIZED_ASSET,
        "actor_unresolved_share",
        "Actor cases A3 + A4 within the alert share (WARN; §9: > 20 % alerts).",
    ),
]


LOADED_CHECKS = [
    _spec(
        LOADED_ASSET,
        "load_failure_rate",
        "The load was not halted: failed / (migrated + skipped + failed) ≤ 10 % after every "
        "batch (§6).",
    )
]
REPORT_CHECKS = [
    _spec(REPORT_ASSET, "accuracy", "accuracy_pct = countDocuments / source COUNT ≥ 99 % (§7)."),
    _spec(REPORT_ASSET, "contact_not_found", "contact_not_found < 1 % of in-scope audits (§4.3)."),
    _spec(
        REPORT_ASSET,
        "duplicates_and_fidelity",
        "0 duplicate external_ids and 0 stored documents that differ from their plan (§7).",
    ),
    _spec(REPORT_ASSET, "end_of_run_queue_empty", "No write left in the end-of-run queue (WARN)."),
]


def _ids(values: list[str]) -> dg.MetadataValue:
    return dg.MetadataValue.json(values[:WORST])


def _result(
    asset: str, name: str, passed: bool, metadata: dict, severity=ERROR
) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset, check_name=name, passed=bool(passed), severity=severity, metadata=metadata
    )


def extract_checks(extract: AuditExtract) -> list[dg.AssetCheckResult]:
    """§15 'extraction complete': extracted = COUNT (≤ high_water_id)."""
    probe = extract.probe
    return [
        _result(
            EXTRACT_ASSET,
            "extraction_complete",
            extract.complete,
            {
                "extracted": extract.extracted,
                "count": probe.count,
                "missing": probe.count - extract.extracted,
                "high_water_id": probe.high_water_id,
                "pages": extract.pages,
            },
        )
    ]


def normalized_checks(
    normalized: NormalizedActivityLogs, settings: ActivityLogSettings
) -> list[dg.AssetCheckResult]:
    """The plan's gates: coverage and planned failure rate (blocking), unmapped share and
    unresolved actors (WARN). Read from the plan's tally (no entry is re-read); offending ids
    are the first ``WORST`` in ``audits.id`` order."""
    tally = normalized.tally
    cov = tally.coverage
    persons = tally.person_coverage
    failure = tally.failure_rate
    unmapped = tally.unmapped
    unresolved, with_actor = tally.actor_unresolved
    unmapped_pct = pct(unmapped, tally.planned) if tally.planned else 0.0
    unresolved_pct = pct(unresolved, with_actor) if with_actor else 0.0
    return [
        _result(
            NORMALIZED_ASSET,
            "contact_coverage",
            cov.meets(settings.coverage_threshold_pct),
            {
                "coverage_pct": cov.pct,
                "threshold_pct": settings.coverage_threshold_pct,
                "resolved": cov.resolved,
                "in_scope_audits": cov.in_scope,
                "contact_not_found": tally.contact_not_found,
                "person_weighted_source_id_pct": persons.source_id_pct,
                "persons": persons.persons,
                "persons_via_source_id": persons.via_source_id,
                "persons_via_map": persons.via_map,
                "persons_not_found": persons.not_found,
                "reason_code": str(FailureCode.CONTACT_NOT_FOUND),
                "contact_not_found_ids": _ids(tally.contact_not_found_ids),
            },
        ),
        _result(
            NORMALIZED_ASSET,
            "planned_failure_rate",
            failure.within(settings.planned_failure_threshold),
            {
                "failure_rate": failure.rate,
                "threshold": settings.planned_failure_threshold,
                "failed": failure.failed,
                "planned": failure.attempted,
                "failed_by_reason": dg.MetadataValue.json(dict(sorted(tally.failed_codes.items()))),
                "failed_ids": _ids(tally.failed_ids),
            },
        ),
        _result(
            NORMALIZED_ASSET,
            "unmapped_share",
            unmapped_pct <= settings.unmapped_warn_pct,
            {
                "unmapped_pct": unmapped_pct,
                "threshold_pct": settings.unmapped_warn_pct,
                "unmapped": unmapped,
                "extracted": tally.planned,
                "reason_code": str(SkipCode.UNMAPPED_ACTION_TYPE),
            },
            severity=WARN,
        ),
        _result(
            NORMALIZED_ASSET,
            "actor_unresolved_share",
            unresolved_pct <= settings.actor_unresolved_alert_pct,
            {
                "unresolved_pct": unresolved_pct,
                "threshold_pct": settings.actor_unresolved_alert_pct,
                "unresolved": unresolved,
                "with_actor": with_actor,
            },
            severity=WARN,
        ),
    ]


def loaded_checks(load, settings: ActivityLogSettings) -> list[dg.AssetCheckResult]:
    """§15 'load failure rate': passes when the load was not halted."""
    counters = load.counters
    return [
        _result(
            LOADED_ASSET,
            "load_failure_rate",
            not load.halted,
            {
                "status": str(load.status),
                "failure_rate": counters.failure_rate,
                "write_failure_rate": load.writes.failure_rate,
                "threshold": settings.halt_threshold,
                "records_failed": counters.failed,
                "records_processed": counters.processed,
                "failed_by_code": dg.MetadataValue.json(load.failed_by_code()),
            },
        )
    ]


def report_checks(report, settings: ActivityLogSettings) -> list[dg.AssetCheckResult]:
    """§15 report checks: accuracy, contact_not_found, duplicates/fidelity (ERROR) and the
    end-of-run queue (WARN)."""
    accuracy = report.accuracy_pct
    return [
        _result(
            REPORT_ASSET,
            "accuracy",
            accuracy is not None and accuracy >= settings.accuracy_threshold_pct,
            {
                "accuracy_pct": accuracy,
                "threshold_pct": settings.accuracy_threshold_pct,
                "target_count": report.target_count,
                "source_count": report.source_count,
                "reason_code": str(RunCode.VALIDATION_SKIPPED) if accuracy is None else None,
            },
        ),
        _result(
            REPORT_ASSET,
            "contact_not_found",
            report.contact_not_found_pct < settings.contact_not_found_threshold_pct,
            {
                "contact_not_found": report.contact_not_found,
                "contact_not_found_pct": report.contact_not_found_pct,
                "threshold_pct": settings.contact_not_found_threshold_pct,
            },
        ),
        _result(
            REPORT_ASSET,
            "duplicates_and_fidelity",
            not report.duplicates and report.mismatched_count == 0,
            {
                "duplicates": len(report.duplicates),
                "duplicate_ids": _ids(report.duplicates),
                "fidelity_mismatches": report.mismatched_count,
                "mismatched_ids": _ids(report.mismatched),
            },
        ),
        _result(
            REPORT_ASSET,
            "end_of_run_queue_empty",
            report.queue_left == 0,
            {"queue_left": report.queue_left},
            severity=WARN,
        ),
    ]
