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
            send_timeout: self.positive_duration(&limits.send_timeout, defaults.send_timeout),
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::load::from_str;

    const SERVICE: &str = "services:\n  - name: api\n    old: { backends: [{ addr: \"127.0.0.1:9001\", max_connections: 3 }] }\n    new: { backends: [{ addr: \"127.0.0.1:9002\" }] }\n";

    fn load(limits: &str) -> Result<crate::config::Config, String> {
        let source =
            format!("listeners: [{{ addr: \"127.0.0.1:0\" }}]\nlimits:\n{limits}{SERVICE}");
        from_str(&source, Path::new("/tmp/cutover-test/cutover.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn request_limits_are_read_and_defaulted() {
        let config =
            load("  request_buffer: 1MiB\n  body_read_timeout: 5s\n  send_timeout: 2m\n  max_concurrent_streams: 7\n")
                .unwrap();
        assert_eq!(config.limits.request_buffer, 1024 * 1024);
        assert_eq!(config.limits.body_read_timeout, Duration::from_secs(5));
        assert_eq!(config.limits.send_timeout, Duration::from_secs(120));
        assert_eq!(config.limits.max_concurrent_streams, 7);
        let service = &config.services[0];
        assert_eq!(service.old.backends[0].max_connections, 3);
        assert_eq!(service.new.backends[0].max_connections, 1024);
        let defaults = load("  max_connections: 10\n").unwrap().limits;
        assert_eq!(defaults.request_buffer, 64 * 1024);
        assert_eq!(defaults.body_read_timeout, Duration::from_secs(30));
        assert_eq!(defaults.send_timeout, Duration::from_secs(60));
        assert_eq!(defaults.max_concurrent_streams, 100);
    }

    #[test]
    fn request_limits_out_of_range_are_errors_with_their_line() {
        let errors = load(
            "  request_buffer: 100MiB\n  body_read_timeout: 0s\n  max_concurrent_streams: 0\n",
        )
        .unwrap_err();
        assert!(
            errors.contains(":3:") && errors.contains("64MiB"),
            "{errors}"
        );
        assert!(
            errors.contains(":4:") && errors.contains("longer than zero"),
            "{errors}"
        );
        assert!(
            errors.contains(":5:") && errors.contains("between 1 and 10000"),
            "{errors}"
        );
    }
}
