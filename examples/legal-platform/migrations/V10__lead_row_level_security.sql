-- Row-level security for the lead module, fail-closed.
--
-- The territory comes from the session setting app.territory, read with
-- current_setting('app.territory', true): NULL when the application never set it,
-- and NULL = territory is never true, so an unset territory sees no rows at all.
-- territory <> '' (checked on the tables) closes the other door: a setting reset to ''.
-- Edits also need an assignment with can_edit for the user in app.user_name.
--
-- Owner or not: PostgreSQL exempts a table's owner from RLS unless the table is
-- FORCEd. These policies are ENABLEd, not FORCEd, on purpose: the owner role is the
-- one that runs migrations, sync and backups (pg_dump refuses to dump a table whose
-- rows RLS would filter), so the application must connect as a separate role that
-- does not own the tables (GRANT it SELECT, INSERT, UPDATE on the tables and EXECUTE
-- on can_edit_lead). For that role every policy below applies.

-- STABLE: the answer does not change within a statement, so the planner may call it
-- once per row without re-reading settings. SECURITY DEFINER with a fixed search_path
-- lets the policy consult user_lead_assignments without granting the app role
-- access to every assignment.
CREATE FUNCTION can_edit_lead(p_lead_id bigint) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT EXISTS (
        SELECT 1
        FROM user_lead_assignments a
        WHERE a.lead_id = p_lead_id
          AND a.territory = current_setting('app.territory', true)
          AND a.user_name = current_setting('app.user_name', true)
          AND a.can_edit
    )
$$;

REVOKE ALL ON FUNCTION can_edit_lead(bigint) FROM PUBLIC;

ALTER TABLE leads ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_lead_assignments ENABLE ROW LEVEL SECURITY;
ALTER TABLE lead_access_audit ENABLE ROW LEVEL SECURITY;

CREATE POLICY leads_read ON leads FOR SELECT
    USING (territory = current_setting('app.territory', true));
CREATE POLICY leads_create ON leads FOR INSERT
    WITH CHECK (territory = current_setting('app.territory', true));
CREATE POLICY leads_edit ON leads FOR UPDATE
    USING (territory = current_setting('app.territory', true) AND can_edit_lead(id))
    WITH CHECK (territory = current_setting('app.territory', true));

CREATE POLICY assignments_read ON user_lead_assignments FOR SELECT
    USING (territory = current_setting('app.territory', true));

-- the audit log: insert your own territory's rows, read them; no update, no delete
CREATE POLICY audit_write ON lead_access_audit FOR INSERT
    WITH CHECK (territory = current_setting('app.territory', true));
CREATE POLICY audit_read ON lead_access_audit FOR SELECT
    USING (territory = current_setting('app.territory', true));
