"""One dynamic partition per CRM client account (CID)."""

import dagster as dg

cid_partitions = dg.DynamicPartitionsDefinition(name="cid")
