"""The tests' own corner of the local stack: never the demo's instance, CRM, CDP or buckets.

``scripts/stack.sh up`` writes the demo's settings to ``.stack/env``. Tests run with
``isolated_environment(stack_env, ...)`` instead: their own Dagster instance
(``.stack/test/<session>/dagster_home`` on the ``dagster_t<session>`` database), CRM database
(``crm_t<session>``), CDP database (``cdp_t<session>``) and buckets (``*-t<session>``), one
set per test session. ``provision`` creates them at session start and ``teardown`` drops
them at the end, so sessions never share state, even when they run at the same time, and
``make demo`` afterwards sees only its own data.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import boto3
import psycopg2
from psycopg2 import sql
from pymongo import MongoClient

PUBLIC_READ = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "PublicRead",
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::{bucket}/*",
        }
    ],
}


def dagster_postgres_url(db_name: str | None = None) -> str:
    """SQLAlchemy URL of the session's Dagster database from the DAGSTER_PG_* variables, as
    ``dagster.yaml`` builds it (or of ``db_name`` on the same server)."""
    from dagster_postgres.utils import pg_url_from_config

    return pg_url_from_config(
        {
            "postgres_db": {
                "hostname": os.environ["DAGSTER_PG_HOST"],
                "port": int(os.environ["DAGSTER_PG_PORT"]),
                "username": os.environ["DAGSTER_PG_USER"],
                "password": os.environ["DAGSTER_PG_PASSWORD"],
                "db_name": db_name or os.environ["DAGSTER_PG_DB"],
                "scheme": "postgresql+psycopg2",
            }
        }
    )


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


def isolated_environment(
    stack_env: dict[str, str], repo_root: Path, session: str
) -> dict[str, str]:
    """The variables that point one test session (``session``: a short lower-case hex id) at
    its own databases, buckets and instance."""
    crm_db = urlsplit(stack_env["NOTES_PIPELINE_CRM_DSN"]).path.lstrip("/") + f"_t{session}"
    crm_bucket = stack_env["NOTES_PIPELINE_CRM_BUCKET"] + f"-t{session}"
    base_url = stack_env["NOTES_PIPELINE_CRM_ATTACHMENT_BASE_URL"]
    stack_dir = Path(stack_env["DAGSTER_HOME"]).parent
    return {
        "DAGSTER_HOME": str(stack_dir / "test" / session / "dagster_home"),
        "DAGSTER_PG_DB": stack_env["DAGSTER_PG_DB"] + f"_t{session}",
        "NOTES_PIPELINE_CRM_DSN": _with_database(stack_env["NOTES_PIPELINE_CRM_DSN"], crm_db),
        "NOTES_PIPELINE_CRM_ADMIN_DSN": _with_database(
            stack_env["NOTES_PIPELINE_CRM_ADMIN_DSN"], crm_db
        ),
        "NOTES_PIPELINE_MONGO_DB": stack_env["NOTES_PIPELINE_MONGO_DB"] + f"_t{session}",
        "NOTES_PIPELINE_CRM_BUCKET": crm_bucket,
        "NOTES_PIPELINE_CDP_BUCKET": stack_env["NOTES_PIPELINE_CDP_BUCKET"] + f"-t{session}",
        "NOTES_PIPELINE_CRM_ATTACHMENT_BASE_URL": base_url.rsplit("/", 1)[0] + "/" + crm_bucket,
    }


def drop_database(cur, name: str) -> None:
    """``DROP DATABASE IF EXISTS name`` on an autocommit cursor, its client connections ended
    first. Not ``WITH (FORCE)``: that fails (InsufficientPrivilege) when an autovacuum worker is
    in the database, a process of no role a non-superuser may signal, whereas a plain DROP
    stops the worker itself and waits up to 5 s for the ended backends to exit."""
    cur.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
        " AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
        (name,),
    )
    cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def _recreate_database(admin_dsn: str, name: str, *, reader: str | None = None) -> None:
    conn = psycopg2.connect(admin_dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            drop_database(cur, name)
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            cur.execute(
                sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name))
            )
            if reader:
                cur.execute(
                    sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                        sql.Identifier(name), sql.Identifier(reader)
                    )
                )
    finally:
        conn.close()
    if reader:
        conn = psycopg2.connect(_with_database(admin_dsn, name))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
                cur.execute(
                    sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(reader))
                )
                cur.execute(
                    sql.SQL(
                        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {}"
                    ).format(sql.Identifier(reader))
                )
        finally:
            conn.close()


def _s3(stack_env: dict[str, str]):
    return boto3.client(
        "s3",
        endpoint_url=stack_env["NOTES_PIPELINE_S3_ENDPOINT_URL"],
        aws_access_key_id=stack_env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack_env["AWS_SECRET_ACCESS_KEY"],
        region_name=stack_env["AWS_DEFAULT_REGION"],
    )


def provision(stack_env: dict[str, str], env: dict[str, str], repo_root: Path) -> None:
    """Create the session's databases, buckets and DAGSTER_HOME (the demo's are not touched)."""
    admin_dsn = stack_env["NOTES_PIPELINE_CRM_ADMIN_DSN"]
    reader = urlsplit(stack_env["NOTES_PIPELINE_CRM_DSN"]).username
    _recreate_database(
        admin_dsn, urlsplit(env["NOTES_PIPELINE_CRM_DSN"]).path.lstrip("/"), reader=reader
    )
    _recreate_database(admin_dsn, env["DAGSTER_PG_DB"])
    home = Path(env["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    link = home / "dagster.yaml"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(repo_root / "dagster.yaml")
    with MongoClient(stack_env["NOTES_PIPELINE_MONGO_URI"], serverSelectionTimeoutMS=10_000) as c:
        c.drop_database(env["NOTES_PIPELINE_MONGO_DB"])
    s3 = _s3(stack_env)
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in (env["NOTES_PIPELINE_CRM_BUCKET"], env["NOTES_PIPELINE_CDP_BUCKET"]):
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)
    crm_bucket = env["NOTES_PIPELINE_CRM_BUCKET"]
    policy = json.dumps(PUBLIC_READ).replace("{bucket}", crm_bucket)
    s3.put_bucket_policy(Bucket=crm_bucket, Policy=policy)


def teardown(stack_env: dict[str, str], env: dict[str, str]) -> None:
    """Drop what ``provision`` created (best effort: a stopped stack leaves nothing to drop)."""
    admin_dsn = stack_env["NOTES_PIPELINE_CRM_ADMIN_DSN"]
    conn = psycopg2.connect(admin_dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for name in (
                urlsplit(env["NOTES_PIPELINE_CRM_DSN"]).path.lstrip("/"),
                env["DAGSTER_PG_DB"],
            ):
                drop_database(cur, name)
    finally:
        conn.close()
    with MongoClient(stack_env["NOTES_PIPELINE_MONGO_URI"], serverSelectionTimeoutMS=10_000) as c:
        c.drop_database(env["NOTES_PIPELINE_MONGO_DB"])
    s3 = _s3(stack_env)
    for bucket in (env["NOTES_PIPELINE_CRM_BUCKET"], env["NOTES_PIPELINE_CDP_BUCKET"]):
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        s3.delete_bucket(Bucket=bucket)
    shutil.rmtree(Path(env["DAGSTER_HOME"]).parent, ignore_errors=True)


def demo_snapshot(stack_env: dict[str, str]) -> dict[str, object]:
    """What the demo owns and a test must never change: its instance's partitions and events,
    its CRM's organizations and its CDP notes count."""
    snapshot: dict[str, object] = {}
    dagster_dsn = (
        f"postgresql://{stack_env['DAGSTER_PG_USER']}:{stack_env['DAGSTER_PG_PASSWORD']}"
        f"@{stack_env['DAGSTER_PG_HOST']}:{stack_env['DAGSTER_PG_PORT']}/{stack_env['DAGSTER_PG_DB']}"
    )
    queries = {
        "dagster": (
            dagster_dsn,
            [
                ("events", "SELECT count(*) FROM event_logs"),
                ("runs", "SELECT count(*) FROM runs"),
                (
                    "partition_keys",
                    "SELECT coalesce(array_agg(partition ORDER BY partition), '{}') "
                    "FROM dynamic_partitions WHERE partitions_def_name = 'cid'",
                ),
                (
                    "materialized",
                    "SELECT coalesce(json_object_agg(asset_key, n), '{}') FROM ("
                    "SELECT asset_key, count(DISTINCT partition) AS n FROM event_logs "
                    "WHERE dagster_event_type = 'ASSET_MATERIALIZATION' GROUP BY asset_key) m",
                ),
            ],
        ),
        "crm": (
            stack_env["NOTES_PIPELINE_CRM_ADMIN_DSN"],
            [("organizations", "SELECT count(*) FROM organizations")],
        ),
    }
    for name, (dsn, statements) in queries.items():
        try:
            conn = psycopg2.connect(dsn)
        except psycopg2.OperationalError:
            snapshot[name] = "absent"
            continue
        try:
            with conn.cursor() as cur:
                for label, statement in statements:
                    try:
                        cur.execute(statement)
                        snapshot[f"{name}.{label}"] = cur.fetchone()[0]
                    except psycopg2.errors.UndefinedTable:
                        conn.rollback()
                        snapshot[f"{name}.{label}"] = "absent"
        finally:
            conn.close()
    with MongoClient(stack_env["NOTES_PIPELINE_MONGO_URI"], serverSelectionTimeoutMS=10_000) as c:
        snapshot["cdp.contact_notes"] = c[stack_env["NOTES_PIPELINE_MONGO_DB"]][
            "contact_notes"
        ].count_documents({})
    return snapshot
