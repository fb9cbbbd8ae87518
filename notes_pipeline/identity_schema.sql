-- The local stack's stand-in for the identity service (Launchpad): CRM user email -> SSO uuid.
CREATE TABLE IF NOT EXISTS sso_users (
    company_sso_id  text NOT NULL,
    email           text NOT NULL,
    sso_id          text NOT NULL,
    PRIMARY KEY (company_sso_id, email)
);
