"""What Ops rely on: blocking gates, halt and recovery, monitor status, rollback."""

import json
import os
import subprocess
import sys
import threading

import dagster as dg
from crm_fixtures import PNG, FixtureNote, FixtureOrg, install_fresh
from pipeline_harness import BlockingMongo, block_writes, check_results, run_cid, stack_resources

from notes_pipeline.contact_notes.definitions import STATUS_ASSETS
from notes_pipeline.contact_notes.rollback import rollback_cid
from notes_pipeline.core.overview import COLUMN_NAMES
from notes_pipeline.core.resources.mongo import CdpMongo
from notes_pipeline.core.rollback import confirmation_phrase
from notes_pipeline.core.status import cid_status
from notes_pipeline.core.vocabulary import MonitorState, Outcome


def notes(cid: int, count: int, unmapped: int = 0) -> list[FixtureNote]:
    """`count` person notes; the last `unmapped` ones belong to a person without a contact."""
    return [
        FixtureNote(cid * 1000 + i, person_id=2 if i > count - unmapped else 1)
        for i in range(1, count + 1)
    ]


def status_json(cid: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "notes_pipeline.cli", "status", "--cid", cid, "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def test_coverage_gate_blocks_the_load_and_nothing_is_written(db):
    org = install_fresh(FixtureOrg(990201, notes(990201, 100, unmapped=2), {1}), db)
    result = run_cid(str(org.cid), stack_resources(), raise_on_error=False)
    checks = check_results(result)
    coverage = checks["contact_coverage"]
    assert coverage.passed is False and coverage.severity == dg.AssetCheckSeverity.ERROR
    assert coverage.metadata["coverage_pct"].value == 98.0
    assert coverage.metadata["unmapped_note_ids"].value == ["990201099", "990201100"]
    assert coverage.partition == str(org.cid)
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"crm_notes_raw", "normalized_notes"}
    assert db.contact_notes.count_documents({"company_sso_id": org.company_sso_id}) == 0
    # The evaluation is stored per partition in the instance (what the UI shows).
    instance = dg.DagsterInstance.get()
    key = dg.AssetCheckKey(dg.AssetKey("normalized_notes"), "contact_coverage")
    records = instance.event_log_storage.get_asset_check_execution_history(key, limit=5)
    latest = next(r for r in records if r.run_id == result.run_id)
    assert latest.event.dagster_event.asset_check_evaluation_data.passed is False


def test_halted_cid_recovers_to_success_without_duplicates(db):
    org = install_fresh(FixtureOrg(990202, notes(990202, 200), {1}), db)
    cid = str(org.cid)
    blocked = [str(990202000 + i) for i in (5, 10, 15)]  # 3 of the first 50 → 6 % > 1 %
    block_writes(db, org, [int(b) for b in blocked])
    try:
        mongo = BlockingMongo(
            uri=os.environ["NOTES_PIPELINE_MONGO_URI"],
            database=os.environ["NOTES_PIPELINE_MONGO_DB"],
            blocked=blocked,
        )
        halted = run_cid(cid, stack_resources(mongo=mongo, batch_size=50), raise_on_error=False)
        load = halted.output_for_node("cdp_notes_loaded")
        assert load.status == MonitorState.HALTED and load.batches == 1
        assert load.count(Outcome.NOT_ATTEMPTED) == len(load.not_attempted) == 150
        assert check_results(halted)["load_failure_rate"].passed is False
        status = status_json(cid)
        assert status["status"] == MonitorState.HALTED
        assert (
            db.contact_notes.count_documents(
                {"company_sso_id": org.company_sso_id, "legacy_crm_note_id": {"$exists": True}}
            )
            == 47
        )
    finally:
        db.contact_notes.delete_many(
            {"company_sso_id": org.company_sso_id, "blocker_key": {"$exists": True}}
        )
        db.contact_notes.drop_index("test_blocker")
    recovered = run_cid(cid, stack_resources(batch_size=50))
    report = recovered.output_for_node("validation_report")
    assert report.status == MonitorState.COMPLETED_SUCCESS and report.duplicate_legacy_ids == []
    assert (report.outcomes[Outcome.MIGRATED], report.outcomes[Outcome.SKIPPED]) == (153, 47)
    status = status_json(cid)
    assert status["status"] == MonitorState.COMPLETED_SUCCESS
    assert (status["match_pct"], status["notes_processed"], status["notes_total"]) == (
        100.0,
        200,
        200,
    )


def test_status_of_unknown_and_new_cids(db):
    instance = dg.DagsterInstance.get()
    instance.add_dynamic_partitions("cid", ["990299"])
    assert cid_status(instance, "990299", STATUS_ASSETS).status == MonitorState.NOT_STARTED
    missing = subprocess.run(
        [sys.executable, "-m", "notes_pipeline.cli", "status", "--cid", "nope-404"],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "not a registered partition" in missing.stderr
    table = subprocess.run(
        [sys.executable, "-m", "notes_pipeline.cli", "status", "--all"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert table.splitlines()[0].split() == list(COLUMN_NAMES)  # migration_overview's table
    assert any(
        line.split()[:2] == ["990299", MonitorState.NOT_STARTED] for line in table.splitlines()
    )


def rollback(cid: str, confirm: str) -> dg.ExecuteInProcessResult:
    resources = stack_resources()
    return rollback_cid.execute_in_process(
        run_config={"ops": {"rollback_cid_op": {"config": {"cid": cid, "confirm": confirm}}}},
        resources={k: resources[k] for k in ("crm", "cdp_mongo", "attachment_storage")},
        instance=dg.DagsterInstance.get(),
        raise_on_error=False,
    )


def test_rollback_removes_only_the_cids_migrated_notes_and_rerun_restores_them(db, s3_client):
    org = install_fresh(
        FixtureOrg(
            990203,
            [
                FixtureNote(
                    990203000 + i, person_id=1, images=[(990203000 + i, "p.png", PNG, "image/png")]
                )
                for i in range(1, 6)
            ],
            {1},
        ),
        db,
    )
    cid, company = str(org.cid), org.company_sso_id
    bucket = os.environ["NOTES_PIPELINE_CDP_BUCKET"]
    db.contact_notes.insert_one({"company_sso_id": company, "note": "native"})
    s3_client.put_object(Bucket=bucket, Key=f"{company}/native/upload.png", Body=PNG)
    run_cid(cid, stack_resources())

    def migrated() -> dict:
        return {
            d["legacy_crm_note_id"]: {k: v for k, v in d.items() if k != "_id"}
            for d in db.contact_notes.find(
                {"company_sso_id": company, "legacy_crm_note_id": {"$exists": True}}
            )
        }

    def keys() -> set:
        listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=f"{company}/")
        return {o["Key"] for o in listed.get("Contents", [])}

    before, keys_before = migrated(), keys()
    assert len(before) == 5 and len(keys_before) == 6

    refused = rollback(cid, confirm="yes")
    assert not refused.success and migrated() == before

    done = rollback(cid, confirm=confirmation_phrase(cid))
    assert done.success
    removed = done.output_for_node("rollback_cid_op")
    assert removed["chunk_runs_removed"] >= 2  # the CRM notes' and the plan's intermediates
    assert {k: v for k, v in removed.items() if k != "chunk_runs_removed"} == {
        "cid": cid,
        "notes_deleted": 5,
        "attachments_deleted": 5,
    }
    assert migrated() == {} and keys() == {f"{company}/native/upload.png"}
    assert db.contact_notes.count_documents({"company_sso_id": company}) == 1  # native kept
    status = cid_status(dg.DagsterInstance.get(), cid, STATUS_ASSETS)
    assert status.status == MonitorState.NOT_STARTED

    run_cid(cid, stack_resources())
    assert migrated() == before and keys() == keys_before


class PausingMongo(CdpMongo):
    """Pauses before the second batch's write until the test releases it."""

    def upsert_notes(self, company_sso_id, documents, **kwargs):
        calls = self.__dict__.setdefault("_calls", [])
        calls.append(1)
        if len(calls) == 2:
            REACHED.set()
            assert RELEASE.wait(120)
        return super().upsert_notes(company_sso_id, documents, **kwargs)


REACHED, RELEASE = threading.Event(), threading.Event()


def test_status_reports_progress_while_a_cid_is_loading(db):
    org = install_fresh(FixtureOrg(990204, notes(990204, 30), {1}), db)
    cid = str(org.cid)
    mongo = PausingMongo(
        uri=os.environ["NOTES_PIPELINE_MONGO_URI"], database=os.environ["NOTES_PIPELINE_MONGO_DB"]
    )
    worker = threading.Thread(
        target=run_cid, args=(cid, stack_resources(mongo=mongo, batch_size=10))
    )
    worker.start()
    try:
        assert REACHED.wait(120)
        during = status_json(cid)
        assert during["status"] == MonitorState.IN_PROGRESS
        assert (during["notes_processed"], during["notes_total"], during["progress_pct"]) == (
            10,
            30,
            33.3,
        )
    finally:
        RELEASE.set()
        worker.join(120)
    assert status_json(cid)["status"] == MonitorState.COMPLETED_SUCCESS
