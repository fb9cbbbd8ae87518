"""Bounded memory per run for the contact-notes family (issue #14 item 3), stack-free.

What passes between the assets is a ``ChunkedRecords`` handle (never the CID's records), the
plan is tallied in one pass, contacts are preloaded once per run below the settings bound
(per batch above it), the loader streams the plan once and keeps only unwritten notes, and
the report keeps a digest per stored note, never its content.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import dagster as dg
import pytest
from test_in_memory import add_org, note

from notes_pipeline.contact_notes.definitions import migration_assets
from notes_pipeline.contact_notes.load import LoadContext, load_ready_notes
from notes_pipeline.contact_notes.reason_codes import NoteCode
from notes_pipeline.contact_notes.records import NotePlan, PlanTally
from notes_pipeline.contact_notes.rules.html import content_hash
from notes_pipeline.contact_notes.validation import index_stored, split_by_cause
from notes_pipeline.core.chunks import ChunkedRecords
from notes_pipeline.core.crm_records import Organization
from notes_pipeline.core.partitions import cid_partitions
from notes_pipeline.core.resources.in_memory import (
    InMemoryAttachmentStorage,
    InMemoryCdpMongo,
    InMemoryDownloader,
    InMemoryStore,
    in_memory_store,
)
from notes_pipeline.core.resources.mongo import BulkUpsertResult
from notes_pipeline.core.vocabulary import LoadStatus, MonitorState, Outcome, PlanOutcome
from notes_pipeline.deployment import in_memory_resources

CID = "7301"
LOOKUPS: list[int] = []  # per-batch contact lookups of CountingMongo (sizes)


class CountingMongo(InMemoryCdpMongo):
    """Counts the per-batch `$in` contact lookups."""

    def contacts_by_crm_person_id(
        self, company_sso_id: str, crm_person_ids: Iterable[str]
    ) -> dict[str, str]:
        ids = list(crm_person_ids)
        LOOKUPS.append(len(ids))
        return super().contacts_by_crm_person_id(company_sso_id, ids)


@pytest.fixture
def store(request) -> InMemoryStore:
    LOOKUPS.clear()
    return in_memory_store(request.node.name, reset=True)


def seed(store: InMemoryStore) -> str:
    """23 notes: person 1 and 2 mapped, person 3 not (notes 3, 13), note 7 out of scope."""
    notes = [
        note(
            CID,
            n,
            person=None if n == 7 else (3 if n in (3, 13) else 1 + n % 2),
            **({"crm_deal_id": 9} if n == 7 else {}),
        )
        for n in range(1, 24)
    ]
    return add_org(store, CID, notes, mapped={1, 2})


def run(store_name: str, **settings: Any) -> dg.ExecuteInProcessResult:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(cid_partitions.name, [CID])
    settings = {"coverage_threshold_pct": 0.0, "failure_threshold_pct": 100.0, **settings}
    resources = in_memory_resources(store_name, enabled_cids="*", **settings)
    resources["cdp_mongo"] = CountingMongo(store=store_name)
    return dg.materialize_to_memory(
        migration_assets, partition_key=CID, resources=resources, instance=instance
    )


def plan_ids(plans: Iterable[NotePlan]) -> list[tuple[str, str, str | None]]:
    return [(p.legacy_crm_note_id, str(p.outcome), p.reason_code) for p in plans]


def test_assets_pass_chunk_handles_and_the_plan_is_tallied_in_one_pass(store, request):
    company = seed(store)
    result = run(request.node.name, chunk_size=5, batch_size=4)
    extract = result.output_for_node("crm_notes_raw")
    normalized = result.output_for_node("normalized_notes")
    assert isinstance(extract.notes, ChunkedRecords)
    assert extract.notes.chunk_sizes == (5, 5, 5, 5, 3)
    assert [n.id for n in extract.notes] == [int(CID) * 1000 + n for n in range(1, 24)]
    assert isinstance(normalized.plans, ChunkedRecords)
    assert normalized.plans.chunk_sizes == (5, 5, 5, 5, 3)
    # what the IO manager stores is the handle: no note content, no plan document
    stored = pickle.dumps(normalized)
    assert b"note 1</p>" not in stored and company.encode() in stored
    assert normalized.tally == PlanTally.of(normalized.plans)
    assert (normalized.total, normalized.count(PlanOutcome.READY)) == (23, 20)
    assert normalized.contact_misses == [f"{CID}003", f"{CID}013"]
    metadata = result.asset_materializations_for_node("normalized_notes")[0].metadata
    assert metadata["contact_lookup"].value == "preloaded"
    assert LOOKUPS == []  # preloaded once: no per-batch lookup
    load = result.output_for_node("cdp_notes_loaded")
    assert load.counts == {Outcome.MIGRATED: 20} and load.unwritten == []
    report = result.output_for_node("validation_report")
    assert report.outcomes == {"migrated": 20, "skipped": 0, "failed": 2, "out_of_scope": 1}
    assert report.fidelity_mismatches == [] and report.status == MonitorState.COMPLETED_WITH_ERRORS


def test_above_the_preload_bound_contacts_are_looked_up_per_batch_with_the_same_plans(
    store, request
):
    seed(store)
    preloaded = plan_ids(
        run(request.node.name, batch_size=4).output_for_node("normalized_notes").plans
    )
    store.contact_notes.clear()
    LOOKUPS.clear()
    result = run(request.node.name, batch_size=4, contact_preload_max=1)  # 2 contacts > 1
    per_batch = result.output_for_node("normalized_notes")
    metadata = result.asset_materializations_for_node("normalized_notes")[0].metadata
    assert metadata["contact_lookup"].value == "per_batch"
    assert len(LOOKUPS) == 6  # ceil(23 / 4) batches, one lookup each
    assert plan_ids(per_batch.plans) == preloaded
    assert (f"{CID}003", "failed", NoteCode.CONTACT_NOT_MAPPED) in preloaded


ORG = Organization(cid=CID, name="Org", company_sso_id=f"company-{CID}")


class FailingMongo(InMemoryCdpMongo):
    """Every write of the legacy ids in ``blocked`` fails (also on retry)."""

    blocked: list[str] = []

    def upsert_notes(
        self, company_sso_id: str, documents: Sequence[dict[str, Any]], **kwargs: Any
    ) -> BulkUpsertResult:
        result = BulkUpsertResult()
        for index, doc in enumerate(documents):
            if doc["legacy_crm_note_id"] in self.blocked:
                result.errors[index] = "WriteError"
            else:
                single = super().upsert_notes(company_sso_id, [doc], **kwargs)
                (result.upserted if single.upserted else result.matched).add(index)
        return result


def ready_plan(n: int) -> NotePlan:
    key = f"{CID}{n:03d}"
    document = {"company_sso_id": ORG.company_sso_id, "legacy_crm_note_id": key, "note": "<p/>"}
    return NotePlan(key, PlanOutcome.READY, document=document, content_hash="h")


def test_the_loader_streams_the_plan_once_and_keeps_only_unwritten_notes(store, request):
    consumed: list[str] = []

    def plans() -> Iterator[NotePlan]:  # a one-shot stream, like a chunk handle's iterator
        for n in range(1, 11):
            consumed.append(str(n))
            yield ready_plan(n)
            if n == 2:
                yield NotePlan("x", PlanOutcome.OUT_OF_SCOPE, "NOT_PERSON_NOTE")

    mongo = FailingMongo(store=request.node.name, blocked=[f"{CID}004"])
    ctx = LoadContext(
        org=ORG,
        mongo=mongo,
        storage=InMemoryAttachmentStorage(store=request.node.name),
        downloader=InMemoryDownloader(store),
        batch_size=4,
        failure_threshold_pct=1.0,
        attachment_workers=1,
        log=dg.get_dagster_logger(),
        job_id="job",
    )
    result = load_ready_notes(ctx, plans(), total_ready=10)
    assert result.status == LoadStatus.HALTED and result.batches == 1
    assert result.counts == {Outcome.MIGRATED: 3, Outcome.FAILED: 1, Outcome.NOT_ATTEMPTED: 6}
    assert [(o.legacy_crm_note_id, o.outcome) for o in result.unwritten] == [
        (f"{CID}004", Outcome.FAILED),
        *((f"{CID}{n:03d}", Outcome.NOT_ATTEMPTED) for n in range(5, 11)),
    ]
    assert result.failed[0].reason_code == NoteCode.BATCH_INSERT_FAILED
    # the server's error of the retry, not a TypeError of a double that refuses the retry's
    # recheck_matched (upsert_with_retry turns any exception into a row failure)
    assert result.failed[0].details == "WriteError"
    assert consumed == [str(n) for n in range(1, 11)]  # each plan read once
    assert sorted(store.contact_notes[ORG.company_sso_id]) == [f"{CID}00{n}" for n in (1, 2, 3)]


def test_the_report_keeps_a_digest_per_stored_note_never_its_content():
    plans = [ready_plan(1), ready_plan(2)]
    documents = [
        dict(plans[0].document or {}, note="<p>secret content</p>"),
        dict(plans[1].document or {}),
    ]
    index = index_stored(documents)
    assert b"secret content" not in pickle.dumps(index)
    assert sorted(index) == [f"{CID}001", f"{CID}002"]
    hashes = [content_hash("<p>other</p>"), content_hash("<p/>")]
    plans = [
        NotePlan(p.legacy_crm_note_id, p.outcome, document=p.document, content_hash=h)
        for p, h in zip(plans, hashes, strict=True)
    ]
    fidelity = split_by_cause(iter(plans), index)  # a one-shot stream of the plan
    assert fidelity.mismatched == [{"legacy_crm_note_id": f"{CID}001", "fields": "note"}]
    assert fidelity.drift == [] and fidelity.attachments_unavailable == 0


def test_the_stored_pass_also_finds_duplicate_legacy_ids():
    first, second = ready_plan(1).document or {}, ready_plan(2).document or {}
    index = index_stored([first, second, dict(first), dict(first)])
    assert sorted(index) == [f"{CID}001", f"{CID}002"]
    assert index.duplicates == {f"{CID}001"}
    assert index_stored([first, second]).duplicates == set()
