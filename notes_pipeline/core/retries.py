"""Retrying a read whose failure the report survives (``VALIDATION_SKIPPED``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import tenacity

T = TypeVar("T")


def with_retries(call: Callable[[], T], attempts: int = 3, wait_s: float = 0.5) -> T | None:
    """``call()``, retried on any exception with exponential waits from ``wait_s`` seconds;
    None when every attempt failed (the caller reports VALIDATION_SKIPPED)."""
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_exponential(multiplier=wait_s, max=10 * wait_s),
        retry=tenacity.retry_if_exception_type(Exception),
        reraise=False,
    )
    try:
        return retrying(call)
    except tenacity.RetryError:
        return None
