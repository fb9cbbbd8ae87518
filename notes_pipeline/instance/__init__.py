"""Dagster instance parts referenced from ``dagster.yaml``: storage and run launcher."""
