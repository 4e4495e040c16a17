-- The plan of each pull request's tofu pipeline that its plan comment shows (the newest):
-- the commit it was made on, the run that made it (whose saved plan file is kept in the
-- data directory), its resource changes as a JSON list of [address, action], and the run
-- of `/pipewright apply` that applied it.
CREATE TABLE reviewed_plans (
    repo TEXT NOT NULL,
    pr BIGINT NOT NULL,
    pipeline TEXT NOT NULL,
    sha TEXT NOT NULL,
    run_id BIGINT NOT NULL,
    changes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    applied_run BIGINT,
    PRIMARY KEY (repo, pr, pipeline)
);

-- Merge commits of pull requests applied with `/pipewright apply`: a push of one plans
-- again and applies only the reviewed changes.
CREATE TABLE merged_pulls (
    repo TEXT NOT NULL,
    sha TEXT NOT NULL,
    pr BIGINT NOT NULL,
    PRIMARY KEY (repo, sha)
);
