"""IdentityDirectory: CRM user email → SSO uuid (Launchpad), batched and cached per run."""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg
import httpx
import psycopg2
from pydantic import Field, PrivateAttr


class IdentityLookupError(Exception):
    """The identity service could not answer; owners fall back to labels."""


class IdentityDirectory(dg.ConfigurableResource):
    """Resolves emails to SSO uuids for one company; unknown emails are simply absent."""

    _cache: dict[tuple[str, str], str | None] = PrivateAttr(default_factory=dict)

    def resolve(self, company_sso_id: str, emails: Iterable[str]) -> dict[str, str]:
        wanted = sorted({e.strip().lower() for e in emails if e and e.strip()})
        missing = [e for e in wanted if (company_sso_id, e) not in self._cache]
        if missing:
            found = self._lookup(company_sso_id, missing)
            for email in missing:
                self._cache[(company_sso_id, email)] = found.get(email)
        return {e: sso for e in wanted if (sso := self._cache.get((company_sso_id, e))) is not None}

    def _lookup(self, company_sso_id: str, emails: list[str]) -> dict[str, str]:
        raise NotImplementedError


class PostgresIdentityDirectory(IdentityDirectory):
    """The local stack's directory: table `sso_users` (see identity_schema.sql)."""

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
    """The identity service: `GET {root_url}/private/users?company_sso_id=&emails=a,b`."""

    root_url: str
    auth_token: str | None = Field(default=None, description="Authorization header, if any.")
    batch_size: int = 100
    timeout_s: float = 10.0

    _transport: httpx.BaseTransport | None = PrivateAttr(default=None)

    def with_transport(self, transport: httpx.BaseTransport) -> HttpIdentityDirectory:
        self._transport = transport
        return self

    def _lookup(self, company_sso_id: str, emails: list[str]) -> dict[str, str]:
        headers = {"Authorization": self.auth_token} if self.auth_token else {}
        found: dict[str, str] = {}
        try:
            with httpx.Client(
                base_url=self.root_url,
                timeout=self.timeout_s,
                headers=headers,
                transport=self._transport,
            ) as client:
                for start in range(0, len(emails), self.batch_size):
                    chunk = emails[start : start + self.batch_size]
                    response = client.get(
                        "/private/users",
                        params={"company_sso_id": company_sso_id, "emails": ",".join(chunk)},
                    )
                    response.raise_for_status()
                    body = response.json()
                    for user in body.get("data", body if isinstance(body, list) else []):
                        if user.get("email") and user.get("sso_id"):
                            found[user["email"].strip().lower()] = user["sso_id"]
        except (httpx.HTTPError, ValueError) as exc:
            raise IdentityLookupError(type(exc).__name__) from exc
        return found
