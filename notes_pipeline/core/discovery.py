"""Registers every CID with Person notes in the CRM as a partition (idempotent, no deploy)."""

import dagster as dg

from notes_pipeline.core.partitions import cid_partitions
from notes_pipeline.core.resources.crm import CrmSource


def new_cids(crm: CrmSource, instance: dg.DagsterInstance) -> list[str]:
    """CIDs with Person notes that are not partitions yet."""
    known = set(instance.get_dynamic_partitions(cid_partitions.name))
    return [cid for cid in crm.list_cids_with_person_notes() if cid not in known]


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds a `cid` partition for each CRM account with Person notes.",
)
def cid_discovery_sensor(context: dg.SensorEvaluationContext, crm: CrmSource) -> dg.SensorResult:
    added = new_cids(crm, context.instance)
    if not added:
        return dg.SensorResult(skip_reason="no new CIDs")
    context.log.info(f"registering {len(added)} new CIDs")
    return dg.SensorResult(dynamic_partitions_requests=[cid_partitions.build_add_request(added)])
