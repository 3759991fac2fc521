//! A token-less admin API (allowed only on loopback) must not obey a web page.
//!
//! Without a token, any page open in the operator's browser could `POST` a form to
//! `http://127.0.0.1:9901/services/api/rollback`: browsers send such cross-site requests
//! (without reading the answer) and attach no credentials, which a token-less API does not
//! need. Browsers do mark them with `Origin`. A state-changing request whose `Origin` is
//! not the admin API itself is refused; so is any request but `/`, `/healthz` and
//! `/metrics`, reads included, whose `Host` is a name rather than a loopback address or
//! `localhost` (DNS rebinding: a page of `evil.example` that resolves to 127.0.0.1 is
//! "same-origin" with itself, and its reads of `/status` or a decision log carry no
//! `Origin`). The CLI, curl and scripts send no `Origin` and
//! are unaffected; the status page served at `/` is same-origin. With a token none of this
//! is needed: a page cannot learn it, and browsers never attach a bearer token on their own.

use http::{header, HeaderMap};

/// Whether a state-changing request came from a page other than the admin API's own.
pub(super) fn crosses_site(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_authority = origin
        .to_str()
        .ok()
        .and_then(|o| o.strip_prefix("http://"))
        .unwrap_or("");
    origin_authority != host || !is_loopback_literal(host)
}

/// Whether the request names a loopback address or `localhost` as its host.
pub(super) fn addressed_to_loopback(headers: &HeaderMap) -> bool {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_loopback_literal)
}

/// `127.0.0.1:9901`, `[::1]:9901`, `localhost:9901` (with or without the port).
fn is_loopback_literal(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, host.parse().unwrap());
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, origin.parse().unwrap());
        }
        headers
    }

    #[test]
    fn scripts_and_the_own_page_pass_other_pages_do_not() {
        assert!(
            !crosses_site(&headers(None, "127.0.0.1:9901")),
            "curl, the CLI"
        );
        assert!(!crosses_site(&headers(
            Some("http://127.0.0.1:9901"),
            "127.0.0.1:9901"
        )));
        assert!(!crosses_site(&headers(
            Some("http://[::1]:9901"),
            "[::1]:9901"
        )));
        assert!(!crosses_site(&headers(
            Some("http://localhost:9901"),
            "localhost:9901"
        )));
        assert!(crosses_site(&headers(
            Some("https://evil.example"),
            "127.0.0.1:9901"
        )));
        assert!(
            crosses_site(&headers(Some("null"), "127.0.0.1:9901")),
            "sandboxed frames"
        );
        assert!(
            crosses_site(&headers(
                Some("http://evil.example:9901"),
                "evil.example:9901"
            )),
            "DNS rebinding"
        );
    }
}
