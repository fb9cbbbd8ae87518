"""Pure rules of the contact-notes family (SPEC rules 1-7), unit-tested without Dagster."""
