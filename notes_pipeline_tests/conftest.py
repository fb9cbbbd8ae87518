"""Shared test setup: the local stack's environment, the tests' own corner of it, clients.

Tests marked ``stack`` need the local stack (``bash scripts/stack.sh up``, or ``make test``):
its ``.stack/env`` is loaded into ``os.environ`` for every key not already set, then pointed
at the tests' own Dagster instance, databases and buckets (``isolation.py``), which are
recreated once per session, so tests never touch the demo's. Without ``.stack/env`` the
stack tests fail loudly (never skip); ``pytest -m "not stack"`` runs everything else with no
services at all.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import psycopg2
import pytest
from isolation import demo_snapshot, isolated_environment, provision, teardown
from pymongo import MongoClient

from notes_pipeline.core.envfile import read_env_file, stack_env_file

REPO_ROOT = Path(__file__).resolve().parent.parent
STACK_ENV_FILE = stack_env_file(REPO_ROOT)
STACK_TEST_FILES = frozenset(
    {
        "test_activity_logs_load.py",
        "test_activity_logs_stage1.py",
        "test_cutover.py",
        "test_definitions.py",
        "test_fault_isolation.py",
        "test_keyed_query_indexes.py",
        "test_mongo_features.py",
        "test_mongo_writes.py",
        "test_ops.py",
        "test_pipeline_rules.py",
        "test_pipeline_stage1.py",
        "test_reliability.py",
        "test_resource_selection.py",
        "test_run_launcher.py",
        "test_run_queue.py",
        "test_stack.py",
        "test_synthetic.py",
        "test_ui_browser.py",
        "test_private_dagster_apis.py",
        "test_repair_and_drift.py",
        "test_demo_isolation.py",
    }
)

#: the demo's settings as scripts/stack.sh wrote them (empty when the stack is not up)
STACK_ENV: dict[str, str] = read_env_file(STACK_ENV_FILE) if STACK_ENV_FILE.is_file() else {}
#: the tests' own instance, databases and buckets
SESSION_ID = uuid.uuid4().hex[:8]
TEST_ENV: dict[str, str] = (
    isolated_environment(STACK_ENV, REPO_ROOT, SESSION_ID) if STACK_ENV else {}
)
#: os.environ as the caller gave it (tests that spawn stack.sh hand it on)
CALLER_ENVIRON: dict[str, str] = dict(os.environ)
for _key, _value in STACK_ENV.items():
    os.environ.setdefault(_key, _value)
os.environ.update(TEST_ENV)  # always: a test never writes to the demo's instance or data


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of a stack module ``stack``; run ``demo_untouched`` tests last."""
    for item in items:
        if item.path.name in STACK_TEST_FILES:
            item.add_marker(pytest.mark.stack)
    items.sort(key=lambda item: item.get_closest_marker("demo_untouched") is not None)


@pytest.fixture(scope="session", autouse=True)
def _stack_session(request: pytest.FixtureRequest) -> Iterator[None]:
    """When stack tests are selected: require the stack, snapshot the demo, provision ours."""
    wants_stack = any(item.get_closest_marker("stack") for item in request.session.items)
    if not wants_stack:
        yield
        return
    if not STACK_ENV:
        raise RuntimeError(
            f"{STACK_ENV_FILE} not found: the local stack is not up. "
            "Run `bash scripts/stack.sh up` (or `make test`) first, "
            'or deselect the stack tests with `-m "not stack"`.'
        )
    request.config.stash[DEMO_BEFORE] = demo_snapshot(STACK_ENV)
    provision(STACK_ENV, TEST_ENV, REPO_ROOT)
    yield
    if os.environ.get("NOTES_PIPELINE_KEEP_TEST_DATA") != "1":
        teardown(STACK_ENV, TEST_ENV)


DEMO_BEFORE = pytest.StashKey[dict]()


@pytest.fixture(scope="session")
def demo_before(request: pytest.FixtureRequest) -> dict:
    """The demo's state when this session started (see ``isolation.demo_snapshot``)."""
    return request.config.stash[DEMO_BEFORE]


@pytest.fixture(scope="session")
def demo_stack_env() -> dict[str, str]:
    """The demo's settings, exactly as ``.stack/env`` holds them."""
    return dict(STACK_ENV)


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    """The effective settings of the tests: .stack/env (overridden by the real environment)
    pointed at the tests' own instance, databases and buckets."""
    return {key: os.environ[key] for key in {**STACK_ENV, **TEST_ENV}}


@pytest.fixture(scope="session")
def pre_stack_environ() -> dict[str, str]:
    """os.environ as the caller gave it, before this conftest (for subprocesses that must see
    the caller's real environment, e.g. scripts/stack.sh)."""
    return dict(CALLER_ENVIRON)


@pytest.fixture(scope="session")
def mongo_client(stack_env: dict[str, str]) -> Iterator[MongoClient]:
    client: MongoClient = MongoClient(
        stack_env["NOTES_PIPELINE_MONGO_URI"], serverSelectionTimeoutMS=10_000
    )
    client.admin.command("ping")  # fail here, clearly, when MongoDB is not reachable
    yield client
    client.close()


@pytest.fixture(scope="session")
def mongo_db(mongo_client: MongoClient):
    """A fresh database for this test session (``cdp_test_<hex>``), dropped at the end."""
    name = f"cdp_test_{uuid.uuid4().hex[:12]}"
    db = mongo_client[name]
    yield db
    mongo_client.drop_database(name)


@pytest.fixture(scope="session")
def s3_client(stack_env: dict[str, str]):
    return boto3.client(
        "s3",
        endpoint_url=stack_env["NOTES_PIPELINE_S3_ENDPOINT_URL"],
        aws_access_key_id=stack_env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack_env["AWS_SECRET_ACCESS_KEY"],
        region_name=stack_env["AWS_DEFAULT_REGION"],
    )


@pytest.fixture(scope="session")
def crm_admin_conn(stack_env: dict[str, str]) -> Iterator[Callable[..., object]]:
    """Factory: ``crm_admin_conn(dsn=None)`` -> new psycopg2 connection (notes_admin, crm db
    by default); every connection handed out is closed at session end."""
    conns = []

    def connect(dsn: str | None = None, *, autocommit: bool = True):
        conn = psycopg2.connect(dsn or stack_env["NOTES_PIPELINE_CRM_ADMIN_DSN"])
        conn.autocommit = autocommit
        conns.append(conn)
        return conn

    yield connect
    for conn in conns:
        conn.close()


@pytest.fixture
def db():
    """The CDP database the pipeline writes to (`NOTES_PIPELINE_MONGO_DB`)."""
    from pipeline_harness import cdp_db

    return cdp_db()
