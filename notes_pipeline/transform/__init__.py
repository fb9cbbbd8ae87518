"""Re-exports of issue #8's entry points at their original paths; the rules now live in
``notes_pipeline.contact_notes.rules`` and ``notes_pipeline.core.timestamps``."""
