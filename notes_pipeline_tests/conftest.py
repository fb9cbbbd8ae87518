"""Shared test setup: the local stack's environment and session-wide clients.

At import, ``.stack/env`` (written by ``bash scripts/stack.sh up``) is loaded into
``os.environ`` for every key that is not already set. Without it the test session fails
loudly: tests never silently skip the stack.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import psycopg2
import pytest
from pymongo import MongoClient

from notes_pipeline.envfile import read_env_file, stack_env_file

REPO_ROOT = Path(__file__).resolve().parent.parent
STACK_ENV_FILE = stack_env_file(REPO_ROOT)


if not STACK_ENV_FILE.is_file():
    raise RuntimeError(
        f"{STACK_ENV_FILE} not found: the local stack is not up. "
        "Run `bash scripts/stack.sh up` (or `make test`) first."
    )

STACK_ENV: dict[str, str] = read_env_file(STACK_ENV_FILE)
#: keys this conftest put into os.environ (tests that spawn stack.sh remove them again)
LOADED_FROM_STACK_ENV: frozenset[str] = frozenset(k for k in STACK_ENV if k not in os.environ)
for _key in LOADED_FROM_STACK_ENV:
    os.environ[_key] = STACK_ENV[_key]


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    """The effective stack settings (.stack/env overridden by the real environment)."""
    return {key: os.environ.get(key, value) for key, value in STACK_ENV.items()}


@pytest.fixture(scope="session")
def pre_stack_environ() -> dict[str, str]:
    """os.environ without the keys this conftest loaded from .stack/env (for subprocesses
    that must see the caller's real environment, e.g. scripts/stack.sh)."""
    return {k: v for k, v in os.environ.items() if k not in LOADED_FROM_STACK_ENV}


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
