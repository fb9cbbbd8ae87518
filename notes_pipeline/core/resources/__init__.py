"""Dagster resources: the CRM source, CDP MongoDB, attachment storage, identity, settings."""
