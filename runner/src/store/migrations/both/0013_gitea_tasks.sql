-- Gitea Actions tasks taken by this runner: the run each started (none when the task was
-- refused, with the reason), how many steps its workflow job has, how many log rows Gitea acknowledged, and when its final
-- state was accepted. What a restart needs to finish reporting a task.
CREATE TABLE gitea_tasks (
    task_id BIGINT PRIMARY KEY,
    run_id BIGINT,
    refusal TEXT,
    steps BIGINT NOT NULL,
    log_acked BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    reported_at BIGINT
);
CREATE INDEX gitea_tasks_open ON gitea_tasks (reported_at);
