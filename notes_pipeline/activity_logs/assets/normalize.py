"""normalized_activity_logs: one plan entry per extracted audit (SPEC-activity-logs §4, §15):
ready with its §5 document, skipped or failed with its code. Writes nothing to CDP."""

from collections.abc import Iterator
from functools import partial

import dagster as dg

from notes_pipeline.activity_logs import events
from notes_pipeline.activity_logs.checks import NORMALIZED_CHECKS, normalized_checks
from notes_pipeline.activity_logs.lookups import (
    ContactIndex,
    IdentityCache,
    UserCache,
    batch_collections,
    fetch_lookups,
    plan_batches,
)
from notes_pipeline.activity_logs.records import AuditExtract, NormalizedActivityLogs, PlanEntry
from notes_pipeline.activity_logs.rules.plan import PlanContext
from notes_pipeline.activity_logs.settings import ActivityLogSettings
from notes_pipeline.activity_logs.summary import PlanTally, plan_metadata
from notes_pipeline.core.chunks import ChunkWriter
from notes_pipeline.core.partitions import ONE_CID_PER_RUN, cid_partitions
from notes_pipeline.core.resources.crm import CrmSource
from notes_pipeline.core.resources.identity import IdentityDirectory
from notes_pipeline.core.resources.mongo import CdpMongo


@dg.asset(
    partitions_def=cid_partitions,
    backfill_policy=ONE_CID_PER_RUN,
    group_name="activity_logs",
    kinds={"python"},
    check_specs=NORMALIZED_CHECKS,
    description="Each extracted audit's plan (ready / skipped / failed + code) and, when "
    "ready, the exact CDP activity_logs document, stored in chunks of chunk_size entries; "
    "lookups batched, one query per batch.",
)
def normalized_activity_logs(
    context: dg.AssetExecutionContext,
    crm_audits_raw: AuditExtract,
    crm_audits: CrmSource,
    cdp_mongo: CdpMongo,
    identity: IdentityDirectory,
    activity_log_settings: ActivityLogSettings,
) -> Iterator[dg.Output[NormalizedActivityLogs] | dg.AssetCheckResult]:
    """Plan one CID (§4) and judge the plan (§15 checks)."""
    settings = activity_log_settings
    org = crm_audits_raw.org
    job_id = context.run.run_id
    ctx = PlanContext(
        company_sso_id=org.company_sso_id,
        rules=settings.category_rules(),
        job_id=job_id,
        timestamp_window=settings.timestamp_window(),
        yaml_limits=settings.yaml_limits(),
    )
    identity_cache = IdentityCache(
        identity.with_timeout(settings.identity_timeout_s),
        org.company_sso_id,
        settings.identity_retries,
    )
    contacts = ContactIndex.load(cdp_mongo, org.company_sso_id, settings.contact_preload_max)
    context.log.info(f"Contact lookups CID {org.cid}: {contacts.strategy}")
    users = UserCache(crm_audits)
    fetch = partial(fetch_lookups, contacts=contacts, users=users, identity=identity_cache)
    tally = PlanTally()
    emit = partial(events.emit_plan_events, job_id, org.cid)
    lookup_batches = 0
    # one batch in memory, entries straight to chunk files, figures tallied on the way (§11)
    with (
        batch_collections() as collect,
        ChunkWriter[PlanEntry].for_asset(context, settings.chunk_size) as writer,
    ):
        audits = crm_audits_raw.iter_audits()
        batches = plan_batches(audits, ctx, fetch, settings.lookup_batch_size)
        for entries in batches:
            lookup_batches += 1
            for entry in entries:
                tally.add(entry)
                emit(entry)
            writer.append(entries)
            collect()
        stored = writer.close()
    result = NormalizedActivityLogs(
        org=org,
        entries=stored,
        extracted=crm_audits_raw.extracted,
        tally=tally,
        identity_emails=len(identity_cache.asked),
        lookup_batches=lookup_batches,
        contact_lookups=contacts.strategy,
    )
    yield dg.Output(result, metadata=plan_metadata(result))
    yield from normalized_checks(result, settings)
