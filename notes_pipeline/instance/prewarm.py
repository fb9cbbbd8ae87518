"""Process-wide caches every run worker needs, built once in the run-worker zygote.

Listed in ``dagster.yaml`` ``run_launcher.config.preload_modules``: the zygote imports it before
it forks, so each forked run worker inherits

- boto3's default session with botocore's endpoint data and S3 model already loaded: a run's
  ``boto3.client("s3")`` (``AttachmentStorage.client``) costs ~8 ms of CPU instead of ~120 ms;
- the HTTP clients' TLS contexts (``client_ssl_context``): ~20 ms each.

Importing it opens no connection and resolves no credentials (the S3 client built here gets
placeholder keys and is dropped).
"""

from __future__ import annotations

import boto3

from notes_pipeline.core.resources.tls import client_ssl_context


def prewarm() -> None:
    """Load botocore's S3 data into boto3's default session and build the TLS contexts."""
    boto3.client(
        "s3",
        region_name="us-east-1",
        aws_access_key_id="prewarm",
        aws_secret_access_key="prewarm",
    )
    client_ssl_context()
    client_ssl_context(verify=True, trust_env=False)


prewarm()
