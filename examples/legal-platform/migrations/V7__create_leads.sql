-- Lead-protection module: leads belong to a sales territory; only that territory sees them.

CREATE TABLE leads (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    case_id       bigint      REFERENCES legal_cases (id),
    territory     text        NOT NULL CHECK (territory <> ''),
    company       text        NOT NULL,
    contact_email text,
    status        text        NOT NULL DEFAULT 'new'
                              CHECK (status IN ('new', 'contacted', 'qualified', 'lost', 'won')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX leads_case_id_idx ON leads (case_id);

CREATE TRIGGER leads_updated_at BEFORE UPDATE ON leads
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
