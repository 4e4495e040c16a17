-- Pipewright's schema as release d082364 made it (its `schema_version` 1).
-- Times are epoch milliseconds; booleans are 0/1 integers (portable through sqlx Any).

CREATE TABLE deliveries (
    id BIGSERIAL PRIMARY KEY,
    delivery_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    repo TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    payload BYTEA NOT NULL,
    state TEXT NOT NULL,
    note TEXT
);
CREATE INDEX deliveries_state ON deliveries (state, id);

CREATE TABLE runs (
    id BIGSERIAL PRIMARY KEY,
    delivery BIGINT,
    repo TEXT NOT NULL,
    repo_id BIGINT NOT NULL,
    owner_id BIGINT NOT NULL,
    clone_url TEXT NOT NULL,
    default_branch TEXT NOT NULL,
    status_repo TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    pipeline_file TEXT NOT NULL,
    event TEXT NOT NULL,
    git_ref TEXT NOT NULL,
    sha TEXT NOT NULL,
    pr BIGINT,
    actor TEXT NOT NULL,
    from_fork BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    inputs TEXT NOT NULL,
    dedupe_key TEXT NOT NULL,
    concurrency_group TEXT NOT NULL,
    cancel_in_progress BIGINT NOT NULL,
    state TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    lease_owner TEXT,
    lease_until BIGINT
);
CREATE INDEX runs_state ON runs (state, id);
CREATE INDEX runs_group ON runs (concurrency_group, state);
CREATE INDEX runs_repo_sha ON runs (repo, sha);
CREATE INDEX runs_dedupe ON runs (dedupe_key, state);

CREATE TABLE steps (
    run_id BIGINT NOT NULL,
    idx BIGINT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    description TEXT NOT NULL,
    exit_code BIGINT,
    started_at BIGINT,
    finished_at BIGINT,
    PRIMARY KEY (run_id, idx)
);

CREATE TABLE status_outbox (
    id BIGSERIAL PRIMARY KEY,
    repo TEXT NOT NULL,
    sha TEXT NOT NULL,
    context TEXT NOT NULL,
    state TEXT NOT NULL,
    description TEXT NOT NULL,
    target_url TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    sent_at BIGINT
);
CREATE INDEX status_outbox_pending ON status_outbox (sent_at, next_attempt_at);

CREATE TABLE repos (
    full_name TEXT PRIMARY KEY,
    repo_id BIGINT NOT NULL,
    owner_id BIGINT NOT NULL,
    clone_url TEXT NOT NULL,
    default_branch TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
