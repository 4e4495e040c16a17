//! Masking as an attacker tries it: a pipeline with a Vault secret and identity tokens
//! prints them in every encoding it can, across the 64 KiB cuts of long lines, in a
//! failure message (the step's and run's descriptions, the commit status) and in a plan
//! comment; none of it may reach a stored log, the API, or Gitea. And a `PREFIX_*` secret
//! whose keys would set a variable only Pipewright sets ends the run before any step.

use std::{process::Command, time::Duration};

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE},
};
use pipewright_tests::{
    fake_gitea::{FakeGitea, PullAction, Repo},
    services::Postgres,
};
use serde_json::json;

use crate::{
    actions::{TOOLS, jwt_role},
    serve::{Server, eventually, final_statuses, step},
    vault::{OpenBao, ROOT},
};

/// The secret: two lines, with characters that every encoding changes (space, quote,
/// slash, backslash, `&`, non-ASCII).
const VALUE: &str = "Tr0ub4dor&3 \"horse\"/battery\\staple é\nline-two-of-the-secret";
/// Where the executor cuts long lines.
const CUT: usize = pipewright_containers::MAX_LINE;

const POLICY: &str = "path \"kvv1/*\" { capabilities = [\"read\"] }\n";

/// OpenBao with the server's jwt auth, a role for `repo` (on `git_ref` when given), and
/// the attacker's secrets in KV v1.
async fn vault_for(server: &Server, bao: &OpenBao, repo: &str, git_ref: Option<&str>) {
    jwt_role(bao, server, "gitea_cicd_mask", repo, git_ref, POLICY).await;
    bao.post(
        "sys/mounts/kvv1",
        json!({ "type": "kv", "options": { "version": "1" } }),
    )
    .await;
    bao.post("kvv1/mask/app", json!({ "value": VALUE })).await;
}

/// What a pipeline can make of a value, built here independently of the masker: itself,
/// hex, percent-encodings, its JSON string, and the base64 characters that depend on it
/// alone at each of the three offsets of a longer stream, in both alphabets.
fn forms(value: &str) -> Vec<String> {
    let mut out = vec![value.to_string()];
    out.push(value.bytes().map(|b| format!("{b:02x}")).collect());
    out.push(value.bytes().map(|b| format!("{b:02X}")).collect());
    for (space, upper) in [("%20", true), ("+", false), ("+", true), ("%20", false)] {
        let mut url = String::new();
        for b in value.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    url.push(b as char)
                }
                b' ' => url.push_str(space),
                _ if upper => url.push_str(&format!("%{b:02X}")),
                _ => url.push_str(&format!("%{b:02x}")),
            }
        }
        out.push(url);
    }
    let json = serde_json::to_string(value).unwrap();
    out.push(json[1..json.len() - 1].to_string());
    for engine in [STANDARD, URL_SAFE] {
        for lead in ["", "x", "xy"] {
            let encoded = engine.encode(format!("{lead}{value}"));
            let first = (8 * lead.len()).div_ceil(6);
            let last = 8 * (lead.len() + value.len()) / 6;
            out.push(encoded[first..last].to_string());
        }
    }
    out
}

/// Every form of the secret, of each of its lines, of each token and of each of its
/// segments.
fn forbidden(tokens: &[String]) -> Vec<String> {
    let mut all = forms(VALUE);
    for line in VALUE.lines() {
        all.extend(forms(line));
    }
    for token in tokens {
        all.extend(forms(token));
        for segment in token.split('.') {
            assert!(segment.len() > 8, "{token}");
            all.extend(forms(segment));
        }
    }
    all
}

/// Fails when `text` holds any of `forbidden`, also once its line breaks are removed (a
/// secret cut in two at a 64 KiB boundary would show that way).
fn assert_clean(what: &str, text: &str, forbidden: &[String]) {
    let joined = text.replace('\n', "");
    for f in forbidden {
        assert!(
            !text.contains(f.as_str()) && !joined.contains(f.as_str()),
            "{what} holds `{f}`:\n{}",
            &text[..text.len().min(4000)]
        );
    }
}

/// Everything Pipewright let out of a run: stored logs, the run from the API, statuses,
/// comments, and every request body Gitea received.
async fn assert_nothing_leaked(
    server: &Server,
    gitea: &FakeGitea,
    repo: &Repo,
    run: i64,
    sha: &str,
    pull: Option<u64>,
    forbidden: &[String],
) {
    let detail = server.api(&format!("/api/v1/runs/{run}")).await;
    let steps = detail["steps"].as_array().cloned().unwrap_or_default();
    for step in &steps {
        let index = step["index"].as_i64().or(step["idx"].as_i64()).unwrap_or(0);
        let log = server.log(run, index).await;
        assert_clean(&format!("the log of step {index}"), &log, forbidden);
    }
    assert_clean("the run in the API", &detail.to_string(), forbidden);
    assert_clean(
        "the run list",
        &json!(server.runs().await).to_string(),
        forbidden,
    );
    for status in repo.statuses(sha) {
        assert_clean("a commit status", &status.description, forbidden);
    }
    if let Some(number) = pull {
        for comment in repo.comments(number) {
            assert_clean("a comment", &comment.body, forbidden);
        }
    }
    for request in gitea.requests() {
        assert_clean(
            &format!("{} {}", request.method, request.path),
            &request.body_text(),
            forbidden,
        );
    }
}

/// Shell that prints `$LEAK` and `$PIPEWRIGHT_ID_TOKEN` in every form, and across cuts;
/// the token is also written to `token_file`, for the test to know it.
fn printing_script(token_file: &str) -> String {
    let offsets: Vec<String> = [38, 30, 20, 10, 2, 1, 0]
        .iter()
        .map(|back| (CUT - back).to_string())
        .collect();
    format!(
        r#"S="$LEAK"
T="$PIPEWRIGHT_ID_TOKEN"
printf %s "$T" > {token_file}
L1=$(printf %s "$S" | head -n 1)
hex() {{ printf %s "$1" | od -An -v -tx1 | tr -d ' \n'; }}
urlenc() {{
  printf %s "$1" | od -An -v -tx1 | tr -s ' ' '\n' | grep . | while read -r h; do
    case $h in
      3[0-9]|4[1-9a-f]|5[0-9a]|6[1-9a-f]|7[0-9a]|2d|2e|5f|7e) printf "\\x$h";;
      20) printf %s "$2";;
      *) printf %%%s "$(echo "$h" | tr a-f "$3")";;
    esac
  done
}}
jsonesc() {{ printf %s "$1" | sed 's/\\/\\\\/g; s/"/\\"/g' | awk 'NR>1{{printf "\\n"}} {{printf "%s", $0}}'; }}
for v in "$S" "$L1" "$T" $(echo "$T" | tr . ' '); do
  echo "raw: $v"
  echo "hex: $(hex "$v") HEX: $(hex "$v" | tr a-f A-F)"
  echo "url: $(urlenc "$v" %20 A-F) $(urlenc "$v" + a-f) $(urlenc "$v" + A-F)"
  echo "json: {{\"v\":\"$(jsonesc "$v")\"}}"
  for lead in "" x xy; do
    echo "b64: $(printf '%s%s-and-more' "$lead" "$v" | base64 -w0)"
    echo "b64url: $(printf '%s%s-and-more' "$lead" "$v" | base64 -w0 | tr '+/' '-_')"
  done
  echo "wrapped:"; printf '%s\n' "$v" | base64
done
for n in {offsets}; do
  for v in "$L1" "$T" "$(hex "$L1")"; do
    head -c "$n" /dev/zero | tr '\0' x; printf '%s' "$v"; echo " after"
  done
done
echo "printed everything""#,
        offsets = offsets.join(" "),
    )
}

/// A server for `org/app` whose steps may mount a host directory (where a step leaves
/// what the test must know, like its token), and OpenBao set up by [`vault_for`].
struct WithOut {
    out: tempfile::TempDir,
    out_dir: String,
    bao: OpenBao,
    gitea: FakeGitea,
    server: Server,
}

async fn with_out(network: Option<&str>) -> WithOut {
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().display().to_string();
    let bao = OpenBao::start().await;
    let gitea = FakeGitea::start().await;
    let policy = format!("[[repos]]\nname = \"org/app\"\nhost_volumes = [\"{out_dir}\"]\n");
    let mut env = vec![("PIPEWRIGHT_VAULT__ADDRESS", bao.addr.as_str())];
    if let Some(n) = network {
        env.push(("PIPEWRIGHT_DOCKER__NETWORK", n));
    }
    let server = Server::start_with_config(&gitea, &env, &policy).await;
    vault_for(&server, &bao, "org/app", Some("refs/heads/main")).await;
    WithOut {
        out,
        out_dir,
        bao,
        gitea,
        server,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_form_of_a_secret_or_token_leaves_a_step() {
    let pg = Postgres::start();
    let WithOut {
        out,
        out_dir,
        bao,
        gitea,
        server,
    } = with_out(Some("host")).await;
    bao.post(
        "kvv1/mask/db",
        json!({ "username": Postgres::ADMIN_USER, "password": Postgres::ADMIN_PASSWORD }),
    )
    .await;
    let repo = gitea.create_repo("org", "app");
    // The second step makes psql quote the secret in its error: the step's failure
    // message, hence the step's and the run's descriptions and the commit status.
    let pipeline = format!(
        "on: push\nvault:\n  role: gitea_cicd_mask\n  secrets:\n    LEAK: kvv1/mask/app#value\nvolumes: [\"{out_dir}:/out\"]\nsteps:\n{}  - name: describe\n    uses: postgres\n    with:\n      files: [\"sql/*.sql\"]\n      host: 127.0.0.1\n      port: {}\n      database: postgres\n      credentials: kvv1/mask/db\n      sslmode: disable\n      image: {TOOLS}\n",
        step("print", &printing_script("/out/token")),
        pg.port()
    );
    let c0 = repo
        .commit("main", "init")
        .write("README.md", "app\n")
        .push();
    let c1 = repo
        .commit("main", "ci")
        .write(".pipewright/leak.yml", &pipeline)
        .write(
            "sql/001_leak.sql",
            "\\set s `printenv LEAK`\nSELECT :'s'::int;\n",
        )
        .push();
    assert_eq!(server.deliver(repo.push_event("main", &c0, &c1)).await, 202);
    let statuses = final_statuses(&repo, &c1, "pipewright/leak").await;
    let last = statuses.last().unwrap();
    assert_eq!(last.state, "failure", "{statuses:?}");
    // The failure is described, with the secret masked in it.
    assert!(
        last.description.contains("sql/001_leak.sql")
            && last.description.contains("invalid input syntax")
            && last.description.contains("***"),
        "{last:?}"
    );
    assert!(last.description.chars().count() < 140, "{last:?}");
    let run = server.runs().await[0]["id"].as_i64().unwrap();
    let log = server.log(run, 0).await;
    assert!(
        log.contains("printed everything"),
        "{}",
        &log[..log.len().min(2000)]
    );
    assert!(log.contains("raw: ***"), "{}", &log[..log.len().min(2000)]);
    // Each cut line kept its length around the mask: nothing was lost or doubled.
    assert_eq!(
        log.matches("*** after").count(),
        7 * 3,
        "every secret across a cut is masked once"
    );
    let token = std::fs::read_to_string(out.path().join("token")).unwrap();
    assert_eq!(token.split('.').count(), 3, "{token}");
    assert_nothing_leaked(&server, &gitea, &repo, run, &c1, None, &forbidden(&[token])).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_comment_cannot_carry_a_secret() {
    let bao = OpenBao::start().await;
    let gitea = FakeGitea::start().await;
    let server =
        Server::start_with(&gitea, &[("PIPEWRIGHT_VAULT__ADDRESS", bao.addr.as_str())]).await;
    // Pull requests of the repository itself may read it (no `ref` bound).
    vault_for(&server, &bao, "org/infra", None).await;
    let repo = gitea.create_repo("org", "infra");
    let pipeline = format!(
        "on: pull_request\nvault:\n  role: gitea_cicd_mask\n  secrets:\n    TF_VAR_names: kvv1/mask/app#value\nsteps:\n  - name: tofu\n    uses: tofu\n    with: {{ path: iac, image: {TOOLS} }}\n"
    );
    // The secret becomes a resource address, which the plan comment lists.
    let main_tf = "variable \"names\" {\n  type = string\n}\nresource \"terraform_data\" \"leak\" {\n  for_each = toset([var.names, \"plain\"])\n  input    = each.key\n}\n";
    repo.commit("main", "ci")
        .write(".pipewright/iac.yml", &pipeline)
        .write("README.md", "infra\n")
        .push();
    repo.create_branch("change", "main");
    let head = repo
        .commit("change", "leak")
        .write("iac/main.tf", main_tf)
        .push();
    let number = repo.open_pull("change", "main");
    assert_eq!(
        server
            .deliver(repo.pull_request_event(number, PullAction::Opened))
            .await,
        202
    );
    let statuses = final_statuses(&repo, &head, "pipewright/iac").await;
    let last = statuses.last().unwrap();
    assert_eq!(
        (last.state.as_str(), last.description.as_str()),
        ("success", "plan: 2 to add, 0 to change, 0 to destroy"),
        "{statuses:?}"
    );
    let comment = eventually(Duration::from_secs(60), "the plan comment", || async {
        repo.comments(number).into_iter().next()
    })
    .await;
    assert!(
        comment.body.contains("terraform_data.leak[\"plain\"]")
            && comment.body.contains("terraform_data.leak[\"***\"]"),
        "{}",
        comment.body
    );
    let run = server.runs().await[0]["id"].as_i64().unwrap();
    assert_nothing_leaked(
        &server,
        &gitea,
        &repo,
        run,
        &head,
        Some(number),
        &forbidden(&[]),
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_into_a_reserved_name_ends_the_run_before_any_step() {
    let WithOut {
        out,
        out_dir,
        bao,
        gitea,
        server,
    } = with_out(None).await;
    // Keys that give reserved names only once joined to a prefix that `validate` accepts.
    bao.post(
        "kvv1/mask/fan",
        json!({ "i": "fan-value-ci", "jwt": "fan-value-jwt", "_id_token": "fan-value-token" }),
    )
    .await;
    let repo = gitea.create_repo("org", "app");
    let mut commit = repo.commit("main", "ci");
    let cases = [
        ("ci", "C", "CI"),
        ("jwt", "TERRAFORM_VAULT_AUTH_", "TERRAFORM_VAULT_AUTH_JWT"),
        ("token", "PIPEWRIGHT", "PIPEWRIGHT_ID_TOKEN"),
    ];
    for (name, prefix, _) in cases {
        let pipeline = format!(
            "on: push\nvault:\n  role: gitea_cicd_mask\n  secrets:\n    {prefix}*: kvv1/mask/fan#*\nvolumes: [\"{out_dir}:/out\"]\nsteps:\n{}",
            step("run", &format!("touch /out/{name}-ran"))
        );
        commit = commit.write(&format!(".pipewright/{name}.yml"), &pipeline);
    }
    let c0 = repo
        .commit("main", "init")
        .write("README.md", "app\n")
        .push();
    let c1 = commit.push();
    assert_eq!(server.deliver(repo.push_event("main", &c0, &c1)).await, 202);
    for (name, _, reserved) in cases {
        let statuses = final_statuses(&repo, &c1, &format!("pipewright/{name}")).await;
        let last = statuses.last().unwrap();
        assert_eq!(last.state, "error", "{statuses:?}");
        assert!(
            last.description.contains("`kvv1/mask/fan`")
                && last.description.contains(&format!("`{reserved}`")),
            "{last:?}"
        );
        assert!(!last.description.contains("fan-value"), "{last:?}");
        let runs = server.runs().await;
        let run = runs.iter().find(|r| r["pipeline"] == name).unwrap();
        let detail = server
            .api(&format!("/api/v1/runs/{}", run["id"].as_i64().unwrap()))
            .await;
        assert_eq!(detail["state"], "error", "{detail:#}");
        assert_eq!(
            detail["steps"].as_array().map(Vec::len),
            Some(0),
            "no step ran: {detail:#}"
        );
        assert!(!out.path().join(format!("{name}-ran")).exists());
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_prints_no_form_of_a_secret_or_token() {
    let bao = OpenBao::start().await;
    bao.post(
        "secret/data/mask/app",
        json!({ "data": { "value": VALUE } }),
    )
    .await;
    let repo = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let pipeline = format!(
        "on: push\nvault:\n  secrets:\n    LEAK: secret/mask/app#value\nvolumes: [\"{}:/out\"]\nsteps:\n{}",
        out_dir.path().display(),
        step(
            "print",
            &format!(
                "{}\necho \"$LEAK\" >&2\nexit 3",
                printing_script("/out/token")
            )
        )
    );
    std::fs::create_dir_all(repo.path().join(".pipewright")).unwrap();
    std::fs::write(repo.path().join(".pipewright/leak.yml"), pipeline).unwrap();
    let out = Command::new(crate::exec_cli::pipewright_bin())
        .arg("exec")
        .arg(repo.path())
        .arg("--vault-addr")
        .arg(&bao.addr)
        .env("VAULT_TOKEN", ROOT)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stdout.contains("print | printed everything"), "{stderr}");
    assert_eq!(stdout.matches("*** after").count(), 7 * 3);
    assert!(stderr.contains("print | ***"), "{stderr}");
    let token = std::fs::read_to_string(out_dir.path().join("token")).unwrap();
    let forbidden = forbidden(&[token]);
    assert_clean("exec's standard output", &stdout, &forbidden);
    assert_clean("exec's standard error", &stderr, &forbidden);
}
