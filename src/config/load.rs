//! Reading and validating a config file: YAML → mirror → model, every error at once.
//!
//! The contract (SPEC §2): unknown keys are errors; durations are `250ms`/`30s`/`10m`/`2h`;
//! percentages are `5%`, `0.5%` or a bare number; relative paths are relative to the
//! file's directory; all errors are reported together, each as `file:line:col: message`.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, Uri};

use super::de::{self, Entries, Located, Spanned};
use super::file::*;
use super::model::*;
use super::yaml::{self, Mark};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub mark: Mark,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.mark, self.message)
    }
}

/// Every problem found in a config file, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    fn single(file: &Path, message: String) -> Self {
        ConfigErrors(vec![ConfigError {
            file: file.to_path_buf(),
            mark: Mark { line: 1, col: 1 },
            message,
        }])
    }
}

/// Reads and validates the config at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let path = absolute(path);
    let source = std::fs::read_to_string(&path).map_err(|err| {
        ConfigErrors::single(&path, format!("cannot read the config file: {err}"))
    })?;
    from_str(&source, &path)
}

/// Validates `source` as if read from `path` (relative paths resolve next to it).
pub fn from_str(source: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let path = absolute(path);
    let located = |errors: Vec<Located>| {
        let mut errors: Vec<ConfigError> = errors
            .into_iter()
            .map(|e| ConfigError {
                file: path.clone(),
                mark: e.mark,
                message: e.message,
            })
            .collect();
        errors.sort_by_key(|e| (e.mark.line, e.mark.col));
        ConfigErrors(errors)
    };
    let root = yaml::parse(source).map_err(|err| {
        located(vec![Located {
            mark: err.mark,
            message: format!("invalid YAML: {}", err.message),
        }])
    })?;
    let (file, mut errors) = de::from_node::<FileConfig>(&root);
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut checker = Checker {
        dir: &dir,
        errors: Vec::new(),
        read: Vec::new(),
    };
    let config = file.map(|file| checker.config(file, &path, source));
    // A value the deserializer had to replace is not reported a second time.
    let replaced: Vec<Mark> = errors.iter().map(|e| e.mark).collect();
    errors.extend(
        checker
            .errors
            .into_iter()
            .filter(|e| !replaced.contains(&e.mark)),
    );
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => Err(located(errors)),
    }
}

/// The admin address and token file a config names, read without validating the rest: the
/// client commands need them even where, say, the TLS files are not readable.
pub fn admin_settings(path: &Path) -> Result<(Option<String>, Option<PathBuf>), String> {
    let path = absolute(path);
    let source = std::fs::read_to_string(&path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let root = yaml::parse(&source)
        .map_err(|err| format!("{}:{}: {}", path.display(), err.mark, err.message))?;
    let admin = root.get("admin");
    let addr = admin
        .and_then(|a| a.get("addr"))
        .and_then(|a| a.as_str())
        .map(str::to_string);
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let token_file = admin
        .and_then(|a| a.get("token_file"))
        .and_then(|t| t.as_str())
        .map(|t| dir.join(t));
    Ok((addr, token_file))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// A hash of the config's text and of every file it reads: a reload that would change
/// nothing has the same one.
fn inputs_fingerprint(source: &str, read: &[PathBuf]) -> String {
    let mut all = source.as_bytes().to_vec();
    for path in read {
        all.extend_from_slice(path.as_os_str().as_encoded_bytes());
        all.extend_from_slice(&std::fs::read(path).unwrap_or_default());
    }
    format!("{:016x}", fnv1a(&all))
}

/// FNV-1a, 64 bits: stable across builds, for fingerprints that are persisted.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// `250ms`, `30s`, `10m`, `2h`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "`{text}` needs a unit, like `{text}s` or `{text}ms`"
        ));
    }
    humantime::parse_duration(text).map_err(|_| {
        format!("`{text}` is not a duration; write it like `250ms`, `30s`, `10m` or `2h`")
    })
}

/// `5%`, `0.5%` or a bare number (a percent too); returns the percentage.
pub fn parse_percent(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let number = trimmed.strip_suffix('%').unwrap_or(trimmed).trim();
    match number.parse::<f64>() {
        Ok(p) if p.is_finite() && (0.0..=100.0).contains(&p) => Ok(p),
        Ok(_) => Err(format!("`{trimmed}` is outside 0%..100%")),
        Err(_) => Err(format!(
            "`{trimmed}` is not a percentage; write it like `5%` or `0.5%`"
        )),
    }
}

/// `65536`, `64KiB`, `1MiB`, `64KB`.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1024,
        "KB" | "kB" => 1000,
        "MiB" | "M" => 1024 * 1024,
        "MB" => 1_000_000,
        _ => {
            return Err(format!(
                "`{text}` is not a size; write it like `64KiB` or `65536`"
            ))
        }
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("`{text}` is not a size; write it like `64KiB` or `65536`"))
}

struct Checker<'a> {
    dir: &'a Path,
    errors: Vec<Located>,
    /// Files the config reads besides itself (certificates, keys, the token).
    read: Vec<PathBuf>,
}

impl Checker<'_> {
    fn error(&mut self, mark: Mark, message: impl Into<String>) {
        self.errors.push(Located {
            mark,
            message: message.into(),
        });
    }

    fn path(&self, text: &str) -> PathBuf {
        let path = Path::new(text);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.dir.join(path)
        }
    }

    fn duration(&mut self, field: &Option<Spanned<String>>, default: Duration) -> Duration {
        self.duration_opt(field).unwrap_or(default)
    }

    fn duration_opt(&mut self, field: &Option<Spanned<String>>) -> Option<Duration> {
        let field = field.as_ref()?;
        match parse_duration(&field.value) {
            Ok(d) => Some(d),
            Err(message) => {
                self.error(field.mark, message);
                None
            }
        }
    }

    fn positive_duration(
        &mut self,
        field: &Option<Spanned<String>>,
        default: Duration,
    ) -> Duration {
        let value = self.duration(field, default);
        if value.is_zero() {
            if let Some(field) = field {
                self.error(field.mark, "must be longer than zero");
            }
            return default;
        }
        value
    }

    /// A percentage as a fraction 0..=1.
    fn fraction(&mut self, field: &Option<Spanned<String>>) -> Option<f64> {
        let field = field.as_ref()?;
        match parse_percent(&field.value) {
            Ok(p) => Some(p / 100.0),
            Err(message) => {
                self.error(field.mark, message);
                None
            }
        }
    }

    fn weight(&mut self, field: &Spanned<String>) -> Option<Weight> {
        let percent = match parse_percent(&field.value) {
            Ok(p) => p,
            Err(message) => {
                self.error(field.mark, message);
                return None;
            }
        };
        let weight = Weight::from_percent(percent);
        if weight.is_none() {
            self.error(field.mark, "weights are in steps of 0.01%");
        }
        weight
    }

    fn count(&mut self, field: &Option<Spanned<u64>>, default: u64, min: u64, max: u64) -> u64 {
        match field {
            None => default,
            Some(f) if (min..=max).contains(&f.value) => f.value,
            Some(f) => {
                self.error(f.mark, format!("must be between {min} and {max}"));
                default
            }
        }
    }

    fn required<'v, T>(&mut self, field: &'v Option<T>, parent: Mark, what: &str) -> Option<&'v T> {
        if field.is_none() {
            self.error(parent, format!("missing `{what}`"));
        }
        field.as_ref()
    }

    fn socket_addr(&mut self, field: &Spanned<String>) -> Option<SocketAddr> {
        match field.value.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    field.mark,
                    format!(
                        "`{}` is not an address; write it like `0.0.0.0:8080`",
                        field.value
                    ),
                );
                None
            }
        }
    }

    fn config(&mut self, file: FileConfig, path: &Path, source: &str) -> Config {
        let top = Mark { line: 1, col: 1 };
        let listeners = self.listeners(&file.listeners, top);
        let admin = self.admin(file.admin.as_ref());
        let state_dir = match &file.state_dir {
            Some(dir) => self.path(&dir.value),
            None => self.dir.join("state"),
        };
        let limits = self.limits(file.limits.as_ref());
        let services = self.services(&file.services, top);
        Config {
            path: path.to_path_buf(),
            dir: self.dir.to_path_buf(),
            version: format!("{:016x}", fnv1a(source.as_bytes())),
            inputs: inputs_fingerprint(source, &self.read),
            read: self.read.clone(),
            listeners,
            admin,
            state_dir,
            limits,
            services,
        }
    }

    fn listeners(
        &mut self,
        listeners: &Option<Spanned<Vec<Spanned<ListenerFile>>>>,
        top: Mark,
    ) -> Vec<Listener> {
        let Some(listeners) = self.required(listeners, top, "listeners") else {
            return Vec::new();
        };
        if listeners.value.is_empty() {
            self.error(listeners.mark, "at least one listener is needed");
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for listener in &listeners.value {
            let Some(addr_text) = self.required(&listener.value.addr, listener.mark, "addr") else {
                continue;
            };
            let Some(addr) = self.socket_addr(addr_text) else {
                continue;
            };
            if addr.port() != 0 && !seen.insert(addr) {
                self.error(addr_text.mark, format!("listener `{addr}` is listed twice"));
            }
            let tls = listener.value.tls.as_ref().and_then(|tls| self.tls(tls));
            out.push(Listener {
                addr_text: addr_text.value.clone(),
                addr,
                tls,
            });
        }
        out
    }

    fn tls(&mut self, tls: &Spanned<TlsFile>) -> Option<Arc<TlsSettings>> {
        let certificates = match &tls.value.certificates {
            Some(list) if !list.is_empty() => list,
            _ => {
                self.error(tls.mark, "`tls` needs at least one entry in `certificates`");
                return None;
            }
        };
        let mut loaded = Vec::new();
        for entry in certificates {
            let cert = self.required(&entry.value.cert, entry.mark, "cert");
            let key = self.required(&entry.value.key, entry.mark, "key");
            let (Some(cert), Some(key)) = (cert, key) else {
                continue;
            };
            let cert_path = self.path(&cert.value);
            self.read.push(cert_path.clone());
            self.read.push(self.path(&key.value));
            let key_path = self.path(&key.value);
            match crate::tls::load_certified_key(&cert_path, &key_path) {
                Ok(certified) => loaded.push(Arc::new(LoadedCertificate {
                    cert_path,
                    key: Arc::new(certified),
                })),
                Err(message) => self.error(entry.mark, message),
            }
        }
        (loaded.len() == certificates.len()).then(|| {
            Arc::new(TlsSettings {
                certificates: loaded,
            })
        })
    }

    fn admin(&mut self, admin: Option<&Spanned<AdminFile>>) -> Admin {
        let default_addr = SocketAddr::from(([127, 0, 0, 1], 9901));
        let Some(admin) = admin else {
            return Admin {
                addr: default_addr,
                token: None,
            };
        };
        let addr = match &admin.value.addr {
            Some(addr) => self.socket_addr(addr).unwrap_or(default_addr),
            None => default_addr,
        };
        let token = match &admin.value.token_file {
            None => None,
            Some(file) => {
                let path = self.path(&file.value);
                self.read.push(path.clone());
                match std::fs::read_to_string(&path) {
                    Ok(text) if !text.trim().is_empty() => Some(Arc::from(text.trim())),
                    Ok(_) => {
                        self.error(
                            file.mark,
                            format!("token file `{}` is empty", path.display()),
                        );
                        None
                    }
                    Err(err) => {
                        self.error(
                            file.mark,
                            format!("cannot read token file `{}`: {err}", path.display()),
                        );
                        None
                    }
                }
            }
        };
        if !addr.ip().is_loopback() && admin.value.token_file.is_none() {
            let mark = admin.value.addr.as_ref().map_or(admin.mark, |a| a.mark);
            self.error(
                mark,
                format!(
                    "the admin API on `{addr}` is reachable from other hosts: set `token_file`, \
                     or listen on 127.0.0.1"
                ),
            );
        }
        Admin { addr, token }
    }

    fn limits(&mut self, limits: Option<&LimitsFile>) -> Limits {
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

    fn services(
        &mut self,
        services: &Option<Spanned<Vec<Spanned<ServiceFile>>>>,
        top: Mark,
    ) -> Vec<Service> {
        let Some(services) = self.required(services, top, "services") else {
            return Vec::new();
        };
        if services.value.is_empty() {
            self.error(services.mark, "at least one service is needed");
        }
        let mut names: Vec<(String, Mark)> = Vec::new();
        let mut out: Vec<(Service, Mark)> = Vec::new();
        for service in &services.value {
            let Some(built) = self.service(service) else {
                continue;
            };
            let name_mark = service.value.name.as_ref().map_or(service.mark, |n| n.mark);
            if let Some((_, first)) = names.iter().find(|(n, _)| *n == built.name) {
                self.error(
                    name_mark,
                    format!(
                        "service `{}` is defined twice (first at line {})",
                        built.name, first.line
                    ),
                );
            }
            names.push((built.name.clone(), name_mark));
            for (earlier, earlier_mark) in &out {
                if shadows(&earlier.matcher, &built.matcher) {
                    self.error(
                        name_mark,
                        format!(
                            "service `{}` is never reached: service `{}` (line {}) matches all \
                             of its requests first",
                            built.name, earlier.name, earlier_mark.line
                        ),
                    );
                    break;
                }
            }
            out.push((built, name_mark));
        }
        out.into_iter().map(|(service, _)| service).collect()
    }

    fn service(&mut self, service: &Spanned<ServiceFile>) -> Option<Service> {
        let file = &service.value;
        let name = self.required(&file.name, service.mark, "name");
        if let Some(name) = name {
            let valid = !name.value.is_empty()
                && name.value.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !valid {
                self.error(
                    name.mark,
                    format!(
                        "service name `{}` may hold only a-z, 0-9, `_` and `-`",
                        name.value
                    ),
                );
            }
        }
        let matcher = self.matcher(file.matcher.as_ref());
        let old = self.pool(&file.old, service.mark, "old");
        let new = self.pool(&file.new, service.mark, "new");
        let balance = match &file.balance {
            None => Balance::RoundRobin,
            Some(b) => match b.value.as_str() {
                "round_robin" => Balance::RoundRobin,
                "least_request" => Balance::LeastRequest,
                "random" => Balance::Random,
                other => {
                    self.error(
                        b.mark,
                        format!(
                            "unknown balance `{other}`; expected `round_robin`, `least_request` or `random`"
                        ),
                    );
                    Balance::RoundRobin
                }
            },
        };
        let sticky = file.sticky.as_ref().and_then(|s| self.sticky(s));
        let timeouts = self.timeouts(file.timeouts.as_ref());
        let retries = file
            .retries
            .as_ref()
            .map_or(2, |r| self.count(&r.attempts, 2, 0, 10)) as u32;
        let outlier = file
            .outlier
            .as_ref()
            .map(|o| self.outlier(o))
            .unwrap_or_default();
        let health_check = file.health_check.as_ref().map(|h| self.health_check(h));
        let weight = match &file.weight {
            None => Weight::ZERO,
            Some(w) => self.weight(w).unwrap_or(Weight::ZERO),
        };
        let hooks = self.hooks(file.hooks.as_ref());
        let rollout = file.rollout.as_ref().and_then(|r| self.rollout(r, &hooks));
        let smoke = file
            .smoke
            .iter()
            .flatten()
            .filter_map(|s| self.smoke(s))
            .collect();
        Some(Service {
            name: name?.value.clone(),
            matcher,
            old: old?,
            new: new?,
            balance,
            sticky,
            timeouts,
            retries,
            outlier,
            health_check,
            weight,
            rollout,
            smoke,
            hooks: hooks.into_iter().map(|(hook, _)| Arc::new(hook)).collect(),
        })
    }

    fn matcher(&mut self, matcher: Option<&MatchFile>) -> Matcher {
        let Some(matcher) = matcher else {
            return Matcher {
                hosts: Vec::new(),
                path_prefix: "/".to_string(),
            };
        };
        let mut hosts = Vec::new();
        for host in matcher.hosts.iter().flatten() {
            let text = host.value.trim().to_ascii_lowercase();
            let (pattern, name) = match text.strip_prefix("*.") {
                Some(rest) => (HostPattern::Suffix(format!(".{rest}")), rest.to_string()),
                None => (HostPattern::Exact(text.clone()), text.clone()),
            };
            let valid = !name.is_empty()
                && name.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b':' || b == b'_'
                });
            if valid {
                hosts.push(pattern);
            } else {
                self.error(
                    host.mark,
                    format!(
                        "`{}` is not a host name (write `api.example.com` or `*.example.com`)",
                        host.value
                    ),
                );
            }
        }
        let path_prefix = match &matcher.path_prefix {
            None => "/".to_string(),
            Some(p) if p.value.starts_with('/') => p.value.clone(),
            Some(p) => {
                self.error(
                    p.mark,
                    format!("`path_prefix` must start with `/`, got `{}`", p.value),
                );
                "/".to_string()
            }
        };
        Matcher { hosts, path_prefix }
    }

    fn pool(
        &mut self,
        pool: &Option<Spanned<PoolFile>>,
        parent: Mark,
        which: &str,
    ) -> Option<PoolSpec> {
        let pool = self.required(pool, parent, which)?;
        let backends = match &pool.value.backends {
            Some(list) if !list.is_empty() => list,
            _ => {
                self.error(
                    pool.mark,
                    format!("the `{which}` pool needs at least one backend"),
                );
                return None;
            }
        };
        let mut out: Vec<BackendSpec> = Vec::new();
        for backend in backends {
            let Some(addr) = self.required(&backend.value.addr, backend.mark, "addr") else {
                continue;
            };
            if !valid_backend_addr(&addr.value) {
                self.error(
                    addr.mark,
                    format!(
                        "`{}` is not a backend address; write `host:port`",
                        addr.value
                    ),
                );
                continue;
            }
            if out.iter().any(|b| b.addr == addr.value) {
                self.error(
                    addr.mark,
                    format!("backend `{}` is listed twice", addr.value),
                );
                continue;
            }
            let weight = self.count(&backend.value.weight, 1, 1, 1000) as u32;
            out.push(BackendSpec {
                addr: addr.value.clone(),
                weight,
            });
        }
        (out.len() == backends.len()).then_some(PoolSpec { backends: out })
    }

    fn sticky(&mut self, sticky: &Spanned<StickyFile>) -> Option<Sticky> {
        let file = &sticky.value;
        let mut modes = Vec::new();
        if let Some(cookie) = &file.cookie {
            let valid = !cookie.value.is_empty()
                && cookie
                    .value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
            if valid {
                modes.push(Sticky::Cookie(cookie.value.clone()));
            } else {
                self.error(
                    cookie.mark,
                    format!("`{}` is not a valid cookie name", cookie.value),
                );
            }
        }
        if let Some(header) = &file.header {
            match HeaderName::from_bytes(header.value.as_bytes()) {
                Ok(name) => modes.push(Sticky::Header(name)),
                Err(_) => self.error(
                    header.mark,
                    format!("`{}` is not a header name", header.value),
                ),
            }
        }
        if let Some(ip) = &file.client_ip {
            if ip.value {
                modes.push(Sticky::ClientIp);
            }
        }
        if modes.len() > 1 {
            self.error(
                sticky.mark,
                "`sticky` takes one of `cookie`, `header` or `client_ip`",
            );
        }
        if modes.is_empty() && file.cookie.is_none() && file.header.is_none() {
            self.error(
                sticky.mark,
                "`sticky` needs one of `cookie`, `header` or `client_ip: true`",
            );
        }
        modes.into_iter().next()
    }

    fn timeouts(&mut self, timeouts: Option<&TimeoutsFile>) -> Timeouts {
        let defaults = Timeouts::default();
        let Some(t) = timeouts else {
            return defaults;
        };
        Timeouts {
            connect: self.positive_duration(&t.connect, defaults.connect),
            request: self.positive_duration(&t.request, defaults.request),
            idle: self.positive_duration(&t.idle, defaults.idle),
        }
    }

    fn outlier(&mut self, outlier: &OutlierFile) -> Outlier {
        let defaults = Outlier::default();
        Outlier {
            consecutive_failures: self.count(
                &outlier.consecutive_failures,
                u64::from(defaults.consecutive_failures),
                1,
                1000,
            ) as u32,
            eject_for: self.positive_duration(&outlier.eject_for, defaults.eject_for),
            max_ejected: self
                .fraction(&outlier.max_ejected)
                .unwrap_or(defaults.max_ejected),
        }
    }

    fn health_check(&mut self, check: &Spanned<HealthCheckFile>) -> HealthCheck {
        let file = &check.value;
        let path = match &file.path {
            Some(p) if p.value.starts_with('/') => p.value.clone(),
            Some(p) => {
                self.error(
                    p.mark,
                    format!("the health path must start with `/`, got `{}`", p.value),
                );
                "/".to_string()
            }
            None => {
                self.error(check.mark, "missing `path`");
                "/".to_string()
            }
        };
        let interval = self.positive_duration(&file.interval, Duration::from_secs(5));
        let timeout = self.positive_duration(&file.timeout, Duration::from_secs(1));
        if timeout > interval {
            if let Some(t) = &file.timeout {
                self.error(
                    t.mark,
                    "the health check timeout must not exceed its interval",
                );
            }
        }
        HealthCheck {
            path,
            interval,
            timeout,
            healthy: self.count(&file.healthy, 2, 1, 100) as u32,
            unhealthy: self.count(&file.unhealthy, 3, 1, 100) as u32,
        }
    }

    fn hooks(&mut self, hooks: Option<&Entries<Spanned<HookFile>>>) -> Vec<(Hook, Mark)> {
        let mut out = Vec::new();
        for (name, hook) in hooks.map(|h| h.0.as_slice()).unwrap_or_default() {
            let valid = !name.value.is_empty()
                && name
                    .value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
            if !valid {
                self.error(
                    name.mark,
                    format!(
                        "hook name `{}` may hold only letters, digits, `_`, `-`, `.`",
                        name.value
                    ),
                );
            }
            if let Some(built) = self.hook(&name.value, hook) {
                out.push((built, name.mark));
            }
        }
        out
    }

    fn hook(&mut self, name: &str, hook: &Spanned<HookFile>) -> Option<Hook> {
        let file = &hook.value;
        let action = match (&file.exec, &file.http) {
            (Some(exec), None) => self.exec(exec),
            (None, Some(http)) => self.http_hook(http),
            (Some(_), Some(_)) => {
                self.error(
                    hook.mark,
                    format!("hook `{name}` has both `exec` and `http`; keep one"),
                );
                None
            }
            (None, None) => {
                self.error(hook.mark, format!("hook `{name}` needs `exec` or `http`"));
                None
            }
        };
        let on_deadline = match &file.on_deadline {
            None => OnDeadline::Pause,
            Some(o) => match o.value.as_str() {
                "pause" => OnDeadline::Pause,
                "rollback" => OnDeadline::Rollback,
                other => {
                    self.error(
                        o.mark,
                        format!("`on_deadline` is `pause` or `rollback`, not `{other}`"),
                    );
                    OnDeadline::Pause
                }
            },
        };
        let mut on = Vec::new();
        for event in file.on.iter().flatten() {
            match HookEvent::parse(&event.value) {
                Some(e) => on.push(e),
                None => {
                    let known: Vec<&str> = HookEvent::ALL.iter().map(|e| e.as_str()).collect();
                    self.error(
                        event.mark,
                        format!(
                            "unknown event `{}`; events are {}",
                            event.value,
                            known.join(", ")
                        ),
                    );
                }
            }
        }
        Some(Hook {
            name: name.to_string(),
            action: action?,
            timeout: self.positive_duration(&file.timeout, Duration::from_secs(60)),
            every: self.positive_duration(&file.every, Duration::from_secs(15)),
            deadline: self.duration_opt(&file.deadline),
            on_deadline,
            retries: self.count(&file.retries, 0, 0, 100) as u32,
            on,
        })
    }

    fn exec(&mut self, exec: &Spanned<Vec<Spanned<String>>>) -> Option<HookAction> {
        let Some(program) = exec.value.first() else {
            self.error(
                exec.mark,
                "`exec` needs a program: [\"path/to/script\", \"arg\", ...]",
            );
            return None;
        };
        if program.value.contains('/') {
            let path = self.path(&program.value);
            if let Err(problem) = check_executable(&path) {
                self.error(program.mark, problem);
            }
        }
        Some(HookAction::Exec {
            argv: exec.value.iter().map(|a| a.value.clone()).collect(),
        })
    }

    fn http_hook(&mut self, http: &Spanned<HttpHookFile>) -> Option<HookAction> {
        let url = self.required(&http.value.url, http.mark, "url")?;
        let parsed = match url.value.parse::<Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() =>
            {
                uri
            }
            _ => {
                self.error(
                    url.mark,
                    format!("`{}` is not an http:// or https:// URL", url.value),
                );
                return None;
            }
        };
        let mut headers = Vec::new();
        for (name, value) in http.value.headers.iter().flat_map(|h| h.0.iter()) {
            let header_name = HeaderName::from_bytes(name.value.as_bytes());
            let header_value = HeaderValue::from_str(&value.value);
            match (header_name, header_value) {
                (Ok(n), Ok(v)) => headers.push((n, v)),
                (Err(_), _) => {
                    self.error(name.mark, format!("`{}` is not a header name", name.value))
                }
                (_, Err(_)) => self.error(value.mark, "not a valid header value"),
            }
        }
        Some(HookAction::Http {
            url: parsed,
            headers,
        })
    }

    fn rollout(
        &mut self,
        rollout: &Spanned<RolloutFile>,
        hooks: &[(Hook, Mark)],
    ) -> Option<RolloutSpec> {
        let file = &rollout.value;
        let start = match &file.start {
            None => StartMode::Auto,
            Some(s) => match s.value.as_str() {
                "auto" => StartMode::Auto,
                "manual" => StartMode::Manual,
                other => {
                    self.error(
                        s.mark,
                        format!("`start` is `auto` or `manual`, not `{other}`"),
                    );
                    StartMode::Auto
                }
            },
        };
        let steps = match (&file.steps, &file.schedule) {
            (Some(steps), None) => self.steps(steps, hooks),
            (None, Some(schedule)) => self.schedule(schedule),
            (Some(_), Some(schedule)) => {
                self.error(
                    schedule.mark,
                    "a rollout has `steps` or `schedule`, not both",
                );
                None
            }
            (None, None) => {
                self.error(rollout.mark, "a rollout needs `steps` or `schedule`");
                None
            }
        };
        let analysis = file.analysis.as_ref().and_then(|a| self.analysis(a));
        let steps = steps?;
        let fingerprint = format!("{:016x}", fnv1a(format!("{steps:?}").as_bytes()));
        Some(RolloutSpec {
            start,
            steps,
            analysis,
            fingerprint,
        })
    }

    fn steps(
        &mut self,
        steps: &Spanned<Vec<Spanned<StepFile>>>,
        hooks: &[(Hook, Mark)],
    ) -> Option<Vec<Step>> {
        if steps.value.is_empty() {
            self.error(steps.mark, "`steps` is empty");
            return None;
        }
        let mut out = Vec::new();
        let mut last_weight: Option<(Weight, usize)> = None;
        for (index, step) in steps.value.iter().enumerate() {
            let Some(built) = self.step(step, hooks) else {
                continue;
            };
            if let StepKind::Weight { weight, .. } = &built.kind {
                if let Some((previous, previous_index)) = last_weight {
                    if *weight < previous {
                        self.error(
                            step.mark,
                            format!(
                                "step {} lowers the weight to {weight} after step {} set {previous}: \
                                 weights only rise, so that users move from old to new and never back",
                                index + 1,
                                previous_index + 1
                            ),
                        );
                    }
                }
                last_weight = Some((*weight, index));
            }
            out.push(built);
        }
        (out.len() == steps.value.len()).then_some(out)
    }

    fn step(&mut self, step: &Spanned<StepFile>, hooks: &[(Hook, Mark)]) -> Option<Step> {
        let file = &step.value;
        if let (Some(hold), None) = (&file.hold, &file.weight) {
            self.error(hold.mark, "`hold` belongs to a `weight` step");
        }
        let mut kinds = Vec::new();
        if file.weight.is_some() {
            kinds.push("weight");
        }
        if file.pause.0.is_some() {
            kinds.push("pause");
        }
        if file.gate.is_some() {
            kinds.push("gate");
        }
        if file.run.is_some() {
            kinds.push("run");
        }
        if file.verify.is_some() {
            kinds.push("verify");
        }
        if file.shadow.is_some() {
            kinds.push("shadow");
        }
        match kinds.as_slice() {
            [] => {
                self.error(
                    step.mark,
                    "a step needs one of `weight`, `pause`, `gate`, `run`, `verify` or `shadow`",
                );
                return None;
            }
            [_] => {}
            [first, second, ..] => {
                self.error(
                    step.mark,
                    format!("a step does one thing; this one has both `{first}` and `{second}`"),
                );
                return None;
            }
        }
        let point_of_no_return = file.point_of_no_return.as_ref().is_some_and(|p| p.value);
        let kind = if let Some(weight) = &file.weight {
            let weight = self.weight(weight)?;
            let hold = self.duration(&file.hold, Duration::ZERO);
            StepKind::Weight { weight, hold }
        } else if file.pause.0.is_some() {
            StepKind::Pause
        } else if let Some(gate) = &file.gate {
            self.hook_ref(gate, hooks)?;
            StepKind::Gate {
                hook: gate.value.clone(),
            }
        } else if let Some(run) = &file.run {
            self.hook_ref(run, hooks)?;
            StepKind::Run {
                hook: run.value.clone(),
            }
        } else {
            if let Some(shadow) = &file.shadow {
                // Check what is written even though the step is refused below.
                self.fraction(&shadow.value.percent);
                self.fraction(&shadow.value.max_mismatch);
                self.duration_opt(&shadow.value.hold);
            }
            let (mark, what) = match (&file.verify, &file.shadow) {
                (Some(v), _) => (v.mark, "verify"),
                (None, Some(s)) => (s.mark, "shadow"),
                (None, None) => (step.mark, "this"),
            };
            self.error(
                mark,
                format!(
                    "`{what}` steps are not supported by this version of cutover yet; \
                     use a `gate` hook that runs your checks instead"
                ),
            );
            return None;
        };
        Some(Step {
            kind,
            point_of_no_return,
        })
    }

    fn hook_ref(&mut self, name: &Spanned<String>, hooks: &[(Hook, Mark)]) -> Option<()> {
        if hooks.iter().any(|(h, _)| h.name == name.value) {
            return Some(());
        }
        let known: Vec<String> = hooks.iter().map(|(h, _)| format!("`{}`", h.name)).collect();
        let defined = if known.is_empty() {
            "this service defines no hooks".to_string()
        } else {
            format!("defined: {}", known.join(", "))
        };
        self.error(
            name.mark,
            format!("no hook named `{}` in this service ({defined})", name.value),
        );
        None
    }

    fn schedule(&mut self, schedule: &Spanned<ScheduleFile>) -> Option<Vec<Step>> {
        let file = &schedule.value;
        let start = self.required(&file.start, schedule.mark, "start");
        let step = self.required(&file.step, schedule.mark, "step");
        let every = self.required(&file.every, schedule.mark, "every");
        let (start, step, every) = (start?, step?, every?);
        let start_weight = self.weight(start)?;
        let step_weight = self.weight(step)?;
        let hold = self.duration_opt(&Some(every.clone()))?;
        if step_weight == Weight::ZERO {
            self.error(step.mark, "the schedule's `step` must be above 0%");
            return None;
        }
        Some(schedule_steps(start_weight, step_weight, hold))
    }

    fn analysis(&mut self, analysis: &Spanned<AnalysisFile>) -> Option<AnalysisSpec> {
        let file = &analysis.value;
        let interval = self.positive_duration(&file.interval, Duration::from_secs(30));
        let window = self.positive_duration(&file.window, Duration::from_secs(120));
        if window > Duration::from_secs(3600) {
            if let Some(w) = &file.window {
                self.error(w.mark, "the analysis window is at most 1h");
            }
        }
        let ratio = match &file.max_p99_latency_ratio {
            Some(r) if r.value.is_finite() && r.value >= 1.0 => Some(r.value),
            Some(r) => {
                self.error(
                    r.mark,
                    "`max_p99_latency_ratio` is a factor of 1.0 or more, like 1.5",
                );
                None
            }
            None => None,
        };
        let trip = file.trip.as_ref().and_then(|t| self.trip(t));
        let spec = AnalysisSpec {
            interval,
            window,
            min_requests: self.count(&file.min_requests, 100, 1, 1_000_000_000),
            failure_threshold: self.count(&file.failure_threshold, 3, 1, 1000) as u32,
            max_error_rate: self.fraction(&file.max_error_rate),
            max_error_rate_increase: self.fraction(&file.max_error_rate_increase),
            max_p99_latency: self.duration_opt(&file.max_p99_latency),
            max_p99_latency_ratio: ratio,
            trip,
        };
        let has_rule = spec.max_error_rate.is_some()
            || spec.max_error_rate_increase.is_some()
            || spec.max_p99_latency.is_some()
            || spec.max_p99_latency_ratio.is_some()
            || spec.trip.is_some();
        if !has_rule {
            self.error(
                analysis.mark,
                "`analysis` has no rule: set at least one of `max_error_rate`, \
                 `max_error_rate_increase`, `max_p99_latency`, `max_p99_latency_ratio`, `trip`",
            );
        }
        Some(spec)
    }

    fn trip(&mut self, trip: &Spanned<TripFile>) -> Option<TripSpec> {
        let file = &trip.value;
        let rate = self
            .required(&file.error_rate, trip.mark, "error_rate")?
            .clone();
        let window = self.positive_duration(&file.window, Duration::from_secs(10));
        if window > Duration::from_secs(3600) {
            if let Some(w) = &file.window {
                self.error(w.mark, "the trip window is at most 1h");
            }
        }
        Some(TripSpec {
            error_rate: self.fraction(&Some(rate))?,
            min_requests: self.count(&file.min_requests, 20, 1, 1_000_000_000),
            window,
        })
    }

    fn smoke(&mut self, smoke: &Spanned<SmokeFile>) -> Option<SmokeRequest> {
        let file = &smoke.value;
        let method = match &file.method {
            None => Method::GET,
            Some(m) => match Method::from_bytes(m.value.as_bytes()) {
                Ok(method) => method,
                Err(_) => {
                    self.error(m.mark, format!("`{}` is not an HTTP method", m.value));
                    return None;
                }
            },
        };
        let path = self.required(&file.path, smoke.mark, "path")?;
        if !path.value.starts_with('/') {
            self.error(path.mark, "a smoke request's `path` starts with `/`");
            return None;
        }
        Some(SmokeRequest {
            method,
            path: path.value.clone(),
            expect_status: self.count(&file.expect_status, 200, 100, 599) as u16,
            expect_body_contains: file.expect_body_contains.as_ref().map(|b| b.value.clone()),
        })
    }
}

/// The steps of `schedule: {start, step, every}`: `start`, then `+step` every `every`,
/// ending at 100%, which needs no hold (the rollout is promoted on its first passing check).
pub fn schedule_steps(start: Weight, step: Weight, every: Duration) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut bp = u32::from(start.basis_points());
    let increment = u32::from(step.basis_points()).max(1);
    while bp < 10_000 {
        steps.push(Step {
            kind: StepKind::Weight {
                weight: Weight::from_basis_points(bp as u16).unwrap_or(Weight::FULL),
                hold: every,
            },
            point_of_no_return: false,
        });
        bp += increment;
    }
    steps.push(Step {
        kind: StepKind::Weight {
            weight: Weight::FULL,
            hold: Duration::ZERO,
        },
        point_of_no_return: false,
    });
    steps
}

/// `earlier` takes every request `later` would: `later` can never match.
fn shadows(earlier: &Matcher, later: &Matcher) -> bool {
    let hosts_covered = earlier.hosts.is_empty()
        || (!later.hosts.is_empty() && later.hosts.iter().all(|h| earlier.hosts.contains(h)));
    hosts_covered && later.path_prefix.starts_with(&earlier.path_prefix)
}

fn valid_backend_addr(addr: &str) -> bool {
    if addr.parse::<SocketAddr>().is_ok() {
        return true;
    }
    match addr.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && port.parse::<u16>().is_ok_and(|p| p > 0)
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        }
        None => false,
    }
}

fn check_executable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => Err(format!("`{}` is not a file", path.display())),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => Err(format!(
            "`{}` is not executable (chmod +x it)",
            path.display()
        )),
        Ok(_) => Ok(()),
        Err(err) => Err(format!("cannot use `{}`: {err}", path.display())),
    }
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
