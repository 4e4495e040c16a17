-- The labels an agent needs to claim the run (the pipeline's `runs_on`), a JSON list.
ALTER TABLE runs ADD COLUMN runs_on TEXT NOT NULL DEFAULT '[]';
