//! Schedules in a time zone: `@daily` read on Paris's wall clock is due at local midnight,
//! not at UTC midnight, through the server's schedule tick (given the time, so no test waits
//! for a real minute).

use pipewright_tests::fake_gitea::FakeGitea;

use crate::serve::{Server, final_statuses, states, step};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_schedule_in_a_time_zone_runs_at_local_midnight() {
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let repo = gitea.create_repo("org", "backups");
    let pipeline = format!(
        "on:\n  schedule:\n    - cron: \"@daily\"\n      timezone: Europe/Paris\nsteps:\n{}",
        step("backup", "echo \"backup on $PIPEWRIGHT_EVENT\"")
    );
    let c1 = crate::serve::push_and_know(&server, &repo, "backup", &pipeline).await;

    // 2026-11-22T00:00:30Z is 01:00 in Paris (CET): not due.
    let utc_midnight = 1_795_305_630;
    assert_eq!(
        pipewright::server::schedule_tick(&server.app, utc_midnight).await,
        Ok(0)
    );
    // 2026-11-22T23:00:30Z is midnight in Paris: due, once.
    let paris_midnight = utc_midnight + 23 * 3600;
    assert_eq!(
        pipewright::server::schedule_tick(&server.app, paris_midnight).await,
        Ok(1)
    );
    assert_eq!(
        pipewright::server::schedule_tick(&server.app, paris_midnight + 15).await,
        Ok(0),
        "once per minute"
    );
    assert_eq!(
        states(&final_statuses(&repo, &c1, "pipewright/backup").await),
        ["pending", "success"]
    );
    let runs = server.runs().await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["event"], "schedule");
    let id = runs[0]["id"].as_i64().unwrap();
    assert_eq!(server.log(id, 0).await, "backup on schedule\n");
    server.stop().await;
}

#[test]
fn validate_reports_an_unknown_time_zone_and_a_cron_that_never_fires() {
    let dir = tempfile::tempdir().unwrap();
    let pipelines = dir.path().join(".pipewright");
    std::fs::create_dir(&pipelines).unwrap();
    std::fs::write(
        pipelines.join("nightly.yml"),
        "on:\n  schedule:\n    - cron: \"0 0 31 2 *\"\n    - cron: \"@daily\"\n      timezone: Europe/Pariss\nsteps: [{ name: a, image: busybox, run: x }]\n",
    )
    .unwrap();
    let out = std::process::Command::new(crate::exec_cli::pipewright_bin())
        .arg("validate")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}{stderr}");
    let text = format!("{stdout}{stderr}");
    for line in [
        ".pipewright/nightly.yml:3:13: invalid cron `0 0 31 2 *`: it never fires",
        ".pipewright/nightly.yml:5:17: unknown time zone `Europe/Pariss`; did you mean `Europe/Paris`?",
    ] {
        assert!(text.contains(line), "`{line}` missing from:\n{text}");
    }
}
