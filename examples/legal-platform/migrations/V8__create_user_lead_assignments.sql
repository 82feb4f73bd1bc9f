-- Who works which lead, per territory. A lead can be shared across territories.

CREATE TABLE user_lead_assignments (
    lead_id      bigint      NOT NULL REFERENCES leads (id) ON DELETE CASCADE,
    territory    text        NOT NULL CHECK (territory <> ''),
    user_name    text        NOT NULL,
    can_edit     boolean     NOT NULL DEFAULT false,
    assigned_at  timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (lead_id, territory)
);

CREATE TRIGGER user_lead_assignments_updated_at BEFORE UPDATE ON user_lead_assignments
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
