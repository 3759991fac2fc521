//! What to send: the URL, method and headers, validated once up front so the
//! hot path only clones a prepared request and never parses user input.

use bytes::Bytes;
use http_body_util::Empty;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use hyper::{Method, Request, Uri};

/// Why a URL, method or header given by the user cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("invalid URL {0:?}: expected http://HOST:PORT/PATH")]
    Url(String),
    #[error("unsupported scheme in {0:?}: only plain http:// is supported (HTTP/1.1 over TCP)")]
    Scheme(String),
    #[error("invalid method {0:?}")]
    Method(String),
    #[error("invalid header {0:?}: expected 'Name: value'")]
    Header(String),
}

/// A validated request template plus where to connect to.
#[derive(Debug, Clone)]
pub struct Target {
    url: String,
    host: String,
    port: u16,
    method: Method,
    path_and_query: Uri,
    headers: HeaderMap,
}

impl Target {
    /// Builds a target from user input. `headers` are `"Name: value"` strings;
    /// a user-supplied `Host` header overrides the one derived from the URL.
    pub fn parse(url: &str, method: &str, headers: &[String]) -> Result<Self, TargetError> {
        let uri: Uri = url.parse().map_err(|_| TargetError::Url(url.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(_) => return Err(TargetError::Scheme(url.to_string())),
            None => return Err(TargetError::Url(url.to_string())),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| TargetError::Url(url.to_string()))?;
        // Uri keeps the brackets around IPv6 literals; the socket API wants
        // the bare address.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(80);
        let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let path_and_query: Uri = path
            .parse()
            .map_err(|_| TargetError::Url(url.to_string()))?;
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| TargetError::Method(method.into()))?;

        let mut header_map = HeaderMap::new();
        // HTTP/1.1 requires Host, and hyper's low-level client does not add it.
        let host_value = HeaderValue::from_str(authority.as_str())
            .map_err(|_| TargetError::Url(url.to_string()))?;
        header_map.insert(HOST, host_value);
        for raw in headers {
            let (name, value) = parse_header(raw)?;
            header_map.insert(name, value);
        }
        Ok(Self {
            url: url.to_string(),
            host,
            port,
            method,
            path_and_query,
            headers: header_map,
        })
    }

    /// Adds (or replaces) a header on every request. For values that must
    /// not show up in error messages, such as credentials.
    pub fn insert_header(&mut self, name: HeaderName, value: HeaderValue) {
        self.headers.insert(name, value);
    }

    /// The URL as the user gave it, for reports.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Host (without IPv6 brackets) and port to open a TCP connection to.
    pub fn connect_addr(&self) -> (&str, u16) {
        (&self.host, self.port)
    }

    /// A fresh request in origin form (`/path?query`), as HTTP/1.1 expects
    /// when talking to the origin server directly.
    pub fn request(&self) -> Request<Empty<Bytes>> {
        let mut request = Request::new(Empty::new());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.path_and_query.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// Splits `"Name: value"` into a validated header name and value.
pub fn parse_header(raw: &str) -> Result<(HeaderName, HeaderValue), TargetError> {
    let bad = || TargetError::Header(raw.to_string());
    let (name, value) = raw.split_once(':').ok_or_else(bad)?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_origin_form_request_with_host() {
        let target = Target::parse(
            "http://127.0.0.1:8080/api/x?y=1",
            "POST",
            &["X-Test: a b".to_string()],
        )
        .expect("valid target");
        assert_eq!(target.connect_addr(), ("127.0.0.1", 8080));
        let request = target.request();
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri(), "/api/x?y=1");
        assert_eq!(request.headers()[HOST], "127.0.0.1:8080");
        assert_eq!(request.headers()["x-test"], "a b");
    }

    #[test]
    fn defaults_path_and_port_and_strips_ipv6_brackets() {
        let target = Target::parse("http://[::1]", "GET", &[]).expect("valid target");
        assert_eq!(target.connect_addr(), ("::1", 80));
        assert_eq!(target.request().uri(), "/");
    }

    #[test]
    fn user_host_header_wins() {
        let target = Target::parse("http://127.0.0.1:1/", "GET", &["Host: example.test".into()])
            .expect("valid target");
        assert_eq!(target.request().headers()[HOST], "example.test");
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            Target::parse("https://x/", "GET", &[]),
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            Target::parse("/just/a/path", "GET", &[]),
            Err(TargetError::Url(_))
        ));
        assert!(matches!(
            Target::parse("http://x/", "G E T", &[]),
            Err(TargetError::Method(_))
        ));
        assert!(matches!(
            Target::parse("http://x/", "GET", &["no colon".into()]),
            Err(TargetError::Header(_))
        ));
    }
}
