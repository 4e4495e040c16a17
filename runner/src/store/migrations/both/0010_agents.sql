-- Agents: every process that claims runs (`serve`'s local agent, `pipewright agent`) writes
-- its row every few seconds; a row whose heartbeat is old is an agent that is gone. Labels
-- are a JSON list; `docker_up` is 1 while its engine answers.
CREATE TABLE agents (
    name TEXT PRIMARY KEY,
    instance TEXT NOT NULL,
    labels TEXT NOT NULL,
    capacity BIGINT NOT NULL,
    state TEXT NOT NULL,
    docker_up BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
-- The name of the agent that claimed the run (its lease owner is the agent's instance id).
ALTER TABLE runs ADD COLUMN agent TEXT;
