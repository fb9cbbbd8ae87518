"""The pure parts of the full backfill benchmark (``benchmarks/full_backfill_results.py``),
without the stack."""

from __future__ import annotations

import pytest
from dagster_graphql.schema.inputs import GrapheneLaunchBackfillParams

from benchmarks.full_backfill_results import (
    ACTIVITY_LOG_ASSETS,
    NOTES_ASSETS,
    activity_logs_section,
    expected_counts,
    family_walls,
    launch_params,
    rate,
    run_cid,
    run_layout,
    selected_assets,
    tally_activity_logs,
)
from notes_pipeline.activity_logs import definitions as activity_logs
from notes_pipeline.contact_notes import definitions as contact_notes

CIDS = ["2100", "2101"]


def _keys(assets) -> set[str]:
    return {a.key.to_user_string() for a in assets}


def test_the_families_assets_are_the_code_locations_two_groups():
    assert set(NOTES_ASSETS) == _keys(contact_notes.migration_assets)
    assert set(ACTIVITY_LOG_ASSETS) == _keys(activity_logs.activity_log_assets)
    assert selected_assets("notes") == list(NOTES_ASSETS)
    assert selected_assets("both") == [*NOTES_ASSETS, *ACTIVITY_LOG_ASSETS]


def test_notes_launch_is_todays_job_backfill_of_migrate_cid():
    params = launch_params("notes", CIDS, "loc", "__repository__", "t")
    assert params == {
        "selector": {
            "partitionSetName": "migrate_cid_partition_set",
            "repositorySelector": {
                "repositoryLocationName": "loc",
                "repositoryName": "__repository__",
            },
        },
        "assetSelection": [{"path": [a]} for a in NOTES_ASSETS],
        "partitionNames": CIDS,
        "fromFailure": False,
        "tags": [],
        "title": "t",
    }


def test_both_launch_is_a_pure_asset_backfill_of_the_eight_assets():
    params = launch_params("both", CIDS, "loc", "repo", "t")
    assert "selector" not in params  # no partition set: Dagster makes it an asset backfill
    assert [a["path"] for a in params["assetSelection"]] == [
        [a] for a in (*NOTES_ASSETS, *ACTIVITY_LOG_ASSETS)
    ]
    assert params["partitionNames"] == CIDS
    assert params["fromFailure"] is False  # fromFailure=true is refused for asset backfills


@pytest.mark.parametrize("families", ["notes", "both"])
def test_launch_params_are_fields_of_the_graphql_input(families):
    fields = GrapheneLaunchBackfillParams._meta.fields
    assert set(launch_params(families, CIDS, "l", "r", "t")) <= set(fields)


def test_expected_counts_come_from_the_dataset_summary():
    summary = {
        "per_cid": {
            "2100": {
                "notes_total": 60,
                "audits": {"in_scope": 4, "ready": 3, "skipped": 0, "failed": 1},
            },
            "2101": {"notes_total": 70, "audits": {"in_scope": 0}},
            "2102": {"notes_total": 80},
        }
    }
    none = {"migrated": 0, "skipped": 0, "failed": 0}
    assert expected_counts(summary, ["2100", "2102"]) == {
        "2100": {
            "notes": 60,
            "audits": 4,
            "audit_plan": {"migrated": 3, "skipped": 0, "failed": 1},
        },
        "2102": {"notes": 80, "audits": 0, "audit_plan": none},
    }
    with pytest.raises(KeyError):
        expected_counts(summary, ["2999"])


def test_a_runs_cid_comes_from_the_partition_tag_or_the_asset_partition_range():
    assert run_cid({"dagster/partition": "2100", "dagster/backfill": "b"}) == "2100"
    # what Dagster 1.13 tags an asset backfill's run with (BackfillPolicy, one CID per run)
    rng = {
        "dagster/asset_partition_range_start": "2101",
        "dagster/asset_partition_range_end": "2101",
    }
    assert run_cid(rng) == "2101"
    assert run_cid({**rng, "dagster/asset_partition_range_end": "2103"}) == "2101..2103"
    assert run_cid({"dagster/backfill": "b"}) is None


def test_run_layout_counts_runs_per_shape_and_per_cid():
    both = [*NOTES_ASSETS, *ACTIVITY_LOG_ASSETS]
    runs = [{"cid": c, "job": "__ASSET_JOB", "assets": both, "checks": 9} for c in CIDS]
    layout = run_layout(runs)
    assert layout["runs_per_cid"] == {"1": 2}
    assert layout["shapes"] == [
        {
            "runs": 2,
            "job": "__ASSET_JOB",
            "assets": sorted(both),
            "asset_checks": 9,
            "families": ["notes", "activity_logs"],
        }
    ]
    split = [
        {"cid": c, "job": "__ASSET_JOB", "assets": list(family), "checks": None}
        for c in CIDS
        for family in (NOTES_ASSETS, ACTIVITY_LOG_ASSETS)
    ]
    layout = run_layout(split)
    assert layout["runs_per_cid"] == {"2": 2}
    assert sorted(s["families"][0] for s in layout["shapes"]) == ["activity_logs", "notes"]


def test_family_walls_end_at_each_familys_last_step():
    ends = {
        "r1": {"crm_notes_raw": 101.0, "validation_report": 110.0, "crm_audits_raw": 102.0},
        "r2": {"activity_log_validation_report": 120.5, "validation_report": 105.0},
    }
    assert family_walls(ends, 100.0, ["notes", "activity_logs"]) == {
        "notes": 10.0,
        "activity_logs": 20.5,
    }
    assert family_walls({}, 100.0, ["notes"]) == {"notes": None}
    assert rate(21_000, 150.0) == 140.0 and rate(5, None) is None


def _job(run_id, status="completed_success", m=4, s=0, f=0, total=4, started="2026-12-01"):
    return {
        "job_id": run_id,
        "status": status,
        "records_migrated": m,
        "records_skipped": s,
        "records_failed": f,
        "records_total": total,
        "started_at": started,
    }


def test_activity_log_tally_adds_up_per_cid_and_in_total():
    jobs = [_job("r1"), _job("r2", "completed_with_errors", m=1, s=2, f=1), _job("other")]
    planned = {"2100": {"migrated": 4}, "2101": {"migrated": 1, "skipped": 2, "failed": 1}}
    tally = tally_activity_logs(jobs, {"r1": "2100", "r2": "2101"}, {"2100": 4, "2101": 4}, planned)
    assert tally["adds_up"] is tally["loaded_add_up"] is tally["every_audit_accounted_for"] is True
    assert tally["plan_mismatches"] == []
    assert tally["totals"] == {"migrated": 5, "skipped": 2, "failed": 1}
    assert tally["accounted"] == tally["expected"] == 8
    assert tally["by_status"] == {"completed_success": 1, "completed_with_errors": 1}
    assert tally["not_success"] == [{"cid": "2101", "status": "completed_with_errors"}]
    assert tally["per_cid"]["2101"]["adds_up"] is True


def test_activity_log_tally_flags_missing_jobs_and_counts_that_do_not_add_up():
    jobs = [
        _job("r1", m=3, total=4),  # one record unaccounted for
        _job("r3", "in_progress", m=0, total=4),
    ]
    run_cids = {"r1": "2100", "r2": "2101", "r3": "2102"}
    tally = tally_activity_logs(jobs, run_cids, {"2100": 4, "2101": 7, "2102": 4})
    assert tally["adds_up"] is tally["loaded_add_up"] is False
    assert tally["not_loaded"] == {"2101": 7}
    assert tally["by_status"]["no_job_document"] == 1
    assert [m["cid"] for m in tally["mismatches"]] == ["2100", "2102"]
    assert tally["not_final"] == [{"cid": "2102", "status": "in_progress"}]
    # a records_total that differs from the dataset's count is a mismatch too
    tally = tally_activity_logs([_job("r1", m=5, total=5)], {"r1": "2100"}, {"2100": 4})
    assert tally["mismatches"][0]["cid"] == "2100"


def test_a_cid_blocked_before_the_load_is_accounted_for_separately():
    # the full profile's CID 2011: its coverage gate blocks the plan, so no job document
    jobs = [_job("r1"), _job("r3", "completed_with_errors", m=99, f=1, total=100)]
    run_cids = {"r1": "2100", "r2": "2011", "r3": "2012"}
    expected = {"2100": 4, "2011": 1000, "2012": 100}
    planned = {
        "2100": {"migrated": 4},
        "2011": {"migrated": 989, "failed": 11},
        "2012": {"migrated": 98, "failed": 2},  # not what the load got
    }
    tally = tally_activity_logs(jobs, run_cids, expected, planned)
    assert tally["not_loaded"] == {"2011": 1000}
    assert tally["accounted"] == 104 and tally["expected"] == 1104
    assert tally["adds_up"] is False  # not every CID was loaded …
    assert tally["loaded_add_up"] is True  # … but every loaded one adds up
    assert tally["every_audit_accounted_for"] is True
    assert tally["plan_mismatches"] == [
        {
            "cid": "2012",
            "got": {"migrated": 99, "skipped": 0, "failed": 1},
            "planned": {"migrated": 98, "failed": 2},
        }
    ]


def test_activity_log_tally_reads_the_newest_job_of_a_cid():
    jobs = [
        _job("r1", "halted", m=1, total=4, started="2026-12-01T10:00:00"),
        _job("r2", m=4, total=4, started="2026-12-01T10:05:00"),
    ]
    tally = tally_activity_logs(jobs, {"r1": "2100", "r2": "2100"}, {"2100": 4})
    assert tally["per_cid"]["2100"]["status"] == "completed_success"
    assert tally["adds_up"] is True


def test_activity_logs_section_keeps_other_keys_and_drops_the_pending_note():
    previous = {
        "perf": {"records_per_s": 334},
        "extract": {"audits": 1},
        "full_backfill_wall_s": None,
        "full_backfill_pending": "not measured this session",
    }
    section = activity_logs_section(previous, 171.2, {"runs": 130})
    assert section == {
        "perf": {"records_per_s": 334},
        "extract": {"audits": 1},
        "full_backfill_wall_s": 171.2,
        "full_backfill": {"runs": 130},
    }
    assert "full_backfill_pending" in previous  # the input is left as it was
    assert activity_logs_section(None, 1.0, {}) == {
        "full_backfill_wall_s": 1.0,
        "full_backfill": {},
    }
