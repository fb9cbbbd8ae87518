"""IdentityDirectory: CRM user email → SSO uuid (Launchpad), batched and cached per run.

PRD §9 owner resolution / SPEC rule 3: a note's owner is its CRM creator's email looked up
here; a miss or a lookup error leaves ``owner_id`` null with a legacy label. Which
implementation a deployment uses is chosen by environment (``resources/selection.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg
import httpx
import psycopg2
from pydantic import Field, PrivateAttr

from notes_pipeline.core.resources.tls import client_ssl_context


class IdentityLookupError(Exception):
    """The identity service could not answer; owners fall back to labels.

    The message is the failure kind only (``HTTP 401``, ``ConnectTimeout``, ...), never
    emails or ids."""


class IdentityDirectory(dg.ConfigurableResource):
    """Resolves emails to SSO uuids for one company; unknown emails are simply absent."""

    _cache: dict[tuple[str, str], str | None] = PrivateAttr(default_factory=dict)

    def resolve(self, company_sso_id: str, emails: Iterable[str]) -> dict[str, str]:
        """``{lowercased email: sso_id}`` for the emails of ``company_sso_id`` the directory
        knows (blank emails ignored, answers cached per resource instance, misses too).
        Raises ``IdentityLookupError`` when the directory cannot be asked."""
        wanted = sorted({e.strip().lower() for e in emails if e and e.strip()})
        missing = [e for e in wanted if (company_sso_id, e) not in self._cache]
        if missing:
            found = self._lookup(company_sso_id, missing)
            for email in missing:
                self._cache[(company_sso_id, email)] = found.get(email)
        return {e: sso for e in wanted if (sso := self._cache.get((company_sso_id, e))) is not None}

    def _lookup(self, company_sso_id: str, emails: list[str]) -> dict[str, str]:
        raise NotImplementedError

    def with_timeout(self, timeout_s: float) -> IdentityDirectory:
        """This directory with each call bounded by ``timeout_s`` seconds, sharing this one's
        cache (SPEC-activity-logs §4.4: the activity-log family sets 3 s). Directories without
        a network timeout return themselves."""
        return self


class PostgresIdentityDirectory(IdentityDirectory):
    """Reads table ``sso_users`` (identity_schema.sql) of the stack's ``identity`` database
    directly. Local-only fallback; the stack serves the same table over HTTP
    (``devtools/identity_service.py``), so the default local path is ``HttpIdentityDirectory``."""

    dsn: str

    def _lookup(self, company_sso_id: str, emails: list[str]) -> dict[str, str]:
        try:
            with psycopg2.connect(self.dsn) as conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT lower(email), sso_id FROM sso_users "
                    "WHERE company_sso_id = %s AND lower(email) = ANY(%s)",
                    (company_sso_id, emails),
                )
                return dict(cur.fetchall())
        except psycopg2.Error as exc:
            raise IdentityLookupError(type(exc).__name__) from exc


class HttpIdentityDirectory(IdentityDirectory):
    """The identity service: ``GET {root_url}/private/users?company_sso_id=&emails=a,b``.

    Answer ``{"data": [{"email": ..., "sso_id": ...}, ...]}`` (a bare list is accepted too);
    at most ``batch_size`` emails per request. ``auth_token`` is sent verbatim as the
    ``Authorization`` header (``Bearer …``/``Basic …``). Any transport error, non-2xx status
    or unparsable body raises ``IdentityLookupError``."""

    root_url: str
    auth_token: str | None = Field(default=None, description="Authorization header, if any.")
    batch_size: int = 100
    timeout_s: float = 10.0

    _transport: httpx.BaseTransport | None = PrivateAttr(default=None)

    def with_transport(self, transport: httpx.BaseTransport) -> HttpIdentityDirectory:
        """Route requests through ``transport`` (tests, proxies); returns self."""
        self._transport = transport
        return self

    def with_timeout(self, timeout_s: float) -> HttpIdentityDirectory:
        """A copy whose requests time out after ``timeout_s`` seconds; the transport and the
        answer cache are shared with this instance."""
        return self.model_copy(update={"timeout_s": float(timeout_s)})

    def _lookup(self, company_sso_id: str, emails: list[str]) -> dict[str, str]:
        headers = {"Authorization": self.auth_token} if self.auth_token else {}
        found: dict[str, str] = {}
        try:
            with httpx.Client(
                base_url=self.root_url,
                timeout=self.timeout_s,
                headers=headers,
                transport=self._transport,
                verify=client_ssl_context(),
            ) as client:
                for start in range(0, len(emails), self.batch_size):
                    chunk = emails[start : start + self.batch_size]
                    response = client.get(
                        "/private/users",
                        params={"company_sso_id": company_sso_id, "emails": ",".join(chunk)},
                    )
                    response.raise_for_status()
                    body = response.json()
                    users = body if isinstance(body, list) else body.get("data") or []
                    for user in users:
                        if user.get("email") and user.get("sso_id"):
                            found[user["email"].strip().lower()] = user["sso_id"]
        except httpx.HTTPStatusError as exc:
            raise IdentityLookupError(f"HTTP {exc.response.status_code}") from exc
        except (httpx.HTTPError, ValueError, AttributeError, TypeError) as exc:
            raise IdentityLookupError(type(exc).__name__) from exc
        return found
