//! Loopback mode's defence against web pages (SPEC §4: "with no tokens (loopback mode)
//! `Host` and `Origin` are also checked, so a web page cannot drive the server").
//!
//! Without tokens every request is allowed, and between a server on 127.0.0.1 and any
//! page the operator's browser opens there is only the browser. Two ways past it:
//! - A cross-site request: a page on evil.example runs
//!   `fetch("http://127.0.0.1:8080/v1/orders/ID/cancel", {method: "POST", mode: "no-cors"})`.
//!   That is a "simple" request, sent without a preflight; the page cannot read the
//!   answer, but the write is done. The browser names the page in `Origin` (on every
//!   cross-origin request but a plain navigation or an embedded GET; `null` from
//!   sandboxed frames, `file:` pages and no-referrer POSTs).
//! - DNS rebinding: evil.example resolves to the attacker, then to 127.0.0.1, so its page
//!   is "same-origin" with the server and may read the answers too. The browser still
//!   says `Host: evil.example:8080`.
//!
//! So in loopback mode every request must name an allowed host in `Host`, and one that
//! carries `Origin` must come from `http://` and an allowed host; both refusals are 403
//! `forbidden`. This holds for every method and route, reads included (the event log and
//! orders are what a rebinding page would read). Allowed hosts: `localhost`,
//! `127.0.0.1`, `[::1]` and the listen address on the listen port, and `--allowed-hosts`
//! (an entry without a port: the listen port). A `Host` without a port is port 80.
//!
//! With tokens these checks are off: a browser never adds `Authorization: Bearer` by
//! itself, so a page cannot act with the operator's rights (and a server behind a proxy
//! or in a container is reached under names it cannot know).

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::{HeaderMap, HOST, ORIGIN};
use actix_web::http::Uri;

use super::error::{ApiError, ProblemType};
use crate::config::HostPort;

/// The HTTP default port, for a `Host` or `Origin` without one.
const HTTP_PORT: u16 = 80;

/// The hosts a browser may use for this server in loopback mode.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    /// (lower-cased name, port) pairs; a handful, so a list.
    hosts: Vec<(String, u16)>,
}

impl AllowedHosts {
    /// The loopback names and `listen`'s address on its port, and `extra` (an entry
    /// without a port on the listen port). `listen` is the bound address (port 0
    /// resolved).
    pub fn new(listen: SocketAddr, extra: &[HostPort]) -> AllowedHosts {
        let port = listen.port();
        let own = match listen.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        let mut hosts: Vec<(String, u16)> = ["localhost", "127.0.0.1", "[::1]", own.as_str()]
            .into_iter()
            .map(|h| (h.to_owned(), port))
            .collect();
        hosts.extend(
            extra
                .iter()
                .map(|h| (h.host.clone(), h.port.unwrap_or(port))),
        );
        hosts.sort();
        hosts.dedup();
        AllowedHosts { hosts }
    }

    fn allows(&self, h: &HostPort) -> bool {
        let port = h.port.unwrap_or(HTTP_PORT);
        self.hosts.iter().any(|(n, p)| *n == h.host && *p == port)
    }

    /// Refuses (403 `forbidden`) a request whose `Host` (or absolute request target) is
    /// not an allowed host, or whose `Origin` is present and not `http://` on one.
    pub fn check(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), ApiError> {
        let host = headers.get(HOST).and_then(|v| v.to_str().ok());
        let named = host.or_else(|| uri.authority().map(|a| a.as_str()));
        match named.and_then(HostPort::parse) {
            Some(h) if self.allows(&h) => {}
            _ => {
                return Err(refused(format!(
                    "Host {:?} is not a name of this server; without auth tokens only \
                     localhost, 127.0.0.1, [::1] and --allowed-hosts are accepted",
                    named.unwrap_or("")
                )))
            }
        }
        // An absolute-form target (`POST http://other/ HTTP/1.1`) names the host too.
        if let Some(a) = uri.authority() {
            if !HostPort::parse(a.as_str()).is_some_and(|h| self.allows(&h)) {
                return Err(refused(format!(
                    "the request target names {:?}, not this server",
                    a.as_str()
                )));
            }
        }
        if let Some(origin) = headers.get(ORIGIN) {
            let text = origin.to_str().unwrap_or("");
            let same_site = text
                .split_once("://")
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("http"))
                .and_then(|(_, host)| HostPort::parse(host))
                .is_some_and(|h| self.allows(&h));
            if !same_site {
                return Err(refused(format!(
                    "a request from the web page {text:?} is refused; without auth tokens \
                     only pages served by this server's own hosts may call it"
                )));
            }
        }
        Ok(())
    }
}

fn refused(detail: String) -> ApiError {
    tracing::debug!(%detail, "loopback mode: request refused");
    ApiError::new(ProblemType::Forbidden, detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn check(hosts: &AllowedHosts, host: Option<&str>, origin: Option<&str>) -> bool {
        let mut h = HeaderMap::new();
        if let Some(v) = host {
            h.insert(HOST, HeaderValue::from_str(v).unwrap());
        }
        if let Some(v) = origin {
            h.insert(ORIGIN, HeaderValue::from_str(v).unwrap());
        }
        hosts.check(&h, &Uri::from_static("/v1/orders")).is_ok()
    }

    #[test]
    fn loopback_names_on_the_listen_port_and_listed_hosts_are_allowed_others_are_not() {
        let extra = [
            HostPort::parse("ordo.test").unwrap(),
            HostPort::parse("tunnel:9000").unwrap(),
        ];
        let hosts = AllowedHosts::new("127.0.0.1:8080".parse().unwrap(), &extra);
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LocalHost:8080",
            "[::1]:8080",
            "[0::1]:8080",
            "ordo.test:8080",
            "tunnel:9000",
        ] {
            assert!(check(&hosts, Some(ok), None), "{ok}");
            assert!(
                check(&hosts, Some(ok), Some(&format!("http://{ok}"))),
                "{ok}"
            );
        }
        for bad in [
            "evil.example:8080",
            "127.0.0.1:8081",
            "localhost",
            "tunnel:8080",
            "localhost.:8080",
            "127.0.0.1:8080/x",
            "",
        ] {
            assert!(!check(&hosts, Some(bad), None), "{bad}");
        }
        assert!(!check(&hosts, None, None), "no Host");
        for origin in [
            "https://127.0.0.1:8080",
            "http://evil.example",
            "http://127.0.0.1:8081",
            "null",
            "http://127.0.0.1:8080/",
            "",
        ] {
            assert!(
                !check(&hosts, Some("127.0.0.1:8080"), Some(origin)),
                "{origin}"
            );
        }
        // Port 80 is the default of both headers.
        let on_80 = AllowedHosts::new("127.0.0.1:80".parse().unwrap(), &[]);
        assert!(check(&on_80, Some("localhost"), Some("http://localhost")));
        assert!(check(
            &on_80,
            Some("localhost:80"),
            Some("HTTP://localhost:80")
        ));
    }

    #[test]
    fn an_absolute_request_target_must_name_an_allowed_host_too() {
        let hosts = AllowedHosts::new("127.0.0.1:8080".parse().unwrap(), &[]);
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("127.0.0.1:8080"));
        let evil = Uri::from_static("http://evil.example:8080/v1/orders");
        assert!(hosts.check(&h, &evil).is_err());
        let own = Uri::from_static("http://localhost:8080/v1/orders");
        assert!(hosts.check(&h, &own).is_ok());
    }
}
