-- The run a run re-runs, and the declared types of its inputs (a JSON object of name to
-- `boolean` or `number`; inputs not named are text); indexes for the runs list's filters,
-- which page by id.
ALTER TABLE runs ADD COLUMN rerun_of BIGINT;
ALTER TABLE runs ADD COLUMN input_types TEXT NOT NULL DEFAULT '{}';
CREATE INDEX runs_repo_id ON runs (repo, id);
CREATE INDEX runs_pipeline_id ON runs (pipeline, id);
CREATE INDEX runs_repo_pipeline_id ON runs (repo, pipeline, id);
CREATE INDEX runs_repo_state_id ON runs (repo, state, id);
