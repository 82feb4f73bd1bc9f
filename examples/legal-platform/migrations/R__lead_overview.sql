-- Repeatable: re-applied whenever this file changes, after the versioned migrations.
-- security_invoker makes the view run with the caller's rights, so the RLS policies of
-- leads and user_lead_assignments apply to whoever queries it (PostgreSQL 15+).

CREATE OR REPLACE VIEW lead_overview WITH (security_invoker = true) AS
SELECT l.id,
       l.territory,
       l.company,
       l.status,
       c.case_number,
       c.title AS case_title,
       count(a.lead_id) AS assignees
FROM leads l
LEFT JOIN legal_cases c ON c.id = l.case_id
LEFT JOIN user_lead_assignments a ON a.lead_id = l.id
GROUP BY l.id, c.id;
