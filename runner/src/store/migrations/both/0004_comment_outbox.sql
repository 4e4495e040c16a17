-- Pull-request comments still to create or edit (the plan comment), like statuses.
CREATE TABLE comment_outbox (
    repo TEXT NOT NULL,
    pr BIGINT NOT NULL,
    marker TEXT NOT NULL,
    body TEXT NOT NULL,
    run_id BIGINT NOT NULL,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    sent_at BIGINT,
    PRIMARY KEY (repo, pr, marker)
);
