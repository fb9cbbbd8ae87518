"""The code location: every family's definitions merged, the CID discovery sensor, and the
resources this process's environment selects (``notes_pipeline.deployment``)."""

import os

import dagster as dg

from notes_pipeline.contact_notes import definitions as contact_notes
from notes_pipeline.core.discovery import cid_discovery_sensor
from notes_pipeline.deployment import resources_for_environment

#: the families of this code location, each with its ``defs`` and ``STATUS_ASSETS``
FAMILIES = (contact_notes,)


def env_resources() -> dict[str, object]:
    """The resources this process's environment selects (``NOTES_PIPELINE_ENV`` and the
    per-resource variables; see ``notes_pipeline.deployment``). Raises
    ``ResourceSelectionError`` naming each required variable that is missing."""
    return resources_for_environment(os.environ)


defs = dg.Definitions.merge(
    *(family.defs for family in FAMILIES),
    dg.Definitions(
        sensors=[cid_discovery_sensor],
        resources=env_resources(),
        executor=dg.in_process_executor,
    ),
)
