-- Every read or edit of a protected lead, for the compliance team. Append-only by policy.

CREATE TABLE lead_access_audit (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lead_id     bigint      NOT NULL REFERENCES leads (id) ON DELETE CASCADE,
    territory   text        NOT NULL,
    user_name   text        NOT NULL,
    action      text        NOT NULL CHECK (action IN ('view', 'edit', 'export')),
    at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX lead_access_audit_lead_id_idx ON lead_access_audit (lead_id);
