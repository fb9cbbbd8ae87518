"""The activity-log family's alert routing (SPEC-activity-logs §9 [N17]), one pure function.

* halted → PagerDuty **P1** (seed: halt at > 10 %);
* not halted and ``accuracy_pct`` < 99, or validation skipped → PagerDuty **P2**;
* ``contact_not_found`` ≥ 1 % of in-scope audits → PagerDuty **P2**;
* actor cases A3 + A4 > 20 % of the audits that reached the actor rule → **Slack**.

``rollback_failed`` pages P1 from the rollback job itself. Rates are percent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from notes_pipeline.activity_logs import events
from notes_pipeline.core.alerts import Alert, Channel, Priority
from notes_pipeline.core.run_metadata import ReportSummary
from notes_pipeline.core.vocabulary import MonitorState, RunCode

ACCURACY_ALERT_BELOW_PCT = 99.0
CONTACT_NOT_FOUND_ALERT_AT_PCT = 1.0
ACTOR_UNRESOLVED_ALERT_ABOVE_PCT = 20.0
ACCURACY_BELOW = events.PREFIX + "accuracy_below_threshold"
CONTACT_NOT_FOUND = events.PREFIX + "contact_not_found_rate"
ACTOR_UNRESOLVED = events.PREFIX + "actor_unresolved_rate"


def _value(metadata: Mapping[str, Any], key: str) -> Any:
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


def activity_log_alerts(
    cid: str, job_id: str, report: ReportSummary, metadata: Mapping[str, Any]
) -> list[Alert]:
    """The alerts one ``activity_log_validation_report`` calls for; [] when none."""
    if report.status == MonitorState.HALTED:
        return [
            Alert(
                Channel.PAGERDUTY,
                events.HALTED,
                cid,
                job_id,
                Priority.P1,
                {"status": str(report.status), "failure_rate": report.failure_rate_pct},
            )
        ]
    alerts: list[Alert] = []
    if report.match_pct is None or report.match_pct < ACCURACY_ALERT_BELOW_PCT:
        alerts.append(
            Alert(
                Channel.PAGERDUTY,
                ACCURACY_BELOW,
                cid,
                job_id,
                Priority.P2,
                {
                    "status": str(report.status),
                    "accuracy_pct": report.match_pct,
                    "threshold_pct": ACCURACY_ALERT_BELOW_PCT,
                    "reason_code": None
                    if report.match_pct is not None
                    else str(RunCode.VALIDATION_SKIPPED),
                },
            )
        )
    not_found = _value(metadata, "contact_not_found_pct")
    if not_found is not None and float(not_found) >= CONTACT_NOT_FOUND_ALERT_AT_PCT:
        alerts.append(
            Alert(
                Channel.PAGERDUTY,
                CONTACT_NOT_FOUND,
                cid,
                job_id,
                Priority.P2,
                {
                    "contact_not_found_pct": float(not_found),
                    "threshold_pct": CONTACT_NOT_FOUND_ALERT_AT_PCT,
                },
            )
        )
    unresolved = _value(metadata, "actor_unresolved_pct")
    if unresolved is not None and float(unresolved) > ACTOR_UNRESOLVED_ALERT_ABOVE_PCT:
        alerts.append(
            Alert(
                Channel.SLACK,
                ACTOR_UNRESOLVED,
                cid,
                job_id,
                None,
                {
                    "actor_unresolved_pct": float(unresolved),
                    "threshold_pct": ACTOR_UNRESOLVED_ALERT_ABOVE_PCT,
                },
            )
        )
    return alerts
