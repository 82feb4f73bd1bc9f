-- Undo V12: drop the priority column (its values are lost).

ALTER TABLE leads DROP COLUMN IF EXISTS priority;
