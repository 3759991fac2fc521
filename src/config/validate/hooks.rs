//! A service's `hooks:`: exec and http actions, their events and timing, and the check
//! that a step names a hook that exists.

use http::{HeaderName, HeaderValue, Uri};

use super::Checker;
use crate::config::de::{Entries, Spanned};
use crate::config::file::{HookFile, HttpHookFile};
use crate::config::model::*;
use crate::config::yaml::Mark;
use crate::config::{defaults, files};

impl Checker<'_> {
    pub(super) fn hooks(
        &mut self,
        hooks: Option<&Entries<Spanned<HookFile>>>,
    ) -> Vec<(Hook, Mark)> {
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

    pub(super) fn hook(&mut self, name: &str, hook: &Spanned<HookFile>) -> Option<Hook> {
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
        let on_deadline = file
            .on_deadline
            .as_ref()
            .map_or(defaults::ON_DEADLINE, |o| self.on_deadline(o));
        let on = file
            .on
            .iter()
            .flatten()
            .filter_map(|event| self.event(event))
            .collect();
        Some(Hook {
            name: name.to_string(),
            action: action?,
            timeout: self.positive_duration(&file.timeout, defaults::HOOK_TIMEOUT),
            every: self.positive_duration(&file.every, defaults::GATE_EVERY),
            deadline: self.duration_opt(&file.deadline),
            on_deadline,
            retries: self.count(&file.retries, u64::from(defaults::HOOK_RETRIES), 0, 100) as u32,
            on,
            env: self.hook_env(hook),
            pass_env: self.pass_env(hook),
        })
    }

    /// `env: {NAME: value}`: names a shell can export; `CUTOVER_*` is cutover's own.
    fn hook_env(&mut self, hook: &Spanned<HookFile>) -> Vec<(String, String)> {
        let Some(env) = &hook.value.env else {
            return Vec::new();
        };
        if hook.value.http.is_some() {
            self.error(
                env.0.first().map_or(hook.mark, |(k, _)| k.mark),
                HTTP_HAS_NO_ENV,
            );
            return Vec::new();
        }
        let mut out = Vec::new();
        for (name, value) in &env.0 {
            if let Some(problem) = env_name_problem(&name.value) {
                self.error(name.mark, problem);
            } else if value.value.contains('\0') {
                self.error(value.mark, "an environment value cannot hold a NUL byte");
            } else {
                out.push((name.value.clone(), value.value.clone()));
            }
        }
        out
    }

    /// `pass_env: [NAME, PREFIX_*]`: variables of cutover's environment the hook also gets.
    fn pass_env(&mut self, hook: &Spanned<HookFile>) -> Vec<String> {
        let Some(names) = &hook.value.pass_env else {
            return Vec::new();
        };
        if hook.value.http.is_some() {
            self.error(names.first().map_or(hook.mark, |n| n.mark), HTTP_HAS_NO_ENV);
            return Vec::new();
        }
        let mut out = Vec::new();
        for name in names {
            let bare = name.value.strip_suffix('*').unwrap_or(&name.value);
            let problem = if bare.is_empty() {
                Some("`*` alone would pass cutover's whole environment, secrets included; list the names or prefixes the hook needs".to_string())
            } else {
                env_name_problem(bare)
            };
            match problem {
                Some(problem) => self.error(name.mark, problem),
                None => out.push(name.value.clone()),
            }
        }
        out
    }

    fn on_deadline(&mut self, on_deadline: &Spanned<String>) -> OnDeadline {
        match on_deadline.value.as_str() {
            "pause" => OnDeadline::Pause,
            "rollback" => OnDeadline::Rollback,
            other => {
                self.error(
                    on_deadline.mark,
                    format!("`on_deadline` is `pause` or `rollback`, not `{other}`"),
                );
                OnDeadline::Pause
            }
        }
    }

    fn event(&mut self, event: &Spanned<String>) -> Option<HookEvent> {
        let parsed = HookEvent::parse(&event.value);
        if parsed.is_none() {
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
        parsed
    }

    pub(super) fn exec(&mut self, exec: &Spanned<Vec<Spanned<String>>>) -> Option<HookAction> {
        let Some(program) = exec.value.first() else {
            self.error(
                exec.mark,
                "`exec` needs a program: [\"path/to/script\", \"arg\", ...]",
            );
            return None;
        };
        if program.value.contains('/') {
            let path = self.path(&program.value);
            if let Err(problem) = files::check_executable(&path) {
                self.error(program.mark, problem);
            }
        }
        Some(HookAction::Exec {
            argv: exec.value.iter().map(|a| a.value.clone()).collect(),
        })
    }

    pub(super) fn http_hook(&mut self, http: &Spanned<HttpHookFile>) -> Option<HookAction> {
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

    pub(super) fn hook_ref(
        &mut self,
        name: &Spanned<String>,
        hooks: &[(Hook, Mark)],
    ) -> Option<()> {
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
}

const HTTP_HAS_NO_ENV: &str =
    "`env` and `pass_env` are for exec hooks; an http hook sends `headers`";

/// Why `name` cannot be an environment variable a hook is given, if it cannot.
fn env_name_problem(name: &str) -> Option<String> {
    let valid = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Some(format!(
            "`{name}` is not an environment variable name (letters, digits and `_`, not \
             starting with a digit; a prefix ends in `*`)"
        ));
    }
    if name.starts_with("CUTOVER_") {
        return Some(format!(
            "`{name}`: the `CUTOVER_` variables are set by cutover for each run (SPEC §4)"
        ));
    }
    None
}
