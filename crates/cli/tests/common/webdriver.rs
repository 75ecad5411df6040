//! A small W3C WebDriver client for Debian's chromedriver and chromium: the commands the
//! browser tests use. (fantoccini would pull rustls' aws-lc-rs backend, and with it a cmake
//! build, into the whole workspace; these dozen calls are the protocol itself.)

use super::KillOnDrop;
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Driver {
    _proc: KillOnDrop,
    base: String,
    http: reqwest::Client,
}

pub struct Browser {
    http: reqwest::Client,
    session: String,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Driver {
    /// chromedriver on a free loopback port (`make setup` installs it).
    pub async fn start(log: &std::path::Path) -> Driver {
        let port = free_port();
        let proc = KillOnDrop(
            Command::new("/usr/bin/chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(log).unwrap())
                .spawn()
                .expect("chromedriver (Debian's chromium-driver; run `make setup`)"),
        );
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Driver {
            _proc: proc,
            base,
            http,
        }
    }

    /// A new browser with an empty profile (no cookies: a new user).
    pub async fn browser(&self) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            // Ferry's server serves its self-signed certificate, as argocd-server does.
            "--ignore-certificate-errors".into(),
            "--window-size=1400,1000".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args },
        } } });
        let r: Value = self
            .http
            .post(format!("{}/session", self.base))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_string();
        Browser {
            http: self.http.clone(),
            session: format!("{}/session/{id}", self.base),
            _profile: profile,
        }
    }
}

impl Browser {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r: Value = req
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        match r["value"].get("error") {
            Some(e) => Err(format!("{e}: {}", r["value"]["message"])),
            None => Ok(r["value"].clone()),
        }
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await
            .unwrap();
    }

    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .unwrap()
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn find_opt(&self, css: &str) -> Option<String> {
        self.call(
            reqwest::Method::POST,
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        )
        .await
        .ok()
        .and_then(|v| v[ELEMENT].as_str().map(String::from))
    }

    /// Whether an element matches now.
    pub async fn has(&self, css: &str) -> bool {
        self.find_opt(css).await.is_some()
    }

    /// Waits up to `secs` for an element to appear.
    pub async fn wait(&self, css: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(e) = self.find_opt(css).await {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no {css} within {secs} s on {}:\n{}",
                self.url().await,
                self.text("body").await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        let e = self.wait(css, 10).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await
        .unwrap_or_else(|err| panic!("click {css}: {err}"));
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.wait(css, 10).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/clear"),
            Some(json!({})),
        )
        .await
        .unwrap();
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .await
        .unwrap();
    }

    /// The rendered text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        let Some(e) = self.find_opt(css).await else {
            return String::new();
        };
        self.call(reqwest::Method::GET, &format!("/element/{e}/text"), None)
            .await
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    }

    /// Waits up to `secs` for the text of `css` to contain `needle`.
    pub async fn wait_text(&self, css: &str, needle: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let t = self.text(css).await;
            if t.contains(needle) {
                return;
            }
            if Instant::now() >= deadline {
                let source = self
                    .call(reqwest::Method::GET, "/source", None)
                    .await
                    .unwrap_or_default();
                panic!(
                    "{css} did not show {needle:?} within {secs} s on {}; it shows:\n{t}\npage:\n{}",
                    self.url().await,
                    source.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Runs a script in the page (an async one: `done` is its last argument).
    pub async fn run(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// Saves a PNG of the page.
    pub async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine;
        let v = self
            .call(reqwest::Method::GET, "/screenshot", None)
            .await
            .unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .unwrap();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// Accepts the page's confirm() dialog, if one is open.
    pub async fn accept_dialog(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self
            .call(reqwest::Method::POST, "/alert/accept", Some(json!({})))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the browser; chromedriver going away would too.
        let http = self.http.clone();
        let url = self.session.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _ = rt.block_on(http.delete(url).send());
        })
        .join()
        .ok();
    }
}
