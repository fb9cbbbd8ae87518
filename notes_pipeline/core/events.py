"""Structured events as JSON log lines (PRD §12): ids, codes and counts only, never PII.

Each family declares its events and their allowed properties with ``declare_events``;
``emit`` refuses any property not declared, which keeps names, emails and content out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

_PROPERTIES: dict[str, tuple[str, ...]] = {}
_WARNINGS: set[str] = set()


def declare_events(
    properties: Mapping[str, tuple[str, ...]], *, warnings: Iterable[str] = ()
) -> None:
    """Register event names → allowed property names; ``warnings`` are logged at WARNING."""
    _PROPERTIES.update(properties)
    _WARNINGS.update(warnings)


def event_line(event: str, **properties: Any) -> str:
    """One event as a sorted JSON object. Raises ``KeyError`` for an undeclared event and
    ``ValueError`` for a property the event does not declare."""
    allowed = _PROPERTIES[event]
    unknown = set(properties) - set(allowed)
    if unknown:
        raise ValueError(f"{event} does not carry {sorted(unknown)}")
    return json.dumps({"event": event, **properties}, sort_keys=True, default=str)


def emit(log: logging.Logger | Any, event: str, **properties: Any) -> None:
    """Log one event on ``log`` (a logger or Dagster's ``context.log``): INFO, or WARNING for
    the events declared as warnings (failures, halts)."""
    line = event_line(event, **properties)
    if event in _WARNINGS:
        log.warning(line)
    else:
        log.info(line)


def trigger_label(tags: Mapping[str, str]) -> str:
    """How a run was started, from its tags, without user names or emails (the ``started``
    events' ``triggered_by``): ``backfill:<id>``, ``automation`` or ``manual``."""
    if "dagster/backfill" in tags:
        return f"backfill:{tags['dagster/backfill']}"
    if "dagster/sensor_name" in tags or "dagster/schedule_name" in tags:
        return "automation"
    return "manual"
