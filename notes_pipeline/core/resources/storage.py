"""AttachmentStorage: the CDP bucket (boto3) plus guarded downloads of CRM attachment URLs."""

from __future__ import annotations

import threading

import boto3
import dagster as dg
from botocore.config import Config
from pydantic import Field, PrivateAttr

from notes_pipeline.core.resources.attachment_download import GuardedDownloader


class AttachmentStorage(dg.ConfigurableResource):
    """S3-compatible CDP storage; credentials come from the standard AWS environment."""

    bucket: str = Field(description="CDP bucket receiving re-hosted attachments and error logs.")
    endpoint_url: str | None = Field(default=None, description="S3 endpoint (None = AWS).")
    region_name: str = "us-east-1"

    _client = PrivateAttr(default=None)
    _client_lock = PrivateAttr(default_factory=threading.Lock)

    def client(self):
        """One boto3 client per resource; the attachment threads share it."""
        with self._client_lock:
            if self._client is None:
                self._client = boto3.client(
                    "s3",
                    endpoint_url=self.endpoint_url,
                    region_name=self.region_name,
                    config=Config(max_pool_connections=32, retries={"max_attempts": 2}),
                )
            return self._client

    def downloader(
        self,
        allowed_hosts: frozenset[str],
        max_bytes: int,
        timeout_s: float,
        deadline_s: float = 10.0,  # SPEC: 10 s deadline for the whole download
    ) -> GuardedDownloader:
        """A guarded downloader: cap ``max_bytes`` (received and decoded), per-operation
        ``timeout_s`` and whole-download ``deadline_s`` in seconds (SPEC "Loading")."""
        return GuardedDownloader(
            allowed_hosts, max_bytes=max_bytes, timeout_s=timeout_s, deadline_s=deadline_s
        )

    def put(self, key: str, data: bytes, content_type: str | None) -> None:
        """Write ``data`` at ``key`` (content type set when given); boto3 errors propagate."""
        extra = {"ContentType": content_type} if content_type else {}
        self.client().put_object(Bucket=self.bucket, Key=key, Body=data, **extra)

    def list_keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, all pages."""
        keys: list[str] = []
        paginator = self.client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys

    def delete_keys(self, keys: list[str]) -> int:
        """Delete ``keys`` (1,000 per request); returns how many were asked for."""
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            self.client().delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
            )
        return len(keys)

    def location(self, key: str) -> str:
        """``s3://bucket/key``, for metadata and error-log links."""
        return f"s3://{self.bucket}/{key}"
