//! `log_format` and `access_log`.

use super::super::de::Spanned;
use super::{AccessLogTarget, Checker, LogFormat};

impl Checker<'_> {
    pub(super) fn log_format(&mut self, field: Option<&Spanned<String>>) -> LogFormat {
        let Some(field) = field else {
            return LogFormat::default();
        };
        match field.value.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                let message = format!("`{other}` is not a log format; use `text` or `json`");
                self.error(field.mark, message);
                LogFormat::default()
            }
        }
    }

    pub(super) fn access_log(
        &mut self,
        field: Option<&Spanned<String>>,
    ) -> Option<AccessLogTarget> {
        let field = field?;
        match field.value.trim() {
            "off" => None,
            "stdout" => Some(AccessLogTarget::Stdout),
            "stderr" => Some(AccessLogTarget::Stderr),
            "" => {
                let message = "give `off`, `stdout`, `stderr` or a file path";
                self.error(field.mark, message);
                None
            }
            path => {
                let path = self.path(path);
                match path.parent() {
                    Some(dir) if dir.is_dir() => Some(AccessLogTarget::File(path)),
                    _ => {
                        let message = format!(
                            "the directory of `{}` does not exist; cutover creates the file, not its directory",
                            path.display()
                        );
                        self.error(field.mark, message);
                        None
                    }
                }
            }
        }
    }
}
