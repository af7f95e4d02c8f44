//! The approver page in a real browser: headless Chromium driven through WebDriver (chromedriver),
//! with a small hand-rolled W3C WebDriver client over reqwest (no extra dependency).
//!
//! Needs `chromium` and `chromedriver` (Debian packages `chromium`, `chromium-driver`; the Makefile
//! installs them). Override the paths with `CHROMIUM_BIN` / `CHROMEDRIVER_BIN`. Leaves a screenshot
//! of the page in `target/e2e/approver.png`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use missiongate_wire::b64;
use missiongate_wire::time::parse_rfc3339;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn tool(env: &str, default: &str) -> PathBuf {
    let p = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default));
    assert!(
        p.exists(),
        "{} not found: the approver browser test needs it (apt-get install -y chromium chromium-driver, or set {env})",
        p.display()
    );
    p
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// A W3C WebDriver session on a chromedriver we started.
#[derive(Clone)]
struct Browser {
    http: reqwest::Client,
    base: String,
}

impl Browser {
    async fn start(profile: &Path, log: &Path) -> (Browser, Child) {
        let chromium = tool("CHROMIUM_BIN", "/usr/bin/chromium");
        let chromedriver = tool("CHROMEDRIVER_BIN", "/usr/bin/chromedriver");
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(log).unwrap()))
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let root = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{root}/status")).send().await {
                if r.json::<Value>().await.is_ok_and(|v| v["value"]["ready"] == true) {
                    break;
                }
            }
            assert!(started.elapsed() < Duration::from_secs(15), "chromedriver did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage", "--window-size=1200,1500",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let resp: Value = http.post(format!("{root}/session")).json(&caps).send().await.unwrap().json().await.unwrap();
        let session = resp["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {resp}")).to_owned();
        (Browser { http, base: format!("{root}/session/{session}") }, driver)
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        assert!(v["value"].get("error").is_none(), "webdriver {path}: {v}");
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
    }
    async fn url(&self) -> String {
        self.cmd(reqwest::Method::GET, "/url", None).await.as_str().unwrap().to_owned()
    }
    async fn title(&self) -> String {
        self.cmd(reqwest::Method::GET, "/title", None).await.as_str().unwrap().to_owned()
    }
    async fn find_all(&self, css: &str) -> Vec<String> {
        let v = self.cmd(reqwest::Method::POST, "/elements", Some(json!({"using": "css selector", "value": css}))).await;
        v.as_array().unwrap().iter().map(|e| e[ELEMENT].as_str().unwrap().to_owned()).collect()
    }
    async fn find(&self, css: &str) -> String {
        self.find_all(css).await.into_iter().next().unwrap_or_else(|| panic!("no element {css}"))
    }
    async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.cmd(reqwest::Method::GET, &format!("/element/{e}/text"), None).await.as_str().unwrap().to_owned()
    }
    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{e}/clear"), Some(json!({}))).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{e}/value"), Some(json!({"text": text}))).await;
    }
    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{e}/click"), Some(json!({}))).await;
    }
    async fn screenshot(&self, to: &Path) {
        let png = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, png.as_str().unwrap()).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, bytes).unwrap();
    }
    async fn quit(self, mut driver: Child) {
        let _ = self.http.delete(&self.base).send().await;
        let _ = driver.start_kill();
        let _ = driver.wait().await;
    }
}

#[tokio::test]
async fn approver_signs_in_sees_inert_agent_text_and_approves_in_chromium() {
    let started = Instant::now();
    let (dir, db) = temp_db();
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let p = Portal::try_start(&db, &format!("127.0.0.1:{port}"), Some(&public), &[]).await.expect("portal starts");
    let m = p.active_mission().await;
    let payload = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">";
    let (params, digest) = payment("423.50", payload);
    let req = eval_req(&m, PARTNER, "http.post", Some(&digest));
    let d = p.evaluate(&req).await;
    assert_eq!(d["context"]["next_action"], "request");
    let portal_url = d["context"]["user_portal_url"].as_str().unwrap().to_owned();
    assert!(portal_url.starts_with(&public));
    let justification = format!("Invoice 842 is due today. {payload}");
    let (s, _, t) = p.submit(Some("browser-1"), &submission(&d, &justification, Some(&params))).await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let task_id = t["task"]["id"].as_str().unwrap().to_owned();

    let (browser, driver) = Browser::start(&dir.path().join("chromium-profile"), &dir.path().join("chromedriver.log")).await;
    let shot = target_dir().join("e2e/approver.png");
    // Run the steps in a task so the browser is shut down whatever happens, then report.
    let steps = {
        let b = browser.clone();
        let shot = shot.clone();
        let m = m.clone();
        async move {
            // The user-portal-url sends an approver to sign in first, then back to the denial.
            b.goto(&portal_url).await;
            assert!(b.url().await.contains("/portal/login?next="), "{}", b.url().await);
            b.type_into("#token", APPROVER_TOKEN).await;
            b.click("#login").await;
            assert_eq!(b.url().await, portal_url, "back on the denial after sign-in");
            assert_eq!(b.title().await, "Access request · missiongate");
            assert!(b.text("#who").await.contains(APPROVER));
            // What the approver must see: agent, Mission (id + goal), destination, operation, parameters.
            assert!(b.text("#agent").await.contains(AGENT));
            let mission = b.text("#mission").await;
            assert!(mission.contains(m["id"].as_str().unwrap()) && mission.contains("Pay the Q3 partner invoices <b>on time</b>"), "{mission}");
            assert_eq!(b.text("#destination").await, PARTNER);
            assert_eq!(b.text("#operation").await, "http.post");
            // The payload is shown as text and did not run.
            assert!(b.text("#justification").await.contains(payload), "shown verbatim as text");
            assert!(b.text("#parameters").await.contains("document.title='pwned'"));
            assert!(b.find_all("script").await.is_empty(), "no script element on the page");
            assert!(b.find_all("img").await.is_empty(), "no img element on the page");
            assert_ne!(b.title().await, "pwned");
            b.screenshot(&shot).await;
            // Approve for 5 minutes.
            b.type_into("#minutes", "5").await;
            b.click("#approve").await;
            assert_eq!(b.url().await, portal_url);
            let grant = b.text("#grant").await;
            assert!(grant.contains("approver:alice") && grant.contains("one use"), "{grant}");
            assert!(b.text("#state").await.contains("approved"));
            assert_ne!(b.title().await, "pwned");
        }
    };
    let outcome = tokio::time::timeout(Duration::from_secs(60), tokio::spawn(steps)).await;
    browser.quit(driver).await;
    match outcome {
        Err(_) => panic!("the browser steps did not finish within 60 s"),
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(r) => r.unwrap(),
    }

    // Over HTTP: the PDP now permits exactly that call, once, for 5 minutes; the captive API is open.
    let permit = p.evaluate(&req).await;
    assert_eq!(permit["decision"], true, "{permit}");
    let c = &permit["context"]["conditions"];
    assert_eq!(c["parameter_digest"], digest);
    assert_eq!(c["use_limit"], 1);
    let until = parse_rfc3339(c["valid_until"].as_str().unwrap()).unwrap();
    assert!((now() + 290..=now() + 300).contains(&until), "{until}");
    let (status, headers, doc) = p.get(&p.local(d["context"]["captive_portal_api"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/captive+json");
    assert_eq!(doc["captive"], false, "{doc}");
    let left = doc["seconds-remaining"].as_i64().unwrap();
    assert!((290..=300).contains(&left), "{left}");
    let (_, _, st) = p.get(&p.url(&format!("/access/v1/requests/{task_id}"))).await;
    assert_eq!(st["task"]["status"], "approved");
    assert!(b64::decode(st["result"]["approval"]["id"].as_str().unwrap().trim_start_matches("apr_")).is_ok());
    let png = std::fs::metadata(&shot).unwrap().len();
    assert!(png > 10_000, "screenshot {} is {png} bytes", shot.display());
    eprintln!("approver browser test: {:.1} s, screenshot {}", started.elapsed().as_secs_f64(), shot.display());
}
