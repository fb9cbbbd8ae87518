"""PRD §12 alert routing, the mechanism: Dagster's PagerDuty and Slack integrations behind one
resource, and a sensor that reads every new report materialization and sends what a family's
pure routing rule returns.

* ``Alert``: what to send (channel, priority, event code, ids and rates only, never names,
  emails or content: the details are checked against ``ALLOWED_DETAILS``).
* ``AlertChannels``: the ``alerts`` resource. PagerDuty through ``dagster_pagerduty``'s
  ``PagerDutyService`` (Events API v2), Slack through ``dagster_slack``'s ``SlackResource``
  (``chat.postMessage``). A channel without its variables is off: nothing is sent, and the
  sensor says so once in its log (the sensor cursor remembers that it did).
* ``report_alert_sensor``: one sensor per family over the family's report asset. Unlike
  ``dg.asset_sensor`` (latest event only) it visits every materialization after its cursor,
  so a backfill of many CIDs alerts for each of them, exactly once per report. Its first
  tick starts at the newest report: history is not re-alerted when the sensor is enabled.

Environment (secrets only as ``dg.EnvVar``, resolved when the sensor runs):

====================================  ==================================================
``NOTES_PIPELINE_PAGERDUTY_ROUTING_KEY``  Events API v2 routing (integration) key; unset =
                                          PagerDuty off
``NOTES_PIPELINE_SLACK_TOKEN``,           bot token and channel; either unset = Slack off
``NOTES_PIPELINE_SLACK_CHANNEL``
``NOTES_PIPELINE_PAGERDUTY_EVENTS_URL``,  optional endpoint overrides (default the public
``NOTES_PIPELINE_SLACK_API_URL``          services; tests point them at 127.0.0.1)
====================================  ==================================================
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import dagster as dg
from pydantic import Field

from notes_pipeline.core.run_metadata import ReportSummary

PAGERDUTY_ROUTING_KEY = "NOTES_PIPELINE_PAGERDUTY_ROUTING_KEY"
PAGERDUTY_EVENTS_URL = "NOTES_PIPELINE_PAGERDUTY_EVENTS_URL"
SLACK_TOKEN = "NOTES_PIPELINE_SLACK_TOKEN"
SLACK_CHANNEL = "NOTES_PIPELINE_SLACK_CHANNEL"
SLACK_API_URL = "NOTES_PIPELINE_SLACK_API_URL"
DEFAULT_PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
DEFAULT_SLACK_API_URL = "https://slack.com/api/"

#: detail keys an alert may carry: ids, codes, counts and rates (PRD §12 properties)
ALLOWED_DETAILS = frozenset(
    {
        "job_id",
        "cid",
        "status",
        "reason_code",
        "failure_rate",
        "match_pct",
        "threshold_pct",
        "attachment_failure_rate",
        "attachments_planned",
        "error_log_url",
        "priority",
        "accuracy_pct",
        "contact_not_found_pct",
        "actor_unresolved_pct",
    }
)

log = logging.getLogger("notes_pipeline.alerts")


class Channel(StrEnum):
    """Where an alert goes (PRD §12: PagerDuty pages, Slack informs)."""

    PAGERDUTY = "pagerduty"
    SLACK = "slack"


class Priority(StrEnum):
    """PagerDuty priority of a page; the Events API v2 severity it is sent with."""

    P1 = "P1"
    P2 = "P2"

    @property
    def severity(self) -> str:
        """``critical`` for P1, ``error`` for P2 (Events API v2 severities)."""
        return "critical" if self is Priority.P1 else "error"


@dataclass(frozen=True)
class Alert:
    """One alert for one CID's run. ``code`` is the event (e.g. ``crm_notes_migration_halted``),
    ``details`` ids, codes and rates (percent) only. Raises ``ValueError`` for any other
    detail key, which keeps names, emails and content out of every payload."""

    channel: Channel
    code: str
    cid: str
    job_id: str
    priority: Priority | None = None
    details: Mapping[str, str | int | float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.details) - ALLOWED_DETAILS
        if unknown:
            raise ValueError(f"alert {self.code} may not carry {sorted(unknown)}")

    @property
    def dedup_key(self) -> str:
        """Stable per (event, CID, run): PagerDuty folds repeats into one alert."""
        return f"{self.code}:{self.cid}:{self.job_id}"

    def payload(self) -> dict[str, str | int | float | None]:
        """The alert's properties: ``cid``, ``job_id``, ``priority`` (pages) and the details
        that have a value."""
        body: dict[str, str | int | float | None] = {"cid": self.cid, "job_id": self.job_id}
        if self.priority is not None:
            body["priority"] = str(self.priority)
        body.update({k: v for k, v in self.details.items() if v is not None})
        return body

    def summary(self) -> str:
        """One line: the event code and ``key=value`` of ``payload()``."""
        pairs = " ".join(f"{k}={v}" for k, v in self.payload().items())
        return f"{self.code} {pairs}"


#: a family's routing rule: (cid, job_id, report, the report's raw metadata) → the alerts
#: to send (pure)
AlertRule = Callable[[str, str, ReportSummary, Mapping[str, Any]], list[Alert]]

_PYPD_ENDPOINT = threading.Lock()


@contextmanager
def _pagerduty_endpoint(url: str):
    """pypd (under ``PagerDutyService``) takes its Events API v2 URL from the class attribute
    ``pypd.EventV2.base_url``, pypd's own configuration; swapped under a lock when a
    non-default endpoint is configured, and restored."""
    import pypd

    if url == DEFAULT_PAGERDUTY_EVENTS_URL:
        yield
        return
    with _PYPD_ENDPOINT:
        default = pypd.EventV2.base_url
        pypd.EventV2.base_url = url
        try:
            yield
        finally:
            pypd.EventV2.base_url = default


class AlertChannels(dg.ConfigurableResource):
    """The ``alerts`` resource: PagerDuty and Slack, each on only when configured."""

    pagerduty_routing_key: str | None = Field(
        default=None, description="PagerDuty Events API v2 routing key; None = PagerDuty off."
    )
    pagerduty_events_url: str = Field(
        default=DEFAULT_PAGERDUTY_EVENTS_URL, description="PagerDuty Events API v2 endpoint."
    )
    slack_token: str | None = Field(default=None, description="Slack bot token; None = off.")
    slack_channel: str | None = Field(default=None, description="Slack channel; None = off.")
    slack_api_url: str = Field(default=DEFAULT_SLACK_API_URL, description="Slack Web API root.")

    def enabled(self, channel: Channel) -> bool:
        """True when ``channel`` has what it needs to send."""
        if channel is Channel.PAGERDUTY:
            return bool(self.pagerduty_routing_key)
        return bool(self.slack_token and self.slack_channel)

    def send(self, alert: Alert) -> bool:
        """Send ``alert``; False (nothing sent) when its channel is off. Raises what the client
        raises when the service refuses (pypd ``BadRequest``, slack_sdk ``SlackApiError``)."""
        if not self.enabled(alert.channel):
            return False
        if alert.channel is Channel.PAGERDUTY:
            from dagster_pagerduty import PagerDutyService

            service = PagerDutyService(routing_key=self.pagerduty_routing_key)
            priority = alert.priority or Priority.P2
            with _pagerduty_endpoint(self.pagerduty_events_url):
                service.EventV2_create(
                    summary=alert.summary(),
                    source="notes_pipeline",
                    severity=priority.severity,
                    dedup_key=alert.dedup_key,
                    component=alert.code,
                    group=f"cid:{alert.cid}",
                    event_class=alert.code,
                    custom_details=alert.payload(),
                )
        else:
            from dagster_slack import SlackResource

            client = SlackResource(token=self.slack_token).get_client()
            client.base_url = self.slack_api_url
            client.chat_postMessage(channel=self.slack_channel, text=alert.summary())
        return True


def alert_channels_from_env(environ: Mapping[str, str]) -> AlertChannels:
    """The ``alerts`` resource for ``environ``: each variable that is set becomes a
    ``dg.EnvVar`` (the value is read when the sensor runs, never stored); unset = off. Pure."""

    def env(name: str) -> dg.EnvVar | None:
        return dg.EnvVar(name) if environ.get(name, "").strip() else None

    optional_urls = {
        key: url
        for key, url in (
            ("pagerduty_events_url", env(PAGERDUTY_EVENTS_URL)),
            ("slack_api_url", env(SLACK_API_URL)),
        )
        if url is not None
    }
    return AlertChannels(
        pagerduty_routing_key=env(PAGERDUTY_ROUTING_KEY),
        slack_token=env(SLACK_TOKEN),
        slack_channel=env(SLACK_CHANNEL),
        **optional_urls,
    )


@dataclass
class _Cursor:
    """The sensor's cursor: the last report visited and the channels already said to be off."""

    after: int
    said_off: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str | None) -> _Cursor | None:
        if not text:
            return None
        raw = json.loads(text)
        return cls(int(raw["after"]), list(raw.get("said_off", [])))

    def dump(self) -> str:
        return json.dumps({"after": self.after, "said_off": sorted(self.said_off)})


def _newest_storage_id(instance: dg.DagsterInstance, key: dg.AssetKey) -> int:
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1)
    return records.records[0].storage_id if records.records else 0


def report_alert_sensor(
    *,
    name: str,
    report: dg.AssetKey,
    rule: AlertRule,
    minimum_interval_seconds: int = 30,
    batch: int = 200,
) -> dg.SensorDefinition:
    """A sensor named ``name`` that sends ``rule(cid, run_id, ReportSummary, metadata)`` for
    every new materialization of ``report`` through the ``alerts`` resource (``AlertChannels``).

    A report whose alerts could not be sent (service error) stays after the cursor and is
    retried on the next tick; PagerDuty's ``dedup_key`` folds a repeated page.
    """

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"PRD §12 alerts for each new {report.to_user_string()} (PagerDuty, Slack).",
    )
    def _alert_sensor(
        context: dg.SensorEvaluationContext, alerts: AlertChannels
    ) -> dg.SensorResult:
        cursor = _Cursor.parse(context.cursor)
        if cursor is None:
            start = _newest_storage_id(context.instance, report)
            return dg.SensorResult(
                skip_reason=f"started after report event {start}", cursor=_Cursor(start).dump()
            )
        for channel in Channel:
            if alerts.enabled(channel):
                if channel in cursor.said_off:
                    cursor.said_off.remove(channel)
            elif channel not in cursor.said_off:
                message = f"{channel} alerts are off: not configured ({_variables(channel)})"
                context.log.warning(message)
                log.warning("%s: %s", name, message)
                cursor.said_off.append(channel)
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=report, after_storage_id=cursor.after),
            limit=batch,
            ascending=True,
        ).records
        sent = unsent = 0
        for record in records:
            summary = ReportSummary.from_metadata(record.asset_materialization.metadata)
            try:
                metadata = record.asset_materialization.metadata
                for alert in rule(record.partition_key or "", record.run_id, summary, metadata):
                    if alerts.send(alert):
                        sent += 1
                        context.log.info(f"sent {alert.channel} {alert.summary()}")
                    else:
                        unsent += 1
            except Exception as exc:  # noqa: BLE001 - retried next tick; the tick shows why
                context.log.error(
                    f"alert delivery failed for report event {record.storage_id}: "
                    f"{type(exc).__name__}; retrying on the next tick"
                )
                break
            cursor.after = record.storage_id
        return dg.SensorResult(
            skip_reason=f"{len(records)} reports: {sent} alerts sent, "
            f"{unsent} not sent (channel off)",
            cursor=cursor.dump(),
        )

    return _alert_sensor


def _variables(channel: Channel) -> str:
    if channel is Channel.PAGERDUTY:
        return f"{PAGERDUTY_ROUTING_KEY} unset"
    return f"{SLACK_TOKEN} / {SLACK_CHANNEL} unset"
