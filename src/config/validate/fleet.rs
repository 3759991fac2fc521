//! `fleet:`: the etcd cluster, the key prefix the fleet shares, this instance's name, its
//! lease and the TLS to reach etcd (SPEC §11).
//!
//! The prefix is required, not defaulted: two environments that silently shared a default
//! prefix would share one rollout, the worst surprise fleet mode can have.

use std::time::Duration;

use super::Checker;
use crate::config::de::Spanned;
use crate::config::defaults;
use crate::config::file::{FleetFile, FleetTlsFile};
use crate::config::model::{Fleet, FleetTls};
use crate::config::yaml::Mark;

/// etcd keeps leases in whole seconds; beyond an hour a dead leader blocks for too long.
const LEASE_TTL_RANGE: (u64, u64) = (1, 3600);

impl Checker<'_> {
    pub(super) fn fleet(&mut self, fleet: &Spanned<FleetFile>) -> Option<Fleet> {
        let errors = self.errors.len();
        let file = &fleet.value;
        let etcd = self.etcd_endpoints(file, fleet.mark);
        let prefix = self.fleet_prefix(file, fleet.mark);
        let instance = match &file.instance {
            Some(name) => {
                self.instance_name(name);
                name.value.clone()
            }
            None => match host_name() {
                Some(name) if valid_instance(&name) => name,
                _ => {
                    self.error(
                        fleet.mark,
                        "the host name cannot name this instance; set `instance`",
                    );
                    String::new()
                }
            },
        };
        let lease_ttl = self.lease_ttl(&file.lease_ttl);
        let tls = file.tls.as_ref().and_then(|tls| self.fleet_tls(tls));
        if let Some(tls_field) = &file.tls {
            if etcd.iter().any(|e| e.starts_with("http://")) {
                self.error(
                    tls_field.mark,
                    "`tls` is set but some `etcd` endpoints are http://; use https:// for all",
                );
            }
        } else if etcd.iter().any(|e| e.starts_with("https://")) {
            self.error(
                fleet.mark,
                "https:// etcd endpoints need `tls: { ca: FILE }` to verify the server",
            );
        }
        (self.errors.len() == errors).then_some(Fleet {
            etcd,
            prefix,
            instance,
            lease_ttl,
            tls,
        })
    }

    fn etcd_endpoints(&mut self, file: &FleetFile, parent: Mark) -> Vec<String> {
        let list = self.required_list(
            &file.etcd,
            parent,
            "etcd",
            "list at least one etcd endpoint",
        );
        let mut endpoints = Vec::new();
        for endpoint in list {
            match endpoint_url(&endpoint.value) {
                Ok(url) => endpoints.push(url),
                Err(message) => self.error(endpoint.mark, message),
            }
        }
        endpoints
    }

    fn fleet_prefix(&mut self, file: &FleetFile, parent: Mark) -> String {
        let Some(prefix) = self.required(&file.prefix, parent, "prefix") else {
            return String::new();
        };
        let text = prefix.value.trim_end_matches('/');
        let ok = prefix.value.starts_with('/')
            && text.len() > 1
            && !text.contains("//")
            && text.chars().all(|c| c.is_ascii_graphic());
        if !ok {
            self.error(
                prefix.mark,
                format!(
                    "`{}` is not a key prefix; write it like `/cutover/prod`",
                    prefix.value
                ),
            );
        }
        text.to_string()
    }

    fn instance_name(&mut self, name: &Spanned<String>) {
        if !valid_instance(&name.value) {
            self.error(
                name.mark,
                format!(
                    "`{}` cannot name an instance: use 1 to 64 letters, digits, `.`, `_` or `-`",
                    name.value
                ),
            );
        }
    }

    fn lease_ttl(&mut self, field: &Option<Spanned<String>>) -> Duration {
        let ttl = self.duration(field, defaults::FLEET_LEASE_TTL);
        let (min, max) = LEASE_TTL_RANGE;
        let whole = ttl.subsec_nanos() == 0;
        if !whole || !(min..=max).contains(&ttl.as_secs()) {
            if let Some(field) = field {
                self.error(
                    field.mark,
                    format!("must be whole seconds between {min}s and {max}s (etcd leases count seconds)"),
                );
            }
            return defaults::FLEET_LEASE_TTL;
        }
        ttl
    }

    fn fleet_tls(&mut self, tls: &Spanned<FleetTlsFile>) -> Option<FleetTls> {
        let file = &tls.value;
        let ca = self.required(&file.ca, tls.mark, "ca").cloned();
        let ca = ca.and_then(|ca| self.read_pem(&ca));
        let identity = match (&file.cert, &file.key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let cert = self.read_pem(cert);
                let key = self.read_pem(key);
                Some(cert.zip(key)?)
            }
            (Some(one), None) | (None, Some(one)) => {
                self.error(one.mark, "a client certificate needs both `cert` and `key`");
                return None;
            }
        };
        Some(FleetTls { ca: ca?, identity })
    }

    fn read_pem(&mut self, field: &Spanned<String>) -> Option<Vec<u8>> {
        let path = self.path(&field.value);
        self.read.push(path.clone());
        match std::fs::read(&path) {
            Ok(bytes) if bytes.windows(11).any(|w| w == b"-----BEGIN ") => Some(bytes),
            Ok(_) => {
                self.error(field.mark, format!("{} is not a PEM file", path.display()));
                None
            }
            Err(err) => {
                self.error(field.mark, format!("cannot read {}: {err}", path.display()));
                None
            }
        }
    }
}

/// `http://host:port` as tonic wants it; a bare `host:port` is taken as http.
fn endpoint_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    let with_scheme = if text.contains("://") {
        text.to_string()
    } else {
        format!("http://{text}")
    };
    let bad = || format!("`{text}` is not an etcd endpoint; write it like `http://10.0.0.5:2379`");
    let uri: http::Uri = with_scheme.parse().map_err(|_| bad())?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad()),
    }
    let authority = uri.authority().ok_or_else(bad)?;
    if authority.port_u16().is_none() || uri.path().len() > 1 {
        return Err(bad());
    }
    Ok(with_scheme.trim_end_matches('/').to_string())
}

fn valid_instance(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
    // (or truncates, which the search for NUL below tolerates).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0)?;
    String::from_utf8(buf[..end].to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_urls_with_a_port() {
        assert_eq!(
            endpoint_url("10.0.0.5:2379").unwrap(),
            "http://10.0.0.5:2379"
        );
        assert_eq!(
            endpoint_url("https://etcd.internal:2379/").unwrap(),
            "https://etcd.internal:2379"
        );
        assert!(endpoint_url("http://etcd").is_err());
        assert!(endpoint_url("ftp://etcd:21").is_err());
        assert!(endpoint_url("http://etcd:2379/v3").is_err());
    }

    #[test]
    fn instance_names() {
        assert!(valid_instance("web-3.prod_1"));
        assert!(!valid_instance(""));
        assert!(!valid_instance("web 3"));
        assert!(!valid_instance("a/b"));
        assert!(host_name().is_some());
    }

    const BASE: &str = "listeners: [{ addr: \"127.0.0.1:0\" }]\nservices:\n  - name: api\n    old: { backends: [{ addr: \"127.0.0.1:9001\" }] }\n    new: { backends: [{ addr: \"127.0.0.1:9002\" }] }\n";

    fn load(fleet: &str) -> Result<crate::config::Config, Vec<String>> {
        let source = format!("{BASE}{fleet}");
        crate::config::load::from_str(&source, std::path::Path::new("/tmp/cutover-fleet/c.yaml"))
            .map_err(|errors| errors.0.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn without_a_fleet_section_there_is_no_fleet() {
        assert!(load("").unwrap().fleet.is_none());
    }

    #[test]
    fn a_fleet_section_is_read_with_its_defaults() {
        let config = load(
            "fleet:\n  etcd: [\"127.0.0.1:2379\", \"http://10.0.0.6:2379\"]\n  prefix: /cutover/prod/\n  instance: web-3\n",
        )
        .unwrap();
        let fleet = config.fleet.unwrap();
        assert_eq!(
            fleet.etcd,
            ["http://127.0.0.1:2379", "http://10.0.0.6:2379"]
        );
        assert_eq!(fleet.prefix, "/cutover/prod");
        assert_eq!(fleet.instance, "web-3");
        assert_eq!(fleet.lease_ttl, Duration::from_secs(10));
        assert!(fleet.tls.is_none());
        let host = load("fleet: { etcd: [\"127.0.0.1:2379\"], prefix: /c, lease_ttl: 3s }\n")
            .unwrap()
            .fleet
            .unwrap();
        assert_eq!(host.instance, host_name().unwrap());
        assert_eq!(host.lease_ttl, Duration::from_secs(3));
    }

    #[test]
    fn every_fleet_problem_is_reported_with_its_position() {
        let errors = load(
            "fleet:\n  etcd: [\"etcd\", \"https://e:2379\"]\n  instance: \"web 3\"\n  lease_ttl: 1500ms\n  tls: { cert: /nonexistent.pem }\n  leader: x\n",
        )
        .unwrap_err();
        let all = errors.join("\n");
        let has = |line: &str, needle: &str| {
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains(line) && e.contains(needle)),
                "no `{needle}` at {line} in:\n{all}"
            )
        };
        has("c.yaml:11:3:", "unknown key `leader`");
        has("c.yaml:7:10:", "`etcd` is not an etcd endpoint");
        has("c.yaml:8:13:", "cannot name an instance");
        has("c.yaml:9:14:", "whole seconds");
        has("c.yaml:10:8:", "missing `ca`");
        has("c.yaml:10:16:", "needs both `cert` and `key`");
        has("c.yaml:7:7:", "missing `prefix`");
    }

    #[test]
    fn https_needs_a_ca_and_tls_needs_https() {
        let errors =
            load("fleet: { etcd: [\"https://e:2379\"], prefix: /c, instance: a }\n").unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("need `tls: { ca: FILE }`")),
            "{errors:?}"
        );
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let fleet = format!(
            "fleet: {{ etcd: [\"http://e:2379\"], prefix: /c, instance: a, tls: {{ ca: {} }} }}\n",
            ca.display()
        );
        let errors = load(&fleet).unwrap_err();
        assert!(
            errors.iter().any(|e| e.contains("use https:// for all")),
            "{errors:?}"
        );
        let fleet = fleet.replace("http://", "https://");
        let tls = load(&fleet).unwrap().fleet.unwrap().tls.unwrap();
        assert!(tls.ca.starts_with(b"-----BEGIN CERTIFICATE"));
        assert!(tls.identity.is_none());
    }
}
