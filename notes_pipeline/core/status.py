"""Per-CID monitor state (PRD §8), read from the Dagster instance through the typed metadata
contract of ``core.run_metadata``. A family names the two assets its state comes from."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import dagster as dg

from notes_pipeline.core.partitions import cid_partitions
from notes_pipeline.core.run_metadata import (
    LoadProgress,
    LoadSummary,
    ReportSummary,
    RollbackSummary,
)
from notes_pipeline.core.vocabulary import FINAL_OUTCOMES, LoadStatus, MonitorState, Outcome

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dataclass(frozen=True)
class StatusAssets:
    """A family's load asset (progress, halt) and report asset (final state, rollbacks)."""

    family: str
    load: dg.AssetKey
    report: dg.AssetKey


@dataclass
class CidStatus:
    """One CID's monitor state in the PRD §8 shape. Rates in percent; None = not known."""

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

    def as_dict(self) -> dict:
        """The PRD §8 JSON object."""
        return asdict(self)


def _latest(instance: dg.DagsterInstance, fetch, key: dg.AssetKey, cid: str, run_id=None):
    records = fetch(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[cid]), limit=20).records
    for record in records:
        if run_id is None or record.run_id == run_id:
            return record
    return None


def cid_status(instance: dg.DagsterInstance, cid: str, assets: StatusAssets) -> CidStatus:
    """The monitor state of ``cid`` for the family of ``assets``: in_progress while a run of
    the partition is in flight, else the latest report, rollback or halted load."""
    running = instance.get_runs(
        filters=dg.RunsFilter(tags={"dagster/partition": cid}, statuses=IN_FLIGHT), limit=1
    )
    if running:
        run = running[0]
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
        )
    report = _latest(instance, instance.fetch_materializations, assets.report, cid)
    observed = _latest(instance, instance.fetch_observations, assets.report, cid)
    if observed and (report is None or observed.storage_id > report.storage_id):
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
            )
    if report:
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
        )
    loaded = _latest(instance, instance.fetch_materializations, assets.load, cid)
    if loaded:
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
            )
    return CidStatus(cid, MonitorState.NOT_STARTED, 0.0, 0, 0, None, None)


def all_statuses(instance: dg.DagsterInstance, assets: StatusAssets) -> list[CidStatus]:
    """``cid_status`` of every registered CID, in numeric CID order."""
    cids = sorted(instance.get_dynamic_partitions(cid_partitions.name), key=_cid_sort_key)
    return [cid_status(instance, cid, assets) for cid in cids]


def _cid_sort_key(cid: str):
    return (0, int(cid), cid) if cid.isdigit() else (1, 0, cid)
