"""The code location: every family's definitions merged, the CID discovery sensor, and the
resources this process's environment selects (``notes_pipeline.deployment``)."""

import os

import dagster as dg

from notes_pipeline.activity_logs import definitions as activity_logs
from notes_pipeline.contact_notes import definitions as contact_notes
from notes_pipeline.core.alerts import alert_channels_from_env
from notes_pipeline.core.discovery import cid_discovery_sensor
from notes_pipeline.deployment import resources_for_environment

#: the families of this code location, each with its ``defs`` and ``STATUS_ASSETS``
FAMILIES = (contact_notes, activity_logs)


def env_resources() -> dict[str, object]:
    """The resources this process's environment selects (``NOTES_PIPELINE_ENV`` and the
    per-resource variables; see ``notes_pipeline.deployment``). Raises
    ``ResourceSelectionError`` naming each required variable that is missing."""
    return resources_for_environment(os.environ)


defs = dg.Definitions.merge(
    *(family.defs for family in FAMILIES),
    dg.Definitions(
        sensors=[cid_discovery_sensor],
        # PRD §12 alert channels (core.alerts): each on only when its variables are set
        resources={**env_resources(), "alerts": alert_channels_from_env(os.environ)},
        executor=dg.in_process_executor,
    ),
)
