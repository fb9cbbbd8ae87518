"""Local stand-in for the identity service (Launchpad), served over HTTP by ``scripts/stack.sh``.

Same contract as production, so the local stack and the tests run the production client
(``HttpIdentityDirectory``) for PRD §9 owner resolution (SPEC rule 3: CRM creator email →
SSO uuid)::

    GET /private/users?company_sso_id=<uuid>&emails=a@x,b@y
    Authorization: <NOTES_PIPELINE_IDENTITY_TOKEN>        (only when a token is configured)
    200 {"data": [{"email": "a@x", "sso_id": "..."}]}     known users only, emails lowercased
    400 company_sso_id missing or too many emails; 401 token missing/wrong; 503 database down

    GET /healthz    200 {"status": "ok"} when the database answers (no token needed)

Data: table ``sso_users`` (``notes_pipeline/identity_schema.sql``) of the database named by
``NOTES_PIPELINE_IDENTITY_DSN``; a missing table is an empty directory. Run::

    NOTES_PIPELINE_IDENTITY_DSN=... [NOTES_PIPELINE_IDENTITY_TOKEN=...] \\
        python -m devtools.identity_service --host 127.0.0.1 --port 15580

The DSN and token are read from the environment only (never argv, which ``ps`` shows).
"""

from __future__ import annotations

import argparse
import hmac
import os
import sys

import psycopg2
import psycopg2.errors
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

DSN_VAR = "NOTES_PIPELINE_IDENTITY_DSN"
TOKEN_VAR = "NOTES_PIPELINE_IDENTITY_TOKEN"
MAX_EMAILS = 1000

_LOOKUP_SQL = (
    "SELECT lower(email), sso_id FROM sso_users "
    "WHERE company_sso_id = %s AND lower(email) = ANY(%s) ORDER BY 1"
)


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def create_app(dsn: str, auth_token: str | None = None) -> Starlette:
    """The Starlette app answering the identity contract from ``sso_users`` at ``dsn``.

    ``auth_token``: when set, ``/private/users`` requires an ``Authorization`` header equal to
    it (compared in constant time) and answers 401 otherwise. One short-lived PostgreSQL
    connection per request (sync endpoints run in Starlette's thread pool)."""

    def lookup(company_sso_id: str, emails: list[str]) -> list[dict[str, str]]:
        conn = psycopg2.connect(dsn, connect_timeout=5)
        try:
            conn.set_session(readonly=True, autocommit=True)
            with conn.cursor() as cur:
                try:
                    cur.execute(_LOOKUP_SQL, (company_sso_id, emails))
                    rows = cur.fetchall()
                except psycopg2.errors.UndefinedTable:
                    rows = []
        finally:
            conn.close()
        return [{"email": email, "sso_id": sso_id} for email, sso_id in rows]

    def users(request: Request) -> JSONResponse:
        if auth_token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), auth_token.encode()):
                return _error(401, "unauthorized", **{"WWW-Authenticate": "Bearer"})
        company_sso_id = request.query_params.get("company_sso_id", "").strip()
        if not company_sso_id:
            return _error(400, "company_sso_id is required")
        raw = request.query_params.get("emails", "")
        emails = sorted({e.strip().lower() for e in raw.split(",") if e.strip()})
        if len(emails) > MAX_EMAILS:
            return _error(400, f"at most {MAX_EMAILS} emails per request")
        if not emails:
            return JSONResponse({"data": []})
        try:
            return JSONResponse({"data": lookup(company_sso_id, emails)})
        except psycopg2.Error as exc:
            return _error(503, f"identity database unavailable ({type(exc).__name__})")

    def healthz(request: Request) -> JSONResponse:
        try:
            conn = psycopg2.connect(dsn, connect_timeout=5)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
            finally:
                conn.close()
        except psycopg2.Error as exc:
            return _error(503, f"identity database unavailable ({type(exc).__name__})")
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/private/users", users, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Serve the stand-in with uvicorn until SIGTERM/SIGINT. DSN (required) and token
    (optional) from the environment; exits 2 when the DSN is missing or unusable."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    dsn = os.environ.get(DSN_VAR, "").strip()
    if not dsn:
        print(f"identity_service: {DSN_VAR} is not set", file=sys.stderr)
        return 2
    try:  # fail at start-up, not on the first request, when the database is unreachable
        psycopg2.connect(dsn, connect_timeout=10).close()
    except psycopg2.Error as exc:
        print(f"identity_service: cannot connect to {DSN_VAR}: {exc}", file=sys.stderr)
        return 2
    token = os.environ.get(TOKEN_VAR) or None
    uvicorn.run(
        create_app(dsn, token),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
