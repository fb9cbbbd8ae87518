"""Developer tooling (local stack services, synthetic data); not part of the notes_pipeline
product package."""
