"""migration_overview: every registered CID at a glance, read from the Dagster instance."""

import dagster as dg

from notes_pipeline.contact_notes.monitor import CUTOVER_MATCH_PCT, STATUS_ASSETS
from notes_pipeline.core.overview import (
    counts_by_status,
    overview_markdown,
    overview_png,
    overview_rows,
    overview_table,
    png_markdown,
)
from notes_pipeline.core.status import all_statuses

OVERVIEW_GROUP = "notes_migration_overview"


@dg.asset(
    group_name=OVERVIEW_GROUP,
    kinds={"python"},
    description="Every registered CID at a glance: status, notes/total, match_pct, failure "
    "rate, attachment and owner rates, last run and cutover verdict (table, Markdown, plot). "
    "Materialize it after a backfill; it reads the instance, never CRM or CDP.",
)
def migration_overview(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """One row per registered CID (``core.overview``); metadata ``overview`` (table),
    ``by_status`` (JSON), ``summary`` (Markdown) and ``plot`` (PNG as a Markdown data URI)."""
    rows = overview_rows(all_statuses(context.instance, STATUS_ASSETS), STATUS_ASSETS)
    png = overview_png(rows, CUTOVER_MATCH_PCT)
    return dg.MaterializeResult(
        metadata={
            "cids": len(rows),
            "by_status": dg.MetadataValue.json(counts_by_status(rows)),
            "go": sum(1 for row in rows if row["verdict"] == "go"),
            "overview": overview_table(rows),
            "plot": dg.MetadataValue.md(png_markdown(png, "CIDs by status and match_pct")),
            "summary": dg.MetadataValue.md(overview_markdown(rows, "contact notes migration")),
        }
    )
