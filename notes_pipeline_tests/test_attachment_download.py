"""SSRF guard and GuardedDownloader against a real local HTTP server on 127.0.0.1.

No sleeps for timing and no timed assertions: deadlines are driven by an injected clock
(time advances with the bytes a lock-stepped server has sent) or exceeded by construction.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import threading
import tracemalloc
import zlib
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from notes_pipeline.contact_notes.settings import MigrationSettings
from notes_pipeline.core.resources.attachment_download import (
    NON_PUBLIC_NETWORKS,
    AttachmentError,
    DeadlineTransport,
    GuardedDownloader,
    check_url,
    decoded_stream,
    is_public_address,
)
from notes_pipeline.core.resources.storage import AttachmentStorage
from notes_pipeline.core.vocabulary import AttachmentCode

CAP = 256 * 1024
HUGE = 32 * 1024 * 1024  # far beyond CAP plus any socket buffering
WRITE_CHUNK = 16 * 1024
HTTPCORE_READ = 64 * 1024  # bytes httpcore reads from the socket at a time
BODY = b"\x89PNG\r\n\x1a\nattachment-bytes"
MIB = 1024 * 1024
TRICKLE_STEP_S = 0.5  # fake seconds per byte a trickling server sends
TRICKLE_LENGTH = 1000


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        path = self.path.split("?", 1)[0]
        self.server.hits.append(path)
        self.server.host_headers.append(self.headers.get("Host"))
        route = getattr(self, "route_" + path.strip("/").replace("-", "_"), None)
        if path in self.server.canned:
            status, headers, body = self.server.canned[path]
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif route is None:
            self._send(404, b"not found")
        else:
            route()

    def _send(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self._send(302, b"", Location=location)

    def _stream_until_client_stops(self, chunked: bool) -> None:
        """Write up to HUGE bytes; record how far we got and whether the client hung up."""
        try:
            while self.server.sent < HUGE:
                data = b"x" * WRITE_CHUNK
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                self.server.sent += len(data)
        except OSError:
            self.server.client_hung_up = True
        finally:
            self.server.done.set()
            self.close_connection = True

    def route_file(self) -> None:
        self._send(200, BODY, Content_Type="image/png")

    def route_exact(self) -> None:
        self._send(200, b"y" * CAP, Content_Type="application/pdf")

    def route_redir_same(self) -> None:
        self._redirect("/file")

    def route_redir_abs_same(self) -> None:
        self._redirect(f"http://127.0.0.1:{self.server.server_address[1]}/file")

    def route_redir_other(self) -> None:
        self._redirect("http://evil.example/latest/meta-data")

    def route_redir_metadata(self) -> None:
        self._redirect("http://169.254.169.254/latest/meta-data")

    def route_redir_other_port(self) -> None:
        self._redirect("http://127.0.0.1:1/file")

    def route_loop(self) -> None:
        self._redirect("/loop")

    def route_gone(self) -> None:
        self._send(500, b"boom")

    def route_big_declared(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(CAP + 1))
        self.end_headers()
        self.wfile.write(b"z" * 1024)
        self.close_connection = True

    def route_big_chunked(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._stream_until_client_stops(chunked=True)

    def route_big_unsized(self) -> None:
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        self._stream_until_client_stops(chunked=False)

    def _trickle(self, data: bytes) -> None:
        """Send ``data`` one byte per reading of the client's clock (lock-step, no sleeps)."""
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.close_connection = True
        try:
            for byte in data:
                if not self.server.tick.wait(10) or self.server.release.is_set():
                    return
                self.server.tick.clear()
                self.wfile.write(bytes([byte]))
                self.server.sent += 1
        except OSError:
            self.server.client_hung_up = True

    def route_trickle_body(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(TRICKLE_LENGTH))
        self.end_headers()
        self._trickle(b"t" * TRICKLE_LENGTH)

    def route_trickle_headers(self) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-Pad: "
        self._trickle(head + b"p" * TRICKLE_LENGTH + b"\r\n\r\nx")

    def route_redir_bad(self) -> None:
        self._redirect("http://[::1")

    def route_redir_tab(self) -> None:
        self._redirect(f"http://127.0.0.1\t:{self.server.server_address[1]}/file")

    def route_hang(self) -> None:
        self.server.release.wait()
        self.close_connection = True

    def route_hang_body(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        self.wfile.write(b"partial")
        self.server.release.wait()
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hits: list[str] = []
        self.host_headers: list[str | None] = []
        self.sent = 0
        self.client_hung_up = False
        self.done = threading.Event()
        self.release = threading.Event()
        self.tick = threading.Event()
        self.canned: dict[str, tuple[int, list[tuple[str, str]], bytes]] = {}

    def handle_error(self, request, client_address) -> None:
        pass  # the client hanging up mid-response is expected here


class _CountingStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, owner: _CountingTransport) -> None:
        self._inner, self._owner = inner, owner

    def __iter__(self):
        for chunk in self._inner:
            self._owner.body_bytes += len(chunk)
            yield chunk

    def close(self) -> None:
        self._inner.close()


class _CountingTransport(httpx.BaseTransport):
    """Real HTTP transport (the downloader's own by default) counting the body bytes."""

    def __init__(self, inner: httpx.BaseTransport | None = None) -> None:
        self._inner = inner or DeadlineTransport()
        self.body_bytes = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_CountingStream(response.stream, self),
            extensions=response.extensions,
            request=request,
        )

    def close(self) -> None:
        self._inner.close()


@pytest.fixture
def server():
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.tick.set()
    srv.shutdown()
    srv.server_close()
    thread.join()


@pytest.fixture
def hostport(server) -> str:
    return f"127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def transport():
    return _CountingTransport()


@pytest.fixture
def downloader(hostport, transport):
    client = httpx.Client(transport=transport)
    dl = GuardedDownloader(frozenset({hostport}), max_bytes=CAP, timeout_s=5.0, client=client)
    yield dl
    client.close()


def fake_resolver(*addresses: str):
    """A getaddrinfo stand-in answering every name with ``addresses``."""

    def resolve(host, port, *args, **kwargs):
        resolve.calls.append(host)
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, port, 0, 0) if ":" in a else (a, port),
            )
            for a in addresses
        ]

    resolve.calls = []
    return resolve


def _code(fn, *args) -> str:
    with pytest.raises(AttachmentError) as info:
        fn(*args)
    return info.value.reason_code


# --- check_url --------------------------------------------------------------------------------

PUBLIC = fake_resolver("93.184.216.34")


@pytest.mark.parametrize(
    "url",
    [
        "https://files.crm.test/uploads/a.png",
        "https://FILES.CRM.test/uploads/a.png?X-Amz-Signature=abc",
        "http://files.crm.test/a.png",
        "https://files.crm.test:443/a.png",
        "https://files.crm.test./a.png",
    ],
)
def test_check_url_allows_listed_public_host(url):
    check_url(url, frozenset({"files.crm.test"}), resolver=PUBLIC)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://files.crm.test/a.png",
        "file:///etc/passwd",
        "gopher://files.crm.test/",
        "javascript:alert(1)",
        "//files.crm.test/a.png",
        "https://evil.example/a.png",
        "https://files.crm.test.evil.example/a.png",
        "https://files.crm.test:8443/a.png",  # bare entry = default port only
        "https://user:pw@files.crm.test/a.png",
        "https://files.crm.test:99999/a.png",
    ],
)
def test_check_url_blocks_scheme_host_port_and_userinfo(url):
    assert (
        _code(check_url, url, frozenset({"files.crm.test"}), PUBLIC)
        == AttachmentCode.ATTACHMENT_SSRF_BLOCKED
    )


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "127.0.0.1",
        "169.254.169.254",
        "169.254.10.10",
        "100.100.100.200",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",
        "::ffff:10.0.0.1",
        "2002:a00:1::1",  # 6to4 wrapping 10.0.0.1
        "::",
    ],
)
def test_allowed_host_resolving_to_internal_address_is_blocked(address):
    code = _code(
        check_url, "https://files.crm.test/a", frozenset({"files.crm.test"}), fake_resolver(address)
    )
    assert code == AttachmentCode.ATTACHMENT_SSRF_BLOCKED


def test_any_internal_answer_among_public_ones_is_blocked():
    resolver = fake_resolver("93.184.216.34", "10.0.0.7")
    code = _code(check_url, "https://files.crm.test/a", frozenset({"files.crm.test"}), resolver)
    assert code == AttachmentCode.ATTACHMENT_SSRF_BLOCKED


def test_exact_host_port_entry_permits_internal_address():
    check_url(
        "http://files.crm.test:55500/a",
        frozenset({"files.crm.test:55500"}),
        fake_resolver("127.0.0.1"),
    )
    check_url("http://127.0.0.1:55500/a", frozenset({"127.0.0.1:55500"}))


def test_bare_host_entry_does_not_permit_internal_address():
    code = _code(
        check_url, "http://127.0.0.1/a", frozenset({"127.0.0.1"}), fake_resolver("127.0.0.1")
    )
    assert code == AttachmentCode.ATTACHMENT_SSRF_BLOCKED


def test_metadata_address_blocked_even_when_exactly_allow_listed():
    allowed = frozenset({"169.254.169.254:80", "meta.test:80"})
    assert (
        _code(check_url, "http://169.254.169.254/latest", allowed, fake_resolver("169.254.169.254"))
        == AttachmentCode.ATTACHMENT_SSRF_BLOCKED
    )
    assert (
        _code(check_url, "http://meta.test/latest", allowed, fake_resolver("fd00:ec2::254"))
        == AttachmentCode.ATTACHMENT_SSRF_BLOCKED
    )


def test_dns_failure_is_download_failed():
    def failing(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "no such host")

    code = _code(check_url, "https://files.crm.test/a", frozenset({"files.crm.test"}), failing)
    assert code == AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED


# --- GuardedDownloader ------------------------------------------------------------------------


def test_allow_listed_exact_host_port_downloads(server, hostport, downloader):
    body, content_type = downloader.download(f"http://{hostport}/file")
    assert body == BODY
    assert content_type == "image/png"
    assert server.hits == ["/file"]


def test_same_server_not_allow_listed_is_blocked_without_a_request(server, hostport):
    for allowed in ({"127.0.0.1"}, {"localhost:" + hostport.split(":")[1]}, set()):
        with GuardedDownloader(frozenset(allowed), max_bytes=CAP) as dl:
            assert (
                _code(dl.download, f"http://{hostport}/file")
                == AttachmentCode.ATTACHMENT_SSRF_BLOCKED
            )
    assert server.hits == []


@pytest.mark.parametrize("address", ["10.0.0.8", "169.254.169.254", "127.0.0.1"])
def test_allow_listed_name_resolving_internally_is_blocked(server, hostport, address):
    port = hostport.split(":")[1]
    with GuardedDownloader(
        frozenset({"files.crm.test"}), max_bytes=CAP, resolver=fake_resolver(address)
    ) as dl:
        code = _code(dl.download, f"http://files.crm.test:{port}/file")
        assert code == AttachmentCode.ATTACHMENT_SSRF_BLOCKED
        assert (
            _code(dl.download, "http://files.crm.test/file")
            == AttachmentCode.ATTACHMENT_SSRF_BLOCKED
        )
    assert server.hits == []


def test_connection_is_pinned_to_the_vetted_address(server, hostport, transport):
    """The name never resolves for real: the request can only reach the address we checked."""
    port = hostport.split(":")[1]
    resolver = fake_resolver("127.0.0.1")
    client = httpx.Client(transport=transport)
    dl = GuardedDownloader(
        frozenset({f"files.crm.test:{port}"}), max_bytes=CAP, client=client, resolver=resolver
    )
    body, _ = dl.download(f"http://files.crm.test:{port}/file")
    client.close()
    assert body == BODY
    assert server.host_headers == [f"files.crm.test:{port}"]
    assert resolver.calls == ["files.crm.test"]


@pytest.mark.parametrize("path", ["/redir-same", "/redir-abs-same"])
def test_same_host_redirect_is_followed(server, downloader, hostport, path):
    body, _ = downloader.download(f"http://{hostport}{path}")
    assert body == BODY
    assert server.hits == [path, "/file"]


@pytest.mark.parametrize("path", ["/redir-other", "/redir-metadata", "/redir-other-port"])
def test_redirect_to_another_host_is_blocked(server, downloader, hostport, path):
    assert (
        _code(downloader.download, f"http://{hostport}{path}")
        == AttachmentCode.ATTACHMENT_SSRF_BLOCKED
    )
    assert server.hits == [path]


def test_redirect_loop_stops_after_three_hops(server, downloader, hostport):
    assert (
        _code(downloader.download, f"http://{hostport}/loop")
        == AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED
    )
    assert server.hits == ["/loop"] * 4


@pytest.mark.parametrize(("path", "status"), [("/missing", "404"), ("/gone", "500")])
def test_non_2xx_is_download_failed_without_query_string(downloader, hostport, path, status):
    with pytest.raises(AttachmentError) as info:
        downloader.download(f"http://{hostport}{path}?X-Amz-Signature=SECRET")
    assert info.value.reason_code == AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED
    assert f"status={status}" in info.value.details
    assert "SECRET" not in str(info.value) and "SECRET" not in info.value.details


def test_body_exactly_at_cap_is_accepted(downloader, hostport):
    body, content_type = downloader.download(f"http://{hostport}/exact")
    assert len(body) == CAP and content_type == "application/pdf"


def test_declared_length_over_cap_aborts_before_reading(downloader, hostport, transport):
    assert (
        _code(downloader.download, f"http://{hostport}/big-declared")
        == AttachmentCode.ATTACHMENT_TOO_LARGE
    )
    assert transport.body_bytes == 0


@pytest.mark.parametrize("path", ["/big-chunked", "/big-unsized"])
def test_undeclared_body_over_cap_stops_reading(server, downloader, hostport, transport, path):
    assert (
        _code(downloader.download, f"http://{hostport}{path}")
        == AttachmentCode.ATTACHMENT_TOO_LARGE
    )
    assert CAP < transport.body_bytes <= CAP + HTTPCORE_READ
    assert server.done.wait(30), "server handler never finished"
    assert server.client_hung_up, "client read the whole body instead of hanging up"
    assert server.sent < HUGE


def test_server_that_never_answers_times_out(server, hostport):
    with GuardedDownloader(frozenset({hostport}), max_bytes=CAP, timeout_s=0.2) as dl:
        with pytest.raises(AttachmentError) as info:
            dl.download(f"http://{hostport}/hang")
    assert info.value.reason_code == AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED
    assert info.value.details == "exception=ReadTimeout"


def test_body_that_stalls_times_out(server, hostport):
    with GuardedDownloader(frozenset({hostport}), max_bytes=CAP, timeout_s=0.2) as dl:
        with pytest.raises(AttachmentError) as info:
            dl.download(f"http://{hostport}/hang-body")
    assert info.value.reason_code == AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED
    assert info.value.details == "exception=ReadTimeout"


def test_connection_refused_is_download_failed():
    with socket.socket() as sock:  # a port that is bound but not listening refuses
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with GuardedDownloader(frozenset({f"127.0.0.1:{port}"}), max_bytes=CAP) as dl:
            with pytest.raises(AttachmentError) as info:
                dl.download(f"http://127.0.0.1:{port}/file")
    assert info.value.reason_code == AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED
    assert info.value.details == "exception=ConnectError"


def test_shared_downloader_is_safe_across_threads(server, hostport):
    with GuardedDownloader(frozenset({hostport}), max_bytes=CAP) as dl:
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(lambda _: dl.download(f"http://{hostport}/file"), range(32)))
    assert results == [(BODY, "image/png")] * 32
    assert len(server.hits) == 32


def test_attachment_threads_share_one_s3_client():
    """Concurrent first calls build one boto3 client (each build parses the S3 model: ~0.1 s)."""
    storage = AttachmentStorage(bucket="b", endpoint_url="http://127.0.0.1:9")
    barrier = threading.Barrier(8)

    def first_call(_):
        barrier.wait()
        return storage.client()

    with ThreadPoolExecutor(max_workers=8) as pool:
        clients = list(pool.map(first_call, range(8)))
    assert len({id(c) for c in clients}) == 1


# --- SSRF: every spelling of an internal or metadata address ----------------------------------

EXACT = frozenset({"meta.test:80"})  # an exact entry: internal allowed, metadata never


# Cloud metadata addresses in every IPv6 embedding (and as themselves).
METADATA_SPELLINGS = [
    "169.254.169.254",
    "169.254.170.2",
    "169.254.170.23",
    "100.100.100.200",
    "168.63.129.16",
    "192.0.0.192",  # Oracle; is_global() says True on Python 3.11.7 (CVE-2024-4032)
    "fd00:ec2::254",
    "fd00:ec2::23",
    "fd00:ec2::254%eth0",  # scope id from getaddrinfo
    "::ffff:169.254.169.254",  # IPv4-mapped
    "::ffff:a9fe:a9fe",
    "::169.254.169.254",  # IPv4-compatible
    "::ffff:0:a9fe:a9fe",  # IPv4-translated (SIIT)
    "64:ff9b::a9fe:a9fe",  # NAT64 well-known prefix
    "64:ff9b::169.254.169.254",
    "64:ff9b::c000:c0",  # NAT64 of 192.0.0.192
    "64:ff9b::a83f:8110",  # NAT64 of Azure WireServer (a public IPv4)
    "64:ff9b:1::a9fe:a9fe",  # NAT64 local-use, /96
    "64:ff9b:1:0:a9:fea9:fe00:0",  # local-use /64
    "64:ff9b:1:a9:fe:a9fe::",  # local-use /56
    "64:ff9b:1:a9fe:a9:fe00::",  # local-use /48
    "2002:a9fe:a9fe::",  # 6to4
    "2002:a9fe:a9fe:1234:5678:9abc:def0:1",
    "2002:6464:64c8::1",  # 6to4 of Alibaba's 100.100.100.200
    "2001:0:a9fe:a9fe::1",  # Teredo, server field
    "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo, obfuscated client field
    "2600::5efe:a9fe:a9fe",  # ISATAP interface id
    "2600::200:5efe:a9fe:a9fe",
]


@pytest.mark.parametrize("address", METADATA_SPELLINGS)
def test_metadata_in_any_spelling_is_blocked_even_behind_exact_entry(address):
    with pytest.raises(AttachmentError) as info:
        check_url("http://meta.test/latest", EXACT, fake_resolver(address))
    assert info.value.reason_code == AttachmentCode.ATTACHMENT_SSRF_BLOCKED
    assert "reason=metadata_address" in info.value.details


@pytest.mark.parametrize(
    ("literal", "entry"),
    [
        ("[::ffff:a9fe:a9fe]", "[::ffff:169.254.169.254]:80"),
        ("[0:0:0:0:0:ffff:a9fe:a9fe]", "[::ffff:a9fe:a9fe]:80"),
        ("[64:ff9b::a9fe:a9fe]", "[64:ff9b::a9fe:a9fe]:80"),
        ("[2002:a9fe:a9fe::]", "[2002:a9fe:a9fe::]:80"),
        ("192.0.0.192", "192.0.0.192:80"),
    ],
)
def test_metadata_literal_with_matching_exact_entry_is_blocked(literal, entry):
    resolver = fake_resolver("93.184.216.34")  # must not be consulted for literals
    code = _code(check_url, f"http://{literal}/latest", frozenset({entry}), resolver)
    assert code == AttachmentCode.ATTACHMENT_SSRF_BLOCKED
    assert resolver.calls == []


@pytest.mark.parametrize(
    "spelling",
    ["2852039166", "0xa9fea9fe", "0251.0376.0251.0376", "0xa9.0xfe.0xa9.0xfe", "169.254.43518"],
)
def test_metadata_numeric_spellings_resolved_by_getaddrinfo_are_blocked(spelling):
    """getaddrinfo turns these into 169.254.169.254 (no network); the check runs after it."""
    code = _code(
        check_url, f"http://{spelling}/latest", frozenset({f"{spelling}:80"}), socket.getaddrinfo
    )
    assert code == AttachmentCode.ATTACHMENT_SSRF_BLOCKED


@pytest.mark.parametrize(
    "spelling", ["2130706433", "0x7f000001", "017700000001", "127.1", "0177.0.0.1", "0", "0.0.0.0"]
)
def test_loopback_and_zero_numeric_spellings_are_blocked(spelling):
    code = _code(check_url, f"http://{spelling}/a", frozenset({spelling}), socket.getaddrinfo)
    assert code == AttachmentCode.ATTACHMENT_SSRF_BLOCKED


NON_PUBLIC_SAMPLES = [
    "0.1.2.3",
    "100.64.0.1",
    "100.127.255.254",
    "192.0.0.1",
    "192.0.0.9",  # inside 192.0.0.0/24; the True sub-rows are deliberately not carved out
    "192.0.0.170",
    "192.0.2.1",
    "192.88.99.1",
    "198.18.0.1",
    "198.19.255.255",
    "198.51.100.1",
    "203.0.113.1",
    "239.255.255.250",
    "255.255.255.255",
    "::ffff:8.8.8.8",  # IPv4-mapped: registry says not globally reachable
    "::8.8.8.8",
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::7f00:1",
    "64:ff9b::c0a8:1",
    "64:ff9b:1::808:808",  # local-use NAT64 is non-public whatever it embeds
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:c0a8:101::1",
    "2001::1",  # Teredo
    "2001:2::1",
    "2001:db8::1",
    "3fff::1",
    "5f00::1",
    "100::1",
    "100:0:0:1::1",
    "fec0::1",  # deprecated site-local, outside 2000::/3
    "ff02::1",
    "fe80::1%eth0",
    "2600::5efe:a00:1",  # ISATAP carrying 10.0.0.1
    "4000::1",
]


@pytest.mark.parametrize("address", NON_PUBLIC_SAMPLES)
def test_non_public_address_is_blocked_for_bare_entry(address):
    resolver = fake_resolver(address)
    code = _code(check_url, "https://files.crm.test/a", frozenset({"files.crm.test"}), resolver)
    assert code == AttachmentCode.ATTACHMENT_SSRF_BLOCKED


@pytest.mark.parametrize("address", ["10.0.0.9", "fd12::1", "2002:a00:1::1", "64:ff9b::a00:1"])
def test_non_metadata_internal_address_allowed_by_exact_entry(address):
    check_url("http://meta.test/a", EXACT, fake_resolver(address))


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "93.184.216.34",
        "192.0.1.1",
        "192.31.196.1",  # AS112, globally reachable
        "2606:4700::1111",
        "2001:4860:4860::8888",
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8 (DNS64 networks)
        "2002:808:808::1",  # 6to4 of 8.8.8.8
    ],
)
def test_public_address_is_allowed(address):
    check_url("https://files.crm.test/a", frozenset({"files.crm.test"}), fake_resolver(address))


@pytest.mark.parametrize(("network", "source"), NON_PUBLIC_NETWORKS)
def test_every_table_row_blocks_its_first_and_last_address(network, source):
    assert source
    for ip in (network.network_address, network.broadcast_address):
        resolver = fake_resolver(str(ip))
        code = _code(check_url, "https://files.crm.test/a", frozenset({"files.crm.test"}), resolver)
        assert code == AttachmentCode.ATTACHMENT_SSRF_BLOCKED, (network, ip)


# Rows of the IANA Special-Purpose Address Registries whose "Globally Reachable" is False.
IANA_NOT_GLOBALLY_REACHABLE = [
    "0.0.0.0/8", "0.0.0.0/32", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.0.0/29", "192.0.0.8/32", "192.0.0.170/32",
    "192.0.0.171/32", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "240.0.0.0/4", "255.255.255.255/32",
    "::1/128", "::/128", "::ffff:0:0/96", "64:ff9b:1::/48", "100::/64", "100:0:0:1::/64",
    "2001::/23", "2001:2::/48", "2001:db8::/32", "3fff::/20", "5f00::/16", "fc00::/7",
    "fe80::/10",
]  # fmt: skip


@pytest.mark.parametrize("row", IANA_NOT_GLOBALLY_REACHABLE + ["224.0.0.0/4", "ff00::/8"])
def test_table_covers_every_registry_row_that_is_not_globally_reachable(row):
    net = ipaddress.ip_network(row)
    assert any(net.subnet_of(n) for n, _ in NON_PUBLIC_NETWORKS if n.version == net.version)


def test_verdicts_do_not_use_the_ipaddress_properties(monkeypatch):
    """The table decides: ipaddress's is_* answers changed between patch releases."""

    def boom(self):
        raise AssertionError("ipaddress property consulted")

    for cls in (ipaddress.IPv4Address, ipaddress.IPv6Address):
        for name in ("is_global", "is_private", "is_reserved", "is_link_local", "is_loopback",
                     "is_multicast", "is_unspecified", "is_site_local"):  # fmt: skip
            if hasattr(cls, name):
                monkeypatch.setattr(cls, name, property(boom))
    for address in NON_PUBLIC_SAMPLES + METADATA_SPELLINGS:
        assert not is_public_address(ipaddress.ip_address(address.split("%", 1)[0]))
    assert is_public_address(ipaddress.ip_address("8.8.8.8"))
    test_metadata_in_any_spelling_is_blocked_even_behind_exact_entry("64:ff9b::c000:c0")


# --- one URL parser: hostile strings never escape as anything but AttachmentError --------------

HOSTILE_URLS = [
    " https://files.crm.test/x",
    "\thttps://files.crm.test/x",
    "\x00https://files.crm.test/x",
    "https://files.crm.test/x\n",
    "https://files\t.crm.test/x",
    "https://files.crm.test\r\n/x",
    "https://fi\x00les.crm.test/x",
    "https://files.crm.test\x7f/x",
    "https://files.crm.test\u0085/x",
    "https://files.crm.test\u200b/x",
    "https://files.crm.test:99999/x",
    "https://files.crm.test:0/x",
    "https://files.crm.test:-1/x",
    "https://files.crm.test:80:80/x",
    "https://files.crm.test:8o/x",
    "https://[::1/x",
    "https://[files.crm.test]/x",
    "https://[fe80::1%25eth0]/x",
    "https://%66iles.crm.test/x",
    "https://files crm.test/x",
    "https://user@files.crm.test/x",
    "https://files.crm.test\\@evil.example/x",
    "https:///x",
    "https:files.crm.test/x",
    "https://" + "a" * 300 + "/x",
    "https://" + "a." * 200 + "test/x",
    "https://xn--/x",
    "https://\u0430pple.test/x",
    "https://256.0.0.1/x",
    "//files.crm.test/x",
    "",
    "   ",
    "\ud800",
    None,
    42,
    b"https://files.crm.test/x",
    httpx.URL("ftp://files.crm.test/x"),
]


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_hostile_url_is_attachment_error_from_check_url_and_download(server, hostport, url):
    allowed = frozenset({"files.crm.test", "evil.example", hostport})
    with pytest.raises(AttachmentError):
        check_url(url, allowed, PUBLIC)
    with GuardedDownloader(allowed, max_bytes=CAP, resolver=fake_resolver("127.0.0.1")) as dl:
        with pytest.raises(AttachmentError) as info:
            dl.download(url)
    assert info.value.reason_code in (
        AttachmentCode.ATTACHMENT_SSRF_BLOCKED,
        AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED,
    )
    assert "/x" not in info.value.details
    assert server.hits == []


def test_leading_space_url_is_blocked_not_fetched(server, hostport, downloader):
    assert (
        _code(downloader.download, f" http://{hostport}/file")
        == AttachmentCode.ATTACHMENT_SSRF_BLOCKED
    )
    assert server.hits == []


@pytest.mark.parametrize("path", ["/redir-bad", "/redir-tab"])
def test_hostile_redirect_location_is_attachment_error(server, downloader, hostport, path):
    with pytest.raises(AttachmentError) as info:
        downloader.download(f"http://{hostport}{path}")
    assert info.value.reason_code in (
        AttachmentCode.ATTACHMENT_SSRF_BLOCKED,
        AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED,
    )
    assert server.hits[0] == path and "/file" not in server.hits


def test_resolver_misbehaving_is_attachment_error():
    def raising(*args, **kwargs):
        raise ValueError("embedded null character")

    def garbage(*args, **kwargs):
        return [(2, 1, 6, "", ("not-an-ip", 0)), (2, 1, 6, "", None)]

    allowed = frozenset({"files.crm.test"})
    assert _code(check_url, "https://files.crm.test/a", allowed, raising) == (
        AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED
    )
    assert _code(check_url, "https://files.crm.test/a", allowed, garbage) == (
        AttachmentCode.ATTACHMENT_SSRF_BLOCKED
    )
    assert _code(check_url, "https://files.crm.test/a", allowed, lambda *a: []) == (
        AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED
    )


# --- Content-Encoding: bounded decoding ------------------------------------------------------


def _encode(data: bytes | list[bytes], coding: str) -> bytes:
    """``data`` (or its chunks) compressed with gzip, deflate (zlib) or raw deflate."""
    wbits = {"gzip": 31, "deflate": 15, "raw": -15}[coding]
    comp = zlib.compressobj(9, zlib.DEFLATED, wbits)
    chunks = data if isinstance(data, list) else [data]
    return b"".join(comp.compress(c) for c in chunks) + comp.flush()


@functools.cache
def _bomb(mib: int, codings: tuple[str, ...]) -> bytes:
    """``mib`` MiB of zeros under ``codings`` (order applied): a few KiB on the wire."""
    body: bytes | list[bytes] = [bytes(MIB)] * mib
    for coding in codings:
        body = _encode(body, coding)
    assert isinstance(body, bytes)
    return body


def _serve(server, path: str, body: bytes, *encodings: str) -> None:
    server.canned[path] = (200, [("Content-Encoding", e) for e in encodings], body)


PLAIN = bytes(range(256)) * 700  # ~175 KiB, below CAP, not trivially compressible


@pytest.mark.parametrize(
    ("header", "codings"),
    [
        (["gzip"], ["gzip"]),
        (["x-gzip"], ["gzip"]),
        (["GZIP"], ["gzip"]),
        (["deflate"], ["deflate"]),
        (["deflate"], ["raw"]),
        (["gzip, gzip"], ["gzip", "gzip"]),
        (["deflate, gzip"], ["deflate", "gzip"]),
        (["gzip, deflate"], ["gzip", "raw"]),
        (["identity, gzip, identity"], ["gzip"]),
        (["gzip", "gzip"], ["gzip", "gzip"]),  # two header lines
        (["identity"], []),
        ([""], []),
    ],
)
def test_encoded_body_decodes_to_the_right_bytes(server, hostport, downloader, header, codings):
    body = PLAIN
    for coding in codings:
        body = _encode(body, coding)
    _serve(server, "/enc", body, *header)
    data, _ = downloader.download(f"http://{hostport}/enc")
    assert data == PLAIN


def test_multi_member_gzip_and_trailing_garbage(server, hostport, downloader):
    _serve(server, "/multi", _encode(b"one-", "gzip") + _encode(b"two", "gzip") + b"\0\0junk")
    server.canned["/multi"][1].append(("Content-Encoding", "gzip"))
    assert downloader.download(f"http://{hostport}/multi")[0] == b"one-two"


def test_decoded_body_exactly_at_cap_is_accepted_and_one_more_is_not(server, hostport, downloader):
    _serve(server, "/at-cap", _encode(b"a" * CAP, "gzip"), "gzip")
    _serve(server, "/over-cap", _encode(b"a" * (CAP + 1), "gzip"), "gzip")
    assert len(downloader.download(f"http://{hostport}/at-cap")[0]) == CAP
    with pytest.raises(AttachmentError) as info:
        downloader.download(f"http://{hostport}/over-cap")
    assert info.value.reason_code == AttachmentCode.ATTACHMENT_TOO_LARGE
    assert info.value.details == f"reason=decoded_over_cap max_bytes={CAP}"


BOMBS = [
    (64, ("gzip",), "gzip"),
    (256, ("gzip", "gzip"), "gzip, gzip"),
    (64, ("raw",), "deflate"),
    (64, ("deflate",), "deflate"),
    (64, ("deflate", "gzip"), "deflate, gzip"),
    (64, ("gzip", "deflate", "gzip"), "gzip, deflate, gzip"),
]


@pytest.mark.parametrize(("mib", "codings", "header"), BOMBS)
def test_decompression_bomb_stops_at_cap(server, hostport, downloader, transport, mib, codings,
                                         header):  # fmt: skip
    body = _bomb(mib, codings)
    assert len(body) < 300 * 1024  # tiny on the wire, mib MiB decoded
    _serve(server, "/bomb", body, header)
    with pytest.raises(AttachmentError) as info:
        downloader.download(f"http://{hostport}/bomb")
    assert info.value.reason_code == AttachmentCode.ATTACHMENT_TOO_LARGE
    assert "decoded_over_cap" in info.value.details


def test_gzip_gzip_bomb_peak_memory_stays_near_cap(server, hostport):
    """tracemalloc peak of a 512 MiB gzip,gzip bomb download with a 1 MiB cap."""
    cap = 1 * MIB
    body = _bomb(512, ("gzip", "gzip"))
    _serve(server, "/bomb", body, "gzip, gzip")
    with GuardedDownloader(frozenset({hostport}), max_bytes=cap) as dl:
        assert dl.download(f"http://{hostport}/file")[0] == BODY  # warm the pool and imports
        tracemalloc.start()
        try:
            with pytest.raises(AttachmentError) as info:
                dl.download(f"http://{hostport}/bomb")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert info.value.reason_code == AttachmentCode.ATTACHMENT_TOO_LARGE
    print(f"gzip,gzip bomb ({len(body)} B on the wire): tracemalloc peak {peak / MIB:.2f} MiB")
    assert peak < cap + 3 * MIB


@pytest.mark.parametrize(
    "header",
    ["br", "zstd", "compress", "x-compress", "foo", "gzip, br", "br, gzip", "gzip;q=1", "\x7f",
     "a" * 100, "deflate, snappy"],
)  # fmt: skip
def test_unknown_encoding_is_download_failed(server, hostport, downloader, header):
    _serve(server, "/enc", _encode(PLAIN, "gzip"), header)
    with pytest.raises(AttachmentError) as info:
        downloader.download(f"http://{hostport}/enc")
    assert info.value.reason_code == AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED
    assert info.value.details.startswith("reason=unsupported_encoding encoding=")
    assert len(info.value.details) < 80


def test_overlong_encoding_chain_is_refused(server, hostport, downloader):
    _serve(server, "/chain", b"\0" * 100, ", ".join(["gzip"] * 5))
    with pytest.raises(AttachmentError) as info:
        downloader.download(f"http://{hostport}/chain")
    assert info.value.details == "reason=encoding_chain_too_long codings=5"


@pytest.mark.parametrize(
    ("body", "header", "word"),
    [
        (b"plain text, not gzip", "gzip", "bad_encoding"),
        (_encode(PLAIN, "gzip")[:-100], "gzip", "truncated_encoding"),
        (_encode(PLAIN, "gzip")[:5], "gzip", "truncated_encoding"),
        (_encode(PLAIN, "deflate")[:1], "deflate", "truncated_encoding"),
        (_encode(PLAIN, "deflate")[:-50], "deflate", "truncated_encoding"),
        (b"\x78\x9c" + b"\xff" * 64, "deflate", "bad_encoding"),
        (_encode(_encode(PLAIN, "gzip")[:-30], "gzip"), "gzip, gzip", "truncated_encoding"),
    ],
)
def test_corrupt_or_truncated_encoding_is_download_failed(server, hostport, downloader, body,
                                                          header, word):  # fmt: skip
    _serve(server, "/bad", body, header)
    with pytest.raises(AttachmentError) as info:
        downloader.download(f"http://{hostport}/bad")
    assert info.value.reason_code == AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED
    assert info.value.details.startswith(f"reason={word} ")


def test_decoder_steps_stay_small_whatever_the_ratio():
    pieces = decoded_stream(iter([_bomb(64, ("gzip", "gzip"))]), ["gzip", "gzip"])
    sizes = [len(next(pieces)) for _ in range(50)]
    assert max(sizes) <= 64 * 1024


# --- the whole-download deadline --------------------------------------------------------------


class TrickleClock:
    """Fake monotonic clock: TRICKLE_STEP_S per byte the server has sent; each reading lets
    the lock-stepped server send one more byte (a server trickling a byte every 0.5 s)."""

    def __init__(self, server) -> None:
        self.server = server

    def __call__(self) -> float:
        self.server.tick.set()
        return TRICKLE_STEP_S * self.server.sent


def _trickle_bytes_allowed(deadline_s: float) -> int:
    return int(deadline_s / TRICKLE_STEP_S)


@pytest.mark.parametrize("own_transport", [True, False])
def test_trickling_body_is_cut_at_the_deadline(server, hostport, own_transport):
    client = httpx.Client(transport=DeadlineTransport() if own_transport else httpx.HTTPTransport())
    dl = GuardedDownloader(
        frozenset({hostport}), max_bytes=CAP, timeout_s=5.0, client=client,
        deadline_s=10.0, clock=TrickleClock(server),
    )  # fmt: skip
    with pytest.raises(AttachmentError) as info:
        dl.download(f"http://{hostport}/trickle-body")
    client.close()
    assert info.value.reason_code == AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED
    assert info.value.details == "reason=deadline"
    allowed = _trickle_bytes_allowed(10.0)
    assert allowed <= server.sent <= allowed + 2 < TRICKLE_LENGTH


def test_trickling_headers_are_cut_at_the_deadline(server, hostport):
    dl = GuardedDownloader(
        frozenset({hostport}), max_bytes=CAP, timeout_s=5.0, deadline_s=10.0,
        clock=TrickleClock(server),
    )  # fmt: skip
    with dl, pytest.raises(AttachmentError) as info:
        dl.download(f"http://{hostport}/trickle-headers")
    assert info.value.reason_code == AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED
    assert info.value.details == "reason=deadline"
    allowed = _trickle_bytes_allowed(10.0)
    assert allowed <= server.sent <= allowed + 2 < TRICKLE_LENGTH


@pytest.mark.parametrize("path", ["/hang", "/hang-body"])
def test_single_blocked_read_does_not_outlive_the_deadline(server, hostport, path):
    """Per-read timeout 600 s, deadline 0.2 s: only the deadline can end this read."""
    with GuardedDownloader(
        frozenset({hostport}), max_bytes=CAP, timeout_s=600.0, deadline_s=0.2
    ) as dl:
        with pytest.raises(AttachmentError) as info:
            dl.download(f"http://{hostport}{path}")
    assert info.value.reason_code == AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED
    assert info.value.details == "reason=deadline"
    assert server.hits == [path]


def test_slow_dns_counts_against_the_deadline(server, hostport):
    now = [0.0]
    port = hostport.split(":")[1]
    resolve = fake_resolver("127.0.0.1")

    def slow_resolver(*args, **kwargs):
        now[0] += 11.0
        return resolve(*args, **kwargs)

    with GuardedDownloader(
        frozenset({f"files.crm.test:{port}"}), max_bytes=CAP, resolver=slow_resolver,
        clock=lambda: now[0],
    ) as dl:  # fmt: skip
        assert _code(dl.download, f"http://files.crm.test:{port}/file") == (
            AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED
        )
    assert server.hits == []


MAX_HOPS = 4  # a redirect loop without the deadline hits the server 4 times


def test_deadline_spans_redirect_hops(server, hostport):
    now = [0.0]

    def clock() -> float:
        now[0] += 0.5
        return now[0]

    with GuardedDownloader(frozenset({hostport}), max_bytes=CAP, deadline_s=4.0, clock=clock) as dl:
        with pytest.raises(AttachmentError) as info:
            dl.download(f"http://{hostport}/loop")
    assert info.value.details == "reason=deadline"
    assert 1 <= len(server.hits) < MAX_HOPS


def test_settings_carry_the_deadline_and_storage_passes_it():
    settings = MigrationSettings()
    assert settings.attachment_deadline_s == 10.0
    assert settings.attachment_max_bytes == 25 * MIB
    dl = AttachmentStorage(bucket="b").downloader(frozenset({"h"}), 5, 1.0, 2.5)
    assert (dl.deadline_s, dl.max_bytes, dl.timeout_s) == (2.5, 5, 1.0)
    dl.close()
