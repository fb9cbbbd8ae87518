"""notes_pipeline: migrate legacy CRM contact notes into CDP contact_notes, one CID at a time."""
