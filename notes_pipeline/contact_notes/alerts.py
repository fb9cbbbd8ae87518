"""The contact-notes family's alert routing (PRD §12 "Alerts"), as one pure function.

* halted → PagerDuty **P1** with ``job_id``, ``cid``, ``failure_rate`` (S01 ERR-3);
* not halted and ``match_pct`` < 99 %, or validation skipped (no match_pct) → PagerDuty
  **P2** (S04 ERR-1/ERR-2);
* attachment failure rate > 20 % (of the attachments planned) → **Slack**.

A halt pages once, at P1: its low match is the same incident. Rates are percent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from notes_pipeline.contact_notes import events
from notes_pipeline.core.alerts import Alert, Channel, Priority
from notes_pipeline.core.run_metadata import ReportSummary
from notes_pipeline.core.vocabulary import MonitorState, RunCode

MATCH_ALERT_BELOW_PCT = 99.0  # PRD §12: match_pct < 99 % → P2
ATTACHMENT_FAILURE_ALERT_ABOVE_PCT = 20.0  # PRD §12: attachment-fail > 20 % → Slack

MATCH_BELOW_THRESHOLD = "crm_notes_migration_match_below_threshold"
ATTACHMENT_FAILURES = "crm_notes_migration_attachment_failure_rate"


def notes_alerts(
    cid: str, job_id: str, report: ReportSummary, metadata: Mapping[str, Any] | None = None
) -> list[Alert]:
    """The alerts one ``validation_report`` of ``cid`` (run ``job_id``) calls for; [] when none.

    Details carry ids, codes and rates only (``Alert`` refuses anything else).
    """
    alerts: list[Alert] = []
    if report.status == MonitorState.HALTED:
        alerts.append(
            Alert(
                Channel.PAGERDUTY,
                events.HALTED,
                cid,
                job_id,
                Priority.P1,
                {
                    "status": str(report.status),
                    "failure_rate": report.failure_rate_pct,
                    "error_log_url": report.error_log_url,
                },
            )
        )
    elif report.match_pct is None or report.match_pct < MATCH_ALERT_BELOW_PCT:
        alerts.append(
            Alert(
                Channel.PAGERDUTY,
                MATCH_BELOW_THRESHOLD,
                cid,
                job_id,
                Priority.P2,
                {
                    "status": str(report.status),
                    "match_pct": report.match_pct,
                    "threshold_pct": MATCH_ALERT_BELOW_PCT,
                    "reason_code": None
                    if report.match_pct is not None
                    else str(RunCode.VALIDATION_SKIPPED),
                    "error_log_url": report.error_log_url,
                },
            )
        )
    failed = report.attachment_failure_pct
    if failed is not None and failed > ATTACHMENT_FAILURE_ALERT_ABOVE_PCT:
        alerts.append(
            Alert(
                Channel.SLACK,
                ATTACHMENT_FAILURES,
                cid,
                job_id,
                None,
                {
                    "attachment_failure_rate": failed,
                    "threshold_pct": ATTACHMENT_FAILURE_ALERT_ABOVE_PCT,
                    "error_log_url": report.error_log_url,
                },
            )
        )
    return alerts
