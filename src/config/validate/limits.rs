//! `limits:`: what one client connection may cost the proxy.

use super::Checker;
use crate::config::de::Spanned;
use crate::config::file::LimitsFile;
use crate::config::model::{parse_bytes, Limits};

impl Checker<'_> {
    pub(super) fn limits(&mut self, limits: Option<&LimitsFile>) -> Limits {
        let defaults = Limits::default();
        let Some(limits) = limits else {
            return defaults;
        };
        Limits {
            header_read_timeout: self
                .positive_duration(&limits.header_read_timeout, defaults.header_read_timeout),
            max_header_bytes: self.bytes_within(
                &limits.max_header_bytes,
                defaults.max_header_bytes,
                (1024, 16 * 1024 * 1024),
                "must be between 1KiB and 16MiB",
            ),
            max_connections: self.count(
                &limits.max_connections,
                defaults.max_connections as u64,
                1,
                10_000_000,
            ) as usize,
            shutdown_grace: self.duration(&limits.shutdown_grace, defaults.shutdown_grace),
            request_buffer: self.bytes_within(
                &limits.request_buffer,
                defaults.request_buffer,
                (0, 64 * 1024 * 1024),
                "must be between 0 (stream every body) and 64MiB",
            ),
            body_read_timeout: self
                .positive_duration(&limits.body_read_timeout, defaults.body_read_timeout),
            max_concurrent_streams: self.count(
                &limits.max_concurrent_streams,
                u64::from(defaults.max_concurrent_streams),
                1,
                10_000,
            ) as u32,
        }
    }

    /// A size such as `64KiB` within `range` (inclusive), else `default` and an error.
    fn bytes_within(
        &mut self,
        field: &Option<Spanned<String>>,
        default: usize,
        (min, max): (usize, usize),
        out_of_range: &str,
    ) -> usize {
        let Some(field) = field else {
            return default;
        };
        match parse_bytes(&field.value) {
            Ok(n) if (min..=max).contains(&n) => n,
            Ok(_) => {
                self.error(field.mark, out_of_range);
                default
            }
            Err(message) => {
                self.error(field.mark, message);
                default
            }
        }
    }
}
