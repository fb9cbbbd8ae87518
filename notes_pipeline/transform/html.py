"""Re-export: ``notes_pipeline.contact_notes.rules.html`` (SPEC rule 4)."""

from notes_pipeline.contact_notes.rules.html import NoteContentError, normalize_note_html

__all__ = ["NoteContentError", "normalize_note_html"]
