-- Retention (`[retention]`): when a run's step logs were deleted (its steps then say so),
-- and indexes for what retention looks up: runs by the time they ended, status rows by run.
ALTER TABLE runs ADD COLUMN logs_removed_at BIGINT;
CREATE INDEX runs_finished ON runs (finished_at);
CREATE INDEX status_outbox_run ON status_outbox (run_id);
