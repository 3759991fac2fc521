//! `limits:`: what one client connection may cost the proxy.

use super::Checker;
use crate::config::file::LimitsFile;
use crate::config::model::{parse_bytes, Limits};

impl Checker<'_> {
    pub(super) fn limits(&mut self, limits: Option<&LimitsFile>) -> Limits {
        let defaults = Limits::default();
        let Some(limits) = limits else {
            return defaults;
        };
        let max_header_bytes = match &limits.max_header_bytes {
            None => defaults.max_header_bytes,
            Some(field) => match parse_bytes(&field.value) {
                Ok(n) if (1024..=16 * 1024 * 1024).contains(&n) => n,
                Ok(_) => {
                    self.error(field.mark, "must be between 1KiB and 16MiB");
                    defaults.max_header_bytes
                }
                Err(message) => {
                    self.error(field.mark, message);
                    defaults.max_header_bytes
                }
            },
        };
        Limits {
            header_read_timeout: self
                .positive_duration(&limits.header_read_timeout, defaults.header_read_timeout),
            max_header_bytes,
            max_connections: self.count(
                &limits.max_connections,
                defaults.max_connections as u64,
                1,
                10_000_000,
            ) as usize,
            shutdown_grace: self.duration(&limits.shutdown_grace, defaults.shutdown_grace),
        }
    }
}
