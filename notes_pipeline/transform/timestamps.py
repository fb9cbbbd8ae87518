"""Re-export: ``notes_pipeline.core.timestamps`` (SPEC rule 5)."""

from notes_pipeline.core.timestamps import InvalidTimestamp, TimestampWindow, to_utc

__all__ = ["InvalidTimestamp", "TimestampWindow", "to_utc"]
