"""Registers every CRM account with Person notes or in-scope audits as a CID partition
(idempotent, no deploy). SPEC-activity-logs §15: one partition set for both families, the
union of the CIDs with Person notes and the CIDs owning in-scope audits ([N1], [N2])."""

import logging
from collections.abc import Iterable, Mapping

import dagster as dg

from notes_pipeline.core.parsing import cid_sort_key
from notes_pipeline.core.partitions import cid_partitions
from notes_pipeline.core.resources.crm import CrmExtractError, CrmSource
from notes_pipeline.core.resources.settings import SettingsBase

log = logging.getLogger(__name__)


def discoverable_cids(
    crm: CrmSource,
    crm_audits: CrmSource | None = None,
    auditable_kinds: Mapping[str, str] | None = None,
    exclude: Iterable[str] = (),
) -> list[str]:
    """CIDs with Person notes (``crm``) or in-scope audits (``crm_audits``, types and kinds
    ``auditable_kinds``), in numeric order. ``exclude`` only spares the audit query CIDs
    that need no answer (already registered); they may still be listed through notes. When
    the audits cannot be read (no audit access, grant or table: OQ-1), only notes count."""
    with_notes = set(crm.list_cids_with_person_notes())
    with_audits: set[str] = set()
    if crm_audits is not None and auditable_kinds:
        skip = set(exclude) | with_notes
        try:
            with_audits = set(crm_audits.list_cids_with_audits(auditable_kinds, exclude=skip))
        except NotImplementedError:  # a source without audit access (no audit DSN yet)
            log.info("CRM source without audits: CIDs discovered by Person notes only")
        except CrmExtractError as exc:  # no grant / no table yet (OQ-1): notes keep working
            log.warning(f"audit discovery skipped ({exc}); CIDs discovered by Person notes only")
    return sorted(with_notes | with_audits, key=cid_sort_key)


def new_cids(
    crm: CrmSource,
    instance: dg.DagsterInstance,
    crm_audits: CrmSource | None = None,
    auditable_kinds: Mapping[str, str] | None = None,
) -> list[str]:
    """Discoverable CIDs (``discoverable_cids``) that are not partitions yet."""
    known = set(instance.get_dynamic_partitions(cid_partitions.name))
    found = discoverable_cids(crm, crm_audits, auditable_kinds, exclude=known)
    return [cid for cid in found if cid not in known]


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds a `cid` partition for each CRM account with Person notes or in-scope "
    "audits (activity logs).",
)
def cid_discovery_sensor(
    context: dg.SensorEvaluationContext,
    crm: CrmSource,
    crm_audits: CrmSource,
    activity_log_settings: SettingsBase,
) -> dg.SensorResult:
    """Registers new CIDs; the audit kinds come from the activity-log settings."""
    added = new_cids(
        crm, context.instance, crm_audits, activity_log_settings.discovery_auditable_kinds()
    )
    if not added:
        return dg.SensorResult(skip_reason="no new CIDs")
    context.log.info(f"registering {len(added)} new CIDs")
    return dg.SensorResult(dynamic_partitions_requests=[cid_partitions.build_add_request(added)])
