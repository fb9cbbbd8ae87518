"""The typed contract between what a family's assets write as Dagster metadata and what the
monitor state (``core.status``) reads: one dataclass per writer, ``to_metadata()`` /
``from_metadata()``. An absent value is an absent key, never a sentinel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import dagster as dg

from notes_pipeline.core.vocabulary import LoadStatus, MonitorState


def _raw(metadata: Mapping[str, Any], key: str) -> Any:
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


def _present(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class LoadProgress:
    """Observed on the load asset after each batch: records written so far of those planned."""

    records_processed: int
    records_total: int

    @property
    def progress_pct(self) -> float:
        """``records_processed / records_total`` in percent (1 decimal; 0.0 when nothing)."""
        return (
            round(self.records_processed / self.records_total * 100, 1)
            if self.records_total
            else 0.0
        )

    def to_metadata(self) -> dict[str, Any]:
        """The Dagster metadata entries this record writes (absent values left out)."""
        return {"records_processed": self.records_processed, "records_total": self.records_total}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> LoadProgress:
        """Read back what ``to_metadata`` wrote (missing keys → defaults or None)."""
        return cls(
            int(_raw(metadata, "records_processed") or 0), int(_raw(metadata, "records_total") or 0)
        )


@dataclass(frozen=True)
class LoadSummary:
    """On the load asset's materialization: how the load ended and its failure rate (%)."""

    status: LoadStatus
    load_failure_rate_pct: float

    def to_metadata(self) -> dict[str, Any]:
        """The Dagster metadata entries this record writes (absent values left out)."""
        return {"status": str(self.status), "load_failure_rate_pct": self.load_failure_rate_pct}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> LoadSummary:
        """Read back what ``to_metadata`` wrote (missing keys → defaults or None)."""
        return cls(
            LoadStatus(_raw(metadata, "status")),
            float(_raw(metadata, "load_failure_rate_pct") or 0.0),
        )


@dataclass(frozen=True)
class ReportSummary:
    """On the report's materialization: the CID's final state, counts by outcome, rates."""

    status: MonitorState
    outcomes: dict[str, int]
    failure_rate_pct: float
    match_pct: float | None = None
    source_count: int | None = None
    target_count: int | None = None
    error_log_url: str | None = None
    attachment_success_pct: float | None = None  # re-linked / planned attachments, percent
    owner_resolution_pct: float | None = None  # ready records with a resolved owner, percent

    def to_metadata(self) -> dict[str, Any]:
        """The Dagster metadata entries this record writes (absent values left out)."""
        values = _present(
            {
                "status": str(self.status),
                "outcomes": dg.MetadataValue.json(dict(self.outcomes)),
                "failure_rate_pct": self.failure_rate_pct,
                "match_pct": self.match_pct,
                "source_count": self.source_count,
                "target_count": self.target_count,
                "attachment_success_pct": self.attachment_success_pct,
                "owner_resolution_pct": self.owner_resolution_pct,
            }
        )
        if self.error_log_url is not None:
            values["error_log"] = dg.MetadataValue.url(self.error_log_url)
        return values

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> ReportSummary:
        """Read back what ``to_metadata`` wrote (missing keys → defaults or None)."""

        def optional(key: str, kind: type) -> Any:
            value = _raw(metadata, key)
            return None if value is None else kind(value)

        return cls(
            status=MonitorState(_raw(metadata, "status")),
            outcomes={k: int(v) for k, v in (_raw(metadata, "outcomes") or {}).items()},
            failure_rate_pct=float(_raw(metadata, "failure_rate_pct") or 0.0),
            match_pct=optional("match_pct", float),
            source_count=optional("source_count", int),
            target_count=optional("target_count", int),
            error_log_url=optional("error_log", str),
            attachment_success_pct=optional("attachment_success_pct", float),
            owner_resolution_pct=optional("owner_resolution_pct", float),
        )

    @property
    def attachment_failure_pct(self) -> float | None:
        """Attachments not re-linked, percent of those planned (None when not reported)."""
        if self.attachment_success_pct is None:
            return None
        return round(100.0 - self.attachment_success_pct, 3)


REFUSED = "refused"


@dataclass(frozen=True)
class RunRefusal:
    """Observed on the load asset when a run refuses to load a CID and writes nothing, e.g.
    ``ALREADY_MIGRATED`` (PRD S01 ERR-2): the code, the CID and the run whose report made the
    CID complete. The monitor state shows the code as its ``note``."""

    reason_code: str
    cid: str
    previous_run_id: str | None = None

    def to_metadata(self) -> dict[str, Any]:
        """The Dagster metadata entries this record writes (absent values left out)."""
        return _present(
            {
                "status": REFUSED,
                "reason_code": str(self.reason_code),
                "cid": self.cid,
                "previous_run_id": self.previous_run_id,
            }
        )

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> RunRefusal | None:
        """The refusal, or None when the observation is not one (e.g. load progress)."""
        if _raw(metadata, "status") != REFUSED:
            return None
        previous = _raw(metadata, "previous_run_id")
        return cls(
            reason_code=str(_raw(metadata, "reason_code")),
            cid=str(_raw(metadata, "cid")),
            previous_run_id=None if previous is None else str(previous),
        )


ROLLED_BACK = "rolled_back"


@dataclass(frozen=True)
class RollbackSummary:
    """Observed on the report asset by a rollback: what it removed (counts per kind)."""

    cid: str
    records_removed: int
    removed_by_kind: dict[str, int] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, Any]:
        """The Dagster metadata entries this record writes (absent values left out)."""
        return {
            "status": ROLLED_BACK,
            "cid": self.cid,
            "records_removed": self.records_removed,
            **self.removed_by_kind,
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> RollbackSummary | None:
        """The summary, or None when the observation is not a rollback."""
        if _raw(metadata, "status") != ROLLED_BACK:
            return None
        known = {f.name for f in fields(cls)} | {"status"}
        return cls(
            cid=str(_raw(metadata, "cid")),
            records_removed=int(_raw(metadata, "records_removed") or 0),
            removed_by_kind={k: int(_raw(metadata, k)) for k in metadata if k not in known},
        )
