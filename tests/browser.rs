//! A real browser for the web UI's tests: Debian's headless Chromium driven over WebDriver
//! (`chromedriver` on a loopback port of its own, a throw-away profile), with waits that
//! poll a condition until a generous deadline and screenshots written as PNG files.
//!
//! Chromium reaches loopback only: its background services are off and no address but
//! `localhost` and `127.0.0.1` resolves.

use std::{
    future::Future,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use hyper_util::client::legacy::connect::HttpConnector;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// How long a wait polls before it fails: a page on a busy two-core machine that also runs
/// containers may take seconds, and a wait ends as soon as its condition holds.
pub const WAIT: Duration = Duration::from_secs(60);

/// The size of the window a page is shown in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Viewport {
    /// 1280×900, a laptop's browser window.
    Desktop,
    /// 390×844 at a device pixel ratio of 1, a phone held upright (touch, mobile layout).
    Mobile,
}

/// A headless Chromium and the `chromedriver` driving it, both ended on drop.
#[derive(Debug)]
pub struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// The first of `names` on `PATH`.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

fn missing(what: &str) -> ! {
    panic!(
        "{what} is not installed: the web UI's browser tests need Debian's packages `chromium` \
         and `chromium-driver` (scripts/test-env.sh installs them)"
    )
}

/// Starts `chromedriver` on a free loopback port; returns it and the port.
fn start_driver() -> (Child, u16) {
    let driver = on_path(&["chromedriver"]).unwrap_or_else(|| missing("chromedriver"));
    let mut command = Command::new(driver);
    command
        .args(["--port=0", "--log-level=WARNING"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // Its own process group, so that dropping the browser ends Chromium's processes too.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().expect("failed to start chromedriver");
    let stdout = child.stdout.take().expect("chromedriver's stdout");
    let mut lines = BufReader::new(stdout).lines();
    let port = loop {
        match lines.next() {
            Some(Ok(line)) => {
                // "ChromeDriver was started successfully on port 35523."
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    break rest
                        .trim_end_matches('.')
                        .trim()
                        .parse::<u16>()
                        .unwrap_or_else(|_| panic!("chromedriver said: {line}"));
                }
            }
            Some(Err(e)) => panic!("reading chromedriver's output: {e}"),
            None => {
                let status = child.wait();
                panic!("chromedriver exited before it listened: {status:?}")
            }
        }
    };
    // Keep draining its output so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, port)
}

fn capabilities(profile: &Path, viewport: Viewport) -> serde_json::Map<String, Value> {
    let chromium =
        on_path(&["chromium", "chromium-browser"]).unwrap_or_else(|| missing("chromium"));
    let mut args = vec![
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        format!("--user-data-dir={}", profile.display()),
        "--no-first-run".to_owned(),
        "--no-default-browser-check".to_owned(),
        "--disable-extensions".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--disable-default-apps".to_owned(),
        "--disable-domain-reliability".to_owned(),
        "--disable-client-side-phishing-detection".to_owned(),
        "--disable-breakpad".to_owned(),
        "--no-pings".to_owned(),
        "--no-proxy-server".to_owned(),
        "--password-store=basic".to_owned(),
        "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication"
            .to_owned(),
        // Nothing but loopback: no address but localhost and 127.0.0.1 resolves.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1".to_owned(),
        // Background tabs keep their timers and streams going (the benchmark follows logs
        // in many tabs at once).
        "--disable-background-timer-throttling".to_owned(),
        "--disable-renderer-backgrounding".to_owned(),
        "--disable-backgrounding-occluded-windows".to_owned(),
    ];
    // The page's viewport gets exactly this size (a window size would include the frame).
    let (width, height, mobile) = match viewport {
        Viewport::Desktop => (1280, 900, false),
        Viewport::Mobile => (390, 844, true),
    };
    args.push(format!("--window-size={width},{height}"));
    let mut options = json!({
        "binary": chromium.display().to_string(),
        "mobileEmulation": {
            "deviceMetrics": {
                "width": width, "height": height, "pixelRatio": 1.0, "mobile": mobile, "touch": mobile
            }
        }
    });
    options["args"] = json!(args);
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert("goog:chromeOptions".into(), options);
    caps
}

impl Browser {
    /// A desktop-sized browser.
    pub async fn start() -> Browser {
        Browser::start_sized(Viewport::Desktop).await
    }

    /// A browser with the given window size. Panics, naming what to install, when Chromium
    /// or its driver is missing: these tests fail, they never skip.
    pub async fn start_sized(viewport: Viewport) -> Browser {
        let profile = tempfile::tempdir().expect("a profile directory");
        let caps = capabilities(profile.path(), viewport);
        let (driver, port) = start_driver();
        let mut browser_driver = Some(driver);
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        let client = match client {
            Ok(client) => client,
            Err(e) => {
                if let Some(driver) = browser_driver.take() {
                    end_group(driver);
                }
                panic!("chromedriver could not start Chromium: {e}")
            }
        };
        Browser {
            client,
            driver: browser_driver.take().expect("the driver"),
            _profile: profile,
        }
    }

    /// The WebDriver client, for what these helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url` and waits for its `load` event.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    /// The address the tab shows now.
    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("the current URL")
            .to_string()
    }

    /// Runs `script` (a function body: `return …`) in the page and decodes its value.
    pub async fn js<T: DeserializeOwned>(&self, script: &str, args: Vec<Value>) -> T {
        let value = self
            .client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("running {script:?} in the page: {e}"));
        serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("{script:?} gave {value}, which does not decode: {e}"))
    }

    /// The text of the first element matching `css` (as `textContent`, trimmed), or `None`.
    pub async fn text(&self, css: &str) -> Option<String> {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent.trim() : null;",
            vec![json!(css)],
        )
        .await
    }

    /// The trimmed texts of every element matching `css`, in document order.
    pub async fn texts(&self, css: &str) -> Vec<String> {
        self.js(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent.trim());",
            vec![json!(css)],
        )
        .await
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> usize {
        self.js(
            "return document.querySelectorAll(arguments[0]).length;",
            vec![json!(css)],
        )
        .await
    }

    /// An attribute of the first element matching `css`, if both exist.
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
            vec![json!(css), json!(name)],
        )
        .await
    }

    /// The element matching `css`, waiting until there is one.
    pub async fn find(&self, css: &str) -> Element {
        let what = format!("an element matching `{css}` on {}", self.url().await);
        self.until(&what, || async {
            self.client.find(Locator::Css(css)).await.ok()
        })
        .await
    }

    /// Clicks the element matching `css` (waiting until there is one).
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking `{css}`: {e}"));
    }

    /// Types `text` into the field matching `css`, after clearing it.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clearing `{css}`: {e}"));
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("typing into `{css}`: {e}"));
    }

    /// Waits until the text of the element matching `css` satisfies `ok`; returns that text.
    pub async fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.text(css).await;
            if let Some(text) = text.as_deref().filter(|t| ok(t)) {
                return text.to_owned();
            }
            if Instant::now() >= deadline {
                let shot = self.screenshot("timed-out").await;
                panic!(
                    "gave up after {WAIT:?} waiting for {what} (the text of `{css}`); it was \
                     {text:?} (the page then: {})",
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `check` gives a value (polling every 50 ms); fails after [`WAIT`], saving
    /// a screenshot of the page as it was then.
    pub async fn until<T, F, Fut>(&self, what: &str, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        match poll(WAIT, check).await {
            Some(value) => value,
            None => {
                let shot = self.screenshot("timed-out").await;
                panic!(
                    "gave up after {WAIT:?} waiting for {what} (the page then: {})",
                    shot.display()
                )
            }
        }
    }

    /// Saves what the window shows as `<name>.png` in [`screenshot_dir`]; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = screenshot_dir();
        let path = dir.join(format!("{name}.png"));
        self.save_screenshot(&path).await;
        path
    }

    /// A screenshot for the README: written like [`Browser::screenshot`], and also to
    /// `docs/<name>.png` when `PIPEWRIGHT_UI_SCREENSHOTS=docs`.
    pub async fn doc_screenshot(&self, name: &str) -> PathBuf {
        let path = self.screenshot(name).await;
        if std::env::var("PIPEWRIGHT_UI_SCREENSHOTS").as_deref() == Ok("docs") {
            let docs = workspace().join("docs");
            std::fs::create_dir_all(&docs).expect("creating docs/");
            std::fs::copy(&path, docs.join(format!("{name}.png"))).expect("copying to docs/");
        }
        path
    }

    async fn save_screenshot(&self, path: &Path) {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("taking a screenshot: {e}"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("creating the screenshot directory");
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// Opens a new tab and switches to it.
    pub async fn new_tab(&self) {
        let tab = self.client.new_window(true).await.expect("a new tab");
        self.client
            .switch_to_window(tab.handle)
            .await
            .expect("switching to the new tab");
    }

    /// Ends the WebDriver session (Chromium quits) and the driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Whatever is left of the driver's process group: Chromium and its helpers.
        if let Ok(pid) = i32::try_from(self.driver.id())
            && let Some(pid) = rustix::process::Pid::from_raw(pid)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn end_group(mut driver: Child) {
    if let Ok(pid) = i32::try_from(driver.id())
        && let Some(pid) = rustix::process::Pid::from_raw(pid)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = driver.wait();
}

/// Polls `check` every 50 ms until it gives a value, or gives `None` after `limit`.
pub async fn poll<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The repository's root directory.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Where tests save screenshots: `ui-screenshots/` in Cargo's target directory
/// (`CARGO_TARGET_DIR`, else `target/`).
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    target.join("ui-screenshots")
}
