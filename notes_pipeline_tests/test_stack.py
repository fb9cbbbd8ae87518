"""The local stack (scripts/stack.sh): idempotent up, down that stops only its own
processes, a read-only CRM role, and CRM attachments served over plain HTTP.

The down/up lifecycle is exercised on a second, independent stack instance
(NOTES_PIPELINE_STACK_DIR in a temp dir + NOTES_PIPELINE_STACK_PORT_OFFSET), so the stack the
rest of the session uses is never torn down mid-session.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import psycopg2.errors
import pytest

from notes_pipeline.core.envfile import read_env_file

pytestmark = pytest.mark.stack

REPO_ROOT = Path(__file__).resolve().parent.parent
STACK_SH = REPO_ROOT / "scripts" / "stack.sh"
SERVICES = ("postgres", "identity", "s3", "mongo")
BASE_PORTS = (15432, 15580, 15500, 15017)  # postgres, identity stand-in, s3, mongo


def _stack(cmd: str, env: dict[str, str], timeout: int = 900):
    return subprocess.run(
        ["bash", str(STACK_SH), cmd],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _pids(stack_dir: Path) -> dict[str, int]:
    out = {}
    for name in SERVICES:
        f = stack_dir / "pids" / f"{name}.pid"
        if f.exists():
            out[name] = int(f.read_text().split()[0])
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_offset() -> int:
    """A port offset where all of the second stack's ports are free."""
    for offset in range(1000, 5000, 137):
        if all(_port_free(base + offset) for base in BASE_PORTS):
            return offset
    raise RuntimeError("no free port offset for a second stack")


def _main_stack_dir() -> Path:
    return Path(os.environ.get("NOTES_PIPELINE_STACK_DIR", REPO_ROOT / ".stack"))


def test_up_again_is_a_noop_that_keeps_processes(stack_env, pre_stack_environ):
    stack_dir = _main_stack_dir()
    before = _pids(stack_dir)
    assert {"postgres", "identity", "s3"} <= before.keys()
    env_before = (stack_dir / "env").read_text()

    res = _stack("up", pre_stack_environ)
    assert res.returncode == 0, res.stderr
    assert "already running" in res.stderr
    assert _pids(stack_dir) == before
    assert all(_alive(pid) for pid in before.values())
    assert (stack_dir / "env").read_text() == env_before

    status = _stack("status", pre_stack_environ)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "postgres: up" in status.stdout and "s3: up" in status.stdout
    assert "identity: up" in status.stdout


def test_env_file_has_every_setting(demo_stack_env):
    required = {
        "NOTES_PIPELINE_CRM_DSN",
        "NOTES_PIPELINE_CRM_ADMIN_DSN",
        "NOTES_PIPELINE_IDENTITY_DSN",
        "NOTES_PIPELINE_ENV",
        "NOTES_PIPELINE_IDENTITY_URL",
        "NOTES_PIPELINE_IDENTITY_TOKEN",
        "DAGSTER_PG_HOST",
        "DAGSTER_PG_PORT",
        "DAGSTER_PG_USER",
        "DAGSTER_PG_PASSWORD",
        "DAGSTER_PG_DB",
        "NOTES_PIPELINE_MONGO_URI",
        "NOTES_PIPELINE_MONGO_KIND",
        "NOTES_PIPELINE_MONGO_DB",
        "NOTES_PIPELINE_S3_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
        "NOTES_PIPELINE_CRM_BUCKET",
        "NOTES_PIPELINE_CDP_BUCKET",
        "NOTES_PIPELINE_CRM_ATTACHMENT_BASE_URL",
        "NOTES_PIPELINE_ATTACHMENT_ALLOWED_HOSTS",
        "NOTES_PIPELINE_CDP_PROXY_BASE_URL",
        "DAGSTER_HOME",
    }
    assert required <= demo_stack_env.keys()
    assert demo_stack_env["NOTES_PIPELINE_MONGO_KIND"] in {"ferretdb", "mongodb"}
    assert demo_stack_env["NOTES_PIPELINE_CRM_DSN"].startswith("postgresql://crm_reader:")
    assert (
        f"@127.0.0.1:{demo_stack_env['DAGSTER_PG_PORT']}/crm"
        in demo_stack_env["NOTES_PIPELINE_CRM_DSN"]
    )
    assert demo_stack_env["NOTES_PIPELINE_ENV"] == "local"  # a declared deployment: checked on load
    identity_port = int(demo_stack_env["DAGSTER_PG_PORT"]) - 15432 + 15580
    assert demo_stack_env["NOTES_PIPELINE_IDENTITY_URL"] == f"http://127.0.0.1:{identity_port}"
    assert demo_stack_env["NOTES_PIPELINE_IDENTITY_TOKEN"].startswith("Bearer ")
    assert len(demo_stack_env["NOTES_PIPELINE_IDENTITY_TOKEN"]) >= 32 + len("Bearer ")
    dagster_yaml = Path(demo_stack_env["DAGSTER_HOME"]) / "dagster.yaml"
    assert dagster_yaml.resolve() == (REPO_ROOT / "dagster.yaml").resolve()
    # secrets stay out of tracked files
    password = demo_stack_env["DAGSTER_PG_PASSWORD"]
    assert len(password) >= 32
    tracked = subprocess.run(
        ["git", "grep", "-l", "-F", password], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert tracked.stdout == ""


def test_dagster_instance_uses_postgres_and_partition_queue(stack_env):
    code = (
        "import dagster as dg\n"
        "i = dg.DagsterInstance.get()\n"
        "print(type(i.run_storage).__name__, type(i.run_coordinator).__name__)\n"
        "c = i.run_coordinator.get_run_queue_config()\n"
        "print(c.max_concurrent_runs, c.tag_concurrency_limits)\n"
        "print(i.get_runs_count() >= 0)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **stack_env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "PostgresRunStorage QueuedRunCoordinator"
    assert lines[1].startswith("4 ")  # max_concurrent_runs in dagster.yaml
    assert "'dagster/partition'" in lines[1] and "'applyLimitPerUniqueValue': True" in lines[1]
    assert lines[2] == "True"


def test_crm_reader_is_read_only(stack_env, crm_admin_conn):
    table = f"stack_ro_{uuid.uuid4().hex[:8]}"
    admin = crm_admin_conn()
    with admin.cursor() as cur:
        # created by notes_admin AFTER provisioning: readable through default privileges
        cur.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
        cur.execute(f"INSERT INTO {table} VALUES (1, 'a')")
    reader = psycopg2.connect(stack_env["NOTES_PIPELINE_CRM_DSN"])
    try:
        with reader.cursor() as cur:
            cur.execute(f"SELECT v FROM {table}")
            assert cur.fetchall() == [("a",)]
        reader.rollback()
        # even with a read-write transaction the role lacks the privileges
        for sql in (
            f"INSERT INTO {table} VALUES (2, 'b')",
            f"UPDATE {table} SET v = 'x'",
            f"DELETE FROM {table}",
            f"CREATE TABLE {table}_x (id int)",
            f"DROP TABLE {table}",
        ):
            with reader.cursor() as cur:
                cur.execute("SET TRANSACTION READ WRITE")
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cur.execute(sql)
            reader.rollback()
        # read-only by default, too
        with reader.cursor() as cur:
            with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
                cur.execute(f"INSERT INTO {table} VALUES (3, 'c')")
        reader.rollback()
    finally:
        reader.close()
        with admin.cursor() as cur:
            cur.execute(f"DROP TABLE {table}")
    # and it can't even connect to the other databases
    identity_dsn = stack_env["NOTES_PIPELINE_CRM_DSN"].rsplit("/", 1)[0] + "/identity"
    with pytest.raises(psycopg2.OperationalError, match="permission denied"):
        psycopg2.connect(identity_dsn).close()


def test_crm_bucket_serves_objects_over_plain_http(demo_stack_env, s3_client):
    key = f"tests/{uuid.uuid4().hex}/photo.png"
    body = b"\x89PNG\r\n\x1a\n" + os.urandom(64)
    s3_client.put_object(Bucket=demo_stack_env["NOTES_PIPELINE_CRM_BUCKET"], Key=key, Body=body)
    try:
        url = f"{demo_stack_env['NOTES_PIPELINE_CRM_ATTACHMENT_BASE_URL']}/{key}"
        assert url.startswith(
            f"{demo_stack_env['NOTES_PIPELINE_S3_ENDPOINT_URL']}/crm-attachments/"
        )
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=10) as resp:  # no credentials, no signing
            assert resp.status == 200
            assert resp.read() == body
    finally:
        s3_client.delete_object(Bucket=demo_stack_env["NOTES_PIPELINE_CRM_BUCKET"], Key=key)
    buckets = {b["Name"] for b in s3_client.list_buckets()["Buckets"]}
    assert demo_stack_env["NOTES_PIPELINE_CRM_BUCKET"] in buckets
    assert demo_stack_env["NOTES_PIPELINE_CDP_BUCKET"] in buckets


def _assert_identity_stand_in(stack_dir: Path, pid: int) -> None:
    """The stack's identity stand-in answers the production contract on its own port, only
    with the stack's token, and keeps the DSN and token out of its command line."""
    env = read_env_file(stack_dir / "env")
    url = env["NOTES_PIPELINE_IDENTITY_URL"]
    query = f"{url}/private/users?company_sso_id=stack-test&emails=nobody%40example.test"
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(query, timeout=10)
    assert denied.value.code == 401
    request = urllib.request.Request(
        query, headers={"Authorization": env["NOTES_PIPELINE_IDENTITY_TOKEN"]}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert json.loads(resp.read()) == {"data": []}
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    password = urlsplit(env["NOTES_PIPELINE_IDENTITY_DSN"]).password
    assert password and password not in cmdline
    assert env["NOTES_PIPELINE_IDENTITY_TOKEN"].split()[-1] not in cmdline


def test_second_stack_lifecycle_down_stops_only_its_own_processes(tmp_path, pre_stack_environ):
    """up, up (no-op), status, down, down (no-op) on an independent stack instance.

    A decoy process whose command line names every stack binary stays alive, and so does
    the session's main stack: down never kills by name, only the PIDs up recorded.
    """
    main_before = _pids(_main_stack_dir())
    decoy = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; time.sleep(600)",
            "postgres",
            "moto_server",
            "ferretdb",
            "mongod",
            "devtools.identity_service",
            "uvicorn",
        ],
    )
    # tmp_path sits under a 0700 /tmp/pytest-of-<user>: the postgres OS user can't enter it,
    # so this also covers the /var/tmp fallback for the cluster directory.
    stack_dir = tmp_path / "stack"
    offset = _free_offset()
    env = {
        **pre_stack_environ,
        "NOTES_PIPELINE_STACK_DIR": str(stack_dir),
        "NOTES_PIPELINE_STACK_PORT_OFFSET": str(offset),
        "NOTES_PIPELINE_FERRETDB_BACKEND": "postgresql",
    }
    try:
        first = _stack("up", env)
        assert first.returncode == 0, first.stderr
        pids = _pids(stack_dir)
        expected = {"postgres", "identity", "s3"}
        expected |= set() if "external" in first.stderr else {"mongo"}
        assert set(pids) == expected, first.stderr
        assert all(_alive(p) for p in pids.values())
        second_env = (stack_dir / "env").read_text()
        assert f"127.0.0.1:{15432 + offset}" in second_env
        assert f"127.0.0.1:{15500 + offset}" in second_env
        _assert_identity_stand_in(stack_dir, pids["identity"])

        again = _stack("up", env)
        assert again.returncode == 0, again.stderr
        assert _pids(stack_dir) == pids

        status = _stack("status", env)
        assert status.returncode == 0, status.stdout
        assert status.stdout.count(": up") == len(pids)

        down = _stack("down", env)
        assert down.returncode == 0, down.stderr
        assert not any(_alive(p) for p in pids.values()), down.stderr
        assert not list((stack_dir / "pids").glob("*.pid"))
        assert decoy.poll() is None, "down killed an unrelated process"
        assert all(_alive(p) for p in main_before.values()), "down touched the main stack"
        assert _pids(_main_stack_dir()) == main_before

        down_again = _stack("down", env)
        assert down_again.returncode == 0, down_again.stderr
        assert "not running" in down_again.stderr

        status = _stack("status", env)
        assert status.returncode != 0 and "postgres: down" in status.stdout
    finally:
        _stack("destroy", env)
        decoy.kill()
        decoy.wait()
    assert not stack_dir.exists()
