//! Validation: the serde mirror (`file.rs`) in, the model (`model.rs`) out, every problem
//! collected with its position instead of stopping at the first.
//!
//! `Checker` is the core: it knows the config's directory, collects errors, records the
//! files the config reads, and checks single values (durations, percentages, counts,
//! addresses). Each section of the file is checked in its own module, as more methods on
//! `Checker`: `listeners`, `admin`, `limits`, `services` (with `pools`), `hooks`,
//! `rollout`. What a setting is when absent comes from `defaults.rs`; reading files from
//! `files.rs`.

mod admin;
mod fleet;
mod hooks;
mod limits;
mod listeners;
mod logging;
mod pools;
mod rollout;
mod services;
mod shadow;
mod smoke;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::de::{Located, Spanned};
use super::file::FileConfig;
use super::model::*;
use super::yaml::Mark;
use super::{defaults, files};
use crate::hash::fnv1a;

pub use rollout::schedule_steps;

/// What a valid config may still do that the operator should know of (`cutover validate`
/// prints it).
pub fn warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    shadow::warnings(config, &mut out);
    rollout::warnings(config, &mut out);
    out
}

/// Checks `file` (read from `path`, with text `source`) into a `Config`, and returns every
/// problem found on the way. Relative paths resolve against `dir`.
pub(super) fn check(
    file: FileConfig,
    path: &Path,
    dir: &Path,
    source: &str,
) -> (Config, Vec<Located>) {
    let mut checker = Checker {
        dir,
        errors: Vec::new(),
        read: Vec::new(),
    };
    let config = checker.config(file, path, source);
    (config, checker.errors)
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

    /// A list that must be there and hold an entry; `empty` is the error when it holds none.
    /// Its entries, none when it is missing, so that callers check whatever there is.
    fn required_list<'v, T>(
        &mut self,
        field: &'v Option<Spanned<Vec<T>>>,
        parent: Mark,
        what: &str,
        empty: &str,
    ) -> &'v [T] {
        let Some(list) = self.required(field, parent, what) else {
            return &[];
        };
        if list.value.is_empty() {
            self.error(list.mark, empty);
        }
        &list.value
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
            None => self.dir.join(defaults::STATE_DIR),
        };
        let limits = self.limits(file.limits.as_ref());
        let services = self.services(&file.services, top);
        let fleet = file.fleet.as_ref().and_then(|fleet| self.fleet(fleet));
        let log_format = self.log_format(file.log_format.as_ref());
        let access_log = self.access_log(file.access_log.as_ref());
        Config {
            origin: Origin {
                path: path.to_path_buf(),
                dir: self.dir.to_path_buf(),
                version: format!("{:016x}", fnv1a(source.as_bytes())),
                inputs: files::inputs_fingerprint(source, &self.read),
                read: self.read.clone(),
            },
            listeners,
            admin,
            state_dir,
            limits,
            services,
            fleet,
            log_format,
            access_log,
        }
    }
}
