//! A small W3C WebDriver client over ureq, driving Debian's headless `chromium` through its
//! `chromedriver` (packages `chromium` and `chromium-driver`, which tests/run-all.sh installs).
//!
//! Enough for the console's browser test: navigate, find elements by CSS selector, click, type,
//! read text and attributes, run a small script, take screenshots, read the browser's console
//! log, and wait for a condition with a timeout. A missing browser or driver fails the test with
//! the command that installs them; it never skips.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

/// The key W3C WebDriver gives an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const CHROMIUM: &str = "/usr/bin/chromium";
const DRIVER: &str = "chromedriver";
const INSTALL: &str = "sudo apt-get install -y chromium chromium-driver (tests/run-all.sh installs them)";

/// How long `wait_*` helpers wait before failing.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A headless chromium session; its chromedriver and profile go away with it.
pub struct Browser {
    driver: Child,
    url: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
}

/// An element of the current page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `f` every 50 ms until it gives `Some`, or panics with `what` after `timeout`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Browser {
    /// Starts chromedriver on a free port and a headless chromium session of 1400×900.
    pub fn start() -> Self {
        assert!(
            Path::new(CHROMIUM).is_file(),
            "{CHROMIUM} is missing: the console's browser test needs it; install with: {INSTALL}"
        );
        assert!(on_path(DRIVER), "{DRIVER} is missing: the console's browser test needs it; install with: {INSTALL}");
        let port = free_port();
        let driver = Command::new(DRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {DRIVER}: {e}; install with: {INSTALL}"));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser { driver, url: format!("http://127.0.0.1:{port}"), agent, _profile: profile };
        let status = format!("{}/status", browser.url);
        wait_until(TIMEOUT, "chromedriver to be ready", || {
            let mut res = browser.agent.get(&status).call().ok()?;
            let v: Value = res.body_mut().read_json().ok()?;
            v["value"]["ready"].as_bool().filter(|r| *r)
        });
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1400,900".into(),
            format!("--user-data-dir={}", browser._profile.path().display()),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let v = browser.send("POST", "/session", Some(&caps));
        let id = v["sessionId"].as_str().unwrap_or_else(|| panic!("no session from chromedriver: {v}")).to_string();
        browser.url = format!("{}/session/{id}", browser.url);
        browser
    }

    /// One WebDriver command: its `value`, or a panic with the driver's error.
    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let url = format!("{}{path}", self.url);
        let res = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, body) => self.agent.post(&url).send_json(body.cloned().unwrap_or_else(|| json!({}))),
        };
        let mut res = res.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = res.status().as_u16();
        let v: Value = res.body_mut().read_json().unwrap_or_else(|e| panic!("WebDriver {method} {path}: {status}, {e}"));
        assert!(status == 200, "WebDriver {method} {path}: {status} {}", v["value"]);
        v["value"].clone()
    }

    /// Like `send`, but an error answer is `None` (a wait's "not yet").
    fn try_send(&self, method: &str, path: &str, body: Option<&Value>) -> Option<Value> {
        let url = format!("{}{path}", self.url);
        let mut res = match method {
            "GET" => self.agent.get(&url).call(),
            _ => self.agent.post(&url).send_json(body.cloned().unwrap_or_else(|| json!({}))),
        }
        .ok()?;
        let ok = res.status().as_u16() == 200;
        let v: Value = res.body_mut().read_json().ok()?;
        ok.then(|| v["value"].clone())
    }

    pub fn goto(&self, url: &str) {
        self.send("POST", "/url", Some(&json!({"url": url})));
    }

    pub fn current_url(&self) -> String {
        self.send("GET", "/url", None).as_str().unwrap().to_string()
    }

    fn element(&self, v: &Value) -> Element<'_> {
        Element { browser: self, id: v[ELEMENT].as_str().expect("an element reference").to_string() }
    }

    /// Every element that matches `css` now.
    pub fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let v = self.send("POST", "/elements", Some(&json!({"using": "css selector", "value": css})));
        v.as_array().unwrap().iter().map(|e| self.element(e)).collect()
    }

    /// The first element that matches `css` now, if any.
    pub fn try_find(&self, css: &str) -> Option<Element<'_>> {
        self.try_send("POST", "/element", Some(&json!({"using": "css selector", "value": css}))).map(|v| self.element(&v))
    }

    /// The first element that matches `css`, waiting until it is there and shown.
    pub fn find(&self, css: &str) -> Element<'_> {
        self.wait(&format!("{css} to be shown"), || self.try_find(css).filter(|e| e.displayed()))
    }

    /// Waits until the text of the element `css` contains `text`; returns that text.
    pub fn wait_text(&self, css: &str, text: &str) -> String {
        self.wait(&format!("{css} to say {text:?}"), || {
            self.try_find(css).and_then(|e| e.try_text()).filter(|t| t.contains(text))
        })
    }

    /// Polls `f` until it gives `Some`; after `TIMEOUT`, fails with the page's address and text.
    pub fn wait<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let end = Instant::now() + TIMEOUT;
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() >= end {
                let url = self.try_send("GET", "/url", None).unwrap_or_default();
                let text = self.try_send(
                    "POST",
                    "/execute/sync",
                    Some(&json!({"script": "return document.body.innerText", "args": []})),
                );
                panic!("timed out after {TIMEOUT:?} waiting for {what}; the page at {url} says:\n{}", text.unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and gives its result.
    pub fn execute(&self, script: &str, args: &[Value]) -> Value {
        self.send("POST", "/execute/sync", Some(&json!({"script": script, "args": args})))
    }

    /// Runs `script` asynchronously: it ends by calling `arguments[arguments.length - 1]` with
    /// its result (the WebDriver way to wait for a promise).
    pub fn execute_async(&self, script: &str, args: &[Value]) -> Value {
        self.send("POST", "/execute/async", Some(&json!({"script": script, "args": args})))
    }

    /// A virtual security key (WebDriver's WebAuthn extension): USB, CTAP2, with user
    /// verification that succeeds. Its id; the browser uses it for every ceremony until removed.
    pub fn add_security_key(&self) -> String {
        let options = json!({"protocol": "ctap2", "transport": "usb", "hasResidentKey": true,
                             "hasUserVerification": true, "isUserVerified": true});
        let v = self.send("POST", "/webauthn/authenticator", Some(&options));
        v.as_str().expect("an authenticator id").to_string()
    }

    pub fn remove_security_key(&self, id: &str) {
        self.send("DELETE", &format!("/webauthn/authenticator/{id}"), None);
    }

    /// The credentials a virtual security key holds (`credentialId`, `rpId`, `signCount`, …).
    pub fn security_key_credentials(&self, id: &str) -> Vec<Value> {
        self.send("GET", &format!("/webauthn/authenticator/{id}/credentials"), None).as_array().unwrap().clone()
    }

    /// Waits until the page has loaded and htmx has no request in flight.
    pub fn settle(&self) {
        self.wait("the page to settle", || {
            let done =
                self.execute("return document.readyState === 'complete' && !document.querySelector('.htmx-request');", &[]);
            done.as_bool().filter(|d| *d)
        });
    }

    /// A Chrome DevTools command through chromedriver (`goog/cdp/execute`).
    fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.send("POST", "/goog/cdp/execute", Some(&json!({"cmd": cmd, "params": params})))
    }

    /// Lays pages out as a phone `width` CSS pixels wide would (a window cannot be that narrow).
    pub fn phone(&self, width: u32, height: u32) {
        let metrics = json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": true});
        self.cdp("Emulation.setDeviceMetricsOverride", metrics);
    }

    /// Back to the window's own size.
    pub fn desktop(&self) {
        self.cdp("Emulation.clearDeviceMetricsOverride", json!({}));
    }

    /// Downloads go to `dir`, without asking.
    pub fn download_to(&self, dir: &Path) {
        let params = json!({"behavior": "allow", "downloadPath": dir.display().to_string()});
        self.cdp("Browser.setDownloadBehavior", params);
    }

    /// A PNG of the window, written to `path`.
    pub fn screenshot(&self, path: &Path) {
        let b64 = self.send("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap()).unwrap();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// The browser's console messages since the last call: (level, message).
    pub fn console_log(&self) -> Vec<(String, String)> {
        let v = self.send("POST", "/se/log", Some(&json!({"type": "browser"})));
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| (e["level"].as_str().unwrap_or("").to_string(), e["message"].as_str().unwrap_or("").to_string()))
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.url.contains("/session/") {
            let _ = self.agent.delete(&self.url).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Element<'_> {
    fn path(&self, tail: &str) -> String {
        format!("/element/{}{tail}", self.id)
    }

    pub fn click(&self) {
        self.browser.send("POST", &self.path("/click"), Some(&json!({})));
    }

    /// Types `text` into the element (after what it holds).
    pub fn send_keys(&self, text: &str) {
        self.browser.send("POST", &self.path("/value"), Some(&json!({"text": text})));
    }

    /// Its rendered text.
    pub fn text(&self) -> String {
        self.browser.send("GET", &self.path("/text"), None).as_str().unwrap().to_string()
    }

    fn try_text(&self) -> Option<String> {
        self.browser.try_send("GET", &self.path("/text"), None).and_then(|v| v.as_str().map(str::to_string))
    }

    pub fn attribute(&self, name: &str) -> Option<String> {
        self.browser.send("GET", &self.path(&format!("/attribute/{name}")), None).as_str().map(str::to_string)
    }

    pub fn displayed(&self) -> bool {
        self.browser.try_send("GET", &self.path("/displayed"), None).and_then(|v| v.as_bool()).unwrap_or(false)
    }
}
