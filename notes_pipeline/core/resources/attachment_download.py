"""SSRF guard and capped, deadline-bound, redirect-guarded downloads of CRM attachment URLs.

Plain classes (no Dagster); ``AttachmentStorage`` wraps ``GuardedDownloader``. SPEC
"Loading": host in the allow-list; after DNS, loopback / private / link-local / multicast
(every non-public range) refused unless the exact ``host:port`` is allow-listed; cloud
metadata addresses refused always, in any spelling; same-host redirects only; a 10 s
deadline for the whole download; a size cap on the bytes received and on the bytes
decoded, checked as they arrive.

* One parser: the guard and the request both use ``httpx.URL``; every parse failure is an
  ``AttachmentError``, so a URL the guard accepts is exactly the URL that is fetched.
* DNS pinning: the request goes to the address the guard checked (the URL host is replaced
  by the vetted IP, ``Host`` header and TLS SNI keep the original name), so a second DNS
  answer cannot steer the request elsewhere.
* "Public" is decided by the fixed table ``NON_PUBLIC_NETWORKS`` below, never by
  ``ipaddress``'s ``is_global`` / ``is_private`` (their answers changed between Python
  patch releases, CVE-2024-4032: 3.11.7 calls ``192.0.0.192``, Oracle's metadata
  address, global). IPv4 carried inside IPv6 (mapped, compatible, NAT64, 6to4, Teredo,
  ISATAP) is checked against the same table and the metadata list.
* The body is read raw and ``Content-Encoding`` is decoded here with bounded incremental
  decoders, so peak memory per download is about the cap plus a small constant whatever
  the encoding chain (httpx's own decoders inflate a whole chunk unbounded).
* The deadline spans connect, TLS, request write and every read (headers and body): the
  default transport's network streams cut each socket wait to the time left.
"""

from __future__ import annotations

import contextvars
import io
import ipaddress
import re
import socket
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, NamedTuple

import httpcore
import httpx

from notes_pipeline.core.parsing import ascii_int
from notes_pipeline.core.resources.tls import client_ssl_context
from notes_pipeline.core.vocabulary import AttachmentCode

Resolver = Callable[..., Iterable[Any]]
Clock = Callable[[], float]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
DEFAULT_MAX_BYTES = 25 * 1024 * 1024  # SPEC: size cap, default 25 MiB
DEFAULT_DEADLINE_S = 10.0  # SPEC: 10 s deadline for the whole download
MAX_CONTENT_CODINGS = 4  # longer Content-Encoding chains are refused (each costs a decoder)
DECODE_CHUNK = 64 * 1024  # most bytes one decoder step may produce

_v4 = ipaddress.IPv4Network
_v6 = ipaddress.IPv6Network

# Non-public ranges, fixed here on purpose (see the module docstring). Sources:
# IANA IPv4 Special-Purpose Address Registry
#   https://www.iana.org/assignments/iana-ipv4-special-registry/
# IANA IPv6 Special-Purpose Address Registry
#   https://www.iana.org/assignments/iana-ipv6-special-registry/
# Every row whose "Globally Reachable" is False is listed; rows that are True inside a False
# block (192.0.0.9/32, 192.0.0.10/32, 2001:1::1/128 .. 2001:1::3/128, 2001:3::/32,
# 2001:4:112::/48, 2001:20::/28, 2001:30::/28: anycast, AMT, AS112, ORCHIDv2, DET) are
# deliberately NOT carved out: no attachment host lives there. Added on top: multicast
# (IANA multicast registries), rows marked N/A that are deprecated (6to4 relay anycast,
# IPv4-compatible IPv6), and, from the IANA IPv6 Address Space registry, everything outside
# 2000::/3 Global Unicast except the well-known NAT64 prefix (whose embedded IPv4 decides).
NON_PUBLIC_NETWORKS: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = (
    (_v4("0.0.0.0/8"), "RFC 791 'this network' (incl. 0.0.0.0/32)"),
    (_v4("10.0.0.0/8"), "RFC 1918 private-use"),
    (_v4("100.64.0.0/10"), "RFC 6598 shared address space (CGN)"),
    (_v4("127.0.0.0/8"), "RFC 1122 loopback"),
    (_v4("169.254.0.0/16"), "RFC 3927 link-local"),
    (_v4("172.16.0.0/12"), "RFC 1918 private-use"),
    (_v4("192.0.0.0/24"), "RFC 6890 IETF protocol assignments (incl. /29, .8, .170, .171)"),
    (_v4("192.0.2.0/24"), "RFC 5737 documentation TEST-NET-1"),
    (_v4("192.88.99.0/24"), "RFC 7526 deprecated 6to4 relay anycast (N/A)"),
    (_v4("192.168.0.0/16"), "RFC 1918 private-use"),
    (_v4("198.18.0.0/15"), "RFC 2544 benchmarking"),
    (_v4("198.51.100.0/24"), "RFC 5737 documentation TEST-NET-2"),
    (_v4("203.0.113.0/24"), "RFC 5737 documentation TEST-NET-3"),
    (_v4("224.0.0.0/4"), "RFC 5771 multicast"),
    (_v4("240.0.0.0/4"), "RFC 1112 reserved"),
    (_v4("255.255.255.255/32"), "RFC 919 limited broadcast"),
    (_v6("::/128"), "RFC 4291 unspecified"),
    (_v6("::1/128"), "RFC 4291 loopback"),
    (_v6("::/96"), "RFC 4291 deprecated IPv4-compatible (N/A)"),
    (_v6("::ffff:0:0/96"), "RFC 4291 IPv4-mapped"),
    (_v6("64:ff9b:1::/48"), "RFC 8215 local-use IPv4/IPv6 translation"),
    (_v6("100::/64"), "RFC 6666 discard-only"),
    (_v6("100:0:0:1::/64"), "RFC 9780 dummy IPv6 prefix"),
    (_v6("2001::/23"), "RFC 2928 IETF protocol assignments (incl. Teredo 2001::/32)"),
    (_v6("2001:2::/48"), "RFC 5180 benchmarking"),
    (_v6("2001:db8::/32"), "RFC 3849 documentation"),
    (_v6("3fff::/20"), "RFC 9637 documentation"),
    (_v6("5f00::/16"), "RFC 9602 segment routing SIDs"),
    (_v6("fc00::/7"), "RFC 4193 unique-local"),
    (_v6("fe80::/10"), "RFC 4291 link-local unicast"),
    (_v6("ff00::/8"), "RFC 4291 multicast"),
    *(
        (net, "IANA IPv6 address space: outside 2000::/3 global unicast")
        for net in (
            *_v6("::/3").address_exclude(_v6("64:ff9b::/96")),
            _v6("4000::/2"),
            _v6("8000::/1"),
        )
    ),
)

# Cloud metadata endpoints: refused always, even behind an exact host:port allow-list entry,
# and in every IPv6 embedding of the IPv4 ones.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS / GCP / Azure / OpenStack / Oracle / DigitalOcean IMDS
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.170.23",  # AWS EKS Pod Identity agent
        "169.254.0.23",  # Tencent Cloud
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer
        "192.0.0.192",  # Oracle Cloud (is_global in Python 3.11.7)
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS EKS Pod Identity agent over IPv6
        "fd20:ce::254",  # Google Cloud metadata over IPv6
        "169.254.42.42",  # Scaleway
        "fd00:42::42",  # Scaleway over IPv6
    )
)

_V4_RANGES = tuple(
    (int(n.network_address), int(n.broadcast_address))
    for n, _ in NON_PUBLIC_NETWORKS
    if n.version == 4
)
_V6_RANGES = tuple(
    (int(n.network_address), int(n.broadcast_address))
    for n, _ in NON_PUBLIC_NETWORKS
    if n.version == 6
)
_NAT64_WELL_KNOWN = _v6("64:ff9b::/96")  # RFC 6052
_NAT64_LOCAL_USE = _v6("64:ff9b:1::/48")  # RFC 8215: operator picks /48../96 inside it
_IPV4_COMPATIBLE = _v6("::/96")  # RFC 4291 (deprecated)
_IPV4_MAPPED = _v6("::ffff:0:0/96")  # RFC 4291
_IPV4_TRANSLATED = _v6("::ffff:0:0:0/96")  # RFC 2765 SIIT
_SIXTOFOUR = _v6("2002::/16")  # RFC 3056
_TEREDO = _v6("2001::/32")  # RFC 4380
_HOST_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")


class AttachmentError(Exception):
    """A download refused or failed.

    ``reason_code`` is one of the SPEC attachment codes; ``details`` holds reason words,
    status codes and exception class names, never URL paths or queries.
    """

    def __init__(self, reason_code: str, details: str = "") -> None:
        super().__init__(f"{reason_code}: {details}" if details else reason_code)
        self.reason_code = reason_code
        self.details = details


def _blocked(details: str) -> AttachmentError:
    return AttachmentError(AttachmentCode.ATTACHMENT_SSRF_BLOCKED, details)


def _failed(details: str) -> AttachmentError:
    return AttachmentError(AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED, details)


# --- addresses --------------------------------------------------------------------------------


def _rfc6052_ipv4(ip: ipaddress.IPv6Address, prefix_len: int) -> ipaddress.IPv4Address:
    """The IPv4 address RFC 6052 places after a ``prefix_len`` prefix (octet 8 skipped)."""
    octets = [b for i, b in enumerate(ip.packed) if i != 8]
    start = prefix_len // 8 - (1 if prefix_len > 64 else 0)
    return ipaddress.IPv4Address(bytes(octets[start : start + 4]))


def embedded_ipv4(ip: IPAddress) -> tuple[ipaddress.IPv4Address, ...]:
    """Every IPv4 address an IPv6 address may carry (empty for IPv4 / plain IPv6).

    IPv4-mapped, -compatible and -translated, NAT64 (well-known /96; local-use /48 at every
    RFC 6052 prefix length), 6to4, Teredo (server and de-obfuscated client) and ISATAP
    interface identifiers. Pure function of the address; raises nothing.
    """
    if ip.version != 6:
        return ()
    value = int(ip)
    found: list[ipaddress.IPv4Address] = []
    low32 = ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if ip in _IPV4_COMPATIBLE or ip in _IPV4_MAPPED or ip in _IPV4_TRANSLATED:
        found.append(low32)
    if ip in _NAT64_WELL_KNOWN:
        found.append(low32)
    if ip in _NAT64_LOCAL_USE:
        found.extend(_rfc6052_ipv4(ip, length) for length in (48, 56, 64, 96))
    if ip in _SIXTOFOUR:
        found.append(ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF))
    if ip in _TEREDO:
        found.append(ipaddress.IPv4Address((value >> 64) & 0xFFFFFFFF))  # server
        found.append(ipaddress.IPv4Address(~value & 0xFFFFFFFF))  # client, obfuscated
    if (value >> 32) & 0xFCFFFFFF == 0x00005EFE:  # ISATAP IID [0-3]00:5efe (u/g bits)
        found.append(low32)
    return tuple(dict.fromkeys(found))


def _in_table(ip: IPAddress) -> bool:
    value = int(ip)
    ranges = _V4_RANGES if ip.version == 4 else _V6_RANGES
    return any(low <= value <= high for low, high in ranges)


def is_metadata_address(ip: IPAddress) -> bool:
    """True if ``ip`` or any IPv4 it embeds is a cloud metadata address (METADATA_ADDRESSES)."""
    ip = _plain(ip)
    return ip in METADATA_ADDRESSES or any(v in METADATA_ADDRESSES for v in embedded_ipv4(ip))


def is_public_address(ip: IPAddress) -> bool:
    """True unless ``ip`` (or an IPv4 it embeds) is in NON_PUBLIC_NETWORKS or is metadata.

    Decided by the fixed table only, never by ``ipaddress.is_global`` and friends.
    """
    ip = _plain(ip)
    if is_metadata_address(ip) or _in_table(ip):
        return False
    return not any(_in_table(v) for v in embedded_ipv4(ip))


def _plain(ip: IPAddress) -> IPAddress:
    """``ip`` without an IPv6 scope id (``fe80::1%eth0`` compares unequal to ``fe80::1``)."""
    return type(ip)(int(ip))


# --- URL parsing and the guard ----------------------------------------------------------------


class Target(NamedTuple):
    """A vetted URL: parsed URL, scheme, host (lower case, IDNA), port, vetted addresses."""

    url: httpx.URL
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]


def _parse(url: object) -> tuple[httpx.URL, str, str, int]:
    """``url`` parsed once with ``httpx.URL``; raise ``AttachmentError`` for anything unusable."""
    if url is None or (isinstance(url, str) and not url.strip()):
        # the CRM row has no file URL: nothing to fetch, not an attack
        raise AttachmentError(AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED, "reason=no_url")
    if isinstance(url, httpx.URL):
        parsed = url
    elif isinstance(url, str):
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError, TypeError, UnicodeError) as exc:
            raise _blocked(f"reason=unparsable_url exception={type(exc).__name__}") from exc
    else:
        raise _blocked(f"reason=not_a_string type={type(url).__name__}")
    scheme = parsed.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        shown = scheme if re.fullmatch(r"[a-z][a-z0-9+.-]{0,15}", scheme) else "other"
        raise _blocked(f"reason=scheme scheme={shown}")
    try:
        host = parsed.raw_host.decode("ascii").lower()
    except UnicodeError as exc:
        raise _blocked("reason=bad_host") from exc
    host = host[:-1] if host.endswith(".") else host
    if not host:
        raise _blocked("reason=no_host")
    if "%" in host:
        raise _blocked("reason=bad_host")  # percent-encoding or an IPv6 zone id
    if ":" in host:
        try:
            host = str(ipaddress.IPv6Address(host))  # no zone ids ('%'), canonical spelling
        except ValueError as exc:
            raise _blocked("reason=bad_host") from exc
    elif len(host) > 253 or not _HOST_NAME.fullmatch(host):
        raise _blocked("reason=bad_host")
    if parsed.userinfo:
        raise _blocked(f"reason=userinfo host={host}")
    port = parsed.port if parsed.port is not None else DEFAULT_PORTS[scheme]
    if not 1 <= port <= 65535:
        raise _blocked(f"reason=bad_port host={host}")
    return parsed, scheme, host, port


def _host_port_key(host: str, port: int) -> str:
    """``host:port`` as written in the allow-list (IPv6 in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _normalise_entry(entry: object) -> str:
    """An allow-list entry lower-cased, IPv6 literals in canonical spelling."""
    if not isinstance(entry, str):
        return ""
    text = entry.strip().lower()
    match = re.fullmatch(r"\[([0-9a-f:.]+)\](:\d+)?", text)
    if match:
        try:
            return f"[{ipaddress.IPv6Address(match.group(1))}]{match.group(2) or ''}"
        except ValueError:
            return text
    return text


_DNS_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="attachment-dns")


def _resolve_within_deadline(resolver: Resolver, host: str, port: int) -> list[Any]:
    """``resolver(host, port, …)``; within a download, bounded by the time its deadline leaves
    (getaddrinfo cannot be interrupted: a lookup past the deadline is abandoned to its thread
    and the download fails ``reason=deadline``)."""
    budget = _BUDGET.get()
    left = budget.remaining() if budget is not None else None
    if left is None:
        return list(resolver(host, port, 0, socket.SOCK_STREAM))
    if left <= 0:
        raise _failed("reason=deadline")
    future = _DNS_POOL.submit(lambda: list(resolver(host, port, 0, socket.SOCK_STREAM)))
    try:
        return future.result(timeout=left)
    except FutureTimeout:
        raise _failed("reason=deadline") from None


def _addresses(host: str, port: int, resolver: Resolver) -> list[IPAddress]:
    """The addresses a connection to ``host`` may reach: the literal itself, or the DNS answer."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = _resolve_within_deadline(resolver, host, port)
    except AttachmentError:
        raise
    except Exception as exc:  # getaddrinfo: OSError, UnicodeError, ValueError (NUL), ...
        raise _failed(f"reason=dns exception={type(exc).__name__} host={host}") from exc
    found: list[IPAddress] = []
    try:
        for info in infos:
            address = info[4][0]
            if not isinstance(address, str):
                raise TypeError(type(address).__name__)
            found.append(_plain(ipaddress.ip_address(address.split("%", 1)[0])))
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise _blocked(f"reason=bad_dns_answer exception={type(exc).__name__} host={host}") from exc
    if not found:
        raise _failed(f"reason=dns_empty host={host}")
    return list(dict.fromkeys(found))


def _vet(url: object, allowed_hosts: Iterable[str], resolver: Resolver) -> Target:
    """Apply the guard to ``url``; return the parsed target with its vetted addresses."""
    parsed, scheme, host, port = _parse(url)
    allowed = {_normalise_entry(entry) for entry in allowed_hosts}
    exact = _host_port_key(host, port) in allowed
    bare = f"[{host}]" if ":" in host else host
    if not exact and not (bare in allowed and port == DEFAULT_PORTS[scheme]):
        raise _blocked(f"reason=host_not_allowed host={host}")
    addresses = _addresses(host, port, resolver)
    for ip in addresses:
        if is_metadata_address(ip):
            raise _blocked(f"reason=metadata_address host={host} address={ip}")
        if not exact and not is_public_address(ip):
            raise _blocked(f"reason=blocked_address host={host} address={ip}")
    return Target(parsed, scheme, host, port, tuple(str(ip) for ip in addresses))


def _only_attachment_errors(fallback_code: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; any exception other than ``AttachmentError`` becomes one (fail closed)."""
    try:
        return fn()
    except AttachmentError:
        raise
    except Exception as exc:
        raise AttachmentError(
            fallback_code, f"reason=unexpected exception={type(exc).__name__}"
        ) from exc


def check_url(
    url: str, allowed_hosts: frozenset[str], resolver: Resolver = socket.getaddrinfo
) -> None:
    """Raise ``AttachmentError`` unless ``url`` may be fetched (SPEC "SSRF guard").

    http/https only, no userinfo, port 1..65535; host (``host`` = default port only, or
    exact ``host:port``) in ``allowed_hosts``; every address the host resolves to (via
    ``resolver``, getaddrinfo-shaped) public per NON_PUBLIC_NETWORKS unless the exact
    ``host:port`` is allow-listed; metadata addresses always refused. Raises only
    ``AttachmentError`` (ATTACHMENT_SSRF_BLOCKED, or ATTACHMENT_DOWNLOAD_FAILED for DNS
    failures), for any input.
    """
    _only_attachment_errors(
        AttachmentCode.ATTACHMENT_SSRF_BLOCKED, lambda: _vet(url, allowed_hosts, resolver)
    )


# --- the deadline -----------------------------------------------------------------------------


@dataclass
class _Budget:
    """The whole-download deadline, shared by the guard, the reads and the network streams."""

    deadline: float | None
    clock: Clock
    cut: bool = False  # the last network wait was shortened to the time left

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - self.clock()

    def expired(self) -> bool:
        left = self.remaining()
        return left is not None and left <= 0

    def check(self) -> None:
        if self.expired():
            raise _failed("reason=deadline")

    def limit(self, timeout: float | None, timeout_exc: type[Exception]) -> float | None:
        """``timeout`` cut to the time left; ``timeout_exc`` if none is left."""
        left = self.remaining()
        if left is None:
            self.cut = False
            return timeout
        if left <= 0:
            self.cut = True
            raise timeout_exc("deadline")
        self.cut = timeout is None or left < timeout
        return left if self.cut else timeout


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "attachment_download_budget", default=None
)


def _limit(timeout: float | None, timeout_exc: type[Exception]) -> float | None:
    budget = _BUDGET.get()
    return timeout if budget is None else budget.limit(timeout, timeout_exc)


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every wait ends by the current download's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _limit(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _limit(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        limited = _limit(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, limited))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's sync backend with connects and streams bounded by the deadline."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        limited = _limit(timeout, httpcore.ConnectTimeout)
        stream = self._inner.connect_tcp(host, port, limited, local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not used for attachments")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


_HTTPCORE_ERRORS = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ProxyError,
    httpcore.ConnectionNotAvailable,
)


def _as_httpx(exc: Exception) -> httpx.TransportError:
    """The httpx exception of the same name as an httpcore one (``ReadTimeout`` ...)."""
    cls = getattr(httpx, type(exc).__name__, None)
    if not (isinstance(cls, type) and issubclass(cls, httpx.TransportError)):
        cls = httpx.TransportError
    return cls(str(exc))


class _CoreBody(httpx.SyncByteStream):
    def __init__(self, core_stream: Any) -> None:
        self._core = core_stream

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._core
        except _HTTPCORE_ERRORS as exc:
            raise _as_httpx(exc) from exc

    def close(self) -> None:
        close = getattr(self._core, "close", None)
        if close is not None:
            close()


class DeadlineTransport(httpx.BaseTransport):
    """HTTP/1.1 transport (no proxies, no env) whose connect, TLS, writes and reads all end
    by the calling download's deadline, not only per operation. Thread-safe (a pool)."""

    def __init__(
        self, max_connections: int = 32, max_keepalive: int = 16, verify: bool = True
    ) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=client_ssl_context(verify=verify, trust_env=False),
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive,
            keepalive_expiry=5.0,
            network_backend=_DeadlineBackend(),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the pool; httpcore errors become same-named httpx ones."""
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            response = self._pool.handle_request(core_request)
        except _HTTPCORE_ERRORS as exc:
            raise _as_httpx(exc) from exc
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_CoreBody(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.close()


# --- Content-Encoding -------------------------------------------------------------------------


def _looks_like_zlib(head: bytes) -> bool:
    """RFC 1950 header check: CM=8 and (CMF*256 + FLG) % 31 == 0."""
    return head[0] & 0x0F == 8 and head[0] >> 4 <= 7 and ((head[0] << 8) | head[1]) % 31 == 0


class _ZlibDecoder:
    """Bounded incremental gzip / deflate (zlib-wrapped or raw) decoder.

    Each step yields at most DECODE_CHUNK bytes and keeps the rest of its input in
    ``unconsumed_tail``, so a bomb never inflates more than one step ahead of the consumer.
    Concatenated gzip members are decoded; garbage after a complete member is ignored.
    """

    def __init__(self, coding: str) -> None:
        self._coding = coding
        self._obj: Any = zlib.decompressobj(16 + zlib.MAX_WBITS) if coding == "gzip" else None
        self._head = b""
        self._fed = False
        self._members = 0
        self._ignore_rest = False

    def _error(self, word: str) -> AttachmentError:
        return _failed(f"reason={word} encoding={self._coding}")

    def decode(self, data: bytes) -> Iterator[bytes]:
        if self._ignore_rest or not data:
            return
        if self._obj is None:  # deflate: zlib-wrapped or raw, decided on the first two bytes
            self._head += data
            if len(self._head) < 2:
                return
            data, self._head = self._head, b""
            # A raw stream from a conforming compressor never passes this check (its first
            # byte has zero padding bits), so no trial-and-error replay is needed.
            wbits = zlib.MAX_WBITS if _looks_like_zlib(data) else -zlib.MAX_WBITS
            self._obj = zlib.decompressobj(wbits)
        tail = data
        while True:
            obj = self._obj
            self._fed = self._fed or bool(tail)
            try:
                out = obj.decompress(tail, DECODE_CHUNK)
            except zlib.error as exc:
                if self._members:
                    self._ignore_rest = True  # trailing garbage after a complete gzip member
                    return
                raise self._error("bad_encoding") from exc
            if out:
                yield out
            if obj.eof:
                self._members += 1
                rest = obj.unused_data
                if self._coding != "gzip":
                    self._ignore_rest = True
                    return
                self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._fed = False
                if not rest:
                    return
                tail = rest
                continue
            tail = obj.unconsumed_tail
            if not tail and len(out) < DECODE_CHUNK:
                return

    def finish(self) -> None:
        """Raise if the stream ended inside the first (or only) compressed member."""
        if self._ignore_rest or self._members:
            return
        if self._head or (self._obj is not None and self._fed and not self._obj.eof):
            raise self._error("truncated_encoding")


def _content_codings(response: httpx.Response) -> list[str]:
    """The ``Content-Encoding`` chain in the order applied; identity dropped.

    Raises ATTACHMENT_DOWNLOAD_FAILED for codings this module does not decode (br, zstd,
    compress, unknown: brotli/zstd are not installed, and their decoders here would have to
    be bounded too) and for chains longer than MAX_CONTENT_CODINGS.
    """
    codings: list[str] = []
    for raw in response.headers.get_list("content-encoding", split_commas=True):
        token = raw.strip().lower()
        if token in ("", "identity"):
            continue
        if token in ("gzip", "x-gzip"):
            codings.append("gzip")
        elif token == "deflate":
            codings.append("deflate")
        else:
            shown = token if re.fullmatch(r"[a-z0-9._-]{1,20}", token) else "other"
            raise _failed(f"reason=unsupported_encoding encoding={shown}")
    if len(codings) > MAX_CONTENT_CODINGS:
        raise _failed(f"reason=encoding_chain_too_long codings={len(codings)}")
    return codings


def _decode_stage(decoder: _ZlibDecoder, pieces: Iterable[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        yield from decoder.decode(piece)
    decoder.finish()


def decoded_stream(raw: Iterable[bytes], codings: list[str]) -> Iterator[bytes]:
    """Lazily undo ``codings`` (order applied, e.g. ``["gzip", "gzip"]``) on ``raw`` chunks.

    Pull-based: every stage produces at most DECODE_CHUNK bytes per step, so memory stays
    bounded by about ``len(codings) * DECODE_CHUNK`` plus zlib state whatever the ratio.
    Raises ATTACHMENT_DOWNLOAD_FAILED for corrupt or truncated data.
    """
    stream: Iterable[bytes] = raw
    for coding in reversed(codings):
        stream = _decode_stage(_ZlibDecoder(coding), stream)
    return iter(stream)


# --- the downloader ---------------------------------------------------------------------------


class GuardedDownloader:
    """SSRF-guarded, size-capped, deadline-bound downloads; safe to share across threads.

    ``allowed_hosts``: ``host`` (default port only) or exact ``host:port`` entries.
    ``max_bytes``: cap on the bytes received and on the bytes decoded (SPEC: 25 MiB).
    ``timeout_s``: per-operation timeout (connect, one write, one read), seconds.
    ``deadline_s``: whole-download deadline in seconds (SPEC "10 s deadline"), spanning DNS,
    connect, every read and every redirect hop; None disables it. With the default client
    every socket wait is cut to the time left; with an injected ``client`` the deadline is
    enforced on the request timeouts and between chunks only.
    ``clock``: monotonic seconds (tests inject a fake).
    """

    def __init__(
        self,
        allowed_hosts: frozenset[str],
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout_s: float = 10.0,
        client: httpx.Client | None = None,
        resolver: Resolver = socket.getaddrinfo,
        deadline_s: float | None = DEFAULT_DEADLINE_S,
        clock: Clock = time.monotonic,
    ) -> None:
        self.allowed_hosts = frozenset(allowed_hosts)
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.timeout = httpx.Timeout(timeout_s)
        self.deadline_s = deadline_s
        self._resolver = resolver
        self._clock = clock
        self._owns_client = client is None
        # trust_env=False: no proxy from the environment may bypass the pinned address.
        self._client = client or httpx.Client(
            transport=DeadlineTransport(),
            timeout=self.timeout,
            follow_redirects=False,
            trust_env=False,
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
        """GET ``url``; return the decoded body and the served content type.

        Same-host redirects only (at most 3, each hop re-vetted). Raises only
        ``AttachmentError``: ATTACHMENT_SSRF_BLOCKED (guard), ATTACHMENT_TOO_LARGE (cap on
        received or decoded bytes), ATTACHMENT_DOWNLOAD_FAILED (status, network, deadline,
        encoding, anything unexpected), for any input.
        """
        return _only_attachment_errors(
            AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED, lambda: self._download(url)
        )

    def _download(self, url: object) -> tuple[bytes, str | None]:
        start = self._clock()
        budget = _Budget(None if self.deadline_s is None else start + self.deadline_s, self._clock)
        token = _BUDGET.set(budget)
        try:
            current: object = url
            for _hop in range(MAX_REDIRECTS + 1):
                target = _vet(current, self.allowed_hosts, self._resolver)
                budget.check()  # getaddrinfo cannot be interrupted; count its time
                result = self._fetch(target, budget)
                if isinstance(result, tuple):
                    return result
                current = self._redirect_target(target, result)
            raise _failed(f"reason=too_many_redirects max={MAX_REDIRECTS}")
        finally:
            _BUDGET.reset(token)

    @staticmethod
    def _redirect_target(target: Target, location: str) -> httpx.URL:
        """The absolute redirect URL; ATTACHMENT_SSRF_BLOCKED unless same host and port."""
        try:
            joined = target.url.join(location)
        except (httpx.InvalidURL, ValueError, TypeError, UnicodeError) as exc:
            raise _failed(f"reason=bad_redirect exception={type(exc).__name__}") from exc
        _, _, host, port = _parse(joined)
        if (host, port) != (target.host, target.port):
            raise _blocked(f"reason=cross_host_redirect host={host}")
        return joined

    def _request_timeout(self, budget: _Budget) -> httpx.Timeout:
        """Per-operation timeouts for one request, never beyond the time left."""
        left = budget.remaining()
        if left is None:
            return httpx.Timeout(self.timeout_s)
        budget.cut = left < self.timeout_s
        return httpx.Timeout(max(min(self.timeout_s, left), 0.0))

    def _fetch(self, target: Target, budget: _Budget) -> tuple[bytes, str | None] | str:
        """One pinned GET: the body and content type, or the ``Location`` of a redirect."""
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            with self._client.stream(
                "GET",
                target.url.copy_with(host=target.addresses[0]),
                headers={"Host": target.url.netloc.decode("ascii"), "Accept-Encoding": "identity"},
                extensions=extensions,
                timeout=self._request_timeout(budget),
                follow_redirects=False,
            ) as response:
                return self._read(response, budget)
        except httpx.TimeoutException as exc:
            if budget.cut or budget.expired():
                raise _failed("reason=deadline") from exc
            raise _failed(f"exception={type(exc).__name__}") from exc
        except (httpx.HTTPError, httpx.StreamError) as exc:
            raise _failed(f"exception={type(exc).__name__}") from exc

    def _raw(self, response: httpx.Response, budget: _Budget) -> Iterator[bytes]:
        """The raw (still encoded) body, capped at ``max_bytes`` and checked against the clock."""
        received = 0
        for chunk in response.iter_raw():
            received += len(chunk)
            if received > self.max_bytes:
                raise AttachmentError(
                    AttachmentCode.ATTACHMENT_TOO_LARGE,
                    f"reason=body_over_cap max_bytes={self.max_bytes}",
                )
            budget.check()
            yield chunk

    def _read(self, response: httpx.Response, budget: _Budget) -> tuple[bytes, str | None] | str:
        """Status handling and the capped, streamed, bounded-decoding body read."""
        status = response.status_code
        if status in REDIRECT_STATUSES:
            location = response.headers.get("location")
            if not location:
                raise _failed(f"status={status} no_location")
            return location
        if not 200 <= status < 300:
            raise _failed(f"status={status}")
        declared = response.headers.get("content-length", "").strip()
        length = ascii_int(declared, max_digits=30)
        if length is not None and length > self.max_bytes:
            details = f"content_length={declared} max_bytes={self.max_bytes}"
            raise AttachmentError(AttachmentCode.ATTACHMENT_TOO_LARGE, details)
        codings = _content_codings(response)
        body = io.BytesIO()
        size = 0
        for piece in decoded_stream(self._raw(response, budget), codings):
            size += len(piece)
            if size > self.max_bytes:
                word = "decoded_over_cap" if codings else "body_over_cap"
                raise AttachmentError(
                    AttachmentCode.ATTACHMENT_TOO_LARGE, f"reason={word} max_bytes={self.max_bytes}"
                )
            body.write(piece)
            budget.check()
        budget.check()
        # getvalue() hands over BytesIO's buffer without a copy (peak stays ~ one body).
        return body.getvalue(), response.headers.get("content-type")
