"""Deterministic, seeded synthetic CRM data for local runs and tests.

``build_dataset(profile, seed)`` is pure; ``writer.seed`` loads a Dataset into the
stack (CRM PostgreSQL, identity table, CDP contacts, S3 attachments).
"""

from devtools.synthetic.dataset import (
    DEFAULT_ALLOWED_NOTE_TYPES,
    NOTE_TYPES,
    PROFILES,
    Dataset,
    StoredObject,
    build_dataset,
    decoy_company_sso_id,
    profile_sizes,
    synthetic_cids,
)

__all__ = [
    "DEFAULT_ALLOWED_NOTE_TYPES",
    "NOTE_TYPES",
    "PROFILES",
    "Dataset",
    "StoredObject",
    "build_dataset",
    "decoy_company_sso_id",
    "profile_sizes",
    "synthetic_cids",
]
