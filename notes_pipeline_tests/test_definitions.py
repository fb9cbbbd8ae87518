"""The whole code location loads, and Dagster's own storage is PostgreSQL."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import psycopg2
import sqlalchemy
from crm_fixtures import FixtureNote, FixtureOrg, install
from pipeline_harness import cdp_db, stack_resources

from notes_pipeline.activity_logs.settings import ActivityLogSettings
from notes_pipeline.core.discovery import cid_discovery_sensor
from notes_pipeline.core.resources.crm import CrmExtractError
from notes_pipeline.definitions import defs
from notes_pipeline.instance.storage import PooledPostgresStorage

ROOT = Path(__file__).resolve().parent.parent


def test_code_location_loads_with_assets_checks_jobs_and_sensor():
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {
        "crm_notes_raw",
        "normalized_notes",
        "cdp_notes_loaded",
        "validation_report",
        "migration_overview",
        "crm_audits_raw",
        "normalized_activity_logs",
        "cdp_activity_logs_loaded",
        "activity_log_validation_report",
    }
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert ("normalized_notes", "contact_coverage") in checks
    assert ("normalized_activity_logs", "contact_coverage") in checks
    assert ("validation_report", "attachments") in checks and len(checks) == 9 + 5 + 5
    assert ("validation_report", "source_drift") in checks
    assert ("activity_log_validation_report", "accuracy") in checks
    assert {j.name for j in defs.resolve_all_job_defs()} >= {
        "migrate_cid",
        "rollback_cid",
        "dry_run_activity_logs",
        "migrate_activity_logs_cid",
        "rollback_activity_logs_cid",
    }
    assert defs.resolve_sensor_def("cid_discovery_sensor")
    assert defs.resolve_sensor_def("activity_logs_alerts")


def test_dagster_definitions_validate_passes_for_the_workspace():
    out = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NOTES_PIPELINE_ENABLED_CIDS": ""},
    )
    assert out.returncode == 0, out.stderr[-2000:]


def test_runs_are_stored_in_postgresql(stack_env):
    instance = dg.DagsterInstance.get()
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"

    @dg.op
    def ping() -> int:
        return 1

    @dg.job(name="storage_probe")
    def storage_probe():
        ping()

    run = storage_probe.execute_in_process(instance=instance)
    with (
        psycopg2.connect(
            host=stack_env["DAGSTER_PG_HOST"],
            port=stack_env["DAGSTER_PG_PORT"],
            user=stack_env["DAGSTER_PG_USER"],
            password=stack_env["DAGSTER_PG_PASSWORD"],
            dbname=stack_env["DAGSTER_PG_DB"],
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT pipeline_name, status FROM runs WHERE run_id = %s", (run.run_id,))
        assert cur.fetchone() == ("storage_probe", "SUCCESS")


def test_stack_instance_reuses_storage_connections(stack_env):
    """dagster.yaml's PooledPostgresStorage: many storage calls, one PostgreSQL connection each."""
    instance = dg.DagsterInstance.get()
    storage_data = instance.get_ref().storage_data
    assert storage_data is not None
    assert storage_data.class_name == PooledPostgresStorage.__name__
    storages = (instance.run_storage, instance.event_log_storage, instance.schedule_storage)
    opened = []
    for storage in storages:
        sqlalchemy.event.listen(storage._engine, "connect", lambda *_: opened.append(1))
    for _ in range(20):
        instance.get_runs_count()
        instance.get_latest_materialization_event(dg.AssetKey("crm_notes_raw"))
        instance.all_instigator_state()
    assert len(opened) <= len(storages)


def test_sensor_registers_cids_with_person_notes_once():
    install(FixtureOrg(990501, [FixtureNote(990501001, person_id=1)], {1}), cdp_db())
    install(FixtureOrg(990502, [FixtureNote(990502001, deal_id=4)], set()), cdp_db())
    instance = dg.DagsterInstance.ephemeral()
    crm = stack_resources()["crm"]
    settings = ActivityLogSettings()
    sensor_resources = {"crm": crm, "crm_audits": crm, "activity_log_settings": settings}
    context = dg.build_sensor_context(instance=instance, resources=sensor_resources)
    first = cid_discovery_sensor(context)
    added = first.dynamic_partitions_requests[0].partition_keys
    try:  # activity logs: accounts owning in-scope audits count too
        with_audits = set(crm.list_cids_with_audits(settings.auditable_kinds))
    except CrmExtractError:  # this session's CRM has no audits table (never seeded)
        with_audits = set()
    assert set(crm.list_cids_with_person_notes()) | with_audits == set(added)
    assert "990501" in added and "990502" not in added  # deal-only account: no partition
    instance.add_dynamic_partitions("cid", list(added))
    second = cid_discovery_sensor(
        dg.build_sensor_context(instance=instance, resources=sensor_resources)
    )
    assert not second.dynamic_partitions_requests
