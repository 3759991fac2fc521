//! `listeners:`: addresses, each listed once, and their TLS certificates.

use std::collections::HashSet;
use std::sync::Arc;

use super::Checker;
use crate::config::de::Spanned;
use crate::config::file::{List, ListenerFile, TlsFile};
use crate::config::files;
use crate::config::model::{Listener, TlsSettings};
use crate::config::yaml::Mark;

impl Checker<'_> {
    pub(super) fn listeners(&mut self, listeners: &List<ListenerFile>, top: Mark) -> Vec<Listener> {
        let listeners = self.required_list(
            listeners,
            top,
            "listeners",
            "at least one listener is needed",
        );
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for listener in listeners {
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

    pub(super) fn tls(&mut self, tls: &Spanned<TlsFile>) -> Option<Arc<TlsSettings>> {
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
            match files::certificate(cert_path, &key_path) {
                Ok(certificate) => loaded.push(Arc::new(certificate)),
                Err(message) => self.error(entry.mark, message),
            }
        }
        (loaded.len() == certificates.len()).then(|| {
            Arc::new(TlsSettings {
                certificates: loaded,
            })
        })
    }
}
