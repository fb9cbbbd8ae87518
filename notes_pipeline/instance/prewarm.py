"""Process-wide caches every run worker needs, built once in the run-worker zygote.

Listed in ``dagster.yaml`` ``run_launcher.config.preload_modules``: the zygote imports it before
it forks, so each forked run worker inherits

- boto3's default session with botocore's endpoint data and S3 model already loaded: a run's
  ``boto3.client("s3")`` (``AttachmentStorage.client``) costs ~8 ms of CPU instead of ~120 ms;
- the HTTP clients' TLS contexts (``client_ssl_context``): ~20 ms each.

Importing it opens no connection and resolves no credentials (the S3 client built here gets
placeholder keys and is dropped). It never fails: a cache that cannot be built (``SSL_CERT_FILE``
naming a missing file, an unparsable AWS config file) is logged and left to the runs that need
it, which then fail as they did without prewarm; an import error would stop the zygote from
starting, so every launch would fail, the runs that never use S3 or HTTP included.
"""

from __future__ import annotations

import logging

import boto3

from notes_pipeline.core.resources.tls import client_ssl_context

log = logging.getLogger(__name__)


def prewarm() -> None:
    """Load botocore's S3 data into boto3's default session and build the TLS contexts; each
    step that fails is logged (warning) and skipped."""
    steps = {
        "boto3 S3 model": lambda: boto3.client(
            "s3",
            region_name="us-east-1",
            aws_access_key_id="prewarm",
            aws_secret_access_key="prewarm",
        ),
        "TLS context": lambda: client_ssl_context(),
        "TLS context (trust_env=False)": lambda: client_ssl_context(verify=True, trust_env=False),
    }
    for name, step in steps.items():
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - an optimisation; the run hits it again
            log.warning("prewarm: %s not built (%s)", name, type(exc).__name__)


prewarm()
