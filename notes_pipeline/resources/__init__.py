"""Re-exports at their original paths; the resources live in ``notes_pipeline.core.resources``."""
