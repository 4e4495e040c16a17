-- A status row names its run and pipeline; the reporter builds the context
-- (`pipewright/<pipeline>`), the link (`<public_url>/runs/<id>`) and the clipped
-- description: the database holds no presentation. Unsent rows are converted.
ALTER TABLE status_outbox ADD COLUMN run_id BIGINT;
ALTER TABLE status_outbox ADD COLUMN pipeline TEXT;
UPDATE status_outbox
    SET pipeline = substr(context, 12),
        run_id = CAST(substr(target_url, instr(target_url, '/runs/') + 6) AS INTEGER)
    WHERE context LIKE 'pipewright/%' AND instr(target_url, '/runs/') > 0;
DELETE FROM status_outbox WHERE run_id IS NULL OR pipeline IS NULL;
ALTER TABLE status_outbox DROP COLUMN context;
ALTER TABLE status_outbox DROP COLUMN target_url;
