-- Several hosts sharing this database. `log_lines`: the step logs, one row a line (masked
-- before it is written), written by whichever process runs the step, so that any server
-- reads and follows them. `signing_keys`: the public JWK of every process's identity-token
-- keys (never a private part), which the server's JWKS serves beside its own.
CREATE TABLE log_lines (
    run_id BIGINT NOT NULL,
    step BIGINT NOT NULL,
    n BIGINT NOT NULL,
    line BYTEA NOT NULL,
    PRIMARY KEY (run_id, step, n)
);
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    jwk TEXT NOT NULL,
    owner TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX signing_keys_owner ON signing_keys (owner);
