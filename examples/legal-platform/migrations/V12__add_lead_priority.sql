-- Sales wants to rank leads. A constant default is stored in the catalog (PostgreSQL 11+):
-- no table rewrite, only a brief ACCESS EXCLUSIVE lock, bounded by lock_timeout.
-- Undo: U12__add_lead_priority.sql drops the column again.

ALTER TABLE leads ADD COLUMN priority bigint NOT NULL DEFAULT 0;
