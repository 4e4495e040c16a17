-- How often processing a delivery was started: a delivery that keeps crashing the
-- process is given up after a few starts instead of crashing it at every restart.
ALTER TABLE deliveries ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
