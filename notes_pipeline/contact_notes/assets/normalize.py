"""normalized_notes: SPEC rules 1-7 per source note → a plan (ready / out_of_scope / failed)."""

from collections.abc import Iterator

import dagster as dg

from notes_pipeline.contact_notes import events
from notes_pipeline.contact_notes.checks import NORMALIZED_CHECKS, normalized_checks
from notes_pipeline.contact_notes.records import (
    CrmExtract,
    NormalizedNotes,
    NotePlan,
    PlanTally,
)
from notes_pipeline.contact_notes.rules.plan import (
    PlanRules,
    in_scope_for_lookup,
    plan_note_isolated,
)
from notes_pipeline.contact_notes.settings import MigrationSettings
from notes_pipeline.core.chunks import ChunkWriter
from notes_pipeline.core.partitions import ONE_CID_PER_RUN, cid_partitions
from notes_pipeline.core.rates import iter_batches
from notes_pipeline.core.resources.identity import IdentityDirectory, IdentityLookupError
from notes_pipeline.core.resources.mongo import CdpMongo
from notes_pipeline.core.vocabulary import PlanOutcome


@dg.asset(
    partitions_def=cid_partitions,
    backfill_policy=ONE_CID_PER_RUN,
    group_name="notes_migration",
    kinds={"python"},
    check_specs=NORMALIZED_CHECKS,
    description="Each source note's outcome (ready/out_of_scope/failed + reason) and, when ready, "
    "the exact CDP document and attachment plan.",
)
def normalized_notes(
    context: dg.AssetExecutionContext,
    crm_notes_raw: CrmExtract,
    cdp_mongo: CdpMongo,
    identity: IdentityDirectory,
    settings: MigrationSettings,
) -> Iterator[dg.Output[NormalizedNotes] | dg.AssetCheckResult]:
    """``NormalizedNotes``: one plan per source note (SPEC rules 1-7), then the blocking gates.

    Streams the extract batch by batch and writes the plans into a ``ChunkedRecords``
    handle, tallying them in the same pass (``PlanTally``): memory is one batch plus the
    failed plans. Contacts: the company's are preloaded once (one company-scoped query) when
    it has at most ``settings.contact_preload_max``; otherwise each batch looks its own up
    with `$in` (metadata ``contact_lookup``: ``preloaded`` / ``per_batch``).
    """
    org = crm_notes_raw.org
    rules = PlanRules(
        frozenset(settings.allowed_note_type_ids),
        settings.cdp_proxy_base_url,
        settings.timestamp_window(),
    )
    preloaded = cdp_mongo.company_contacts_by_crm_person_id(
        org.company_sso_id, settings.contact_preload_max
    )
    tally = PlanTally()
    with ChunkWriter[NotePlan].for_asset(context, settings.chunk_size) as writer:
        for batch in iter_batches(crm_notes_raw.notes, settings.batch_size):
            in_scope = [n for n in batch if in_scope_for_lookup(n, rules.allowed_note_type_ids)]
            if preloaded is not None:
                contacts = preloaded
            else:
                contacts = cdp_mongo.contacts_by_crm_person_id(
                    org.company_sso_id, (str(n.crm_person_id) for n in in_scope)
                )
            try:
                sso_by_email = identity.resolve(
                    org.company_sso_id, (n.creator_email for n in in_scope if n.creator_email)
                )
            except IdentityLookupError as exc:
                context.log.warning(f"identity lookup failed ({exc}); owners fall back to labels")
                sso_by_email = {}
            plans = []
            for note in batch:
                plan = plan_note_isolated(
                    note,
                    org=org,
                    contact_id=contacts.get(str(note.crm_person_id)),
                    sso_by_email=sso_by_email,
                    rules=rules,
                )
                plans.append(plan)
                tally.add(plan)
                _emit_plan_events(context, org.cid, plan)
            writer.append(plans)
        handle = writer.close()
    result = NormalizedNotes(org=org, plans=handle, tally=tally)
    metadata = {
        "source_total": tally.total,
        "ready": result.count(PlanOutcome.READY),
        "out_of_scope": result.count(PlanOutcome.OUT_OF_SCOPE),
        "failed": len(result.failures),
        "failed_by_reason": dg.MetadataValue.json(dict(result.failed_by_reason)),
        "out_of_scope_by_reason": dg.MetadataValue.json(dict(tally.out_of_scope_by_reason)),
        "contact_coverage_pct": result.contact_coverage_pct,
        "owners_unresolved": tally.owners_unresolved,
        "attachments_planned": tally.attachments_planned,
        "attachments_dropped": tally.attachments_dropped,
        "checkins_dropped": tally.checkins_dropped,
        "contact_lookup": "per_batch" if preloaded is None else "preloaded",
        "chunks": handle.chunk_count,
    }
    yield dg.Output(result, metadata=metadata)
    yield from normalized_checks(result, settings)


def _emit_plan_events(context: dg.AssetExecutionContext, cid: str, plan: NotePlan) -> None:
    log, job_id, legacy_id = events.note_log, context.run.run_id, plan.legacy_crm_note_id
    if plan.failed:
        events.emit(
            log,
            events.NOTE_FAILED,
            job_id=job_id,
            cid=cid,
            legacy_crm_note_id=legacy_id,
            reason_code=plan.reason_code,
            details=plan.details,
        )
    elif plan.ready and not plan.owner_resolved:
        events.emit(
            log,
            events.OWNER_NOT_RESOLVED,
            job_id=job_id,
            cid=cid,
            legacy_crm_note_id=legacy_id,
            crm_user_id=plan.crm_user_id,
        )
    if plan.ready and plan.checkin_dropped:
        events.emit(
            log, events.CHECKIN_DROPPED, job_id=job_id, cid=cid, legacy_crm_note_id=legacy_id
        )
