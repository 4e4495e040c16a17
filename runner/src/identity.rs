//! Pipewright as an OIDC issuer: a signing key kept in `data_dir/keys`, the discovery
//! document and JWKS that Vault/OpenBao read, and short-lived per-run tokens whose claims
//! (modelled on GitHub Actions') say which repository, ref, event and pipeline a run is.
//!
//! Signing uses ring: Ed25519 (default), ECDSA P-256, or RSA PKCS#1 v1.5 — ring's RSA is
//! constant-time, unlike the `rsa` crate (RUSTSEC-2023-0071), so RS256 is safe to offer.
//! ring cannot generate RSA keys: RS256 uses a PKCS#8 key the operator puts in `keys/`.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{
    rand::{SecureRandom, SystemRandom},
    signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair},
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    config::Algorithm,
    store::{PublishedKey, Store, StoreError, now_ms},
};

/// How long the keys other processes published are served from memory before the database
/// is read again: short, so that the tokens of an agent that just started verify soon; not
/// nothing, so that the JWKS (asked without authentication) is not a query each time.
pub const PUBLISHED_KEYS_TTL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("failed to read or write the signing keys in {dir}")]
    Io { dir: String, source: std::io::Error },
    #[error("signing key {file} is not a valid {alg} PKCS#8 key: {why}")]
    BadKey {
        file: String,
        alg: &'static str,
        why: String,
    },
    #[error(
        "RS256 needs an RSA key, which Pipewright cannot generate: put one in {dir} as rs256-<name>.pk8 (PKCS#8 DER), e.g. `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -outform DER -out {dir}/rs256-1.pk8`"
    )]
    NoRsaKey { dir: String },
    #[error("failed to sign a token")]
    Sign,
}

enum Pair {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

struct SigningKey {
    kid: String,
    alg: Algorithm,
    /// When the key became active (its file's time stamp), for rotation.
    created_ms: i64,
    pair: Pair,
    jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The `sub` of the tokens Pipewright issues to itself ([`Issuer::mint_server`]).
pub const SERVER_SUBJECT: &str = "pipewright:server";

/// Issues run tokens.
#[derive(Debug)]
pub struct Issuer {
    issuer: String,
    audience: String,
    ttl: Duration,
    /// Newest (active) first; older keys stay published until their tokens have expired.
    keys: Vec<SigningKey>,
    rng: SystemRandom,
    /// The public JWKs other processes sharing the database published, and when they were
    /// read.
    published: tokio::sync::Mutex<Option<(std::time::Instant, Vec<Value>)>>,
}

/// What a run token says. Mapped one to one onto the JWT's claims.
#[derive(Clone, Debug)]
pub struct RunClaims {
    pub repository: String,
    pub repository_id: i64,
    pub repository_owner: String,
    pub repository_owner_id: i64,
    /// `refs/heads/main`, `refs/tags/v1`, or `refs/pull/N/head`.
    pub git_ref: String,
    /// `branch`, `tag` or `pull_request`.
    pub ref_type: String,
    pub sha: String,
    pub event_name: String,
    pub pipeline: String,
    pub run_id: i64,
    pub run_attempt: i64,
    pub actor: String,
    /// The base branch of a pull request.
    pub base_ref: Option<String>,
    pub pull_request: bool,
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::EdDSA => "EdDSA",
        Algorithm::ES256 => "ES256",
        Algorithm::RS256 => "RS256",
    }
}

fn file_prefix(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::EdDSA => "ed25519",
        Algorithm::ES256 => "es256",
        Algorithm::RS256 => "rs256",
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKey {
    fn from_pkcs8(
        alg: Algorithm,
        der: &[u8],
        created_ms: i64,
        file: &str,
        rng: &SystemRandom,
    ) -> Result<SigningKey, IdentityError> {
        let bad = |why: String| IdentityError::BadKey {
            file: file.to_string(),
            alg: alg_name(alg),
            why,
        };
        let (pair, public): (Pair, Value) = match alg {
            Algorithm::EdDSA => {
                let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map_err(|e| bad(e.to_string()))?;
                let x = b64(pair.public_key().as_ref());
                (
                    Pair::Ed(pair),
                    json!({ "kty": "OKP", "crv": "Ed25519", "x": x }),
                )
            }
            Algorithm::ES256 => {
                let pair =
                    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, rng)
                        .map_err(|e| bad(e.to_string()))?;
                let point = pair.public_key().as_ref();
                let (x, y) = (b64(&point[1..33]), b64(&point[33..65]));
                (
                    Pair::Ec(pair),
                    json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y }),
                )
            }
            Algorithm::RS256 => {
                let pair = RsaKeyPair::from_pkcs8(der).map_err(|e| bad(e.to_string()))?;
                let parts = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
                let (n, e) = (b64(&parts.n), b64(&parts.e));
                (Pair::Rsa(pair), json!({ "kty": "RSA", "n": n, "e": e }))
            }
        };
        let kid = hex::encode(&Sha256::digest(public.to_string().as_bytes())[..8]);
        let mut jwk = public;
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(alg_name(alg));
        jwk["use"] = json!("sig");
        Ok(SigningKey {
            kid,
            alg,
            created_ms,
            pair,
            jwk,
        })
    }

    fn sign(&self, message: &[u8], rng: &SystemRandom) -> Result<Vec<u8>, IdentityError> {
        match &self.pair {
            Pair::Ed(p) => Ok(p.sign(message).as_ref().to_vec()),
            Pair::Ec(p) => p
                .sign(rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| IdentityError::Sign),
            Pair::Rsa(p) => {
                let mut sig = vec![0; p.public().modulus_len()];
                p.sign(&signature::RSA_PKCS1_SHA256, rng, message, &mut sig)
                    .map_err(|_| IdentityError::Sign)?;
                Ok(sig)
            }
        }
    }
}

fn generate(alg: Algorithm, rng: &SystemRandom) -> Option<Vec<u8>> {
    match alg {
        Algorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(rng)
            .ok()
            .map(|d| d.as_ref().to_vec()),
        Algorithm::ES256 => {
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, rng)
                .ok()
                .map(|d| d.as_ref().to_vec())
        }
        Algorithm::RS256 => None,
    }
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

impl Issuer {
    /// Loads the keys of `alg` from `dir`, creating the first one when there is none.
    /// Keys other than the newest are kept (published) while a token they signed may still
    /// be valid, and deleted after that.
    pub fn load(
        dir: &Path,
        alg: Algorithm,
        issuer: &str,
        audience: &str,
        ttl: Duration,
    ) -> Result<Issuer, IdentityError> {
        let io = |source| IdentityError::Io {
            dir: dir.display().to_string(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let rng = SystemRandom::new();
        let mut keys = read_keys(dir, alg, &rng)?;
        if keys.is_empty() {
            let der = generate(alg, &rng).ok_or_else(|| IdentityError::NoRsaKey {
                dir: dir.display().to_string(),
            })?;
            let path = dir.join(format!("{}-{}.pk8", file_prefix(alg), now_ms()));
            write_private(&path, &der).map_err(io)?;
            keys = read_keys(dir, alg, &rng)?;
        }
        // Drop keys whose every token has expired: the next newer key has been active for
        // longer than a token lives.
        let grace = ttl.as_millis() as i64 + 5 * 60_000;
        let mut kept = Vec::new();
        for key in keys {
            let retired_at = kept
                .last()
                .map(|newer: &(SigningKey, PathBuf)| newer.0.created_ms);
            match retired_at {
                Some(at) if now_ms() - at > grace => {
                    let _ = fs::remove_file(&key.1);
                }
                _ => kept.push(key),
            }
        }
        let keys = kept.into_iter().map(|(k, _)| k).collect();
        Ok(Issuer {
            issuer: issuer.trim_end_matches('/').to_string(),
            audience: audience.to_string(),
            ttl,
            keys,
            rng,
            published: Default::default(),
        })
    }

    /// A throw-away key (for `pipewright exec`).
    pub fn ephemeral(issuer: &str, audience: &str, ttl: Duration) -> Issuer {
        let rng = SystemRandom::new();
        let der = generate(Algorithm::EdDSA, &rng).expect("ring generates Ed25519 keys");
        let key = SigningKey::from_pkcs8(Algorithm::EdDSA, &der, now_ms(), "ephemeral", &rng)
            .expect("a fresh key is valid");
        Issuer {
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            ttl,
            keys: vec![key],
            rng,
            published: Default::default(),
        }
    }

    /// Makes a new key the active one; the current one stays published until its tokens
    /// have expired.
    pub fn rotate(dir: &Path, alg: Algorithm) -> Result<PathBuf, IdentityError> {
        let io = |source| IdentityError::Io {
            dir: dir.display().to_string(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let der = generate(alg, &SystemRandom::new()).ok_or_else(|| IdentityError::NoRsaKey {
            dir: dir.display().to_string(),
        })?;
        let path = dir.join(format!("{}-{}.pk8", file_prefix(alg), now_ms()));
        write_private(&path, &der).map_err(io)?;
        Ok(path)
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `/.well-known/openid-configuration`.
    pub fn discovery(&self) -> Value {
        let algs: Vec<&str> = self.keys.iter().map(|k| alg_name(k.alg)).collect();
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/.well-known/jwks.json", self.issuer),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algs,
            "scopes_supported": ["openid"],
            "claims_supported": [
                "iss", "aud", "iat", "nbf", "exp", "jti", "sub", "repository", "repository_id",
                "repository_owner", "repository_owner_id", "ref", "ref_type", "sha", "event_name",
                "pipeline", "run_id", "run_attempt", "actor", "base_ref"
            ],
        })
    }

    /// `/.well-known/jwks.json`.
    pub fn jwks(&self) -> Value {
        json!({ "keys": self.keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
    }

    /// Publishes the public JWKs of this process's keys in the database as `owner`'s (this
    /// instance), in place of what it published before: a key rotated out and deleted here
    /// leaves the database too. Only the public members go: the private key never leaves
    /// `data_dir/keys`.
    pub async fn publish(&self, store: &Store, owner: &str) -> Result<(), StoreError> {
        let keys: Vec<PublishedKey> = self
            .keys
            .iter()
            .map(|k| PublishedKey {
                kid: k.kid.clone(),
                jwk: k.jwk.to_string(),
                owner: owner.to_string(),
                created_at: k.created_ms,
            })
            .collect();
        store.publish_keys(owner, &keys).await
    }

    /// The public JWKs published by the other processes sharing `store`, read again once
    /// [`PUBLISHED_KEYS_TTL`] has passed (what was read last is kept when the database does
    /// not answer). Keys of this issuer are left out: they are served from memory.
    async fn published(&self, store: &Store) -> Vec<Value> {
        let mut cached = self.published.lock().await;
        if let Some((at, keys)) = &*cached
            && at.elapsed() < PUBLISHED_KEYS_TTL
        {
            return keys.clone();
        }
        match store.published_keys().await {
            Ok(rows) => {
                let keys: Vec<Value> = rows
                    .iter()
                    .filter(|row| !self.keys.iter().any(|k| k.kid == row.kid))
                    .filter_map(|row| match serde_json::from_str::<Value>(&row.jwk) {
                        Ok(jwk) if public_jwk(&jwk) => Some(jwk),
                        _ => {
                            tracing::warn!(kid = %row.kid, owner = %row.owner, "a published signing key is not a public JWK; not serving it");
                            None
                        }
                    })
                    .collect();
                *cached = Some((std::time::Instant::now(), keys.clone()));
                keys
            }
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "failed to read the published signing keys");
                cached
                    .as_ref()
                    .map(|(_, keys)| keys.clone())
                    .unwrap_or_default()
            }
        }
    }

    /// `/.well-known/jwks.json` of a server whose database other processes share: its own
    /// keys, then those the others published (tokens an agent signed verify against it).
    pub async fn shared_jwks(&self, store: &Store) -> Value {
        let mut keys: Vec<Value> = self.keys.iter().map(|k| k.jwk.clone()).collect();
        keys.extend(self.published(store).await);
        json!({ "keys": keys })
    }

    /// `/.well-known/openid-configuration` with the algorithms of the published keys too.
    pub async fn shared_discovery(&self, store: &Store) -> Value {
        let mut doc = self.discovery();
        let mut algs: Vec<Value> = doc["id_token_signing_alg_values_supported"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for jwk in self.published(store).await {
            if let Some(alg) = jwk.get("alg")
                && !algs.contains(alg)
            {
                algs.push(alg.clone());
            }
        }
        doc["id_token_signing_alg_values_supported"] = Value::Array(algs);
        doc
    }

    /// A signed token for a run, valid for the configured time.
    pub fn mint(&self, c: &RunClaims) -> Result<String, IdentityError> {
        let now = now_ms() / 1000;
        let mut jti = [0u8; 16];
        self.rng.fill(&mut jti).map_err(|_| IdentityError::Sign)?;
        let sub = if c.pull_request {
            format!("repo:{}:pull_request", c.repository)
        } else {
            format!("repo:{}:ref:{}", c.repository, c.git_ref)
        };
        let mut claims = json!({
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "nbf": now - 5,
            "exp": now + self.ttl.as_secs() as i64,
            "jti": hex::encode(jti),
            "sub": sub,
            "repository": c.repository,
            "repository_id": c.repository_id.to_string(),
            "repository_owner": c.repository_owner,
            "repository_owner_id": c.repository_owner_id.to_string(),
            "ref": c.git_ref,
            "ref_type": c.ref_type,
            "sha": c.sha,
            "event_name": c.event_name,
            "pipeline": c.pipeline,
            "run_id": c.run_id.to_string(),
            "run_attempt": c.run_attempt.to_string(),
            "actor": c.actor,
        });
        if let Some(base) = &c.base_ref {
            claims["base_ref"] = json!(base);
        }
        self.signed(&claims)
    }

    /// A token for Pipewright itself (its own Vault login, to read
    /// `[[registries]].password_vault`): `sub` is [`SERVER_SUBJECT`], which no run's token
    /// can have (theirs start with `repo:`), and it carries no repository claim, so a role
    /// bound to a repository never accepts it.
    pub fn mint_server(&self) -> Result<String, IdentityError> {
        let now = now_ms() / 1000;
        let mut jti = [0u8; 16];
        self.rng.fill(&mut jti).map_err(|_| IdentityError::Sign)?;
        let claims = json!({
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "nbf": now - 5,
            "exp": now + self.ttl.as_secs() as i64,
            "jti": hex::encode(jti),
            "sub": SERVER_SUBJECT,
        });
        self.signed(&claims)
    }

    /// The JWT of `claims`, signed with the active key.
    fn signed(&self, claims: &Value) -> Result<String, IdentityError> {
        let key = &self.keys[0];
        let header = json!({ "alg": alg_name(key.alg), "typ": "JWT", "kid": key.kid });
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = key.sign(signing_input.as_bytes(), &self.rng)?;
        Ok(format!("{signing_input}.{}", b64(&sig)))
    }
}

/// Whether `jwk` is a public key as [`Issuer::publish`] writes them: a `kid`, a known key
/// type, and no private member (`d`, or RSA's `p`, `q`, `dp`, `dq`, `qi`).
fn public_jwk(jwk: &Value) -> bool {
    jwk.get("kid").is_some_and(Value::is_string)
        && matches!(
            jwk.get("kty").and_then(Value::as_str),
            Some("OKP" | "EC" | "RSA")
        )
        && ["d", "p", "q", "dp", "dq", "qi", "k"]
            .iter()
            .all(|m| jwk.get(m).is_none())
}

/// Keys of `alg` in `dir`, newest first, with their files.
fn read_keys(
    dir: &Path,
    alg: Algorithm,
    rng: &SystemRandom,
) -> Result<Vec<(SigningKey, PathBuf)>, IdentityError> {
    let io = |source| IdentityError::Io {
        dir: dir.display().to_string(),
        source,
    };
    let prefix = format!("{}-", file_prefix(alg));
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&prefix) || !name.ends_with(".pk8") {
            continue;
        }
        let modified = entry.metadata().and_then(|m| m.modified()).map_err(io)?;
        let created_ms = modified
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let der = fs::read(entry.path()).map_err(io)?;
        let key = SigningKey::from_pkcs8(alg, &der, created_ms, &name, rng)?;
        found.push((key, entry.path()));
    }
    found.sort_by_key(|(k, _)| std::cmp::Reverse(k.created_ms));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> RunClaims {
        RunClaims {
            repository: "org/app".into(),
            repository_id: 7,
            repository_owner: "org".into(),
            repository_owner_id: 3,
            git_ref: "refs/heads/main".into(),
            ref_type: "branch".into(),
            sha: "abc".into(),
            event_name: "push".into(),
            pipeline: "deploy".into(),
            run_id: 42,
            run_attempt: 1,
            actor: "alice".into(),
            base_ref: None,
            pull_request: false,
        }
    }

    fn verify(issuer: &Issuer, token: &str) -> Value {
        let parts: Vec<&str> = token.split('.').collect();
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        let jwk = issuer.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == header["kid"])
            .unwrap()
            .clone();
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let msg = format!("{}.{}", parts[0], parts[1]);
        let d = |f: &str| URL_SAFE_NO_PAD.decode(jwk[f].as_str().unwrap()).unwrap();
        match header["alg"].as_str().unwrap() {
            "EdDSA" => signature::UnparsedPublicKey::new(&signature::ED25519, d("x"))
                .verify(msg.as_bytes(), &sig)
                .unwrap(),
            "ES256" => {
                let mut point = vec![4u8];
                point.extend(d("x"));
                point.extend(d("y"));
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(msg.as_bytes(), &sig)
                    .unwrap()
            }
            other => panic!("{other}"),
        }
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
    }

    #[test]
    fn tokens_verify_against_the_jwks_and_carry_the_claims() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256] {
            let dir = tempfile::tempdir().unwrap();
            let issuer = Issuer::load(
                dir.path(),
                alg,
                "https://ci.lab",
                "vault",
                Duration::from_secs(600),
            )
            .unwrap();
            let claims = verify(&issuer, &issuer.mint(&claims()).unwrap());
            assert_eq!(claims["iss"], "https://ci.lab");
            assert_eq!(claims["aud"], "vault");
            assert_eq!(claims["sub"], "repo:org/app:ref:refs/heads/main");
            assert_eq!(claims["repository_id"], "7");
            assert_eq!(
                claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
                600
            );
            assert!(claims["nbf"].as_i64().unwrap() <= claims["iat"].as_i64().unwrap());
            assert!(claims.get("base_ref").is_none());
            // The key is kept: a restart signs with the same kid.
            let again = Issuer::load(
                dir.path(),
                alg,
                "https://ci.lab",
                "vault",
                Duration::from_secs(600),
            )
            .unwrap();
            assert_eq!(again.jwks(), issuer.jwks());
            use std::os::unix::fs::PermissionsExt;
            for entry in fs::read_dir(dir.path()).unwrap() {
                assert_eq!(
                    entry.unwrap().metadata().unwrap().permissions().mode() & 0o777,
                    0o600
                );
            }
        }
    }

    #[test]
    fn the_servers_own_token_has_no_repository_claims() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = Issuer::load(
            dir.path(),
            Algorithm::EdDSA,
            "https://ci.lab",
            "vault",
            Duration::from_secs(600),
        )
        .unwrap();
        let server = verify(&issuer, &issuer.mint_server().unwrap());
        assert_eq!(server["sub"], SERVER_SUBJECT);
        assert_eq!(server["iss"], "https://ci.lab");
        assert_eq!(server["aud"], "vault");
        let mut names: Vec<&str> = server
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["aud", "exp", "iat", "iss", "jti", "nbf", "sub"]);
        // No run's token has this subject.
        let run = verify(&issuer, &issuer.mint(&claims()).unwrap());
        assert!(run["sub"].as_str().unwrap().starts_with("repo:"));
    }

    #[test]
    fn rotation_keeps_the_old_key_published() {
        let dir = tempfile::tempdir().unwrap();
        let first = Issuer::load(
            dir.path(),
            Algorithm::EdDSA,
            "i",
            "a",
            Duration::from_secs(600),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        Issuer::rotate(dir.path(), Algorithm::EdDSA).unwrap();
        let rotated = Issuer::load(
            dir.path(),
            Algorithm::EdDSA,
            "i",
            "a",
            Duration::from_secs(600),
        )
        .unwrap();
        assert_eq!(rotated.jwks()["keys"].as_array().unwrap().len(), 2);
        let token = rotated.mint(&claims()).unwrap();
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_ne!(
            header["kid"],
            first.jwks()["keys"][0]["kid"],
            "the new key signs"
        );
    }

    #[test]
    fn rs256_without_a_key_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = Issuer::load(
            dir.path(),
            Algorithm::RS256,
            "i",
            "a",
            Duration::from_secs(60),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("openssl genpkey -algorithm RSA"),
            "{err}"
        );
    }
}
