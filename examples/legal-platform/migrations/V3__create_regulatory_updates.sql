-- Regulatory updates (new rules, guidance, enforcement notices) published by a source.

CREATE TABLE regulatory_updates (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_id     bigint      NOT NULL REFERENCES data_sources (id),
    title         text        NOT NULL,
    summary       text,
    published_at  timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX regulatory_updates_updated_at_idx ON regulatory_updates (updated_at);
CREATE INDEX regulatory_updates_source_id_idx ON regulatory_updates (source_id);

CREATE TRIGGER regulatory_updates_updated_at BEFORE UPDATE ON regulatory_updates
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
