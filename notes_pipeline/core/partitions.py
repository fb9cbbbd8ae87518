"""One dynamic partition per CRM client account (CID), migrated in its own run."""

import dagster as dg

cid_partitions = dg.DynamicPartitionsDefinition(name="cid")

# A backfill launches one run per CID: the blocking gates, the halt rule and the per-CID run
# lock (dagster.yaml) all work per CID, and one CID's failure never blocks another's load.
# Measured alternatives and costs: BENCHMARKS.md.
ONE_CID_PER_RUN = dg.BackfillPolicy.multi_run(max_partitions_per_run=1)

#: the run tag naming a job run's CID (a run of ``migrate_cid``, a partition from the UI)
PARTITION_TAG = "dagster/partition"
#: the run tags of an asset-backfill run's partition range (one CID: start = end)
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def runs_of_cid(
    instance: dg.DagsterInstance, cid: str, statuses: list[dg.DagsterRunStatus] | None = None
) -> list[dg.RunRecord]:
    """The run records of ``cid``, newest first: job runs tagged with the partition and
    asset-backfill runs whose range is that one CID (the two tags the per-CID run-queue limit
    of dagster.yaml holds)."""
    tagged = instance.get_run_records(
        filters=dg.RunsFilter(tags={PARTITION_TAG: cid}, statuses=statuses)
    )
    ranged = instance.get_run_records(
        filters=dg.RunsFilter(tags={RANGE_START_TAG: cid, RANGE_END_TAG: cid}, statuses=statuses)
    )
    unique = {record.dagster_run.run_id: record for record in [*tagged, *ranged]}
    return sorted(unique.values(), key=lambda r: r.create_timestamp, reverse=True)
