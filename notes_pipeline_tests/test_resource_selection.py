"""Resources are chosen by environment, never by code edits (issue #9 item 4).

The selector (``notes_pipeline.deployment``) is checked as a pure function; the
production identity client is checked over real HTTP against the stack's identity-service
stand-in (``devtools/identity_service.py``); the code location is loaded from a
production-like environment (fake values, no network).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from notes_pipeline.contact_notes.definitions import migrate_cid, migration_assets
from notes_pipeline.core.resources.crm import HttpCrmSource, PostgresCrmSource
from notes_pipeline.core.resources.identity import (
    HttpIdentityDirectory,
    IdentityLookupError,
    PostgresIdentityDirectory,
)
from notes_pipeline.deployment import (
    ResourceSelectionError,
    resources_for_environment,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

#: what every deployment needs besides the CRM and identity choices (fake values)
COMMON = {
    "NOTES_PIPELINE_MONGO_URI": "mongodb://cdp:mongo-secret@mongo.invalid:27017/",
    "NOTES_PIPELINE_MONGO_DB": "cdp",
    "NOTES_PIPELINE_CDP_BUCKET": "cdp-notes",
    "NOTES_PIPELINE_ATTACHMENT_ALLOWED_HOSTS": "crm-files.invalid",
    "NOTES_PIPELINE_CDP_PROXY_BASE_URL": "https://cdp.invalid/attachments",
}
PRODUCTION = {
    **COMMON,
    "NOTES_PIPELINE_ENV": "production",
    "NOTES_PIPELINE_IDENTITY_URL": "https://launchpad.invalid",
    "NOTES_PIPELINE_IDENTITY_TOKEN": "Basic aWQtc2VjcmV0",
    "NOTES_PIPELINE_CRM_SOURCE": "http",
    "NOTES_PIPELINE_CRM_API_URL": "https://crm.invalid",
    "CRM_API_AUTH": "crm-secret",
    "NOTES_PIPELINE_ENABLED_CIDS": "1001,1002",
}
SECRETS = ("mongo-secret", "aWQtc2VjcmV0", "crm-secret", "pg-secret")


def _missing(environ: dict[str, str]) -> ResourceSelectionError:
    with pytest.raises(ResourceSelectionError) as raised:
        resources_for_environment(environ)
    return raised.value


# --------------------------------------------------------------------------- the selector
def test_identity_url_selects_the_http_client_in_local_too():
    environ = {
        **COMMON,
        "NOTES_PIPELINE_CRM_DSN": "postgresql://r:pg-secret@crm.invalid/crm",
        "NOTES_PIPELINE_IDENTITY_URL": "http://127.0.0.1:1",
        "NOTES_PIPELINE_IDENTITY_DSN": "postgresql://a:pg-secret@id.invalid/identity",
    }
    resources = resources_for_environment(environ)
    identity = resources["identity"]
    assert type(identity) is HttpIdentityDirectory
    assert isinstance(identity.root_url, dg.EnvVar)
    assert identity.root_url == "NOTES_PIPELINE_IDENTITY_URL"
    assert identity.auth_token is None  # no token variable: no Authorization header
    assert type(resources["crm"]) is PostgresCrmSource

    with_token = resources_for_environment(
        {**environ, "NOTES_PIPELINE_IDENTITY_TOKEN": "Bearer t"}
    )["identity"]
    assert with_token.auth_token == dg.EnvVar("NOTES_PIPELINE_IDENTITY_TOKEN")


def test_local_without_identity_url_reads_the_identity_database():
    environ = {
        **COMMON,
        "NOTES_PIPELINE_CRM_DSN": "postgresql://r:pg-secret@crm.invalid/crm",
        "NOTES_PIPELINE_IDENTITY_DSN": "postgresql://a:pg-secret@id.invalid/identity",
    }
    for deployment in ({}, {"NOTES_PIPELINE_ENV": "local"}, {"NOTES_PIPELINE_ENV": " Local "}):
        identity = resources_for_environment({**environ, **deployment})["identity"]
        assert type(identity) is PostgresIdentityDirectory
        assert identity.dsn == dg.EnvVar("NOTES_PIPELINE_IDENTITY_DSN")
    without_dsn = {k: v for k, v in environ.items() if k != "NOTES_PIPELINE_IDENTITY_DSN"}
    error = _missing({**without_dsn, "NOTES_PIPELINE_ENV": "local"})
    assert error.missing == ("NOTES_PIPELINE_IDENTITY_DSN",)
    assert "NOTES_PIPELINE_IDENTITY_URL" in str(error)  # the hint: or use the service


def test_production_requires_the_identity_service():
    environ = {k: v for k, v in PRODUCTION.items() if k != "NOTES_PIPELINE_IDENTITY_URL"}
    environ["NOTES_PIPELINE_IDENTITY_DSN"] = "postgresql://a:pg-secret@id.invalid/identity"
    error = _missing(environ)
    assert error.missing == ("NOTES_PIPELINE_IDENTITY_URL",)
    assert "NOTES_PIPELINE_IDENTITY_URL" in str(error) and "production" in str(error)
    assert not any(secret in str(error) for secret in SECRETS)
    # an empty value counts as missing
    assert _missing({**environ, "NOTES_PIPELINE_IDENTITY_URL": " "}).missing == (
        "NOTES_PIPELINE_IDENTITY_URL",
    )


def test_crm_source_variable_picks_the_transport_and_its_variables():
    local = {
        **COMMON,
        "NOTES_PIPELINE_ENV": "local",
        "NOTES_PIPELINE_IDENTITY_URL": "http://127.0.0.1:1",
        "NOTES_PIPELINE_CRM_DSN": "postgresql://r:pg-secret@crm.invalid/crm",
    }
    crm = resources_for_environment(local)["crm"]
    assert type(crm) is PostgresCrmSource and crm.dsn == dg.EnvVar("NOTES_PIPELINE_CRM_DSN")
    assert _missing({k: v for k, v in local.items() if k != "NOTES_PIPELINE_CRM_DSN"}).missing == (
        "NOTES_PIPELINE_CRM_DSN",
    )

    http = {**local, "NOTES_PIPELINE_CRM_SOURCE": "http"}
    error = _missing(http)
    assert error.missing == ("NOTES_PIPELINE_CRM_API_URL", "CRM_API_AUTH")
    crm = resources_for_environment(
        {**http, "NOTES_PIPELINE_CRM_API_URL": "https://crm.invalid", "CRM_API_AUTH": "x"}
    )["crm"]
    assert type(crm) is HttpCrmSource
    assert crm.base_url == dg.EnvVar("NOTES_PIPELINE_CRM_API_URL")
    assert crm.api_token == dg.EnvVar("CRM_API_AUTH")


@pytest.mark.parametrize(
    "variable, value", [("NOTES_PIPELINE_ENV", "staging"), ("NOTES_PIPELINE_CRM_SOURCE", "mysql")]
)
def test_unknown_switch_values_are_rejected_by_name(variable, value):
    error = _missing({**PRODUCTION, variable: value})
    assert variable in str(error) and repr(value) in str(error)


def test_every_missing_variable_is_named_at_once():
    error = _missing({"NOTES_PIPELINE_ENV": "production"})
    assert set(error.missing) == {
        "NOTES_PIPELINE_CRM_DSN",
        "NOTES_PIPELINE_IDENTITY_URL",
        *COMMON,
    }
    assert all(name in str(error) for name in error.missing)


def test_undeclared_environment_defers_missing_variables_to_dagster(monkeypatch):
    """NOTES_PIPELINE_ENV unset (module imported with no stack, e.g. `pytest -m "not stack"`):
    loading works, and starting resources names the missing variable."""
    resources = resources_for_environment({})
    assert type(resources["identity"]) is PostgresIdentityDirectory
    with pytest.raises(ResourceSelectionError):
        resources_for_environment({}, check=True)
    monkeypatch.delenv("NOTES_PIPELINE_CRM_DSN", raising=False)
    with pytest.raises(dg.DagsterInvalidConfigError, match="NOTES_PIPELINE_CRM_DSN"):
        with dg.build_resources({"crm": resources["crm"]}):
            pass


def test_optional_variables_fall_back_to_safe_defaults():
    environ = {k: v for k, v in PRODUCTION.items() if k != "NOTES_PIPELINE_ENABLED_CIDS"}
    resources = resources_for_environment({**environ, "NOTES_PIPELINE_S3_ENDPOINT_URL": ""})
    assert resources["attachment_storage"].endpoint_url is None  # AWS (boto3 rejects "")
    assert resources["settings"].enabled_cids == ""  # every CID disabled
    assert resources_for_environment(
        {**PRODUCTION, "NOTES_PIPELINE_S3_ENDPOINT_URL": "http://s3.invalid"}
    )["attachment_storage"].endpoint_url == dg.EnvVar("NOTES_PIPELINE_S3_ENDPOINT_URL")


# --------------------------------------------------------------------------- production load
def test_definitions_from_a_production_environment_validate(monkeypatch):
    """Selection, Definitions and resource config resolve with fake values; no network (the
    HTTP clients and pymongo connect lazily)."""
    resources = resources_for_environment(PRODUCTION)
    assert not any(secret in repr(resources) for secret in SECRETS)  # only EnvVar names
    defs = dg.Definitions(assets=migration_assets, jobs=[migrate_cid], resources=resources)
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("migrate_cid")

    for name in list(os.environ):
        if name.startswith("NOTES_PIPELINE_") or name == "CRM_API_AUTH":
            monkeypatch.delenv(name)
    for name, value in PRODUCTION.items():
        monkeypatch.setenv(name, value)
    with dg.build_resources(resources) as built:
        assert type(built.identity) is HttpIdentityDirectory
        assert built.identity.root_url == "https://launchpad.invalid"
        assert built.identity.auth_token == "Basic aWQtc2VjcmV0"
        assert type(built.crm) is HttpCrmSource and built.crm.api_token == "crm-secret"
        assert built.cdp_mongo.uri == PRODUCTION["NOTES_PIPELINE_MONGO_URI"]
        assert built.attachment_storage.endpoint_url is None
        assert built.settings.is_enabled("1001") and not built.settings.is_enabled("1003")


def _validate(environ: dict[str, str], dagster_home: Path) -> subprocess.CompletedProcess:
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    dagster_home.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m"]
        + ["notes_pipeline.definitions", "-d", str(REPO_ROOT)],
        cwd=dagster_home,
        env={**base, "DAGSTER_HOME": str(dagster_home), **environ},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_code_location_loads_in_a_production_environment_and_names_what_is_missing(tmp_path):
    ok = _validate(PRODUCTION, tmp_path / "home")
    assert ok.returncode == 0, ok.stderr[-3000:]
    incomplete = {k: v for k, v in PRODUCTION.items() if k != "NOTES_PIPELINE_IDENTITY_URL"}
    failed = _validate(incomplete, tmp_path / "home")
    assert failed.returncode != 0
    output = failed.stdout + failed.stderr  # dagster logs the load error on either
    assert "ResourceSelectionError" in output
    assert "NOTES_PIPELINE_IDENTITY_URL  (identity: root URL" in output


# --------------------------------------------------------------------------- over real HTTP
@pytest.fixture
def seeded_company():
    """A test-unique company in the stack's identity database with two users."""
    company = f"test-selection-{uuid.uuid4().hex}"
    users = {"Owner.One@Example.test": f"sso-{uuid.uuid4()}", "two@example.test": "sso-two"}
    dsn = os.environ["NOTES_PIPELINE_IDENTITY_DSN"]
    schema = (REPO_ROOT / "notes_pipeline" / "identity_schema.sql").read_text()
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(schema)
        for email, sso in users.items():
            cur.execute("INSERT INTO sso_users VALUES (%s, %s, %s)", (company, email, sso))
    try:
        yield company, users
    finally:
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM sso_users WHERE company_sso_id = %s", (company,))


def test_selected_http_client_resolves_through_the_stand_in(seeded_company):
    """The wiring a deployment gets from its environment (here: the stack's), over HTTP."""
    company, users = seeded_company
    resources = resources_for_environment(os.environ)
    assert type(resources["identity"]) is HttpIdentityDirectory
    with dg.build_resources({"identity": resources["identity"]}) as built:
        identity = built.identity
        assert identity.root_url.startswith("http://127.0.0.1:")
        found = identity.resolve(
            company, ["owner.one@EXAMPLE.test", "nobody@example.test", "", "two@example.test"]
        )
        assert found == {
            "owner.one@example.test": users["Owner.One@Example.test"],
            "two@example.test": "sso-two",
        }
        # tenant-scoped: the same emails under another company are unknown
        assert identity.resolve(f"{company}-other", ["two@example.test"]) == {}
    # more emails than one request carries: batches, same answer
    small_batches = HttpIdentityDirectory(
        root_url=os.environ["NOTES_PIPELINE_IDENTITY_URL"],
        auth_token=os.environ["NOTES_PIPELINE_IDENTITY_TOKEN"],
        batch_size=1,
    )
    emails = [f"unknown{i}@example.test" for i in range(3)] + ["TWO@example.test"]
    assert small_batches.resolve(company, emails) == {"two@example.test": "sso-two"}


@pytest.mark.parametrize("token", [None, "Bearer wrong"])
def test_stand_in_refuses_requests_without_the_token(seeded_company, token):
    company, _ = seeded_company
    assert os.environ["NOTES_PIPELINE_IDENTITY_TOKEN"]  # the stack configures one
    directory = HttpIdentityDirectory(
        root_url=os.environ["NOTES_PIPELINE_IDENTITY_URL"], auth_token=token
    )
    with pytest.raises(IdentityLookupError, match="HTTP 401"):
        directory.resolve(company, ["two@example.test"])
