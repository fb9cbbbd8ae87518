"""Every CID at a glance (the sign-off view after a backfill): one row per registered CID with
its monitor state (``core.status``), rates and the family's cutover verdict, rendered as a
Dagster table, Markdown, a fixed-width text table (``notes-migration status``) and a PNG plot.

Pure functions over ``CidStatus`` rows; the plot imports matplotlib lazily (Agg backend).
Rates are percent; ``-`` (text) or null (table) means not known.
"""

from __future__ import annotations

import base64
import io
from collections import Counter
from collections.abc import Sequence
from typing import Any

import dagster as dg

from notes_pipeline.core.status import CidStatus, StatusAssets
from notes_pipeline.core.vocabulary import MonitorState

#: (column, Dagster table type, description) of the overview, in display order
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("cid", "string", "CRM client account"),
    ("status", "string", "PRD §8 monitor state"),
    ("verdict", "string", "cutover verdict (family rule)"),
    ("notes", "string", "records in the target / records to migrate (in flight: processed)"),
    ("match_pct", "float", "target count / source recount, %"),
    ("failure_rate_pct", "float", "failed / (migrated + skipped + failed), %"),
    ("attachment_pct", "float", "attachments re-linked / planned, %"),
    ("owner_pct", "float", "ready records with a resolved owner, %"),
    ("last_run", "string", "run id (8) and UTC time (minutes) of the latest state"),
    ("note", "string", "e.g. ALREADY_MIGRATED, rolled back"),
)
COLUMN_NAMES = tuple(name for name, _, _ in COLUMNS)
STATE_ORDER = tuple(MonitorState)


def overview_row(status: CidStatus, assets: StatusAssets) -> dict[str, Any]:
    """One CID's row: ``COLUMN_NAMES`` → str, float or None."""
    done = status.notes_migrated if status.notes_migrated is not None else status.notes_processed
    last_run = None
    if status.run_id:
        when = f"{status.updated_at[:16].replace('T', ' ')}Z" if status.updated_at else None
        last_run = " ".join(p for p in (status.run_id[:8], when) if p)
    verdict = assets.verdict(status) if assets.verdict else str(status.status)
    return {
        "cid": status.cid,
        "status": str(status.status),
        "verdict": verdict,
        "notes": f"{done}/{status.notes_total}" if status.notes_total else None,
        "match_pct": status.match_pct,
        "failure_rate_pct": status.failure_rate,
        "attachment_pct": status.attachment_success_pct,
        "owner_pct": status.owner_resolution_pct,
        "last_run": last_run,
        "note": status.note or None,
    }


def overview_rows(statuses: Sequence[CidStatus], assets: StatusAssets) -> list[dict[str, Any]]:
    """``overview_row`` of each status, in the given (CID) order."""
    return [overview_row(status, assets) for status in statuses]


def counts_by_status(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """CIDs per monitor state, every state listed (0 included), in PRD order."""
    counts = Counter(row["status"] for row in rows)
    return {str(state): counts.get(str(state), 0) for state in STATE_ORDER}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def overview_text(rows: Sequence[dict[str, Any]]) -> str:
    """The fixed-width table the CLI prints (header line, one line per CID)."""
    data = [[_cell(row[c]) for c in COLUMN_NAMES] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in data)]) for i, c in enumerate(COLUMN_NAMES)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMN_NAMES, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in data]
    return "\n".join(line.rstrip() for line in lines)


def overview_markdown(rows: Sequence[dict[str, Any]], title: str) -> str:
    """Markdown: ``title``, CIDs per state, then the table (ids, codes and rates only)."""
    counts = counts_by_status(rows)
    lines = [f"### {title}: {len(rows)} CIDs", ""]
    lines.append(" · ".join(f"`{state}` {n}" for state, n in counts.items()))
    lines += ["", "| " + " | ".join(COLUMN_NAMES) + " |"]
    lines.append("|" + "---|" * len(COLUMN_NAMES))
    for row in rows:
        cells = [_cell(row[c]).replace("|", "\\|") for c in COLUMN_NAMES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def overview_table(rows: Sequence[dict[str, Any]]) -> dg.TableMetadataValue:
    """The rows as a Dagster table (``dg.MetadataValue.table`` with its ``TableSchema``)."""
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, kind, description=d) for name, kind, d in COLUMNS]
    )
    return dg.MetadataValue.table(
        records=[dg.TableRecord(data={c: row[c] for c in COLUMN_NAMES}) for row in rows],
        schema=schema,
    )


STATE_COLORS = {
    MonitorState.NOT_STARTED: "#9e9e9e",
    MonitorState.IN_PROGRESS: "#2196f3",
    MonitorState.HALTED: "#e53935",
    MonitorState.COMPLETED_SUCCESS: "#43a047",
    MonitorState.COMPLETED_WITH_ERRORS: "#fb8c00",
}


def overview_png(rows: Sequence[dict[str, Any]], match_threshold_pct: float = 99.0) -> bytes:
    """A PNG: CIDs per state (bars) and match_pct per CID (bars coloured by state, the
    ``match_threshold_pct`` line); CIDs without a match_pct are left out of the second."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    counts = counts_by_status(rows)
    measured = [row for row in rows if row["match_pct"] is not None]
    figure, (by_state, by_cid) = plt.subplots(
        1, 2, figsize=(12, 3.6), gridspec_kw={"width_ratios": [1, 2.2]}
    )
    try:
        names = list(counts)
        bars = by_state.barh(
            names, [counts[n] for n in names], color=[STATE_COLORS[n] for n in names]
        )
        by_state.bar_label(bars, padding=3)
        by_state.invert_yaxis()
        by_state.set_title(f"CIDs by status ({len(rows)})")
        by_state.set_xlabel("CIDs")
        positions = range(len(measured))
        by_cid.bar(
            positions,
            [row["match_pct"] for row in measured],
            color=[STATE_COLORS[MonitorState(row["status"])] for row in measured],
        )
        by_cid.axhline(match_threshold_pct, color="#e53935", linestyle="--", linewidth=1)
        low = min([row["match_pct"] for row in measured] + [match_threshold_pct])
        by_cid.set_ylim(max(0.0, low - 2), 100.5)
        by_cid.set_title(f"match_pct per CID (line: {match_threshold_pct:g} %)")
        by_cid.set_ylabel("match_pct")
        if len(measured) <= 40:
            by_cid.set_xticks(list(positions), [row["cid"] for row in measured], rotation=60)
            by_cid.tick_params(axis="x", labelsize=7)
        else:
            by_cid.set_xlabel(f"{len(measured)} CIDs in CID order")
            by_cid.set_xticks([])
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=80)
        return buffer.getvalue()
    finally:
        plt.close(figure)


def png_markdown(png: bytes, alt: str) -> str:
    """``png`` as a Markdown image with a data URI (rendered by the Dagster UI)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
