"""The HTTP monitor API (PRD §9 row 9, §8 shapes): ``GET <route>?cid=`` for each family that
names a ``StatusAssets.route`` (contact notes: ``/private/notes/migration/status``), on
Starlette, served by uvicorn (``notes-migration serve-status``).

* 200: ``prd_monitor_json`` of the CID (``core.status``), read from the Dagster instance;
* 400 ``CID_REQUIRED`` without ``?cid=``; 404 ``CID_NOT_FOUND`` for a CID that is not a
  registered partition; 401 (``WWW-Authenticate: Basic``) without the right credentials.

Errors use the contact-service shape ``{"error": CODE, "message": ..., "details": {}}``.
Internal S2S / Ops only (PRD §8 "Access"): every route requires HTTP Basic auth, compared in
constant time; ``STATUS_USER`` / ``STATUS_PASSWORD`` are required to build the app.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping

import dagster as dg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from notes_pipeline.core.partitions import cid_partitions
from notes_pipeline.core.status import StatusAssets, cid_status, prd_monitor_json

STATUS_USER = "NOTES_PIPELINE_STATUS_USER"
STATUS_PASSWORD = "NOTES_PIPELINE_STATUS_PASSWORD"
REALM = "notes-migration"


class MissingCredentials(ValueError):
    """The monitor API was asked to start without its Basic-auth credentials."""


def credentials_from_env(environ: Mapping[str, str]) -> tuple[str, str]:
    """``(user, password)`` from ``NOTES_PIPELINE_STATUS_USER`` / ``_PASSWORD``. Raises
    ``MissingCredentials`` naming each variable that is unset or empty (the server refuses to
    start without both)."""
    missing = [name for name in (STATUS_USER, STATUS_PASSWORD) if not environ.get(name, "")]
    if missing:
        raise MissingCredentials(
            "the status API needs HTTP Basic credentials; not set: " + ", ".join(missing)
        )
    return environ[STATUS_USER], environ[STATUS_PASSWORD]


def _error(status_code: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse(
        {"error": code, "message": message, "details": {}},
        status_code=status_code,
        headers=headers or None,
    )


def authorized(header: str | None, user: str, password: str) -> bool:
    """True when ``header`` (an ``Authorization`` value) is Basic with exactly ``user`` and
    ``password`` (constant-time comparison of both)."""
    if not header or not header.lower().startswith("basic "):
        return False
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    given_user, sep, given_password = decoded.partition(":")
    user_ok = secrets.compare_digest(given_user.encode(), user.encode())
    password_ok = secrets.compare_digest(given_password.encode(), password.encode())
    return bool(sep) and user_ok and password_ok


def create_app(
    instance: dg.DagsterInstance,
    routes: Mapping[str, StatusAssets],
    *,
    user: str,
    password: str,
) -> Starlette:
    """The Starlette app: one ``GET`` route per ``routes`` entry (path → the family's
    ``StatusAssets``), all behind Basic auth. Raises ``MissingCredentials`` when ``user`` or
    ``password`` is empty."""
    if not user or not password:
        raise MissingCredentials("the status API needs a non-empty user and password")

    def endpoint(assets: StatusAssets):
        def status(request: Request) -> JSONResponse:
            if not authorized(request.headers.get("authorization"), user, password):
                return _error(
                    401,
                    "UNAUTHORIZED",
                    "HTTP Basic credentials required",
                    **{"WWW-Authenticate": f'Basic realm="{REALM}"'},
                )
            cid = request.query_params.get("cid", "").strip()
            if not cid:
                return _error(400, "CID_REQUIRED", "query parameter cid is required")
            if cid not in instance.get_dynamic_partitions(cid_partitions.name):
                return _error(404, "CID_NOT_FOUND", f"CID {cid} is not a registered partition")
            return JSONResponse(prd_monitor_json(cid_status(instance, cid, assets)))

        return status

    return Starlette(
        routes=[
            Route(path, endpoint(assets), methods=["GET"], name=assets.family)
            for path, assets in routes.items()
        ]
    )


def status_routes(families: list[StatusAssets]) -> dict[str, StatusAssets]:
    """Route path → ``StatusAssets`` of each family that names a route."""
    return {assets.route: assets for assets in families if assets.route}
