"""Per-CID monitor state (PRD §8), read from the Dagster instance."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import dagster as dg

from notes_pipeline.contact_notes import reason_codes as rc
from notes_pipeline.contact_notes.rollback import ROLLED_BACK
from notes_pipeline.core.partitions import cid_partitions

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
LOADED = dg.AssetKey("cdp_notes_loaded")
REPORT = dg.AssetKey("validation_report")


@dataclass
class CidStatus:
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
        return asdict(self)


def _value(metadata: dict, key: str, default=None):
    entry = metadata.get(key)
    return default if entry is None else getattr(entry, "value", entry)


def _latest(instance: dg.DagsterInstance, fetch, key: dg.AssetKey, cid: str, run_id=None):
    records = fetch(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[cid]), limit=20).records
    for record in records:
        if run_id is None or record.run_id == run_id:
            return record
    return None


def cid_status(instance: dg.DagsterInstance, cid: str) -> CidStatus:
    """The monitor state of one CID."""
    running = instance.get_runs(
        filters=dg.RunsFilter(tags={"dagster/partition": cid}, statuses=IN_FLIGHT), limit=1
    )
    if running:
        run = running[0]
        progress = _latest(instance, instance.fetch_observations, LOADED, cid, run.run_id)
        processed = total = 0
        if progress:
            meta = progress.asset_observation.metadata
            processed = int(_value(meta, "notes_processed", 0))
            total = int(_value(meta, "notes_total", 0))
        return CidStatus(
            cid,
            rc.IN_PROGRESS,
            round(processed / total * 100, 1) if total else 0.0,
            processed,
            total,
            None,
            None,
            run_id=run.run_id,
        )
    report = _latest(instance, instance.fetch_materializations, REPORT, cid)
    rollback = _latest(instance, instance.fetch_observations, REPORT, cid)
    if rollback and (report is None or rollback.storage_id > report.storage_id):
        meta = rollback.asset_observation.metadata
        if _value(meta, "status") == ROLLED_BACK:
            return CidStatus(
                cid,
                rc.NOT_STARTED,
                0.0,
                0,
                0,
                None,
                None,
                run_id=rollback.run_id,
                note="rolled back",
            )
    if report:
        meta = report.asset_materialization.metadata
        outcomes = _value(meta, "outcomes", {}) or {}
        processed = sum(int(outcomes.get(k, 0)) for k in (rc.MIGRATED, rc.SKIPPED, rc.FAILED))
        total = processed + int(outcomes.get("not_attempted", 0))
        match = _value(meta, "match_pct")
        return CidStatus(
            cid,
            _value(meta, "status", rc.COMPLETED_WITH_ERRORS),
            round(processed / total * 100, 1) if total else 100.0,
            processed,
            total,
            _value(meta, "failure_rate_pct"),
            None if match is None or match < 0 else match,
            run_id=report.run_id,
            error_log_url=_value(meta, "error_log"),
        )
    loaded = _latest(instance, instance.fetch_materializations, LOADED, cid)
    if loaded and _value(loaded.asset_materialization.metadata, "status") == rc.HALTED:
        meta = loaded.asset_materialization.metadata
        return CidStatus(
            cid,
            rc.HALTED,
            0.0,
            0,
            0,
            _value(meta, "load_failure_rate_pct"),
            None,
            run_id=loaded.run_id,
        )
    return CidStatus(cid, rc.NOT_STARTED, 0.0, 0, 0, None, None)


def all_statuses(instance: dg.DagsterInstance) -> list[CidStatus]:
    cids = sorted(instance.get_dynamic_partitions(cid_partitions.name), key=_cid_sort_key)
    return [cid_status(instance, cid) for cid in cids]


def _cid_sort_key(cid: str):
    return (0, int(cid), cid) if cid.isdigit() else (1, 0, cid)
