//! Webhook receivers for the tests: real HTTP servers on 127.0.0.1.
//!
//! [`Endpoint`] hands every request to a function and answers what it returns;
//! [`Recorder`] is an endpoint that keeps every request (headers, body, when it came)
//! and answers by a script of the request's number, for tests that look at attempts.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// A request as the receiver got it.
#[derive(Debug, Clone)]
pub struct Request {
    /// When it came in (the receiver's clock).
    pub at: Instant,
    /// Its headers (the `http` 1 types the standardwebhooks verifier takes).
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Request {
    /// A header's value; empty if it is missing.
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }
}

/// What a receiver answers: a status and headers, no body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
        }
    }

    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Answer {
        self.headers.push((name, value.into()));
        self
    }
}

/// An HTTP server on 127.0.0.1 (its own thread and actix system) that answers every
/// request with what `handle` returns; stopped when dropped.
pub struct Endpoint {
    /// `http://127.0.0.1:PORT/hook`.
    pub url: String,
    server: actix_web::dev::ServerHandle,
}

impl Endpoint {
    pub fn start(handle: impl Fn(Request) -> Answer + Send + Sync + 'static) -> Endpoint {
        Endpoint::start_async(move |req| std::future::ready(handle(req)))
    }

    /// [`Endpoint::start`] with an answer that may wait (a receiver holding a request).
    pub fn start_async<F>(handle: impl Fn(Request) -> F + Send + Sync + 'static) -> Endpoint
    where
        F: std::future::Future<Output = Answer> + 'static,
    {
        use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
        let handle = Arc::new(handle);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    let handle = handle.clone();
                    App::new().default_service(web::to(
                        move |req: HttpRequest, body: web::Bytes| {
                            let handle = handle.clone();
                            async move {
                                let answer = handle(request(&req, &body)).await;
                                let status =
                                    actix_web::http::StatusCode::from_u16(answer.status).unwrap();
                                let mut resp = HttpResponse::build(status);
                                for (k, v) in answer.headers {
                                    resp.insert_header((k, v));
                                }
                                resp.finish()
                            }
                        },
                    ))
                })
                .workers(1)
                .bind("127.0.0.1:0")
                .unwrap();
                let addr = server.addrs()[0];
                let server = server.run();
                tx.send((addr, server.handle())).unwrap();
                let _ = server.await;
            });
        });
        let (addr, server) = rx.recv().unwrap();
        Endpoint {
            url: format!("http://{addr}/hook"),
            server,
        }
    }
}

/// The request actix received, in `http` 1 types.
fn request(req: &actix_web::HttpRequest, body: &[u8]) -> Request {
    let mut headers = HeaderMap::new();
    for (k, v) in req.headers() {
        headers.append(
            HeaderName::from_bytes(k.as_str().as_bytes()).unwrap(),
            HeaderValue::from_bytes(v.as_bytes()).unwrap(),
        );
    }
    Request {
        at: Instant::now(),
        headers,
        body: body.to_vec(),
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let h = self.server.clone();
        std::thread::spawn(move || futures::executor::block_on(h.stop(false)));
    }
}

/// An endpoint that keeps every request and answers the `n`th (from 0) with
/// `script(n)`.
pub struct Recorder {
    pub url: String,
    got: Arc<parking_lot::Mutex<Vec<Request>>>,
    _endpoint: Endpoint,
}

impl Recorder {
    pub fn start(script: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Recorder {
        let got = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let g = got.clone();
        let n = AtomicUsize::new(0);
        let endpoint = Endpoint::start(move |req| {
            g.lock().push(req);
            script(n.fetch_add(1, SeqCst))
        });
        Recorder {
            url: endpoint.url.clone(),
            got,
            _endpoint: endpoint,
        }
    }

    /// Answers 200 to everything.
    pub fn ok() -> Recorder {
        Recorder::start(|_| Answer::status(200))
    }

    /// The requests so far, in the order they came.
    pub fn requests(&self) -> Vec<Request> {
        self.got.lock().clone()
    }

    pub fn count(&self) -> usize {
        self.got.lock().len()
    }
}
