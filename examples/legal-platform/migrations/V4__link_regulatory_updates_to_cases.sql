-- Link an update to the case it affects. regulatory_updates already holds data, so the
-- foreign key is added NOT VALID (no full-table scan under lock) and validated in V5.

ALTER TABLE regulatory_updates ADD COLUMN case_id bigint;

ALTER TABLE regulatory_updates
    ADD CONSTRAINT regulatory_updates_case_id_fkey
    FOREIGN KEY (case_id) REFERENCES legal_cases (id) NOT VALID;
