-- Which image a reference named when a trusted run of a repository first used it.
CREATE TABLE image_pins (
    repo TEXT NOT NULL,
    reference TEXT NOT NULL,
    image_id TEXT NOT NULL,
    run_id BIGINT NOT NULL,
    pinned_at BIGINT NOT NULL,
    PRIMARY KEY (repo, reference)
);
