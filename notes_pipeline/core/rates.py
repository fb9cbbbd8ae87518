"""Counts to rates, once: percentages (``_pct``, 0-100) and fractions (0-1), and the halt rule.

SPEC "Loading": ``failure_rate = failed / (migrated + skipped + failed)``; above the threshold
the load halts, the load check fails and the report is not a success.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import TypeVar

T = TypeVar("T")


def pct(part: int, whole: int) -> float:
    """``part / whole`` in percent, rounded to 3 decimals; 100.0 when ``whole`` is 0."""
    return round(part / whole * 100, 3) if whole else 100.0


def batches(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size`` (``size`` ≥ 1)."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def iter_batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` (any iterable, read lazily) in consecutive lists of at most ``size``
    (``size`` ≥ 1): memory is one batch."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def failure_rate(failed: int, migrated: int, skipped: int) -> float:
    """``failed / (migrated + skipped + failed)`` as a fraction; 0.0 when nothing was attempted."""
    attempted = migrated + skipped + failed
    return failed / attempted if attempted else 0.0


def failure_rate_pct(failed: int, migrated: int, skipped: int) -> float:
    """``failure_rate`` in percent, rounded to 3 decimals."""
    return round(failure_rate(failed, migrated, skipped) * 100, 3)


def exceeds_failure_threshold(
    failed: int, migrated: int, skipped: int, threshold_pct: float
) -> bool:
    """The halt rule: True when the failure rate is above ``threshold_pct`` (percent)."""
    return failure_rate(failed, migrated, skipped) * 100 > threshold_pct
