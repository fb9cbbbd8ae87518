"""The contact-notes family (``../shared/SPEC.md``): CRM notes → CDP ``contact_notes``."""
