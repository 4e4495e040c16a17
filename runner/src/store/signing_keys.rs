//! The public keys that sign identity tokens, published by every process sharing the
//! database (`signing_keys`): the server's JWKS serves them beside its own, so that a token
//! an agent signed verifies against it. Only public JWKs are stored; `identity.rs` builds
//! them and never hands this module a private part.

use sqlx::{AssertSqlSafe, Row};

use super::{Store, StoreError};

/// A public key as published: its id, its JWK (JSON text), and the process that holds the
/// private part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedKey {
    pub kid: String,
    pub jwk: String,
    pub owner: String,
    pub created_at: i64,
}

impl Store {
    /// Makes `keys` the keys `owner` publishes: those it no longer has (rotated out) go, in
    /// one transaction.
    pub async fn publish_keys(&self, owner: &str, keys: &[PublishedKey]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for key in keys {
            sqlx::query(
                "INSERT INTO signing_keys (kid, jwk, owner, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (kid) DO UPDATE SET jwk = excluded.jwk, owner = excluded.owner,
                 created_at = excluded.created_at",
            )
            .bind(&key.kid)
            .bind(&key.jwk)
            .bind(owner)
            .bind(key.created_at)
            .execute(&mut *tx)
            .await?;
        }
        let keep = (0..keys.len())
            .map(|i| format!("${}", i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = match keys.is_empty() {
            true => "DELETE FROM signing_keys WHERE owner = $1".to_owned(),
            false => format!("DELETE FROM signing_keys WHERE owner = $1 AND kid NOT IN ({keep})"),
        };
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(owner);
        for key in keys {
            query = query.bind(&key.kid);
        }
        query.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every published key, oldest first.
    pub async fn published_keys(&self) -> Result<Vec<PublishedKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, jwk, owner, created_at FROM signing_keys ORDER BY created_at, kid",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PublishedKey {
                    kid: r.try_get(0)?,
                    jwk: r.try_get(1)?,
                    owner: r.try_get(2)?,
                    created_at: r.try_get(3)?,
                })
            })
            .collect()
    }
}
