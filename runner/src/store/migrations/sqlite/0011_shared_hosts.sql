-- The public JWK of every process's identity-token keys (never a private part), which the
-- server's JWKS serves beside its own. Step logs stay files with SQLite (one host).
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    jwk TEXT NOT NULL,
    owner TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX signing_keys_owner ON signing_keys (owner);
