//! What hosts share through PostgreSQL: step logs (rows any server reads and follows while
//! another process writes them, the log limit, a refused write stopping the step,
//! retention deleting the rows) and the public signing keys every process publishes (an
//! agent's token verifies against the server's JWKS, and no private part is stored).

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use pipewright::{
    config::Algorithm,
    identity::Issuer,
    logs::LogStore,
    server::retention_pass,
    store::{RunState, StepState, Store},
};
use pipewright_tests::{fake_gitea::FakeGitea, services::Postgres};
use serde_json::Value;

use crate::{
    retention::{ended, send_statuses, spec},
    serve::{API_TOKEN, Server, client, eventually, final_statuses, states, step},
    ui_pages::{Sse, a_real_steps_log, follow, parse_events},
};

fn on(pg: &Postgres) -> [(&'static str, String); 1] {
    [("PIPEWRIGHT_DATABASE__URL", pg.url())]
}

fn pairs<'a>(list: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    list.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// `SELECT count(*) FROM log_lines …` as a number.
fn stored_lines(pg: &Postgres, filter: &str) -> i64 {
    pg.sql(&format!("SELECT count(*) FROM log_lines WHERE {filter}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_steps_log_is_rows_read_whole_and_followed_like_a_file() {
    let pg = Postgres::start();
    let env = on(&pg);
    let (id, logged_in_a_file) = a_real_steps_log(&pairs(&env)).await;
    assert!(!logged_in_a_file, "with PostgreSQL, no log file");
    assert_eq!(stored_lines(&pg, &format!("run_id = {id} AND step = 0")), 8);
}

/// A server's log stream read as it comes.
struct Live {
    resp: reqwest::Response,
    text: String,
}

impl Live {
    async fn open(url: &str) -> Live {
        let resp = client()
            .get(url)
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        Live {
            resp,
            text: String::new(),
        }
    }

    /// The next event (keep-alive comments skipped), waiting for it as long as it takes.
    async fn next(&mut self) -> Sse {
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                if let Some(event) = parse_events(&block).pop() {
                    return event;
                }
                continue;
            }
            let chunk = self
                .resp
                .chunk()
                .await
                .unwrap()
                .expect("the stream ended before its end event");
            self.text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_another_process_writes_is_followed_live_through_the_servers_api() {
    let pg = Postgres::start();
    let gitea = FakeGitea::start().await;
    let env = on(&pg);
    let server = Server::start_without_engine(&gitea, &pairs(&env), "").await;
    // Another process on the same database, as an agent on another host is: its own
    // store, its own data directory.
    let agent_dir = tempfile::tempdir().unwrap();
    let agent = Store::open(&pg.url()).await.unwrap();
    let agent_logs = LogStore::for_store(agent_dir.path().join("logs"), &agent);
    assert!(agent_logs.in_database());
    // A run only an agent with label `pi1` takes (the server has none).
    let run_spec = pipewright::store::RunSpec {
        runs_on: vec!["pi1".into()],
        ..pipewright_tests::push_run("org/app", "ci", "a1b2c3d")
    };
    let id = agent.enqueue_runs(None, &[run_spec]).await.unwrap().ids[0];
    let run = agent
        .claim_next("agent-pi1", &["pi1".into()])
        .await
        .unwrap()
        .expect("the agent claims its run");
    assert_eq!(run.id, id);
    agent
        .insert_steps(id, &[(0, "build".into())])
        .await
        .unwrap();
    agent.step_started(id, 0).await.unwrap();

    let stream = format!("{}/api/v1/runs/{id}/steps/0/log?follow=true", server.url);
    let mut live = Live::open(&stream).await;
    let mut writer = agent_logs.writer(id, 0).unwrap();
    // Each line reaches the follower before the next is written: it is followed live.
    for i in 0..5u64 {
        writer.line(format!("line {i}").as_bytes()).unwrap();
        let event = live.next().await;
        assert_eq!(
            event,
            Sse {
                id: Some(i),
                event: None,
                data: format!("line {i}")
            }
        );
    }
    // The agent ends the step (its log written first) and the run.
    writer.finish().await.unwrap();
    agent
        .step_finished(id, 0, StepState::Success, "succeeded", Some(0))
        .await
        .unwrap();
    agent
        .finish_run(id, RunState::Success, "succeeded")
        .await
        .unwrap();
    let end = live.next().await;
    assert_eq!(end.event.as_deref(), Some("end"), "{end:?}");
    assert_eq!(end.data, "success");

    // Resumed after line 2: lines 3 and 4 once, then the end.
    let resumed = follow(&stream, Some(2)).await;
    let ids: Vec<Option<u64>> = resumed.iter().map(|e| e.id).collect();
    assert_eq!(ids, [Some(3), Some(4), None]);
    assert_eq!(resumed[1].data, "line 4");
    // Whole, through the API and the page; counted the same on both hosts.
    assert_eq!(
        server.log(id, 0).await,
        "line 0\nline 1\nline 2\nline 3\nline 4\n"
    );
    let page = client()
        .get(format!("{}/runs/{id}", server.url))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<div class=\"line\">line 4</div>"), "{page}");
    assert_eq!(server.app.logs.line_count(id, 0).await.unwrap(), 5);
    assert_eq!(agent_logs.line_count(id, 0).await.unwrap(), 5);
    assert_eq!(server.app.logs.line_count(id, 1).await.unwrap(), 0);
    // Nothing on either host's disk.
    assert!(!agent_logs.path(id, 0).exists());
    assert!(!server.app.logs.path(id, 0).exists());
    server.stop().await;
}

#[tokio::test]
async fn on_postgres_the_log_limit_drops_output_after_one_note() {
    let pg = Postgres::start();
    let store = Store::open(&pg.url()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let logs = LogStore::for_store(dir.path().to_path_buf(), &store).with_limit(10);
    let mut writer = logs.writer(1, 0).unwrap();
    for line in ["1234", "5678", "9", "more", "and more"] {
        writer.line(line.as_bytes()).unwrap();
    }
    writer.finish().await.unwrap();
    let text = String::from_utf8(logs.read(1, 0).await.unwrap().unwrap()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[..2], ["1234", "5678"]);
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[2].contains("max_log_bytes"), "{text}");
    assert_eq!(logs.line_count(1, 0).await.unwrap(), 3);
    // A writer of the same step starts the log afresh, as a file is truncated.
    let mut again = logs.writer(1, 0).unwrap();
    again.line(b"fresh").unwrap();
    again.finish().await.unwrap();
    assert_eq!(logs.read(1, 0).await.unwrap().unwrap(), b"fresh\n");
    // Lines longer than a read's budget come whole, one a read.
    let long = vec![b'x'; 300 << 10];
    let logs = LogStore::for_store(dir.path().to_path_buf(), &store);
    let mut big = logs.writer(2, 0).unwrap();
    for _ in 0..3 {
        big.line(&long).unwrap();
    }
    big.finish().await.unwrap();
    let (first, next) = logs
        .read_lines(2, 0, pipewright::logs::LogCursor::at_line(0), 1 << 10)
        .await
        .unwrap();
    assert_eq!((first.len(), next.line()), (1, 1));
    assert!(first[0] == long, "the first line whole");
    assert_eq!(
        logs.read(2, 0).await.unwrap().unwrap().len(),
        3 * (long.len() + 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_the_database_refuses_stops_the_step_as_error_and_the_server_goes_on() {
    let pg = Postgres::start();
    let gitea = FakeGitea::start().await;
    let env = on(&pg);
    let server = Server::start_with(&gitea, &pairs(&env)).await;
    // The database refuses this one line (as it would every line when it fails).
    pg.sql(
        "ALTER TABLE log_lines ADD CONSTRAINT no_boom CHECK (position('boom'::bytea in line) = 0)",
    );
    let repo = gitea.create_repo("org", "refused");
    let pipeline = format!(
        "on:\n  push: {{}}\nsteps:\n{}{}",
        step("loud", "echo boom\nsleep 1\necho after"),
        step("never", "echo not reached")
    );
    let c0 = repo.commit("main", "init").write("README.md", "x\n").push();
    let c1 = repo
        .commit("main", "ci")
        .write(".pipewright/ci.yml", &pipeline)
        .push();
    assert_eq!(server.deliver(repo.push_event("main", &c0, &c1)).await, 202);
    let statuses = final_statuses(&repo, &c1, "pipewright/ci").await;
    assert_eq!(states(&statuses), ["pending", "error"], "{statuses:?}");
    let id = server.runs().await[0]["id"].as_i64().unwrap();
    let run = server.api(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(run["state"], "error", "{run:#}");
    let first = &run["steps"][0];
    assert_eq!(first["state"], "error", "{run:#}");
    let description = first["description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!(
            "cannot write the log of run {id} step 0 to the database"
        )),
        "{description}"
    );
    assert!(description.contains("no_boom"), "{description}");
    assert_ne!(run["steps"][1]["state"], "success", "{run:#}");
    assert_eq!(stored_lines(&pg, &format!("run_id = {id} AND step = 1")), 0);

    // The server goes on: the next push runs and logs.
    let quiet = format!("on:\n  push: {{}}\nsteps:\n{}", step("quiet", "echo fine"));
    let c2 = repo
        .commit("main", "quiet")
        .write(".pipewright/ci.yml", &quiet)
        .push();
    assert_eq!(server.deliver(repo.push_event("main", &c1, &c2)).await, 202);
    let statuses = final_statuses(&repo, &c2, "pipewright/ci").await;
    assert_eq!(states(&statuses), ["pending", "success"], "{statuses:?}");
    let next = server.runs().await[0]["id"].as_i64().unwrap();
    assert_eq!(server.log(next, 0).await, "fine\n");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_retention_deletes_the_log_rows() {
    let pg = Postgres::start();
    let gitea = FakeGitea::start().await;
    let mut env = on(&pg).to_vec();
    env.push(("PIPEWRIGHT_RETENTION__LOGS", "1s".into()));
    env.push(("PIPEWRIGHT_RETENTION__RUNS", "1s".into()));
    let server = Server::start_without_engine(&gitea, &pairs(&env), "").await;
    let store = &server.app.store;
    // Runs for an agent with label `pi1`, so that the server's own worker leaves them.
    let for_pi1 = |sha: &str, group: &str| pipewright::store::RunSpec {
        runs_on: vec!["pi1".into()],
        ..spec("main", sha, group)
    };
    // The server's own reporter sends these runs' statuses too: to a repository Gitea
    // has, so that none of them waits in its backoff, unsent, when retention looks.
    gitea.create_repo("org", "app");
    let older = ended(store, for_pi1("aaaaaaa1", "g-a")).await;
    let newest = ended(store, for_pi1("aaaaaaa2", "g-b")).await;
    send_statuses(store, &[]).await;
    eventually(Duration::from_secs(30), "every status sent", || async {
        store
            .next_status_due()
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    for id in [older, newest] {
        let mut writer = server.app.logs.writer(id, 0).unwrap();
        writer.line(b"hello").unwrap();
        writer.finish().await.unwrap();
        assert_eq!(server.log(id, 0).await, "hello\n");
    }
    // Ages of a second: what ended before the pass is old.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let removed = retention_pass(&server.app).await.unwrap();
    assert_eq!((removed.runs, removed.logs), (1, 1), "{removed:?}");
    assert!(store.run(older).await.unwrap().is_none());
    assert_eq!(
        stored_lines(&pg, &format!("run_id IN ({older}, {newest})")),
        0
    );
    // The newest run of main stays, without its log.
    let resp = client()
        .get(format!("{}/api/v1/runs/{newest}/steps/0/log", server.url))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 410);
    let again = retention_pass(&server.app).await.unwrap();
    assert_eq!((again.logs, again.runs, again.strays), (0, 0, 0));
    server.stop().await;
}

/// The JWK of `kid` in a JWKS.
fn key_of<'a>(jwks: &'a Value, kid: &str) -> Option<&'a Value> {
    jwks["keys"].as_array()?.iter().find(|k| k["kid"] == kid)
}

/// Verifies a JWT's signature with a JWK (EdDSA or ES256) using ring alone; its claims.
fn verify(token: &str, jwk: &Value) -> Value {
    use ring::signature::{ECDSA_P256_SHA256_FIXED, ED25519, UnparsedPublicKey};
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["kid"], jwk["kid"]);
    let d = |f: &str| URL_SAFE_NO_PAD.decode(jwk[f].as_str().unwrap()).unwrap();
    let message = format!("{}.{}", parts[0], parts[1]);
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    match header["alg"].as_str().unwrap() {
        "EdDSA" => UnparsedPublicKey::new(&ED25519, d("x"))
            .verify(message.as_bytes(), &signature)
            .expect("the signature verifies"),
        "ES256" => {
            let mut point = vec![4u8];
            point.extend(d("x"));
            point.extend(d("y"));
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                .verify(message.as_bytes(), &signature)
                .expect("the signature verifies")
        }
        other => panic!("unexpected alg {other}"),
    }
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
}

fn kid_of(token: &str) -> String {
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

async fn jwks(server: &Server) -> Value {
    let resp = client()
        .get(format!("{}/.well-known/jwks.json", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_an_agent_signs_verifies_against_the_servers_jwks() {
    let pg = Postgres::start();
    let gitea = FakeGitea::start().await;
    let env = on(&pg);
    let server = Server::start_without_engine(&gitea, &pairs(&env), "").await;
    let config = &server.app.config;
    let own = jwks(&server).await;
    assert_eq!(own["keys"].as_array().unwrap().len(), 1, "{own:#}");

    // An agent: its own data directory and keys (ES256 here, the server's are EdDSA), the
    // same issuer.
    let agent_dir = tempfile::tempdir().unwrap();
    let load = |dir: &std::path::Path| {
        Issuer::load(
            &dir.join("keys"),
            Algorithm::ES256,
            &config.server.public_url,
            &config.identity.audience,
            config.identity.token_ttl,
        )
        .unwrap()
    };
    let agent_issuer = load(agent_dir.path());
    let agent = Store::open(&pg.url()).await.unwrap();
    agent_issuer.publish(&agent, "agent-pi1").await.unwrap();
    let token = agent_issuer.mint_server().unwrap();
    let kid = kid_of(&token);
    // Served within the JWKS's cache time.
    let served = eventually(
        Duration::from_secs(30),
        "the agent's key in the JWKS",
        || async {
            let jwks = jwks(&server).await;
            key_of(&jwks, &kid).cloned().map(|key| (key, jwks))
        },
    )
    .await;
    let (key, all) = served;
    let claims = verify(&token, &key);
    assert_eq!(claims["iss"], server.app.config.server.public_url);
    assert_eq!(claims["aud"], config.identity.audience);
    // The server's own key is still there, first.
    assert_eq!(all["keys"][0], own["keys"][0]);
    assert_eq!(all["keys"].as_array().unwrap().len(), 2, "{all:#}");
    let discovery: Value = client()
        .get(format!("{}/.well-known/openid-configuration", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let algs = discovery["id_token_signing_alg_values_supported"].clone();
    assert_eq!(algs, serde_json::json!(["EdDSA", "ES256"]), "{discovery:#}");

    // Nothing private in the database: each row is a public JWK, of its owner.
    let rows = pg.sql("SELECT owner, kid, jwk FROM signing_keys ORDER BY owner");
    let rows: Vec<&str> = rows.lines().collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in &rows {
        let mut cols = row.splitn(3, '|');
        let (owner, row_kid, jwk) = (
            cols.next().unwrap(),
            cols.next().unwrap(),
            cols.next().unwrap(),
        );
        let jwk: Value = serde_json::from_str(jwk).unwrap();
        assert_eq!(jwk["kid"], row_kid);
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(jwk.get(private).is_none(), "{owner}: {jwk}");
        }
        assert!(
            owner == "agent-pi1" || owner == server.app.instance,
            "{owner}"
        );
    }

    // The agent's keys change (a new data directory): what it published before goes.
    let other_dir = tempfile::tempdir().unwrap();
    let replaced = load(other_dir.path());
    replaced.publish(&agent, "agent-pi1").await.unwrap();
    let new_kid = kid_of(&replaced.mint_server().unwrap());
    eventually(
        Duration::from_secs(30),
        "the JWKS without the old key",
        || async {
            let jwks = jwks(&server).await;
            (key_of(&jwks, &kid).is_none() && key_of(&jwks, &new_kid).is_some()).then_some(())
        },
    )
    .await;
    server.stop().await;
}
