"""Where the contact-notes family's monitor state comes from (``STATUS_ASSETS``), its HTTP
route (PRD §9 row 9) and its cutover verdict (PRD §13-14), as a pure function."""

from __future__ import annotations

import dagster as dg

from notes_pipeline.core.status import CidStatus, StatusAssets
from notes_pipeline.core.vocabulary import MonitorState

CUTOVER_MATCH_PCT = 99.0  # PRD §13/§14: match_pct ≥ 99 % before any CID cutover
CUTOVER_FAILURE_PCT = 1.0  # PRD §7: failure rate ≤ 1 % per CID
CUTOVER_ATTACHMENT_PCT = 95.0  # PRD §13: attachment success ≥ 95 %


def cutover_verdict(status: CidStatus) -> str:
    """``go``, ``review: …``, ``no-go: …``, ``wait`` or ``not started`` for one CID.

    ``go``: completed_success with attachments ≥ 95 % re-linked; ``review``: completed_success
    below that; ``no-go``: halted or completed_with_errors, with the first reason found
    (validation skipped, match_pct < 99 %, failure rate > 1 %, else duplicates/fidelity).
    """
    state = status.status
    if state == MonitorState.COMPLETED_SUCCESS:
        attachments = status.attachment_success_pct
        if attachments is not None and attachments < CUTOVER_ATTACHMENT_PCT:
            return f"review: attachments < {CUTOVER_ATTACHMENT_PCT:g} %"
        return "go"
    if state == MonitorState.HALTED:
        return "no-go: halted"
    if state == MonitorState.COMPLETED_WITH_ERRORS:
        if status.match_pct is None:
            return "no-go: validation skipped"
        if status.match_pct < CUTOVER_MATCH_PCT:
            return f"no-go: match_pct < {CUTOVER_MATCH_PCT:g} %"
        if (status.failure_rate or 0.0) > CUTOVER_FAILURE_PCT:
            return f"no-go: failure rate > {CUTOVER_FAILURE_PCT:g} %"
        return "no-go: duplicates or fidelity (see report)"
    if state == MonitorState.IN_PROGRESS:
        return "wait"
    return "not started"


#: where the family's monitor state is read from (``core.status``), and how it is served
STATUS_ASSETS = StatusAssets(
    family="contact_notes",
    load=dg.AssetKey("cdp_notes_loaded"),
    report=dg.AssetKey("validation_report"),
    route="/private/notes/migration/status",
    verdict=cutover_verdict,
)
