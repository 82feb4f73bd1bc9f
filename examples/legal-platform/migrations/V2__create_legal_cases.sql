-- Legal cases tracked by the platform, each from one data source.

CREATE TABLE legal_cases (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_id     bigint      NOT NULL REFERENCES data_sources (id),
    case_number   text        NOT NULL,
    title         text        NOT NULL,
    jurisdiction  text        NOT NULL,
    status        text        NOT NULL DEFAULT 'open'
                              CHECK (status IN ('open', 'stayed', 'settled', 'closed')),
    filed_on      date,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_id, case_number)
);

-- The table is new and empty, so a plain CREATE INDEX takes no meaningful lock.
CREATE INDEX legal_cases_updated_at_idx ON legal_cases (updated_at);

CREATE TRIGGER legal_cases_updated_at BEFORE UPDATE ON legal_cases
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
