//! The agents table: each process that claims runs writes its name, labels, capacity,
//! state and engine's health there every few seconds, so that any process can tell which
//! agents are alive and why a queued run waits.

use std::time::Duration;

use sqlx::Row;

use super::{Store, StoreError, now_ms};

/// How often an agent writes its row.
pub const HEARTBEAT: Duration = Duration::from_secs(3);

/// A row older than this is an agent that is gone (it stopped, crashed, or lost the
/// database): five missed heartbeats.
pub const AGENT_FRESH: Duration = Duration::from_secs(15);

/// Whether an agent takes new runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentState {
    /// It claims runs.
    Running,
    /// It was asked to stop: it claims nothing and finishes what it runs.
    Draining,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Running => "running",
            AgentState::Draining => "draining",
        }
    }

    fn parse(s: &str) -> Option<AgentState> {
        [AgentState::Running, AgentState::Draining]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

/// One heartbeat of an agent.
#[derive(Clone, Debug)]
pub struct AgentBeat<'a> {
    pub name: &'a str,
    /// The process's instance id (its leases' owner).
    pub instance: &'a str,
    pub labels: &'a [String],
    pub capacity: usize,
    pub state: AgentState,
    /// Its container engine answered its last ping.
    pub docker_up: bool,
}

/// An agent as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentRow {
    pub name: String,
    pub instance: String,
    pub labels: Vec<String>,
    pub capacity: i64,
    pub state: AgentState,
    pub docker_up: bool,
    /// Milliseconds since the epoch.
    pub heartbeat_at: i64,
}

impl Store {
    /// Writes an agent's row (a new agent's, or a newer heartbeat of a known name).
    pub async fn agent_heartbeat(&self, beat: &AgentBeat<'_>) -> Result<(), StoreError> {
        let labels =
            serde_json::to_string(beat.labels).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO agents (name, instance, labels, capacity, state, docker_up, heartbeat_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (name) DO UPDATE SET instance = excluded.instance, labels = excluded.labels,
               capacity = excluded.capacity, state = excluded.state, docker_up = excluded.docker_up,
               heartbeat_at = excluded.heartbeat_at",
        )
        .bind(beat.name)
        .bind(beat.instance)
        .bind(labels)
        .bind(beat.capacity as i64)
        .bind(beat.state.as_str())
        .bind(i64::from(beat.docker_up))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes an agent's row as it stops (only its own instance's: a newer process of the
    /// same name keeps its row).
    pub async fn agent_stopped(&self, name: &str, instance: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM agents WHERE name = $1 AND instance = $2")
            .bind(name)
            .bind(instance)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The agents whose last heartbeat is at most [`AGENT_FRESH`] old, by name.
    pub async fn live_agents(&self) -> Result<Vec<AgentRow>, StoreError> {
        let since = now_ms() - AGENT_FRESH.as_millis() as i64;
        let rows = sqlx::query(
            "SELECT name, instance, labels, capacity, state, docker_up, heartbeat_at FROM agents
             WHERE heartbeat_at >= $1 ORDER BY name",
        )
        .bind(since)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                let labels: String = row.try_get("labels")?;
                let state: String = row.try_get("state")?;
                Ok(AgentRow {
                    name: row.try_get("name")?,
                    instance: row.try_get("instance")?,
                    labels: serde_json::from_str(&labels)
                        .map_err(|e| StoreError::Corrupt(format!("agent labels: {e}")))?,
                    capacity: row.try_get("capacity")?,
                    state: AgentState::parse(&state)
                        .ok_or_else(|| StoreError::Corrupt(format!("agent state `{state}`")))?,
                    docker_up: row.try_get::<i64, _>("docker_up")? != 0,
                    heartbeat_at: row.try_get("heartbeat_at")?,
                })
            })
            .collect()
    }
}
