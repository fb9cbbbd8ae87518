-- Legacy CRM source schema (SPEC.md "Source"; PRD §9.1, Appendix A).
-- The pipeline only reads these tables; the synthetic generator creates them.
CREATE TABLE IF NOT EXISTS organizations (
    id              bigint PRIMARY KEY,          -- the CID
    name            text   NOT NULL,
    company_sso_id  text   NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS users (
    id               bigint PRIMARY KEY,
    organization_id  bigint NOT NULL REFERENCES organizations (id),
    full_name        text   NOT NULL,
    email            text,
    deleted_at       timestamptz
);
CREATE TABLE IF NOT EXISTS crm_people (
    id               bigint PRIMARY KEY,
    organization_id  bigint NOT NULL REFERENCES organizations (id),
    full_name        text   NOT NULL,
    email            text,
    phone            text
);
CREATE TABLE IF NOT EXISTS crm_companies (
    id bigint PRIMARY KEY, organization_id bigint NOT NULL REFERENCES organizations (id), name text NOT NULL
);
CREATE TABLE IF NOT EXISTS crm_deals (
    id bigint PRIMARY KEY, organization_id bigint NOT NULL REFERENCES organizations (id), name text NOT NULL
);
CREATE TABLE IF NOT EXISTS crm_tickets (
    id bigint PRIMARY KEY, organization_id bigint NOT NULL REFERENCES organizations (id), name text NOT NULL
);
CREATE TABLE IF NOT EXISTS crm_note_types (
    id    integer PRIMARY KEY,
    name  text    NOT NULL
);
CREATE TABLE IF NOT EXISTS crm_notes (
    id                bigint PRIMARY KEY,
    organization_id   bigint  NOT NULL REFERENCES organizations (id),
    type              text    NOT NULL,             -- STI: Crm::PersonNote / DealNote / CompanyNote / TicketNote
    crm_person_id     bigint,
    crm_company_id    bigint,
    crm_deal_id       bigint,
    crm_ticket_id     bigint,
    crm_note_type_id  integer REFERENCES crm_note_types (id),
    note              text,                          -- rich HTML
    creator_id        bigint,
    created_at        timestamptz,
    updated_at        timestamptz
);
CREATE INDEX IF NOT EXISTS crm_notes_org_id ON crm_notes (organization_id, id);
CREATE TABLE IF NOT EXISTS assets (                  -- images and audios of a note
    id              bigint PRIMARY KEY,
    assetable_type  text   NOT NULL,                 -- 'Crm::Note'
    assetable_id    bigint NOT NULL,
    kind            text   NOT NULL CHECK (kind IN ('image', 'audio')),
    file_url        text   NOT NULL,
    file_name       text   NOT NULL,
    content_type    text,
    file_size       bigint
);
CREATE INDEX IF NOT EXISTS assets_assetable ON assets (assetable_type, assetable_id);
CREATE TABLE IF NOT EXISTS crm_note_attachments (    -- documents
    id            bigint PRIMARY KEY,
    crm_note_id   bigint NOT NULL,
    file_url      text   NOT NULL,
    file_name     text   NOT NULL,
    content_type  text,
    file_size     bigint
);
CREATE INDEX IF NOT EXISTS crm_note_attachments_note ON crm_note_attachments (crm_note_id);
CREATE TABLE IF NOT EXISTS crm_checkins (            -- geolocation; deliberately not migrated (D-10)
    id             bigint PRIMARY KEY,
    crm_note_id    bigint NOT NULL,
    latitude       numeric(9, 6),
    longitude      numeric(9, 6),
    address        text,
    checked_in_at  timestamptz
);
CREATE INDEX IF NOT EXISTS crm_checkins_note ON crm_checkins (crm_note_id);
