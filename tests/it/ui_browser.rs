//! The web UI in a real browser (headless Chromium over WebDriver): what a person signed in
//! sees and does, with screenshots saved under the target directory's `ui-screenshots/`.

use pipewright_tests::browser::Browser;
use pipewright_tests::fake_gitea::FakeGitea;

use crate::serve::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runs_page_opens_in_a_browser_when_runs_are_public() {
    let gitea = FakeGitea::start().await;
    let server =
        Server::start_without_engine(&gitea, &[("PIPEWRIGHT_API__READ_PUBLIC", "true")], "").await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/", server.url)).await;
    let title: String = browser.js("return document.title;", vec![]).await;
    assert!(title.contains("Pipewright"), "title: {title:?}");
    browser
        .wait_text("h1", "the page's heading", |t| t == "Runs")
        .await;
    let shot = browser.screenshot("runs-public-empty").await;
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 1000,
        "{}",
        shot.display()
    );
    let (width, height): (u32, u32) = browser
        .js("return [window.innerWidth, window.innerHeight];", vec![])
        .await;
    assert_eq!((width, height), (1280, 900));
    browser.close().await;
    server.stop().await;
}
