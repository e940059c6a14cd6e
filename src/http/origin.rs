//! The scheme and authority this server was reached at, for the URLs it writes into answers
//! (`Location`, `meta.location`). `server.public_url` wins; without it the request's `Host` is
//! used only when it is a plain `host[:port]` (anything else — `evil.com/"><script>` — falls
//! back to the listen address), and `Forwarded` / `X-Forwarded-*` are believed only from a
//! peer listed in `server.trusted_proxies`.

use actix_web::http::header;
use actix_web::HttpRequest;

use super::AppState;

/// `scheme://host[:port]`, without a trailing slash.
pub(crate) fn public_origin(state: &AppState, req: &HttpRequest) -> String {
    if let Some(url) = &state.config.server.public_url {
        return url.trim_end_matches('/').to_string();
    }
    let direct = direct_host(req);
    if from_trusted_proxy(state, req) {
        // actix reads `Forwarded` first, then `X-Forwarded-Host` / `-Proto`, then `Host`.
        let info = req.connection_info();
        let scheme = match info.scheme() {
            s if s.eq_ignore_ascii_case("https") => "https",
            _ => "http",
        };
        let host = Some(info.host()).filter(|h| valid_authority(h)).map(str::to_string).unwrap_or(direct);
        return format!("{scheme}://{host}");
    }
    // The daemon itself speaks plain HTTP: TLS is a proxy's, and only a trusted one says so.
    format!("http://{direct}")
}

/// The request's own `Host` (or absolute-form authority) when well-formed, else the address
/// the server listens on.
fn direct_host(req: &HttpRequest) -> String {
    let host =
        req.uri().authority().map(|a| a.as_str()).or_else(|| req.headers().get(header::HOST).and_then(|v| v.to_str().ok()));
    match host {
        Some(h) if valid_authority(h) => h.to_string(),
        _ => req.app_config().local_addr().to_string(),
    }
}

fn from_trusted_proxy(state: &AppState, req: &HttpRequest) -> bool {
    let Some(peer) = req.peer_addr() else { return false };
    state.trusted_proxies.iter().any(|n| n.contains(peer.ip()))
}

/// `host[:port]`: a DNS name or IPv4 address (letters, digits, `-`, `_`, dot-separated labels
/// of at most 63 characters), or a bracketed IPv6 address; the port 1–65535.
pub(crate) fn valid_authority(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else { return false };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return false,
            },
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(s), None),
        }
    };
    let host_ok = host.is_none_or(|h| {
        !h.is_empty()
            && h.len() <= 253
            && h.trim_end_matches('.').split('.').all(|label| {
                (1..=63).contains(&label.len()) && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    });
    let port_ok = port.is_none_or(|p| {
        (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok_and(|n| n > 0)
    });
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::valid_authority;

    #[test]
    fn only_plain_host_and_port_are_valid_authorities() {
        for ok in [
            "idm.example.com",
            "idm.example.com:8443",
            "127.0.0.1:8080",
            "[::1]:8080",
            "[2001:db8::1]",
            "localhost",
            "my_host.corp.",
        ] {
            assert!(valid_authority(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.com/\"><script>",
            "evil.com/x",
            "a b",
            "host:",
            "host:0",
            "host:65536",
            "host:80:80",
            "[::1",
            "[nope]:80",
            "user@host",
            "host..com",
            ".host",
            "host%2f",
            "[::1]x",
        ] {
            assert!(!valid_authority(bad), "{bad}");
        }
    }
}
