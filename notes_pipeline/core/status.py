"""Per-CID monitor state (PRD §8), read from the Dagster instance through the typed metadata
contract of ``core.run_metadata``. A family names the two assets its state comes from.

Also the re-run rule of PRD §9 row 1 / S01 ERR-2 (``refuses_rerun``: a ``completed_success``
CID is ``ALREADY_MIGRATED`` unless the run carries ``FORCE_RERUN_TAG``) and the PRD §8 JSON
shapes the HTTP monitor API returns (``prd_monitor_json``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from notes_pipeline.core.parsing import cid_sort_key
from notes_pipeline.core.partitions import cid_partitions, runs_of_cid
from notes_pipeline.core.run_metadata import (
    LoadProgress,
    LoadSummary,
    ReportSummary,
    RollbackSummary,
    RunRefusal,
)
from notes_pipeline.core.vocabulary import FINAL_OUTCOMES, LoadStatus, MonitorState, Outcome

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]

#: run tag that lets a run re-load a ``completed_success`` CID (value ``true``)
FORCE_RERUN_TAG = "notes_pipeline/force_rerun"


@dataclass(frozen=True)
class StatusAssets:
    """A family's load asset (progress, halt) and report asset (final state, rollbacks).

    ``route`` is the family's HTTP monitor path (PRD §9 row 9, e.g.
    ``/private/notes/migration/status``; None = not served). ``verdict`` is the family's
    cutover rule for the overview (``CidStatus`` → short text; None = the status itself).
    """

    family: str
    load: dg.AssetKey
    report: dg.AssetKey
    route: str | None = None
    verdict: Callable[[CidStatus], str] | None = None


@dataclass
class CidStatus:
    """One CID's monitor state (PRD §8). Rates in percent; None = not known.

    ``notes_migrated`` counts the CID's records in the target after the latest report
    (migrated by that run or skipped as already there); ``updated_at`` is the UTC time
    (RFC 3339) of the event the state was read from; ``note`` says why the state is not the
    whole story (``rolled back``, a run-level code such as ``ALREADY_MIGRATED``).
    """

    cid: str
    status: str
    progress_pct: float
    notes_processed: int
    notes_total: int
    failure_rate: float | None
    match_pct: float | None
    run_id: str | None = None
    error_log_url: str | None = None
    note: str = ""
    notes_migrated: int | None = None
    attachment_success_pct: float | None = None
    owner_resolution_pct: float | None = None
    updated_at: str | None = None

    def as_dict(self) -> dict:
        """Every field as a JSON-ready object (the CLI's ``--json``)."""
        return asdict(self)


def _utc(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _latest(instance: dg.DagsterInstance, fetch, key: dg.AssetKey, cid: str, run_id=None):
    records = fetch(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[cid]), limit=20).records
    for record in records:
        if run_id is None or record.run_id == run_id:
            return record
    return None


def _newer(record, than) -> bool:
    return record is not None and (than is None or record.storage_id > than.storage_id)


def cid_status(instance: dg.DagsterInstance, cid: str, assets: StatusAssets) -> CidStatus:
    """The monitor state of ``cid`` for the family of ``assets``: in_progress while a run of
    the partition that materializes the family's load or report is in flight (a run of the
    other family only leaves this one as it was), else ``settled_status``."""
    running = [
        record
        for record in runs_of_cid(instance, cid, IN_FLIGHT)
        if run_covers(instance, record.dagster_run, assets)
    ]
    if running:
        record = running[0]
        run = record.dagster_run
        observed = _latest(instance, instance.fetch_observations, assets.load, cid, run.run_id)
        progress = (
            LoadProgress.from_metadata(observed.asset_observation.metadata)
            if observed
            else LoadProgress(0, 0)
        )
        return CidStatus(
            cid,
            MonitorState.IN_PROGRESS,
            progress.progress_pct,
            progress.records_processed,
            progress.records_total,
            None,
            None,
            run_id=run.run_id,
            updated_at=_utc(record.start_time or record.create_timestamp.timestamp()),
        )
    return settled_status(instance, cid, assets)


def run_covers(instance: dg.DagsterInstance, run: dg.DagsterRun, assets: StatusAssets) -> bool:
    """Whether ``run`` materializes the family's load or report asset: its asset selection
    when it has one, else the steps of its execution plan (a job run, an in-process
    materialize). True when neither is known."""
    wanted = (assets.load, assets.report)
    if run.asset_selection:  # None, or empty for an in-process materialize: not known
        return any(key in run.asset_selection for key in wanted)
    if run.execution_plan_snapshot_id is None:
        return True
    plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    if plan is None:
        return True
    steps = {step.key for step in plan.steps}
    return any(key.to_python_identifier() in steps for key in wanted)


def settled_status(instance: dg.DagsterInstance, cid: str, assets: StatusAssets) -> CidStatus:
    """The state of ``cid`` from what finished runs wrote, ignoring runs in flight: the latest
    report, rollback or halted load, with a later refusal (``RunRefusal``) as its ``note``."""
    status, source = _stored_status(instance, cid, assets)
    observed = _latest(instance, instance.fetch_observations, assets.load, cid)
    if _newer(observed, source):
        refusal = RunRefusal.from_metadata(observed.asset_observation.metadata)
        if refusal is not None:
            status.note = refusal.reason_code
    return status


def _stored_status(instance: dg.DagsterInstance, cid: str, assets: StatusAssets):
    """The stored state and the event record it was read from (None: nothing stored)."""
    report = _latest(instance, instance.fetch_materializations, assets.report, cid)
    observed = _latest(instance, instance.fetch_observations, assets.report, cid)
    if _newer(observed, report):
        if RollbackSummary.from_metadata(observed.asset_observation.metadata) is not None:
            return CidStatus(
                cid,
                MonitorState.NOT_STARTED,
                0.0,
                0,
                0,
                None,
                None,
                run_id=observed.run_id,
                note="rolled back",
                updated_at=_utc(observed.timestamp),
            ), observed
    if report and "status" in report.asset_materialization.metadata:
        # a report without a final state (a dry run's plan) leaves the CID not started
        summary = ReportSummary.from_metadata(report.asset_materialization.metadata)
        processed = sum(summary.outcomes.get(k, 0) for k in FINAL_OUTCOMES[:3])
        total = processed + summary.outcomes.get(Outcome.NOT_ATTEMPTED, 0)
        return CidStatus(
            cid,
            summary.status,
            round(processed / total * 100, 1) if total else 100.0,
            processed,
            total,
            summary.failure_rate_pct,
            summary.match_pct,
            run_id=report.run_id,
            error_log_url=summary.error_log_url,
            notes_migrated=summary.outcomes.get(Outcome.MIGRATED, 0)
            + summary.outcomes.get(Outcome.SKIPPED, 0),
            attachment_success_pct=summary.attachment_success_pct,
            owner_resolution_pct=summary.owner_resolution_pct,
            updated_at=_utc(report.timestamp),
        ), report
    loaded = _latest(instance, instance.fetch_materializations, assets.load, cid)
    if loaded and "status" in loaded.asset_materialization.metadata:  # a load, not a probe
        load = LoadSummary.from_metadata(loaded.asset_materialization.metadata)
        if load.status == LoadStatus.HALTED:
            return CidStatus(
                cid,
                MonitorState.HALTED,
                0.0,
                0,
                0,
                load.load_failure_rate_pct,
                None,
                run_id=loaded.run_id,
                updated_at=_utc(loaded.timestamp),
            ), loaded
    return CidStatus(cid, MonitorState.NOT_STARTED, 0.0, 0, 0, None, None), None


def all_statuses(instance: dg.DagsterInstance, assets: StatusAssets) -> list[CidStatus]:
    """``cid_status`` of every registered CID, in numeric CID order."""
    return [cid_status(instance, cid, assets) for cid in registered_cids(instance)]


def registered_cids(instance: dg.DagsterInstance) -> list[str]:
    """The registered CID partitions, in numeric CID order."""
    return sorted(instance.get_dynamic_partitions(cid_partitions.name), key=cid_sort_key)


def force_rerun_requested(tags: Mapping[str, str]) -> bool:
    """True when the run carries ``FORCE_RERUN_TAG=true`` (case-insensitive)."""
    return tags.get(FORCE_RERUN_TAG, "").strip().lower() == "true"


def refuses_rerun(previous: str, tags: Mapping[str, str]) -> bool:
    """PRD §9 row 1 / S01 ERR-2: a run must not load a CID whose settled state is
    ``completed_success`` (``ALREADY_MIGRATED``) unless it carries the override tag.
    Halted, completed-with-errors, rolled-back and new CIDs always load."""
    return previous == MonitorState.COMPLETED_SUCCESS and not force_rerun_requested(tags)


def prd_monitor_json(status: CidStatus) -> dict[str, Any]:
    """The PRD §8 MigrationMonitorAPI object of one CID (rates in percent):

    * ``not_started``: ``{status}``
    * ``in_progress``: ``{status, progress_pct, notes_processed, notes_total}``
    * ``halted``: ``{status, failure_rate, error_log_url}``
    * ``completed_success``: ``{status, notes_migrated, validation: {match_pct}}``
    * ``completed_with_errors`` (PRD S04 ERR-1/ERR-2, no §8 shape): the success fields plus
      ``failure_rate`` and ``error_log_url``; ``match_pct`` is null when validation was
      skipped.

    ``note`` (e.g. ``ALREADY_MIGRATED``, ``rolled back``) is added only when there is one.
    """
    state = MonitorState(status.status)
    body: dict[str, Any] = {"status": str(state)}
    if state == MonitorState.IN_PROGRESS:
        body |= {
            "progress_pct": status.progress_pct,
            "notes_processed": status.notes_processed,
            "notes_total": status.notes_total,
        }
    elif state == MonitorState.HALTED:
        body |= {"failure_rate": status.failure_rate, "error_log_url": status.error_log_url}
    elif state in (MonitorState.COMPLETED_SUCCESS, MonitorState.COMPLETED_WITH_ERRORS):
        body["notes_migrated"] = status.notes_migrated or 0
        if state == MonitorState.COMPLETED_WITH_ERRORS:
            body |= {"failure_rate": status.failure_rate, "error_log_url": status.error_log_url}
        body["validation"] = {"match_pct": status.match_pct}
    if status.note:
        body["note"] = status.note
    return body
