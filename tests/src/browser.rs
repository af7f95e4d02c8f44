//! Headless Chromium driven through W3C WebDriver (chromedriver), for the approver page.
//!
//! Needs `chromium` and `chromedriver` (Debian packages `chromium`, `chromium-driver`; the Makefile
//! installs them). Override the paths with `CHROMIUM_BIN` / `CHROMEDRIVER_BIN`. The client is a few
//! WebDriver commands over the tests' own HTTP/1.1 client, so it needs no extra dependency.

use crate::http::Req;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long any step waits for what it needs (an element, a page load) on a loaded machine.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

fn tool(env: &str, default: &str) -> PathBuf {
    let p = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        p.exists(),
        "{} not found: the approver browser test needs it (apt-get install -y chromium chromium-driver, or set {env})",
        p.display()
    );
    p
}

/// A WebDriver session on a chromedriver this process started; both end when it is dropped.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

impl Browser {
    /// Start chromedriver and a headless Chromium with a fresh profile under `dir`.
    pub fn start(dir: &Path) -> Browser {
        let chromium = tool("CHROMIUM_BIN", "/usr/bin/chromium");
        let chromedriver = tool("CHROMEDRIVER_BIN", "/usr/bin/chromedriver");
        std::fs::create_dir_all(dir).unwrap();
        let port = crate::free_port();
        let mut cmd = Command::new(chromedriver);
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(dir.join("chromedriver.log")).unwrap()))
            .stderr(Stdio::null());
        let driver = crate::spawn(cmd).unwrap();
        let mut b = Browser { driver, port, session: String::new() };
        let started = Instant::now();
        while b.raw("GET", "/status", None).is_none_or(|v| v["value"]["ready"] != true) {
            assert!(started.elapsed() < Duration::from_secs(15), "chromedriver did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage", "--window-size=1200,1500",
                         format!("--user-data-dir={}", dir.join("profile").display())]
            }
        }}});
        let resp = b.raw("POST", "/session", Some(caps)).expect("chromedriver answers");
        b.session = resp["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {resp}")).to_owned();
        b
    }

    fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Option<Value> {
        let mut r = Req::new(method, path).header("Host", &format!("127.0.0.1:{}", self.port));
        if let Some(b) = body {
            r = r.header("Content-Type", "application/json").body(b.to_string());
        }
        let resp = r.try_send(self.port).ok()?;
        serde_json::from_slice(&resp.body).ok()
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let v = self
            .raw(method, &format!("/session/{}{path}", self.session), body)
            .unwrap_or_else(|| panic!("webdriver {path}: no answer"));
        assert!(v["value"].get("error").is_none(), "webdriver {path}: {v}");
        v["value"].clone()
    }

    /// Navigate, and wait until the page has loaded.
    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url})));
        self.wait_loaded();
    }
    /// The current URL.
    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None).as_str().unwrap().to_owned()
    }
    /// The document title.
    pub fn title(&self) -> String {
        self.cmd("GET", "/title", None).as_str().unwrap().to_owned()
    }
    /// Run a script in the page; `None` when the page is between documents.
    fn script(&self, js: &str) -> Option<Value> {
        let v = self.raw(
            "POST",
            &format!("/session/{}/execute/sync", self.session),
            Some(json!({"script": js, "args": []})),
        )?;
        v["value"].get("error").is_none().then(|| v["value"].clone())
    }
    /// Wait until the current document has loaded completely.
    pub fn wait_loaded(&self) {
        let started = Instant::now();
        while self.script("return document.readyState").is_none_or(|v| v != "complete") {
            assert!(started.elapsed() < STEP_TIMEOUT, "the page did not finish loading: {}", self.url());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    /// Wait until the current URL satisfies `ok` (and its page has loaded); returns it.
    pub fn wait_url(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let u = self.url();
            if ok(&u) {
                self.wait_loaded();
                return u;
            }
            assert!(started.elapsed() < STEP_TIMEOUT, "waited for {what}; the browser is at {u}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    /// Every element matching a CSS selector, now (no waiting: for asserting absence).
    pub fn find_all(&self, css: &str) -> Vec<String> {
        self.wait_loaded();
        let v = self.cmd("POST", "/elements", Some(json!({"using": "css selector", "value": css})));
        v.as_array().unwrap().iter().map(|e| e[ELEMENT].as_str().unwrap().to_owned()).collect()
    }
    /// The first element matching a CSS selector, waiting (bounded) until the page has it.
    pub fn find(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            let found = self
                .raw(
                    "POST",
                    &format!("/session/{}/elements", self.session),
                    Some(json!({"using": "css selector", "value": css})),
                )
                .and_then(|v| {
                    v["value"].as_array().and_then(|a| a.first()).and_then(|e| e[ELEMENT].as_str().map(str::to_owned))
                });
            if let Some(e) = found {
                return e;
            }
            assert!(started.elapsed() < STEP_TIMEOUT, "no element {css} on {}", self.url());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    /// The rendered text of an element (found again if the page replaced it meanwhile).
    pub fn text(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            let e = self.find(css);
            let v = self.raw("GET", &format!("/session/{}/element/{e}/text", self.session), None);
            if let Some(t) = v.as_ref().and_then(|v| v["value"].as_str()) {
                return t.to_owned();
            }
            assert!(started.elapsed() < STEP_TIMEOUT, "cannot read the text of {css}: {v:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    /// Clear a field and type into it.
    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.cmd("POST", &format!("/element/{e}/value"), Some(json!({"text": text})));
    }
    /// Click an element (one that does not leave the page).
    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})));
    }
    /// Click an element that submits a form or follows a link, and wait until the next document
    /// has replaced this one and finished loading (even when it has the same URL).
    pub fn click_and_wait(&self, css: &str) {
        self.wait_loaded();
        let marked = self.script("window.__mgOld = true; return true");
        assert!(marked.is_some(), "cannot mark the page before clicking {css}");
        self.click(css);
        let started = Instant::now();
        while self
            .script("return window.__mgOld === true ? 'old' : document.readyState")
            .is_none_or(|v| v != "complete")
        {
            assert!(started.elapsed() < STEP_TIMEOUT, "no new page loaded after clicking {css}: {}", self.url());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    /// Save a PNG screenshot of the page.
    pub fn screenshot(&self, to: &Path) -> usize {
        let png = self.cmd("GET", "/screenshot", None);
        let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, png.as_str().unwrap()).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, &bytes).unwrap();
        bytes.len()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = Req::new("DELETE", &format!("/session/{}", self.session))
                .header("Host", &format!("127.0.0.1:{}", self.port))
                .try_send(self.port);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
