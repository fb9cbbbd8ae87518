"""Validation of one CID (SPEC "Validation"): counts, match, failure rate, fidelity, error log."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import tenacity

from notes_pipeline.contact_notes import reason_codes as rc
from notes_pipeline.contact_notes.load import NOT_ATTEMPTED
from notes_pipeline.contact_notes.records import LoadResult, NotePlan, ValidationReport
from notes_pipeline.contact_notes.rules.html import content_hash

T = TypeVar("T")
FIDELITY_FIELDS = ("contact_id", "owner_id", "legacy_owner_label", "created_at", "updated_at")


def pct(part: int, whole: int) -> float:
    return round(part / whole * 100, 3) if whole else 100.0


def with_retries(call: Callable[[], T], attempts: int = 3, wait_s: float = 0.5) -> T | None:
    """``call()``, retried on any exception with exponential waits from ``wait_s`` seconds;
    None when every attempt failed (the caller reports VALIDATION_SKIPPED)."""
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_exponential(multiplier=wait_s, max=10 * wait_s),
        retry=tenacity.retry_if_exception_type(Exception),
        reraise=False,
    )
    try:
        return retrying(call)
    except tenacity.RetryError:
        return None


def outcome_counts(plans: list[NotePlan] | tuple[NotePlan, ...], load: LoadResult) -> Counter:
    counts: Counter = Counter({o: 0 for o in rc.OUTCOMES})
    counts.update(p.outcome for p in plans if p.outcome in (rc.FAILED, rc.OUT_OF_SCOPE))
    counts.update(o.outcome for o in load.outcomes)
    return counts


def fidelity_mismatches(plans, documents: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Compare each stored migrated note with what normalized_notes planned (ids + field names)."""
    planned = {p.legacy_crm_note_id: p for p in plans if p.outcome == rc.READY}
    mismatches = []
    for doc in documents:
        plan = planned.get(doc.get("legacy_crm_note_id"))
        if plan is None:
            continue
        fields = [f for f in FIDELITY_FIELDS if doc.get(f) != plan.document.get(f)]
        if content_hash(doc.get("note") or "") != plan.content_hash:
            fields.append("note")
        if fields:
            mismatches.append(
                {"legacy_crm_note_id": plan.legacy_crm_note_id, "fields": ",".join(fields)}
            )
    return mismatches


def error_log_csv(plans, load: LoadResult) -> tuple[bytes, int]:
    """CSV `legacy_crm_note_id, reason_code, details`: ids and codes only, never content."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["legacy_crm_note_id", "reason_code", "details"])
    rows = 0
    for plan in plans:
        if plan.outcome == rc.FAILED:
            writer.writerow([plan.legacy_crm_note_id, plan.reason_code, plan.details])
            rows += 1
    for outcome in load.outcomes:
        if outcome.outcome == rc.FAILED:
            writer.writerow([outcome.legacy_crm_note_id, outcome.reason_code, outcome.details])
            rows += 1
        elif outcome.outcome == NOT_ATTEMPTED:
            writer.writerow([outcome.legacy_crm_note_id, rc.HALTED, "not attempted after halt"])
            rows += 1
    for failure in load.attachment_failures:
        writer.writerow(
            [
                failure.legacy_crm_note_id,
                failure.reason_code,
                f"asset={failure.asset_id} type={failure.attachment_type}",
            ]
        )
        rows += 1
    return buffer.getvalue().encode(), rows


def decide_status(
    *,
    halted: bool,
    skipped: bool,
    match: float | None,
    failure_pct: float,
    duplicates: int,
    mismatches: int,
    match_threshold: float,
    failure_threshold: float,
) -> str:
    if halted:
        return rc.HALTED
    if skipped or match is None:
        return rc.COMPLETED_WITH_ERRORS
    if (
        match >= match_threshold
        and failure_pct <= failure_threshold
        and not duplicates
        and not mismatches
    ):
        return rc.COMPLETED_SUCCESS
    return rc.COMPLETED_WITH_ERRORS


def summary_markdown(report: ValidationReport) -> str:
    """The UI summary: counts, reasons, rates, status. Ids and codes only."""
    lines = [
        f"### CID {report.cid}: `{report.status}`",
        "",
        "| measure | value |",
        "|---|---|",
        f"| source (in-scope, recounted) | {report.source_count} |",
        f"| target (migrated in CDP) | {report.target_count} |",
        f"| match_pct | {report.match_pct} |",
        f"| failure_rate | {report.failure_rate_pct} % |",
    ]
    lines += [
        f"| {name} | {report.outcomes.get(name, 0)} |" for name in (*rc.OUTCOMES, NOT_ATTEMPTED)
    ]
    lines += [
        f"| attachments re-linked | {report.attachments_copied} / {report.attachments_planned} "
        f"({report.attachment_success_pct} %) |",
        f"| owner resolution | {report.owner_resolution_pct} % |",
        f"| check-ins dropped | {report.checkins_dropped} |",
        f"| duplicate legacy ids | {len(report.duplicate_legacy_ids)} |",
        f"| fidelity mismatches | {len(report.fidelity_mismatches)} |",
        f"| duration | {report.duration_seconds} s |",
        "",
        "**Failures by reason code**",
        "",
    ]
    if report.failed_by_reason:
        lines += [f"- `{code}`: {n}" for code, n in sorted(report.failed_by_reason.items())]
    else:
        lines.append("- none")
    if report.validation_skipped:
        lines += ["", f"`{rc.VALIDATION_SKIPPED}`: a count was unavailable after retries."]
    return "\n".join(lines)
