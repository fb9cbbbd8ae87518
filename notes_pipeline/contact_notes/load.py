"""Loading one CID's ready notes into CDP: attachments, batched upserts, retry, halt rule,
and the repair of attachment placeholders in notes an earlier run migrated (issue #12)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from typing import Any

from notes_pipeline.contact_notes import events
from notes_pipeline.contact_notes.attachment_entries import (
    note_attachments,
    placeholder_replacements,
    real_entry,
)
from notes_pipeline.contact_notes.reason_codes import NoteCode, RepairCode
from notes_pipeline.contact_notes.records import (
    AttachmentFailure,
    LoadResult,
    NoteOutcome,
    NotePlan,
    PlannedAttachment,
)
from notes_pipeline.contact_notes.rules.attachments import (
    SNIFF_HEAD_BYTES,
    cdp_type_for,
    magic_matches,
    stored_content_type,
)
from notes_pipeline.core.crm_records import Organization
from notes_pipeline.core.rates import exceeds_failure_threshold, iter_batches
from notes_pipeline.core.resources.attachment_download import AttachmentError, GuardedDownloader
from notes_pipeline.core.resources.mongo import BulkUpsertResult, CdpMongo
from notes_pipeline.core.resources.mongo_writes import partial_result, with_ids
from notes_pipeline.core.resources.storage import AttachmentStorage
from notes_pipeline.core.vocabulary import AttachmentCode, LoadStatus, Outcome


@dataclass
class LoadContext:
    """Everything the loader touches, so tests can substitute any part."""

    org: Organization
    mongo: CdpMongo
    storage: AttachmentStorage
    downloader: GuardedDownloader
    batch_size: int
    failure_threshold_pct: float  # the halt rule's threshold, percent (SPEC: 1)
    attachment_workers: int
    log: Any
    job_id: str
    on_batch: Callable[[int, int], None] | None = None  # (records_processed, records_total)


def copy_attachment(ctx: LoadContext, plan: NotePlan, att: PlannedAttachment) -> dict[str, Any]:
    """Download through the guard, check magic bytes, upload; returns the CDP attachment entry.

    A generic declared type (octet-stream, none) takes the CDP type the bytes show
    (``cdp_type_for``). Raises ``AttachmentError`` (``ATTACHMENT_TYPE_MISMATCH``,
    ``ATTACHMENT_UPLOAD_FAILED``, or the downloader's codes); details carry codes only.
    """
    data, served_type = ctx.downloader.download(att.source_url)
    head = data[:SNIFF_HEAD_BYTES]
    cdp_type = cdp_type_for(att, head)
    if not magic_matches(cdp_type, att.content_type or served_type, att.file_name, head):
        raise AttachmentError(AttachmentCode.ATTACHMENT_TYPE_MISMATCH, f"declared {cdp_type}")
    try:
        ctx.storage.put(att.target_key, data, stored_content_type(head))
    except Exception as exc:  # boto3 raises many types; any storage failure drops the attachment
        raise AttachmentError(AttachmentCode.ATTACHMENT_UPLOAD_FAILED, type(exc).__name__) from exc
    return real_entry(att, cdp_type, len(data))


def _attach_batch(
    ctx: LoadContext, plans: Sequence[NotePlan], result: LoadResult, pool: ThreadPoolExecutor
) -> tuple[list[dict[str, Any]], list[dict[str, dict[str, Any]]]]:
    """Copy the batch's attachments in parallel. Returns the documents to write (each
    attachment as its real entry, or as its placeholder when the copy failed; plan order)
    and, per plan, asset id → real entry of what was copied."""
    jobs = [(plan, att) for plan in plans for att in plan.attachments]
    futures = [pool.submit(copy_attachment, ctx, plan, att) for plan, att in jobs]
    copied: dict[tuple[str, str], dict[str, Any]] = {}
    for (plan, att), future in zip(jobs, futures, strict=True):
        try:
            copied[(plan.legacy_crm_note_id, att.asset_id)] = future.result()
            result.attachments_copied += 1
        except AttachmentError as exc:
            _attachment_failed(
                ctx, result, plan, att.asset_id, att.cdp_type, exc.reason_code, exc.details
            )
        except Exception as exc:  # noqa: BLE001 - one attachment fails alone (issue #8)
            details = f"exception={type(exc).__name__}"
            _attachment_failed(
                ctx,
                result,
                plan,
                att.asset_id,
                att.cdp_type,
                AttachmentCode.ATTACHMENT_COPY_ERROR,
                details,
            )
    documents, copied_by_plan = [], []
    for plan in plans:
        mine = {
            att.asset_id: copied[(plan.legacy_crm_note_id, att.asset_id)]
            for att in plan.attachments
            if (plan.legacy_crm_note_id, att.asset_id) in copied
        }
        doc = dict(plan.document or {})
        doc["attachments"] = note_attachments(plan.attachments, mine)
        documents.append(doc)
        copied_by_plan.append(mine)
    return documents, copied_by_plan


def repair_placeholders(
    ctx: LoadContext,
    result: LoadResult,
    plan: NotePlan,
    stored: Sequence[Any],
    copied: dict[str, dict[str, Any]],
) -> None:
    """Replace, in an already-migrated note whose stored ``attachments`` hold placeholders,
    each placeholder whose attachment this run copied (``copied``: asset id → real entry)
    with that entry, in place (issue #12 item 1; SPEC "Loading": a later run that succeeds
    replaces the placeholder). One guarded update per note, touching no other field.

    Counts ``attachments_repaired``. When the update raises or no longer matches, each of
    those attachments becomes a failure ``ATTACHMENT_REPAIR_FAILED`` (details ``matched=0``
    or the exception class) and leaves ``attachments_copied``. Never raises.
    """
    replacements = placeholder_replacements(stored, copied)
    if not replacements:
        return
    try:
        applied = ctx.mongo.replace_attachment_placeholders(
            ctx.org.company_sso_id,
            plan.legacy_crm_note_id,
            [(r.position, r.asset_id, r.entry) for r in replacements],
        )
        details = "" if applied else "matched=0"
    except Exception as exc:  # noqa: BLE001 - this note keeps its placeholders, with a code
        applied, details = False, f"exception={type(exc).__name__}"
    if applied:
        result.attachments_repaired += len(replacements)
        return
    result.attachments_copied -= len(replacements)  # copied, but not linked: a failure
    for r in replacements:
        _attachment_failed(
            ctx,
            result,
            plan,
            r.asset_id,
            r.entry.get("type", "unknown"),
            RepairCode.ATTACHMENT_REPAIR_FAILED,
            details,
        )


def _attachment_failed(ctx, result, plan, asset_id, attachment_type, reason_code, details=""):
    result.attachment_failures.append(
        AttachmentFailure(plan.legacy_crm_note_id, asset_id, attachment_type, reason_code, details)
    )
    events.emit(
        events.note_log,
        events.ATTACHMENT_FAILED,
        job_id=ctx.job_id,
        cid=ctx.org.cid,
        legacy_crm_note_id=plan.legacy_crm_note_id,
        attachment_type=attachment_type,
        reason_code=reason_code,
    )


def upsert_with_retry(ctx: LoadContext, documents: list[dict[str, Any]]) -> BulkUpsertResult:
    """One bulk upsert; rows that failed (or a failed call) are retried once, row by row.

    Row by row, so one bad row cannot hold back the others on servers that stop an unordered
    bulk at its first error. Upserts make the retry safe; each row keeps its ``_id`` across
    attempts, so a row that the failed call did insert is counted inserted, not already there
    (``mongo_writes.with_ids``). Never raises: any exception of a call becomes an error of the
    rows it covered (details = exception class).
    """
    documents = with_ids(documents)
    try:
        first = ctx.mongo.upsert_notes(ctx.org.company_sso_id, documents)
    except Exception as exc:  # noqa: BLE001 - PyMongoError, or a client-side encoding error
        first = partial_result(exc, len(documents))  # rows of the calls that ended keep theirs
    merged = BulkUpsertResult(upserted=set(first.upserted), matched=set(first.matched))
    for index in sorted(first.errors):
        try:
            again = ctx.mongo.upsert_notes(
                ctx.org.company_sso_id, [documents[index]], recheck_matched=True
            )
        except Exception as exc:  # noqa: BLE001 - this row fails alone (BATCH_INSERT_FAILED)
            again = BulkUpsertResult(errors={0: type(exc).__name__})
        if again.upserted:
            merged.upserted.add(index)
        elif again.matched:
            merged.matched.add(index)
        else:
            merged.errors[index] = again.errors.get(0, first.errors[index])
    return merged


def load_ready_notes(
    ctx: LoadContext, plans: Iterable[NotePlan], total_ready: int | None = None
) -> LoadResult:
    """Write every READY plan of ``plans`` (streamed once, in order) in batches; stop (halt)
    once the write failure rate is exceeded, counting the remaining ready plans NOT_ATTEMPTED.

    Memory is one batch plus the compact ``LoadResult`` (counts; only unwritten notes and
    attachment failures are kept). ``total_ready``: the ready plans, for progress
    (``on_batch``); counted as they stream when None. Before the first batch, one
    company-scoped query finds the CID's migrated notes that hold attachment placeholders; a
    note of those that a batch skips (already there) gets its placeholders repaired
    (``repair_placeholders``), so a batch's cost does not depend on the collection's size.
    ``PyMongoError`` of that query propagates (nothing written yet).
    """
    started = time.monotonic()
    result = LoadResult(
        cid=ctx.org.cid, company_sso_id=ctx.org.company_sso_id, status=LoadStatus.LOADED
    )
    ready = (plan for plan in plans if plan.ready)
    first = next(ready, None)
    if first is None:
        result.duration_seconds = time.monotonic() - started
        return result
    with_placeholders = ctx.mongo.notes_with_unavailable_attachments(ctx.org.company_sso_id)
    dropped_failures = LoadResult(result.cid, result.company_sso_id, result.status)
    migrated = skipped = failed = 0
    processed = 0

    def count_attachments(plan: NotePlan) -> None:
        """The plan's rule-dropped attachments as failures (listed first at the end) and its
        planned ones (rule drops excluded)."""
        for dropped in plan.dropped_attachments:
            _attachment_failed(
                ctx,
                dropped_failures,
                plan,
                dropped.asset_id,
                dropped.attachment_type,
                dropped.reason_code,
                dropped.details,
            )
        result.attachments_planned += len(plan.attachments)

    with ThreadPoolExecutor(max_workers=max(1, ctx.attachment_workers)) as pool:
        all_batches = iter_batches(chain([first], ready), ctx.batch_size)
        for number, batch in enumerate(all_batches, start=1):
            for plan in batch:
                count_attachments(plan)
            documents, copied = _attach_batch(ctx, batch, result, pool)
            written = upsert_with_retry(ctx, documents)
            for index, plan in enumerate(batch):
                if index in written.upserted:
                    outcome = NoteOutcome(plan.legacy_crm_note_id, Outcome.MIGRATED)
                    migrated += 1
                elif index in written.errors:
                    outcome = NoteOutcome(
                        plan.legacy_crm_note_id,
                        Outcome.FAILED,
                        NoteCode.BATCH_INSERT_FAILED,
                        written.errors[index],
                    )
                    failed += 1
                    events.emit(
                        events.note_log,
                        events.NOTE_FAILED,
                        job_id=ctx.job_id,
                        cid=ctx.org.cid,
                        legacy_crm_note_id=plan.legacy_crm_note_id,
                        reason_code=NoteCode.BATCH_INSERT_FAILED,
                        details=written.errors[index],
                    )
                else:
                    outcome = NoteOutcome(plan.legacy_crm_note_id, Outcome.SKIPPED)
                    skipped += 1
                    stored = with_placeholders.get(plan.legacy_crm_note_id)
                    if stored:
                        repair_placeholders(ctx, result, plan, stored, copied[index])
                result.record(outcome)
            processed += len(batch)
            result.batches = number
            events.emit(
                ctx.log,
                events.BATCH_COMPLETED,
                job_id=ctx.job_id,
                cid=ctx.org.cid,
                batch_number=number,
                notes_in_batch=len(batch),
                failed_in_batch=len(written.errors),
            )
            if ctx.on_batch:
                ctx.on_batch(processed, total_ready if total_ready is not None else processed)
            if exceeds_failure_threshold(failed, migrated, skipped, ctx.failure_threshold_pct):
                result.status = LoadStatus.HALTED
                events.emit(
                    ctx.log,
                    events.HALTED,
                    job_id=ctx.job_id,
                    cid=ctx.org.cid,
                    failure_rate=result.load_failure_rate_pct,
                )
                for plan in ready:
                    count_attachments(plan)
                    result.record(NoteOutcome(plan.legacy_crm_note_id, Outcome.NOT_ATTEMPTED))
                break
    result.attachment_failures = dropped_failures.attachment_failures + result.attachment_failures
    result.duration_seconds = time.monotonic() - started
    return result
