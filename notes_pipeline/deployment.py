"""Which resource implementations a deployment gets, chosen by environment variables only.

One variable names the deployment, a few per-resource variables pick the transport; the
code never changes between the local stack and production (issue #9 item 4; the pattern of
dagster-io/dagster ``examples/project_fully_featured``, where one variable picks the
resources of a deployment).

==================================  =====================================================
variable                            meaning
==================================  =====================================================
``NOTES_PIPELINE_ENV``              ``local`` (default) or ``production``
``NOTES_PIPELINE_IDENTITY_URL``     identity service root: ``HttpIdentityDirectory``
                                    (``GET {root}/private/users?company_sso_id=&emails=``).
                                    Required in production. In ``local``, when unset,
                                    ``PostgresIdentityDirectory`` reads
                                    ``NOTES_PIPELINE_IDENTITY_DSN`` directly.
``NOTES_PIPELINE_IDENTITY_TOKEN``   optional; sent verbatim as the ``Authorization`` header
``NOTES_PIPELINE_CRM_SOURCE``       ``postgres`` (default): ``PostgresCrmSource`` on
                                    ``NOTES_PIPELINE_CRM_DSN``; ``http``: ``HttpCrmSource``
                                    on ``NOTES_PIPELINE_CRM_API_URL`` + ``CRM_API_AUTH``
``NOTES_PIPELINE_CRM_AUDIT_DSN``    optional: read-only DSN of the CRM ``audits``, ``users``
                                    and owner tables (SPEC-activity-logs §2 [N22]):
                                    ``crm_audits`` = ``PostgresCrmSource`` on it. Unset or
                                    empty: ``crm_audits`` is ``crm`` (with the HTTP CRM
                                    source: no audits until the DSN is granted, OQ-1)
``NOTES_PIPELINE_MONGO_URI``,       CDP MongoDB and database (required)
``NOTES_PIPELINE_MONGO_DB``
``NOTES_PIPELINE_CDP_BUCKET``       CDP bucket (required)
``NOTES_PIPELINE_S3_ENDPOINT_URL``  optional; unset or empty = AWS
``..._ATTACHMENT_ALLOWED_HOSTS``,   settings (required)
``..._CDP_PROXY_BASE_URL``
``NOTES_PIPELINE_ENABLED_CIDS``     optional; unset or empty = every CID disabled
``..._ACTIVITY_LOGS_ENABLED_CIDS``  the activity-log flag; same form (SPEC-activity-logs [N16])
==================================  =====================================================

Secrets and connection strings reach the resources only as ``dg.EnvVar`` (resolved by Dagster
when a run starts, never stored in config). What is read here is only whether a variable is
set, plus the non-secret switches (``NOTES_PIPELINE_ENV``, ``NOTES_PIPELINE_CRM_SOURCE``) and
whether the optional S3 endpoint is empty.

Missing variables: a declared deployment (``NOTES_PIPELINE_ENV`` set; ``scripts/stack.sh``
writes ``local`` to ``.stack/env``) fails when the code location loads, with one
``ResourceSelectionError`` naming every missing variable. With ``NOTES_PIPELINE_ENV`` unset
(e.g. ``pytest -m "not stack"`` importing the module without any service) nothing is checked
up front and Dagster names the missing variable when a run starts (``dg.EnvVar``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from notes_pipeline.activity_logs.settings import ActivityLogSettings
from notes_pipeline.contact_notes.settings import MigrationSettings
from notes_pipeline.core.resources.crm import CrmSource, HttpCrmSource, PostgresCrmSource
from notes_pipeline.core.resources.identity import (
    HttpIdentityDirectory,
    IdentityDirectory,
    PostgresIdentityDirectory,
)
from notes_pipeline.core.resources.in_memory import (
    InMemoryAttachmentStorage,
    InMemoryCdpMongo,
    InMemoryCrmSource,
    InMemoryIdentityDirectory,
)
from notes_pipeline.core.resources.mongo import CdpMongo
from notes_pipeline.core.resources.storage import AttachmentStorage

ENV = "NOTES_PIPELINE_ENV"
ENVIRONMENTS = ("local", "production")
CRM_SOURCE = "NOTES_PIPELINE_CRM_SOURCE"
CRM_SOURCES = ("postgres", "http")
IDENTITY_URL = "NOTES_PIPELINE_IDENTITY_URL"
IDENTITY_TOKEN = "NOTES_PIPELINE_IDENTITY_TOKEN"
IDENTITY_DSN = "NOTES_PIPELINE_IDENTITY_DSN"
CRM_DSN = "NOTES_PIPELINE_CRM_DSN"
CRM_AUDIT_DSN = "NOTES_PIPELINE_CRM_AUDIT_DSN"
CRM_API_URL = "NOTES_PIPELINE_CRM_API_URL"
CRM_API_AUTH = "CRM_API_AUTH"
S3_ENDPOINT_URL = "NOTES_PIPELINE_S3_ENDPOINT_URL"
ENABLED_CIDS = "NOTES_PIPELINE_ENABLED_CIDS"
ACTIVITY_LOGS_ENABLED_CIDS = "NOTES_PIPELINE_ACTIVITY_LOGS_ENABLED_CIDS"


class ResourceSelectionError(ValueError):
    """The environment does not describe a complete deployment.

    ``missing`` holds the names of the required variables that are unset or empty; the message
    names each of them with the resource that needs it (or the invalid switch value).
    """

    def __init__(self, message: str, missing: tuple[str, ...] = ()):
        super().__init__(message)
        self.missing = missing


class _Requirements:
    """Collects required variables; ``env(name, why)`` returns ``dg.EnvVar(name)``."""

    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ
        self.missing: list[tuple[str, str]] = []

    def env(self, name: str, why: str) -> dg.EnvVar:
        if not self._environ.get(name, "").strip():
            self.missing.append((name, why))
        return dg.EnvVar(name)

    def optional(self, name: str) -> dg.EnvVar | None:
        """``dg.EnvVar(name)`` when the variable is set and non-empty, else None."""
        return dg.EnvVar(name) if self._environ.get(name, "").strip() else None


def _choice(environ: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    value = environ.get(name, "").strip().lower() or allowed[0]
    if value not in allowed:
        raise ResourceSelectionError(
            f"{name}={environ[name]!r} is not one of {', '.join(allowed)} (default {allowed[0]})"
        )
    return value


def _select_identity(environ: Mapping[str, str], req: _Requirements) -> IdentityDirectory:
    """The identity directory for PRD §9 owner resolution (SPEC rule 3: creator email → SSO
    uuid): ``HttpIdentityDirectory`` when ``NOTES_PIPELINE_IDENTITY_URL`` is set; otherwise,
    in ``local`` only, ``PostgresIdentityDirectory`` on ``NOTES_PIPELINE_IDENTITY_DSN``."""
    deployment = _choice(environ, ENV, ENVIRONMENTS)
    if environ.get(IDENTITY_URL, "").strip() or deployment == "production":
        why = "identity: root URL of the identity service"
        if deployment == "production":
            why += f" (required when {ENV}=production; the PostgreSQL directory is local-only)"
        return HttpIdentityDirectory(
            root_url=req.env(IDENTITY_URL, why),
            auth_token=req.optional(IDENTITY_TOKEN),
        )
    return PostgresIdentityDirectory(
        dsn=req.env(
            IDENTITY_DSN,
            f"identity: the local directory's database (or set {IDENTITY_URL} for the service)",
        )
    )


def _select_crm(environ: Mapping[str, str], req: _Requirements) -> CrmSource:
    """``PostgresCrmSource`` (``NOTES_PIPELINE_CRM_SOURCE`` unset or ``postgres``) or
    ``HttpCrmSource`` (``http``: ``NOTES_PIPELINE_CRM_API_URL``, token ``CRM_API_AUTH``)."""
    if _choice(environ, CRM_SOURCE, CRM_SOURCES) == "http":
        return HttpCrmSource(
            base_url=req.env(CRM_API_URL, f"crm ({CRM_SOURCE}=http): CRM API root URL"),
            api_token=req.env(CRM_API_AUTH, f"crm ({CRM_SOURCE}=http): Authorization header"),
        )
    return PostgresCrmSource(dsn=req.env(CRM_DSN, "crm: read-only PostgreSQL DSN of the CRM"))


def _select_crm_audits(environ: Mapping[str, str], req: _Requirements, crm: CrmSource) -> CrmSource:
    """The activity-log family's CRM source (SPEC-activity-logs §2, Decision 11: a direct
    read-only DSN): ``PostgresCrmSource`` on ``NOTES_PIPELINE_CRM_AUDIT_DSN`` [N22], else the
    notes family's ``crm`` when that is PostgreSQL (same DSN). With the HTTP CRM source and no
    audit DSN it is that HTTP source, which has no audits: discovery then finds CIDs by notes
    only and an activity-log run fails ``CRM_EXTRACT_FAILED`` (OQ-1: no grant, no run) —
    the notes family keeps working without the audit grant."""
    audit_dsn = req.optional(CRM_AUDIT_DSN)
    if audit_dsn is not None:
        return PostgresCrmSource(dsn=audit_dsn)
    return crm


def resources_for_environment(
    environ: Mapping[str, str], *, check: bool | None = None
) -> dict[str, object]:
    """The seven resources (``crm``, ``crm_audits``, ``cdp_mongo``, ``attachment_storage``,
    ``identity``, ``settings``, ``activity_log_settings``) for the deployment ``environ``
    describes (see the module table).

    Pure: reads only ``environ`` (no network, no files). Raises ``ResourceSelectionError`` for
    a switch with an unknown value and, when ``check`` (default: ``NOTES_PIPELINE_ENV`` is
    set), naming every required variable that is unset or empty.
    """
    deployment = _choice(environ, ENV, ENVIRONMENTS)
    req = _Requirements(environ)
    crm = _select_crm(environ, req)
    resources: dict[str, object] = {
        "crm": crm,
        "crm_audits": _select_crm_audits(environ, req, crm),
        "cdp_mongo": CdpMongo(
            uri=req.env("NOTES_PIPELINE_MONGO_URI", "cdp_mongo: MongoDB URI"),
            database=req.env("NOTES_PIPELINE_MONGO_DB", "cdp_mongo: database name"),
        ),
        "attachment_storage": AttachmentStorage(
            bucket=req.env("NOTES_PIPELINE_CDP_BUCKET", "attachment_storage: CDP bucket"),
            endpoint_url=req.optional(S3_ENDPOINT_URL),
        ),
        "identity": _select_identity(environ, req),
        "settings": MigrationSettings(
            enabled_cids=req.optional(ENABLED_CIDS) or "",
            attachment_allowed_hosts=req.env(
                "NOTES_PIPELINE_ATTACHMENT_ALLOWED_HOSTS",
                "settings: hosts CRM attachments may be downloaded from",
            ),
            cdp_proxy_base_url=req.env(
                "NOTES_PIPELINE_CDP_PROXY_BASE_URL", "settings: CDP attachment proxy base URL"
            ),
        ),
        # defaults of SPEC-activity-logs; per-run changes in the Launchpad
        "activity_log_settings": ActivityLogSettings(
            enabled_cids=req.optional(ACTIVITY_LOGS_ENABLED_CIDS) or ""
        ),
    }
    if check is None:
        check = ENV in environ
    if check and req.missing:
        lines = "\n".join(f"  {name}  ({why})" for name, why in req.missing)
        raise ResourceSelectionError(
            f"{ENV}={deployment}: required environment variable(s) not set:\n{lines}",
            tuple(name for name, _ in req.missing),
        )
    return resources


def in_memory_resources(
    store: str = "default",
    activity_log_settings: dict[str, Any] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Every resource of the code location, in memory (``settings``: MigrationSettings
    fields; ``activity_log_settings``: ActivityLogSettings fields)."""
    return {
        "crm": InMemoryCrmSource(store=store),
        "crm_audits": InMemoryCrmSource(store=store),
        "cdp_mongo": InMemoryCdpMongo(store=store),
        "attachment_storage": InMemoryAttachmentStorage(store=store),
        "identity": InMemoryIdentityDirectory(store=store),
        "settings": MigrationSettings(**settings),
        "activity_log_settings": ActivityLogSettings(**(activity_log_settings or {})),
    }
