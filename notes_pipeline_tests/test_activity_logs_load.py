"""Activity logs, part 2, on the local stack (SPEC-activity-logs §5-§8, issue #13 acceptance).

* ``stage1``: migrated + skipped + failed = the source COUNT per CID; a re-run migrates 0
  (all ``duplicate_external_id``); rollback then re-run gives the same documents by
  ``external_id``; native documents and other companies' documents are never touched.
* A 15 % write fault halts the CID (job document and status say ``halted``); with the fault
  gone a re-run resumes the job and completes with no duplicates.
* A second trigger while a job of the CID runs ends ``JOB_ALREADY_RUNNING``; the job document
  shows ``in_progress`` with progress during the run and the final state after.
* Rollback refuses without its phrase, says ``ROLLBACK_NOT_FOUND`` for a CID never run, and
  ends ``rollback_failed`` when the delete fails.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import dagster as dg
import pytest
from bson import ObjectId
from pipeline_harness import cdp_db

from devtools.synthetic import build_dataset
from devtools.synthetic.writer import Targets, seed
from notes_pipeline import cli
from notes_pipeline.activity_logs.definitions import (
    STATUS_ASSETS,
    activity_log_assets,
    rollback_activity_logs_cid,
)
from notes_pipeline.activity_logs.settings import ActivityLogSettings
from notes_pipeline.activity_logs.validation import comparable
from notes_pipeline.core.alerts import AlertChannels
from notes_pipeline.core.partitions import cid_partitions
from notes_pipeline.core.resources.crm import PostgresCrmSource
from notes_pipeline.core.resources.identity import HttpIdentityDirectory
from notes_pipeline.core.resources.mongo import CdpMongo
from notes_pipeline.core.resources.mongo_writes import BulkUpsertResult
from notes_pipeline.core.resources.storage import AttachmentStorage
from notes_pipeline.core.rollback import confirmation_phrase
from notes_pipeline.core.status import cid_status

JOBS = "crm_activity_log_migration_jobs"


def mongo() -> CdpMongo:
    return CdpMongo(
        uri=os.environ["NOTES_PIPELINE_MONGO_URI"], database=os.environ["NOTES_PIPELINE_MONGO_DB"]
    )


def resources(cdp_mongo: CdpMongo | None = None, **settings) -> dict[str, object]:
    settings.setdefault("enabled_cids", "*")
    return {
        "crm_audits": PostgresCrmSource(dsn=os.environ["NOTES_PIPELINE_CRM_DSN"]),
        "cdp_mongo": cdp_mongo or mongo(),
        "identity": HttpIdentityDirectory(
            root_url=os.environ["NOTES_PIPELINE_IDENTITY_URL"],
            auth_token=os.environ.get("NOTES_PIPELINE_IDENTITY_TOKEN") or None,
        ),
        "attachment_storage": AttachmentStorage(
            bucket=os.environ["NOTES_PIPELINE_CDP_BUCKET"],
            endpoint_url=os.environ["NOTES_PIPELINE_S3_ENDPOINT_URL"],
        ),
        "activity_log_settings": ActivityLogSettings(**settings),
        "alerts": AlertChannels(),
    }


def migrate(cid: int, cdp_mongo: CdpMongo | None = None, **settings) -> dg.ExecuteInProcessResult:
    instance = dg.DagsterInstance.get()
    if str(cid) not in instance.get_dynamic_partitions(cid_partitions.name):
        instance.add_dynamic_partitions(cid_partitions.name, [str(cid)])
    return dg.materialize(
        activity_log_assets,
        partition_key=str(cid),
        resources=resources(cdp_mongo, **settings),
        instance=instance,
        raise_on_error=False,
    )


def rollback(cid: int, cdp_mongo: CdpMongo | None = None, confirm: str | None = None):
    config = {
        "cid": str(cid),
        "confirm": confirmation_phrase(str(cid)) if confirm is None else confirm,
    }
    return rollback_activity_logs_cid.execute_in_process(
        run_config={"ops": {"rollback_activity_logs_op": {"config": config}}},
        resources=resources(cdp_mongo),
        instance=dg.DagsterInstance.get(),
        raise_on_error=False,
    )


def meta(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    events = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in events[-1].metadata.items()} if events else {}


def company_of(dataset, cid: int) -> str:
    return next(o["company_sso_id"] for o in dataset.organizations if o["id"] == cid)


def stored(company: str) -> dict[str, dict]:
    docs = cdp_db()["activity_logs"].find(
        {"company_sso_id": company, "source_tag": "crm_migration"}
    )
    by_id: dict[str, dict] = {}
    for doc in docs:
        assert doc["external_id"] not in by_id, "duplicate external_id"
        by_id[doc["external_id"]] = comparable(doc)
    return by_id


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    return " ".join(
        str(e.step_failure_data.error.message)
        for e in result.all_events
        if e.is_step_failure and e.step_failure_data.error is not None
    )


@pytest.fixture(scope="module")
def stage1():
    dataset = build_dataset("stage1")
    seed(dataset, Targets.from_env(), attachments=False)
    return dataset


@pytest.mark.parametrize("cid", [1001, 1002])
def test_stage1_counts_rerun_rollback_and_rerun(stage1, cid):
    company = company_of(stage1, cid)
    db = cdp_db()
    native = {"company_sso_id": company, "category": "contact", "action": "update"}
    other = {
        "company_sso_id": f"{company}-other",
        "external_id": "crm_audit:1",
        "source_tag": "crm_migration",
    }
    native_id = db["activity_logs"].insert_one(dict(native)).inserted_id
    other_id = db["activity_logs"].insert_one(dict(other)).inserted_id

    first = migrate(cid)
    assert first.success, failure_text(first)
    probe, load = meta(first, "crm_audits_raw"), meta(first, "cdp_activity_logs_loaded")
    plan, report = (
        meta(first, "normalized_activity_logs"),
        meta(first, "activity_log_validation_report"),
    )
    assert (
        load["records_migrated"] + load["records_skipped"] + load["records_failed"]
        == (probe["count"])
    )
    assert load["records_migrated"] == plan["ready"], (load, plan, probe)
    assert load["records_failed"] == plan["failed"], (load, plan, probe)
    assert report["target_count"] == plan["ready"]
    assert report["duplicates"] == report["fidelity_mismatches"] == 0
    job = db[JOBS].find_one({"job_id": first.run_id})
    assert (
        job["status"]
        == report["status"]
        == cid_status(dg.DagsterInstance.get(), str(cid), STATUS_ASSETS).status
    )
    assert (job["records_migrated"], job["progress_pct"]) == (plan["ready"], 100.0)
    assert job["accuracy_pct"] == report["accuracy_pct"]
    documents = stored(company)
    assert len(documents) == plan["ready"]

    again = migrate(cid)
    assert again.success, failure_text(again)
    second = meta(again, "cdp_activity_logs_loaded")
    assert second["records_migrated"] == 0
    assert second["skipped_by_code"]["duplicate_external_id"] == plan["ready"]
    assert stored(company) == {
        k: {**v, "metadata": {**v["metadata"]}} for k, v in documents.items()
    }

    undone = rollback(cid)
    assert undone.success
    removed = undone.output_for_node("rollback_activity_logs_op")
    assert removed["records_removed"] == plan["ready"]
    assert removed["chunk_runs_removed"] >= 2  # the audits' and the plan's intermediates
    assert stored(company) == {}
    assert db["activity_logs"].find_one({"_id": native_id}) is not None
    assert db["activity_logs"].find_one({"_id": other_id}) is not None
    assert db[JOBS].find_one({"job_id": again.run_id})["status"] == "rolled_back"
    assert rollback(cid).output_for_node("rollback_activity_logs_op")["records_removed"] == 0

    redone = migrate(cid)
    assert redone.success, failure_text(redone)
    assert meta(redone, "cdp_activity_logs_loaded")["records_migrated"] == plan["ready"]
    assert stored(company) == documents  # the same documents by external_id
    db["activity_logs"].delete_many({"_id": {"$in": [native_id, other_id]}})


class FaultyMongo(CdpMongo):
    """The server rejects every row whose audit id is a multiple of 6 (≈ 16.7 % > 10 %)."""

    def upsert_activity_logs(self, company_sso_id, documents, **kwargs):
        keep = [i for i, d in enumerate(documents) if d["metadata"]["crm_audit_id"] % 6]
        written = super().upsert_activity_logs(
            company_sso_id, [documents[i] for i in keep], **kwargs
        )
        result = BulkUpsertResult()
        for offset, index in enumerate(keep):
            (result.upserted if offset in written.upserted else result.matched).add(index)
        for index in set(range(len(documents))) - set(keep):
            result.errors[index] = "code=2"
        return result


def _clean(company: str) -> None:
    db = cdp_db()
    for name in ("activity_logs", JOBS, "crm_activity_log_migration_locks"):
        db[name].delete_many({"company_sso_id": company})
    db["crm_activity_log_migration_locks"].delete_many({"_id": company})


def test_write_faults_halt_then_a_rerun_resumes_without_duplicates(stage1):
    cid, company = 1001, company_of(stage1, 1001)
    _clean(company)
    halted = migrate(cid, FaultyMongo(**mongo().model_dump()), write_concurrency=1)
    load = meta(halted, "cdp_activity_logs_loaded")
    assert load["status"] == "halted"
    assert load["failure_rate"] > 0.10
    assert load["not_attempted"] > 0
    job = cdp_db()[JOBS].find_one({"job_id": halted.run_id})
    assert (job["status"], job["halted_reason"]) == ("halted", "failure_rate")
    assert job["last_audit_id"] is not None
    status = cid_status(dg.DagsterInstance.get(), str(cid), STATUS_ASSETS)
    assert status.status == "halted"
    assert cdp_db()["crm_activity_log_migration_locks"].find_one({"_id": company}) is None

    resumed = migrate(cid)
    assert resumed.success, failure_text(resumed)
    load = meta(resumed, "cdp_activity_logs_loaded")
    assert load["resumed_from_job_id"] == halted.run_id
    plan = meta(resumed, "normalized_activity_logs")
    report = meta(resumed, "activity_log_validation_report")
    assert report["duplicates"] == 0
    assert report["target_count"] == plan["ready"]
    assert len(stored(company)) == plan["ready"]  # each exactly once (stored() asserts)
    job = cdp_db()[JOBS].find_one({"job_id": resumed.run_id})
    assert job["resumed_from_job_id"] == halted.run_id
    assert job["status"] in ("completed_success", "completed_with_errors")
    total = job["records_migrated"] + job["records_skipped"] + job["records_failed"]
    assert total == meta(resumed, "crm_audits_raw")["count"]


class SecondTrigger(CdpMongo):
    """On its third write (two batches in), reads the job document and triggers the same CID
    again, as a second Ops click would: the second run must meet the first job."""

    def upsert_activity_logs(self, company_sso_id, documents, **kwargs):
        calls = SEEN.setdefault("calls", 0) + 1
        SEEN["calls"] = calls
        if calls == 3:
            SEEN["mid_run_job"] = cdp_db()[JOBS].find_one(
                {"company_sso_id": company_sso_id, "status": "in_progress"}
            )
            SEEN["second"] = migrate(SEEN["cid"])
        return super().upsert_activity_logs(company_sso_id, documents, **kwargs)


SEEN: dict = {}


def test_a_second_trigger_is_refused_and_the_job_shows_progress(stage1, capsys):
    cid, company = 1002, company_of(stage1, 1002)
    _clean(company)
    SEEN.clear()
    SEEN["cid"] = cid
    first = migrate(cid, SecondTrigger(**mongo().model_dump()), write_concurrency=1)
    assert first.success, failure_text(first)
    second = SEEN["second"]
    assert not second.success
    assert "JOB_ALREADY_RUNNING" in failure_text(second)
    assert not second.asset_materializations_for_node("cdp_activity_logs_loaded")
    mid = SEEN["mid_run_job"]
    assert mid["job_id"] == first.run_id
    assert mid["status"] == "in_progress"
    assert mid["records_migrated"] >= 40 and 0 < mid["progress_pct"] < 100
    assert mid["last_audit_id"] is not None
    final = cdp_db()[JOBS].find_one({"job_id": first.run_id})
    assert final["status"] in ("completed_success", "completed_with_errors")
    assert final["progress_pct"] == 100.0 and final["finished_at"] is not None
    assert cdp_db()[JOBS].count_documents({"company_sso_id": company}) == 1
    capsys.readouterr()
    assert cli.main(["status", "--family", "all", "--cid", str(cid), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["activity_logs"]["status"] == final["status"]
    assert shown["activity_logs"]["run_id"] == first.run_id
    assert set(shown) == {"contact_notes", "activity_logs"}


class FailingDelete(CdpMongo):
    def delete_activity_logs(self, company_sso_id):
        raise ConnectionError("injected")


def test_rollback_guards_and_failure(stage1):
    refused = rollback(1001, confirm="yes")
    assert not refused.success and "ROLLBACK 1001" in failure_text(refused)
    _clean(company_of(stage1, 1002))  # no job ever ran for it, as far as CDP knows
    never = rollback(1002)
    assert not never.success and "ROLLBACK_NOT_FOUND" in failure_text(never)
    company = company_of(stage1, 1001)
    before = cdp_db()["activity_logs"].count_documents({"company_sso_id": company})
    failed = rollback(1001, FailingDelete(**mongo().model_dump()))
    assert not failed.success and "rollback_failed" in failure_text(failed)
    latest = max(cdp_db()[JOBS].find({"company_sso_id": company}), key=lambda j: j["started_at"])
    assert latest["status"] == "rollback_failed"
    assert cdp_db()["activity_logs"].count_documents({"company_sso_id": company}) == before


def test_no_values_in_the_error_csv_or_failures_store(stage1):
    rows = list(cdp_db()["crm_activity_log_migration_failures"].find({}, {"_id": 0}))
    assert rows
    allowed = {
        "company_sso_id",
        "cid",
        "job_id",
        "external_id",
        "crm_audit_id",
        "reason_code",
        "details",
        "expire_at",
        "document_id",  # write failures: the _id they were sent with (a resume re-sends it)
    }
    assert all(set(row) <= allowed for row in rows)
    codes = Counter(row["reason_code"] for row in rows)
    assert "contact_not_found" in codes
    write_failed = [row for row in rows if row["reason_code"] == "write_failed"]
    assert write_failed  # the halted load of test_write_faults_halt_then_a_rerun_resumes…
    assert all(isinstance(row["document_id"], ObjectId) for row in write_failed)
    assert all("document_id" not in row for row in rows if row["reason_code"] != "write_failed")


class Killed(BaseException):
    """What a dead worker leaves behind: the load stops mid-write, nothing runs after it."""


class DiesMidLoad(CdpMongo):
    """Writes normally, then dies on its 6th write (several batches already in CDP)."""

    def upsert_activity_logs(self, company_sso_id, documents, **kwargs):
        SEEN["writes"] = SEEN.get("writes", 0) + 1
        if SEEN["writes"] == 6:
            raise Killed
        return super().upsert_activity_logs(company_sso_id, documents, **kwargs)


def test_a_load_that_dies_mid_write_is_taken_over_and_resumed_without_duplicates(stage1):
    """A crashed run (kill -9, OOM) leaves its job in_progress and the lock held; once the run
    is no longer in flight, the next run takes the lock over, halts the dead job
    (run_not_in_flight) and resumes after its last_audit_id: every planned record ends in CDP
    exactly once and the counts add up."""
    cid, company = 1001, company_of(stage1, 1001)
    _clean(company)
    SEEN.clear()
    died = migrate(cid, DiesMidLoad(**mongo().model_dump()), write_concurrency=1)
    assert not died.success and "Killed" in failure_text(died)
    db = cdp_db()
    (dead,) = db[JOBS].find({"company_sso_id": company})
    assert dead["status"] == "in_progress"
    assert (
        db["crm_activity_log_migration_locks"].find_one({"_id": company})["job_id"]
        == (dead["job_id"])
    )
    written = len(stored(company))
    assert 0 < written
    resumed = migrate(cid)
    assert resumed.success, failure_text(resumed)
    assert db[JOBS].find_one({"job_id": dead["job_id"]})["halted_reason"] == "run_not_in_flight"
    load = meta(resumed, "cdp_activity_logs_loaded")
    plan = meta(resumed, "normalized_activity_logs")
    assert load["resumed_from_job_id"] == dead["job_id"]
    assert len(stored(company)) == plan["ready"]  # each exactly once (stored() asserts)
    job = db[JOBS].find_one({"job_id": resumed.run_id})
    total = job["records_migrated"] + job["records_skipped"] + job["records_failed"]
    assert total == meta(resumed, "crm_audits_raw")["count"]
    assert meta(resumed, "activity_log_validation_report")["duplicates"] == 0
