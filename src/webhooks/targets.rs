//! Where a webhook may be sent: the guard against server-side request forgery (SSRF).
//!
//! Whoever may create a subscription may make the server POST to any URL. Unless the
//! operator allows it (`--webhook-allow-private`), a target that is, or resolves to, an
//! address the server can reach but the public cannot is refused: loopback, RFC 1918,
//! 100.64/10 (shared, carrier-grade NAT), link-local (169.254/16 — cloud metadata —,
//! fe80::/10), fc00::/7, unspecified (0/8, ::), multicast and broadcast, and the
//! IPv4-mapped IPv6 forms of each. Documentation ranges (192.0.2/24, 198.51.100/24,
//! 203.0.113/24, 2001:db8::/32) count as public. `localhost` and `*.localhost` are
//! loopback by name (RFC 6761) and refused without a lookup.
//!
//! The check runs twice: when the subscription is created (a literal address directly, a
//! name through the resolver, every address it has), and at every delivery, because DNS
//! may answer differently later (rebinding). At delivery the check sits inside the HTTP
//! client's own resolver ([`CheckedResolver`]): the client connects only to the
//! addresses that were just checked, so nothing changes between check and connect. A
//! literal address in the URL never reaches a resolver; it is checked before each
//! attempt ([`Targets::check_literal`]).
//!
//! The resolver is a trait object ([`Resolve`]) so that tests answer names themselves;
//! the server uses the system's ([`SystemResolver`], `getaddrinfo` through tokio).

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

/// What a lookup returns.
pub type Lookup<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// Answers DNS names for webhook deliveries.
pub trait Resolve: Send + Sync {
    /// The addresses `host` (a name, never an IP literal) has now.
    fn lookup<'a>(&'a self, host: &'a str) -> Lookup<'a>;
}

/// The system resolver (`getaddrinfo` on a blocking thread, through tokio).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn lookup<'a>(&'a self, host: &'a str) -> Lookup<'a> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host, 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// A [`Resolve`] to hand around (settings are `Debug` and `Clone`).
#[derive(Clone)]
pub struct Resolver(pub Arc<dyn Resolve>);

impl Resolver {
    pub fn system() -> Resolver {
        Resolver(Arc::new(SystemResolver))
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::system()
    }
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

/// A target refused, or one whose addresses could not be learnt.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refused {
    #[error(
        "{host} is {ip}, a {class} address; webhook targets must be public \
         (the operator may allow private ones with --webhook-allow-private)"
    )]
    Private {
        host: String,
        ip: IpAddr,
        class: &'static str,
    },
    #[error(
        "{host} is a loopback name; webhook targets must be public \
         (the operator may allow private ones with --webhook-allow-private)"
    )]
    LoopbackName { host: String },
    #[error("{host} does not resolve: {detail}")]
    Unresolved { host: String, detail: String },
    #[error("the url has no host")]
    NoHost,
}

/// Why `ip` may not be a webhook target, if it may not.
pub fn private_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_class(v4),
        // An IPv4-mapped address reaches the IPv4 one: judged as that.
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4_class(v4),
            None => v6_class(v6),
        },
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private (RFC 1918)")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (100.64/10)")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if a == 0 {
        Some("unspecified")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else {
        None
    }
}

fn v6_class(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if first & 0xfe00 == 0xfc00 {
        Some("unique local (fc00::/7)")
    } else if ip.is_multicast() {
        Some("multicast")
    } else {
        None
    }
}

/// `localhost` and its subdomains (RFC 6761), with or without the final dot.
fn is_loopback_name(host: &str) -> bool {
    let h = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    h == "localhost" || h.ends_with(".localhost")
}

/// The host of `url` as an address, if it is a literal one.
fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// The target policy: whether private targets are allowed, and the resolver names go
/// through. Clones share the resolver.
#[derive(Clone)]
pub struct Targets {
    allow_private: bool,
    resolver: Arc<dyn Resolve>,
}

impl Targets {
    pub fn new(allow_private: bool, resolver: Resolver) -> Targets {
        Targets {
            allow_private,
            resolver: resolver.0,
        }
    }

    fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), Refused> {
        match private_class(ip) {
            Some(class) if !self.allow_private => Err(Refused::Private {
                host: host.to_owned(),
                ip,
                class,
            }),
            _ => Ok(()),
        }
    }

    /// At creation: the url's literal address, or every address its name has now.
    pub async fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        if self.allow_private {
            return Ok(());
        }
        let host = url.host_str().ok_or(Refused::NoHost)?;
        match literal_ip(url) {
            Some(ip) => self.check_ip(host, ip),
            None => self.addresses(host).await.map(drop),
        }
    }

    /// Before each attempt: the url's address if it is a literal one (a name is checked
    /// by [`CheckedResolver`] as the client connects).
    pub fn check_literal(&self, url: &reqwest::Url) -> Result<(), Refused> {
        match (url.host_str(), literal_ip(url)) {
            (Some(host), Some(ip)) => self.check_ip(host, ip),
            _ => Ok(()),
        }
    }

    /// The addresses of the name `host`, every one of them allowed; refused if any is
    /// not (a name that answers both a public and a private address is not trusted).
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, Refused> {
        if !self.allow_private && is_loopback_name(host) {
            return Err(Refused::LoopbackName {
                host: host.to_owned(),
            });
        }
        let unresolved = |detail: String| Refused::Unresolved {
            host: host.to_owned(),
            detail,
        };
        let ips = self
            .resolver
            .lookup(host)
            .await
            .map_err(|e| unresolved(e.to_string()))?;
        if ips.is_empty() {
            return Err(unresolved("no address".into()));
        }
        for ip in &ips {
            self.check_ip(host, *ip)?;
        }
        Ok(ips)
    }
}

/// The webhook client's resolver: every name it connects to is resolved and checked
/// here, and the client connects only to the addresses returned.
pub(super) struct CheckedResolver(pub(super) Targets);

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let targets = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let ips = targets.addresses(&host).await?;
            // The port is the url's: the client sets it on each address.
            let addrs: reqwest::dns::Addrs =
                Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_loopback_link_local_and_their_mapped_forms_are_refused() {
        for refused in [
            "127.0.0.1",
            "127.255.0.9",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:100.64.0.1",
        ] {
            assert!(private_class(ip(refused)).is_some(), "{refused} is allowed");
        }
    }

    #[test]
    fn public_and_documentation_addresses_are_allowed() {
        for allowed in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.7",
            "2001:db8::1",
            "2606:4700::1111",
            "::ffff:203.0.113.7",
        ] {
            assert_eq!(private_class(ip(allowed)), None, "{allowed} is refused");
        }
    }

    #[test]
    fn loopback_names_are_known_without_a_lookup() {
        for name in ["localhost", "LOCALHOST.", "api.localhost", "a.b.localhost."] {
            assert!(is_loopback_name(name), "{name}");
        }
        for name in ["localhost.example.com", "mylocalhost", "example.com"] {
            assert!(!is_loopback_name(name), "{name}");
        }
    }

    #[test]
    fn literal_hosts_are_read_in_every_form_the_url_parser_accepts() {
        let lit = |u: &str| literal_ip(&reqwest::Url::parse(u).unwrap());
        assert_eq!(lit("http://[::1]:8080/x"), Some(ip("::1")));
        assert_eq!(
            lit("http://[::ffff:127.0.0.1]/"),
            Some(ip("::ffff:127.0.0.1"))
        );
        // The WHATWG parser reads these as 127.0.0.1.
        assert_eq!(lit("http://2130706433/"), Some(ip("127.0.0.1")));
        assert_eq!(lit("http://0x7f.1/"), Some(ip("127.0.0.1")));
        assert_eq!(lit("http://example.com/"), None);
    }
}
