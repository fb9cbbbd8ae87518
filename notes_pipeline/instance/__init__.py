"""Dagster instance parts referenced from ``dagster.yaml``: instance class, storage, run launcher.

``instance.NotesPipelineInstance`` (the backfill daemon's loop interval from ``dagster.yaml``),
``storage.PooledPostgresStorage`` (dagster-postgres with pooled connections) and
``run_launcher.PreforkRunLauncher`` (run workers forked from ``run_worker_zygote``) rely on
private Dagster APIs pinned to Dagster 1.13; ``notes_pipeline_tests/test_private_dagster_apis.py``
names the one that changed (``test_instance_class.py``: the backfill loop). ``dagster.stock.yaml``
is the same instance without them (stock dagster-postgres and ``DefaultRunLauncher``);
``docs/INSTANCE.md`` says when and how to switch.
"""
