"""Stack-free tests: every asset of every family with in-memory resources and IO manager.

The all-families smoke test (as dagster's ``examples/assets_smoke_test``), plus the gates,
the status and the rollback on the in-memory fakes. No PostgreSQL, S3 or MongoDB needed:
these run under ``pytest -m "not stack"``. The stack tests prove the real services.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from notes_pipeline.activity_logs import definitions as activity_logs_definitions
from notes_pipeline.contact_notes.definitions import STATUS_ASSETS
from notes_pipeline.contact_notes.rollback import rollback_cid
from notes_pipeline.core.chunks import ChunksMissing, remove_chunks
from notes_pipeline.core.crm_records import CrmAttachment, CrmAudit, CrmNote, CrmUser, Organization
from notes_pipeline.core.partitions import cid_partitions
from notes_pipeline.core.resources.in_memory import InMemoryCdpMongo, InMemoryStore, in_memory_store
from notes_pipeline.core.resources.mongo import BulkUpsertResult
from notes_pipeline.core.rollback import confirmation_phrase
from notes_pipeline.core.status import cid_status
from notes_pipeline.core.vocabulary import MonitorState
from notes_pipeline.definitions import defs
from notes_pipeline.deployment import in_memory_resources

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(200)
CREATED = datetime(2023, 5, 6, 7, 8, 9, tzinfo=UTC)


def note(cid: str, n: int, person: int | None = 1, **changes) -> CrmNote:
    fields = dict(
        id=int(cid) * 1000 + n,
        organization_id=int(cid),
        type="Crm::PersonNote",
        crm_person_id=person,
        crm_company_id=None,
        crm_deal_id=None,
        crm_ticket_id=None,
        crm_note_type_id=1,
        note=f"<p>note {n}</p>",
        creator_id=None,
        creator_name=None,
        creator_email=None,
        created_at=CREATED,
        updated_at=CREATED,
    )
    fields.update(changes)
    return CrmNote(**fields)


def add_org(store: InMemoryStore, cid: str, notes: list[CrmNote], mapped: set[int]) -> str:
    company = f"company-{cid}"
    store.organizations[cid] = Organization(cid=cid, name=f"Org {cid}", company_sso_id=company)
    store.notes[cid] = notes
    store.contacts[company] = {str(pid): f"contact-{cid}-{pid}" for pid in mapped}
    return company


@pytest.fixture
def store(request) -> InMemoryStore:
    return in_memory_store(request.node.name, reset=True)


@pytest.fixture
def instance() -> dg.DagsterInstance:
    return dg.DagsterInstance.ephemeral()


def materialize(instance, store_name: str, cid: str, **settings) -> dg.ExecuteInProcessResult:
    if cid not in instance.get_dynamic_partitions(cid_partitions.name):
        instance.add_dynamic_partitions(cid_partitions.name, [cid])
    settings.setdefault("enabled_cids", "*")
    activity = {"enabled_cids": settings["enabled_cids"]}
    return dg.materialize_to_memory(
        list(defs.assets),
        partition_key=cid,
        resources=in_memory_resources(store_name, activity_log_settings=activity, **settings),
        instance=instance,
        raise_on_error=False,
    )


def test_every_asset_of_every_family_materializes_in_memory(store, instance, request):
    url = "https://crm.example.com/files/a.png"
    store.files[url] = (PNG, "image/png")
    attachment = CrmAttachment("a1", "image", url, "a.png", "image/png", len(PNG))
    company = add_org(
        store,
        "7001",
        [
            note("7001", 1, attachments=(attachment,), creator_email="ann@example.com"),
            note("7001", 2),
            note("7001", 3, person=None, crm_deal_id=4),  # out of scope
        ],
        mapped={1},
    )
    store.sso_users[company] = {"ann@example.com": "sso-ann"}
    store.crm_users[70] = CrmUser(70, " Ann@Example.com ", "Ann", None)
    store.audits["7001"] = [
        audit(7001_001, "Crm::Person", 1, "update", "---\nscore:\n- 1\n- 2\n", user_id=70),
        audit(7001_002, "Crm::Deal", 4, "create", '{"name": "Deal", "crm_person_id": 1}'),
        audit(7001_003, "Crm::Company", 9, "update", "---\nname:\n- a\n- b\n"),  # other type
    ]
    result = materialize(instance, request.node.name, "7001")
    assert result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert all(e.passed for e in result.get_asset_check_evaluations())
    docs = store.contact_notes[company]
    assert sorted(docs) == ["7001001", "7001002"]
    assert docs["7001001"]["owner_id"] == "sso-ann"
    assert [a["type"] for a in docs["7001001"]["attachments"]] == ["image"]
    assert store.objects[f"{company}/7001001/a1-a.png"] == PNG
    status = cid_status(instance, "7001", STATUS_ASSETS)
    assert (status.status, status.match_pct) == (MonitorState.COMPLETED_SUCCESS, 100.0)
    plan = result.output_for_node("normalized_activity_logs")
    entries = list(plan.iter_entries())
    assert [(e.crm_audit_id, str(e.outcome)) for e in entries] == [
        (7001_001, "ready"),
        (7001_002, "ready"),
    ]
    first = entries[0].document
    assert (first["customer_id"], first["user_id"], first["actor"]["type"]) == (
        "contact-7001-1",
        "sso-ann",
        "user",
    )
    assert first["changes"] == [{"field": "score", "from": 1, "to": 2}]
    assert entries[1].document["actor"]["type"] == "system"
    assert sorted(store.activity_logs[company]) == ["crm_audit:7001001", "crm_audit:7001002"]
    activity = cid_status(instance, "7001", activity_logs_definitions.STATUS_ASSETS)
    assert (activity.status, activity.match_pct) == (MonitorState.COMPLETED_SUCCESS, 100.0)
    (job,) = store.activity_log_jobs.values()
    assert (job["status"], job["records_migrated"], job["accuracy_pct"]) == (
        "completed_success",
        2,
        100.0,
    )
    assert store.activity_log_locks == {}  # released at the end of the job
    chunks = Path(instance.storage_directory()) / "chunks" / "normalized_activity_logs" / "7001"
    assert Path(plan.entries.directory) == chunks / result.run_id


def test_activity_log_stages_pass_small_handles_and_keep_only_the_latest_chunks(
    store, instance, request
):
    """§11 [N19]: the IO manager stores handles, the records live in chunk files of
    ``chunk_size``; a newer run supersedes the older run's chunks; rollback removes them."""
    company = add_org(store, "7005", [], mapped={1})
    store.crm_users[70] = CrmUser(70, "ann@example.com", "Ann", None)
    store.sso_users[company] = {"ann@example.com": "sso-ann"}
    store.audits["7005"] = [
        audit(7005_000 + n, "Crm::Person", 1, "update", f"---\nscore:\n- {n}\n- 2\n", user_id=70)
        for n in range(1, 8)
    ]
    instance.add_dynamic_partitions(cid_partitions.name, ["7005"])
    resources = in_memory_resources(
        request.node.name, activity_log_settings={"chunk_size": 3, "enabled_cids": "*"}
    )

    def run() -> dg.ExecuteInProcessResult:
        result = dg.materialize(  # the default (filesystem, pickling) IO manager
            activity_logs_definitions.activity_log_assets,
            partition_key="7005",
            resources=resources,
            instance=instance,
        )
        assert result.success
        return result

    first = run()
    storage = Path(instance.storage_directory())
    for asset in ("crm_audits_raw", "normalized_activity_logs"):
        pickled = (storage / asset / "7005").read_bytes()
        assert b"score" not in pickled and len(pickled) < 5_000, asset  # a handle, no record
    extract = first.output_for_node("crm_audits_raw")
    assert extract.audits.chunk_sizes == (3, 3, 1) and extract.extracted == 7
    for asset in ("crm_audits_raw", "normalized_activity_logs"):
        [event] = first.asset_materializations_for_node(asset)
        assert event.metadata["chunks"].value == 3, asset
    plan = first.output_for_node("normalized_activity_logs")
    assert plan.entries.chunk_sizes == (3, 3, 1)
    assert [e.crm_audit_id for e in plan.iter_entries()] == [7005_000 + n for n in range(1, 8)]
    assert plan.iter_entries().__next__().document["changes"][0]["field"] == "score"
    assert plan.contact_lookups == {
        "source_id": "preloaded",
        "crm_contact_id_map": "not_consulted",  # every person has a contact by source_id
    }
    second = run()
    runs = sorted(p.name for p in (storage / "chunks").glob("*/7005/*"))
    assert runs == [second.run_id, second.run_id]  # one per asset
    with pytest.raises(ChunksMissing):
        list(plan.iter_entries())
    assert remove_chunks(storage, "7005") == 2
    assert not list((storage / "chunks").glob("*/7005/*"))


def audit(audit_id: int, kind: str, owner: int, action: str, text: str, **fields) -> CrmAudit:
    """A CRM audit of ``kind`` row ``owner`` (the person 1 associated when not a person)."""
    values = dict(
        id=audit_id,
        auditable_type=kind,
        auditable_id=owner,
        associated_type=None if kind == "Crm::Person" else "Crm::Person",
        associated_id=None if kind == "Crm::Person" else 1,
        user_id=None,
        action=action,
        audited_changes=text,
        comment=None,
        version=1,
        created_at=CREATED,
    )
    values.update(fields)
    return CrmAudit(**values)


def test_coverage_gate_blocks_the_load(store, instance, request):
    notes = [note("7002", n) for n in range(1, 11)] + [note("7002", 11, person=2)]
    company = add_org(store, "7002", notes, mapped={1})
    result = materialize(instance, request.node.name, "7002")
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["contact_coverage"].passed
    assert not result.asset_materializations_for_node("cdp_notes_loaded")
    assert company not in store.contact_notes


class _FailingMongo(InMemoryCdpMongo):
    """Every note whose legacy id ends in 7 is rejected by the server."""

    def upsert_notes(self, company_sso_id, documents, **kwargs):
        keep = [d for d in documents if not d["legacy_crm_note_id"].endswith("7")]
        written = super().upsert_notes(company_sso_id, keep, **kwargs)
        result, kept = BulkUpsertResult(), iter(range(len(keep)))
        for index, doc in enumerate(documents):
            if doc["legacy_crm_note_id"].endswith("7"):
                result.errors[index] = "code=11000"
                continue
            position = next(kept)
            if position in written.upserted:
                result.upserted.add(index)
            else:
                result.matched.add(index)
        return result


def test_write_failures_halt_and_status_says_halted(store, instance, request):
    add_org(store, "7003", [note("7003", n) for n in range(1, 31)], mapped={1})
    instance.add_dynamic_partitions(cid_partitions.name, ["7003"])
    resources = in_memory_resources(request.node.name, enabled_cids="*", batch_size=10)
    resources["cdp_mongo"] = _FailingMongo(store=request.node.name)
    result = dg.materialize_to_memory(
        list(defs.assets),
        partition_key="7003",
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    load = result.output_for_node("cdp_notes_loaded")
    assert load.status == MonitorState.HALTED
    assert load.batches == 1  # halted after the first batch: nothing further written
    assert cid_status(instance, "7003", STATUS_ASSETS).status == MonitorState.HALTED


def test_rollback_removes_the_migrated_notes(store, instance, request):
    company = add_org(store, "7004", [note("7004", 1), note("7004", 2)], mapped={1})
    assert materialize(instance, request.node.name, "7004").success
    assert len(store.contact_notes[company]) == 2
    result = rollback_cid.execute_in_process(
        run_config={
            "ops": {
                "rollback_cid_op": {
                    "config": {"cid": "7004", "confirm": confirmation_phrase("7004")}
                }
            }
        },
        resources=in_memory_resources(request.node.name),
        instance=instance,
    )
    assert result.success
    assert company not in store.contact_notes
    status = cid_status(instance, "7004", STATUS_ASSETS)
    assert (status.status, status.note) == (MonitorState.NOT_STARTED, "rolled back")


@pytest.mark.parametrize("family", ["upsert_notes", "upsert_activity_logs"])
def test_the_in_memory_upsert_rechecks_matched_rows_by_id_on_a_retry(family):
    """As ``mongo_writes.upsert_on_insert``: on a retry, a row stored under its own ``_id`` is
    upserted (its earlier attempt wrote it); under another ``_id``, matched."""
    mongo = InMemoryCdpMongo(store="recheck")
    in_memory_store("recheck", reset=True)
    key = "legacy_crm_note_id" if family == "upsert_notes" else "external_id"
    rows = [{"company_sso_id": "co-1", key: str(i), "_id": f"id-{i}"} for i in range(3)]
    upsert = getattr(mongo, family)
    assert upsert("co-1", rows[:2]).upserted == {0, 1}
    again = upsert("co-1", [rows[0], {**rows[1], "_id": "other"}, rows[2]], recheck_matched=True)
    assert (again.upserted, again.matched) == ({0, 2}, {1})
    assert upsert("co-1", rows).matched == {0, 1, 2}  # no recheck: the key exists
