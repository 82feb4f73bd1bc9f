-- CREATE INDEX CONCURRENTLY cannot run in a transaction: pgferry runs this file statement
-- by statement and drops an INVALID index left by a failed build before it retries.

CREATE INDEX CONCURRENTLY IF NOT EXISTS regulatory_updates_case_id_idx
    ON regulatory_updates (case_id);
