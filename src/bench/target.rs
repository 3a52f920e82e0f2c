//! What `ordo bench` sends its requests to: an Ordo server over HTTP/1.1 (one keep-alive
//! connection per worker, straight on hyper, so the generator costs little), or the
//! embedded engine in-process. Both answer with the same [`Outcome`], so the report is
//! the same.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use ordo_engine::domain::LineRequest;
use ordo_engine::{Engine, EngineError, PaymentOutcome, PlaceOrder, ShipmentStep, UpsertSku};
use serde_json::Value;

use crate::http::error::ApiError;

/// How a request ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// HTTP status (the embedded engine's answers are mapped as the server maps them);
    /// 0 when the request never got an answer.
    pub status: u16,
    /// The problem `type` of an error answer, or the transport error.
    pub problem: Option<String>,
    /// The answer's body when the caller asked to keep it.
    pub body: Option<Value>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The label the report counts it under: `201`, `409 out_of_stock`, `error: …`.
    pub fn label(&self) -> String {
        match (&self.problem, self.status) {
            (Some(p), 0) => format!("error: {p}"),
            (Some(p), s) => format!("{s} {p}"),
            (None, s) => s.to_string(),
        }
    }

    fn transport(e: impl std::fmt::Display) -> Outcome {
        Outcome {
            status: 0,
            problem: Some(e.to_string()),
            body: None,
        }
    }

    /// An HTTP answer: a 2xx keeps its body only when asked to; an error carries its
    /// problem `type` (`unknown` when the body has none).
    fn from_http(status: u16, body: &[u8], keep: bool) -> Outcome {
        let ok = (200..300).contains(&status);
        if ok && !keep {
            return Outcome {
                status,
                problem: None,
                body: None,
            };
        }
        let v: Option<Value> = serde_json::from_slice(body).ok();
        let problem = if ok {
            None
        } else {
            Some(
                v.as_ref()
                    .and_then(|v| v["type"].as_str())
                    .unwrap_or("unknown")
                    .to_owned(),
            )
        };
        Outcome {
            status,
            problem,
            body: if keep { v } else { None },
        }
    }

    fn from_engine<T: serde::Serialize>(r: Result<T, EngineError>, ok: u16, keep: bool) -> Outcome {
        match r {
            Ok(v) => Outcome {
                status: ok,
                problem: None,
                body: keep.then(|| serde_json::to_value(&v).unwrap_or(Value::Null)),
            },
            Err(e) => {
                let order = match &e {
                    EngineError::OrderFailed { order, .. } => {
                        Some(serde_json::to_value(order).unwrap_or(Value::Null))
                    }
                    _ => None,
                };
                let api = ApiError::from(e);
                let kind = serde_json::to_value(api.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned));
                Outcome {
                    status: api.http_status().as_u16(),
                    problem: kind,
                    body: keep.then(|| serde_json::json!({ "order": order })),
                }
            }
        }
    }
}

/// Where requests go.
#[derive(Clone)]
pub enum Target {
    Http(Arc<HttpTarget>),
    Embedded(Engine),
}

pub struct HttpTarget {
    pub addr: SocketAddr,
    pub authority: String,
    pub token: Option<String>,
}

impl HttpTarget {
    /// `http://host:port` (no TLS: the generator is meant to sit next to the server).
    pub async fn parse(url: &str, token: Option<String>) -> anyhow::Result<HttpTarget> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow::anyhow!("--url must be http://host:port, got {url}"))?;
        let authority = rest.trim_end_matches('/').to_owned();
        if authority.contains('/') {
            anyhow::bail!("--url must be http://host:port without a path, got {url}");
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.clone()
        } else {
            format!("{authority}:80")
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{authority} does not resolve"))?;
        Ok(HttpTarget {
            addr,
            authority,
            token,
        })
    }
}

/// One worker's handle on the target: for HTTP its own keep-alive connection, opened on
/// first use and again after an error.
pub struct Conn {
    target: Target,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// Send a fresh `Idempotency-Key` with every POST.
    keyed: bool,
}

impl Conn {
    pub fn new(target: Target) -> Conn {
        Conn {
            target,
            sender: None,
            keyed: false,
        }
    }

    /// Every POST carries a fresh `Idempotency-Key` (embedded: the engine keeps an answer
    /// per key, as the HTTP edge does).
    pub fn with_idempotency_keys(mut self, keyed: bool) -> Conn {
        self.keyed = keyed;
        self
    }

    /// A fresh key (a ULID) when keys are on.
    fn key(&self) -> Option<String> {
        self.keyed.then(|| ulid::Ulid::new().to_string())
    }

    /// What the embedded engine keeps under a key: the outcome's debug form is enough
    /// for a load test (the HTTP edge stores the HTTP answer).
    fn idem(&self) -> Option<ordo_engine::Idempotency> {
        self.key().map(|key| ordo_engine::Idempotency {
            key: format!("bench\n{key}"),
            fingerprint: Vec::new(),
            ttl: std::time::Duration::from_secs(24 * 3600),
            render: ordo_engine::render(|o| Some(format!("{o:?}").into_bytes())),
        })
    }

    async fn connect(t: &HttpTarget) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(t.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// One HTTP request; `keep` parses and keeps a successful body.
    pub async fn http(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Value>,
        keep: bool,
    ) -> Outcome {
        let Target::Http(t) = &self.target else {
            return Outcome::transport("not an HTTP target");
        };
        let t = t.clone();
        let key = if method == Method::POST {
            self.key()
        } else {
            None
        };
        if let Err(o) = self.ensure_ready(&t).await {
            return o;
        }
        let Some(sender) = self.sender.as_mut() else {
            return Outcome::transport("no connection");
        };
        let req = match build_request(&t, method, path, key, body.as_ref()) {
            Ok(r) => r,
            Err(o) => return o,
        };
        let res = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.sender = None;
                return Outcome::transport(e);
            }
        };
        let status = res.status().as_u16();
        let body = match res.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                self.sender = None;
                return Outcome::transport(e);
            }
        };
        Outcome::from_http(status, &body, keep)
    }

    /// A connection ready for the next request: opened when there is none (or it was
    /// closed), dropped when it fails.
    async fn ensure_ready(&mut self, t: &HttpTarget) -> Result<(), Outcome> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            match Self::connect(t).await {
                Ok(s) => self.sender = Some(s),
                Err(e) => return Err(Outcome::transport(format!("connect: {e}"))),
            }
        }
        let Some(sender) = self.sender.as_mut() else {
            return Err(Outcome::transport("no connection"));
        };
        if let Err(e) = sender.ready().await {
            self.sender = None;
            return Err(Outcome::transport(format!("connection: {e}")));
        }
        Ok(())
    }

    pub async fn put_sku(&mut self, sku: &str, price_minor: i64, stock: i64) -> Outcome {
        let body = serde_json::json!({
            "name": format!("bench item {sku}"), "price_minor": price_minor,
            "currency": "EUR", "stock": stock,
        });
        match &self.target {
            Target::Http(_) => {
                self.http(Method::PUT, &format!("/v1/skus/{sku}"), Some(body), false)
                    .await
            }
            Target::Embedded(e) => {
                let r = e
                    .upsert_sku(
                        UpsertSku {
                            sku: sku.to_owned(),
                            name: format!("bench item {sku}"),
                            price_minor,
                            currency: "EUR".into(),
                            per_customer_limit: None,
                            stock,
                        },
                        None,
                    )
                    .await;
                let created = matches!(r, Ok((_, true)));
                Outcome::from_engine(r.map(|(v, _)| v), if created { 201 } else { 200 }, false)
            }
        }
    }

    /// The SKU's counters `(available, reserved, sold)`, or why not.
    pub async fn sku_counters(&mut self, sku: &str) -> Result<(i64, i64, i64), String> {
        let o = match &self.target {
            Target::Http(_) => {
                self.http(Method::GET, &format!("/v1/skus/{sku}"), None, true)
                    .await
            }
            Target::Embedded(e) => Outcome::from_engine(e.get_sku(sku).await, 200, true),
        };
        let b = o
            .body
            .as_ref()
            .filter(|_| o.ok())
            .ok_or_else(|| o.label())?;
        let f = |k: &str| b[k].as_i64().ok_or_else(|| format!("no `{k}` in the SKU"));
        Ok((f("available")?, f("reserved")?, f("sold")?))
    }

    pub async fn place(&mut self, customer: &str, lines: &[(String, u32)], keep: bool) -> Outcome {
        match &self.target {
            Target::Http(_) => {
                let lines: Vec<Value> = lines
                    .iter()
                    .map(|(s, q)| serde_json::json!({"sku": s, "qty": q}))
                    .collect();
                let body = serde_json::json!({"customer_id": customer, "lines": lines});
                self.http(Method::POST, "/v1/orders", Some(body), keep)
                    .await
            }
            Target::Embedded(e) => {
                let req = PlaceOrder {
                    customer_id: customer.to_owned(),
                    lines: lines
                        .iter()
                        .map(|(s, q)| LineRequest {
                            sku: s.clone(),
                            qty: *q,
                        })
                        .collect(),
                };
                let idem = self.idem();
                Outcome::from_engine(e.place_order_with(req, None, idem).await, 201, keep)
            }
        }
    }

    pub async fn pay(&mut self, id: &str, payment_ref: &str, amount: i64) -> Outcome {
        match &self.target {
            Target::Http(_) => {
                let body = serde_json::json!({"payment_ref": payment_ref, "outcome": "succeeded", "amount_minor": amount});
                self.http(
                    Method::POST,
                    &format!("/v1/orders/{id}/payments"),
                    Some(body),
                    false,
                )
                .await
            }
            Target::Embedded(e) => Outcome::from_engine(
                e.pay(id, payment_ref, PaymentOutcome::Succeeded, amount, None)
                    .await,
                200,
                false,
            ),
        }
    }

    pub async fn cancel(&mut self, id: &str) -> Outcome {
        match &self.target {
            Target::Http(_) => {
                let body = serde_json::json!({"reason": "bench"});
                self.http(
                    Method::POST,
                    &format!("/v1/orders/{id}/cancel"),
                    Some(body),
                    false,
                )
                .await
            }
            Target::Embedded(e) => {
                Outcome::from_engine(e.cancel(id, "bench", None).await, 200, false)
            }
        }
    }

    pub async fn ship(&mut self, id: &str, step: ShipmentStep) -> Outcome {
        match &self.target {
            Target::Http(_) => {
                let step = serde_json::to_value(step).unwrap_or(Value::Null);
                let body = serde_json::json!({"step": step});
                self.http(
                    Method::POST,
                    &format!("/v1/orders/{id}/shipment"),
                    Some(body),
                    false,
                )
                .await
            }
            Target::Embedded(e) => Outcome::from_engine(e.ship(id, step, None).await, 200, false),
        }
    }

    /// The order's status, or why not.
    pub async fn order_status(&mut self, id: &str) -> Result<String, String> {
        let o = match &self.target {
            Target::Http(_) => {
                self.http(Method::GET, &format!("/v1/orders/{id}"), None, true)
                    .await
            }
            Target::Embedded(e) => Outcome::from_engine(e.get_order(id).await, 200, true),
        };
        o.body
            .as_ref()
            .filter(|_| o.ok())
            .and_then(|b| b["status"].as_str().map(str::to_owned))
            .ok_or_else(|| o.label())
    }

    pub async fn healthz(&mut self) -> Outcome {
        match &self.target {
            Target::Http(_) => self.http(Method::GET, "/healthz", None, false).await,
            Target::Embedded(_) => Outcome {
                status: 200,
                problem: None,
                body: None,
            },
        }
    }
}

/// A request to `t`: its host, the bearer token, the idempotency key and the JSON body
/// when given.
fn build_request(
    t: &HttpTarget,
    method: Method,
    path: &str,
    key: Option<String>,
    body: Option<&Value>,
) -> Result<Request<Full<Bytes>>, Outcome> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, t.authority.as_str());
    if let Some(tok) = &t.token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {tok}"));
    }
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    let bytes = match body {
        Some(b) => {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
            Bytes::from(serde_json::to_vec(b).unwrap_or_default())
        }
        None => Bytes::new(),
    };
    req.body(Full::new(bytes)).map_err(Outcome::transport)
}
