//! Header tokens: the comma-separated lists of `Connection` (and `Transfer-Encoding`),
//! and the hop-by-hop headers a proxy never forwards (SPEC §7).

use http::header::{self, HeaderName};

/// The tokens of a comma-separated header value, trimmed of surrounding whitespace.
#[inline]
pub(crate) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(<[u8]>::trim_ascii)
}

/// Whether the comma-separated `value` holds `token` (ASCII case-insensitive).
#[inline]
pub(crate) fn has_token(value: &[u8], token: &[u8]) -> bool {
    tokens(value).any(|t| t.eq_ignore_ascii_case(token))
}

/// The last token of a comma-separated value (`chunked` must be the last coding).
pub(crate) fn last_token(value: &[u8]) -> &[u8] {
    value
        .rsplit(|b| *b == b',')
        .next()
        .unwrap_or_default()
        .trim_ascii()
}

/// Hop-by-hop headers (SPEC §7); `Upgrade` is kept on upgrades.
pub(crate) fn is_hop_by_hop(name: &HeaderName, upgrade: bool) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || (name == header::UPGRADE && !upgrade)
        || name.as_str() == "keep-alive"
        || name.as_str().starts_with("proxy-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_trimmed_and_case_insensitive() {
        assert!(has_token(b"keep-alive, Upgrade", b"upgrade"));
        assert!(has_token(b" close ", b"close"));
        assert!(!has_token(b"upgraded", b"upgrade"));
        assert_eq!(last_token(b"gzip, Chunked "), b"Chunked");
        assert_eq!(tokens(b"a,,b").count(), 3);
    }
}
