"""Asset checks: the migration gates of SPEC.md."""
