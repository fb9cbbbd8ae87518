"""Re-export: ``notes_pipeline.core.resources.attachment_download`` (SPEC "Loading")."""

from notes_pipeline.core.resources.attachment_download import (
    AttachmentError,
    GuardedDownloader,
    check_url,
)

__all__ = ["AttachmentError", "GuardedDownloader", "check_url"]
