"""SSRF guard and size-capped, redirect-guarded downloads of CRM attachment URLs.

Plain classes (no Dagster); ``AttachmentStorage`` wraps ``GuardedDownloader``.
The connection goes to the address the guard checked (DNS pinning: the URL host is
replaced by the vetted IP, ``Host`` header and TLS SNI keep the original name), so a
second, different DNS answer cannot steer the request to an internal address.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit

import httpx

from notes_pipeline.reason_codes import (
    ATTACHMENT_DOWNLOAD_FAILED,
    ATTACHMENT_SSRF_BLOCKED,
    ATTACHMENT_TOO_LARGE,
)

Resolver = Callable[..., list[tuple[Any, ...]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Cloud metadata endpoints: blocked even when their host:port is allow-listed.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS / GCP / Azure / OpenStack IMDS
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AttachmentError(Exception):
    """A download refused or failed; ``details`` holds status/exception class, never URLs."""

    def __init__(self, reason_code: str, details: str = "") -> None:
        super().__init__(f"{reason_code}: {details}" if details else reason_code)
        self.reason_code = reason_code
        self.details = details


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address carried by a mapped, 6to4 or NAT64 IPv6 address, if any."""
    if ip.ipv4_mapped or ip.sixtofour:
        return ip.ipv4_mapped or ip.sixtofour
    return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None


def is_public_address(ip: IPAddress) -> bool:
    """False for loopback, private, link-local, multicast, unspecified, reserved, shared."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None and not is_public_address(embedded):
            return False
    blocked = (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
    )
    return ip.is_global and not blocked and ip not in METADATA_ADDRESSES


def _host_port_key(host: str, port: int) -> str:
    """``host:port`` as written in the allow-list (IPv6 in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _split(url: str) -> tuple[SplitResult, str, int]:
    """Validated scheme, lower-cased host and effective port of ``url``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise AttachmentError(ATTACHMENT_SSRF_BLOCKED, "reason=unparsable_url") from exc
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise AttachmentError(ATTACHMENT_SSRF_BLOCKED, f"reason=scheme scheme={scheme[:16]}")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise AttachmentError(ATTACHMENT_SSRF_BLOCKED, "reason=no_host")
    if parts.username is not None or parts.password is not None:
        raise AttachmentError(ATTACHMENT_SSRF_BLOCKED, f"reason=userinfo host={host}")
    return parts, host, port if port is not None else DEFAULT_PORTS[scheme]


def _resolve_checked(
    url: str, allowed_hosts: frozenset[str], resolver: Resolver
) -> tuple[SplitResult, str, int, list[str]]:
    """Apply the guard to ``url``; return its parts, host, port and the vetted addresses."""
    parts, host, port = _split(url)
    allowed = {entry.strip().lower() for entry in allowed_hosts}
    exact = _host_port_key(host, port) in allowed
    bare = f"[{host}]" if ":" in host else host
    if not exact and not (bare in allowed and port == DEFAULT_PORTS[parts.scheme.lower()]):
        raise AttachmentError(ATTACHMENT_SSRF_BLOCKED, f"reason=host_not_allowed host={host}")
    try:
        infos = resolver(host, port, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        details = f"reason=dns exception={type(exc).__name__} host={host}"
        raise AttachmentError(ATTACHMENT_DOWNLOAD_FAILED, details) from exc
    addresses = list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))
    if not addresses:
        raise AttachmentError(ATTACHMENT_DOWNLOAD_FAILED, f"reason=dns_empty host={host}")
    for address in addresses:
        ip = ipaddress.ip_address(address)
        if ip in METADATA_ADDRESSES or (not exact and not is_public_address(ip)):
            details = f"reason=blocked_address host={host} address={ip}"
            raise AttachmentError(ATTACHMENT_SSRF_BLOCKED, details)
    return parts, host, port, addresses


def check_url(
    url: str, allowed_hosts: frozenset[str], resolver: Resolver = socket.getaddrinfo
) -> None:
    """Raise ``AttachmentError(ATTACHMENT_SSRF_BLOCKED)`` unless ``url`` may be fetched.

    http/https only; host (``host`` = default port only, or exact ``host:port``) in
    ``allowed_hosts``; every resolved address public, unless the exact ``host:port`` is
    allow-listed. Metadata addresses are always refused.
    """
    _resolve_checked(url, allowed_hosts, resolver)


class GuardedDownloader:
    """Size-capped downloads through the SSRF guard; safe to share across threads."""

    def __init__(
        self,
        allowed_hosts: frozenset[str],
        max_bytes: int = 25 * 1024 * 1024,
        timeout_s: float = 10.0,
        client: httpx.Client | None = None,
        resolver: Resolver = socket.getaddrinfo,
        deadline_s: float | None = 120.0,
    ) -> None:
        self.allowed_hosts = frozenset(allowed_hosts)
        self.max_bytes = max_bytes
        self.timeout = httpx.Timeout(timeout_s)
        self.deadline_s = deadline_s
        self._resolver = resolver
        self._owns_client = client is None
        # trust_env=False: no proxy from the environment may bypass the pinned address.
        self._client = client or httpx.Client(
            timeout=self.timeout,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )

    def close(self) -> None:
        """Close the connection pool if this instance created it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> GuardedDownloader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def download(self, url: str) -> tuple[bytes, str | None]:
        """GET ``url`` (same-host redirects only, at most 3); return body and content type."""
        deadline = None if self.deadline_s is None else time.monotonic() + self.deadline_s
        current = url
        for _hop in range(MAX_REDIRECTS + 1):
            parts, host, port, addresses = _resolve_checked(
                current, self.allowed_hosts, self._resolver
            )
            result = self._fetch(current, parts, host, addresses[0], deadline)
            if isinstance(result, tuple):
                return result
            target = urljoin(current, result)
            _, next_host, next_port = _split(target)
            if (next_host, next_port) != (host, port):
                details = f"reason=cross_host_redirect host={next_host}"
                raise AttachmentError(ATTACHMENT_SSRF_BLOCKED, details)
            current = target
        raise AttachmentError(
            ATTACHMENT_DOWNLOAD_FAILED, f"reason=too_many_redirects max={MAX_REDIRECTS}"
        )

    def _fetch(
        self, url: str, parts: SplitResult, host: str, address: str, deadline: float | None
    ) -> tuple[bytes, str | None] | str:
        """One pinned GET: the body and content type, or the ``Location`` of a redirect."""
        original = httpx.URL(url)
        extensions = {"sni_hostname": host} if parts.scheme.lower() == "https" else {}
        try:
            with self._client.stream(
                "GET",
                original.copy_with(host=address),
                headers={"Host": original.netloc.decode("ascii"), "Accept-Encoding": "identity"},
                extensions=extensions,
                timeout=self.timeout,
                follow_redirects=False,
            ) as response:
                return self._read(response, deadline)
        except httpx.HTTPError as exc:
            details = f"exception={type(exc).__name__}"
            raise AttachmentError(ATTACHMENT_DOWNLOAD_FAILED, details) from exc

    def _read(
        self, response: httpx.Response, deadline: float | None
    ) -> tuple[bytes, str | None] | str:
        """Status handling and the capped, streamed body read."""
        status = response.status_code
        if status in REDIRECT_STATUSES:
            location = response.headers.get("location")
            if not location:
                raise AttachmentError(ATTACHMENT_DOWNLOAD_FAILED, f"status={status} no_location")
            return location
        if not 200 <= status < 300:
            raise AttachmentError(ATTACHMENT_DOWNLOAD_FAILED, f"status={status}")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            details = f"content_length={declared} max_bytes={self.max_bytes}"
            raise AttachmentError(ATTACHMENT_TOO_LARGE, details)
        body = bytearray()
        for chunk in response.iter_bytes():
            if len(body) + len(chunk) > self.max_bytes:
                details = f"reason=body_over_cap max_bytes={self.max_bytes}"
                raise AttachmentError(ATTACHMENT_TOO_LARGE, details)
            body += chunk
            if deadline is not None and time.monotonic() > deadline:
                raise AttachmentError(ATTACHMENT_DOWNLOAD_FAILED, "reason=deadline")
        return bytes(body), response.headers.get("content-type")
