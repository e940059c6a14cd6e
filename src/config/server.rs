//! `[server]`: where the daemon listens, how large and slow a request may be, and which
//! proxies it trusts.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Address the HTTP listener binds.
    #[serde(with = "listen_address")]
    pub listen: SocketAddr,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Public base URL (e.g. `https://idm.example.com`) used in `meta.location`; when unset,
    /// the scheme and Host of each request are used.
    pub public_url: Option<String>,
    /// HTTP worker threads (default: one per CPU).
    pub workers: Option<usize>,
    /// Seconds requests in flight may take to finish after SIGTERM before they are dropped.
    pub shutdown_timeout: u64,
    /// Peers (IP addresses or CIDR networks) whose `Forwarded` / `X-Forwarded-Host` /
    /// `X-Forwarded-Proto` headers are believed; nobody's by default.
    pub trusted_proxies: Vec<Network>,
    /// Seconds a client may take to send a request's headers, and again its body (408 after).
    pub request_timeout: u64,
}

/// `server.listen`, read as a socket address with a hint when it is not one.
mod listen_address {
    use std::net::SocketAddr;

    pub(crate) fn serialize<S: serde::Serializer>(addr: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(addr)
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        text.parse().map_err(|e| serde::de::Error::custom(format!("{text:?} is not an address such as 127.0.0.1:8080 ({e})")))
    }
}

/// An IP network (`10.0.0.0/8`, `fd00::/8`); a bare address is a network of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("{0:?} is not an IP address or a CIDR network")]
    NotAnAddress(String),
    #[error("{0:?}: the prefix length must be 0 to {1}")]
    Prefix(String, u8),
}

impl TryFrom<String> for Network {
    type Error = NetworkError;
    fn try_from(s: String) -> Result<Self, NetworkError> {
        Network::parse(&s)
    }
}

impl From<Network> for String {
    fn from(n: Network) -> String {
        format!("{}/{}", n.addr, n.prefix)
    }
}

impl Network {
    pub fn parse(s: &str) -> Result<Self, NetworkError> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| NetworkError::NotAnAddress(s.to_string()))?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => {
                p.trim().parse::<u8>().ok().filter(|p| *p <= bits).ok_or_else(|| NetworkError::Prefix(s.to_string(), bits))?
            }
        };
        Ok(Network { addr, prefix })
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 peer may arrive as an IPv4-mapped IPv6 address on a dual-stack listener.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let mask = |bits: u32, width: u32| if bits == 0 { 0u128 } else { u128::MAX << (width - bits) };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let m = mask(self.prefix.into(), 32);
                (u128::from(u32::from(net)) & m) == (u128::from(u32::from(ip)) & m)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let m = mask(self.prefix.into(), 128);
                (u128::from(net) & m) == (u128::from(ip) & m)
            }
            _ => false,
        }
    }
}

impl Server {
    /// An operator's one-time setup link: the console's address as operators reach it
    /// (`public_url`, else the listen address over plain HTTP). The command line and the
    /// console's Operators page both print it.
    pub fn setup_link(&self, token: &str) -> String {
        let base = self.public_url.clone().unwrap_or_else(|| format!("http://{}", self.listen));
        format!("{}/console/setup/{token}", base.trim_end_matches('/'))
    }
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            public_url: None,
            workers: None,
            shutdown_timeout: 30,
            trusted_proxies: Vec::new(),
            request_timeout: 30,
        }
    }
}
