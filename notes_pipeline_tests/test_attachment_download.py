"""SSRF guard and GuardedDownloader against a real local HTTP server (no sleeps)."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from notes_pipeline.reason_codes import (
    ATTACHMENT_DOWNLOAD_FAILED,
    ATTACHMENT_SSRF_BLOCKED,
    ATTACHMENT_TOO_LARGE,
)
from notes_pipeline.resources.attachment_download import (
    AttachmentError,
    GuardedDownloader,
    check_url,
)
from notes_pipeline.resources.storage import AttachmentStorage

CAP = 256 * 1024
HUGE = 32 * 1024 * 1024  # far beyond CAP plus any socket buffering
WRITE_CHUNK = 16 * 1024
HTTPCORE_READ = 64 * 1024  # bytes httpcore reads from the socket at a time
BODY = b"\x89PNG\r\n\x1a\nattachment-bytes"


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
        if route is None:
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
    """Real HTTP transport that counts the body bytes handed to the client."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
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
    assert _code(check_url, url, frozenset({"files.crm.test"}), PUBLIC) == ATTACHMENT_SSRF_BLOCKED


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
    assert code == ATTACHMENT_SSRF_BLOCKED


def test_any_internal_answer_among_public_ones_is_blocked():
    resolver = fake_resolver("93.184.216.34", "10.0.0.7")
    code = _code(check_url, "https://files.crm.test/a", frozenset({"files.crm.test"}), resolver)
    assert code == ATTACHMENT_SSRF_BLOCKED


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
    assert code == ATTACHMENT_SSRF_BLOCKED


def test_metadata_address_blocked_even_when_exactly_allow_listed():
    allowed = frozenset({"169.254.169.254:80", "meta.test:80"})
    assert (
        _code(check_url, "http://169.254.169.254/latest", allowed, fake_resolver("169.254.169.254"))
        == ATTACHMENT_SSRF_BLOCKED
    )
    assert (
        _code(check_url, "http://meta.test/latest", allowed, fake_resolver("fd00:ec2::254"))
        == ATTACHMENT_SSRF_BLOCKED
    )


def test_dns_failure_is_download_failed():
    def failing(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "no such host")

    code = _code(check_url, "https://files.crm.test/a", frozenset({"files.crm.test"}), failing)
    assert code == ATTACHMENT_DOWNLOAD_FAILED


# --- GuardedDownloader ------------------------------------------------------------------------


def test_allow_listed_exact_host_port_downloads(server, hostport, downloader):
    body, content_type = downloader.download(f"http://{hostport}/file")
    assert body == BODY
    assert content_type == "image/png"
    assert server.hits == ["/file"]


def test_same_server_not_allow_listed_is_blocked_without_a_request(server, hostport):
    for allowed in ({"127.0.0.1"}, {"localhost:" + hostport.split(":")[1]}, set()):
        with GuardedDownloader(frozenset(allowed), max_bytes=CAP) as dl:
            assert _code(dl.download, f"http://{hostport}/file") == ATTACHMENT_SSRF_BLOCKED
    assert server.hits == []


@pytest.mark.parametrize("address", ["10.0.0.8", "169.254.169.254", "127.0.0.1"])
def test_allow_listed_name_resolving_internally_is_blocked(server, hostport, address):
    port = hostport.split(":")[1]
    with GuardedDownloader(
        frozenset({"files.crm.test"}), max_bytes=CAP, resolver=fake_resolver(address)
    ) as dl:
        code = _code(dl.download, f"http://files.crm.test:{port}/file")
        assert code == ATTACHMENT_SSRF_BLOCKED
        assert _code(dl.download, "http://files.crm.test/file") == ATTACHMENT_SSRF_BLOCKED
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
    assert _code(downloader.download, f"http://{hostport}{path}") == ATTACHMENT_SSRF_BLOCKED
    assert server.hits == [path]


def test_redirect_loop_stops_after_three_hops(server, downloader, hostport):
    assert _code(downloader.download, f"http://{hostport}/loop") == ATTACHMENT_DOWNLOAD_FAILED
    assert server.hits == ["/loop"] * 4


@pytest.mark.parametrize(("path", "status"), [("/missing", "404"), ("/gone", "500")])
def test_non_2xx_is_download_failed_without_query_string(downloader, hostport, path, status):
    with pytest.raises(AttachmentError) as info:
        downloader.download(f"http://{hostport}{path}?X-Amz-Signature=SECRET")
    assert info.value.reason_code == ATTACHMENT_DOWNLOAD_FAILED
    assert f"status={status}" in info.value.details
    assert "SECRET" not in str(info.value) and "SECRET" not in info.value.details


def test_body_exactly_at_cap_is_accepted(downloader, hostport):
    body, content_type = downloader.download(f"http://{hostport}/exact")
    assert len(body) == CAP and content_type == "application/pdf"


def test_declared_length_over_cap_aborts_before_reading(downloader, hostport, transport):
    assert _code(downloader.download, f"http://{hostport}/big-declared") == ATTACHMENT_TOO_LARGE
    assert transport.body_bytes == 0


@pytest.mark.parametrize("path", ["/big-chunked", "/big-unsized"])
def test_undeclared_body_over_cap_stops_reading(server, downloader, hostport, transport, path):
    assert _code(downloader.download, f"http://{hostport}{path}") == ATTACHMENT_TOO_LARGE
    assert CAP < transport.body_bytes <= CAP + HTTPCORE_READ
    assert server.done.wait(30), "server handler never finished"
    assert server.client_hung_up, "client read the whole body instead of hanging up"
    assert server.sent < HUGE


def test_server_that_never_answers_times_out(server, hostport):
    with GuardedDownloader(frozenset({hostport}), max_bytes=CAP, timeout_s=0.2) as dl:
        with pytest.raises(AttachmentError) as info:
            dl.download(f"http://{hostport}/hang")
    assert info.value.reason_code == ATTACHMENT_DOWNLOAD_FAILED
    assert info.value.details == "exception=ReadTimeout"


def test_body_that_stalls_times_out(server, hostport):
    with GuardedDownloader(frozenset({hostport}), max_bytes=CAP, timeout_s=0.2) as dl:
        with pytest.raises(AttachmentError) as info:
            dl.download(f"http://{hostport}/hang-body")
    assert info.value.reason_code == ATTACHMENT_DOWNLOAD_FAILED
    assert info.value.details == "exception=ReadTimeout"


def test_connection_refused_is_download_failed():
    with socket.socket() as sock:  # a port that is bound but not listening refuses
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with GuardedDownloader(frozenset({f"127.0.0.1:{port}"}), max_bytes=CAP) as dl:
            with pytest.raises(AttachmentError) as info:
                dl.download(f"http://127.0.0.1:{port}/file")
    assert info.value.reason_code == ATTACHMENT_DOWNLOAD_FAILED
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
