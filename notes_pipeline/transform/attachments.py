"""Re-export: ``notes_pipeline.contact_notes.rules.attachments`` (SPEC rule 6)."""

from notes_pipeline.contact_notes.rules.attachments import magic_matches, sniff_type

__all__ = ["magic_matches", "sniff_type"]
