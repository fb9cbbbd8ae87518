"""Property-based tests of the SSRF guard and the bounded decoder (hypothesis, no network).

Every resolver is a fake; every downloader uses ``httpx.MockTransport``.
"""

from __future__ import annotations

import ipaddress
import socket
import zlib

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notes_pipeline.core.resources.attachment_download import (
    DECODE_CHUNK,
    METADATA_ADDRESSES,
    NON_PUBLIC_NETWORKS,
    AttachmentError,
    GuardedDownloader,
    check_url,
    decoded_stream,
    is_metadata_address,
    is_public_address,
)
from notes_pipeline.core.vocabulary import AttachmentCode

PROPS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
GUARD_CODES = (AttachmentCode.ATTACHMENT_SSRF_BLOCKED, AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED)
ALL_CODES = (
    AttachmentCode.ATTACHMENT_SSRF_BLOCKED,
    AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED,
    AttachmentCode.ATTACHMENT_TOO_LARGE,
)
BARE = frozenset({"files.crm.test"})
EXACT = frozenset({"files.crm.test:443", "files.crm.test:80"})
CAP = 64 * 1024


def resolver_of(addresses):
    """A getaddrinfo stand-in answering every name with ``addresses`` (any family)."""

    def resolve(host, port, *args, **kwargs):
        return [
            (
                socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (str(ip), port, 0, 0) if ip.version == 6 else (str(ip), port),
            )
            for ip in addresses
        ]

    return resolve


# --- strategies -------------------------------------------------------------------------------

any_ip = st.ip_addresses()
non_public_ip = st.sampled_from([net for net, _ in NON_PUBLIC_NETWORKS]).flatmap(
    lambda net: st.ip_addresses(network=net)
)
metadata_v4 = st.sampled_from(sorted(str(a) for a in METADATA_ADDRESSES if a.version == 4))
bits = st.integers  # shorthand: st.integers(0, 2**n - 1)


def _v6(value: int) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(value)


def _rfc6052(prefix: int, prefix_len: int, v4: int, suffix: int) -> ipaddress.IPv6Address:
    """RFC 6052 address: ``prefix`` (top ``prefix_len`` bits), IPv4 around octet 8, suffix."""
    v4_octets = list(v4.to_bytes(4, "big"))
    octets = list(prefix.to_bytes(16, "big"))[: prefix_len // 8]
    while len(octets) < 16:
        if len(octets) == 8:
            octets.append(0)  # the "u" octet
        elif v4_octets:
            octets.append(v4_octets.pop(0))
        else:
            octets.append(suffix & 0xFF)
            suffix >>= 8
    return ipaddress.IPv6Address(bytes(octets))


@st.composite
def metadata_embedded(draw) -> ipaddress.IPv6Address | ipaddress.IPv4Address:
    """A metadata address as itself or carried in any IPv6 embedding, other bits arbitrary."""
    v4 = int(ipaddress.IPv4Address(draw(metadata_v4)))
    kind = draw(
        st.sampled_from(
            ["plain", "v6", "mapped", "compat", "translated", "nat64", "nat64-local", "6to4",
             "teredo-server", "teredo-client", "isatap"]
        )
    )  # fmt: skip
    if kind == "plain":
        return ipaddress.IPv4Address(v4)
    if kind == "v6":
        return draw(st.sampled_from(sorted(a for a in METADATA_ADDRESSES if a.version == 6)))
    if kind == "mapped":
        return _v6(0xFFFF << 32 | v4)
    if kind == "compat":
        return _v6(v4)
    if kind == "translated":
        return _v6(0xFFFF << 48 | v4)
    if kind == "nat64":
        return _v6(0x0064FF9B << 96 | v4)
    if kind == "nat64-local":
        length = draw(st.sampled_from([48, 56, 64, 96]))
        prefix = 0x0064FF9B0001 << 80 | draw(bits(0, 2**32 - 1)) << 48
        return _rfc6052(prefix, length, v4, draw(bits(0, 2**56 - 1)))
    if kind == "6to4":
        return _v6(0x2002 << 112 | v4 << 80 | draw(bits(0, 2**80 - 1)))
    if kind == "teredo-server":
        return _v6(0x20010000 << 96 | v4 << 64 | draw(bits(0, 2**64 - 1)))
    if kind == "teredo-client":
        server = draw(bits(0, 2**32 - 1))
        flags_port = draw(bits(0, 2**32 - 1))
        return _v6(0x20010000 << 96 | server << 64 | flags_port << 32 | (~v4 & 0xFFFFFFFF))
    prefix = draw(bits(0, 2**64 - 1))
    marker = draw(st.sampled_from([0x00005EFE, 0x02005EFE, 0x01005EFE, 0x03005EFE]))
    return _v6(prefix << 64 | marker << 32 | v4)


control_heavy = st.text(
    alphabet=st.characters(codec=None, exclude_categories=()), max_size=40
) | st.text(alphabet="\x00\t\n\r\x0b\x0c\x7f\x85 %@:/[]?#.\\\u200b\u00e4\ud800a1f", max_size=30)


@st.composite
def url_strings(draw) -> object:
    """Arbitrary strings, URL-shaped strings with hostile parts, and non-strings."""
    shape = draw(st.integers(0, 4))
    if shape == 0:
        return draw(st.text(max_size=80))
    if shape == 1:
        return draw(st.none() | st.integers() | st.binary(max_size=20) | st.floats())
    scheme = draw(st.sampled_from(["http", "https", "HTTPS", "ftp", "", " https", "ht\ttp"]))
    host = draw(
        st.sampled_from(["files.crm.test", "FILES.crm.test.", "evil.example"])
        | any_ip.map(lambda ip: f"[{ip}]" if ip.version == 6 else str(ip))
        | control_heavy
        | control_heavy.map(lambda t: f"[{t}]")
        | st.text(max_size=20).map(lambda t: f"files.crm.test{t}")
    )
    port = draw(
        st.none() | st.integers(-5, 70000).map(str) | st.text(alphabet="0123456789:x -", max_size=8)
    )
    userinfo = draw(st.sampled_from(["", "user@", "u:p@", "@", "\\@"]))
    path = draw(st.text(max_size=20))
    prefix = draw(st.sampled_from(["", " ", "\t", "\x00", "\ufeff"]))
    netloc = userinfo + host + ("" if port is None else ":" + port)
    return f"{prefix}{scheme}://{netloc}/{path}"


# --- check_url --------------------------------------------------------------------------------


@PROPS
@given(url=url_strings(), answers=st.lists(any_ip, max_size=4), exact=st.booleans())
def test_check_url_raises_nothing_but_attachment_error(url, answers, exact):
    allowed = EXACT | BARE if exact else BARE
    try:
        check_url(url, allowed, resolver_of(answers))
    except AttachmentError as exc:
        assert exc.reason_code in GUARD_CODES


@PROPS
@given(url=url_strings(), answers=st.lists(any_ip, max_size=3))
def test_check_url_accepts_only_public_answers_for_bare_entry(url, answers):
    """Whatever URL got through, every address it resolved to is public and not metadata."""
    seen: list = []

    def resolve(host, port, *args, **kwargs):
        seen.extend(answers)
        return resolver_of(answers)(host, port)

    try:
        check_url(url, BARE, resolve)
    except AttachmentError:
        return
    for ip in seen:
        assert is_public_address(ip) and not is_metadata_address(ip)


@PROPS
@given(ip=non_public_ip, others=st.lists(any_ip, max_size=2), port=st.sampled_from(["", ":443"]))
def test_non_public_address_never_accepted_for_bare_entry(ip, others, port):
    resolver = resolver_of([*others, ip])
    try:
        check_url(f"https://files.crm.test{port}/a", BARE, resolver)
    except AttachmentError as exc:
        assert exc.reason_code == AttachmentCode.ATTACHMENT_SSRF_BLOCKED
    else:
        raise AssertionError(f"{ip} accepted")
    literal = f"[{ip}]" if ip.version == 6 else str(ip)
    bare_literal = frozenset({literal})
    try:
        check_url(f"https://{literal}/a", bare_literal, resolver_of([]))
    except AttachmentError as exc:
        assert exc.reason_code == AttachmentCode.ATTACHMENT_SSRF_BLOCKED
    else:
        raise AssertionError(f"literal {ip} accepted")


@PROPS
@given(ip=metadata_embedded(), others=st.lists(any_ip, max_size=2))
def test_metadata_in_any_embedding_never_accepted_even_behind_exact_entry(ip, others):
    assert is_metadata_address(ip) and not is_public_address(ip)
    try:
        check_url("https://files.crm.test/a", EXACT, resolver_of([*others, ip]))
    except AttachmentError as exc:
        assert exc.reason_code == AttachmentCode.ATTACHMENT_SSRF_BLOCKED
    else:
        raise AssertionError(f"{ip} accepted")
    literal = f"[{ip}]" if ip.version == 6 else str(ip)
    for port in (80, 443, 8080):
        entry = frozenset({f"{literal}:{port}"})
        try:
            check_url(f"http://{literal}:{port}/latest", entry, resolver_of([]))
        except AttachmentError as exc:
            assert exc.reason_code == AttachmentCode.ATTACHMENT_SSRF_BLOCKED
        else:
            raise AssertionError(f"literal {ip} accepted")


@PROPS
@given(ip=any_ip)
def test_guard_agrees_with_the_table(ip):
    """Bare entry: accepted exactly when the table calls the address public."""
    try:
        check_url("https://files.crm.test/a", BARE, resolver_of([ip]))
        accepted = True
    except AttachmentError:
        accepted = False
    assert accepted == is_public_address(ip)
    in_table = any(ip in net for net, _ in NON_PUBLIC_NETWORKS if net.version == ip.version)
    assert not (accepted and in_table)


# --- download(): arbitrary input and arbitrary responses --------------------------------------

header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
coding = st.sampled_from(["gzip", "deflate", "raw", "identity"])


def _encode(data: bytes, chain: list[str]) -> tuple[bytes, str]:
    for name in chain:
        if name != "identity":
            wbits = {"gzip": 31, "deflate": 15, "raw": -15}[name]
            comp = zlib.compressobj(6, zlib.DEFLATED, wbits)
            data = comp.compress(data) + comp.flush()
    return data, ", ".join("deflate" if n == "raw" else n for n in chain)


@st.composite
def responses(draw) -> tuple[int, dict[str, str], bytes]:
    status = draw(st.sampled_from([200, 200, 200, 204, 206, 301, 302, 307, 404, 500]))
    data = draw(st.binary(max_size=2048) | st.just(b"\0" * (CAP + 1)))
    chain = draw(st.lists(coding, max_size=5))
    body, encoding = _encode(data, chain)
    if draw(st.booleans()):
        body = draw(st.binary(max_size=200))  # encoded header, garbage body
    if draw(st.booleans()):
        encoding = draw(header_text)
    headers = {"content-encoding": encoding, "content-type": "application/pdf"}
    if status in (301, 302, 307):
        headers["location"] = draw(header_text | st.sampled_from(["/a", "http://evil/x", ""]))
    return status, headers, body


@PROPS
@given(url=url_strings(), response=responses())
def test_download_raises_nothing_but_attachment_error(url, response):
    status, headers, body = response
    client = httpx.Client(
        transport=httpx.MockTransport(lambda request: httpx.Response(status, headers=headers,
                                                                     content=body))
    )  # fmt: skip
    dl = GuardedDownloader(
        BARE, max_bytes=CAP, client=client, resolver=resolver_of([ipaddress.ip_address("8.8.8.8")])
    )
    try:
        data, content_type = dl.download(url)
    except AttachmentError as exc:
        assert exc.reason_code in ALL_CODES
    else:
        assert isinstance(data, bytes) and len(data) <= CAP
    finally:
        client.close()


@PROPS
@given(
    data=st.binary(max_size=20000) | st.integers(0, 300000).map(lambda n: b"\0" * n),
    chain=st.lists(coding, max_size=4),
    cuts=st.lists(st.integers(0, 5000), max_size=8),
)
def test_decoder_round_trips_in_bounded_steps_whatever_the_chunking(data, chain, cuts):
    body, _ = _encode(data, chain)
    points = sorted({min(c, len(body)) for c in cuts} | {0, len(body)})
    chunks = [body[a:b] for a, b in zip(points, points[1:], strict=False)]
    codings = ["deflate" if c == "raw" else c for c in chain if c != "identity"]
    out = list(decoded_stream(iter(chunks), codings))
    if codings:  # identity passes the raw chunks through as they are
        assert all(len(piece) <= DECODE_CHUNK for piece in out)
    assert b"".join(out) == data
