-- CRM source tables of the activity-log family (SPEC-activity-logs §2, [N1]) that
-- notes_pipeline/crm_schema.sql lacks. Apply AFTER crm_schema.sql (it defines organizations,
-- users, crm_people, crm_deals and crm_tickets, which are reused here as they are).
-- The pipeline only reads these tables; the synthetic generator creates them.

-- Owner tables of the account predicate [N1] (same shape as crm_deals / crm_tickets).
CREATE TABLE IF NOT EXISTS crm_tasks (
    id bigint PRIMARY KEY, organization_id bigint NOT NULL REFERENCES organizations (id), name text NOT NULL
);
-- Join models (Crm::DealPerson, Crm::TaskPerson, Crm::TicketPerson; class names are OQ-12).
-- No foreign keys to the owners: audits outlive hard-deleted rows ("unattributable", [N1]).
CREATE TABLE IF NOT EXISTS crm_deal_people (
    id               bigint PRIMARY KEY,
    organization_id  bigint NOT NULL REFERENCES organizations (id),
    crm_deal_id      bigint NOT NULL,
    crm_person_id    bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS crm_task_people (
    id               bigint PRIMARY KEY,
    organization_id  bigint NOT NULL REFERENCES organizations (id),
    crm_task_id      bigint NOT NULL,
    crm_person_id    bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS crm_ticket_people (
    id               bigint PRIMARY KEY,
    organization_id  bigint NOT NULL REFERENCES organizations (id),
    crm_ticket_id    bigint NOT NULL,
    crm_person_id    bigint NOT NULL
);
-- Per-account lookups of the account predicate [N1]: owner ids of one CID.
CREATE INDEX IF NOT EXISTS crm_people_org_id ON crm_people (organization_id, id);
CREATE INDEX IF NOT EXISTS crm_deals_org_id ON crm_deals (organization_id, id);
CREATE INDEX IF NOT EXISTS crm_tasks_org_id ON crm_tasks (organization_id, id);
CREATE INDEX IF NOT EXISTS crm_tickets_org_id ON crm_tickets (organization_id, id);
CREATE INDEX IF NOT EXISTS crm_deal_people_org_id ON crm_deal_people (organization_id, id);
CREATE INDEX IF NOT EXISTS crm_task_people_org_id ON crm_task_people (organization_id, id);
CREATE INDEX IF NOT EXISTS crm_ticket_people_org_id ON crm_ticket_people (organization_id, id);

-- The Rails `audited` gem's table (§2): 15M+ rows in production, no tenant column [N1].
CREATE TABLE IF NOT EXISTS audits (
    id               bigint PRIMARY KEY,             -- keyset cursor (§3)
    auditable_id     bigint,
    auditable_type   text,                           -- e.g. Crm::Person, Crm::DealPerson
    associated_id    bigint,
    associated_type  text,
    user_id          bigint,                         -- users.id; NULL = system (A1)
    user_type        text,
    username         text,
    action           text,                           -- create / update / destroy
    audited_changes  text,                           -- YAML (Psych, Ruby tags) or JSON
    version          integer DEFAULT 0,
    comment          text,                           -- may hold JSON {"crm_person_id": …}
    remote_address   text,
    request_uuid     text,
    created_at       timestamp                       -- the gem's column: no zone, UTC (§4.5)
);
-- The gem's own indexes. Deliberately NO (auditable_type, created_at) index: production lacks
-- it (Decision 7, OQ-2); adding it is a CRM-side remedy tracked separately.
CREATE INDEX IF NOT EXISTS auditable_index ON audits (auditable_type, auditable_id, version);
CREATE INDEX IF NOT EXISTS associated_index ON audits (associated_type, associated_id);
CREATE INDEX IF NOT EXISTS user_index ON audits (user_id, user_type);
CREATE INDEX IF NOT EXISTS index_audits_on_request_uuid ON audits (request_uuid);
CREATE INDEX IF NOT EXISTS index_audits_on_created_at ON audits (created_at);
