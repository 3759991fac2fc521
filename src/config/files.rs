//! The files a config reads besides itself: TLS certificates and keys, the admin token,
//! hook programs. Validation decides *which* files and reports problems at the position
//! that names them; this module only touches the file system and says what went wrong.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::model::LoadedCertificate;
use crate::hash::fnv1a;

/// An absolute path, so that messages and fingerprints do not depend on the working
/// directory at the time of a reload.
pub(crate) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Reads a PEM certificate chain and its private key, and checks that they belong together.
pub(crate) fn certificate(
    cert_path: PathBuf,
    key_path: &Path,
) -> Result<LoadedCertificate, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|err| format!("cannot read certificate `{}`: {err}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|err| format!("cannot parse certificate `{}`: {err}", cert_path.display()))?;
    if chain.is_empty() {
        return Err(format!("`{}` holds no certificate", cert_path.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|err| format!("cannot read private key `{}`: {err}", key_path.display()))?;
    // The same ring provider `tls::provider()` serves with; built here so that config does
    // not depend on the module that depends on config.
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|err| {
        format!(
            "certificate `{}` and key `{}` do not belong together: {err}",
            cert_path.display(),
            key_path.display()
        )
    })?;
    Ok(LoadedCertificate {
        cert_path,
        key: Arc::new(certified),
    })
}

/// The admin token: the file's text without surrounding whitespace, never empty.
pub(crate) fn token(path: &Path) -> Result<Arc<str>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(Arc::from(text.trim())),
        Ok(_) => Err(format!("token file `{}` is empty", path.display())),
        Err(err) => Err(format!(
            "cannot read token file `{}`: {err}",
            path.display()
        )),
    }
}

/// A hook program must be a file someone may execute; checked at load time so that a
/// typo fails the reload, not the rollout step an hour later.
pub(crate) fn check_executable(path: &Path) -> Result<(), String> {
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

/// A hash of the config's text and of every file it reads: a reload that would change
/// nothing has the same one.
pub(crate) fn inputs_fingerprint(source: &str, read: &[PathBuf]) -> String {
    let mut all = source.as_bytes().to_vec();
    for path in read {
        all.extend_from_slice(path.as_os_str().as_encoded_bytes());
        all.extend_from_slice(&std::fs::read(path).unwrap_or_default());
    }
    format!("{:016x}", fnv1a(&all))
}
