//! The harness: the real `ordo serve` on 127.0.0.1 (an ephemeral port) with its own data
//! dir, a client with one method per endpoint, and the few tools the tests share (signals,
//! `ordo verify`, `ordo bench`, a bounded wait).
//!
//! Every request method returns a [`Resp`] read to the end and asserts nothing; the test
//! says what it expects of it (`ok(201)`, `problem(409, "out_of_stock")`), so a scenario's
//! checks all stand in the scenario. Only the set-up helpers below check their own steps.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::Arc;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_ordo");

/// A running `ordo serve`; killed when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`, for `ordo bench --url` and `ordo events --url`.
    pub base: String,
    http: reqwest::Client,
    /// The bearer token sent with every request, if any.
    pub token: Option<&'static str>,
    /// The `message` of every log line the server has written so far.
    logged: Arc<parking_lot::Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the binary on `dir` with extra flags and waits for its `ready` log line.
    /// Set `TEST_LOG=1` to see the server's log.
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(extra)
            .env_remove("ORDO_AUTH_TOKENS")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ordo serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let logged = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let log = logged.clone();
        std::thread::spawn(move || {
            let echo = std::env::var_os("TEST_LOG").is_some();
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("[server] {line}");
                }
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if let Some(m) = v["message"].as_str() {
                        log.lock().push(m.to_owned());
                    }
                    if v["message"] == "ready" {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                        }
                    }
                }
            }
        });
        let addr = rx.recv().expect("server exited before it was ready");
        Server {
            child,
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(512)
                .build()
                .unwrap(),
            token: None,
            logged,
        }
    }

    /// `127.0.0.1:PORT`: what a client sends as `Host`.
    pub fn authority(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// Whether the server has logged a line with this message (so far).
    pub fn has_logged(&self, message: &str) -> bool {
        self.logged.lock().iter().any(|m| m == message)
    }

    // --- Raw requests: for what no endpoint method sends (hostile bytes, odd headers). ---

    /// A request to `path` with the token, not yet sent.
    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let mut r = self.req(method, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        Resp::read(r.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(Method::POST, path, Some(body)).await
    }

    /// Sends `k` with its `Idempotency-Key`; `Err` when no answer came (the server died).
    pub async fn try_send_keyed(&self, k: &Keyed) -> Result<Resp, reqwest::Error> {
        let r = self
            .req(Method::POST, &k.path)
            .header("Idempotency-Key", &k.key)
            .json(&k.body)
            .send()
            .await?;
        Ok(Resp::read(r).await)
    }

    pub async fn send_keyed(&self, k: &Keyed) -> Resp {
        self.try_send_keyed(k).await.expect("request")
    }

    // --- SKUs. ---

    /// `PUT /v1/skus/{sku}` with `body` as given (create or update).
    pub async fn put_sku(&self, sku: &str, body: Value) -> Resp {
        self.send(Method::PUT, &format!("/v1/skus/{sku}"), Some(body))
            .await
    }

    /// A SKU named "`sku` item" at 12.50 EUR with `stock` units.
    pub async fn create_sku(&self, sku: &str, stock: i64) -> Resp {
        self.put_sku(
            sku,
            json!({"name": format!("{sku} item"), "price_minor": 1250, "currency": "EUR", "stock": stock}),
        )
        .await
    }

    pub async fn sku(&self, sku: &str) -> Resp {
        self.get(&format!("/v1/skus/{sku}")).await
    }

    pub async fn skus(&self, limit: Option<u32>, after: Option<&str>) -> Resp {
        self.get(&with_query(
            "/v1/skus",
            &[
                ("limit", limit.map(|l| l.to_string())),
                ("after", after.map(str::to_owned)),
            ],
        ))
        .await
    }

    /// `POST /v1/skus/{sku}/stock-adjustments`.
    pub async fn adjust(&self, sku: &str, delta: i64, reason: &str) -> Resp {
        self.post(&adjust_path(sku), adjust_body(delta, reason))
            .await
    }

    // --- Orders. ---

    /// `POST /v1/orders`: `customer` buys `lines` as (sku, qty).
    pub async fn place(&self, customer: &str, lines: &[(&str, u32)]) -> Resp {
        self.post("/v1/orders", place_body(customer, lines)).await
    }

    /// [`Server::place`] with a W3C `traceparent` header.
    pub async fn place_traced(
        &self,
        traceparent: &str,
        customer: &str,
        lines: &[(&str, u32)],
    ) -> Resp {
        let r = self
            .req(Method::POST, "/v1/orders")
            .header("traceparent", traceparent)
            .json(&place_body(customer, lines))
            .send()
            .await
            .unwrap();
        Resp::read(r).await
    }

    /// [`Server::place`] with an `Idempotency-Key`.
    pub async fn place_keyed(&self, key: &str, customer: &str, lines: &[(&str, u32)]) -> Resp {
        self.send_keyed(&Keyed::place(key, customer, lines)).await
    }

    pub async fn order(&self, id: &str) -> Resp {
        self.get(&format!("/v1/orders/{id}")).await
    }

    /// `POST /v1/orders/{id}/payments`: a payment `outcome` ("succeeded", "failed").
    pub async fn pay(&self, id: &str, payment_ref: &str, outcome: &str, amount_minor: i64) -> Resp {
        self.post(&pay_path(id), pay_body(payment_ref, outcome, amount_minor))
            .await
    }

    /// `POST /v1/orders/{id}/cancel` with no body at all.
    pub async fn cancel(&self, id: &str) -> Resp {
        let r = self
            .req(Method::POST, &format!("/v1/orders/{id}/cancel"))
            .send()
            .await
            .unwrap();
        Resp::read(r).await
    }

    /// `POST /v1/orders/{id}/cancel` with a reason.
    pub async fn cancel_because(&self, id: &str, reason: &str) -> Resp {
        self.post(
            &format!("/v1/orders/{id}/cancel"),
            json!({"reason": reason}),
        )
        .await
    }

    /// `POST /v1/orders/{id}/shipment`: "prepared", "processed" or "fulfilled".
    pub async fn ship(&self, id: &str, step: &str) -> Resp {
        self.post(&format!("/v1/orders/{id}/shipment"), json!({"step": step}))
            .await
    }

    // --- The event log and the live feed. ---

    /// `GET /v1/events`, one page.
    pub async fn events(&self, after: Option<u64>, limit: Option<u32>) -> Resp {
        self.get(&with_query(
            "/v1/events",
            &[
                ("after", after.map(|a| a.to_string())),
                ("limit", limit.map(|l| l.to_string())),
            ],
        ))
        .await
    }

    /// `GET /v1/events?stream=order/{id}`: one order's events.
    pub async fn order_events(&self, id: &str) -> Resp {
        self.get(&format!("/v1/events?stream=order/{id}")).await
    }

    /// `GET /v1/events/live?after=…`: the open stream.
    pub async fn live_events(&self, after: u64) -> reqwest::Response {
        self.req(Method::GET, &format!("/v1/events/live?after={after}"))
            .send()
            .await
            .unwrap()
    }

    /// `GET /v1/events/live` resumed with `Last-Event-ID`; the open stream.
    pub async fn live_events_resumed(&self, last_event_id: u64) -> reqwest::Response {
        self.req(Method::GET, "/v1/events/live")
            .header("Last-Event-ID", last_event_id.to_string())
            .send()
            .await
            .unwrap()
    }

    // --- Webhook subscriptions. ---

    /// `POST /v1/subscriptions` with `body` as given.
    pub async fn subscribe(&self, body: Value) -> Resp {
        self.post("/v1/subscriptions", body).await
    }

    pub async fn subscriptions(&self) -> Resp {
        self.get("/v1/subscriptions").await
    }

    pub async fn subscription(&self, id: &str) -> Resp {
        self.get(&format!("/v1/subscriptions/{id}")).await
    }

    pub async fn unsubscribe(&self, id: &str) -> Resp {
        self.send(Method::DELETE, &format!("/v1/subscriptions/{id}"), None)
            .await
    }

    /// `POST /v1/subscriptions/{id}/secret` with `body` as given (`{secret?, grace}`).
    pub async fn rotate_secret(&self, id: &str, body: Value) -> Resp {
        self.post(&format!("/v1/subscriptions/{id}/secret"), body)
            .await
    }

    pub async fn dead_letters(&self, id: &str) -> Resp {
        self.get(&format!("/v1/subscriptions/{id}/dead-letters"))
            .await
    }

    /// The dead letters of `id` once there are `n` (a hang guard of 60 s).
    pub async fn dead_letters_once(&self, id: &str, n: usize) -> Value {
        wait_until(&format!("{n} dead letters"), 60, || async {
            self.dead_letters(id)
                .await
                .json()
                .as_array()
                .is_some_and(|a| a.len() == n)
        })
        .await;
        self.dead_letters(id).await.ok(200)
    }

    pub async fn redrive(&self, id: &str) -> Resp {
        self.post(
            &format!("/v1/subscriptions/{id}/dead-letters/redrive"),
            json!({}),
        )
        .await
    }

    // --- Operations. ---

    pub async fn healthz(&self) -> Resp {
        self.get("/healthz").await
    }

    pub async fn readyz(&self) -> Resp {
        self.get("/readyz").await
    }

    pub async fn metrics(&self) -> Resp {
        self.get("/metrics").await
    }

    pub async fn openapi(&self) -> Resp {
        self.get("/openapi.json").await
    }

    // --- The process. ---

    /// SIGKILL: no shutdown, no flush; the next start recovers from what is on disk.
    pub fn sigkill(&self) {
        signal(self.child.id(), "KILL");
    }

    /// SIGTERM without waiting (see [`Server::wait_for_exit`]).
    pub fn sigterm(&self) {
        signal(self.child.id(), "TERM");
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        self.sigterm();
        self.child.wait().expect("wait")
    }

    /// The exit status, once the process has exited; panics after `secs` (a hang guard).
    pub async fn wait_for_exit(&mut self, secs: u64) -> ExitStatus {
        let mut status = None;
        wait_until("the server to exit", secs, || {
            status = self.child.try_wait().unwrap();
            let done = status.is_some();
            async move { done }
        })
        .await;
        status.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A POST sent with an `Idempotency-Key`, kept whole so that it can be sent again.
#[derive(Debug, Clone)]
pub struct Keyed {
    pub path: String,
    pub key: String,
    pub body: Value,
}

impl Keyed {
    pub fn place(key: &str, customer: &str, lines: &[(&str, u32)]) -> Keyed {
        Keyed {
            path: "/v1/orders".into(),
            key: key.into(),
            body: place_body(customer, lines),
        }
    }

    pub fn pay(key: &str, id: &str, payment_ref: &str, outcome: &str, amount_minor: i64) -> Keyed {
        Keyed {
            path: pay_path(id),
            key: key.into(),
            body: pay_body(payment_ref, outcome, amount_minor),
        }
    }

    pub fn adjust(key: &str, sku: &str, delta: i64, reason: &str) -> Keyed {
        Keyed {
            path: adjust_path(sku),
            key: key.into(),
            body: adjust_body(delta, reason),
        }
    }
}

fn place_body(customer: &str, lines: &[(&str, u32)]) -> Value {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(s, q)| json!({"sku": s, "qty": q}))
        .collect();
    json!({"customer_id": customer, "lines": lines})
}

fn pay_path(id: &str) -> String {
    format!("/v1/orders/{id}/payments")
}

fn pay_body(payment_ref: &str, outcome: &str, amount_minor: i64) -> Value {
    json!({"payment_ref": payment_ref, "outcome": outcome, "amount_minor": amount_minor})
}

fn adjust_path(sku: &str) -> String {
    format!("/v1/skus/{sku}/stock-adjustments")
}

fn adjust_body(delta: i64, reason: &str) -> Value {
    json!({"delta": delta, "reason": reason})
}

/// `path?k=v&…` for the pairs that are set, in the order given.
fn with_query(path: &str, pairs: &[(&str, Option<String>)]) -> String {
    let q: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect();
    if q.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", q.join("&"))
    }
}

/// A response read to the end.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: StatusCode,
    headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Resp {
    pub async fn read(r: reqwest::Response) -> Resp {
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        Resp {
            status,
            headers,
            text,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem+json answer with this status and type.
    #[track_caller]
    pub fn problem(&self, status: u16, kind: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.text
        );
        let v = self.json();
        assert_eq!(v["type"], kind, "{}", self.text);
        assert_eq!(v["status"], status);
        v
    }

    /// Asserts this status; the JSON body.
    #[track_caller]
    pub fn ok(&self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        self.json()
    }
}

/// A temp dir and the data dir inside it (not yet created: `ordo serve` creates it).
pub fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("data");
    (t, p)
}

/// The end of a scenario that changed the store: SIGTERM (the server must exit 0), then
/// `ordo verify` on its data dir (it must pass). The verify report, for more checks.
#[track_caller]
pub fn stop_and_verify(s: Server, dir: &Path) -> Value {
    let status = s.terminate();
    assert!(status.success(), "exit status {status}");
    let (ok, report) = verify(dir);
    assert!(ok, "{report}");
    report
}

/// `ordo verify --json` on a stopped server's data dir: (passed, report).
pub fn verify(dir: &Path) -> (bool, Value) {
    let out = Command::new(BIN)
        .args(["verify", "--json", "--data-dir"])
        .arg(dir)
        .output()
        .expect("ordo verify");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), v)
}

/// Runs `ordo bench` with `args`; returns its exit code and JSON report.
pub fn bench(args: &[&str]) -> (i32, Value) {
    let out = Command::new(BIN)
        .arg("bench")
        .args(args)
        .args(["--json", "--quiet"])
        .output()
        .expect("ordo bench");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "no JSON report: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

/// Sends signal `sig` ("KILL", "TERM", "INT") to process `pid`.
#[track_caller]
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} failed");
}

/// Polls `cond` until it holds; panics after `secs` (a hang guard, not a speed check).
pub async fn wait_until<F, Fut>(what: &str, secs: u64, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond().await {
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The catalogue the order scenarios start from: TEE-1 (10 units at 15.00 EUR, at most 3
/// per customer), MUG-1 (5 at 12.50 EUR) and USD-1 (5 at 9.00 USD), each PUT checked.
pub async fn seed_catalog(s: &Server) {
    s.create_sku("TEE-1", 10).await.ok(201);
    s.put_sku("TEE-1", json!({"name": "Tee, blue", "price_minor": 1500, "currency": "EUR", "per_customer_limit": 3}))
        .await
        .ok(200);
    s.create_sku("MUG-1", 5).await.ok(201);
    s.create_sku("USD-1", 5).await.ok(201);
    s.put_sku(
        "USD-1",
        json!({"name": "Cap", "price_minor": 900, "currency": "USD"}),
    )
    .await
    .ok(200);
}

/// Places `n` single-unit orders for `sku` with at most `concurrency` in flight; returns
/// the responses.
pub async fn place_many(s: &Arc<Server>, sku: &str, n: usize, concurrency: usize) -> Vec<Resp> {
    futures::stream::iter(0..n)
        .map(|i| {
            let s = s.clone();
            let sku = sku.to_owned();
            async move { s.place(&format!("buyer-{i}"), &[(&sku, 1)]).await }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}
