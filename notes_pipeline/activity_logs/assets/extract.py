"""crm_audits_raw: one CID's in-scope CRM audits after the Stage-0 probe (SPEC-activity-logs
§3, §15)."""

from collections.abc import Iterator
from dataclasses import replace

import dagster as dg
from pydantic import Field

from notes_pipeline.activity_logs import events
from notes_pipeline.activity_logs.checks import EXTRACT_CHECKS, extract_checks
from notes_pipeline.activity_logs.records import AuditExtract
from notes_pipeline.activity_logs.rules.window import parse_date_range_start
from notes_pipeline.activity_logs.settings import ActivityLogSettings
from notes_pipeline.activity_logs.summary import extract_metadata
from notes_pipeline.core.chunks import ChunkWriter
from notes_pipeline.core.crm_records import AuditScope, CrmAudit
from notes_pipeline.core.partitions import ONE_CID_PER_RUN, cid_partitions
from notes_pipeline.core.resources.crm import CrmExtractError, CrmSource
from notes_pipeline.core.vocabulary import RunCode


class AuditExtractConfig(dg.Config):
    """Run config of ``crm_audits_raw`` (the seed trigger's parameter, §1)."""

    date_range_start: str | None = Field(
        default=None,
        description="Extract audits created at or after this instant (YYYY-MM-DD or RFC 3339; "
        "zone-less = UTC). Empty: the CID's MIN(created_at) (§3, REV-11).",
    )


@dg.asset(
    partitions_def=cid_partitions,
    backfill_policy=ONE_CID_PER_RUN,
    group_name="activity_logs",
    kinds={"postgres"},
    check_specs=EXTRACT_CHECKS,
    description="The CID's in-scope CRM audits: Stage-0 probe (MIN/MAX created_at, COUNT, "
    "unattributable, EXPLAIN), then keyset pages on audits.id up to the high-water id, "
    "read-only, stored in chunks of chunk_size audits.",
)
def crm_audits_raw(
    context: dg.AssetExecutionContext,
    config: AuditExtractConfig,
    crm_audits: CrmSource,
    activity_log_settings: ActivityLogSettings,
) -> Iterator[dg.Output[AuditExtract] | dg.AssetCheckResult]:
    """Probe then extract one CID (§3); ``CRM_EXTRACT_FAILED`` after the retries [N23]."""
    settings = activity_log_settings
    cid = context.partition_key
    events.emit(
        context.log,
        events.STARTED,
        job_id=context.run.run_id,
        cid=cid,
        triggered_by=events.trigger_label(context.run.tags),
    )
    try:
        start = parse_date_range_start(config.date_range_start)
    except ValueError as exc:
        raise dg.Failure(description=str(exc), metadata={"cid": cid}) from None
    source = crm_audits.with_backoff(settings.extract_retry_backoff_s)
    # pages go straight to chunk files (§11 [N19]): memory is one page, never the CID
    with ChunkWriter[CrmAudit].for_asset(context, settings.chunk_size) as writer:
        try:
            org = source.get_organization(cid)
            scope = AuditScope(
                cid, dict(settings.auditable_kinds), source.audit_high_water_id(), start
            )
            probe = source.probe_audits(
                scope, settings.page_size, count_unattributable=settings.count_unattributable
            )
            context.log.info(
                f"Stage-0 probe CID {cid}: count={probe.count} "
                f"high_water_id={probe.high_water_id} unattributable={probe.unattributable} "
                f"null_created_at={probe.null_created_at}"
            )
            pages = 0
            if probe.count and probe.cutoff is not None and probe.first_id is not None:
                pages_of = source.iter_audit_pages(
                    replace(scope, cutoff=probe.cutoff),
                    settings.page_size,
                    start_after=probe.first_id - 1,
                    stop_at=probe.last_id,
                )
                for page in pages_of:
                    writer.append(page)
                    pages += 1
        except CrmExtractError as exc:
            raise dg.Failure(
                description=str(exc),
                metadata={"reason_code": str(RunCode.CRM_EXTRACT_FAILED), "cid": cid},
            ) from None
        except NotImplementedError:  # OQ-1: no direct read-only DSN, no run
            raise dg.Failure(
                description=f"{RunCode.CRM_EXTRACT_FAILED}: the CRM source has no audit access "
                "(set NOTES_PIPELINE_CRM_AUDIT_DSN, SPEC-activity-logs §2)",
                metadata={"reason_code": str(RunCode.CRM_EXTRACT_FAILED), "cid": cid},
            ) from None
        audits = writer.close()
    extract = AuditExtract(org, probe, audits, pages, config.date_range_start)
    yield dg.Output(extract, metadata=extract_metadata(extract, settings.in_scope_types()))
    yield from extract_checks(extract)
