"""One TLS context per process for the HTTP clients.

Building a verifying context reads the whole CA bundle (~20 ms of CPU); a run made one per HTTP
client. ``ssl.SSLContext`` is safe to share between clients and threads.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def client_ssl_context(verify: bool = True, trust_env: bool = True) -> ssl.SSLContext:
    """httpx's client context (``httpx.create_ssl_context``), built once per process.

    Args:
        verify: check the server's certificate against the CA bundle (certifi's, or
            ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when ``trust_env``).
        trust_env: honour ``SSL_CERT_FILE``/``SSL_CERT_DIR``; the attachment downloader passes
            False (no environment may change what it trusts).

    Raises:
        OSError, ssl.SSLError: the CA bundle cannot be read (``SSL_CERT_FILE`` names a missing
            or invalid file).
    """
    return httpx.create_ssl_context(verify=verify, trust_env=trust_env)
