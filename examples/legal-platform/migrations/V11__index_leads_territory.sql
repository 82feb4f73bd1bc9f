-- The RLS policies filter every query on territory: index it. leads is live by now,
-- so the index is built CONCURRENTLY (a non-transactional file; see V6).

CREATE INDEX CONCURRENTLY IF NOT EXISTS leads_territory_idx ON leads (territory, id);
