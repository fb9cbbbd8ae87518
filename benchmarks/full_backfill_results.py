"""Pure parts of the full backfill benchmark (``full_backfill.py``): the GraphQL launch
variables per ``--families``, the expected counts per CID, the run layout Dagster chose, each
family's wall time, the activity-log outcomes from the job documents, and the ``activity_logs``
section of ``results/latest.json``.

No I/O here, so ``notes_pipeline_tests/test_full_backfill_results.py`` checks it without the
stack.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

NOTES_JOB = "migrate_cid"
NOTES_ASSETS = ("crm_notes_raw", "normalized_notes", "cdp_notes_loaded", "validation_report")
ACTIVITY_LOG_ASSETS = (
    "crm_audits_raw",
    "normalized_activity_logs",
    "cdp_activity_logs_loaded",
    "activity_log_validation_report",
)
#: the assets of each family, in dependency order
FAMILY_ASSETS = {"notes": NOTES_ASSETS, "activity_logs": ACTIVITY_LOG_ASSETS}
#: ``--families`` → the families it backfills
FAMILIES = {"notes": ("notes",), "both": ("notes", "activity_logs")}
#: what a family counts (records/s)
RECORDS = {"notes": "notes", "activity_logs": "audits"}
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
#: the job document statuses that end a job (SPEC-activity-logs §6)
FINAL_JOB_STATUSES = ("completed_success", "completed_with_errors", "halted", "rolled_back")


def run_cid(tags: Mapping[str, str]) -> str | None:
    """The CID a run of the backfill covers. A job backfill's run carries
    ``dagster/partition``; an asset backfill's run (assets with a ``BackfillPolicy``) carries
    only ``dagster/asset_partition_range_start``/``_end`` (equal: one CID per run). A range of
    several CIDs is returned as ``start..end``."""
    if tags.get(PARTITION_TAG):
        return tags[PARTITION_TAG]
    start, end = tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG)
    if start is None:
        return None
    return start if start == end else f"{start}..{end}"


def selected_assets(families: str) -> list[str]:
    """The asset keys (one path element each) a ``--families`` backfill selects."""
    return [asset for family in FAMILIES[families] for asset in FAMILY_ASSETS[family]]


def launch_params(
    families: str, partitions: Sequence[str], location: str, repo: str, title: str
) -> dict[str, Any]:
    """``LaunchBackfillParams`` of the ``launchPartitionBackfill`` mutation, as the UI sends it.

    ``notes``: a job backfill of ``migrate_cid`` (its partition set + its four assets: the
    UI's 'Launch backfill' of an asset job). ``both``: a pure asset backfill (no
    ``selector``): the assets of both groups and the partition names, what the UI sends when
    assets of both groups are selected and partitions materialized (their only common job is
    the hidden asset job, so the UI leaves the selector out).
    """
    assets = [{"path": [a]} for a in selected_assets(families)]
    params: dict[str, Any] = {}
    if families == "notes":
        params["selector"] = {
            "partitionSetName": f"{NOTES_JOB}_partition_set",
            "repositorySelector": {"repositoryLocationName": location, "repositoryName": repo},
        }
    params.update(
        assetSelection=assets,
        partitionNames=list(partitions),
        fromFailure=False,
        tags=[],
        title=title,
    )
    return params


def expected_counts(summary: Mapping[str, Any], cids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Per CID, from ``python -m devtools.synthetic summary`` of the seeded profile: the source
    notes (``notes_total``), the Stage-0 COUNT of audits (``audits.in_scope``) and the plan the
    generator built the audits to get (``audit_plan``: ready → migrated, skipped, failed)."""
    per_cid = summary["per_cid"]
    out = {}
    for cid in cids:
        row = per_cid[str(cid)]
        audits = row.get("audits") or {}
        out[str(cid)] = {
            "notes": int(row["notes_total"]),
            "audits": int(audits.get("in_scope", 0)),
            "audit_plan": {
                "migrated": int(audits.get("ready", 0)),
                "skipped": int(audits.get("skipped", 0)),
                "failed": int(audits.get("failed", 0)),
            },
        }
    return out


def run_layout(runs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """How Dagster laid the backfill out in runs. ``runs``: ``{cid, job, assets, checks}`` per
    run (``assets``: the run's asset selection, ``checks``: how many asset checks it selects).

    Returns the number of runs per (job, asset selection, checks) shape, the runs per CID
    (``{runs per CID: CIDs}``) and which family's assets each shape covers."""
    shapes: Counter = Counter()
    per_cid: Counter = Counter()
    for run in runs:
        assets = tuple(sorted(run.get("assets") or ()))
        shapes[(run.get("job"), assets, run.get("checks"))] += 1
        per_cid[run.get("cid")] += 1
    rows = []
    for (job, assets, checks), count in sorted(shapes.items(), key=lambda kv: -kv[1]):
        families = [
            family
            for family, members in FAMILY_ASSETS.items()
            if set(members) & set(assets) or not assets
        ]
        rows.append(
            {
                "runs": count,
                "job": job,
                "assets": list(assets) if assets else "all of the job",
                "asset_checks": checks,
                "families": families,
            }
        )
    return {
        "shapes": rows,
        "runs_per_cid": {
            str(n): sum(1 for c in per_cid.values() if c == n)
            for n in sorted(set(per_cid.values()))
        },
    }


def family_walls(
    step_ends: Mapping[str, Mapping[str, float]], launched_at: float, families: Iterable[str]
) -> dict[str, float | None]:
    """Per family: launch → the end of its last step in any run (seconds, 2 decimals).
    ``step_ends``: run id → step key (= asset name) → end timestamp."""
    out: dict[str, float | None] = {}
    for family in families:
        members = set(FAMILY_ASSETS[family])
        ends = [t for steps in step_ends.values() for key, t in steps.items() if key in members]
        out[family] = round(max(ends) - launched_at, 2) if ends else None
    return out


def rate(records: int, seconds: float | None) -> float | None:
    """records / seconds, 1 decimal (None without a time)."""
    return round(records / seconds, 1) if seconds else None


def tally_activity_logs(
    jobs: Iterable[Mapping[str, Any]],
    run_cids: Mapping[str, str],
    expected: Mapping[str, int],
    planned: Mapping[str, Mapping[str, int]] | None = None,
) -> dict[str, Any]:
    """The activity-log outcomes of the backfill, from the job documents of its runs.

    ``jobs``: job documents (``crm_activity_log_migration_jobs``; ``job_id`` = Dagster run id);
    ``run_cids``: the backfill's run ids → CID (documents of other runs are ignored);
    ``expected``: CID → source count (the Stage-0 COUNT of the seeded dataset);
    ``planned``: CID → the outcomes the dataset was built to get (``migrated``, ``skipped``,
    ``failed``); a loaded CID with other counts is listed in ``plan_mismatches``.

    A CID is loaded when one of its runs has a job document: the newest one (by
    ``started_at``) is its final state. It adds up when ``migrated + skipped + failed`` equals
    both the document's ``records_total`` and the expected count. A CID without a job document
    never reached the load (refused, or blocked by a gate upstream): it is listed in
    ``not_loaded`` with its source count. ``adds_up``: every CID loaded and added up;
    ``loaded_add_up``: every loaded CID added up; ``accounted + sum(not_loaded) = expected``
    is ``every_audit_accounted_for``.
    """
    latest: dict[str, Mapping[str, Any]] = {}
    for job in jobs:
        cid = run_cids.get(str(job.get("job_id")))
        if cid is None:
            continue
        old = latest.get(cid)
        if old is None or str(job.get("started_at") or "") > str(old.get("started_at") or ""):
            latest[cid] = job
    per_cid: dict[str, dict[str, Any]] = {}
    totals = {"migrated": 0, "skipped": 0, "failed": 0}
    by_status: Counter = Counter()
    mismatches, plan_mismatches, not_final, without_job = [], [], [], {}
    for cid, source in expected.items():
        job = latest.get(cid)
        if job is None:
            without_job[cid] = source
            by_status["no_job_document"] += 1
            continue
        counts = {
            "migrated": int(job.get("records_migrated") or 0),
            "skipped": int(job.get("records_skipped") or 0),
            "failed": int(job.get("records_failed") or 0),
        }
        for key, value in counts.items():
            totals[key] += value
        status = str(job.get("status"))
        by_status[status] += 1
        accounted = sum(counts.values())
        row = {
            "status": status,
            **counts,
            "records_total": job.get("records_total"),
            "expected": source,
            "adds_up": accounted == source == job.get("records_total"),
        }
        per_cid[cid] = row
        if not row["adds_up"]:
            mismatches.append({"cid": cid, **row})
        plan = (planned or {}).get(cid)
        if plan is not None and any(counts[k] != int(plan.get(k, 0)) for k in counts):
            plan_mismatches.append({"cid": cid, "got": counts, "planned": dict(plan)})
        if status not in FINAL_JOB_STATUSES:
            not_final.append({"cid": cid, "status": status})
    accounted = sum(totals.values())
    expected_total = sum(expected.values())
    return {
        "cids": len(expected),
        "by_status": dict(sorted(by_status.items())),
        "totals": totals,
        "accounted": accounted,
        "expected": expected_total,
        "not_loaded": without_job,
        "adds_up": not mismatches and not without_job and accounted == expected_total,
        "loaded_add_up": not mismatches,
        "every_audit_accounted_for": not mismatches
        and accounted + sum(without_job.values()) == expected_total,
        "mismatches": mismatches,
        "plan_mismatches": plan_mismatches,
        "not_final": not_final,
        "not_success": [
            {"cid": cid, "status": row["status"]}
            for cid, row in per_cid.items()
            if row["status"] != "completed_success"
        ],
        "per_cid": per_cid,
    }


def activity_logs_section(
    previous: Mapping[str, Any] | None, wall_s: float | None, details: Mapping[str, Any]
) -> dict[str, Any]:
    """The new ``activity_logs`` section of ``results/latest.json``: the previous one with
    ``full_backfill_wall_s`` and the ``full_backfill`` details replaced, every other key kept,
    and ``full_backfill_pending`` dropped (a measured figure replaces it)."""
    section = {k: v for k, v in (previous or {}).items() if k != "full_backfill_pending"}
    section["full_backfill_wall_s"] = wall_s
    section["full_backfill"] = dict(details)
    return section
