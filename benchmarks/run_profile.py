"""Where a migrate_cid run spends its time: one CID, in process, under cProfile.

Executes job ``migrate_cid`` for one CID with ``execute_in_process`` (in-process executor,
the same resources from the environment, the fs IO manager) against either a PostgreSQL
instance (the storage from dagster.yaml, database ``dagster_profile``, recreated) or an
ephemeral in-memory instance, and prints wall time, events written, and the cProfile time
grouped by layer (Dagster event-log writes incl. new PostgreSQL connections, pickling by
the IO manager, MongoDB, S3/HTTP, CRM PostgreSQL reads, the transform).

Uses the benchmark's CRM data (run benchmarks/full_backfill.py once first); writes to its own
MongoDB database (cdp_profile, contacts copied from the benchmark's) and bucket
(cdp-notes-profile), so it can run while a benchmark runs (it competes for CPU, though).

  .venv/bin/python benchmarks/run_profile.py --cid 2012 [--instance postgres|ephemeral]
      [--batch-size 500] [--attachment-workers 8] [--top 25] [--stock-storage]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import full_backfill as fb  # noqa: E402

LAYERS = {
    # checked in order: the first matching file fragment names the layer
    "pg connect (psycopg2/SCRAM)": ("psycopg2/__init__.py",),
    "dagster storage (sqlalchemy)": ("sqlalchemy/", "dagster_postgres/"),
    "pickle (fs IO manager)": ("pickle", "upath", "fs_io_manager", "io_manager"),
    "mongo (pymongo)": ("pymongo/", "bson/"),
    "s3/http (boto3, httpx)": ("botocore/", "boto3/", "httpx/", "httpcore/", "urllib3/"),
    "transform (nh3, notes_pipeline.transform)": ("nh3", "notes_pipeline/transform/"),
}


def layer_times(stats: pstats.Stats) -> dict[str, float]:
    """Self time per layer (tottime of functions whose file matches the layer)."""
    out = {name: 0.0 for name in LAYERS}
    out["other"] = 0.0
    for (filename, _line, func), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():
        where = f"{filename}:{func}"
        for name, fragments in LAYERS.items():
            if any(f in where for f in fragments):
                out[name] += tottime
                break
        else:
            out["other"] += tottime
    return {k: round(v, 3) for k, v in out.items()}


def cumulative(stats: pstats.Stats, fragment: str) -> float:
    """Largest cumulative time among functions whose name contains ``fragment``."""
    best = 0.0
    for (filename, _line, func), (_cc, _nc, _tt, cumtime, _callers) in stats.stats.items():
        if fragment in f"{filename}:{func}":
            best = max(best, cumtime)
    return round(best, 3)


def copy_contacts(env: dict[str, str], source_db: str, company: str) -> None:
    """The CID's CDP contacts from the benchmark's database into cdp_profile."""
    from pymongo import MongoClient

    from devtools.synthetic.writer import ensure_contact_index

    with MongoClient(env["NOTES_PIPELINE_MONGO_URI"]) as client:
        source = client[source_db]["contacts"]
        target = client[env["NOTES_PIPELINE_MONGO_DB"]]["contacts"]
        docs = list(source.find({"company_sso_id": company}))
        if not docs:
            sys.exit(f"no contacts for {company} in {source_db}: run full_backfill.py first")
        target.delete_many({"company_sso_id": company})
        target.insert_many(docs)
        ensure_contact_index(target)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cid", default="2012")
    ap.add_argument("--instance", choices=("postgres", "ephemeral"), default="postgres")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--attachment-workers", type=int)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--no-profile", action="store_true", help="timing only (no cProfile)")
    ap.add_argument(
        "--stock-storage", action="store_true", help="plain dagster-postgres (NullPool)"
    )
    args = ap.parse_args()

    env = fb.bench_env(fb.stack_env(), argparse.Namespace(shared=False))
    env["DAGSTER_PG_DB"] = "dagster_profile"
    home = fb.BENCH_DIR / "profile_home"
    home.mkdir(parents=True, exist_ok=True)
    yaml_path = home / "dagster.yaml"
    yaml_path.unlink(missing_ok=True)
    if args.stock_storage:
        import yaml

        config = yaml.safe_load((fb.ROOT / "dagster.yaml").read_text())
        config["storage"] = fb.stock_storage(config)
        yaml_path.write_text(yaml.safe_dump(config))
    else:
        yaml_path.symlink_to(fb.ROOT / "dagster.yaml")
    env["DAGSTER_HOME"] = str(home)
    # own MongoDB database and CDP bucket, so a profile never touches a running benchmark
    seeded_db = env["NOTES_PIPELINE_MONGO_DB"]
    env["NOTES_PIPELINE_MONGO_DB"] = "cdp_profile"
    env["NOTES_PIPELINE_CDP_BUCKET"] = "cdp-notes-profile"
    os.environ.update(env)
    fb.ensure_buckets(env)
    by_cid = fb.companies(env, [args.cid])
    copy_contacts(env, seeded_db, by_cid[args.cid])
    fb.clear_targets(env, by_cid)

    cpu0 = time.process_time()
    import dagster as dg

    from notes_pipeline.definitions import defs

    cpu_import = time.process_time() - cpu0

    if args.instance == "postgres":
        fb.ensure_database(env, "dagster_profile", recreate=True)
        instance = dg.DagsterInstance.get()
    else:
        instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("cid", [args.cid])
    cpu0 = time.process_time()
    job = defs.get_job_def("migrate_cid")
    cpu_resolve = time.process_time() - cpu0
    settings = {}
    if args.batch_size:
        settings["batch_size"] = args.batch_size
    if args.attachment_workers:
        settings["attachment_workers"] = args.attachment_workers
    if settings:  # run config replaces the whole resource config, EnvVar-bound fields too
        settings.update(
            enabled_cids=env["NOTES_PIPELINE_ENABLED_CIDS"],
            attachment_allowed_hosts=env["NOTES_PIPELINE_ATTACHMENT_ALLOWED_HOSTS"],
            cdp_proxy_base_url=env["NOTES_PIPELINE_CDP_PROXY_BASE_URL"],
        )
    run_config = {"resources": {"settings": {"config": settings}}} if settings else None

    prof = cProfile.Profile()
    started = time.perf_counter()
    cpu = time.process_time()
    if not args.no_profile:
        prof.enable()
    result = job.execute_in_process(
        partition_key=args.cid, instance=instance, run_config=run_config, raise_on_error=False
    )
    if not args.no_profile:
        prof.disable()
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    events = len(instance.all_logs(result.run_id))
    steps = instance.get_run_step_stats(result.run_id)
    mat = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("cdp_notes_loaded"), asset_partitions=[args.cid]
        ),
        limit=1,
    ).records
    meta = mat[0].asset_materialization.metadata if mat else {}
    print(
        f"cid={args.cid} instance={args.instance} success={result.success} wall={wall:.2f}s "
        f"cpu={cpu:.2f}s events={events} ready={meta.get('source_total')} "
        f"migrated={getattr(meta.get('migrated'), 'value', None)} "
        f"attachments={getattr(meta.get('attachments_copied'), 'value', None)}"
    )
    print(
        f"  process CPU: import dagster+definitions {cpu_import:.2f}s, resolve job "
        f"{cpu_resolve:.2f}s, execute {cpu:.2f}s, whole process so far {time.process_time():.2f}s"
    )
    for step in steps:
        print(f"  step {step.step_key:20s} {step.end_time - step.start_time:6.2f}s")
    if args.no_profile:
        return
    stats = pstats.Stats(prof)
    print("self time by layer (s):", layer_times(stats))
    print(
        "cumulative (s):",
        {
            "store_event": cumulative(stats, "store_event"),
            "psycopg2.connect": cumulative(stats, "psycopg2/__init__.py:connect"),
            "handle_output": cumulative(stats, "handle_output"),
            "load_input": cumulative(stats, "load_input"),
            "load_ready_notes": cumulative(stats, "load_ready_notes"),
            "validation_report": cumulative(stats, "validate.py:validation_report"),
            "normalized_notes": cumulative(stats, "normalize.py:normalized_notes"),
        },
    )
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(args.top)
    print(out.getvalue())


if __name__ == "__main__":
    main()
