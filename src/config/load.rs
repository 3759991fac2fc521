//! Reading a config file: YAML → mirror (`de`, `file`) → model (`validate`), every error
//! at once, each with the file's name and its position.
//!
//! The contract (SPEC §2): unknown keys are errors; durations are `250ms`/`30s`/`10m`/`2h`;
//! percentages are `5%`, `0.5%` or a bare number; relative paths are relative to the
//! file's directory; all errors are reported together, each as `file:line:col: message`.

use std::fmt;
use std::path::{Path, PathBuf};

use super::de::{self, Located};
use super::file::FileConfig;
use super::files::absolute;
use super::model::Config;
use super::validate;
use super::yaml::{self, Mark};

// Older paths, kept so callers outside `config` need not change with this split.

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
    let Some(file) = file else {
        return Err(located(errors));
    };
    let (config, checked) = validate::check(file, &path, &dir, source);
    // A value the deserializer had to replace is not reported a second time.
    let replaced: Vec<Mark> = errors.iter().map(|e| e.mark).collect();
    errors.extend(checked.into_iter().filter(|e| !replaced.contains(&e.mark)));
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(located(errors))
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

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
