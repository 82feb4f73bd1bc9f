-- VALIDATE CONSTRAINT takes only a SHARE UPDATE EXCLUSIVE lock: reads and writes go on.

ALTER TABLE regulatory_updates VALIDATE CONSTRAINT regulatory_updates_case_id_fkey;
